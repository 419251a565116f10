/* notifications_delivery.h — the delivery worker: sends the rows of notifications_deliveries
 * (webhook POSTs signed with HMAC-SHA256, e-mails through the mailer port) and retries failures with
 * exponential backoff until a row is 'sent' or 'dead' (the dead-letter state).
 * Worker threads claim due rows (state 'pending', next_attempt_at <= now, oldest first, a small
 * batch) by moving next_attempt_at forward by a lease in the same statement, so replicas never
 * take the same row and a crashed replica's rows come back once the lease expires. Delivery is
 * at least once: receivers de-duplicate by X-Docket-Delivery (the row id).
 * notifications_delivery_start copies the strings of its options; db, users and the ports (net, http)
 * must outlive the worker.
 * It registers a metrics collector (docket_notification_deliveries_total{channel,result}) over
 * the worker: clear collectors (dk_metrics_clear_collectors, as main.c does) before stop frees
 * it. kick and stop are thread-safe; stop joins the workers, abandoning (and releasing) a call
 * in flight within about a second. Errors: DK_E_VALIDATION for unusable options (logged). */
#ifndef DK_NOTIFICATIONS_DELIVERY_H
#define DK_NOTIFICATIONS_DELIVERY_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "ports/db.h"
#include "services/notifications/webhook_url.h"

struct dk_users_directory_ops;
struct dk_mailer;
typedef struct dk_http_client dk_http_client;

typedef struct notifications_delivery notifications_delivery;

typedef struct notifications_delivery_options {
    const dk_database *db;                      /* holds the notifications_* tables */
    const struct dk_users_directory_ops *users; /* e-mail addresses; may be NULL when mailer
                                                   is NULL */
    void *users_handle;
    const struct dk_mailer *mailer; /* NULL = e-mail off: e-mail rows still pending are marked
                                      dead; must outlive the worker */
    const char *mail_from;          /* smtp.from: "addr@host" or "Name <addr@host>" */
    webhook_net net;                /* webhooks: URL reading and name resolution */
    dk_http_client *http;           /* webhooks: the client net.http opened; must outlive */
    bool allow_private;             /* notification.webhook_allow_private */
    int max_attempts;       /* notification.webhook_max_attempts (>= 1): attempts before dead */
    int64_t backoff_ms;     /* notification.webhook_backoff: delay after the first failure */
    int64_t max_backoff_ms; /* notification.webhook_max_backoff: the doubling stops here */
    int64_t timeout_ms;     /* notification.webhook_timeout: a whole webhook or SMTP call */
    int64_t interval_ms;    /* notification.delivery_interval: polling without a kick */
    int workers;            /* threads; 0 = NT_DELIVERY_WORKERS */
} notifications_delivery_options;

#define NT_DELIVERY_WORKERS 2
#define NT_DELIVERY_BATCH   4 /* rows claimed per statement */

/* Starts the workers. The first look at the table happens at once. */
dk_status notifications_delivery_start(const notifications_delivery_options *o,
                                       notifications_delivery **ret) DK_MUSTCHECK;
/* Rows were committed: look now instead of at the next interval. Accepts NULL. */
void notifications_delivery_kick(notifications_delivery *d);
/* Stops and joins the workers and frees d. Accepts NULL. */
void notifications_delivery_stop(notifications_delivery *d);

/* What a delivery sends, in detail (also in docs/notifications.md, "Delivery"):
 * Webhook: POST <target> with the row's body verbatim; headers Content-Type: application/json,
 * X-Docket-Event: <body.type>, X-Docket-Delivery: <row id>, User-Agent: Docket-Webhook/1, and
 * X-Docket-Signature: sha256=<lower-case hex HMAC-SHA256 of the raw body, keyed with the bytes
 * of the webhook_secret string as handed to the user, "whsec_" prefix included>. Redirects are
 * not followed; proxies from the environment are ignored; the host is resolved again and the
 * connection pinned to the checked addresses. 2xx = sent; anything else is a failed attempt.
 * The row is dead without an attempt when the user's current webhook_url differs from the
 * row's target ("webhook URL changed") or resolves to an address not allowed.
 * E-mail: To the user's address from the users directory (unknown user, or an address not
 * verified yet: dead), From mail_from,
 * Subject "[Docket] <message>" (RFC 2047-encoded when not ASCII), text/plain UTF-8 body with
 * the message, type, task id and time. Header values never carry CR/LF from the data.
 * After a failed attempt n (1-based): dead when n >= max_attempts, else retried after
 * min(backoff_ms * 2^(n-1), max_backoff_ms) +-10 % jitter. last_error holds a short reason
 * ("HTTP 500", "curl: Timeout was reached", "SMTP 451: ..."), never a secret or URL. */

#endif
