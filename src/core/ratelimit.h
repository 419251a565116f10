/* ratelimit.h — fixed-window rate limiting over the kv port (one counter per bucket and client,
 * key "rl:<bucket>:<client>" — IPv6 clients by their /64 —, shared by every replica when the kv is Redis).
 * Stateless and thread-safe: all state lives in the kv store; nothing to free. Errors: the kv's
 * own status (DK_E_UNAVAILABLE when Redis is down) so the caller chooses to fail open or closed;
 * DK_E_INTERNAL for a negative limit, a non-positive window or a missing argument. */
#ifndef DK_RATELIMIT_H
#define DK_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "ports/kv.h"

typedef struct dk_ratelimit_result {
    bool allowed;
    int64_t limit;
    int64_t remaining;     /* hits left in this window, never negative */
    int64_t reset_s;       /* seconds until the window resets, rounded up, always >= 1 */
    int64_t retry_after_s; /* 0 when allowed, reset_s when limited */
} dk_ratelimit_result;

#define DK_RATELIMIT_CLIENT_KEY_LEN 48

/* The client as counted: an IPv6 address by its /64 ("2001:db8:0:1::/64"), an IPv4-mapped one
 * as the IPv4 address, anything else as it is (returned, out unused). */
const char *dk_ratelimit_client_key(const char *client, char out[DK_RATELIMIT_CLIENT_KEY_LEN]);

/* Counts one hit of client (keyed by dk_ratelimit_client_key) against bucket (at most limit hits per window_ms). *ret is written
 * only on success; a hit over the limit is a success with allowed == false. */
dk_status dk_ratelimit_hit(const dk_store *kv, const char *bucket, const char *client,
                           int64_t limit, int64_t window_ms, dk_ratelimit_result *ret) DK_MUSTCHECK;

#endif
