/* The notifications service (/api/v1/notifications): consumes task events into in-app
 * notifications (rules in notifications_rules), lists them, streams them as Server-Sent Events,
 * keeps each user's delivery preferences, runs the due-soon scheduler, and hands webhook and
 * e-mail deliveries to the delivery worker.
 *
 * The event stream: notifications_hub owns the open streams; a notification created here is
 * pushed to it (and through the store to the other replicas' hubs). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/crypto.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/session_guard.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "core/workpool.h"
#include "ports/http_client.h"
#include "ports/mailer.h"
#include "ports/resolver.h"
#include "ports/task_events.h"
#include "ports/users_directory.h"
#include "services/notifications/notifications_delivery.h"
#include "services/notifications/notifications_hub.h"
#include "services/notifications/notifications_internal.h"
#include "services/notifications/notifications_repo.h"
#include "services/notifications/notifications_rules.h"
#include "services/notifications/webhook_url.h"
#include "services/service.h"
#include "core/trace.h"
#include "core/banned.h"

#define NT_PREFIX        "/api/v1/notifications"
#define NT_LIMIT_DEFAULT 20
#define NT_LIMIT_MAX     100
#define NT_LAG_IDLE_MS   2000
#define NT_DUE_BATCH     200
#define NT_TOMBSTONE_MS  (7LL * 24 * 3600 * 1000)

#define NT_CHECK_WORKERS 4
#define NT_CHECK_QUEUE   64

/* ---------- background loops ---------- */

static void notifications_loop_init(notifications_loop *l)
{
    pthread_mutex_init(&l->lock, NULL);
    dk_cond_init_monotonic(&l->cond); /* waits immune to clock steps */
}

/* Waits up to ms for a kick; false when the loop must stop. Called with l->lock held. */
static bool notifications_loop_wait(notifications_loop *l, int64_t ms)
{
    if (!l->stop && !l->kicked) {
        struct timespec ts = dk_mono_deadline(ms);
        while (!l->stop && !l->kicked)
            if (pthread_cond_timedwait(&l->cond, &l->lock, &ts) != 0)
                break;
    }
    l->kicked = false;
    return !l->stop;
}

static void notifications_loop_stop(notifications_loop *l)
{
    if (!l->running)
        return;
    pthread_mutex_lock(&l->lock);
    l->stop = true;
    pthread_cond_signal(&l->cond);
    pthread_mutex_unlock(&l->lock);
    pthread_join(l->thread, NULL);
    l->running = false;
}

static void notifications_loop_destroy(notifications_loop *l)
{
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->lock);
}

/* ---------- creating notifications ---------- */

/* Creates n unless its key was seen; wakes the stream hub and the delivery worker. */
static dk_status notifications_create(notifications_svc *s, dk_arena *a,
                                      notifications_rules_item *n)
{
    bool created = false;
    dk_status st = notifications_repo_create(&s->repo, a, &n->item, n->dedup_key, &created);
    if (st == DK_OK && created) {
        notifications_hub_publish(s->hub, &n->item);
        if (s->delivery)
            notifications_delivery_kick(s->delivery);
    }
    return st;
}

/* task.created / task.updated / task.deleted */
static dk_status notifications_on_task_event(void *ctx, const char *type, const char *payload)
{
    notifications_svc *s = ctx;
    dk_arena *a = dk_arena_new();
    notifications_rules_plan plan;
    dk_status st = notifications_rules_task_event(a, type, payload, &plan);
    if (st != DK_OK) {
        dk_log_error("notifications: a malformed %s event was skipped", type);
        dk_arena_free(a);
        return DK_OK; /* retrying cannot mend it */
    }
    int64_t now = dk_now_ms();
    dk_metrics_queue_lag("notifications", "task_events",
                         plan.occurred_at > 0 && now > plan.occurred_at
                             ? (double)(now - plan.occurred_at) / 1000
                             : 0);
    /* the delivery span: the notifications this event makes (in-app at once; webhook and
     * e-mail queued for the delivery workers), under the consumer span of the event */
    dk_span *sp = dk_span_start("notifications deliver", DK_SPAN_INTERNAL);
    dk_span_attr_str(sp, "docket.event.type", type);
    dk_span_attr_int(sp, "docket.notifications", plan.n);
    dk_span_push(sp);
    for (int i = 0; st == DK_OK && i < plan.n; i++)
        st = notifications_create(s, a, &plan.items[i]);
    if (st == DK_OK && plan.due.task_id) /* comments and project events change no due date */
        st = notifications_repo_due_put(&s->repo, a, &plan.due);
    dk_span_pop(sp);
    if (st != DK_OK) {
        dk_span_error(sp, dk_status_title(st));
        dk_log_warn("notifications: handling %s failed (%s); it will be redelivered", type,
                    dk_status_title(st));
    }
    dk_span_end(sp);
    atomic_store(&s->last_event_ok_ms, st == DK_OK ? dk_mono_ms() : 0);
    dk_arena_free(a);
    return st;
}

/* The task_events lag is the age of the events being handled. Once the last one succeeded and
 * none has come for NT_LAG_IDLE_MS the consumer has caught up, and the gauge says 0 (without
 * this it would go on showing the age of the last event of a burst). A failed last event keeps
 * it: the event comes again, older. */
static void notifications_lag_idle_tick(void *ctx)
{
    notifications_svc *s = ctx;
    long long last = atomic_load(&s->last_event_ok_ms);
    if (last > 0 && dk_mono_ms() - last > NT_LAG_IDLE_MS &&
        atomic_compare_exchange_strong(&s->last_event_ok_ms, &last, 0))
        dk_metrics_queue_lag("notifications", "task_events", 0);
}

/* user.deleted: the account's notifications, preferences and deliveries go. */
static dk_status notifications_on_user_deleted(void *ctx, const char *type, const char *payload)
{
    (void)type;
    notifications_svc *s = ctx;
    dk_arena *a = dk_arena_new();
    const char *uid = dk_user_deleted_id(a, payload);
    dk_status st = uid ? notifications_repo_forget_user(&s->repo, a, uid) : DK_OK;
    if (uid)
        notifications_hub_forget_user(s->hub, uid);
    if (st != DK_OK)
        dk_log_error("notifications: could not remove a deleted user's notifications: %s",
                     dk_status_title(st));
    dk_arena_free(a);
    return st;
}

/* ---------- the due-soon scheduler ---------- */

static void notifications_scheduler_pass(notifications_svc *s)
{
    dk_arena *a = dk_arena_new();
    int64_t now = dk_now_ms();
    notifications_due_task *due = NULL;
    int n = 0;
    dk_status st =
        notifications_repo_due_scan(&s->repo, a, now + s->due_window_ms, NT_DUE_BATCH, &due, &n);
    for (int i = 0; st == DK_OK && i < n; i++) {
        notifications_rules_item nn;
        notifications_rules_due_soon(a, &due[i], &nn);
        st = notifications_create(s, a, &nn);
        if (st == DK_OK)
            st = notifications_repo_due_mark(&s->repo, a, due[i].task_id, due[i].due_at);
    }
    if (st == DK_OK)
        st = notifications_repo_due_prune(&s->repo, a, now - NT_TOMBSTONE_MS);
    if (st != DK_OK)
        dk_log_warn("notifications: the due-soon pass failed (%s); retrying next interval",
                    dk_status_title(st));
    dk_arena_free(a);
}

static void *notifications_scheduler_main(void *arg)
{
    notifications_svc *s = arg;
    pthread_mutex_lock(&s->sched.lock);
    for (;;) {
        pthread_mutex_unlock(&s->sched.lock);
        notifications_scheduler_pass(s);
        pthread_mutex_lock(&s->sched.lock);
        if (!notifications_loop_wait(&s->sched, s->scheduler_ms))
            break;
    }
    pthread_mutex_unlock(&s->sched.lock);
    return NULL;
}

/* ---------- HTTP ---------- */

void notifications_res_fail(dk_res *res, dk_status st)
{
    switch (st) {
    case DK_E_NOT_FOUND:
        dk_res_problem(res, st, "no such notification");
        break;
    case DK_E_UNAVAILABLE:
        dk_res_header(res, "Retry-After", "1");
        dk_res_problem(res, st, "a dependency is unavailable or busy; try again shortly");
        break;
    default:
        dk_res_problem(res, DK_E_INTERNAL, "unexpected error");
    }
}

#define NT_CURSOR_VERSION 1
#define NT_CURSOR_MAC     16

/* The list cursor: base64url of {version, unread flag, seq (8 bytes, big-endian)} and a
 * truncated HMAC under the app's cursor key, domain-separated from other cursors. */
static char *notifications_cursor_encode(notifications_svc *s, dk_arena *a, bool unread,
                                         int64_t seq)
{
    unsigned char buf[10 + NT_CURSOR_MAC], mac[32];
    buf[0] = NT_CURSOR_VERSION;
    buf[1] = unread ? 1 : 0;
    for (int i = 0; i < 8; i++)
        buf[2 + i] = (unsigned char)((uint64_t)seq >> (56 - 8 * i));
    dk_hmac_sha256(s->cursor_key, sizeof s->cursor_key, buf, 10, mac);
    memcpy(buf + 10, mac, NT_CURSOR_MAC);
    return dk_base64url(a, buf, sizeof buf);
}

static bool notifications_cursor_decode(notifications_svc *s, dk_arena *a, const char *text,
                                        bool unread, int64_t *ret_seq)
{
    if (strlen(text) > 64)
        return false;
    size_t n = 0;
    unsigned char *buf = dk_base64url_decode(a, text, &n);
    unsigned char mac[32];
    if (!buf || n != 10 + NT_CURSOR_MAC || buf[0] != NT_CURSOR_VERSION)
        return false;
    dk_hmac_sha256(s->cursor_key, sizeof s->cursor_key, buf, 10, mac);
    if (!dk_ct_equal(mac, buf + 10, NT_CURSOR_MAC) || buf[1] != (unread ? 1 : 0))
        return false;
    uint64_t seq = 0;
    for (int i = 0; i < 8; i++)
        seq = (seq << 8) | buf[2 + i];
    if (seq == 0 || seq > (uint64_t)INT64_MAX)
        return false;
    *ret_seq = (int64_t)seq;
    return true;
}

static void notifications_list(dk_req *req, dk_res *res)
{
    notifications_svc *s = req->service;
    dk_errors errs;
    dk_errors_init(&errs);
    int64_t limit = NT_LIMIT_DEFAULT, before = 0;
    bool unread = false;
    const char *v;
    if ((v = dk_req_query(req, "limit")) != NULL &&
        (!dk_parse_i64(v, 1, NT_LIMIT_MAX, &limit) || v[0] == '-'))
        dk_errors_add(&errs, "limit", "must be an integer from 1 to %d", NT_LIMIT_MAX);
    if ((v = dk_req_query(req, "unread")) != NULL) {
        if (strcmp(v, "true") == 0)
            unread = true;
        else if (strcmp(v, "false") != 0)
            dk_errors_add(&errs, "unread", "must be true or false");
    }
    if ((v = dk_req_query(req, "cursor")) != NULL && *v &&
        !notifications_cursor_decode(s, req->arena, v, unread, &before))
        dk_errors_add(&errs, "cursor",
                      "is malformed, was altered, or belongs to another filter (keep `unread` "
                      "as in the request that returned it)");
    if (dk_errors_any(&errs)) {
        dk_res_bad_query(res, &errs);
        return;
    }
    notifications_item *items = NULL;
    int n = 0;
    dk_status st = notifications_repo_list(&s->repo, req->arena, req->identity->user_id, unread,
                                           before, (int)limit, &items, &n);
    if (st != DK_OK) {
        notifications_res_fail(res, st);
        return;
    }
    const char *next = NULL;
    if (n > limit) {
        n = (int)limit;
        next = notifications_cursor_encode(s, req->arena, unread, items[n - 1].seq);
    }
    json_t *arr = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(arr, notifications_item_json(&items[i]));
    dk_res_json(res, 200,
                json_pack("{s:o,s:o}", "items", arr, "next_cursor", dk_json_str_or_null(next)));
}

static void notifications_read(dk_req *req, dk_res *res)
{
    notifications_svc *s = req->service;
    const char *id = dk_req_param(req, "id");
    dk_status st = id && dk_uuid_valid(id)
                       ? notifications_repo_read(&s->repo, req->arena, req->identity->user_id, id)
                       : DK_E_NOT_FOUND;
    if (st != DK_OK) {
        notifications_res_fail(res, st);
        return;
    }
    dk_res_empty(res, 204);
}

static void notifications_read_all(dk_req *req, dk_res *res)
{
    notifications_svc *s = req->service;
    dk_status st = notifications_repo_read_all(&s->repo, req->arena, req->identity->user_id);
    if (st != DK_OK) {
        notifications_res_fail(res, st);
        return;
    }
    dk_res_empty(res, 204);
}

static void notifications_stream(dk_req *req, dk_res *res)
{
    notifications_svc *s = req->service;
    const char *user = req->identity->user_id;
    int64_t from = 0;
    dk_status st = DK_E_NOT_FOUND;
    const char *last = dk_req_header(req, "Last-Event-ID");
    if (last && dk_uuid_valid(last))
        st = notifications_repo_seq_of(&s->repo, req->arena, user, last, &from);
    if (st == DK_E_NOT_FOUND) /* no (known) Last-Event-ID: from now on */
        st = notifications_repo_last_seq(&s->repo, req->arena, user, &from);
    if (st != DK_OK) {
        notifications_res_fail(res, st);
        return;
    }
    notifications_hub_open(s->hub, res, user, req->identity->session_id,
                           req->identity->expires_at_ms, from);
}

/* ---------- lifecycle ---------- */

static dk_status notifications_init(dk_app *app, void **ret_state)
{
    const dk_config *c = app->config;
    notifications_svc *s = DK_NEW(notifications_svc);
    s->app = app;
    s->repo.db = &app->db;
    /* e-mail rows only where a mailer runs (SMTP, or .eml files on the embedded default) */
    const void *mops = NULL;
    if (dk_app_port(app, DK_MAILER, &mops, &s->mailer.h))
        s->mailer.ops = mops;
    s->repo.email_on = s->mailer.ops != NULL;
    const void *hops = NULL, *rops = NULL;
    void *rh = NULL;
    if (!dk_app_port(app, DK_HTTP_CLIENT, &hops, (void **)&s->http) ||
        !dk_app_port(app, DK_RESOLVER, &rops, &rh)) {
        dk_log_error("notifications: no HTTP client or resolver for webhooks");
        dk_free(s);
        return DK_E_INTERNAL;
    }
    s->net = (webhook_net){.http = hops, .resolver = rops, .resolver_h = rh};
    dk_hmac_sha256(app->cursor_key, sizeof app->cursor_key, "docket-notifications-cursor-v1", 30,
                   s->cursor_key);
    s->allow_private = dk_config_bool(c, "notification.webhook_allow_private");
    s->heartbeat_ms = dk_config_int(c, "notification.sse_heartbeat");
    s->scheduler_ms = dk_config_int(c, "notification.scheduler_interval");
    s->due_window_ms = dk_config_int(c, "notification.due_soon_minutes") * 60 * 1000;
    s->max_streams_per_user = (int)dk_config_int(c, "notification.sse_max_streams_per_user");
    notifications_loop_init(&s->sched);
    /* before the bus starts: an event may be handled before notifications_start */
    notifications_hub_options ho = {
        .repo = &s->repo,
        .store = &s->app->store,
        .heartbeat_ms = s->heartbeat_ms,
        .max_per_user = s->max_streams_per_user,
        .tick = notifications_lag_idle_tick,
        .tick_ctx = s,
    };
    s->hub = notifications_hub_new(&ho);
    s->checks = dk_workpool_new(NT_CHECK_WORKERS, NT_CHECK_QUEUE);
    static const char *const types[] = {DK_EVENT_TASK_CREATED, DK_EVENT_TASK_UPDATED,
                                        DK_EVENT_TASK_DELETED, DK_EVENT_TASK_COMMENTED,
                                        DK_EVENT_PROJECT_MEMBER_ADDED};
    dk_status st = DK_OK;
    for (size_t i = 0; st == DK_OK && i < sizeof types / sizeof types[0]; i++)
        st = app->bus.ops->subscribe(app->bus.ev, types[i], notifications_on_task_event, s);
    if (st == DK_OK)
        st = app->bus.ops->subscribe(app->bus.ev, DK_EVENT_USER_DELETED,
                                     notifications_on_user_deleted, s);
    if (st != DK_OK) {
        dk_workpool_free(s->checks);
        notifications_hub_free(s->hub);
        notifications_loop_destroy(&s->sched);
        dk_free(s);
        return st;
    }
    *ret_state = s;
    return DK_OK;
}

static void notifications_start(void *state)
{
    notifications_svc *s = state;
    const dk_config *c = s->app->config;
    const void *users_ops = NULL;
    void *users_h = NULL;
    (void)dk_app_port(s->app, DK_USERS_DIRECTORY, &users_ops, &users_h);
    notifications_delivery_options o = {
        .db = &s->app->db,
        .users = users_ops,
        .users_handle = users_h,
        .mailer = s->mailer.ops ? &s->mailer : NULL,
        .mail_from = dk_config_str(c, "smtp.from"),
        .net = s->net,
        .http = s->http,
        .allow_private = s->allow_private,
        .max_attempts = (int)dk_config_int(c, "notification.webhook_max_attempts"),
        .backoff_ms = dk_config_int(c, "notification.webhook_backoff"),
        .max_backoff_ms = dk_config_int(c, "notification.webhook_max_backoff"),
        .timeout_ms = dk_config_int(c, "notification.webhook_timeout"),
        .interval_ms = dk_config_int(c, "notification.delivery_interval"),
    };
    if (notifications_delivery_start(&o, &s->delivery) != DK_OK) {
        dk_log_error("notifications: the delivery worker did not start; webhooks and e-mail "
                     "wait until a restart");
        s->delivery = NULL;
    }
    if (notifications_hub_start(s->hub) != DK_OK)
        dk_log_error("notifications: the event-stream hub did not start fully; streams may miss "
                     "notifications or revocations");
    if (pthread_create(&s->sched.thread, NULL, notifications_scheduler_main, s) == 0)
        s->sched.running = true;
    else
        dk_log_error("notifications: the due-soon scheduler did not start");
}

static void notifications_stop(void *state)
{
    notifications_svc *s = state;
    notifications_loop_stop(&s->sched);
    notifications_hub_stop(s->hub);
    notifications_delivery_stop(s->delivery);
    s->delivery = NULL;
}

static void notifications_shutdown(void *state)
{
    notifications_svc *s = state;
    if (!s)
        return;
    notifications_hub_free(s->hub);
    dk_workpool_free(s->checks); /* the server has drained: no check is waiting */
    notifications_loop_destroy(&s->sched);
    dk_free(s);
}

static const dk_route notifications_routes[] = {
    {"GET", "/", notifications_list, DK_ROUTE_AUTH},
    {"POST", "/read-all", notifications_read_all, DK_ROUTE_AUTH},
    {"GET", "/stream", notifications_stream, DK_ROUTE_AUTH | DK_ROUTE_STREAM},
    {"GET", "/preferences", notifications_prefs_get, DK_ROUTE_AUTH},
    {"PUT", "/preferences", notifications_prefs_put, DK_ROUTE_AUTH},
    {"POST", "/{id}/read", notifications_read, DK_ROUTE_AUTH},
};

const dk_service dk_notifications_service = {
    .name = "notifications",
    .prefix = NT_PREFIX,
    .default_port = 3004,
    .routes = notifications_routes,
    .nroutes = sizeof notifications_routes / sizeof notifications_routes[0],
    .migrations = dk_notifications_migrations,
    .nmigrations = DK_NOTIFICATIONS_NMIGRATIONS,
    .init = notifications_init,
    .start = notifications_start,
    .stop = notifications_stop,
    .shutdown = notifications_shutdown,
};
