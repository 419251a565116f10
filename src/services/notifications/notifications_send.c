/* notifications_send.c — one delivery attempt per channel (see notifications_send.h): a webhook
 * POST through the http_client port, signed with HMAC-SHA256 and pinned to the addresses the
 * resolver gave; an e-mail composed here (RFC 5322, RFC 2047 subjects) and handed to the
 * mailer port. */
#include "services/notifications/notifications_send.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "core/arena.h"
#include "core/common.h"
#include "core/crypto.h"
#include "core/http_client_wait.h"
#include "core/mail.h"
#include "core/sql.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "ports/http_client.h"
#include "ports/mailer.h"
#include "ports/users_directory.h"
#include "core/trace.h"
#include "core/banned.h"

#define NT_SUBJECT_MAX   240 /* bytes of the message in a Subject */
#define NT_BODY_LINE_MAX 900 /* bytes of the message line in a mail body */
#define NT_USER_AGENT    "User-Agent: Docket-Webhook/1"

static void send_reason(char *why, size_t cap, const char *fmt, ...) DK_PRINTF(3, 4);
static void send_reason(char *why, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, cap, fmt, ap);
    va_end(ap);
}

/* --- one webhook call, waited for -------------------------------------------------------------- */

typedef struct send_call {
    dk_http_wait wait;
    const notifications_sender *d;
} send_call;

/* Stop abandons a call in flight (the client asks about once a second). */
static bool send_call_abandoned(dk_http_call *c)
{
    send_call *w = c->ctx;
    return atomic_load(w->d->stop);
}

/* The receiver's answer is read and dropped, whatever its size; stop ends it. */
static void send_call_headers(dk_http_call *c)
{
    (void)c;
}

static dk_http_data_action send_call_data(dk_http_call *c, const char *data, size_t len)
{
    (void)data, (void)len;
    return send_call_abandoned(c) ? DK_HTTP_DATA_ABORT : DK_HTTP_DATA_OK;
}

/* Submits w->call and waits for it to finish; false when it could not start. */
static bool send_call_run(const notifications_sender *d, send_call *w)
{
    w->d = d;
    w->wait.call.ctx = w;
    w->wait.call.abandoned = send_call_abandoned;
    w->wait.call.on_headers = send_call_headers;
    w->wait.call.on_data = send_call_data;
    return dk_http_wait_run(d->net.http, d->http, &w->wait);
}

/* --- webhooks --------------------------------------------------------------------------------- */

notifications_outcome notifications_send_webhook(const notifications_sender *d, dk_arena *a,
                                                 const notifications_send_row *r, char *why,
                                                 size_t cap)
{
    json_error_t jerr;
    json_t *body = json_loads(r->body, 0, &jerr);
    const char *type = json_string_value(json_object_get(body, "type"));
    char *event = type ? dk_mail_one_line(a, type, 128) : NULL;
    json_decref(body);
    if (!event) {
        send_reason(why, cap, "malformed body");
        return NOTIFICATIONS_DEAD;
    }

    const char *p[] = {r->user_id};
    dk_db_rows *prefs = NULL;
    dk_status st = dk_sql(d->db, a,
                          "SELECT webhook_url, webhook_secret FROM notifications_prefs "
                          "WHERE user_id = $1",
                          1, p, &prefs);
    if (st != DK_OK) {
        send_reason(why, cap, "database: %s", dk_status_title(st));
        return NOTIFICATIONS_RELEASE;
    }
    const char *url = prefs->nrows == 1 ? dk_db_value(prefs, 0, 0) : NULL;
    const char *secret = prefs->nrows == 1 ? dk_db_value(prefs, 0, 1) : NULL;
    if (!dk_streq(url, r->target)) {
        send_reason(why, cap, "webhook URL changed");
        return NOTIFICATIONS_DEAD;
    }
    if (!secret || !*secret) {
        send_reason(why, cap, "webhook secret missing");
        return NOTIFICATIONS_DEAD;
    }

    webhook_target t;
    char rwhy[160] = "";
    st =
        webhook_resolve(&d->net, r->target, d->allow_private, d->timeout_ms, &t, rwhy, sizeof rwhy);
    if (st == DK_E_FORBIDDEN) {
        send_reason(why, cap, "address not allowed");
        return NOTIFICATIONS_DEAD;
    }
    if (st == DK_E_VALIDATION) {
        send_reason(why, cap, "invalid webhook URL: %s", rwhy);
        return NOTIFICATIONS_DEAD;
    }
    if (st != DK_OK) {
        send_reason(why, cap, "%s", rwhy[0] ? rwhy : dk_status_title(st));
        return st == DK_E_UNAVAILABLE ? NOTIFICATIONS_FAILED : NOTIFICATIONS_RELEASE;
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

    send_call w = {
        .wait.call = {
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
    if (!send_call_run(d, &w)) {
        dk_span_http_end(sp, false, 0);
        send_reason(why, cap, "could not set up the HTTP call");
        return NOTIFICATIONS_RELEASE;
    }
    dk_http_call *c = &w.wait.call;
    dk_span_http_end(sp, c->error == DK_OK, c->status);
    if (c->cancelled && atomic_load(d->stop)) {
        send_reason(why, cap, "abandoned: stopping");
        return NOTIFICATIONS_RELEASE;
    }
    if (c->error != DK_OK) {
        send_reason(why, cap, "curl: %s", c->error_text); /* the transport's words (libcurl's) */
        return NOTIFICATIONS_FAILED;
    }
    if (c->status >= 200 && c->status <= 299)
        return NOTIFICATIONS_SENT;
    send_reason(why, cap, "HTTP %d", c->status);
    return NOTIFICATIONS_FAILED;
}

/* --- e-mail ----------------------------------------------------------------------------------- */

/* The whole RFC 5322 message, CRLF line ends, every header value on one line. */
static char *send_mail_text(const notifications_sender *d, dk_arena *a,
                            const notifications_send_row *r, const char *to, const char *type,
                            const char *message, const char *task_id, const char *created_at)
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

notifications_outcome notifications_send_email(const notifications_sender *d, dk_arena *a,
                                               const notifications_send_row *r, char *why,
                                               size_t cap)
{
    if (!d->mailer) {
        send_reason(why, cap, "e-mail is not configured");
        return NOTIFICATIONS_DEAD;
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
        send_reason(why, cap, "malformed body");
        return NOTIFICATIONS_DEAD;
    }
    if (!d->users) {
        send_reason(why, cap, "no users directory");
        return NOTIFICATIONS_DEAD;
    }
    dk_user u;
    memset(&u, 0, sizeof u);
    dk_status st = d->users->get(d->users_handle, a, r->user_id, &u);
    if (st == DK_E_NOT_FOUND) {
        send_reason(why, cap, "user not found");
        return NOTIFICATIONS_DEAD;
    }
    if (st != DK_OK) {
        send_reason(why, cap, "users directory: %s", dk_status_title(st));
        return NOTIFICATIONS_FAILED;
    }
    if (!dk_mail_mailbox_ok(u.email)) {
        send_reason(why, cap, "invalid e-mail address");
        return NOTIFICATIONS_DEAD;
    }

    if (!u.email_verified) {
        send_reason(why, cap, "e-mail address not verified");
        return NOTIFICATIONS_DEAD;
    }

    char *text = send_mail_text(d, a, r, u.email, type, message, task_id, created);
    char mwhy[160] = "";
    st = d->mailer->ops->send(d->mailer->h, d->from.envelope, u.email, text, strlen(text), d->stop,
                              mwhy, sizeof mwhy);
    if (st == DK_OK)
        return NOTIFICATIONS_SENT;
    if (atomic_load(d->stop)) {
        send_reason(why, cap, "abandoned: stopping");
        return NOTIFICATIONS_RELEASE;
    }
    send_reason(why, cap, "%s", mwhy[0] ? mwhy : dk_status_title(st));
    return NOTIFICATIONS_FAILED;
}
