/* notifications_send.h — one delivery attempt per channel: what a webhook POST and an e-mail
 * carry (the details are in notifications_delivery.h, "What a delivery sends") and what came of
 * it. When to try, how often and what to record is the delivery worker's
 * (notifications_delivery.c). A sender is filled once by the worker and read-only afterwards;
 * attempts run on several threads at once. Each blocks up to timeout_ms (twice: resolving, then
 * the call) and gives up early once *stop is true. `why` gets a short reason, never a secret or
 * URL. */
#ifndef DK_NOTIFICATIONS_SEND_H
#define DK_NOTIFICATIONS_SEND_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/mail.h"
#include "ports/db.h"
#include "services/notifications/webhook_url.h"

struct dk_users_directory_ops;
struct dk_mailer;
typedef struct dk_arena dk_arena;
typedef struct dk_http_client dk_http_client;

/* What came of an attempt. */
typedef enum notifications_outcome {
    NOTIFICATIONS_SENT,    /* delivered */
    NOTIFICATIONS_FAILED,  /* an attempt failed: retry or dead by the attempt count */
    NOTIFICATIONS_DEAD,    /* cannot ever be delivered: dead without an attempt */
    NOTIFICATIONS_RELEASE, /* not attempted (stopping, database trouble): give the row back */
} notifications_outcome;

/* A claimed row of notifications_deliveries. */
typedef struct notifications_send_row {
    const char *id, *user_id, *channel, *target, *body;
    int64_t attempts;
    const char *traceparent; /* of the request that caused it, or NULL */
} notifications_send_row;

typedef struct notifications_sender {
    const dk_database *db; /* the webhook preferences (URL and secret) */
    const struct dk_users_directory_ops *users;
    void *users_handle;
    const struct dk_mailer *mailer; /* NULL: e-mail off */
    dk_mail_sender from;
    webhook_net net;      /* the webhook URL, read and resolved */
    dk_http_client *http; /* webhook calls (net.http's) */
    bool allow_private;
    int64_t timeout_ms;
    const atomic_bool *stop;
} notifications_sender;

notifications_outcome notifications_send_webhook(const notifications_sender *d, dk_arena *a,
                                                 const notifications_send_row *r, char *why,
                                                 size_t cap);
notifications_outcome notifications_send_email(const notifications_sender *d, dk_arena *a,
                                               const notifications_send_row *r, char *why,
                                               size_t cap);

#endif
