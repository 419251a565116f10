/* The users service: account profiles (/api/v1/users), their avatars (bytes in the blob port,
 * the key in the users row; docs/design/avatars.md), and the users.directory port that the
 * auth service uses to create and find accounts. */
#include <string.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/common.h"
#include "core/json.h"
#include "core/log.h"
#include "core/str.h"
#include "ports/account_guard.h"
#include "services/service.h"
#include "services/users/users_avatar.h"
#include "services/users/users_repo.h"
#include "core/validate.h"
#include "core/banned.h"

typedef struct users_svc {
    dk_app *app;
    const dk_database *db;
    const dk_blobstore *blobs;
} users_svc;

/* Turns a failure of the object store into a response; what stays unchanged is said. */
static void users_blob_fail(dk_res *res, dk_status st, const dk_blob_err *err, const char *what)
{
    if (st == DK_E_UNAVAILABLE) {
        dk_log_warn("object store unavailable: %s", err->text);
        dk_res_header(res, "Retry-After", "5");
        dk_res_problem(res, DK_E_UNAVAILABLE,
                       "the object store is unavailable; %s. Try again shortly", what);
    } else {
        dk_log_error("object store failed: %s", err->text);
        dk_res_problem(res, DK_E_INTERNAL, "the object store failed; %s", what);
    }
}

/* Turns a repository failure into a response. */
static void users_fail(dk_res *res, dk_status st, const char *what)
{
    switch (st) {
    case DK_E_NOT_FOUND:
        dk_res_problem(res, st, "%s not found", what);
        break;
    case DK_E_CONFLICT:
        dk_res_problem(res, st, "this e-mail address is already registered");
        break;
    case DK_E_UNAVAILABLE:
        dk_res_header(res, "Retry-After", "1");
        dk_res_problem(res, st, "the database is unavailable; try again shortly");
        break;
    default:
        dk_res_problem(res, DK_E_INTERNAL, "unexpected error");
    }
}

static void users_get_me(dk_req *req, dk_res *res)
{
    users_svc *s = req->service;
    dk_user u;
    dk_status st = users_repo_get(s->db, req->arena, req->identity->user_id, &u);
    if (st == DK_E_NOT_FOUND) {
        /* the account was deleted while the token was in flight */
        dk_res_problem(res, DK_E_UNAUTHORIZED, "the account no longer exists");
        return;
    }
    if (st != DK_OK) {
        users_fail(res, st, "user");
        return;
    }
    dk_jw w = {0};
    dk_user_write(&w, &u);
    dk_res_jw(res, 200, &w);
}

static void users_patch_me(dk_req *req, dk_res *res)
{
    users_svc *s = req->service;
    json_t *body = NULL;
    if (dk_req_json(req, res, &body) != DK_OK)
        return;
    dk_errors errs;
    dk_errors_init(&errs);
    bool present = false, wrong = false;
    const char *name = dk_json_get_str(body, "name", &present, &wrong);
    if (wrong || (present && !name))
        dk_errors_add(&errs, "name", "must be a string");
    else if (name && dk_validate_name(name))
        dk_errors_add(&errs, "name", "%s", dk_validate_name(name));
    const char *email = dk_json_get_str(body, "email", &present, &wrong);
    if (wrong || (present && !email))
        dk_errors_add(&errs, "email", "must be a string");
    else if (email && dk_validate_email(email))
        dk_errors_add(&errs, "email", "%s", dk_validate_email(email));
    if (dk_errors_any(&errs)) {
        dk_res_validation(res, &errs);
        return;
    }
    dk_user before, u;
    dk_status st = users_repo_get(s->db, req->arena, req->identity->user_id, &before);
    if (st == DK_OK)
        st = users_repo_update(s->db, req->arena, req->identity->user_id, name, email, &u);
    if (st != DK_OK) {
        users_fail(res, st == DK_E_NOT_FOUND ? DK_E_NOT_FOUND : st, "user");
        return;
    }
    if (email && !dk_str_ieq(before.email, u.email)) {
        /* a new address: the auth service sends it a verification e-mail */
        json_t *ev = json_pack("{s:s,s:s}", "user_id", u.id, "email", u.email);
        char *payload = dk_json_render(req->arena, ev, NULL);
        json_decref(ev);
        st = s->app->bus.ops->publish(s->app->bus.ev, DK_EVENT_USER_EMAIL_CHANGED, payload);
        if (st != DK_OK)
            dk_log_warn("e-mail address changed but the verification e-mail was not requested "
                        "(%s); POST /auth/email/resend sends one",
                        dk_status_title(st));
    }
    dk_res_json(res, 200, dk_user_json(&u));
}

static void users_delete_me(dk_req *req, dk_res *res)
{
    users_svc *s = req->service;
    const char *id = req->identity->user_id;
    /* May it go now? (An owner of a project with other members must transfer it first.) */
    const void *gops = NULL;
    void *gh = NULL;
    if (dk_app_port(s->app, DK_ACCOUNT_GUARD, &gops, &gh)) {
        dk_status gst = ((const struct dk_account_guard_ops *)gops)->may_delete(gh, req->arena, id);
        if (gst == DK_E_CONFLICT) {
            dk_res_problem(res, gst,
                           "the account owns a project that has other members: transfer it "
                           "(POST /api/v1/projects/{id}/transfer) or remove them first");
            return;
        }
        if (gst != DK_OK) {
            users_fail(res, gst == DK_E_UNAVAILABLE ? gst : DK_E_INTERNAL, "user");
            return;
        }
    }
    /* The avatar's bytes go first: a store that is down stops the deletion before anything
     * has changed (503), and an account is never gone while its picture stays behind. */
    const char *key = NULL;
    dk_status st = users_repo_avatar_key(s->db, req->arena, id, &key);
    if (st != DK_OK && st != DK_E_NOT_FOUND) {
        users_fail(res, st, "user");
        return;
    }
    if (key) {
        dk_blob_err err = {""};
        st = s->blobs->ops->del(s->blobs->blob, key, &err);
        if (st != DK_OK) {
            users_blob_fail(res, st, &err, "the account was not deleted");
            return;
        }
    }
    /* Tell the other services first (sessions die, tasks go), then remove the account: a
     * failure on the way leaves an account that can still be deleted again, never orphans. */
    json_t *ev = json_pack("{s:s}", "user_id", id);
    char *payload = dk_json_render(req->arena, ev, NULL);
    json_decref(ev);
    st = s->app->bus.ops->publish(s->app->bus.ev, DK_EVENT_USER_DELETED, payload);
    if (st != DK_OK) {
        users_fail(res, st == DK_E_UNAVAILABLE ? st : DK_E_INTERNAL, "user");
        return;
    }
    st = users_repo_delete(s->db, req->arena, id);
    if (st != DK_OK && st != DK_E_NOT_FOUND) {
        users_fail(res, st, "user");
        return;
    }
    dk_log_info("account deleted");
    dk_res_empty(res, 204);
}

static void users_get_one(dk_req *req, dk_res *res)
{
    users_svc *s = req->service;
    dk_user u;
    dk_status st = users_repo_get(s->db, req->arena, dk_req_param(req, "id"), &u);
    if (st != DK_OK) {
        users_fail(res, st, "user");
        return;
    }
    dk_res_json(res, 200,
                json_pack("{s:s,s:s,s:o}", "id", u.id, "name", u.name, "avatar_url",
                          u.avatar_url ? json_string(u.avatar_url) : json_null()));
}

/* ---------- avatars ---------- */

/* PUT /me/avatar: the bytes are stored under their digest first, then the row points at them,
 * then the previous object goes. A store that fails leaves the profile as it was (503); a
 * database that fails after the upload leaves an object no row names, which is removed at
 * once when possible and is harmless otherwise (docs/design/avatars.md). */
static void users_put_avatar(dk_req *req, dk_res *res)
{
    users_svc *s = req->service;
    const char *id = req->identity->user_id;
    const char *ct = dk_req_header(req, "Content-Type");
    dk_avatar_type declared = dk_avatar_type_from_media(ct);
    if (declared == DK_AVATAR_NONE) {
        dk_res_problem(res, DK_E_MEDIA_TYPE,
                       "an avatar is sent as image/png, image/jpeg or image/webp (got %s)",
                       ct && *ct ? ct : "no Content-Type");
        return;
    }
    dk_avatar_type found = dk_avatar_sniff(req->body, req->body_len);
    if (found != declared) {
        dk_res_problem(res, DK_E_MEDIA_TYPE, "the body is not %s: its magic number says %s",
                       dk_avatar_media(declared),
                       found == DK_AVATAR_NONE ? "no accepted image type" : dk_avatar_media(found));
        return;
    }
    char *key = dk_avatar_key(req->arena, id, found, req->body, req->body_len);
    const char *old = NULL;
    dk_status st = key ? users_repo_avatar_key(s->db, req->arena, id, &old) : DK_E_UNAUTHORIZED;
    if (st != DK_OK) {
        if (st == DK_E_NOT_FOUND || st == DK_E_UNAUTHORIZED)
            dk_res_problem(res, DK_E_UNAUTHORIZED, "the account no longer exists");
        else
            users_fail(res, st, "user");
        return;
    }
    dk_blob_err err = {""};
    st = s->blobs->ops->put(s->blobs->blob, key, req->body, req->body_len, dk_avatar_media(found),
                            &err);
    if (st != DK_OK) {
        users_blob_fail(res, st, &err, "the profile is unchanged");
        return;
    }
    dk_user u;
    /* compare-and-set against the key read above; a concurrent change of the same account is
     * read again (a few times at most) */
    for (int attempt = 0;; attempt++) {
        st = users_repo_set_avatar(s->db, req->arena, id, old, key, &u);
        if (st != DK_E_PRECONDITION || attempt == 3)
            break;
        st = users_repo_avatar_key(s->db, req->arena, id, &old);
        if (st != DK_OK)
            break;
    }
    if (st != DK_OK) {
        /* the row still names what it named: the new object is nobody's (unless it is the
         * same image as the current one) */
        if (!dk_streq(old, key) && s->blobs->ops->del(s->blobs->blob, key, &err) != DK_OK)
            dk_log_warn("unreferenced avatar object left behind: %s", err.text);
        if (st == DK_E_PRECONDITION || st == DK_E_NOT_FOUND)
            dk_res_problem(res, DK_E_UNAUTHORIZED, "the account no longer exists");
        else
            users_fail(res, st, "user");
        return;
    }
    if (old && !dk_streq(old, key) && s->blobs->ops->del(s->blobs->blob, old, &err) != DK_OK)
        dk_log_warn("the previous avatar object could not be deleted: %s", err.text);
    dk_log_info("avatar replaced");
    dk_res_json(res, 200, dk_user_json(&u));
}

/* DELETE /me/avatar: the bytes first (a store that is down changes nothing: 503), then the
 * row. No avatar is not an error. */
static void users_delete_avatar(dk_req *req, dk_res *res)
{
    users_svc *s = req->service;
    const char *id = req->identity->user_id;
    for (int attempt = 0; attempt < 4; attempt++) {
        const char *key = NULL;
        dk_status st = users_repo_avatar_key(s->db, req->arena, id, &key);
        if (st == DK_E_NOT_FOUND) {
            dk_res_problem(res, DK_E_UNAUTHORIZED, "the account no longer exists");
            return;
        }
        if (st != DK_OK) {
            users_fail(res, st, "user");
            return;
        }
        if (!key)
            break;
        dk_blob_err err = {""};
        st = s->blobs->ops->del(s->blobs->blob, key, &err);
        if (st != DK_OK) {
            users_blob_fail(res, st, &err, "the avatar is unchanged");
            return;
        }
        st = users_repo_set_avatar(s->db, req->arena, id, key, NULL, NULL);
        if (st == DK_OK)
            break;
        if (st != DK_E_PRECONDITION) {
            users_fail(res, st, "user");
            return;
        }
        /* replaced meanwhile: that newer avatar is the one to delete */
    }
    dk_res_empty(res, 204);
}

/* GET /{id}/avatar: the bytes as uploaded, with the digest as a strong ETag. The versioned
 * URL profiles show (?v=) names one image for ever and may be cached for a year; the plain
 * URL is revalidated each time (304 while unchanged). Bearer-only, so private. */
static void users_get_avatar(dk_req *req, dk_res *res)
{
    users_svc *s = req->service;
    const char *id = dk_req_param(req, "id");
    const char *key = NULL;
    dk_status st = users_repo_avatar_key(s->db, req->arena, id, &key);
    if (st != DK_OK) {
        users_fail(res, st, "user");
        return;
    }
    dk_avatar_type type = DK_AVATAR_NONE;
    char hex[65];
    if (!key || !dk_avatar_key_parse(key, &type, hex)) {
        dk_res_problem(res, DK_E_NOT_FOUND, "this user has no avatar");
        return;
    }
    char *etag = dk_avatar_etag(req->arena, key);
    const char *v = dk_req_query(req, "v");
    bool versioned = v && strlen(v) == 16 && strncmp(v, hex, 16) == 0;
    const char *cache = versioned ? "private, max-age=31536000, immutable" : "private, no-cache";
    if (dk_avatar_etag_matches(dk_req_header(req, "If-None-Match"), etag)) {
        dk_res_header(res, "ETag", etag);
        dk_res_header(res, "Cache-Control", cache);
        dk_res_empty(res, 304);
        return;
    }
    char *data = NULL;
    size_t len = 0;
    dk_blob_err err = {""};
    st =
        s->blobs->ops->get(s->blobs->blob, req->arena, key, DK_AVATAR_MAX_BYTES, &data, &len, &err);
    if (st == DK_E_NOT_FOUND) {
        /* the row names an object that is gone (a delete that raced an upload of the same
         * image): the row lets go of it, if it still names it */
        dk_log_warn("avatar object missing, reference cleared: %s", err.text);
        if (users_repo_set_avatar(s->db, req->arena, id, key, NULL, NULL) != DK_OK)
            dk_log_debug("the avatar reference had changed meanwhile");
        dk_res_problem(res, DK_E_NOT_FOUND, "this user has no avatar");
        return;
    }
    if (st != DK_OK) {
        users_blob_fail(res, st, &err, "nothing was changed");
        return;
    }
    dk_res_header(res, "ETag", etag);
    dk_res_header(res, "Cache-Control", cache);
    dk_res_header(res, "X-Content-Type-Options", "nosniff");
    dk_res_text(res, 200, dk_avatar_media(type), data, len);
}

/* ---------- the internal API: the users.directory port for other processes ---------- */

static void users_internal_create(dk_req *req, dk_res *res)
{
    users_svc *s = req->service;
    json_t *body = NULL;
    if (dk_req_json(req, res, &body) != DK_OK)
        return;
    const char *email = json_string_value(json_object_get(body, "email"));
    const char *name = json_string_value(json_object_get(body, "name"));
    dk_errors errs;
    dk_errors_init(&errs);
    if (!email || dk_validate_email(email))
        dk_errors_add(&errs, "email", "%s", email ? dk_validate_email(email) : "is required");
    if (!name || dk_validate_name(name))
        dk_errors_add(&errs, "name", "%s", name ? dk_validate_name(name) : "is required");
    if (dk_errors_any(&errs)) {
        dk_res_validation(res, &errs);
        return;
    }
    dk_user u;
    dk_status st = users_repo_create(s->db, req->arena, email, name, &u);
    if (st != DK_OK) {
        users_fail(res, st, "user");
        return;
    }
    dk_res_json(res, 201, dk_user_json(&u));
}

static void users_internal_by_email(dk_req *req, dk_res *res)
{
    users_svc *s = req->service;
    const char *email = dk_req_query(req, "email");
    if (!email || !*email) {
        dk_res_problem(res, DK_E_BAD_REQUEST, "the email query parameter is required");
        return;
    }
    dk_user u;
    dk_status st = users_repo_find_by_email(s->db, req->arena, email, &u);
    if (st != DK_OK) {
        users_fail(res, st, "user");
        return;
    }
    dk_res_json(res, 200, dk_user_json(&u));
}

static void users_internal_get(dk_req *req, dk_res *res)
{
    users_svc *s = req->service;
    dk_user u;
    dk_status st = users_repo_get(s->db, req->arena, dk_req_param(req, "id"), &u);
    if (st != DK_OK) {
        users_fail(res, st, "user");
        return;
    }
    dk_res_json(res, 200, dk_user_json(&u));
}

static void users_internal_delete(dk_req *req, dk_res *res)
{
    users_svc *s = req->service;
    dk_status st = users_repo_delete(s->db, req->arena, dk_req_param(req, "id"));
    if (st != DK_OK) {
        users_fail(res, st, "user");
        return;
    }
    dk_res_empty(res, 204);
}

static void users_internal_verified(dk_req *req, dk_res *res)
{
    users_svc *s = req->service;
    json_t *body = NULL;
    if (dk_req_json(req, res, &body) != DK_OK)
        return;
    const char *email = json_string_value(json_object_get(body, "email"));
    if (!email) {
        dk_errors errs;
        dk_errors_init(&errs);
        dk_errors_add(&errs, "email", "is required");
        dk_res_validation(res, &errs);
        return;
    }
    dk_user u;
    dk_status st = users_repo_mark_verified(s->db, req->arena, dk_req_param(req, "id"), email, &u);
    if (st != DK_OK) {
        users_fail(res, st, "user with that address");
        return;
    }
    dk_res_json(res, 200, dk_user_json(&u));
}

static void users_internal_mfa(dk_req *req, dk_res *res)
{
    users_svc *s = req->service;
    json_t *body = NULL;
    if (dk_req_json(req, res, &body) != DK_OK)
        return;
    json_t *en = json_object_get(body, "enabled");
    if (!json_is_boolean(en)) {
        dk_errors errs;
        dk_errors_init(&errs);
        dk_errors_add(&errs, "enabled", "must be true or false");
        dk_res_validation(res, &errs);
        return;
    }
    dk_user u;
    dk_status st =
        users_repo_set_mfa(s->db, req->arena, dk_req_param(req, "id"), json_is_true(en), &u);
    if (st != DK_OK) {
        users_fail(res, st, "user");
        return;
    }
    dk_res_json(res, 200, dk_user_json(&u));
}

static const dk_route users_internal_routes[] = {
    {"POST", "/{id}/email-verified", users_internal_verified, DK_ROUTE_INTERNAL},
    {"PUT", "/{id}/mfa", users_internal_mfa, DK_ROUTE_INTERNAL},
    {"POST", "/", users_internal_create, DK_ROUTE_INTERNAL},
    {"GET", "/by-email", users_internal_by_email, DK_ROUTE_INTERNAL},
    {"GET", "/{id}", users_internal_get, DK_ROUTE_INTERNAL},
    {"DELETE", "/{id}", users_internal_delete, DK_ROUTE_INTERNAL},
};

/* ---------- the users.directory port, in-process ---------- */

static dk_status users_dir_create(void *h, dk_arena *a, const char *email, const char *name,
                                  dk_user *ret)
{
    users_svc *s = h;
    return users_repo_create(s->db, a, email, name, ret);
}

static dk_status users_dir_find(void *h, dk_arena *a, const char *email, dk_user *ret)
{
    users_svc *s = h;
    return users_repo_find_by_email(s->db, a, email, ret);
}

static dk_status users_dir_get(void *h, dk_arena *a, const char *id, dk_user *ret)
{
    users_svc *s = h;
    return users_repo_get(s->db, a, id, ret);
}

static dk_status users_dir_remove(void *h, const char *id)
{
    users_svc *s = h;
    dk_arena *a = dk_arena_new();
    dk_status st = users_repo_delete(s->db, a, id);
    dk_arena_free(a);
    return st;
}

static dk_status users_dir_verified(void *h, dk_arena *a, const char *id, const char *email)
{
    users_svc *s = h;
    dk_user u;
    return users_repo_mark_verified(s->db, a, id, email, &u);
}

static dk_status users_dir_mfa(void *h, dk_arena *a, const char *id, bool enabled)
{
    users_svc *s = h;
    dk_user u;
    return users_repo_set_mfa(s->db, a, id, enabled, &u);
}

static const struct dk_users_directory_ops users_directory_inproc = {
    .mark_email_verified = users_dir_verified,
    .set_mfa_enabled = users_dir_mfa,
    .create = users_dir_create,
    .find_by_email = users_dir_find,
    .get = users_dir_get,
    .remove = users_dir_remove,
};

static dk_status users_init(dk_app *app, void **ret_state)
{
    users_svc *s = DK_NEW(users_svc);
    s->app = app;
    s->db = &app->db;
    s->blobs = &app->blobs;
    if (!s->blobs->ops) {
        dk_log_error("users: no object storage opened");
        dk_free(s);
        return DK_E_INTERNAL;
    }
    dk_app_register_port(app, DK_USERS_DIRECTORY, &users_directory_inproc, s);
    *ret_state = s;
    return DK_OK;
}

static void users_shutdown(void *state)
{
    dk_free(state);
}

static const dk_route users_routes[] = {
    {"GET", "/me", users_get_me, DK_ROUTE_AUTH},
    {"PATCH", "/me", users_patch_me, DK_ROUTE_AUTH},
    {"DELETE", "/me", users_delete_me, DK_ROUTE_AUTH},
    {"GET", "/{id}", users_get_one, DK_ROUTE_AUTH},
    {"PUT", "/me/avatar", users_put_avatar, DK_ROUTE_AUTH | DK_ROUTE_BODY_MIB(2)},
    {"DELETE", "/me/avatar", users_delete_avatar, DK_ROUTE_AUTH},
    {"GET", "/{id}/avatar", users_get_avatar, DK_ROUTE_AUTH},
};

const dk_service dk_users_service = {
    .name = "users",
    .prefix = "/api/v1/users",
    .default_port = 3002,
    .routes = users_routes,
    .nroutes = sizeof users_routes / sizeof users_routes[0],
    .migrations = dk_users_migrations,
    .nmigrations = DK_USERS_NMIGRATIONS,
    .internal_prefix = "/internal/v1/users",
    .internal_routes = users_internal_routes,
    .ninternal_routes = sizeof users_internal_routes / sizeof users_internal_routes[0],
    .init = users_init,
    .shutdown = users_shutdown,
};
