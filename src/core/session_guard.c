#include "core/session_guard.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/arena.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "core/banned.h"

/* A small per-process cache of the last second each session was recorded in, so that a busy
 * session costs one kv write a second, not one per request. Collisions only cost a write. */
#define DK_TOUCH_SLOTS 1024

static struct {
    pthread_mutex_t lock;
    char sid[DK_TOUCH_SLOTS][40];
    int64_t second[DK_TOUCH_SLOTS];
} dk_touch_cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

static unsigned dk_touch_slot(const char *sid)
{
    unsigned h = 2166136261u;
    for (const char *p = sid; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h % DK_TOUCH_SLOTS;
}

dk_status dk_session_revoke(const dk_store *kv, const char *session_id, int64_t ttl_ms)
{
    char key[96];
    snprintf(key, sizeof key, "rev:%s", session_id);
    return kv->ops->set(kv->kv, key, "1", 1, ttl_ms);
}

dk_status dk_session_check(const dk_store *kv, const char *session_id)
{
    char key[96];
    snprintf(key, sizeof key, "rev:%s", session_id);
    bool revoked = false;
    dk_status st = kv->ops->exists(kv->kv, key, &revoked);
    if (st != DK_OK)
        return st;
    return revoked ? DK_E_UNAUTHORIZED : DK_OK;
}

dk_status dk_session_touch(const dk_store *kv, const char *session_id, int64_t ttl_ms)
{
    int64_t now = dk_now_ms();
    int64_t second = now / 1000;
    unsigned slot = dk_touch_slot(session_id);
    pthread_mutex_lock(&dk_touch_cache.lock);
    bool fresh =
        dk_touch_cache.second[slot] == second && strcmp(dk_touch_cache.sid[slot], session_id) == 0;
    if (!fresh) {
        dk_strlcpy(dk_touch_cache.sid[slot], session_id, sizeof dk_touch_cache.sid[slot]);
        dk_touch_cache.second[slot] = second;
    }
    pthread_mutex_unlock(&dk_touch_cache.lock);
    if (fresh)
        return DK_OK;
    char key[96], val[24];
    snprintf(key, sizeof key, "seen:%s", session_id);
    int n = snprintf(val, sizeof val, "%lld", (long long)now);
    return kv->ops->set(kv->kv, key, val, (size_t)n, ttl_ms);
}

dk_status dk_session_last_used(const dk_store *kv, dk_arena *a, const char *session_id,
                               int64_t *ret_ms)
{
    char key[96];
    snprintf(key, sizeof key, "seen:%s", session_id);
    char *val = NULL;
    size_t len = 0;
    dk_status st = kv->ops->get(kv->kv, a, key, &val, &len);
    if (st != DK_OK)
        return st;
    int64_t ms = 0;
    if (val && !dk_parse_i64(val, 0, INT64_MAX, &ms))
        ms = 0;
    *ret_ms = ms;
    return DK_OK;
}
