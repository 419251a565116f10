/* kv_redis.c — the key-value port over Redis (hiredis 0.14, blocking API).
 * A fixed pool of pool_size connections, created on demand, guarded by a mutex and a condition
 * variable. Connect and every read/write are bounded by timeout_ms, and a call that finds the pool
 * busy waits at most timeout_ms, so a dead or stalled Redis costs a caller a bounded wait and
 * DK_E_UNAVAILABLE, never a hang. A connection that saw an I/O error is freed and its slot
 * reconnects on the next call; an idle connection the server has closed (restart, CLIENT KILL,
 * idle timeout) is noticed before use and replaced, so the store recovers without a restart.
 * The URL's password is kept only for AUTH and wiped on close; it never appears in a status.
 * URL parsing, connecting (AUTH, SELECT) and the SIGPIPE guard are shared: adapters/redis_url.h. */
#include "ports/kv.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "adapters/redis_url.h"
#include "core/alloc.h"
#include "core/arena.h"
#include "core/timeutil.h"
#include "core/banned.h"

#define KVR_DEFAULT_POOL       4
#define KVR_MAX_POOL           1024
#define KVR_DEFAULT_TIMEOUT_MS 1000
#define KVR_KEY_INLINE         192

/* INCR, and start the window when the counter is new or lost its expiry (a PEXPIRE that never
 * ran, or a key SET without a TTL). Returns {count, ms left}. */
static const char kvr_incr_window_lua[] = "local c = redis.call('INCR', KEYS[1])\n"
                                          "local t = redis.call('PTTL', KEYS[1])\n"
                                          "if c == 1 or t < 0 then\n"
                                          "  redis.call('PEXPIRE', KEYS[1], ARGV[1])\n"
                                          "  t = tonumber(ARGV[1])\n"
                                          "end\n"
                                          "return {c, t}\n";

struct dk_kv {
    dk_redis_url url;
    char *prefix;
    size_t prefix_len;
    int timeout_ms;

    pthread_mutex_t lock;
    pthread_cond_t cond; /* signalled when a connection or a slot is handed back */
    redisContext **idle; /* stack of connected, unused contexts */
    int nidle;
    int open; /* contexts checked out, idle, or being connected */
    int size;
};

/* --- connections ----------------------------------------------------------------------------- */

static void kvr_deadline(struct timespec *ts, int timeout_ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += timeout_ms / 1000;
    ts->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* A connection for one exchange: an idle one (reused) or a new one in a free slot; waits up
 * to timeout_ms for a slot when all pool_size are in use. */
static dk_status kvr_acquire(dk_kv *kv, int timeout_ms, redisContext **ret, bool *ret_reused)
{
    struct timespec deadline;
    bool have_deadline = false;
    redisContext *c = NULL;
    pthread_mutex_lock(&kv->lock);
    for (;;) {
        if (kv->nidle > 0) {
            c = kv->idle[--kv->nidle];
            break;
        }
        if (kv->open < kv->size) {
            kv->open++;
            break;
        }
        if (!have_deadline) {
            kvr_deadline(&deadline, timeout_ms);
            have_deadline = true;
        }
        int rc = pthread_cond_timedwait(&kv->cond, &kv->lock, &deadline);
        if (rc == ETIMEDOUT && kv->nidle == 0 && kv->open >= kv->size) {
            pthread_mutex_unlock(&kv->lock);
            return DK_E_UNAVAILABLE;
        }
    }
    pthread_mutex_unlock(&kv->lock);

    if (c) {
        if (dk_redis_idle_alive(c)) {
            *ret = c;
            *ret_reused = true;
            return DK_OK;
        }
        redisFree(c); /* closed by the server while idle: reconnect in the same slot */
    }
    dk_status st = dk_redis_connect(&kv->url, timeout_ms, &c);
    if (st != DK_OK) {
        pthread_mutex_lock(&kv->lock);
        kv->open--;
        pthread_cond_signal(&kv->cond);
        pthread_mutex_unlock(&kv->lock);
        return st;
    }
    *ret = c;
    *ret_reused = false;
    return DK_OK;
}

/* Hands a connection back; a broken one is freed and its slot reopens on demand. */
static void kvr_release(dk_kv *kv, redisContext *c, bool keep)
{
    if (!keep || c->err) {
        redisFree(c);
        c = NULL;
    }
    pthread_mutex_lock(&kv->lock);
    if (c)
        kv->idle[kv->nidle++] = c;
    else
        kv->open--;
    pthread_cond_signal(&kv->cond);
    pthread_mutex_unlock(&kv->lock);
}

/* One command, one reply (never an error reply: those become a status). An idempotent command
 * that failed on a reused connection is tried once more on a fresh one: the server most likely
 * closed that connection before reading the command. */
static dk_status kvr_command(dk_kv *kv, int timeout_ms, bool idempotent, int argc,
                             const char **argv, const size_t *argvlen, redisReply **ret_reply)
{
    for (int attempt = 0;; attempt++) {
        redisContext *c;
        bool reused;
        dk_status st = kvr_acquire(kv, timeout_ms, &c, &reused);
        if (st != DK_OK)
            return st;
        bool custom_timeout = timeout_ms != kv->timeout_ms;
        if (custom_timeout && !dk_redis_set_timeout(c, timeout_ms)) {
            kvr_release(kv, c, false);
            return DK_E_UNAVAILABLE;
        }
        dk_redis_sigpipe sp;
        dk_redis_sigpipe_block(&sp);
        redisReply *r = redisCommandArgv(c, argc, argv, argvlen);
        dk_redis_sigpipe_restore(&sp, c->err != 0);
        if (!r || c->err) {
            if (r)
                freeReplyObject(r);
            kvr_release(kv, c, false);
            if (reused && idempotent && attempt == 0)
                continue;
            return DK_E_UNAVAILABLE;
        }
        bool keep = true;
        if (custom_timeout && !dk_redis_set_timeout(c, kv->timeout_ms))
            keep = false;
        if (r->type == REDIS_REPLY_ERROR) {
            st = dk_redis_error_status(r);
            if (r->str && strncmp(r->str, "READONLY", 8) == 0)
                keep = false; /* a replica after failover: reconnect to find the new primary */
            freeReplyObject(r);
            kvr_release(kv, c, keep);
            return st;
        }
        kvr_release(kv, c, keep);
        *ret_reply = r;
        return DK_OK;
    }
}

/* The prefixed key of one call: on the stack when short. */
struct kvr_key {
    char *p;
    size_t len;
    char buf[KVR_KEY_INLINE];
};

static void kvr_key_init(struct kvr_key *k, const dk_kv *kv, const char *key)
{
    size_t klen = strlen(key);
    k->len = kv->prefix_len + klen;
    k->p = k->len < sizeof k->buf ? k->buf : dk_malloc(k->len + 1);
    if (kv->prefix_len)
        memcpy(k->p, kv->prefix, kv->prefix_len);
    memcpy(k->p + kv->prefix_len, key, klen + 1);
}

static void kvr_key_release(struct kvr_key *k)
{
    if (k->p != k->buf)
        dk_free(k->p);
    k->p = NULL;
}

/* Runs CMD KEY [args...] with the prefixed key; argv[1] is replaced by it. */
static dk_status kvr_key_command(dk_kv *kv, bool idempotent, const char *key, int argc,
                                 const char **argv, size_t *argvlen, redisReply **ret_reply)
{
    struct kvr_key k;
    kvr_key_init(&k, kv, key);
    argv[1] = k.p;
    argvlen[1] = k.len;
    dk_status st = kvr_command(kv, kv->timeout_ms, idempotent, argc, argv, argvlen, ret_reply);
    kvr_key_release(&k);
    return st;
}

/* --- the port -------------------------------------------------------------------------------- */

static void kvr_close(dk_kv *kv)
{
    if (!kv)
        return;
    for (int i = 0; i < kv->nidle; i++)
        redisFree(kv->idle[i]);
    dk_free(kv->idle);
    pthread_cond_destroy(&kv->cond);
    pthread_mutex_destroy(&kv->lock);
    dk_redis_url_release(&kv->url);
    dk_free(kv->prefix);
    dk_free(kv);
}

DK_MUSTCHECK static dk_status kvr_open(const dk_kv_options *opt, dk_kv **ret_kv)
{
    if (!opt || !ret_kv)
        return DK_E_INTERNAL;
    dk_kv *kv = DK_NEW(dk_kv);
    pthread_mutex_init(&kv->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&kv->cond, &ca);
    pthread_condattr_destroy(&ca);

    const char *prefix = opt->key_prefix ? opt->key_prefix : "";
    kv->prefix = dk_strdup(prefix);
    kv->prefix_len = strlen(prefix);
    kv->timeout_ms = opt->timeout_ms > 0 ? opt->timeout_ms : KVR_DEFAULT_TIMEOUT_MS;
    kv->size = opt->pool_size > 0 ? opt->pool_size : KVR_DEFAULT_POOL;
    if (kv->size > KVR_MAX_POOL)
        kv->size = KVR_MAX_POOL;
    kv->idle = dk_calloc((size_t)kv->size, sizeof(*kv->idle));

    dk_status st = dk_redis_url_parse(opt->url, &kv->url);
    if (st != DK_OK) {
        kvr_close(kv);
        return st;
    }
    *ret_kv = kv; /* connections are made by the first calls that need them */
    return DK_OK;
}

DK_MUSTCHECK static dk_status kvr_get(dk_kv *kv, dk_arena *arena, const char *key, char **ret_val,
                                      size_t *ret_len)
{
    if (!kv || !arena || !key || !ret_val || !ret_len)
        return DK_E_INTERNAL;
    const char *argv[2] = {"GET"};
    size_t argvlen[2] = {3};
    redisReply *r;
    dk_status st = kvr_key_command(kv, true, key, 2, argv, argvlen, &r);
    if (st != DK_OK)
        return st;
    if (r->type == REDIS_REPLY_NIL) {
        freeReplyObject(r);
        *ret_val = NULL;
        *ret_len = 0;
        return DK_OK;
    }
    if (r->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        return DK_E_INTERNAL;
    }
    /* hiredis NUL-terminates string replies: hand out the reply's own bytes. */
    dk_arena_defer(arena, freeReplyObject, r);
    *ret_val = r->str;
    *ret_len = r->len;
    return DK_OK;
}

DK_MUSTCHECK static dk_status kvr_set(dk_kv *kv, const char *key, const char *val, size_t len,
                                      int64_t ttl_ms)
{
    if (!kv || !key || (!val && len))
        return DK_E_INTERNAL;
    char ttl[24];
    const char *argv[5] = {"SET", NULL, val ? val : "", "PX", ttl};
    size_t argvlen[5] = {3, 0, len, 2, 0};
    int argc = 3;
    if (ttl_ms > 0) {
        argvlen[4] = (size_t)snprintf(ttl, sizeof ttl, "%lld", (long long)ttl_ms);
        argc = 5;
    }
    redisReply *r;
    dk_status st = kvr_key_command(kv, true, key, argc, argv, argvlen, &r);
    if (st != DK_OK)
        return st;
    freeReplyObject(r);
    return DK_OK;
}

DK_MUSTCHECK static dk_status kvr_del(dk_kv *kv, const char *key)
{
    if (!kv || !key)
        return DK_E_INTERNAL;
    const char *argv[2] = {"DEL"};
    size_t argvlen[2] = {3};
    redisReply *r;
    dk_status st = kvr_key_command(kv, true, key, 2, argv, argvlen, &r);
    if (st != DK_OK)
        return st;
    freeReplyObject(r);
    return DK_OK;
}

DK_MUSTCHECK static dk_status kvr_exists(dk_kv *kv, const char *key, bool *ret_exists)
{
    if (!kv || !key || !ret_exists)
        return DK_E_INTERNAL;
    const char *argv[2] = {"EXISTS"};
    size_t argvlen[2] = {6};
    redisReply *r;
    dk_status st = kvr_key_command(kv, true, key, 2, argv, argvlen, &r);
    if (st != DK_OK)
        return st;
    bool ok = r->type == REDIS_REPLY_INTEGER;
    bool exists = ok && r->integer > 0;
    freeReplyObject(r);
    if (!ok)
        return DK_E_INTERNAL;
    *ret_exists = exists;
    return DK_OK;
}

DK_MUSTCHECK static dk_status kvr_incr_window(dk_kv *kv, const char *key, int64_t window_ms,
                                              int64_t *ret_count, int64_t *ret_ttl_ms)
{
    if (!kv || !key || !ret_count || !ret_ttl_ms || window_ms <= 0)
        return DK_E_INTERNAL;
    char window[24];
    int wn = snprintf(window, sizeof window, "%lld", (long long)window_ms);
    /* EVAL script 1 KEY window: argv[3] is the key, so build it here. */
    struct kvr_key k;
    kvr_key_init(&k, kv, key);
    const char *argv[5] = {"EVAL", kvr_incr_window_lua, "1", k.p, window};
    size_t argvlen[5] = {4, sizeof kvr_incr_window_lua - 1, 1, k.len, (size_t)wn};
    redisReply *r;
    /* Not idempotent: a lost reply is not retried, so one hit is never counted twice. */
    dk_status st = kvr_command(kv, kv->timeout_ms, false, 5, argv, argvlen, &r);
    kvr_key_release(&k);
    if (st != DK_OK)
        return st;
    bool ok = r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
              r->element[0]->type == REDIS_REPLY_INTEGER &&
              r->element[1]->type == REDIS_REPLY_INTEGER;
    int64_t count = ok ? (int64_t)r->element[0]->integer : 0;
    int64_t ttl = ok ? (int64_t)r->element[1]->integer : 0;
    freeReplyObject(r);
    if (!ok)
        return DK_E_INTERNAL;
    *ret_count = count;
    *ret_ttl_ms = ttl;
    return DK_OK;
}

DK_MUSTCHECK static dk_status kvr_ping(dk_kv *kv, int timeout_ms)
{
    if (!kv)
        return DK_E_INTERNAL;
    const char *argv[1] = {"PING"};
    size_t argvlen[1] = {4};
    redisReply *r;
    dk_status st =
        kvr_command(kv, timeout_ms > 0 ? timeout_ms : kv->timeout_ms, true, 1, argv, argvlen, &r);
    if (st != DK_OK)
        return st;
    bool ok = r->type == REDIS_REPLY_STATUS && r->str && strcmp(r->str, "PONG") == 0;
    freeReplyObject(r);
    return ok ? DK_OK : DK_E_INTERNAL;
}

const struct dk_kv_ops dk_kv_redis_ops = {
    .name = "redis",
    .open = kvr_open,
    .close = kvr_close,
    .get = kvr_get,
    .set = kvr_set,
    .del = kvr_del,
    .exists = kvr_exists,
    .incr_window = kvr_incr_window,
    .ping = kvr_ping,
};
