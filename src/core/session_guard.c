#include "core/session_guard.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "core/arena.h"
#include "core/ids.h"
#include "core/log.h"
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

/* FNV-1a: session ids come from tokens we signed, so nobody can aim them at one slot. */
static unsigned dk_sid_hash(const char *sid)
{
    unsigned h = 2166136261u;
    for (const char *p = sid; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h;
}

static unsigned dk_touch_slot(const char *sid)
{
    return dk_sid_hash(sid) % DK_TOUCH_SLOTS;
}

/* The check cache: which sessions this process found not revoked, and until when it believes
 * that. Direct-mapped (a collision only costs a store call), DK_GUARD_SLOTS slots under
 * DK_GUARD_LOCKS striped mutexes, so concurrent checks of different sessions rarely meet.
 *
 * Correctness rests on two counters:
 * - epoch (global): odd while the subscription is live. Every change of the subscription's state
 *   moves it to a value never used before, and an entry counts only in the epoch it was stored
 *   in — so going down, coming back, start and stop each flush the whole cache at once.
 * - gen (per slot): bumped by every eviction aimed at the slot, matching or not.
 * A check that misses reads both before asking the store and stores its answer only if neither
 * moved meanwhile: a revocation broadcast that arrives while the store's answer is on its way
 * (the answer may predate the revocation) is never overwritten by that answer. */
#define DK_GUARD_SLOTS   4096 /* a power of two */
#define DK_GUARD_LOCKS   64
#define DK_GUARD_SID_MAX 48 /* longer ids (never ours: UUIDs) are not cached */

struct dk_guard_slot {
    char sid[DK_GUARD_SID_MAX];
    int64_t until;  /* monotonic ms */
    uint64_t epoch; /* the epoch it was stored in */
    uint64_t gen;   /* evictions aimed at this slot */
};

struct dk_guard_lock {
    alignas(64) pthread_mutex_t m; /* one cache line each */
};

static struct {
    _Atomic(dk_kv *) kv; /* the store whose checks are cached; NULL: not started */
    atomic_uint_fast64_t epoch;
    atomic_uint_fast64_t outages;
    pthread_mutex_t start_lock; /* start and stop */
    const struct dk_kv_ops *ops;
    dk_kv *sub_kv;
    dk_kv_sub *sub;
    struct dk_guard_lock locks[DK_GUARD_LOCKS];
    struct dk_guard_slot slots[DK_GUARD_SLOTS];
} dk_guard = {.start_lock = PTHREAD_MUTEX_INITIALIZER};

static pthread_once_t dk_guard_once = PTHREAD_ONCE_INIT;

static void dk_guard_init(void)
{
    for (size_t i = 0; i < DK_GUARD_LOCKS; i++)
        pthread_mutex_init(&dk_guard.locks[i].m, NULL);
}

/* Moves the epoch to a new value, odd when live. */
static void dk_guard_set_live(bool live)
{
    uint_fast64_t e = atomic_load(&dk_guard.epoch), next;
    do {
        bool odd = (e & 1) != 0;
        next = e + (odd == live ? 2 : 1);
    } while (!atomic_compare_exchange_weak(&dk_guard.epoch, &e, next));
}

static void dk_guard_evict(const char *sid)
{
    if (strlen(sid) >= DK_GUARD_SID_MAX)
        return;
    unsigned i = dk_sid_hash(sid) & (DK_GUARD_SLOTS - 1);
    struct dk_guard_slot *s = &dk_guard.slots[i];
    pthread_mutex_t *m = &dk_guard.locks[i % DK_GUARD_LOCKS].m;
    pthread_mutex_lock(m);
    if (strcmp(s->sid, sid) == 0)
        s->until = 0;
    s->gen++;
    pthread_mutex_unlock(m);
}

static void dk_guard_on_message(void *ctx, const char *msg, size_t len)
{
    (void)ctx;
    if (len == strlen(msg)) /* a session id never holds a NUL */
        dk_guard_evict(msg);
}

static void dk_guard_on_state(void *ctx, bool live)
{
    (void)ctx;
    if (!live)
        atomic_fetch_add(&dk_guard.outages, 1);
    dk_guard_set_live(live);
}

dk_status dk_session_guard_start(const dk_store *kv)
{
    if (!kv || !kv->ops || !kv->kv || !kv->ops->subscribe)
        return DK_E_INTERNAL;
    pthread_once(&dk_guard_once, dk_guard_init);
    pthread_mutex_lock(&dk_guard.start_lock);
    if (dk_guard.sub) {
        pthread_mutex_unlock(&dk_guard.start_lock);
        return DK_E_INTERNAL;
    }
    dk_guard_set_live(false); /* nothing cached before counts */
    dk_kv_sub *sub = NULL;
    dk_status st = kv->ops->subscribe(kv->kv, DK_SESSION_GUARD_CHANNEL, dk_guard_on_message,
                                      dk_guard_on_state, NULL, &sub);
    if (st == DK_OK) {
        dk_guard.ops = kv->ops;
        dk_guard.sub_kv = kv->kv;
        dk_guard.sub = sub;
        atomic_store(&dk_guard.kv, kv->kv);
    }
    pthread_mutex_unlock(&dk_guard.start_lock);
    return st;
}

void dk_session_guard_stop(void)
{
    pthread_mutex_lock(&dk_guard.start_lock);
    if (dk_guard.sub) {
        atomic_store(&dk_guard.kv, NULL);
        dk_guard.ops->unsubscribe(dk_guard.sub_kv, dk_guard.sub);
        dk_guard.sub = NULL;
        dk_guard.sub_kv = NULL;
        dk_guard_set_live(false);
    }
    pthread_mutex_unlock(&dk_guard.start_lock);
}

void dk_session_guard_stats_get(dk_session_guard_stats *ret)
{
    bool started = atomic_load(&dk_guard.kv) != NULL;
    *ret = (dk_session_guard_stats){
        .started = started,
        .live = started && (atomic_load(&dk_guard.epoch) & 1) != 0,
        .outages = atomic_load(&dk_guard.outages),
    };
}

/* ---------- the record in the store ---------- */

static struct {
    _Atomic(dk_session_source_fn) fn;
    _Atomic(void *) ctx;
} dk_source;

void dk_session_guard_set_source(dk_session_source_fn fn, void *ctx)
{
    atomic_store(&dk_source.fn, NULL);
    atomic_store(&dk_source.ctx, ctx);
    atomic_store(&dk_source.fn, fn);
}

static void dk_session_key(char *key, size_t cap, const char *session_id)
{
    snprintf(key, cap, "%s%s", DK_SESSION_KEY_PREFIX, session_id);
}

dk_status dk_session_open(const dk_store *kv, const char *session_id, int64_t ttl_ms)
{
    if (ttl_ms <= 0)
        return DK_OK; /* already expired: absence says "not live" */
    char key[128];
    dk_session_key(key, sizeof key, session_id);
    bool set = false;
    dk_status st = kv->ops->set_nx(kv->kv, key, "1", 1, ttl_ms, &set);
    if (st != DK_OK || set)
        return st;
    /* there already: "1" lives on for the new lifetime; a revocation ("0") stays a revocation
     * (a longer life does it no harm) */
    bool found = false;
    return kv->ops->expire(kv->kv, key, ttl_ms, &found);
}

dk_status dk_session_revoke(const dk_store *kv, const char *session_id, int64_t ttl_ms)
{
    char key[128];
    dk_session_key(key, sizeof key, session_id);
    dk_status st = kv->ops->set(kv->kv, key, "0", 1, ttl_ms);
    if (st != DK_OK)
        return st;
    if (atomic_load(&dk_guard.kv) == kv->kv)
        dk_guard_evict(session_id);
    /* Broadcast even when this process does not cache: others may. */
    size_t n = strlen(session_id);
    st = kv->ops->publish(kv->kv, DK_SESSION_GUARD_CHANNEL, session_id, n);
    if (st != DK_OK)
        st = kv->ops->publish(kv->kv, DK_SESSION_GUARD_CHANNEL, session_id, n);
    if (st != DK_OK)
        dk_log_error("a session was revoked in the store, but the revocation could not be "
                     "broadcast to the other processes: %s",
                     dk_status_title(st));
    return st;
}

dk_status dk_session_seeded(const dk_store *kv, bool *ret_seeded)
{
    return kv->ops->exists(kv->kv, DK_SESSION_SEEDED_KEY, ret_seeded);
}

static void dk_seed_key(char *key, size_t cap, const char *token)
{
    snprintf(key, cap, "%sseeding:%s", DK_SESSION_KEY_PREFIX, token);
}

dk_status dk_session_seed_begin(const dk_store *kv, char token[DK_SESSION_SEED_TOKEN_LEN])
{
    dk_uuid7(token);
    char key[128];
    dk_seed_key(key, sizeof key, token);
    /* the canary: gone if the store is emptied before the seed is done */
    return kv->ops->set(kv->kv, key, "1", 1, DK_SESSION_SEED_MAX_MS);
}

dk_status dk_session_seed_end(const dk_store *kv, const char *token)
{
    char key[128];
    dk_seed_key(key, sizeof key, token);
    dk_status st = kv->ops->rename(kv->kv, key, DK_SESSION_SEEDED_KEY);
    if (st != DK_OK)
        return st; /* DK_E_NOT_FOUND: the store lost the canary, so maybe the seed too */
    bool found = false;
    st = kv->ops->expire(kv->kv, DK_SESSION_SEEDED_KEY, 0, &found);
    /* if the marker keeps the canary's expiry, the next seed comes sooner: harmless */
    return st;
}

/* The value recorded for a session: DK_OK ("1"), DK_E_UNAUTHORIZED ("0"), DK_E_NOT_FOUND
 * (nothing), or the store's error. */
static dk_status dk_session_record(const dk_store *kv, const char *session_id)
{
    char key[128];
    dk_session_key(key, sizeof key, session_id);
    dk_arena *a = dk_arena_new();
    char *val = NULL;
    size_t len = 0;
    dk_status st = kv->ops->get(kv->kv, a, key, &val, &len);
    if (st == DK_OK)
        st = !val ? DK_E_NOT_FOUND : (len == 1 && val[0] == '1') ? DK_OK : DK_E_UNAUTHORIZED;
    dk_arena_free(a);
    return st;
}

/* The store's answer, uncached; on a miss, the source's (remembered in the store) or, without a
 * source, "not live" once the store is seeded. */
static dk_status dk_session_lookup(const dk_store *kv, const char *session_id)
{
    dk_status st = dk_session_record(kv, session_id);
    if (st != DK_E_NOT_FOUND)
        return st;
    dk_session_source_fn source = atomic_load(&dk_source.fn);
    if (source) {
        bool live = false;
        int64_t ttl_ms = 0;
        st = source(atomic_load(&dk_source.ctx), session_id, &live, &ttl_ms);
        if (st != DK_OK)
            return st;
        /* remembered for the processes that have no source; a failure here only costs them
         * a later lookup (or the seed writes it) */
        dk_status wst = DK_OK;
        if (live) {
            wst = dk_session_open(kv, session_id, ttl_ms);
        } else if (ttl_ms > 0) {
            /* not live is final (revoked, expired, unknown): a plain write may replace a "1" */
            char key[128];
            dk_session_key(key, sizeof key, session_id);
            wst = kv->ops->set(kv->kv, key, "0", 1, ttl_ms);
        }
        if (wst != DK_OK)
            dk_log_warn("could not remember a session's state in the store: %s",
                        dk_status_title(wst));
        return live ? DK_OK : DK_E_UNAUTHORIZED;
    }
    bool seeded = false;
    st = dk_session_seeded(kv, &seeded);
    if (st != DK_OK)
        return st;
    if (!seeded)
        return DK_E_UNAVAILABLE; /* emptied, and not seeded again yet */
    /* seeded now: ask again, in case the seed wrote this session after the first look */
    st = dk_session_record(kv, session_id);
    return st == DK_E_NOT_FOUND ? DK_E_UNAUTHORIZED : st;
}

dk_status dk_session_check(const dk_store *kv, const char *session_id)
{
    dk_kv *cached = atomic_load(&dk_guard.kv);
    size_t n = strlen(session_id);
    if (!cached || cached != kv->kv || n >= DK_GUARD_SID_MAX)
        return dk_session_lookup(kv, session_id);
    unsigned i = dk_sid_hash(session_id) & (DK_GUARD_SLOTS - 1);
    struct dk_guard_slot *s = &dk_guard.slots[i];
    pthread_mutex_t *m = &dk_guard.locks[i % DK_GUARD_LOCKS].m;
    uint64_t e0 = atomic_load(&dk_guard.epoch);
    int64_t now = dk_mono_ms();
    pthread_mutex_lock(m);
    bool hit = (e0 & 1) && s->epoch == e0 && s->until > now && strcmp(s->sid, session_id) == 0;
    uint64_t g0 = s->gen;
    pthread_mutex_unlock(m);
    if (hit)
        return DK_OK;
    dk_status st = dk_session_lookup(kv, session_id);
    if (st != DK_OK || !(e0 & 1))
        return st; /* revoked, an error, or not subscribed: nothing to remember */
    pthread_mutex_lock(m);
    if (atomic_load(&dk_guard.epoch) == e0 && s->gen == g0) {
        memcpy(s->sid, session_id, n + 1);
        s->until = now + DK_SESSION_GUARD_VALID_MS;
        s->epoch = e0;
    }
    pthread_mutex_unlock(m);
    return DK_OK;
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
