/* The tasks service (/api/v1/tasks): create, read, change and delete tasks; list them with
 * filters, sorting, full-text search and keyset pagination. A task is visible to its owner and
 * its assignee only. Users are known only through the users.directory port; when an account is
 * deleted (event user.deleted) its tasks go and its assignments are cleared. */
#include <string.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "ports/users_directory.h"
#include "services/service.h"
#include "services/tasks/tasks_model.h"
#include "services/tasks/tasks_query.h"
#include "core/outbox.h"
#include "services/tasks/tasks_repo.h"
#include "core/banned.h"

#define TASKS_PREFIX "/api/v1/tasks"

typedef struct tasks_svc {
    dk_app *app;
    tasks_repo repo;
    const struct dk_users_directory_ops *users;
    void *users_h;
    dk_outbox *outbox; /* relays task.* events; NULL until start */
} tasks_svc;

static void tasks_fail(dk_res *res, dk_status st)
{
    switch (st) {
    case DK_E_NOT_FOUND:
        dk_res_problem(res, st, "no such task");
        break;
    case DK_E_FORBIDDEN:
        dk_res_problem(res, st,
                       "only the task's owner may do this; its assignee may change the "
                       "status only");
        break;
    case DK_E_PRECONDITION:
        dk_res_problem(res, st, "the task has changed since that version (If-Match)");
        break;
    case DK_E_UNAVAILABLE:
        dk_res_header(res, "Retry-After", "1");
        dk_res_problem(res, st, "a dependency is unavailable or busy; try again shortly");
        break;
    default:
        dk_res_problem(res, DK_E_INTERNAL, "unexpected error");
    }
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
    tasks_task t;
    tasks_task_new(req->arena, &ch, id, req->identity->user_id, dk_now_ms(), &t);
    dk_status st = tasks_repo_create(&s->repo, req->arena, &t);
    if (st != DK_OK) {
        tasks_fail(res, st);
        return;
    }
    dk_outbox_kick(s->outbox);
    dk_res_header(res, "Location", dk_arena_printf(req->arena, TASKS_PREFIX "/%s", id));
    tasks_reply(req, res, 201, &t);
}

static void tasks_get(dk_req *req, dk_res *res)
{
    tasks_svc *s = req->service;
    const char *id = tasks_path_id(req, res);
    if (!id)
        return;
    tasks_task t;
    dk_status st = tasks_repo_get(&s->repo, req->arena, id, &t);
    const char *me = req->identity->user_id;
    if (st == DK_OK && strcmp(t.owner_id, me) != 0 &&
        !(t.assignee_id && !strcmp(t.assignee_id, me)))
        st = DK_E_NOT_FOUND;
    if (st != DK_OK) {
        tasks_fail(res, st);
        return;
    }
    const char *inm = dk_req_header(req, "If-None-Match");
    if (inm && tasks_if_match(inm, t.version)) {
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
    tasks_changes ch;
    tasks_changes_parse(req->arena, body, false, &ch, &errs);
    if (dk_errors_any(&errs)) {
        dk_res_validation(res, &errs);
        return;
    }
    if (tasks_check_assignee(s, req, res, &ch) != DK_OK)
        return;
    tasks_task t;
    dk_status st = tasks_repo_patch(&s->repo, req->arena, id, req->identity->user_id, &ch,
                                    dk_req_header(req, "If-Match"), &t);
    if (st != DK_OK) {
        tasks_fail(res, st);
        return;
    }
    dk_outbox_kick(s->outbox);
    tasks_reply(req, res, 200, &t);
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
        tasks_fail(res, st);
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

/* user.deleted: the account is going away — its tasks go, its assignments are cleared. */
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
    dk_status st =
        app->bus.ops->subscribe(app->bus.ev, DK_EVENT_USER_DELETED, tasks_on_user_deleted, s);
    if (st != DK_OK) {
        dk_free(s);
        return st;
    }
    *ret_state = s;
    return DK_OK;
}

static void tasks_start(void *state)
{
    tasks_svc *s = state;
    s->outbox = dk_outbox_start(&s->app->db, &s->app->bus, "tasks", TASKS_OUTBOX,
                                dk_config_int(s->app->config, "events.outbox_interval"));
}

static void tasks_stop(void *state)
{
    tasks_svc *s = state;
    dk_outbox_stop(s->outbox);
    s->outbox = NULL;
}

static void tasks_shutdown(void *state)
{
    dk_free(state);
}

static const dk_route tasks_routes[] = {
    {"POST", "/", tasks_create, DK_ROUTE_AUTH},
    {"GET", "/", tasks_list, DK_ROUTE_AUTH},
    {"GET", "/{id}", tasks_get, DK_ROUTE_AUTH},
    {"PATCH", "/{id}", tasks_patch, DK_ROUTE_AUTH},
    {"DELETE", "/{id}", tasks_delete, DK_ROUTE_AUTH},
};

const dk_service dk_tasks_service = {
    .name = "tasks",
    .prefix = TASKS_PREFIX,
    .default_port = 3003,
    .routes = tasks_routes,
    .nroutes = sizeof tasks_routes / sizeof tasks_routes[0],
    .migrations = dk_tasks_migrations,
    .nmigrations = DK_TASKS_NMIGRATIONS,
    .init = tasks_init,
    .start = tasks_start,
    .stop = tasks_stop,
    .shutdown = tasks_shutdown,
};
