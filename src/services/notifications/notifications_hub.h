/* notifications_hub.h — the open event streams (GET /api/v1/notifications/stream) of one
 * process, fed by push: a notification created anywhere reaches the streams of its user only.
 *
 * A created notification is handed to the hub of the process that created it
 * (notifications_hub_publish) and broadcast on the kv store's channel DK_NT_HUB_CHANNEL, which
 * every hub sharing the store (every notifications replica, Redis) receives; each writes the
 * frame to its own streams of that user. The database is read when a stream opens (replay
 * after Last-Event-ID, and what arrived between the request and the hub taking the stream)
 * and, after the channel's subscription was down, once per stream for what arrived meanwhile —
 * never per idle stream.
 * Revocations (dk_session_revoke's broadcast, DK_SESSION_GUARD_CHANNEL) end the session's
 * streams at once; after that subscription was down every stream's session is checked once.
 * Heartbeats and token expiry run off one timing wheel (core/timer_wheel.h); a stream costs
 * nothing between its timers, and each timer O(1). A user holds at most max_per_user streams in a process: the oldest go first.
 *
 * One thread owns the streams; the other entry points only queue work for it and are
 * thread-safe. Errors: DK_E_INTERNAL when the thread or a subscription cannot start. */
#ifndef DK_NOTIFICATIONS_HUB_H
#define DK_NOTIFICATIONS_HUB_H

#include <stdint.h>

#include "core/http.h"
#include "core/status.h"
#include "ports/kv.h"
#include "services/notifications/notifications_repo.h"

#define DK_NT_HUB_CHANNEL "ntf" /* the store adds its prefix */

typedef struct notifications_hub notifications_hub;

typedef struct notifications_hub_options {
    const notifications_repo *repo;
    const dk_store *store;
    int64_t heartbeat_ms;
    int max_per_user;
    void (*tick)(void *ctx); /* called about once a second on the hub's thread (may be NULL) */
    void *tick_ctx;
} notifications_hub_options;

notifications_hub *notifications_hub_new(const notifications_hub_options *o);
/* Starts the thread and the two subscriptions. */
dk_status notifications_hub_start(notifications_hub *h) DK_MUSTCHECK;
/* Ends the subscriptions, the thread and every open stream; harmless when not started. */
void notifications_hub_stop(notifications_hub *h);
void notifications_hub_free(notifications_hub *h); /* accepts NULL */

/* Answers req with an event stream of the user's notifications after seq `after`, ended when
 * the token expires (expires_ms, wall clock) or the session (may be NULL) is revoked. */
void notifications_hub_open(notifications_hub *h, dk_res *res, const char *user_id,
                            const char *session_id, int64_t expires_ms, int64_t after);
/* A notification was created in this process: to the local streams at once, and to the other
 * processes' through the store. */
void notifications_hub_publish(notifications_hub *h, const notifications_item *item);
/* The user is gone: their local streams end. */
void notifications_hub_forget_user(notifications_hub *h, const char *user_id);

typedef struct notifications_hub_stats {
    int64_t streams;  /* open streams held */
    int64_t pushed;   /* frames written from pushes */
    int64_t replayed; /* frames written from the database */
    int64_t revoked;  /* streams ended by a revocation */
    int64_t capped;   /* streams ended by the per-user cap */
} notifications_hub_stats;
void notifications_hub_stats_get(notifications_hub *h, notifications_hub_stats *ret);

#endif
