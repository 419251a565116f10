/* notifications_delivery.c — the delivery worker: claims due rows of notifications_deliveries
 * under a lease, sends each (webhook over HTTP with the libcurl easy API, e-mail through the
 * mailer port), and records the outcome guarded by the lease it claimed with (a row whose lease expired
 * and was claimed again is left to its new owner). */
#include "services/notifications/notifications_delivery.h"

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>

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
#include "ports/mailer.h"
#include "ports/users_directory.h"
#include "services/notifications/webhook_url.h"
#include "core/trace.h"
#include "core/banned.h"

#define NT_ERROR_MAX       200 /* bytes of last_error */
#define NT_SUBJECT_MAX     240 /* bytes of the message in a Subject */
#define NT_BODY_LINE_MAX   900 /* bytes of the message line in a mail body */
#define NT_LEASE_MARGIN_MS 30000
#define NT_USER_AGENT      "Docket-Webhook/1"

enum { NT_CH_WEBHOOK, NT_CH_EMAIL, NT_NCHANNELS };
enum { NT_RES_SENT, NT_RES_RETRY, NT_RES_DEAD, NT_NRESULTS };
static const char *const nt_channel_names[NT_NCHANNELS] = {"webhook", "email"};
static const char *const nt_result_names[NT_NRESULTS] = {"sent", "retry", "dead"};

struct nt_delivery {
    const dk_database *db;
    const struct dk_users_directory_ops *users;
    void *users_handle;
    const dk_mailer *mailer; /* NULL: e-mail off */
    dk_arena *keep;          /* the sender's strings */
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
typedef struct nt_row {
    const char *id, *user_id, *channel, *target, *body;
    int64_t attempts;
    const char *traceparent; /* of the request that caused it, or NULL */
} nt_row;

typedef enum {
    NT_SENT,    /* delivered */
    NT_FAILED,  /* an attempt failed: retry or dead by the attempt count */
    NT_DEAD,    /* cannot ever be delivered: dead without an attempt */
    NT_RELEASE, /* not attempted (stopping, database trouble): give the row back */
} nt_outcome;

/* --- libcurl, once per process ---------------------------------------------------------------- */

static pthread_once_t nt_curl_once = PTHREAD_ONCE_INIT;
static CURLcode nt_curl_rc = CURLE_FAILED_INIT;

static void nt_curl_init(void)
{
    nt_curl_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* --- small text helpers ----------------------------------------------------------------------- */

static void nt_reason(char *why, size_t cap, const char *fmt, ...) DK_PRINTF(3, 4);
static void nt_reason(char *why, size_t cap, const char *fmt, ...)
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
#define NT_CLAIM_TAIL ") RETURNING id, user_id, channel, target, body, attempts, traceparent"

/* SQLite runs one writer at a time, so the statement alone is atomic; PostgreSQL needs the
 * candidate rows locked, skipping those another replica is claiming right now. */
static const char nt_claim_sqlite[] = NT_CLAIM_HEAD NT_CLAIM_TAIL;
static const char nt_claim_postgres[] = NT_CLAIM_HEAD " FOR UPDATE SKIP LOCKED" NT_CLAIM_TAIL;

static const char nt_finish_sql[] =
    "UPDATE notifications_deliveries SET state = $3, attempts = $4, next_attempt_at = $5, "
    "last_error = $6, updated_at = $7 WHERE id = $1 AND state = 'pending' AND next_attempt_at = $2";
static const char nt_sent_sql[] =
    "UPDATE notifications_deliveries SET state = 'sent', attempts = attempts + 1, updated_at = $3 "
    "WHERE id = $1 AND state = 'pending' AND next_attempt_at = $2";
static const char nt_release_sql[] =
    "UPDATE notifications_deliveries SET next_attempt_at = $3, updated_at = $4 "
    "WHERE id = $1 AND state = 'pending' AND next_attempt_at = $2";

static dk_status nt_claim(nt_delivery *d, dk_arena *a, int64_t now, int64_t lease, dk_db_rows **ret)
{
    const char *sql = d->db->ops->engine == DK_DB_POSTGRES ? nt_claim_postgres : nt_claim_sqlite;
    const char *p[] = {dk_sql_int(a, lease), dk_sql_int(a, now), dk_sql_int(a, NT_DELIVERY_BATCH)};
    return dk_sql(d->db, a, sql, 3, p, ret);
}

static void nt_count(nt_delivery *d, int channel, int result)
{
    if (channel >= 0)
        atomic_fetch_add(&d->counts[channel][result], 1);
}

static int nt_channel_index(const char *channel)
{
    if (dk_streq(channel, "webhook"))
        return NT_CH_WEBHOOK;
    if (dk_streq(channel, "email"))
        return NT_CH_EMAIL;
    return -1;
}

/* The delay before retry number `attempts` (1 = after the first failure), with +-10 % jitter. */
static int64_t nt_backoff(const nt_delivery *d, int64_t attempts)
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

static const char *nt_log_extra(dk_arena *a, const nt_row *r)
{
    char id[160], ch[64];
    dk_json_escape(id, sizeof id, r->id);
    dk_json_escape(ch, sizeof ch, r->channel ? r->channel : "");
    return dk_arena_printf(a, ",\"delivery_id\":\"%s\",\"channel\":\"%s\"", id, ch);
}

/* Records the outcome of one row, guarded by the lease it was claimed with. */
static void nt_finish(nt_delivery *d, dk_arena *a, const nt_row *r, int64_t lease,
                      nt_outcome outcome, const char *why)
{
    int64_t now = dk_now_ms();
    int ch = nt_channel_index(r->channel);
    const char *id = r->id, *ls = dk_sql_int(a, lease), *ns = dk_sql_int(a, now);
    dk_db_rows *res = NULL;
    dk_status st;
    int result = -1;
    int64_t attempts = r->attempts, delay = 0;
    char err[NT_ERROR_MAX + 1];
    dk_strlcpy(err, why ? why : "", sizeof err);

    if (outcome == NT_SENT) {
        const char *p[] = {id, ls, ns};
        st = dk_sql(d->db, a, nt_sent_sql, 3, p, &res);
        result = NT_RES_SENT;
    } else if (outcome == NT_RELEASE) {
        /* when stopping, at once (another replica may take it); else after a pause */
        int64_t next = atomic_load(&d->stop) ? now : now + d->interval_ms;
        const char *p[] = {id, ls, dk_sql_int(a, next), ns};
        st = dk_sql(d->db, a, nt_release_sql, 4, p, &res);
    } else {
        const char *state = "dead";
        int64_t next = now;
        result = NT_RES_DEAD;
        if (outcome == NT_FAILED) {
            attempts++;
            if (attempts < d->max_attempts) {
                delay = nt_backoff(d, attempts);
                next = now + delay;
                state = "pending";
                result = NT_RES_RETRY;
            }
        }
        const char *p[] = {id, ls, state, dk_sql_int(a, attempts), dk_sql_int(a, next), err, ns};
        st = dk_sql(d->db, a, nt_finish_sql, 7, p, &res);
    }
    if (st != DK_OK) {
        dk_log_with(DK_LOG_WARN, nt_log_extra(a, r),
                    "notification delivery: the outcome was not recorded (%s); the row is "
                    "retried when its lease expires",
                    dk_status_title(st));
        return;
    }
    if (res->affected == 0) {
        dk_log_with(DK_LOG_WARN, nt_log_extra(a, r),
                    "notification delivery: the lease expired before the outcome was recorded");
        return;
    }
    if (result >= 0)
        nt_count(d, ch, result);
    if (result == NT_RES_RETRY)
        dk_log_with(DK_LOG_WARN, nt_log_extra(a, r),
                    "notification delivery failed: %s (attempt %lld of %d, next in %lld ms)", err,
                    (long long)attempts, d->max_attempts, (long long)delay);
    else if (result == NT_RES_DEAD && outcome == NT_DEAD)
        dk_log_with(DK_LOG_WARN, nt_log_extra(a, r),
                    "notification delivery given up without an attempt: %s; the row is dead", err);
    else if (result == NT_RES_DEAD)
        dk_log_with(DK_LOG_WARN, nt_log_extra(a, r),
                    "notification delivery failed for good: %s (attempt %lld of %d); the row is "
                    "dead",
                    err, (long long)attempts, d->max_attempts);
    else if (result == NT_RES_SENT && dk_log_enabled(DK_LOG_DEBUG))
        dk_log_with(DK_LOG_DEBUG, nt_log_extra(a, r), "notification delivered");
}

/* --- curl plumbing ---------------------------------------------------------------------------- */

static size_t nt_discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p, (void)ud;
    return size * n;
}

/* Stop abandons a call in flight (libcurl calls this at least about once a second). */
static int nt_progress(void *ud, curl_off_t dlt, curl_off_t dln, curl_off_t ult, curl_off_t uln)
{
    (void)dlt, (void)dln, (void)ult, (void)uln;
    nt_delivery *d = ud;
    return atomic_load(&d->stop) ? 1 : 0;
}

static bool nt_curl_common(nt_delivery *d, CURL *c, const char *url, const char *protocols)
{
    return curl_easy_setopt(c, CURLOPT_URL, url) == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, protocols) == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_PROXY, "") == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)d->timeout_ms) == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)d->timeout_ms) == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L) == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, nt_progress) == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_XFERINFODATA, d) == CURLE_OK;
}

/* --- webhooks --------------------------------------------------------------------------------- */

static nt_outcome nt_webhook(nt_delivery *d, dk_arena *a, const nt_row *r, char *why, size_t cap)
{
    json_error_t jerr;
    json_t *body = json_loads(r->body, 0, &jerr);
    const char *type = json_string_value(json_object_get(body, "type"));
    char *event = type ? dk_mail_one_line(a, type, 128) : NULL;
    json_decref(body);
    if (!event) {
        nt_reason(why, cap, "malformed body");
        return NT_DEAD;
    }

    const char *p[] = {r->user_id};
    dk_db_rows *prefs = NULL;
    dk_status st = dk_sql(d->db, a,
                          "SELECT webhook_url, webhook_secret FROM notifications_prefs "
                          "WHERE user_id = $1",
                          1, p, &prefs);
    if (st != DK_OK) {
        nt_reason(why, cap, "database: %s", dk_status_title(st));
        return NT_RELEASE;
    }
    const char *url = prefs->nrows == 1 ? dk_db_value(prefs, 0, 0) : NULL;
    const char *secret = prefs->nrows == 1 ? dk_db_value(prefs, 0, 1) : NULL;
    if (!dk_streq(url, r->target)) {
        nt_reason(why, cap, "webhook URL changed");
        return NT_DEAD;
    }
    if (!secret || !*secret) {
        nt_reason(why, cap, "webhook secret missing");
        return NT_DEAD;
    }

    nt_webhook_target t;
    char rwhy[160] = "";
    st = nt_webhook_resolve(r->target, d->allow_private, d->timeout_ms, &t, rwhy, sizeof rwhy);
    if (st == DK_E_FORBIDDEN) {
        nt_reason(why, cap, "address not allowed");
        return NT_DEAD;
    }
    if (st == DK_E_VALIDATION) {
        nt_reason(why, cap, "invalid webhook URL: %s", rwhy);
        return NT_DEAD;
    }
    if (st != DK_OK) {
        nt_reason(why, cap, "%s", rwhy[0] ? rwhy : dk_status_title(st));
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

    nt_outcome out = NT_RELEASE;
    CURL *c = curl_easy_init();
    struct curl_slist *hdrs = NULL, *resolve = NULL;
    const char *lines[] = {
        "Content-Type: application/json",
        dk_arena_printf(a, "X-Docket-Event: %s", event),
        dk_arena_printf(a, "X-Docket-Signature: sha256=%s", mac_hex),
        dk_arena_printf(a, "X-Docket-Delivery: %s", dk_mail_one_line(a, r->id, 64)),
        "Expect:",
    };
    bool ok = c != NULL;
    for (size_t i = 0; ok && i < DK_ARRAY_LEN(lines); i++) {
        struct curl_slist *n = curl_slist_append(hdrs, lines[i]);
        ok = n != NULL;
        hdrs = n ? n : hdrs;
    }
    if (ok && pin) {
        resolve = curl_slist_append(NULL, pin);
        ok = resolve != NULL;
    }
    ok = ok && nt_curl_common(d, c, r->target, "http,https") &&
         curl_easy_setopt(c, CURLOPT_USERAGENT, NT_USER_AGENT) == CURLE_OK &&
         curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs) == CURLE_OK &&
         (!resolve || curl_easy_setopt(c, CURLOPT_RESOLVE, resolve) == CURLE_OK) &&
         curl_easy_setopt(c, CURLOPT_POST, 1L) == CURLE_OK &&
         curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len) == CURLE_OK &&
         curl_easy_setopt(c, CURLOPT_POSTFIELDS, r->body) == CURLE_OK &&
         curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, nt_discard) == CURLE_OK;
    if (!ok) {
        nt_reason(why, cap, "could not set up the HTTP call");
        goto done;
    }
    dk_span *sp = dk_span_http("webhook", "POST");
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    (void)curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    dk_span_http_end(sp, rc == CURLE_OK, status);
    if (rc == CURLE_ABORTED_BY_CALLBACK && atomic_load(&d->stop)) {
        nt_reason(why, cap, "abandoned: stopping");
        out = NT_RELEASE;
    } else if (rc != CURLE_OK) {
        nt_reason(why, cap, "curl: %s", curl_easy_strerror(rc));
        out = NT_FAILED;
    } else if (curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status >= 200 &&
               status <= 299) {
        out = NT_SENT;
    } else {
        nt_reason(why, cap, "HTTP %ld", status);
        out = NT_FAILED;
    }
done:
    curl_slist_free_all(hdrs);
    curl_slist_free_all(resolve);
    if (c)
        curl_easy_cleanup(c);
    return out;
}

/* --- e-mail ----------------------------------------------------------------------------------- */

/* The whole RFC 5322 message, CRLF line ends, every header value on one line. */
static char *nt_mail_text(nt_delivery *d, dk_arena *a, const nt_row *r, const char *to,
                          const char *type, const char *message, const char *task_id,
                          const char *created_at)
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

static nt_outcome nt_email(nt_delivery *d, dk_arena *a, const nt_row *r, char *why, size_t cap)
{
    if (!d->mailer) {
        nt_reason(why, cap, "e-mail is not configured");
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
        nt_reason(why, cap, "malformed body");
        return NT_DEAD;
    }
    if (!d->users) {
        nt_reason(why, cap, "no users directory");
        return NT_DEAD;
    }
    dk_user u;
    memset(&u, 0, sizeof u);
    dk_status st = d->users->get(d->users_handle, a, r->user_id, &u);
    if (st == DK_E_NOT_FOUND) {
        nt_reason(why, cap, "user not found");
        return NT_DEAD;
    }
    if (st != DK_OK) {
        nt_reason(why, cap, "users directory: %s", dk_status_title(st));
        return NT_FAILED;
    }
    if (!dk_mail_mailbox_ok(u.email)) {
        nt_reason(why, cap, "invalid e-mail address");
        return NT_DEAD;
    }

    if (!u.email_verified) {
        nt_reason(why, cap, "e-mail address not verified");
        return NT_DEAD;
    }

    char *text = nt_mail_text(d, a, r, u.email, type, message, task_id, created);
    char mwhy[160] = "";
    st = d->mailer->ops->send(d->mailer->h, d->from.envelope, u.email, text, strlen(text), &d->stop,
                              mwhy, sizeof mwhy);
    if (st == DK_OK)
        return NT_SENT;
    if (atomic_load(&d->stop)) {
        nt_reason(why, cap, "abandoned: stopping");
        return NT_RELEASE;
    }
    nt_reason(why, cap, "%s", mwhy[0] ? mwhy : dk_status_title(st));
    return NT_FAILED;
}

/* --- the workers ------------------------------------------------------------------------------ */

static void nt_deliver(nt_delivery *d, dk_arena *a, const nt_row *r, int64_t lease)
{
    char why[NT_ERROR_MAX + 1] = "";
    nt_outcome out;
    /* each attempt (retries too) is a span in the trace of the request that caused it */
    (void)dk_trace_enter_traceparent(r->traceparent);
    dk_span *sp = dk_span_start("notification delivery", DK_SPAN_CONSUMER);
    dk_span_attr_str(sp, "docket.channel", r->channel);
    dk_span_attr_int(sp, "docket.attempt", r->attempts + 1);
    dk_span_push(sp);
    if (dk_streq(r->channel, "webhook"))
        out = nt_webhook(d, a, r, why, sizeof why);
    else if (dk_streq(r->channel, "email"))
        out = nt_email(d, a, r, why, sizeof why);
    else {
        nt_reason(why, sizeof why, "unknown channel");
        out = NT_DEAD;
    }
    if (out == NT_RELEASE && !atomic_load(&d->stop))
        dk_log_with(DK_LOG_WARN, nt_log_extra(a, r), "notification delivery postponed: %s", why);
    dk_span_pop(sp);
    if (out != NT_SENT)
        dk_span_error(sp, why);
    dk_span_end(sp);
    dk_trace_leave();
    nt_finish(d, a, r, lease, out, why);
}

/* One claim and its rows; *ret_claimed gets how many rows were claimed. */
static dk_status nt_batch(nt_delivery *d, dk_arena *a, int *ret_claimed)
{
    int64_t now = dk_now_ms();
    int64_t lease = now + d->lease_ms;
    dk_db_rows *rows = NULL;
    *ret_claimed = 0;
    dk_status st = nt_claim(d, a, now, lease, &rows);
    if (st != DK_OK)
        return st;
    *ret_claimed = rows->nrows;
    for (int i = 0; i < rows->nrows; i++) {
        nt_row r = {
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
            nt_finish(d, a, &r, lease, NT_RELEASE, NULL); /* give the rest back */
        else
            nt_deliver(d, a, &r, lease);
    }
    return DK_OK;
}

static void nt_wait(nt_delivery *d, int64_t ms)
{
    struct timespec deadline = dk_mono_deadline(ms);
    pthread_mutex_lock(&d->lock);
    while (!d->kicked && !atomic_load(&d->stop)) {
        if (pthread_cond_timedwait(&d->cond, &d->lock, &deadline) != 0)
            break;
    }
    pthread_mutex_unlock(&d->lock);
}

static void *nt_worker(void *arg)
{
    nt_delivery *d = arg;
    dk_arena *a = dk_arena_new();
    bool failing = false;
    while (!atomic_load(&d->stop)) {
        pthread_mutex_lock(&d->lock);
        d->kicked = false;
        pthread_mutex_unlock(&d->lock);
        int claimed = 0;
        dk_status st = nt_batch(d, a, &claimed);
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
        nt_wait(d, d->interval_ms);
    }
    dk_arena_free(a);
    return NULL;
}

/* --- metrics ---------------------------------------------------------------------------------- */

static void nt_collect(void *ctx, dk_metrics_out *out)
{
    nt_delivery *d = ctx;
    dk_metrics_family(out, "docket_notification_deliveries_total", "counter",
                      "Notification delivery outcomes by channel: sent, retry (an attempt failed "
                      "and is retried), dead (given up).");
    for (int c = 0; c < NT_NCHANNELS; c++)
        for (int r = 0; r < NT_NRESULTS; r++) {
            char labels[64];
            snprintf(labels, sizeof labels, "channel=\"%s\",result=\"%s\"", nt_channel_names[c],
                     nt_result_names[r]);
            dk_metrics_sample(out, "docket_notification_deliveries_total", labels,
                              (double)atomic_load(&d->counts[c][r]));
        }
}

/* --- lifecycle -------------------------------------------------------------------------------- */

static void nt_free(nt_delivery *d)
{
    dk_arena_free(d->keep);
    dk_free(d->threads);
    pthread_cond_destroy(&d->cond);
    pthread_mutex_destroy(&d->lock);
    dk_free(d);
}

dk_status nt_delivery_start(const nt_delivery_options *o, nt_delivery **ret)
{
    if (!o || !o->db || !o->db->ops || !o->db->db || o->max_attempts < 1 || o->backoff_ms < 1 ||
        o->max_backoff_ms < 1 || o->timeout_ms < 1 || o->interval_ms < 1 || o->workers < 0) {
        dk_log_error("notification delivery: invalid options");
        return DK_E_VALIDATION;
    }
    pthread_once(&nt_curl_once, nt_curl_init);
    if (nt_curl_rc != CURLE_OK) {
        dk_log_error("notification delivery: libcurl failed to initialise");
        return DK_E_INTERNAL;
    }
    nt_delivery *d = DK_NEW(nt_delivery);
    pthread_mutex_init(&d->lock, NULL);
    dk_cond_init_monotonic(&d->cond);
    d->db = o->db;
    d->users = o->users;
    d->users_handle = o->users_handle;
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
            nt_free(d);
            return DK_E_VALIDATION;
        }
        if (!o->users) {
            dk_log_error("notification delivery: e-mail needs the users directory");
            nt_free(d);
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
        if (pthread_create(&d->threads[i], NULL, nt_worker, d) != 0)
            break;
        d->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (d->nthreads < n) {
        dk_log_error("notification delivery: cannot start its threads");
        nt_delivery_stop(d);
        return DK_E_INTERNAL;
    }
    dk_metrics_add_collector(nt_collect, d);
    *ret = d;
    return DK_OK;
}

void nt_delivery_kick(nt_delivery *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->lock);
    d->kicked = true;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
}

void nt_delivery_stop(nt_delivery *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->lock);
    atomic_store(&d->stop, true);
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
    for (int i = 0; i < d->nthreads; i++)
        pthread_join(d->threads[i], NULL);
    nt_free(d);
}
