/* notifications_delivery.c — the delivery worker: claims due rows of notifications_deliveries
 * under a lease, sends each (webhook through the http_client port, its host resolved through
 * the resolver port; e-mail through the mailer port), and records the outcome guarded by the lease it claimed with (a row whose lease expired
 * and was claimed again is left to its new owner). */
#include "services/notifications/notifications_delivery.h"

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/common.h"
#include "core/crypto.h"
#include "core/log.h"
#include "core/mail.h"
#include "core/metrics.h"
#include "core/sql.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "ports/http_client.h"
#include "ports/mailer.h"
#include "ports/users_directory.h"
#include "services/notifications/webhook_url.h"
#include "core/trace.h"
#include "core/banned.h"

#define NT_ERROR_MAX       200 /* bytes of last_error */
#define NT_SUBJECT_MAX     240 /* bytes of the message in a Subject */
#define NT_BODY_LINE_MAX   900 /* bytes of the message line in a mail body */
#define NT_LEASE_MARGIN_MS 30000
#define NT_USER_AGENT      "User-Agent: Docket-Webhook/1"

enum { NT_CH_WEBHOOK, NT_CH_EMAIL, NT_NCHANNELS };
enum { NT_RES_SENT, NT_RES_RETRY, NT_RES_DEAD, NT_NRESULTS };
static const char *const delivery_channel_names[NT_NCHANNELS] = {"webhook", "email"};
static const char *const delivery_result_names[NT_NRESULTS] = {"sent", "retry", "dead"};

struct notifications_delivery {
    const dk_database *db;
    const struct dk_users_directory_ops *users;
    void *users_handle;
    const dk_mailer *mailer; /* NULL: e-mail off */
    webhook_net net;
    dk_http_client *http;
    dk_arena *keep; /* the sender's strings */
    dk_mail_sender from;
    bool allow_private;
    int max_attempts;
    int64_t backoff_ms, max_backoff_ms, timeout_ms, interval_ms, lease_ms;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool kicked;
    atomic_bool stop;
    int nthreads;
    pthread_t *threads;

    atomic_uint_fast64_t counts[NT_NCHANNELS][NT_NRESULTS];
};

/* A claimed row. */
typedef struct delivery_row {
    const char *id, *user_id, *channel, *target, *body;
    int64_t attempts;
} delivery_row;

typedef enum {
    NT_SENT,    /* delivered */
    NT_FAILED,  /* an attempt failed: retry or dead by the attempt count */
    NT_DEAD,    /* cannot ever be delivered: dead without an attempt */
    NT_RELEASE, /* not attempted (stopping, database trouble): give the row back */
} delivery_outcome;

/* --- small text helpers ----------------------------------------------------------------------- */

static void delivery_reason(char *why, size_t cap, const char *fmt, ...) DK_PRINTF(3, 4);
static void delivery_reason(char *why, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, cap, fmt, ap);
    va_end(ap);
}

/* --- the database side ------------------------------------------------------------------------ */

#define NT_CLAIM_HEAD                                                                              \
    "UPDATE notifications_deliveries SET next_attempt_at = $1, updated_at = $2 "                   \
    "WHERE id IN (SELECT id FROM notifications_deliveries "                                        \
    "WHERE state = 'pending' AND next_attempt_at <= $2 ORDER BY next_attempt_at, id LIMIT $3"
#define NT_CLAIM_TAIL ") RETURNING id, user_id, channel, target, body, attempts"

/* SQLite runs one writer at a time, so the statement alone is atomic; PostgreSQL needs the
 * candidate rows locked, skipping those another replica is claiming right now. */
static const char delivery_claim_sqlite[] = NT_CLAIM_HEAD NT_CLAIM_TAIL;
static const char delivery_claim_postgres[] = NT_CLAIM_HEAD " FOR UPDATE SKIP LOCKED" NT_CLAIM_TAIL;

static const char delivery_finish_sql[] =
    "UPDATE notifications_deliveries SET state = $3, attempts = $4, next_attempt_at = $5, "
    "last_error = $6, updated_at = $7 WHERE id = $1 AND state = 'pending' AND next_attempt_at = $2";
static const char delivery_sent_sql[] =
    "UPDATE notifications_deliveries SET state = 'sent', attempts = attempts + 1, updated_at = $3 "
    "WHERE id = $1 AND state = 'pending' AND next_attempt_at = $2";
static const char delivery_release_sql[] =
    "UPDATE notifications_deliveries SET next_attempt_at = $3, updated_at = $4 "
    "WHERE id = $1 AND state = 'pending' AND next_attempt_at = $2";

static dk_status delivery_claim(notifications_delivery *d, dk_arena *a, int64_t now, int64_t lease,
                                dk_db_rows **ret)
{
    const char *sql =
        d->db->ops->engine == DK_DB_POSTGRES ? delivery_claim_postgres : delivery_claim_sqlite;
    const char *p[] = {dk_sql_int(a, lease), dk_sql_int(a, now), dk_sql_int(a, NT_DELIVERY_BATCH)};
    return dk_sql(d->db, a, sql, 3, p, ret);
}

static void delivery_count(notifications_delivery *d, int channel, int result)
{
    if (channel >= 0)
        atomic_fetch_add(&d->counts[channel][result], 1);
}

static int delivery_channel_index(const char *channel)
{
    if (dk_streq(channel, "webhook"))
        return NT_CH_WEBHOOK;
    if (dk_streq(channel, "email"))
        return NT_CH_EMAIL;
    return -1;
}

/* The delay before retry number `attempts` (1 = after the first failure), with +-10 % jitter. */
static int64_t delivery_backoff(const notifications_delivery *d, int64_t attempts)
{
    int64_t delay = d->backoff_ms;
    for (int64_t i = 1; i < attempts && delay < d->max_backoff_ms; i++)
        delay = delay > INT64_MAX / 2 ? INT64_MAX : delay * 2;
    if (delay > d->max_backoff_ms)
        delay = d->max_backoff_ms;
    uint32_t r;
    dk_fast_random(&r, sizeof r);
    double f = 0.9 + 0.2 * ((double)r / 4294967296.0);
    int64_t j = (int64_t)((double)delay * f);
    return j < 1 ? 1 : j;
}

static const char *delivery_log_extra(dk_arena *a, const delivery_row *r)
{
    char id[160], ch[64];
    dk_json_escape(id, sizeof id, r->id);
    dk_json_escape(ch, sizeof ch, r->channel ? r->channel : "");
    return dk_arena_printf(a, ",\"delivery_id\":\"%s\",\"channel\":\"%s\"", id, ch);
}

/* Records the outcome of one row, guarded by the lease it was claimed with. */
static void delivery_finish(notifications_delivery *d, dk_arena *a, const delivery_row *r,
                            int64_t lease, delivery_outcome outcome, const char *why)
{
    int64_t now = dk_now_ms();
    int ch = delivery_channel_index(r->channel);
    const char *id = r->id, *ls = dk_sql_int(a, lease), *ns = dk_sql_int(a, now);
    dk_db_rows *res = NULL;
    dk_status st;
    int result = -1;
    int64_t attempts = r->attempts, delay = 0;
    char err[NT_ERROR_MAX + 1];
    dk_strlcpy(err, why ? why : "", sizeof err);

    if (outcome == NT_SENT) {
        const char *p[] = {id, ls, ns};
        st = dk_sql(d->db, a, delivery_sent_sql, 3, p, &res);
        result = NT_RES_SENT;
    } else if (outcome == NT_RELEASE) {
        /* when stopping, at once (another replica may take it); else after a pause */
        int64_t next = atomic_load(&d->stop) ? now : now + d->interval_ms;
        const char *p[] = {id, ls, dk_sql_int(a, next), ns};
        st = dk_sql(d->db, a, delivery_release_sql, 4, p, &res);
    } else {
        const char *state = "dead";
        int64_t next = now;
        result = NT_RES_DEAD;
        if (outcome == NT_FAILED) {
            attempts++;
            if (attempts < d->max_attempts) {
                delay = delivery_backoff(d, attempts);
                next = now + delay;
                state = "pending";
                result = NT_RES_RETRY;
            }
        }
        const char *p[] = {id, ls, state, dk_sql_int(a, attempts), dk_sql_int(a, next), err, ns};
        st = dk_sql(d->db, a, delivery_finish_sql, 7, p, &res);
    }
    if (st != DK_OK) {
        dk_log_with(DK_LOG_WARN, delivery_log_extra(a, r),
                    "notification delivery: the outcome was not recorded (%s); the row is "
                    "retried when its lease expires",
                    dk_status_title(st));
        return;
    }
    if (res->affected == 0) {
        dk_log_with(DK_LOG_WARN, delivery_log_extra(a, r),
                    "notification delivery: the lease expired before the outcome was recorded");
        return;
    }
    if (result >= 0)
        delivery_count(d, ch, result);
    if (result == NT_RES_RETRY)
        dk_log_with(DK_LOG_WARN, delivery_log_extra(a, r),
                    "notification delivery failed: %s (attempt %lld of %d, next in %lld ms)", err,
                    (long long)attempts, d->max_attempts, (long long)delay);
    else if (result == NT_RES_DEAD && outcome == NT_DEAD)
        dk_log_with(DK_LOG_WARN, delivery_log_extra(a, r),
                    "notification delivery given up without an attempt: %s; the row is dead", err);
    else if (result == NT_RES_DEAD)
        dk_log_with(DK_LOG_WARN, delivery_log_extra(a, r),
                    "notification delivery failed for good: %s (attempt %lld of %d); the row is "
                    "dead",
                    err, (long long)attempts, d->max_attempts);
    else if (result == NT_RES_SENT && dk_log_enabled(DK_LOG_DEBUG))
        dk_log_with(DK_LOG_DEBUG, delivery_log_extra(a, r), "notification delivered");
}

/* --- one webhook call, waited for -------------------------------------------------------------- */

typedef struct delivery_call {
    dk_http_call call;
    notifications_delivery *d;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
} delivery_call;

static void delivery_call_done(dk_http_call *c)
{
    delivery_call *w = c->ctx;
    pthread_mutex_lock(&w->lock);
    w->done = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

/* Stop abandons a call in flight (the client asks about once a second). */
static bool delivery_call_abandoned(dk_http_call *c)
{
    delivery_call *w = c->ctx;
    return atomic_load(&w->d->stop);
}

/* The receiver's answer is read and dropped, whatever its size; stop ends it. */
static void delivery_call_headers(dk_http_call *c)
{
    (void)c;
}

static dk_http_data_action delivery_call_data(dk_http_call *c, const char *data, size_t len)
{
    (void)data, (void)len;
    return delivery_call_abandoned(c) ? DK_HTTP_DATA_ABORT : DK_HTTP_DATA_OK;
}

/* Submits w->call and waits for it to finish; false when it could not start. */
static bool delivery_call_run(notifications_delivery *d, delivery_call *w)
{
    w->d = d;
    w->call.ctx = w;
    w->call.done = delivery_call_done;
    w->call.abandoned = delivery_call_abandoned;
    w->call.on_headers = delivery_call_headers;
    w->call.on_data = delivery_call_data;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    bool ok = d->net.http->submit(d->http, &w->call) == DK_OK;
    pthread_mutex_lock(&w->lock);
    while (ok && !w->done)
        pthread_cond_wait(&w->cond, &w->lock);
    pthread_mutex_unlock(&w->lock);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    return ok;
}

/* --- webhooks --------------------------------------------------------------------------------- */

static delivery_outcome delivery_webhook(notifications_delivery *d, dk_arena *a,
                                         const delivery_row *r, char *why, size_t cap)
{
    json_error_t jerr;
    json_t *body = json_loads(r->body, 0, &jerr);
    const char *type = json_string_value(json_object_get(body, "type"));
    char *event = type ? dk_mail_one_line(a, type, 128) : NULL;
    json_decref(body);
    if (!event) {
        delivery_reason(why, cap, "malformed body");
        return NT_DEAD;
    }

    const char *p[] = {r->user_id};
    dk_db_rows *prefs = NULL;
    dk_status st = dk_sql(d->db, a,
                          "SELECT webhook_url, webhook_secret FROM notifications_prefs "
                          "WHERE user_id = $1",
                          1, p, &prefs);
    if (st != DK_OK) {
        delivery_reason(why, cap, "database: %s", dk_status_title(st));
        return NT_RELEASE;
    }
    const char *url = prefs->nrows == 1 ? dk_db_value(prefs, 0, 0) : NULL;
    const char *secret = prefs->nrows == 1 ? dk_db_value(prefs, 0, 1) : NULL;
    if (!dk_streq(url, r->target)) {
        delivery_reason(why, cap, "webhook URL changed");
        return NT_DEAD;
    }
    if (!secret || !*secret) {
        delivery_reason(why, cap, "webhook secret missing");
        return NT_DEAD;
    }

    webhook_target t;
    char rwhy[160] = "";
    st =
        webhook_resolve(&d->net, r->target, d->allow_private, d->timeout_ms, &t, rwhy, sizeof rwhy);
    if (st == DK_E_FORBIDDEN) {
        delivery_reason(why, cap, "address not allowed");
        return NT_DEAD;
    }
    if (st == DK_E_VALIDATION) {
        delivery_reason(why, cap, "invalid webhook URL: %s", rwhy);
        return NT_DEAD;
    }
    if (st != DK_OK) {
        delivery_reason(why, cap, "%s", rwhy[0] ? rwhy : dk_status_title(st));
        return st == DK_E_UNAVAILABLE ? NT_FAILED : NT_RELEASE;
    }

    size_t body_len = strlen(r->body);
    unsigned char mac[32];
    char mac_hex[65];
    dk_hmac_sha256(secret, strlen(secret), r->body, body_len, mac);
    dk_hex(mac, sizeof mac, mac_hex);

    /* the connection goes to the addresses just checked, never to a fresh lookup's answer */
    char *pin = NULL;
    if (!t.literal) {
        pin = dk_arena_printf(a, "%s:%d:", t.host, t.port);
        for (int i = 0; i < t.naddrs; i++)
            pin = dk_arena_printf(a, "%s%s%s", pin, i ? "," : "", t.addrs[i]);
    }

    delivery_call w = {
        .call = {
            .arena = a,
            .method = "POST",
            .url = r->target,
            .headers = {"Content-Type: application/json",
                        dk_arena_printf(a, "X-Docket-Event: %s", event),
                        dk_arena_printf(a, "X-Docket-Signature: sha256=%s", mac_hex),
                        dk_arena_printf(a, "X-Docket-Delivery: %s", dk_mail_one_line(a, r->id, 64)),
                        NT_USER_AGENT},
            .nheaders = 5,
            .body = r->body,
            .body_len = body_len,
            .connect_to = pin,
            .isolated = true,
            .connect_timeout_ms = (int)d->timeout_ms,
            .timeout_ms = (int)d->timeout_ms,
        }};
    dk_span *sp = dk_span_http("webhook", "POST");
    if (!delivery_call_run(d, &w)) {
        dk_span_http_end(sp, false, 0);
        delivery_reason(why, cap, "could not set up the HTTP call");
        return NT_RELEASE;
    }
    dk_http_call *c = &w.call;
    dk_span_http_end(sp, c->error == DK_OK, c->status);
    if (c->cancelled && atomic_load(&d->stop)) {
        delivery_reason(why, cap, "abandoned: stopping");
        return NT_RELEASE;
    }
    if (c->error != DK_OK) {
        delivery_reason(why, cap, "curl: %s",
                        c->error_text); /* the transport's words (libcurl's) */
        return NT_FAILED;
    }
    if (c->status >= 200 && c->status <= 299)
        return NT_SENT;
    delivery_reason(why, cap, "HTTP %d", c->status);
    return NT_FAILED;
}

/* --- e-mail ----------------------------------------------------------------------------------- */

/* The whole RFC 5322 message, CRLF line ends, every header value on one line. */
static char *delivery_mail_text(notifications_delivery *d, dk_arena *a, const delivery_row *r,
                                const char *to, const char *type, const char *message,
                                const char *task_id, const char *created_at)
{
    char date[64];
    dk_mail_date(dk_now_ms(), date);
    char *m = dk_arena_printf(
        a,
        "Date: %s\r\nFrom: %s\r\nTo: %s\r\nMessage-ID: <%s@%s>\r\n"
        "%sMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\nAuto-Submitted: auto-generated\r\n"
        "X-Docket-Delivery: %s\r\n\r\n",
        date, d->from.header, to, dk_mail_one_line(a, r->id, 64), d->from.msgid_domain,
        dk_mail_subject(a, "[Docket]", dk_mail_one_line(a, message, NT_SUBJECT_MAX)),
        dk_mail_one_line(a, r->id, 64));
    m = dk_arena_printf(a, "%s%s\r\n\r\nType: %s\r\n", m,
                        dk_mail_one_line(a, message, NT_BODY_LINE_MAX),
                        dk_mail_one_line(a, type, 128));
    if (task_id)
        m = dk_arena_printf(a, "%sTask: %s\r\n", m, dk_mail_one_line(a, task_id, 128));
    if (created_at)
        m = dk_arena_printf(a, "%sTime: %s\r\n", m, dk_mail_one_line(a, created_at, 64));
    return dk_arena_printf(
        a, "%s\r\n-- \r\nSent by Docket. Notification settings: your Docket preferences.\r\n", m);
}

static delivery_outcome delivery_email(notifications_delivery *d, dk_arena *a,
                                       const delivery_row *r, char *why, size_t cap)
{
    if (!d->mailer) {
        delivery_reason(why, cap, "e-mail is not configured");
        return NT_DEAD;
    }
    json_error_t jerr;
    json_t *body = json_loads(r->body, 0, &jerr);
    json_t *n = json_object_get(body, "notification");
    const char *type = json_string_value(json_object_get(body, "type"));
    const char *message = json_string_value(json_object_get(n, "message"));
    const char *task_id = json_string_value(json_object_get(n, "task_id"));
    const char *created = json_string_value(json_object_get(n, "created_at"));
    if (!type)
        type = json_string_value(json_object_get(n, "type"));
    /* copy out of the JSON before it goes */
    type = type ? dk_arena_strdup(a, type) : NULL;
    message = message ? dk_arena_strdup(a, message) : NULL;
    task_id = task_id ? dk_arena_strdup(a, task_id) : NULL;
    created = created ? dk_arena_strdup(a, created) : NULL;
    json_decref(body);
    if (!type || !message) {
        delivery_reason(why, cap, "malformed body");
        return NT_DEAD;
    }
    if (!d->users) {
        delivery_reason(why, cap, "no users directory");
        return NT_DEAD;
    }
    dk_user u;
    memset(&u, 0, sizeof u);
    dk_status st = d->users->get(d->users_handle, a, r->user_id, &u);
    if (st == DK_E_NOT_FOUND) {
        delivery_reason(why, cap, "user not found");
        return NT_DEAD;
    }
    if (st != DK_OK) {
        delivery_reason(why, cap, "users directory: %s", dk_status_title(st));
        return NT_FAILED;
    }
    if (!dk_mail_mailbox_ok(u.email)) {
        delivery_reason(why, cap, "invalid e-mail address");
        return NT_DEAD;
    }

    if (!u.email_verified) {
        delivery_reason(why, cap, "e-mail address not verified");
        return NT_DEAD;
    }

    char *text = delivery_mail_text(d, a, r, u.email, type, message, task_id, created);
    char mwhy[160] = "";
    st = d->mailer->ops->send(d->mailer->h, d->from.envelope, u.email, text, strlen(text), &d->stop,
                              mwhy, sizeof mwhy);
    if (st == DK_OK)
        return NT_SENT;
    if (atomic_load(&d->stop)) {
        delivery_reason(why, cap, "abandoned: stopping");
        return NT_RELEASE;
    }
    delivery_reason(why, cap, "%s", mwhy[0] ? mwhy : dk_status_title(st));
    return NT_FAILED;
}

/* --- the workers ------------------------------------------------------------------------------ */

static void delivery_deliver(notifications_delivery *d, dk_arena *a, const delivery_row *r,
                             int64_t lease)
{
    char why[NT_ERROR_MAX + 1] = "";
    delivery_outcome out;
    if (dk_streq(r->channel, "webhook"))
        out = delivery_webhook(d, a, r, why, sizeof why);
    else if (dk_streq(r->channel, "email"))
        out = delivery_email(d, a, r, why, sizeof why);
    else {
        delivery_reason(why, sizeof why, "unknown channel");
        out = NT_DEAD;
    }
    if (out == NT_RELEASE && !atomic_load(&d->stop))
        dk_log_with(DK_LOG_WARN, delivery_log_extra(a, r), "notification delivery postponed: %s",
                    why);
    delivery_finish(d, a, r, lease, out, why);
}

/* One claim and its rows; *ret_claimed gets how many rows were claimed. */
static dk_status delivery_batch(notifications_delivery *d, dk_arena *a, int *ret_claimed)
{
    int64_t now = dk_now_ms();
    int64_t lease = now + d->lease_ms;
    dk_db_rows *rows = NULL;
    *ret_claimed = 0;
    dk_status st = delivery_claim(d, a, now, lease, &rows);
    if (st != DK_OK)
        return st;
    *ret_claimed = rows->nrows;
    for (int i = 0; i < rows->nrows; i++) {
        delivery_row r = {
            .id = dk_db_value(rows, i, 0),
            .user_id = dk_db_value(rows, i, 1),
            .channel = dk_db_value(rows, i, 2),
            .target = dk_db_value(rows, i, 3),
            .body = dk_db_value(rows, i, 4),
            .attempts = dk_sql_get_int(rows, i, 5),
        };
        if (!r.id || !r.user_id || !r.body)
            continue; /* NOT NULL columns */
        if (atomic_load(&d->stop))
            delivery_finish(d, a, &r, lease, NT_RELEASE, NULL); /* give the rest back */
        else
            delivery_deliver(d, a, &r, lease);
    }
    return DK_OK;
}

static void delivery_wait(notifications_delivery *d, int64_t ms)
{
    struct timespec deadline = dk_mono_deadline(ms);
    pthread_mutex_lock(&d->lock);
    while (!d->kicked && !atomic_load(&d->stop)) {
        if (pthread_cond_timedwait(&d->cond, &d->lock, &deadline) != 0)
            break;
    }
    pthread_mutex_unlock(&d->lock);
}

static void *delivery_worker(void *arg)
{
    notifications_delivery *d = arg;
    dk_arena *a = dk_arena_new();
    bool failing = false;
    while (!atomic_load(&d->stop)) {
        pthread_mutex_lock(&d->lock);
        d->kicked = false;
        pthread_mutex_unlock(&d->lock);
        int claimed = 0;
        dk_status st = delivery_batch(d, a, &claimed);
        dk_arena_reset(a);
        if (st != DK_OK && !failing)
            dk_log_warn("notification delivery: cannot claim deliveries (%s); retrying every "
                        "%lld ms",
                        dk_status_title(st), (long long)d->interval_ms);
        else if (st == DK_OK && failing)
            dk_log_info("notification delivery: claiming deliveries again");
        failing = st != DK_OK;
        if (st == DK_OK && claimed == NT_DELIVERY_BATCH)
            continue; /* more may be due */
        delivery_wait(d, d->interval_ms);
    }
    dk_arena_free(a);
    return NULL;
}

/* --- metrics ---------------------------------------------------------------------------------- */

static void delivery_collect(void *ctx, dk_metrics_out *out)
{
    notifications_delivery *d = ctx;
    dk_metrics_family(out, "docket_notification_deliveries_total", "counter",
                      "Notification delivery outcomes by channel: sent, retry (an attempt failed "
                      "and is retried), dead (given up).");
    for (int c = 0; c < NT_NCHANNELS; c++)
        for (int r = 0; r < NT_NRESULTS; r++) {
            char labels[64];
            snprintf(labels, sizeof labels, "channel=\"%s\",result=\"%s\"",
                     delivery_channel_names[c], delivery_result_names[r]);
            dk_metrics_sample(out, "docket_notification_deliveries_total", labels,
                              (double)atomic_load(&d->counts[c][r]));
        }
}

/* --- lifecycle -------------------------------------------------------------------------------- */

static void delivery_free(notifications_delivery *d)
{
    dk_arena_free(d->keep);
    dk_free(d->threads);
    pthread_cond_destroy(&d->cond);
    pthread_mutex_destroy(&d->lock);
    dk_free(d);
}

dk_status notifications_delivery_start(const notifications_delivery_options *o,
                                       notifications_delivery **ret)
{
    if (!o || !o->db || !o->db->ops || !o->db->db || o->max_attempts < 1 || o->backoff_ms < 1 ||
        o->max_backoff_ms < 1 || o->timeout_ms < 1 || o->interval_ms < 1 || o->workers < 0) {
        dk_log_error("notification delivery: invalid options");
        return DK_E_VALIDATION;
    }
    if (!o->net.http || !o->http || !o->net.resolver) {
        dk_log_error("notification delivery: webhooks need an HTTP client and a resolver");
        return DK_E_VALIDATION;
    }
    notifications_delivery *d = DK_NEW(notifications_delivery);
    pthread_mutex_init(&d->lock, NULL);
    dk_cond_init_monotonic(&d->cond);
    d->db = o->db;
    d->users = o->users;
    d->users_handle = o->users_handle;
    d->net = o->net;
    d->http = o->http;
    d->allow_private = o->allow_private;
    d->max_attempts = o->max_attempts;
    d->backoff_ms = o->backoff_ms;
    d->max_backoff_ms = DK_MAX(o->max_backoff_ms, o->backoff_ms);
    d->timeout_ms = o->timeout_ms;
    d->interval_ms = o->interval_ms;
    /* a batch is worked through one row after another: a resolution and a call per row */
    d->lease_ms = NT_DELIVERY_BATCH * (2 * o->timeout_ms + 5000) + NT_LEASE_MARGIN_MS;
    d->keep = dk_arena_new();
    if (o->mailer) {
        if (dk_mail_sender_parse(d->keep, o->mail_from, &d->from) != DK_OK) {
            dk_log_error("notification delivery: smtp.from is not a usable address");
            delivery_free(d);
            return DK_E_VALIDATION;
        }
        if (!o->users) {
            dk_log_error("notification delivery: e-mail needs the users directory");
            delivery_free(d);
            return DK_E_VALIDATION;
        }
        d->mailer = o->mailer;
    }
    int n = o->workers > 0 ? o->workers : NT_DELIVERY_WORKERS;
    d->threads = dk_calloc((size_t)n, sizeof *d->threads);
    /* the workers take no process signals (and never die of SIGPIPE) */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (int i = 0; i < n; i++) {
        if (pthread_create(&d->threads[i], NULL, delivery_worker, d) != 0)
            break;
        d->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (d->nthreads < n) {
        dk_log_error("notification delivery: cannot start its threads");
        notifications_delivery_stop(d);
        return DK_E_INTERNAL;
    }
    dk_metrics_add_collector(delivery_collect, d);
    *ret = d;
    return DK_OK;
}

void notifications_delivery_kick(notifications_delivery *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->lock);
    d->kicked = true;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
}

void notifications_delivery_stop(notifications_delivery *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->lock);
    atomic_store(&d->stop, true);
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
    for (int i = 0; i < d->nthreads; i++)
        pthread_join(d->threads[i], NULL);
    delivery_free(d);
}
