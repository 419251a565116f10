#include "core/ratelimit.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/banned.h"

#define RL_KEY_INLINE 160

const char *dk_ratelimit_client_key(const char *client, char out[DK_RATELIMIT_CLIENT_KEY_LEN])
{
    unsigned char b[16];
    if (!client || !strchr(client, ':') || inet_pton(AF_INET6, client, b) != 1)
        return client;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(b, mapped, sizeof mapped) == 0) {
        snprintf(out, DK_RATELIMIT_CLIENT_KEY_LEN, "%u.%u.%u.%u", b[12], b[13], b[14], b[15]);
        return out;
    }
    /* one subscriber usually holds a whole /64: its addresses count as one client */
    snprintf(out, DK_RATELIMIT_CLIENT_KEY_LEN, "%x:%x:%x:%x::/64", (unsigned)(b[0] << 8 | b[1]),
             (unsigned)(b[2] << 8 | b[3]), (unsigned)(b[4] << 8 | b[5]),
             (unsigned)(b[6] << 8 | b[7]));
    return out;
}

dk_status dk_ratelimit_hit(const dk_store *kv, const char *bucket, const char *client,
                           int64_t limit, int64_t window_ms, dk_ratelimit_result *ret)
{
    if (!kv || !kv->ops || !kv->kv || !bucket || !client || !ret || limit < 0 || window_ms <= 0)
        return DK_E_INTERNAL;
    char client_key[DK_RATELIMIT_CLIENT_KEY_LEN];
    client = dk_ratelimit_client_key(client, client_key);

    char buf[RL_KEY_INLINE];
    char *key = buf;
    size_t need = strlen(bucket) + strlen(client) + sizeof "rl::";
    if (need > sizeof buf)
        key = dk_malloc(need);
    if (snprintf(key, need, "rl:%s:%s", bucket, client) >= (int)need) {
        if (key != buf)
            dk_free(key);
        return DK_E_INTERNAL;
    }

    int64_t count = 0, ttl_ms = 0;
    dk_status st = kv->ops->incr_window(kv->kv, key, window_ms, &count, &ttl_ms);
    if (key != buf)
        dk_free(key);
    if (st != DK_OK)
        return st;

    /* Whole seconds, rounded up; a window in its last millisecond still reads 1. */
    int64_t reset_s = ttl_ms > 0 ? ttl_ms / 1000 + (ttl_ms % 1000 != 0) : 1;

    ret->allowed = count <= limit;
    ret->limit = limit;
    ret->remaining = count >= limit ? 0 : limit - count;
    ret->reset_s = reset_s;
    ret->retry_after_s = ret->allowed ? 0 : reset_s;
    return DK_OK;
}
