/* kv_memory.c — the in-process key-value adapter (embedded mode, one process).
 * A hash table split into shards, each under its own mutex. Keys hash with SipHash-2-4 under a
 * random per-store seed, so clients that choose keys (rate-limit ids) cannot flood one chain.
 * Expiry uses CLOCK_MONOTONIC ms: an expired entry is dropped when a lookup walks past it, and
 * every few inserts a sweep step visits the next buckets of the shard, so entries nobody asks
 * for again are reclaimed too and memory stays bounded by the live data.
 * Publish/subscribe is a fan-out inside the store: publish calls every subscriber of the channel
 * in the publishing thread, under one lock (so a subscription's callbacks never overlap), before
 * it returns; a subscription is live from subscribe on and never misses a message. */
#include "ports/kv.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "adapters/kv.h"
#include "core/banned.h"

#define KVM_SHARDS         16 /* a power of two; the shard is taken from the hash's top bits */
#define KVM_SHARD_BITS     4
#define KVM_MIN_BUCKETS    16  /* a power of two */
#define KVM_SWEEP_EVERY    32  /* inserts into a shard between two sweep steps */
#define KVM_SWEEP_BUCKETS  64  /* buckets one sweep step visits */
#define KVM_KEY_INLINE     192 /* keys up to this size are assembled on the stack */
#define KVM_INT_MAX_DIGITS 21  /* "-9223372036854775808" */

struct kv_memory_entry {
    struct kv_memory_entry *next;
    uint64_t hash;
    int64_t expires_ms; /* monotonic ms; 0: never */
    char *val;          /* val_len bytes plus a NUL, its own allocation */
    size_t val_len;
    size_t key_len;
    char key[]; /* key_len bytes plus a NUL (the prefixed key) */
};

struct kv_memory_shard {
    pthread_mutex_t lock;
    struct kv_memory_entry **buckets;
    size_t nbuckets; /* a power of two */
    size_t count;
    unsigned inserts;    /* since the last sweep step */
    size_t sweep_cursor; /* next bucket the sweep visits */
    char pad[64];        /* keeps two shards' locks off one cache line */
};

struct dk_kv_sub {
    dk_kv_sub *next;
    char *channel;
    dk_kv_on_message on_message;
    dk_kv_on_state on_state;
    void *ctx;
};

struct dk_kv {
    struct kv_memory_shard shards[KVM_SHARDS];
    uint64_t seed0, seed1;
    char *prefix;
    size_t prefix_len;
    pthread_mutex_t subs_lock; /* held while callbacks run */
    dk_kv_sub *subs;
};

/* --- hashing --------------------------------------------------------------------------------- */

static inline uint64_t kv_memory_rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

#define KVM_SIPROUND                                                                               \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = kv_memory_rotl(v1, 13);                                                               \
        v1 ^= v0;                                                                                  \
        v0 = kv_memory_rotl(v0, 32);                                                               \
        v2 += v3;                                                                                  \
        v3 = kv_memory_rotl(v3, 16);                                                               \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = kv_memory_rotl(v3, 21);                                                               \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = kv_memory_rotl(v1, 17);                                                               \
        v1 ^= v2;                                                                                  \
        v2 = kv_memory_rotl(v2, 32);                                                               \
    } while (0)

static uint64_t kv_memory_load64_le(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* SipHash-2-4 (Aumasson and Bernstein). */
static uint64_t kv_memory_siphash(const unsigned char *in, size_t len, uint64_t k0, uint64_t k1)
{
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0;
    uint64_t v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0;
    uint64_t v3 = 0x7465646279746573ULL ^ k1;
    size_t whole = len - (len % 8);
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = kv_memory_load64_le(in + i);
        v3 ^= m;
        KVM_SIPROUND;
        KVM_SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    for (size_t i = whole; i < len; i++)
        b |= (uint64_t)in[i] << (8 * (i - whole));
    v3 ^= b;
    KVM_SIPROUND;
    KVM_SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    KVM_SIPROUND;
    KVM_SIPROUND;
    KVM_SIPROUND;
    KVM_SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* --- keys ------------------------------------------------------------------------------------ */

/* The prefixed key of one call: on the stack when short. */
struct kv_memory_key {
    char *p;
    size_t len;
    uint64_t hash;
    char buf[KVM_KEY_INLINE];
};

static void kv_memory_key_init(struct kv_memory_key *k, const dk_kv *kv, const char *key)
{
    size_t klen = strlen(key);
    k->len = kv->prefix_len + klen;
    k->p = k->len < sizeof k->buf ? k->buf : dk_malloc(k->len + 1);
    if (kv->prefix_len)
        memcpy(k->p, kv->prefix, kv->prefix_len);
    memcpy(k->p + kv->prefix_len, key, klen + 1);
    k->hash = kv_memory_siphash((const unsigned char *)k->p, k->len, kv->seed0, kv->seed1);
}

static void kv_memory_key_release(struct kv_memory_key *k)
{
    if (k->p != k->buf)
        dk_free(k->p);
    k->p = NULL;
}

static struct kv_memory_shard *kv_memory_shard_of(dk_kv *kv, uint64_t hash)
{
    return &kv->shards[hash >> (64 - KVM_SHARD_BITS)];
}

/* --- the table (every function below runs under the shard's lock) --------------------------- */

static bool kv_memory_expired(const struct kv_memory_entry *e, int64_t now)
{
    return e->expires_ms != 0 && now >= e->expires_ms;
}

static void kv_memory_entry_free(struct kv_memory_entry *e)
{
    dk_free(e->val);
    dk_free(e);
}

/* Drops every expired entry of one chain. */
static void kv_memory_sweep_chain(struct kv_memory_shard *s, struct kv_memory_entry **link,
                                  int64_t now)
{
    while (*link) {
        struct kv_memory_entry *e = *link;
        if (kv_memory_expired(e, now)) {
            *link = e->next;
            kv_memory_entry_free(e);
            s->count--;
        } else {
            link = &e->next;
        }
    }
}

/* Rebuilds the bucket array with nbuckets buckets, leaving expired entries behind. */
static void kv_memory_resize(struct kv_memory_shard *s, size_t nbuckets, int64_t now)
{
    struct kv_memory_entry **nb = dk_calloc(nbuckets, sizeof(*nb));
    for (size_t i = 0; i < s->nbuckets; i++) {
        struct kv_memory_entry *e = s->buckets[i];
        while (e) {
            struct kv_memory_entry *next = e->next;
            if (kv_memory_expired(e, now)) {
                kv_memory_entry_free(e);
                s->count--;
            } else {
                size_t b = (size_t)(e->hash & (nbuckets - 1));
                e->next = nb[b];
                nb[b] = e;
            }
            e = next;
        }
    }
    dk_free(s->buckets);
    s->buckets = nb;
    s->nbuckets = nbuckets;
    s->sweep_cursor = 0;
}

/* One incremental sweep step: the next KVM_SWEEP_BUCKETS buckets lose their expired entries;
 * a table that has become mostly empty shrinks. */
static void kv_memory_sweep_step(struct kv_memory_shard *s, int64_t now)
{
    size_t n = s->nbuckets < KVM_SWEEP_BUCKETS ? s->nbuckets : KVM_SWEEP_BUCKETS;
    for (size_t i = 0; i < n; i++) {
        kv_memory_sweep_chain(s, &s->buckets[s->sweep_cursor], now);
        s->sweep_cursor = (s->sweep_cursor + 1) & (s->nbuckets - 1);
    }
    if (s->nbuckets > KVM_MIN_BUCKETS && s->count < s->nbuckets / 8)
        kv_memory_resize(s, s->nbuckets / 2, now);
}

/* The live entry for k, or NULL. Expired entries met on the chain are dropped on the way. */
static struct kv_memory_entry **kv_memory_find(struct kv_memory_shard *s,
                                               const struct kv_memory_key *k, int64_t now)
{
    struct kv_memory_entry **link = &s->buckets[k->hash & (s->nbuckets - 1)];
    while (*link) {
        struct kv_memory_entry *e = *link;
        if (kv_memory_expired(e, now)) {
            *link = e->next;
            kv_memory_entry_free(e);
            s->count--;
            continue;
        }
        if (e->hash == k->hash && e->key_len == k->len && memcmp(e->key, k->p, k->len) == 0)
            return link;
        link = &e->next;
    }
    return NULL;
}

static char *kv_memory_val_dup(const char *val, size_t len)
{
    char *v = dk_malloc(len + 1);
    if (len)
        memcpy(v, val, len);
    v[len] = '\0';
    return v;
}

static void kv_memory_insert(struct kv_memory_shard *s, const struct kv_memory_key *k,
                             char *owned_val, size_t val_len, int64_t expires_ms, int64_t now)
{
    struct kv_memory_entry *e = dk_malloc(sizeof(*e) + k->len + 1);
    e->hash = k->hash;
    e->expires_ms = expires_ms;
    e->val = owned_val;
    e->val_len = val_len;
    e->key_len = k->len;
    memcpy(e->key, k->p, k->len + 1);
    size_t b = (size_t)(k->hash & (s->nbuckets - 1));
    e->next = s->buckets[b];
    s->buckets[b] = e;
    s->count++;
    if (s->count > s->nbuckets)
        kv_memory_resize(s, s->nbuckets * 2, now);
    if (++s->inserts >= KVM_SWEEP_EVERY) {
        s->inserts = 0;
        kv_memory_sweep_step(s, now);
    }
}

/* now + ttl, saturating; 0 is reserved for "never". */
static int64_t kv_memory_deadline(int64_t now, int64_t ttl_ms)
{
    if (ttl_ms <= 0)
        return 0;
    if (ttl_ms > INT64_MAX - now)
        return INT64_MAX;
    return now + ttl_ms;
}

/* --- the port -------------------------------------------------------------------------------- */

static void kv_memory_close(dk_kv *kv)
{
    if (!kv)
        return;
    for (size_t i = 0; i < KVM_SHARDS; i++) {
        struct kv_memory_shard *s = &kv->shards[i];
        for (size_t b = 0; b < s->nbuckets; b++) {
            struct kv_memory_entry *e = s->buckets[b];
            while (e) {
                struct kv_memory_entry *next = e->next;
                kv_memory_entry_free(e);
                e = next;
            }
        }
        dk_free(s->buckets);
        pthread_mutex_destroy(&s->lock);
    }
    while (kv->subs) {
        dk_kv_sub *next = kv->subs->next;
        dk_free(kv->subs->channel);
        dk_free(kv->subs);
        kv->subs = next;
    }
    pthread_mutex_destroy(&kv->subs_lock);
    dk_free(kv->prefix);
    dk_free(kv);
}

DK_MUSTCHECK static dk_status kv_memory_open(const dk_kv_options *opt, dk_kv **ret_kv)
{
    if (!ret_kv)
        return DK_E_INTERNAL;
    dk_kv *kv = DK_NEW(dk_kv);
    uint64_t seed[2];
    if (getrandom(seed, sizeof seed, 0) != (ssize_t)sizeof seed) {
        /* Only without a kernel entropy source; still differs per process and per store. */
        seed[0] = (uint64_t)dk_mono_ms() ^ (uint64_t)(uintptr_t)kv;
        seed[1] = (uint64_t)dk_now_ms() * 0x9E3779B97F4A7C15ULL;
    }
    kv->seed0 = seed[0];
    kv->seed1 = seed[1];
    const char *prefix = opt && opt->key_prefix ? opt->key_prefix : "";
    kv->prefix = dk_strdup(prefix);
    kv->prefix_len = strlen(prefix);
    pthread_mutex_init(&kv->subs_lock, NULL);
    for (size_t i = 0; i < KVM_SHARDS; i++) {
        struct kv_memory_shard *s = &kv->shards[i];
        pthread_mutex_init(&s->lock, NULL);
        s->nbuckets = KVM_MIN_BUCKETS;
        s->buckets = dk_calloc(s->nbuckets, sizeof(*s->buckets));
    }
    *ret_kv = kv;
    return DK_OK;
}

DK_MUSTCHECK static dk_status kv_memory_get(dk_kv *kv, dk_arena *arena, const char *key,
                                            char **ret_val, size_t *ret_len)
{
    if (!kv || !arena || !key || !ret_val || !ret_len)
        return DK_E_INTERNAL;
    struct kv_memory_key k;
    kv_memory_key_init(&k, kv, key);
    struct kv_memory_shard *s = kv_memory_shard_of(kv, k.hash);
    char *val = NULL;
    size_t len = 0;
    pthread_mutex_lock(&s->lock);
    struct kv_memory_entry **link = kv_memory_find(s, &k, dk_mono_ms());
    if (link) {
        len = (*link)->val_len;
        val = dk_arena_alloc(arena, len + 1); /* zeroed: the NUL is there already */
        if (len)
            memcpy(val, (*link)->val, len);
    }
    pthread_mutex_unlock(&s->lock);
    kv_memory_key_release(&k);
    *ret_val = val;
    *ret_len = len;
    return DK_OK;
}

DK_MUSTCHECK static dk_status kv_memory_set(dk_kv *kv, const char *key, const char *val, size_t len,
                                            int64_t ttl_ms)
{
    if (!kv || !key || (!val && len))
        return DK_E_INTERNAL;
    struct kv_memory_key k;
    kv_memory_key_init(&k, kv, key);
    struct kv_memory_shard *s = kv_memory_shard_of(kv, k.hash);
    char *copy = kv_memory_val_dup(val, len); /* outside the lock */
    pthread_mutex_lock(&s->lock);
    int64_t now = dk_mono_ms();
    int64_t expires = kv_memory_deadline(now, ttl_ms);
    struct kv_memory_entry **link = kv_memory_find(s, &k, now);
    if (link) {
        struct kv_memory_entry *e = *link;
        char *old = e->val;
        e->val = copy;
        e->val_len = len;
        e->expires_ms = expires;
        copy = old; /* freed below, outside the lock */
    } else {
        kv_memory_insert(s, &k, copy, len, expires, now);
        copy = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    dk_free(copy);
    kv_memory_key_release(&k);
    return DK_OK;
}

DK_MUSTCHECK static dk_status kv_memory_set_nx(dk_kv *kv, const char *key, const char *val,
                                               size_t len, int64_t ttl_ms, bool *ret_set)
{
    if (!kv || !key || (!val && len) || !ret_set)
        return DK_E_INTERNAL;
    struct kv_memory_key k;
    kv_memory_key_init(&k, kv, key);
    struct kv_memory_shard *s = kv_memory_shard_of(kv, k.hash);
    char *copy = kv_memory_val_dup(val, len); /* outside the lock */
    pthread_mutex_lock(&s->lock);
    int64_t now = dk_mono_ms();
    bool set = kv_memory_find(s, &k, now) == NULL;
    if (set) {
        kv_memory_insert(s, &k, copy, len, kv_memory_deadline(now, ttl_ms), now);
        copy = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    dk_free(copy);
    kv_memory_key_release(&k);
    *ret_set = set;
    return DK_OK;
}

DK_MUSTCHECK static dk_status kv_memory_expire(dk_kv *kv, const char *key, int64_t ttl_ms,
                                               bool *ret_found)
{
    if (!kv || !key || !ret_found)
        return DK_E_INTERNAL;
    struct kv_memory_key k;
    kv_memory_key_init(&k, kv, key);
    struct kv_memory_shard *s = kv_memory_shard_of(kv, k.hash);
    pthread_mutex_lock(&s->lock);
    int64_t now = dk_mono_ms();
    struct kv_memory_entry **link = kv_memory_find(s, &k, now);
    if (link)
        (*link)->expires_ms = kv_memory_deadline(now, ttl_ms);
    pthread_mutex_unlock(&s->lock);
    kv_memory_key_release(&k);
    *ret_found = link != NULL;
    return DK_OK;
}

/* Both shards locked in address order (one lock when they are the same shard). */
DK_MUSTCHECK static dk_status kv_memory_rename(dk_kv *kv, const char *from, const char *to)
{
    if (!kv || !from || !to)
        return DK_E_INTERNAL;
    struct kv_memory_key kf, kt;
    kv_memory_key_init(&kf, kv, from);
    kv_memory_key_init(&kt, kv, to);
    struct kv_memory_shard *sf = kv_memory_shard_of(kv, kf.hash),
                           *st = kv_memory_shard_of(kv, kt.hash);
    struct kv_memory_shard *first = sf < st ? sf : st, *second = sf < st ? st : sf;
    pthread_mutex_lock(&first->lock);
    if (second != first)
        pthread_mutex_lock(&second->lock);
    int64_t now = dk_mono_ms();
    struct kv_memory_entry *moved = NULL, *replaced = NULL;
    struct kv_memory_entry **link = kv_memory_find(sf, &kf, now);
    if (link) {
        moved = *link;
        *link = moved->next;
        sf->count--;
        struct kv_memory_entry **old = kv_memory_find(st, &kt, now);
        if (old) {
            replaced = *old;
            *old = replaced->next;
            st->count--;
        }
        kv_memory_insert(st, &kt, moved->val, moved->val_len, moved->expires_ms, now);
        moved->val = NULL;
    }
    if (second != first)
        pthread_mutex_unlock(&second->lock);
    pthread_mutex_unlock(&first->lock);
    if (moved)
        kv_memory_entry_free(moved);
    if (replaced)
        kv_memory_entry_free(replaced);
    kv_memory_key_release(&kf);
    kv_memory_key_release(&kt);
    return moved ? DK_OK : DK_E_NOT_FOUND;
}

DK_MUSTCHECK static dk_status kv_memory_del(dk_kv *kv, const char *key)
{
    if (!kv || !key)
        return DK_E_INTERNAL;
    struct kv_memory_key k;
    kv_memory_key_init(&k, kv, key);
    struct kv_memory_shard *s = kv_memory_shard_of(kv, k.hash);
    struct kv_memory_entry *gone = NULL;
    pthread_mutex_lock(&s->lock);
    struct kv_memory_entry **link = kv_memory_find(s, &k, dk_mono_ms());
    if (link) {
        gone = *link;
        *link = gone->next;
        s->count--;
    }
    pthread_mutex_unlock(&s->lock);
    if (gone)
        kv_memory_entry_free(gone);
    kv_memory_key_release(&k);
    return DK_OK;
}

DK_MUSTCHECK static dk_status kv_memory_exists(dk_kv *kv, const char *key, bool *ret_exists)
{
    if (!kv || !key || !ret_exists)
        return DK_E_INTERNAL;
    struct kv_memory_key k;
    kv_memory_key_init(&k, kv, key);
    struct kv_memory_shard *s = kv_memory_shard_of(kv, k.hash);
    pthread_mutex_lock(&s->lock);
    bool found = kv_memory_find(s, &k, dk_mono_ms()) != NULL;
    pthread_mutex_unlock(&s->lock);
    kv_memory_key_release(&k);
    *ret_exists = found;
    return DK_OK;
}

/* Like Redis INCR: the value must hold a decimal int64 and the result must not overflow. */
DK_MUSTCHECK static dk_status kv_memory_incr_window(dk_kv *kv, const char *key, int64_t window_ms,
                                                    int64_t *ret_count, int64_t *ret_ttl_ms)
{
    if (!kv || !key || !ret_count || !ret_ttl_ms || window_ms <= 0)
        return DK_E_INTERNAL;
    struct kv_memory_key k;
    kv_memory_key_init(&k, kv, key);
    struct kv_memory_shard *s = kv_memory_shard_of(kv, k.hash);
    dk_status st = DK_OK;
    int64_t count = 0, ttl = 0;
    char digits[KVM_INT_MAX_DIGITS + 1];
    pthread_mutex_lock(&s->lock);
    int64_t now = dk_mono_ms();
    struct kv_memory_entry **link = kv_memory_find(s, &k, now);
    if (!link) {
        count = 1;
        int64_t expires = kv_memory_deadline(now, window_ms);
        ttl = expires - now;
        kv_memory_insert(s, &k, kv_memory_val_dup("1", 1), 1, expires, now);
    } else {
        struct kv_memory_entry *e = *link;
        int64_t cur;
        if (!dk_parse_i64n(e->val, e->val_len, INT64_MIN, INT64_MAX - 1, &cur)) {
            st = DK_E_INTERNAL; /* not an integer, or incrementing would overflow */
        } else {
            count = cur + 1;
            int n = snprintf(digits, sizeof digits, "%lld", (long long)count);
            if (e->val_len < (size_t)n)
                e->val = dk_realloc(e->val, (size_t)n + 1);
            memcpy(e->val, digits, (size_t)n + 1);
            e->val_len = (size_t)n;
            if (e->expires_ms == 0) /* a counter set without expiry: start the window now */
                e->expires_ms = kv_memory_deadline(now, window_ms);
            ttl = e->expires_ms - now;
        }
    }
    pthread_mutex_unlock(&s->lock);
    kv_memory_key_release(&k);
    if (st != DK_OK)
        return st;
    *ret_count = count;
    *ret_ttl_ms = ttl;
    return DK_OK;
}

DK_MUSTCHECK static dk_status kv_memory_ping(dk_kv *kv, int timeout_ms)
{
    (void)kv;
    (void)timeout_ms;
    return DK_OK;
}

DK_MUSTCHECK static dk_status kv_memory_publish(dk_kv *kv, const char *channel, const char *msg,
                                                size_t len)
{
    if (!kv || !channel || (!msg && len))
        return DK_E_INTERNAL;
    char *copy = kv_memory_val_dup(msg, len); /* NUL-terminated, as the port promises */
    pthread_mutex_lock(&kv->subs_lock);
    for (dk_kv_sub *sub = kv->subs; sub; sub = sub->next)
        if (strcmp(sub->channel, channel) == 0)
            sub->on_message(sub->ctx, copy, len);
    pthread_mutex_unlock(&kv->subs_lock);
    dk_free(copy);
    return DK_OK;
}

DK_MUSTCHECK static dk_status kv_memory_subscribe(dk_kv *kv, const char *channel,
                                                  dk_kv_on_message on_message,
                                                  dk_kv_on_state on_state, void *ctx,
                                                  dk_kv_sub **ret_sub)
{
    if (!kv || !channel || !on_message || !on_state || !ret_sub)
        return DK_E_INTERNAL;
    dk_kv_sub *sub = DK_NEW(dk_kv_sub);
    sub->channel = dk_strdup(channel);
    sub->on_message = on_message;
    sub->on_state = on_state;
    sub->ctx = ctx;
    pthread_mutex_lock(&kv->subs_lock);
    sub->next = kv->subs;
    kv->subs = sub;
    on_state(ctx, true); /* before any message can reach it */
    pthread_mutex_unlock(&kv->subs_lock);
    *ret_sub = sub;
    return DK_OK;
}

static void kv_memory_unsubscribe(dk_kv *kv, dk_kv_sub *sub)
{
    if (!kv || !sub)
        return;
    pthread_mutex_lock(&kv->subs_lock);
    dk_kv_sub **link = &kv->subs;
    while (*link && *link != sub)
        link = &(*link)->next;
    if (*link)
        *link = sub->next;
    pthread_mutex_unlock(&kv->subs_lock);
    dk_free(sub->channel);
    dk_free(sub);
}

/* For tests (declared there, not in a header): entries held, expired or not, in all shards. */
size_t dk_kv_memory_entries(dk_kv *kv);
size_t dk_kv_memory_entries(dk_kv *kv)
{
    size_t n = 0;
    for (size_t i = 0; i < KVM_SHARDS; i++) {
        pthread_mutex_lock(&kv->shards[i].lock);
        n += kv->shards[i].count;
        pthread_mutex_unlock(&kv->shards[i].lock);
    }
    return n;
}

const struct dk_kv_ops dk_kv_memory_ops = {
    .name = "memory",
    .open = kv_memory_open,
    .close = kv_memory_close,
    .get = kv_memory_get,
    .set = kv_memory_set,
    .set_nx = kv_memory_set_nx,
    .expire = kv_memory_expire,
    .rename = kv_memory_rename,
    .del = kv_memory_del,
    .exists = kv_memory_exists,
    .incr_window = kv_memory_incr_window,
    .ping = kv_memory_ping,
    .publish = kv_memory_publish,
    .subscribe = kv_memory_subscribe,
    .unsubscribe = kv_memory_unsubscribe,
};
