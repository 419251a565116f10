/* kv.h — the key-value port: rate-limit counters, session revocation, small cached values,
 * and a publish/subscribe channel between the processes sharing the store.
 * In-memory for one process (embedded mode), Redis when REDIS_URL is set (shared by every
 * replica). A dk_kv is thread-safe. Keys and values are binary-safe byte strings with an
 * optional time to live. Errors: DK_E_UNAVAILABLE when the server does not answer in time
 * (callers fail fast with 503), DK_E_INTERNAL otherwise. */
#ifndef DK_PORTS_KV_H
#define DK_PORTS_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct dk_arena dk_arena;
typedef struct dk_kv dk_kv;
typedef struct dk_kv_sub dk_kv_sub;

/* Publish/subscribe. A message published on a channel reaches every subscription to that
 * channel on the same store, in this process and in every other process sharing it (Redis: the
 * whole server, whatever the database; the key prefix is applied to channel names as to keys).
 *
 * A subscription is either live or not. It starts not live; on_state(ctx, true) says it is live
 * from then on, on_state(ctx, false) says messages may have been missed since (connection lost,
 * server gone) — and is followed by on_state(ctx, true) once it is subscribed again. While live,
 * every message whose publish returned DK_OK after the subscription became live is delivered,
 * in publish order per publisher, possibly twice (a publish retried after a lost reply). No
 * message is delivered while not live. Redis: delivery runs on a thread of the subscription's
 * own with a connection of its own, which reconnects with a backoff and notices a dead server
 * within about twice timeout_ms (it pings when quiet). Memory: fan-out in the publishing thread
 * before publish returns; live from subscribe on. A subscription's callbacks never run
 * concurrently with each other; they must be quick and must not call publish, subscribe or
 * unsubscribe on the same store. */
typedef void (*dk_kv_on_message)(void *ctx, const char *msg, size_t len);
typedef void (*dk_kv_on_state)(void *ctx, bool live);

typedef struct dk_kv_options {
    const char *url; /* redis[s]://[user:pass@]host:port[/db]; ignored by the memory adapter */
    const char *tls_ca_file; /* rediss://: CA bundle to trust; NULL/empty = system store */
    int pool_size;           /* connections (Redis) */
    int timeout_ms;          /* connect and command timeout (Redis) */
    const char *key_prefix;  /* prepended to every key, e.g. "docket:" */
} dk_kv_options;

struct dk_kv_ops {
    const char *name;
    dk_status (*open)(const dk_kv_options *opt, dk_kv **ret_kv) DK_MUSTCHECK;
    void (*close)(dk_kv *kv); /* accepts NULL */
    /* *ret_val is NULL (and *ret_len 0) when the key is absent or expired. The value is
     * NUL-terminated for convenience and lives in the arena. */
    dk_status (*get)(dk_kv *kv, dk_arena *arena, const char *key, char **ret_val,
                     size_t *ret_len) DK_MUSTCHECK;
    /* ttl_ms <= 0: no expiry. */
    dk_status (*set)(dk_kv *kv, const char *key, const char *val, size_t len,
                     int64_t ttl_ms) DK_MUSTCHECK;
    /* Like set, but only when the key is absent (SET NX); *ret_set says whether it was. */
    dk_status (*set_nx)(dk_kv *kv, const char *key, const char *val, size_t len, int64_t ttl_ms,
                        bool *ret_set) DK_MUSTCHECK;
    /* Gives an existing key a new time to live (ttl_ms <= 0: none); *ret_found is false when
     * the key is absent (nothing changes then). */
    dk_status (*expire)(dk_kv *kv, const char *key, int64_t ttl_ms, bool *ret_found) DK_MUSTCHECK;
    /* Atomically moves from's value and expiry to `to`, replacing what `to` held (RENAME);
     * DK_E_NOT_FOUND when from is absent. */
    dk_status (*rename)(dk_kv *kv, const char *from, const char *to) DK_MUSTCHECK;
    dk_status (*del)(dk_kv *kv, const char *key) DK_MUSTCHECK;
    dk_status (*exists)(dk_kv *kv, const char *key, bool *ret_exists) DK_MUSTCHECK;
    /* Fixed window counter: atomically increments key, starting a window of window_ms on the
     * first hit. Returns the count after the increment and the ms left in the window. */
    dk_status (*incr_window)(dk_kv *kv, const char *key, int64_t window_ms, int64_t *ret_count,
                             int64_t *ret_ttl_ms) DK_MUSTCHECK;
    dk_status (*ping)(dk_kv *kv, int timeout_ms) DK_MUSTCHECK;
    /* Sends len bytes of msg to the channel's subscribers (none is not an error). */
    dk_status (*publish)(dk_kv *kv, const char *channel, const char *msg, size_t len) DK_MUSTCHECK;
    /* Starts a subscription (see above); on_message gets the bytes with a NUL after them, valid
     * during the call. Fails only when it cannot start at all (no thread): an unreachable
     * server is not an error, the subscription keeps trying. *ret_sub is written on success. */
    dk_status (*subscribe)(dk_kv *kv, const char *channel, dk_kv_on_message on_message,
                           dk_kv_on_state on_state, void *ctx, dk_kv_sub **ret_sub) DK_MUSTCHECK;
    /* Ends a subscription: once it returns, no callback of it runs any more (it does not call
     * on_state(false)). Accepts NULL. close ends the subscriptions still open. */
    void (*unsubscribe)(dk_kv *kv, dk_kv_sub *sub);
};

typedef struct dk_store {
    const struct dk_kv_ops *ops;
    dk_kv *kv;
} dk_store;

#endif
