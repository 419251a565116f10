/* The users service: account profiles (/api/v1/users) and the users.directory port that the
 * auth service uses to create and find accounts. */
#include <string.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/json.h"
#include "core/log.h"
#include "ports/account_guard.h"
#include "services/service.h"
#include "services/users/users_repo.h"
#include "services/validate.h"
#include "core/banned.h"

typedef struct users_svc {
    dk_app *app;
    const dk_database *db;
} users_svc;

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
    dk_res_json(res, 200, dk_user_json(&u));
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
    dk_user u;
    dk_status st = users_repo_update(s->db, req->arena, req->identity->user_id, name, email, &u);
    if (st != DK_OK) {
        users_fail(res, st == DK_E_NOT_FOUND ? DK_E_NOT_FOUND : st, "user");
        return;
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
    /* Tell the other services first (sessions die, tasks go), then remove the account: a
     * failure on the way leaves an account that can still be deleted again, never orphans. */
    json_t *ev = json_pack("{s:s}", "user_id", id);
    char *payload = dk_json_render(req->arena, ev, NULL);
    json_decref(ev);
    dk_status st = s->app->bus.ops->publish(s->app->bus.ev, DK_EVENT_USER_DELETED, payload);
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

static const dk_route users_internal_routes[] = {
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

static const struct dk_users_directory_ops users_directory_inproc = {
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
