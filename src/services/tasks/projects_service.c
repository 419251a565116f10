/* Projects, members, comments and activity: the handlers of /api/v1/projects… and
 * /api/v1/tasks/{id}/comments|activity (mounted by tasks_service.c). Rules live in
 * projects_repo (who may do what, checked in the transaction of the change); here: bodies,
 * query parameters, cursors, and the contract's JSON forms. */
#include <string.h>

#include "core/app.h"
#include "core/arena.h"
#include "core/crypto.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "services/tasks/projects_repo.h"
#include "services/tasks/tasks_cursor.h"
#include "services/tasks/tasks_service.h"
#include "core/banned.h"

#define PROJECTS_PREFIX "/api/v1/projects"

/* ---------- shared ---------- */

static void projects_time(dk_jw *w, const char *key, int64_t ms)
{
    char buf[DK_RFC3339_LEN];
    dk_time_format(ms, buf);
    dk_jw_key(w, key);
    dk_jw_string(w, buf);
}

/* The {id} path parameter, or NULL (404 sent). */
static const char *projects_id(dk_req *req, dk_res *res, const char *name, const char *what)
{
    const char *id = dk_req_param(req, name);
    if (!id || !dk_uuid_valid(id)) {
        dk_res_problem(res, DK_E_NOT_FOUND, "no such %s", what);
        return NULL;
    }
    return id;
}

/* A string member of a body: NULL when absent; on a wrong type an error is added. */
static const char *projects_str(const json_t *body, const char *key, bool required, dk_errors *errs)
{
    bool present = false, wrong = false;
    const char *v = dk_json_get_str(body, key, &present, &wrong);
    if (wrong || (present && !v))
        dk_errors_add(errs, key, "must be a string");
    else if (!present && required)
        dk_errors_add(errs, key, "is required");
    return wrong ? NULL : v;
}

/* ?limit= (1..100, default 20); false with the 400 sent. */
static bool projects_limit(dk_req *req, dk_errors *errs, int *ret)
{
    const char *v = dk_req_query(req, "limit");
    int64_t n = TASKS_LIMIT_DEFAULT;
    if (v && (!dk_parse_i64(v, 1, TASKS_LIMIT_MAX, &n) || v[0] == '-')) {
        dk_errors_add(errs, "limit", "must be an integer from 1 to %d", TASKS_LIMIT_MAX);
        return false;
    }
    *ret = (int)n;
    return true;
}

/* Cursors of the integer-keyed lists (members, comments, activity) are tasks cursors with a
 * sort code of their own and a hash of what they list and for whom. */
enum { PJ_CURSOR_MEMBERS = 200, PJ_CURSOR_COMMENTS = 201, PJ_CURSOR_ACTIVITY = 202 };

static void projects_scope_hash(int kind, const char *scope, const char *caller,
                                unsigned char out[TASKS_FILTER_HASH_LEN])
{
    char buf[160];
    int n = snprintf(buf, sizeof buf, "projects.v1\n%d\n%s\n%s", kind, scope, caller);
    unsigned char h[32];
    dk_sha256(buf, (size_t)n, h);
    memcpy(out, h, TASKS_FILTER_HASH_LEN);
}

static bool projects_cursor_in(dk_req *req, int kind, const char *scope, projects_after *after,
                               dk_errors *errs)
{
    tasks_svc *s = req->service;
    memset(after, 0, sizeof *after);
    const char *v = dk_req_query(req, "cursor");
    if (!v || !*v)
        return true;
    tasks_cursor c;
    unsigned char h[TASKS_FILTER_HASH_LEN];
    projects_scope_hash(kind, scope, req->identity->user_id, h);
    if (tasks_cursor_decode(req->arena, s->app->cursor_key, v, &c) != DK_OK || c.sort != kind ||
        memcmp(c.filter_hash, h, sizeof h) != 0) {
        dk_errors_add(errs, "cursor", "is malformed, was altered or belongs to another list");
        return false;
    }
    after->has = true;
    after->value = c.value;
    after->id = dk_arena_strdup(req->arena, c.id);
    return true;
}

static char *projects_cursor_out(dk_req *req, int kind, const char *scope, int64_t value,
                                 const char *id)
{
    tasks_svc *s = req->service;
    tasks_cursor c;
    memset(&c, 0, sizeof c);
    c.sort = kind;
    c.value = value;
    dk_strlcpy(c.id, id, sizeof c.id);
    projects_scope_hash(kind, scope, req->identity->user_id, c.filter_hash);
    return tasks_cursor_encode(req->arena, s->app->cursor_key, &c);
}

/* The project list's cursor: the name key and id of the last project, signed. Text form:
 * base64url(key "\n" id "\n" hex(scope hash)) "." base64url(HMAC). */
static const char projects_list_context[] = "docket.projects.list.cursor\n";

static char *projects_list_mac(dk_req *req, const char *payload)
{
    tasks_svc *s = req->service;
    size_t cl = sizeof projects_list_context - 1, pl = strlen(payload);
    char *msg = dk_arena_alloc(req->arena, cl + pl);
    memcpy(msg, projects_list_context, cl);
    memcpy(msg + cl, payload, pl);
    unsigned char mac[32];
    dk_hmac_sha256(s->app->cursor_key, 32, msg, cl + pl, mac);
    return dk_base64url(req->arena, mac, sizeof mac);
}

static char *projects_list_scope(dk_req *req, const char *q_key)
{
    unsigned char h[TASKS_FILTER_HASH_LEN];
    projects_scope_hash(100, q_key ? q_key : "-", req->identity->user_id, h);
    char hex[2 * TASKS_FILTER_HASH_LEN + 1];
    dk_hex(h, sizeof h, hex);
    return dk_arena_strdup(req->arena, hex);
}

static char *projects_list_cursor_out(dk_req *req, const char *q_key, const project *p)
{
    char *payload =
        dk_arena_printf(req->arena, "%s\n%s\n%s", projects_name_key(req->arena, p->name), p->id,
                        projects_list_scope(req, q_key));
    return dk_arena_printf(
        req->arena, "%s.%s",
        dk_base64url(req->arena, (const unsigned char *)payload, strlen(payload)),
        projects_list_mac(req, payload));
}

static bool projects_list_cursor_in(dk_req *req, const char *q_key, projects_after *after,
                                    dk_errors *errs)
{
    memset(after, 0, sizeof *after);
    const char *v = dk_req_query(req, "cursor");
    if (!v || !*v)
        return true;
    const char *dot = strchr(v, '.');
    size_t n = 0;
    unsigned char *raw =
        dot && strlen(v) < 1024
            ? dk_base64url_decode(req->arena, dk_arena_strndup(req->arena, v, (size_t)(dot - v)),
                                  &n)
            : NULL;
    char *payload = raw ? dk_arena_strndup(req->arena, (const char *)raw, n) : NULL;
    bool ok =
        payload && strlen(payload) == n && dk_ct_streq(projects_list_mac(req, payload), dot + 1);
    char *nl1 = ok ? strchr(payload, '\n') : NULL;
    char *nl2 = nl1 ? strchr(nl1 + 1, '\n') : NULL;
    if (!nl2 || strcmp(nl2 + 1, projects_list_scope(req, q_key)) != 0) {
        dk_errors_add(errs, "cursor", "is malformed, was altered or belongs to another list");
        return false;
    }
    *nl1 = *nl2 = '\0';
    after->has = true;
    after->text = payload;
    after->id = nl1 + 1;
    return true;
}

/* ---------- projects ---------- */

static void projects_write(dk_jw *w, const project *p)
{
    dk_jw_object(w);
    dk_jw_key(w, "id");
    dk_jw_string(w, p->id);
    dk_jw_key(w, "name");
    dk_jw_string(w, p->name);
    dk_jw_key(w, "description");
    dk_jw_string(w, p->description);
    dk_jw_key(w, "owner_id");
    dk_jw_string(w, p->owner_id);
    dk_jw_key(w, "my_role");
    dk_jw_string(w, project_role_name(p->my_role));
    projects_time(w, "created_at", p->created_at);
    projects_time(w, "updated_at", p->updated_at);
    dk_jw_key(w, "version");
    dk_jw_int(w, (long long)p->version);
    dk_jw_object_end(w);
}

static void projects_reply(dk_req *req, dk_res *res, int status, const project *p)
{
    dk_res_header(res, "ETag", tasks_etag(req->arena, p->version));
    dk_jw w = {0};
    projects_write(&w, p);
    dk_res_jw(res, status, &w);
}

static void projects_fail(dk_res *res, dk_status st)
{
    if (st == DK_E_CONFLICT)
        dk_res_problem(res, st, "you already own a project of that name");
    else
        tasks_fail_what(res, st, "project");
}

/* Reads name/description of a create or patch body; false with the 422 sent. */
static bool projects_fields(dk_req *req, dk_res *res, bool create, const char **name,
                            const char **description)
{
    json_t *body = NULL;
    if (dk_req_json(req, res, &body) != DK_OK)
        return false;
    dk_errors errs;
    dk_errors_init(&errs);
    *name = projects_str(body, "name", create, &errs);
    *description = projects_str(body, "description", false, &errs);
    const char *msg;
    if (*name && (msg = project_validate_name(*name)) != NULL)
        dk_errors_add(&errs, "name", "%s", msg);
    if (*description && (msg = project_validate_description(*description)) != NULL)
        dk_errors_add(&errs, "description", "%s", msg);
    if (dk_errors_any(&errs)) {
        dk_res_validation(res, &errs);
        return false;
    }
    return true;
}

void projects_create(dk_req *req, dk_res *res)
{
    tasks_svc *s = req->service;
    const char *name = NULL, *description = NULL;
    if (!projects_fields(req, res, true, &name, &description))
        return;
    project p;
    memset(&p, 0, sizeof p);
    char *id = dk_arena_alloc(req->arena, DK_UUID_LEN);
    dk_uuid7(id);
    p.id = id;
    p.name = name;
    p.description = description ? description : "";
    p.owner_id = req->identity->user_id;
    p.my_role = PROJECT_ROLE_OWNER;
    p.created_at = p.updated_at = dk_now_ms();
    p.version = 1;
    dk_status st = projects_repo_create(&s->repo, req->arena, &p);
    if (st != DK_OK) {
        projects_fail(res, st);
        return;
    }
    dk_res_header(res, "Location", dk_arena_printf(req->arena, PROJECTS_PREFIX "/%s", id));
    projects_reply(req, res, 201, &p);
}

void projects_list(dk_req *req, dk_res *res)
{
    tasks_svc *s = req->service;
    dk_errors errs;
    dk_errors_init(&errs);
    int limit = 0;
    const char *q = dk_req_query(req, "q");
    const char *q_key = NULL;
    bool ok = projects_limit(req, &errs, &limit);
    if (q && *q) {
        long n = dk_utf8_len(q, strlen(q));
        if (n < 0 || n > PROJECT_NAME_MAX) {
            dk_errors_add(&errs, "q", "must be valid UTF-8 of at most 100 characters");
            ok = false;
        } else {
            q_key = projects_name_key(req->arena, q);
        }
    }
    projects_after after;
    ok = projects_list_cursor_in(req, q_key, &after, &errs) && ok;
    if (!ok) {
        dk_res_bad_query(res, &errs);
        return;
    }
    dk_errors_release(&errs);
    project *items = NULL;
    int n = 0;
    dk_status st = projects_repo_list(&s->repo, req->arena, req->identity->user_id, q_key, &after,
                                      limit, &items, &n);
    if (st != DK_OK) {
        projects_fail(res, st);
        return;
    }
    dk_jw w = {0};
    dk_jw_object(&w);
    dk_jw_key(&w, "items");
    dk_jw_array(&w);
    for (int i = 0; i < n && i < limit; i++)
        projects_write(&w, &items[i]);
    dk_jw_array_end(&w);
    dk_jw_key(&w, "next_cursor");
    dk_jw_string(&w, n > limit ? projects_list_cursor_out(req, q_key, &items[limit - 1]) : NULL);
    dk_jw_object_end(&w);
    dk_res_jw(res, 200, &w);
}

void projects_get(dk_req *req, dk_res *res)
{
    tasks_svc *s = req->service;
    const char *id = projects_id(req, res, "id", "project");
    if (!id)
        return;
    project p;
    dk_status st = projects_repo_get(&s->repo, req->arena, id, req->identity->user_id, &p);
    if (st != DK_OK) {
        projects_fail(res, st);
        return;
    }
    const char *inm = dk_req_header(req, "If-None-Match");
    if (inm && tasks_if_none_match(inm, p.version)) {
        dk_res_header(res, "ETag", tasks_etag(req->arena, p.version));
        dk_res_empty(res, 304);
        return;
    }
    projects_reply(req, res, 200, &p);
}

void projects_patch(dk_req *req, dk_res *res)
{
    tasks_svc *s = req->service;
    const char *id = projects_id(req, res, "id", "project");
    if (!id)
        return;
    const char *name = NULL, *description = NULL;
    if (!projects_fields(req, res, false, &name, &description))
        return;
    project p;
    dk_status st = projects_repo_patch(&s->repo, req->arena, id, req->identity->user_id, name,
                                       description, dk_req_header(req, "If-Match"), &p);
    if (st != DK_OK) {
        projects_fail(res, st);
        return;
    }
    projects_reply(req, res, 200, &p);
}

void projects_delete(dk_req *req, dk_res *res)
{
    tasks_svc *s = req->service;
    const char *id = projects_id(req, res, "id", "project");
    if (!id)
        return;
    dk_status st = projects_repo_delete(&s->repo, req->arena, id, req->identity->user_id,
                                        dk_req_header(req, "If-Match"));
    if (st != DK_OK) {
        projects_fail(res, st);
        return;
    }
    dk_outbox_kick(s->outbox);
    dk_res_empty(res, 204);
}

/* A user id member of a body (user_id), or NULL with the 422 sent. */
static const char *projects_body_user(dk_req *req, dk_res *res)
{
    json_t *body = NULL;
    if (dk_req_json(req, res, &body) != DK_OK)
        return NULL;
    dk_errors errs;
    dk_errors_init(&errs);
    const char *uid = projects_str(body, "user_id", true, &errs);
    if (uid && !dk_uuid_valid(uid))
        dk_errors_add(&errs, "user_id", "must be the id of an admin of the project");
    if (dk_errors_any(&errs)) {
        dk_res_validation(res, &errs);
        return NULL;
    }
    return uid;
}

void projects_transfer(dk_req *req, dk_res *res)
{
    tasks_svc *s = req->service;
    const char *id = projects_id(req, res, "id", "project");
    if (!id)
        return;
    const char *target = projects_body_user(req, res);
    if (!target)
        return;
    project p;
    dk_status st = projects_repo_transfer(&s->repo, req->arena, id, req->identity->user_id, target,
                                          dk_req_header(req, "If-Match"), &p);
    if (st == DK_E_VALIDATION) {
        tasks_fail_field(res, "user_id");
        return;
    }
    if (st != DK_OK) {
        projects_fail(res, st);
        return;
    }
    projects_reply(req, res, 200, &p);
}

/* ---------- members ---------- */

static dk_status members_write(tasks_svc *s, dk_req *req, tasks_profiles *cache, dk_jw *w,
                               const project_member *m)
{
    dk_jw_object(w);
    dk_jw_key(w, "user");
    dk_status st = tasks_write_profile(s, req, cache, w, m->user_id);
    dk_jw_key(w, "role");
    dk_jw_string(w, project_role_name(m->role));
    projects_time(w, "added_at", m->added_at);
    dk_jw_object_end(w);
    return st;
}

static void members_reply(dk_req *req, dk_res *res, int status, const project_member *m)
{
    tasks_svc *s = req->service;
    tasks_profiles *cache = dk_arena_alloc(req->arena, sizeof *cache);
    memset(cache, 0, sizeof *cache);
    dk_jw w = {0};
    dk_status st = members_write(s, req, cache, &w, m);
    if (st != DK_OK) {
        (void)dk_jw_finish(&w, req->arena, NULL);
        tasks_fail_what(res, st, "member");
        return;
    }
    dk_res_jw(res, status, &w);
}

static void members_fail(dk_res *res, dk_status st)
{
    if (st == DK_E_CONFLICT)
        dk_res_problem(res, st, "that user is already a member of the project");
    else
        tasks_fail_what(res, st, "project or member");
}

/* The role member of a body: a role other than owner; -1 with the 422 sent. */
static int members_body_role(const json_t *body, dk_errors *errs)
{
    const char *r = projects_str(body, "role", true, errs);
    int role = r ? project_role_parse(r) : -1;
    if (r && (role < 0 || role == PROJECT_ROLE_OWNER))
        dk_errors_add(errs, "role",
                      "must be one of viewer, editor, admin (ownership moves by transfer)");
    return role == PROJECT_ROLE_OWNER ? -1 : role;
}

/* The query of a page of a project's or task's sub-list (members, comments, activity): the
 * parent's id from the path, limit and cursor from the query. false: answered (404, 400). */
static bool projects_page_in(dk_req *req, dk_res *res, int kind, const char *what,
                             const char **ret_id, int *ret_limit, projects_after *ret_after)
{
    const char *id = projects_id(req, res, "id", what);
    if (!id)
        return false;
    dk_errors errs;
    dk_errors_init(&errs);
    bool ok = projects_limit(req, &errs, ret_limit);
    ok = projects_cursor_in(req, kind, id, ret_after, &errs) && ok;
    if (!ok) {
        dk_res_bad_query(res, &errs);
        return false;
    }
    dk_errors_release(&errs);
    *ret_id = id;
    return true;
}

/* Starts a page's body: {"items": [ */
static void projects_page_open(dk_jw *w)
{
    dk_jw_object(w);
    dk_jw_key(w, "items");
    dk_jw_array(w);
}

/* Ends a page with its next_cursor (NULL on the last page) and sends it, or the failure st of
 * writing an item (what names the item). */
static void projects_page_send(dk_req *req, dk_res *res, dk_jw *w, const char *next_cursor,
                               dk_status st, const char *what)
{
    dk_jw_array_end(w);
    dk_jw_key(w, "next_cursor");
    dk_jw_string(w, next_cursor);
    dk_jw_object_end(w);
    if (st != DK_OK) {
        (void)dk_jw_finish(w, req->arena, NULL);
        tasks_fail_what(res, st, what);
        return;
    }
    dk_res_jw(res, 200, w);
}

void projects_members_list(dk_req *req, dk_res *res)
{
    tasks_svc *s = req->service;
    const char *id = NULL;
    int limit = 0;
    projects_after after;
    if (!projects_page_in(req, res, PJ_CURSOR_MEMBERS, "project", &id, &limit, &after))
        return;
    project_member *items = NULL;
    int n = 0;
    dk_status st = projects_repo_members(&s->repo, req->arena, id, req->identity->user_id, &after,
                                         limit, &items, &n);
    if (st != DK_OK) {
        members_fail(res, st);
        return;
    }
    tasks_profiles *cache = dk_arena_alloc(req->arena, sizeof *cache);
    memset(cache, 0, sizeof *cache);
    dk_jw w = {0};
    projects_page_open(&w);
    for (int i = 0; st == DK_OK && i < n && i < limit; i++)
        st = members_write(s, req, cache, &w, &items[i]);
    projects_page_send(req, res, &w,
                       n > limit ? projects_cursor_out(req, PJ_CURSOR_MEMBERS, id,
                                                       items[limit - 1].added_at,
                                                       items[limit - 1].user_id)
                                 : NULL,
                       st, "member");
}

void projects_members_add(dk_req *req, dk_res *res)
{
    tasks_svc *s = req->service;
    const char *id = projects_id(req, res, "id", "project");
    if (!id)
        return;
    json_t *body = NULL;
    if (dk_req_json(req, res, &body) != DK_OK)
        return;
    dk_errors errs;
    dk_errors_init(&errs);
    const char *email = projects_str(body, "email", true, &errs);
    int role = members_body_role(body, &errs);
    if (dk_errors_any(&errs)) {
        dk_res_validation(res, &errs);
        return;
    }
    dk_errors_release(&errs);
    /* the caller must see the project before learning whether an address has an account */
    project p;
    dk_status st = projects_repo_get(&s->repo, req->arena, id, req->identity->user_id, &p);
    if (st == DK_OK && p.my_role < PROJECT_ROLE_ADMIN)
        st = DK_E_FORBIDDEN;
    if (st != DK_OK) {
        members_fail(res, st);
        return;
    }
    dk_user u;
    st = s->users->find_by_email(s->users_h, req->arena, email, &u);
    if (st == DK_E_NOT_FOUND) {
        dk_res_problem(res, st, "no account has that e-mail address");
        return;
    }
    if (st != DK_OK) {
        members_fail(res, st == DK_E_UNAVAILABLE ? st : DK_E_INTERNAL);
        return;
    }
    project_member m;
    st = projects_repo_member_add(&s->repo, req->arena, id, req->identity->user_id, u.id, role, &m);
    if (st != DK_OK) {
        members_fail(res, st);
        return;
    }
    dk_outbox_kick(s->outbox);
    dk_res_header(res, "Location",
                  dk_arena_printf(req->arena, PROJECTS_PREFIX "/%s/members/%s", id, u.id));
    members_reply(req, res, 201, &m);
}

void projects_members_patch(dk_req *req, dk_res *res)
{
    tasks_svc *s = req->service;
    const char *id = projects_id(req, res, "id", "project");
    if (!id)
        return;
    const char *uid = projects_id(req, res, "user_id", "member");
    if (!uid)
        return;
    json_t *body = NULL;
    if (dk_req_json(req, res, &body) != DK_OK)
        return;
    dk_errors errs;
    dk_errors_init(&errs);
    int role = members_body_role(body, &errs);
    if (dk_errors_any(&errs)) {
        dk_res_validation(res, &errs);
        return;
    }
    dk_errors_release(&errs);
    project_member m;
    dk_status st =
        projects_repo_member_role(&s->repo, req->arena, id, req->identity->user_id, uid, role, &m);
    if (st != DK_OK) {
        members_fail(res, st);
        return;
    }
    members_reply(req, res, 200, &m);
}

void projects_members_delete(dk_req *req, dk_res *res)
{
    tasks_svc *s = req->service;
    const char *id = projects_id(req, res, "id", "project");
    if (!id)
        return;
    const char *uid = projects_id(req, res, "user_id", "member");
    if (!uid)
        return;
    dk_status st =
        projects_repo_member_remove(&s->repo, req->arena, id, req->identity->user_id, uid);
    if (st != DK_OK) {
        members_fail(res, st);
        return;
    }
    dk_outbox_kick(s->outbox);
    dk_res_empty(res, 204);
}

/* ---------- comments ---------- */

static dk_status comments_write(tasks_svc *s, dk_req *req, tasks_profiles *cache, dk_jw *w,
                                const task_comment *c)
{
    dk_jw_object(w);
    dk_jw_key(w, "id");
    dk_jw_string(w, c->id);
    dk_jw_key(w, "task_id");
    dk_jw_string(w, c->task_id);
    dk_jw_key(w, "author");
    dk_status st = tasks_write_profile(s, req, cache, w, c->author_id);
    dk_jw_key(w, "body");
    dk_jw_string(w, c->body);
    projects_time(w, "created_at", c->created_at);
    projects_time(w, "updated_at", c->updated_at);
    dk_jw_object_end(w);
    return st;
}

static void comments_reply(dk_req *req, dk_res *res, int status, const task_comment *c)
{
    tasks_svc *s = req->service;
    tasks_profiles *cache = dk_arena_alloc(req->arena, sizeof *cache);
    memset(cache, 0, sizeof *cache);
    dk_jw w = {0};
    dk_status st = comments_write(s, req, cache, &w, c);
    if (st != DK_OK) {
        (void)dk_jw_finish(&w, req->arena, NULL);
        tasks_fail_what(res, st, "comment");
        return;
    }
    dk_res_jw(res, status, &w);
}

/* The body member of a comment body; NULL with the 422 sent. */
static const char *comments_body(dk_req *req, dk_res *res)
{
    json_t *body = NULL;
    if (dk_req_json(req, res, &body) != DK_OK)
        return NULL;
    dk_errors errs;
    dk_errors_init(&errs);
    const char *text = projects_str(body, "body", true, &errs);
    const char *msg = text ? comment_validate_body(text) : NULL;
    if (msg)
        dk_errors_add(&errs, "body", "%s", msg);
    if (dk_errors_any(&errs)) {
        dk_res_validation(res, &errs);
        return NULL;
    }
    return text;
}

void comments_list(dk_req *req, dk_res *res)
{
    tasks_svc *s = req->service;
    const char *id = NULL;
    int limit = 0;
    projects_after after;
    if (!projects_page_in(req, res, PJ_CURSOR_COMMENTS, "task", &id, &limit, &after))
        return;
    task_comment *items = NULL;
    int n = 0;
    dk_status st = comments_repo_list(&s->repo, req->arena, id, req->identity->user_id, &after,
                                      limit, &items, &n);
    if (st != DK_OK) {
        tasks_fail_what(res, st, "task");
        return;
    }
    tasks_profiles *cache = dk_arena_alloc(req->arena, sizeof *cache);
    memset(cache, 0, sizeof *cache);
    dk_jw w = {0};
    projects_page_open(&w);
    for (int i = 0; st == DK_OK && i < n && i < limit; i++)
        st = comments_write(s, req, cache, &w, &items[i]);
    projects_page_send(req, res, &w,
                       n > limit ? projects_cursor_out(req, PJ_CURSOR_COMMENTS, id,
                                                       items[limit - 1].seq, items[limit - 1].id)
                                 : NULL,
                       st, "comment");
}

void comments_create(dk_req *req, dk_res *res)
{
    tasks_svc *s = req->service;
    const char *id = projects_id(req, res, "id", "task");
    if (!id)
        return;
    const char *body = comments_body(req, res);
    if (!body)
        return;
    task_comment c;
    dk_status st = comments_repo_create(&s->repo, req->arena, id, req->identity->user_id, body, &c);
    if (st != DK_OK) {
        tasks_fail_what(res, st, "task");
        return;
    }
    dk_outbox_kick(s->outbox);
    dk_res_header(res, "Location",
                  dk_arena_printf(req->arena, "/api/v1/tasks/%s/comments/%s", id, c.id));
    comments_reply(req, res, 201, &c);
}

void comments_patch(dk_req *req, dk_res *res)
{
    tasks_svc *s = req->service;
    const char *id = projects_id(req, res, "id", "task");
    if (!id)
        return;
    const char *cid = projects_id(req, res, "cid", "comment");
    if (!cid)
        return;
    const char *body = comments_body(req, res);
    if (!body)
        return;
    task_comment c;
    dk_status st =
        comments_repo_patch(&s->repo, req->arena, id, cid, req->identity->user_id, body, &c);
    if (st != DK_OK) {
        tasks_fail_what(res, st, "comment");
        return;
    }
    comments_reply(req, res, 200, &c);
}

void comments_delete(dk_req *req, dk_res *res)
{
    tasks_svc *s = req->service;
    const char *id = projects_id(req, res, "id", "task");
    if (!id)
        return;
    const char *cid = projects_id(req, res, "cid", "comment");
    if (!cid)
        return;
    dk_status st = comments_repo_delete(&s->repo, req->arena, id, cid, req->identity->user_id);
    if (st != DK_OK) {
        tasks_fail_what(res, st, "comment");
        return;
    }
    dk_res_empty(res, 204);
}

/* ---------- activity ---------- */

/* A stored JSON value written as it is (it was rendered by us). */
static void activity_raw(dk_req *req, dk_jw *w, const char *key, const char *json_text)
{
    dk_jw_key(w, key);
    if (!json_text) {
        dk_jw_null(w);
        return;
    }
    json_error_t err;
    json_t *v = json_loads(json_text, JSON_DECODE_ANY, &err);
    if (!v) {
        dk_jw_null(w);
        return;
    }
    if (json_is_string(v))
        dk_jw_string(w, json_string_value(v));
    else if (json_is_integer(v))
        dk_jw_int(w, (long long)json_integer_value(v));
    else if (json_is_array(v)) {
        dk_jw_array(w);
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) dk_jw_string(w, json_string_value(e));
        dk_jw_array_end(w);
    } else
        dk_jw_null(w);
    json_decref(v);
    (void)req;
}

void activity_list(dk_req *req, dk_res *res)
{
    tasks_svc *s = req->service;
    const char *id = NULL;
    int limit = 0;
    projects_after after;
    if (!projects_page_in(req, res, PJ_CURSOR_ACTIVITY, "task", &id, &limit, &after))
        return;
    task_activity *items = NULL;
    int n = 0;
    dk_status st = activity_repo_list(&s->repo, req->arena, id, req->identity->user_id, &after,
                                      limit, &items, &n);
    if (st != DK_OK) {
        tasks_fail_what(res, st, "task");
        return;
    }
    tasks_profiles *cache = dk_arena_alloc(req->arena, sizeof *cache);
    memset(cache, 0, sizeof *cache);
    dk_jw w = {0};
    projects_page_open(&w);
    for (int i = 0; st == DK_OK && i < n && i < limit; i++) {
        const task_activity *e = &items[i];
        dk_jw_object(&w);
        dk_jw_key(&w, "id");
        dk_jw_string(&w, e->id);
        dk_jw_key(&w, "task_id");
        dk_jw_string(&w, id);
        dk_jw_key(&w, "actor");
        st = tasks_write_profile(s, req, cache, &w, e->actor_id);
        dk_jw_key(&w, "action");
        dk_jw_string(&w, e->action);
        dk_jw_key(&w, "field");
        dk_jw_string(&w, e->field);
        activity_raw(req, &w, "old", e->old_value);
        activity_raw(req, &w, "new", e->new_value);
        dk_jw_key(&w, "comment_id");
        dk_jw_string(&w, e->comment_id);
        projects_time(&w, "created_at", e->created_at);
        dk_jw_object_end(&w);
    }
    projects_page_send(req, res, &w,
                       n > limit ? projects_cursor_out(req, PJ_CURSOR_ACTIVITY, id,
                                                       items[limit - 1].seq, items[limit - 1].id)
                                 : NULL,
                       st, "task");
}
