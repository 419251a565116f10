/* kv.h — the key-value port: rate-limit counters, session revocation, small cached values.
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

typedef struct dk_kv_options {
    const char *url;        /* redis://[user:pass@]host:port[/db]; ignored by the memory adapter */
    int pool_size;          /* connections (Redis) */
    int timeout_ms;         /* connect and command timeout (Redis) */
    const char *key_prefix; /* prepended to every key, e.g. "docket:" */
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
    dk_status (*del)(dk_kv *kv, const char *key) DK_MUSTCHECK;
    dk_status (*exists)(dk_kv *kv, const char *key, bool *ret_exists) DK_MUSTCHECK;
    /* Fixed window counter: atomically increments key, starting a window of window_ms on the
     * first hit. Returns the count after the increment and the ms left in the window. */
    dk_status (*incr_window)(dk_kv *kv, const char *key, int64_t window_ms, int64_t *ret_count,
                             int64_t *ret_ttl_ms) DK_MUSTCHECK;
    dk_status (*ping)(dk_kv *kv, int timeout_ms) DK_MUSTCHECK;
};

extern const struct dk_kv_ops dk_kv_memory_ops;
extern const struct dk_kv_ops dk_kv_redis_ops;

typedef struct dk_store {
    const struct dk_kv_ops *ops;
    dk_kv *kv;
} dk_store;

#endif
