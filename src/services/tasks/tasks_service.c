/* The tasks service (/api/v1/tasks, /api/v1/projects): create, read, change and delete tasks;
 * list them with filters, sorting, full-text search and keyset pagination; projects, their
 * members, comments and activity (handlers in projects_service.c). A personal task is visible
 * to its owner and its assignee, a project task to the project's members (tasks_visible_sql).
 * Users are known only through the users.directory port; the service answers the
 * accounts.deletion_guard port, and applies the deletion rules when an account is deleted
 * (event user.deleted). */
#include <string.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/batch.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "ports/account_guard.h"
#include "ports/users_directory.h"
#include "services/service.h"
#include "services/tasks/tasks_model.h"
#include "services/tasks/tasks_query.h"
#include "core/outbox.h"
#include "services/tasks/tasks_repo.h"
#include "services/tasks/tasks_service.h"
#include "core/banned.h"

/* The service serves two collections, so its routes are mounted under /api/v1. */
#define TASKS_PREFIX "/api/v1/tasks"

void tasks_fail_what(dk_res *res, dk_status st, const char *what)
{
    switch (st) {
    case DK_E_NOT_FOUND:
        dk_res_problem(res, st, "no such %s", what);
        break;
    case DK_E_FORBIDDEN:
        dk_res_problem(res, st,
                       "your part in this %s does not allow that (a personal task's assignee "
                       "and a project's viewers may change the status of their tasks only; "
                       "projects and their members are managed by admins; the owner is never "
                       "removed, demoted or leaves)",
                       what);
        break;
    case DK_E_PRECONDITION:
        dk_res_problem(res, st, "the %s has changed since that version (If-Match)", what);
        break;
    case DK_E_CONFLICT:
        dk_res_problem(res, st, "that %s already exists", what);
        break;
    case DK_E_UNAVAILABLE:
        dk_res_header(res, "Retry-After", "1");
        dk_res_problem(res, st, "a dependency is unavailable or busy; try again shortly");
        break;
    default:
        dk_res_problem(res, DK_E_INTERNAL, "unexpected error");
    }
}

static void tasks_fail(dk_res *res, dk_status st)
{
    tasks_fail_what(res, st, "task");
}

void tasks_fail_field(dk_res *res, const char *field)
{
    dk_errors errs;
    dk_errors_init(&errs);
    if (strcmp(field, "project_id") == 0)
        dk_errors_add(&errs, field, "must be null or a project in which you are an editor");
    else if (strcmp(field, "assignee_id") == 0)
        dk_errors_add(&errs, field, "must be a member of the task's project");
    else
        dk_errors_add(&errs, field, "must be an admin of the project");
    dk_res_validation(res, &errs);
}

dk_status tasks_write_profile(tasks_svc *s, dk_req *req, tasks_profiles *cache, dk_jw *w,
                              const char *id)
{
    if (!id) {
        dk_jw_null(w);
        return DK_OK;
    }
    int k = -1;
    for (int i = 0; i < cache->n; i++)
        if (strcmp(cache->e[i].id, id) == 0)
            k = i;
    if (k < 0) {
        dk_user u;
        dk_status st = s->users->get(s->users_h, req->arena, id, &u);
        if (st != DK_OK && st != DK_E_NOT_FOUND)
            return st;
        k = cache->n < (int)(sizeof cache->e / sizeof cache->e[0]) ? cache->n++ : 0;
        cache->e[k].id = id;
        cache->e[k].found = st == DK_OK;
        if (st == DK_OK)
            cache->e[k].u = u;
    }
    if (!cache->e[k].found) {
        dk_jw_null(w);
        return DK_OK;
    }
    const dk_user *u = &cache->e[k].u;
    dk_jw_object(w);
    dk_jw_key(w, "id");
    dk_jw_string(w, u->id);
    dk_jw_key(w, "name");
    dk_jw_string(w, u->name);
    dk_jw_key(w, "avatar_url");
    dk_jw_string(w, u->avatar_url);
    dk_jw_object_end(w);
    return DK_OK;
}

/* The {id} of the path, or NULL (404 sent) when it cannot name a task. */
static const char *tasks_path_id(dk_req *req, dk_res *res)
{
    const char *id = dk_req_param(req, "id");
    if (!id || !dk_uuid_valid(id)) {
        tasks_fail(res, DK_E_NOT_FOUND);
        return NULL;
    }
    return id;
}

/* Checks a new assignee exists. DK_OK, or a response has been sent. */
static dk_status tasks_check_assignee(tasks_svc *s, dk_req *req, dk_res *res,
                                      const tasks_changes *ch)
{
    if (!ch->assignee_set || !ch->assignee_id)
        return DK_OK;
    dk_user u;
    dk_status st = s->users->get(s->users_h, req->arena, ch->assignee_id, &u);
    if (st == DK_E_NOT_FOUND) {
        dk_errors errs;
        dk_errors_init(&errs);
        dk_errors_add(&errs, "assignee_id", "must be the id of an existing user");
        dk_res_validation(res, &errs);
        return st;
    }
    if (st != DK_OK)
        tasks_fail(res, st == DK_E_UNAVAILABLE ? st : DK_E_INTERNAL);
    return st;
}

static void tasks_reply(dk_req *req, dk_res *res, int status, const tasks_task *t)
{
    dk_res_header(res, "ETag", tasks_etag(req->arena, t->version));
    dk_jw w = {0};
    tasks_task_write(&w, t);
    dk_res_jw(res, status, &w);
}

/* A create or a patch whose write may share a statement with others (tasks_repo_create_start,
 * tasks_repo_patch_start): when it is queued, the request waits suspended and is answered from
 * the batch's thread. id and ch: a patch's, to read again when its task changed since. */
typedef struct tasks_later {
    dk_batch_job job; /* first */
    tasks_svc *s;
    dk_req *req;
    dk_res *res;
    bool create;
    const char *id;
    tasks_changes ch;
    tasks_task t;
} tasks_later;

/* The answer to a create (201) or a patch (200), once written. */
static void tasks_later_answer(const tasks_later *l, dk_status st, const char *field)
{
    if (st == DK_E_VALIDATION && field) {
        tasks_fail_field(l->res, field);
        return;
    }
    if (st != DK_OK) {
        tasks_fail(l->res, st);
        return;
    }
    dk_outbox_kick(l->s->outbox);
    if (l->create)
        dk_res_header(l->res, "Location",
                      dk_arena_printf(l->req->arena, TASKS_PREFIX "/%s", l->t.id));
    tasks_reply(l->req, l->res, l->create ? 201 : 200, &l->t);
}

static void tasks_later_queued(dk_batch_job *job)
{
    dk_req_suspend(((tasks_later *)job)->req);
}

static void tasks_later_done(dk_batch_job *job)
{
    tasks_later *l = (tasks_later *)job;
    dk_req *req = l->req;
    dk_log_set_context(req->request_id, req->trace_id);
    dk_status st = job->status;
    const char *field = NULL;
    if (!l->create && st == DK_E_CONFLICT) /* changed since it was read: again, alone */
        st = tasks_repo_patch(&l->s->repo, req->arena, l->id, req->identity->user_id, &l->ch,
                              dk_req_header(req, "If-Match"), &l->t, &field);
    tasks_later_answer(l, st, field);
    dk_log_set_context(NULL, NULL);
    dk_req_resume(req); /* l lives in req's arena: not touched after */
}

static tasks_later *tasks_later_new(tasks_svc *s, dk_req *req, dk_res *res, bool create)
{
    tasks_later *l = dk_arena_alloc(req->arena, sizeof *l);
    *l = (tasks_later){.job = {.on_queue = tasks_later_queued, .done = tasks_later_done},
                       .s = s,
                       .req = req,
                       .res = res,
                       .create = create};
    return l;
}

static void tasks_create(dk_req *req, dk_res *res)
{
    tasks_svc *s = req->service;
    json_t *body = NULL;
    if (dk_req_json(req, res, &body) != DK_OK)
        return;
    dk_errors errs;
    dk_errors_init(&errs);
    tasks_changes ch;
    tasks_changes_parse(req->arena, body, true, &ch, &errs);
    if (dk_errors_any(&errs)) {
        dk_res_validation(res, &errs);
        return;
    }
    if (tasks_check_assignee(s, req, res, &ch) != DK_OK)
        return;
    char *id = dk_arena_alloc(req->arena, DK_UUID_LEN);
    dk_uuid7(id);
    tasks_later *l = tasks_later_new(s, req, res, true);
    tasks_task_new(req->arena, &ch, id, req->identity->user_id, dk_now_ms(), &l->t);
    const char *field = NULL;
    dk_status st = DK_E_INTERNAL;
    if (tasks_repo_create_start(&s->repo, req->arena, &l->t, &l->job, &st, &field))
        tasks_later_answer(l, st, field);
}

static void tasks_get(dk_req *req, dk_res *res)
{
    tasks_svc *s = req->service;
    const char *id = tasks_path_id(req, res);
    if (!id)
        return;
    tasks_task t;
    dk_status st = tasks_repo_get(&s->repo, req->arena, id, req->identity->user_id, &t, NULL);
    if (st != DK_OK) {
        tasks_fail(res, st);
        return;
    }
    const char *inm = dk_req_header(req, "If-None-Match");
    if (inm && tasks_if_none_match(inm, t.version)) {
        dk_res_header(res, "ETag", tasks_etag(req->arena, t.version));
        dk_res_empty(res, 304);
        return;
    }
    tasks_reply(req, res, 200, &t);
}

static void tasks_patch(dk_req *req, dk_res *res)
{
    tasks_svc *s = req->service;
    const char *id = tasks_path_id(req, res);
    if (!id)
        return;
    json_t *body = NULL;
    if (dk_req_json(req, res, &body) != DK_OK)
        return;
    dk_errors errs;
    dk_errors_init(&errs);
    tasks_later *l = tasks_later_new(s, req, res, false);
    l->id = id;
    tasks_changes_parse(req->arena, body, false, &l->ch, &errs);
    if (dk_errors_any(&errs)) {
        dk_res_validation(res, &errs);
        return;
    }
    if (tasks_check_assignee(s, req, res, &l->ch) != DK_OK)
        return;
    const char *field = NULL;
    dk_status st = DK_E_INTERNAL;
    if (tasks_repo_patch_start(&s->repo, req->arena, id, req->identity->user_id, &l->ch,
                               dk_req_header(req, "If-Match"), &l->job, &st, &l->t, &field))
        tasks_later_answer(l, st, field);
}

static void tasks_delete(dk_req *req, dk_res *res)
{
    tasks_svc *s = req->service;
    const char *id = tasks_path_id(req, res);
    if (!id)
        return;
    dk_status st = tasks_repo_delete(&s->repo, req->arena, id, req->identity->user_id,
                                     dk_req_header(req, "If-Match"));
    if (st != DK_OK) {
        tasks_fail(res, st);
        return;
    }
    dk_outbox_kick(s->outbox);
    dk_res_empty(res, 204);
}

static const char *tasks_query_param(void *ctx, const char *name)
{
    return dk_req_query(ctx, name);
}

static void tasks_list(dk_req *req, dk_res *res)
{
    tasks_svc *s = req->service;
    dk_errors errs;
    dk_errors_init(&errs);
    tasks_list_query q;
    if (tasks_query_parse(req->arena, tasks_query_param, req, req->identity->user_id,
                          s->app->cursor_key, &q, &errs) != DK_OK) {
        dk_res_bad_query(res, &errs);
        return;
    }
    tasks_task *items = NULL;
    int n = 0;
    char *next = NULL;
    dk_status st = tasks_repo_list(&s->repo, req->arena, &q, &items, &n, &next);
    if (st != DK_OK) {
        tasks_fail_what(res, st, q.project_id ? "project" : "task");
        return;
    }
    dk_jw w = {0};
    dk_jw_object(&w);
    dk_jw_key(&w, "items");
    dk_jw_array(&w);
    for (int i = 0; i < n; i++)
        tasks_task_write(&w, &items[i]);
    dk_jw_array_end(&w);
    dk_jw_key(&w, "next_cursor");
    dk_jw_string(&w, next);
    dk_jw_object_end(&w);
    dk_res_jw(res, 200, &w);
}

/* accounts.deletion_guard, in-process. */
static dk_status tasks_guard_may_delete(void *h, dk_arena *a, const char *user_id)
{
    tasks_svc *s = h;
    bool blocked = false;
    dk_status st = tasks_repo_account_blocked(&s->repo, a, user_id, &blocked);
    if (st == DK_OK && blocked)
        st = DK_E_CONFLICT;
    return st;
}

static const struct dk_account_guard_ops tasks_guard_inproc = {
    .may_delete = tasks_guard_may_delete,
};

/* The same for other processes: 204 when the account may go, 409 when it owns a project that
 * has other members. */
static void tasks_internal_deletable(dk_req *req, dk_res *res)
{
    tasks_svc *s = req->service;
    const char *id = dk_req_param(req, "id");
    dk_status st = id ? tasks_guard_may_delete(s, req->arena, id) : DK_E_NOT_FOUND;
    if (st == DK_E_CONFLICT) {
        dk_res_problem(res, st, "the account owns a project that has other members");
        return;
    }
    if (st != DK_OK) {
        tasks_fail(res, st);
        return;
    }
    dk_res_empty(res, 204);
}

/* user.deleted: the account is going away — the deletion rules (tasks_repo_forget_user). */
static dk_status tasks_on_user_deleted(void *ctx, const char *type, const char *payload)
{
    tasks_svc *s = ctx;
    dk_arena *a = dk_arena_new();
    const char *uid = dk_user_deleted_id(a, payload);
    dk_status st = uid ? tasks_repo_forget_user(&s->repo, a, uid) : DK_OK;
    dk_arena_free(a);
    if (st != DK_OK)
        dk_log_error("tasks: could not remove the tasks of a deleted user: %s",
                     dk_status_title(st));
    return st;
}

static dk_status tasks_init(dk_app *app, void **ret_state)
{
    tasks_svc *s = DK_NEW(tasks_svc);
    s->app = app;
    s->repo.db = &app->db;
    s->repo.cursor_key = app->cursor_key;
    const void *ops = NULL;
    if (!dk_app_port(app, DK_USERS_DIRECTORY, &ops, &s->users_h)) {
        dk_log_error("tasks needs the users service (users.directory) and nothing provides it");
        dk_free(s);
        return DK_E_INTERNAL;
    }
    s->users = ops;
    tasks_repo_prepare(&s->repo);
    dk_app_register_port(app, DK_ACCOUNT_GUARD, &tasks_guard_inproc, s);
    dk_status st =
        app->bus.ops->subscribe(app->bus.ev, DK_EVENT_USER_DELETED, tasks_on_user_deleted, s);
    if (st != DK_OK) {
        tasks_repo_release(&s->repo);
        dk_free(s);
        return st;
    }
    *ret_state = s;
    return DK_OK;
}

/* docket_write_batches_total and its companions: how the creates and patches that share a
 * statement (PostgreSQL, tasks_repo.h) are grouped. jobs / batches is the mean group size. */
static void tasks_collect(void *ctx, dk_metrics_out *out)
{
    const tasks_svc *s = ctx;
    if (!s->repo.creates || !s->repo.patches)
        return;
    static const char *const labels[] = {"batch=\"tasks.create\"", "batch=\"tasks.patch\""};
    long groups[2] = {0}, jobs[2] = {0};
    int queued[2] = {0};
    dk_batch_stats(s->repo.creates, &groups[0], &jobs[0], &queued[0]);
    dk_batch_stats(s->repo.patches, &groups[1], &jobs[1], &queued[1]);
    dk_metrics_family(out, "docket_write_batches_total", "counter",
                      "Statements that carried grouped writes (PostgreSQL).");
    for (int i = 0; i < 2; i++)
        dk_metrics_sample(out, "docket_write_batches_total", labels[i], (double)groups[i]);
    dk_metrics_family(out, "docket_write_batch_jobs_total", "counter",
                      "Writes carried by grouped statements; over docket_write_batches_total, "
                      "the mean group size.");
    for (int i = 0; i < 2; i++)
        dk_metrics_sample(out, "docket_write_batch_jobs_total", labels[i], (double)jobs[i]);
    dk_metrics_family(out, "docket_write_batch_queued", "gauge",
                      "Writes waiting for their group's statement to start.");
    for (int i = 0; i < 2; i++)
        dk_metrics_sample(out, "docket_write_batch_queued", labels[i], queued[i]);
}

static void tasks_start(void *state)
{
    tasks_svc *s = state;
    dk_metrics_add_collector(tasks_collect, s);
    s->outbox = dk_outbox_start(&s->app->db, &s->app->bus, "tasks", TASKS_OUTBOX,
                                dk_config_int(s->app->config, "events.outbox_interval"));
}

static void tasks_stop(void *state)
{
    tasks_svc *s = state;
    dk_outbox_stop(s->outbox);
    s->outbox = NULL;
}

/* Creates still queued when the server has drained are answered before it stops. */
static void tasks_drained(void *state)
{
    tasks_svc *s = state;
    dk_batch_drain(s->repo.creates);
    dk_batch_drain(s->repo.patches);
}

static void tasks_shutdown(void *state)
{
    tasks_svc *s = state;
    tasks_repo_release(&s->repo);
    dk_free(s);
}

static const dk_route tasks_routes[] = {
    {"POST", "/tasks", tasks_create, DK_ROUTE_AUTH},
    {"GET", "/tasks", tasks_list, DK_ROUTE_AUTH},
    {"GET", "/tasks/{id}", tasks_get, DK_ROUTE_AUTH},
    {"PATCH", "/tasks/{id}", tasks_patch, DK_ROUTE_AUTH},
    {"DELETE", "/tasks/{id}", tasks_delete, DK_ROUTE_AUTH},
    {"GET", "/tasks/{id}/comments", comments_list, DK_ROUTE_AUTH},
    {"POST", "/tasks/{id}/comments", comments_create, DK_ROUTE_AUTH},
    {"PATCH", "/tasks/{id}/comments/{cid}", comments_patch, DK_ROUTE_AUTH},
    {"DELETE", "/tasks/{id}/comments/{cid}", comments_delete, DK_ROUTE_AUTH},
    {"GET", "/tasks/{id}/activity", activity_list, DK_ROUTE_AUTH},
    {"POST", "/projects", projects_create, DK_ROUTE_AUTH},
    {"GET", "/projects", projects_list, DK_ROUTE_AUTH},
    {"GET", "/projects/{id}", projects_get, DK_ROUTE_AUTH},
    {"PATCH", "/projects/{id}", projects_patch, DK_ROUTE_AUTH},
    {"DELETE", "/projects/{id}", projects_delete, DK_ROUTE_AUTH},
    {"POST", "/projects/{id}/transfer", projects_transfer, DK_ROUTE_AUTH},
    {"GET", "/projects/{id}/members", projects_members_list, DK_ROUTE_AUTH},
    {"POST", "/projects/{id}/members", projects_members_add, DK_ROUTE_AUTH},
    {"PATCH", "/projects/{id}/members/{user_id}", projects_members_patch, DK_ROUTE_AUTH},
    {"DELETE", "/projects/{id}/members/{user_id}", projects_members_delete, DK_ROUTE_AUTH},
};

static const dk_route tasks_internal_routes[] = {
    {"GET", "/accounts/{id}/deletable", tasks_internal_deletable, DK_ROUTE_INTERNAL},
};

const dk_service dk_tasks_service = {
    .name = "tasks",
    .prefix = "/api/v1",
    .default_port = 3003,
    .routes = tasks_routes,
    .nroutes = sizeof tasks_routes / sizeof tasks_routes[0],
    .migrations = dk_tasks_migrations,
    .nmigrations = DK_TASKS_NMIGRATIONS,
    .internal_prefix = "/internal/v1/tasks",
    .internal_routes = tasks_internal_routes,
    .ninternal_routes = sizeof tasks_internal_routes / sizeof tasks_internal_routes[0],
    .init = tasks_init,
    .start = tasks_start,
    .stop = tasks_stop,
    .drained = tasks_drained,
    .shutdown = tasks_shutdown,
};
