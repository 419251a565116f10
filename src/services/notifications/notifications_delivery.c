/* notifications_delivery.c — the delivery worker: claims due rows of notifications_deliveries
 * under a lease, has each attempted (notifications_send.c: webhook or e-mail), and records the outcome guarded by the lease it claimed with (a row whose lease expired
 * and was claimed again is left to its new owner). */
#include "services/notifications/notifications_delivery.h"
#include "services/notifications/notifications_send.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

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
#include "core/trace.h"
#include "core/banned.h"

#define NT_ERROR_MAX       200 /* bytes of last_error */
#define NT_LEASE_MARGIN_MS 30000
/* Nothing due: a worker sleeps until the earliest pending row's next attempt (a retry, or a
 * lease of a worker that died), at most this long, or until a kick (a new delivery of this
 * process). The cap catches rows another replica queued and could not deliver. */
#define NT_IDLE_POLL_MS 30000

enum { NT_CH_WEBHOOK, NT_CH_EMAIL, NT_NCHANNELS };
enum { NT_RES_SENT, NT_RES_RETRY, NT_RES_DEAD, NT_NRESULTS };
static const char *const delivery_channel_names[NT_NCHANNELS] = {"webhook", "email"};
static const char *const delivery_result_names[NT_NRESULTS] = {"sent", "retry", "dead"};

struct notifications_delivery {
    const dk_database *db;
    notifications_sender send; /* the channels: what an attempt sends */
    dk_arena *keep;            /* the sender's strings */
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

/* --- the database side ------------------------------------------------------------------------ */

#define NT_CLAIM_HEAD                                                                              \
    "UPDATE notifications_deliveries SET next_attempt_at = $1, updated_at = $2 "                   \
    "WHERE id IN (SELECT id FROM notifications_deliveries "                                        \
    "WHERE state = 'pending' AND next_attempt_at <= $2 ORDER BY next_attempt_at, id LIMIT $3"
#define NT_CLAIM_TAIL ") RETURNING id, user_id, channel, target, body, attempts, traceparent"

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

static const char *delivery_log_extra(dk_arena *a, const notifications_send_row *r)
{
    char id[160], ch[64];
    dk_json_escape(id, sizeof id, r->id);
    dk_json_escape(ch, sizeof ch, r->channel ? r->channel : "");
    return dk_arena_printf(a, ",\"delivery_id\":\"%s\",\"channel\":\"%s\"", id, ch);
}

/* Records the outcome of one row, guarded by the lease it was claimed with. */
static void delivery_finish(notifications_delivery *d, dk_arena *a, const notifications_send_row *r,
                            int64_t lease, notifications_outcome outcome, const char *why)
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

    if (outcome == NOTIFICATIONS_SENT) {
        const char *p[] = {id, ls, ns};
        st = dk_sql(d->db, a, delivery_sent_sql, 3, p, &res);
        result = NT_RES_SENT;
    } else if (outcome == NOTIFICATIONS_RELEASE) {
        /* when stopping, at once (another replica may take it); else after a pause */
        int64_t next = atomic_load(&d->stop) ? now : now + d->interval_ms;
        const char *p[] = {id, ls, dk_sql_int(a, next), ns};
        st = dk_sql(d->db, a, delivery_release_sql, 4, p, &res);
    } else {
        const char *state = "dead";
        int64_t next = now;
        result = NT_RES_DEAD;
        if (outcome == NOTIFICATIONS_FAILED) {
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
    else if (result == NT_RES_DEAD && outcome == NOTIFICATIONS_DEAD)
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

/* --- the workers ------------------------------------------------------------------------------ */

static void delivery_deliver(notifications_delivery *d, dk_arena *a,
                             const notifications_send_row *r, int64_t lease)
{
    char why[NT_ERROR_MAX + 1] = "";
    notifications_outcome out;
    /* each attempt (retries too) is a span in the trace of the request that caused it */
    (void)dk_trace_enter_traceparent(r->traceparent);
    dk_span *sp = dk_span_start("notification delivery", DK_SPAN_CONSUMER);
    dk_span_attr_str(sp, "docket.channel", r->channel);
    dk_span_attr_int(sp, "docket.attempt", r->attempts + 1);
    dk_span_push(sp);
    if (dk_streq(r->channel, "webhook"))
        out = notifications_send_webhook(&d->send, a, r, why, sizeof why);
    else if (dk_streq(r->channel, "email"))
        out = notifications_send_email(&d->send, a, r, why, sizeof why);
    else {
        snprintf(why, sizeof why, "unknown channel");
        out = NOTIFICATIONS_DEAD;
    }
    if (out == NOTIFICATIONS_RELEASE && !atomic_load(&d->stop))
        dk_log_with(DK_LOG_WARN, delivery_log_extra(a, r), "notification delivery postponed: %s",
                    why);
    dk_span_pop(sp);
    if (out != NOTIFICATIONS_SENT)
        dk_span_error(sp, why);
    dk_span_end(sp);
    dk_trace_leave();
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
        notifications_send_row r = {
            .id = dk_db_value(rows, i, 0),
            .user_id = dk_db_value(rows, i, 1),
            .channel = dk_db_value(rows, i, 2),
            .target = dk_db_value(rows, i, 3),
            .body = dk_db_value(rows, i, 4),
            .attempts = dk_sql_get_int(rows, i, 5),
            .traceparent = dk_db_value(rows, i, 6),
        };
        if (!r.id || !r.user_id || !r.body)
            continue; /* NOT NULL columns */
        if (atomic_load(&d->stop))
            delivery_finish(d, a, &r, lease, NOTIFICATIONS_RELEASE, NULL); /* give the rest back */
        else
            delivery_deliver(d, a, &r, lease);
    }
    return DK_OK;
}

/* How long to sleep with nothing claimable: until the earliest pending next attempt, within
 * [interval, NT_IDLE_POLL_MS]; the interval when that cannot be read. */
static int64_t delivery_idle_wait(notifications_delivery *d, dk_arena *a)
{
    dk_db_rows *rows = NULL;
    if (dk_sql(d->db, a,
               "SELECT MIN(next_attempt_at) FROM notifications_deliveries WHERE state = 'pending'",
               0, NULL, &rows) != DK_OK)
        return d->interval_ms;
    int64_t wait = NT_IDLE_POLL_MS;
    if (rows->nrows == 1 && dk_db_value(rows, 0, 0))
        wait = dk_sql_get_int(rows, 0, 0) - dk_now_ms();
    if (wait > NT_IDLE_POLL_MS)
        wait = NT_IDLE_POLL_MS;
    return wait < d->interval_ms ? d->interval_ms : wait;
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
        int64_t wait =
            st == DK_OK && claimed < NT_DELIVERY_BATCH ? delivery_idle_wait(d, a) : d->interval_ms;
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
        delivery_wait(d, wait);
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
    d->send = (notifications_sender){
        .db = o->db,
        .users = o->users,
        .users_handle = o->users_handle,
        .net = o->net,
        .http = o->http,
        .allow_private = o->allow_private,
        .timeout_ms = o->timeout_ms,
        .stop = &d->stop,
    };
    d->max_attempts = o->max_attempts;
    d->backoff_ms = o->backoff_ms;
    d->max_backoff_ms = DK_MAX(o->max_backoff_ms, o->backoff_ms);
    d->timeout_ms = o->timeout_ms;
    d->interval_ms = o->interval_ms;
    /* a batch is worked through one row after another: a resolution and a call per row */
    d->lease_ms = NT_DELIVERY_BATCH * (2 * o->timeout_ms + 5000) + NT_LEASE_MARGIN_MS;
    d->keep = dk_arena_new();
    if (o->mailer) {
        if (dk_mail_sender_parse(d->keep, o->mail_from, &d->send.from) != DK_OK) {
            dk_log_error("notification delivery: smtp.from is not a usable address");
            delivery_free(d);
            return DK_E_VALIDATION;
        }
        if (!o->users) {
            dk_log_error("notification delivery: e-mail needs the users directory");
            delivery_free(d);
            return DK_E_VALIDATION;
        }
        d->send.mailer = o->mailer;
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
