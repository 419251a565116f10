/* kv_redis.c — the key-value port over Redis, plain or TLS (connections: redis_conn.c).
 * A fixed pool of pool_size connections, created on demand, guarded by a mutex and a condition
 * variable. Connect and every read/write are bounded by timeout_ms, and a call that finds the pool
 * busy waits at most timeout_ms, so a dead or stalled Redis costs a caller a bounded wait and
 * DK_E_UNAVAILABLE, never a hang. A connection that saw an I/O error is freed and its slot
 * reconnects on the next call; an idle connection the server has closed (restart, CLIENT KILL,
 * idle timeout) is noticed before use and replaced, so the store recovers without a restart.
 * The URL's password is kept only for AUTH and wiped on close; it never appears in a status.
 * URL parsing, connecting (AUTH, SELECT) and the SIGPIPE guard are shared: adapters/redis_url.h.
 *
 * PUBLISH goes through the pool like any command. Each subscription runs a thread with a
 * connection of its own: SUBSCRIBE, then poll(2) on the socket until something arrives or the
 * next PING is due (unsubscribe and close shut the socket down to wake it, so they return
 * promptly; an idle subscription wakes only for its PINGs: with several subscriptions per
 * process, waking every 100 ms was a real share of an idle process's CPU) and replies parsed
 * as they arrive. When the connection has been quiet for min(timeout_ms, 1 s) it sends
 * a PING, and a PING unanswered for timeout_ms counts as a lost connection, so a server that
 * vanished without closing the socket is noticed too. A lost connection is reported
 * (on_state(false)) and replaced at once; failed connects are retried with a backoff from
 * 100 ms to 2 s. */
#include "ports/kv.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "adapters/redis_url.h"
#include "core/alloc.h"
#include "core/arena.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "adapters/kv.h"
#include "core/banned.h"

#define KVR_DEFAULT_POOL       4
#define KVR_MAX_POOL           1024
#define KVR_DEFAULT_TIMEOUT_MS 1000
#define KVR_KEY_INLINE         192
#define KVR_SUB_PING_MAX_MS    1000
#define KVR_SUB_YOUNG_MS       1000 /* a connection lost sooner is not replaced at once */
#define KVR_BACKOFF_MIN_MS     100
#define KVR_BACKOFF_MAX_MS     2000

/* INCR, and start the window when the counter is new or lost its expiry (a PEXPIRE that never
 * ran, or a key SET without a TTL). Returns {count, ms left}. */
static const char kv_redis_incr_window_lua[] = "local c = redis.call('INCR', KEYS[1])\n"
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
    pthread_cond_t cond;  /* signalled when a connection or a slot is handed back */
    dk_redis_conn **idle; /* stack of connected, unused contexts */
    int nidle;
    int open; /* contexts checked out, idle, or being connected */
    int size;

    pthread_mutex_t subs_lock;
    dk_kv_sub *subs; /* running subscriptions, ended by close */
};

struct dk_kv_sub {
    dk_kv *kv;
    dk_kv_sub *next;
    char *channel; /* prefixed */
    size_t channel_len;
    dk_kv_on_message on_message;
    dk_kv_on_state on_state;
    void *ctx;
    pthread_t thread;
    atomic_bool stop;
    pthread_mutex_t run_lock; /* with run_cond: backoff sleeps that a stop request cuts short */
    pthread_cond_t run_cond;
    int wake_fd; /* under run_lock: the socket the thread waits on (-1: none), shut to stop it */
};

/* --- connections ----------------------------------------------------------------------------- */

static void kv_redis_deadline(struct timespec *ts, int timeout_ms)
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
static dk_status kv_redis_acquire(dk_kv *kv, int timeout_ms, dk_redis_conn **ret, bool *ret_reused)
{
    struct timespec deadline;
    bool have_deadline = false;
    dk_redis_conn *c = NULL;
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
            kv_redis_deadline(&deadline, timeout_ms);
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
        dk_redis_conn_free(c); /* closed by the server while idle: reconnect in the same slot */
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
static void kv_redis_release(dk_kv *kv, dk_redis_conn *c, bool keep)
{
    if (!keep || dk_redis_conn_broken(c)) {
        dk_redis_conn_free(c);
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
static dk_status kv_redis_command(dk_kv *kv, int timeout_ms, bool idempotent, int argc,
                                  const char **argv, const size_t *argvlen, redisReply **ret_reply)
{
    for (int attempt = 0;; attempt++) {
        dk_redis_conn *c;
        bool reused;
        dk_status st = kv_redis_acquire(kv, timeout_ms, &c, &reused);
        if (st != DK_OK)
            return st;
        bool custom_timeout = timeout_ms != kv->timeout_ms;
        if (custom_timeout && !dk_redis_set_timeout(c, timeout_ms)) {
            kv_redis_release(kv, c, false);
            return DK_E_UNAVAILABLE;
        }
        dk_redis_sigpipe sp;
        dk_redis_sigpipe_block(&sp);
        redisReply *r = dk_redis_command(c, argc, argv, argvlen);
        dk_redis_sigpipe_restore(&sp, r == NULL);
        if (!r) {
            kv_redis_release(kv, c, false);
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
            kv_redis_release(kv, c, keep);
            return st;
        }
        kv_redis_release(kv, c, keep);
        *ret_reply = r;
        return DK_OK;
    }
}

/* The prefixed key of one call: on the stack when short. */
struct kv_redis_key {
    char *p;
    size_t len;
    char buf[KVR_KEY_INLINE];
};

static void kv_redis_key_init(struct kv_redis_key *k, const dk_kv *kv, const char *key)
{
    size_t klen = strlen(key);
    k->len = kv->prefix_len + klen;
    k->p = k->len < sizeof k->buf ? k->buf : dk_malloc(k->len + 1);
    if (kv->prefix_len)
        memcpy(k->p, kv->prefix, kv->prefix_len);
    memcpy(k->p + kv->prefix_len, key, klen + 1);
}

static void kv_redis_key_release(struct kv_redis_key *k)
{
    if (k->p != k->buf)
        dk_free(k->p);
    k->p = NULL;
}

/* Runs CMD KEY [args...] with the prefixed key; argv[1] is replaced by it. */
static dk_status kv_redis_key_command(dk_kv *kv, bool idempotent, const char *key, int argc,
                                      const char **argv, size_t *argvlen, redisReply **ret_reply)
{
    struct kv_redis_key k;
    kv_redis_key_init(&k, kv, key);
    argv[1] = k.p;
    argvlen[1] = k.len;
    dk_status st = kv_redis_command(kv, kv->timeout_ms, idempotent, argc, argv, argvlen, ret_reply);
    kv_redis_key_release(&k);
    return st;
}

/* --- publish/subscribe ----------------------------------------------------------------------- */

/* Sleeps up to ms, or less when the subscription is being ended. */
static void kv_redis_sub_pause(dk_kv_sub *sub, int ms)
{
    struct timespec deadline;
    kv_redis_deadline(&deadline, ms);
    pthread_mutex_lock(&sub->run_lock);
    while (!atomic_load(&sub->stop) &&
           pthread_cond_timedwait(&sub->run_cond, &sub->run_lock, &deadline) != ETIMEDOUT) {
    }
    pthread_mutex_unlock(&sub->run_lock);
}

/* A new connection, subscribed: SUBSCRIBE sent and its confirmation read. */
static dk_status kv_redis_sub_connect(dk_kv_sub *sub, dk_redis_conn **ret)
{
    dk_redis_conn *c;
    dk_status st = dk_redis_connect(&sub->kv->url, sub->kv->timeout_ms, &c);
    if (st != DK_OK)
        return st;
    const char *argv[2] = {"SUBSCRIBE", sub->channel};
    size_t argvlen[2] = {9, sub->channel_len};
    redisReply *r = dk_redis_command(c, 2, argv, argvlen);
    if (!r)
        st = DK_E_UNAVAILABLE;
    else if (r->type == REDIS_REPLY_ERROR)
        st = dk_redis_error_status(r);
    else if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
             r->element[0]->type != REDIS_REPLY_STRING ||
             strcmp(r->element[0]->str, "subscribe") != 0)
        st = DK_E_INTERNAL;
    if (r)
        freeReplyObject(r);
    if (st != DK_OK) {
        dk_redis_conn_free(c);
        return st;
    }
    *ret = c;
    return DK_OK;
}

/* One reply read on the subscribed connection: a message is delivered; the answer to PING and
 * a repeated confirmation are accepted; anything else means the connection is not what we
 * think it is (false). */
static bool kv_redis_sub_reply(dk_kv_sub *sub, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return false;
    const char *kind = r->element[0]->str;
    if (strcmp(kind, "message") == 0) {
        if (r->elements != 3 || r->element[1]->type != REDIS_REPLY_STRING ||
            r->element[2]->type != REDIS_REPLY_STRING)
            return false;
        const redisReply *ch = r->element[1], *msg = r->element[2];
        if (ch->len == sub->channel_len && memcmp(ch->str, sub->channel, ch->len) == 0)
            sub->on_message(sub->ctx, msg->str, msg->len);
        return true;
    }
    return strcmp(kind, "pong") == 0 || strcmp(kind, "subscribe") == 0;
}

/* Sends PING on the subscribed connection (its answer arrives as a "pong" message). */
static bool kv_redis_sub_ping(dk_redis_conn *c)
{
    const char *argv[1] = {"PING"};
    size_t argvlen[1] = {4};
    return dk_redis_send(c, 1, argv, argvlen);
}

struct kv_redis_sub_conn {
    dk_redis_conn *c;
    int64_t last_rx; /* when the connection last gave a reply */
    int64_t ping_at; /* when the PING still unanswered was sent; 0: none */
};

/* Delivers what has arrived, pings when quiet, and waits for more until the next PING (or the
 * unanswered one's timeout) is due. false when the connection is lost (or shut by a stop). */
static bool kv_redis_sub_step(dk_kv_sub *sub, struct kv_redis_sub_conn *sc, int ping_every)
{
    dk_redis_conn *c = sc->c;
    for (;;) {
        redisReply *reply = NULL;
        if (!dk_redis_get_reply(c, &reply))
            return false;
        if (!reply)
            break;
        bool ok = kv_redis_sub_reply(sub, reply);
        freeReplyObject(reply);
        if (!ok)
            return false;
        sc->last_rx = dk_mono_ms();
        sc->ping_at = 0;
    }
    int64_t now = dk_mono_ms();
    if (sc->ping_at && now - sc->ping_at >= sub->kv->timeout_ms)
        return false; /* the server has stopped answering */
    if (!sc->ping_at && now - sc->last_rx >= ping_every) {
        if (!kv_redis_sub_ping(c))
            return false;
        sc->ping_at = now;
    }
    int64_t until = sc->ping_at ? sc->ping_at + sub->kv->timeout_ms : sc->last_rx + ping_every;
    int64_t wait = until - dk_mono_ms();
    int n = dk_redis_wait_readable(c, wait < 1 ? 1 : (int)wait);
    if (n < 0)
        return false;
    if (n > 0 && !dk_redis_read_some(c))
        return false; /* closed (EOF), reset, or a read error */
    return true;
}

static void *kv_redis_sub_run(void *arg)
{
    dk_kv_sub *sub = arg;
    /* writes to a vanished server fail with EPIPE instead of killing the process */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    int timeout = sub->kv->timeout_ms;
    int ping_every = timeout < KVR_SUB_PING_MAX_MS ? timeout : KVR_SUB_PING_MAX_MS;
    struct kv_redis_sub_conn sc = {0};
    int backoff = KVR_BACKOFF_MIN_MS;
    int64_t connected_at = 0;
    bool down = false; /* a failure has been logged */
    while (!atomic_load(&sub->stop)) {
        if (!sc.c) {
            dk_status st = kv_redis_sub_connect(sub, &sc.c);
            if (st != DK_OK) {
                sc.c = NULL;
                if (!down)
                    dk_log_warn("kv: cannot subscribe to Redis (%s); retrying",
                                dk_status_title(st));
                down = true;
                kv_redis_sub_pause(sub, backoff);
                backoff = backoff * 2 > KVR_BACKOFF_MAX_MS ? KVR_BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
            pthread_mutex_lock(&sub->run_lock);
            bool stopping = atomic_load(&sub->stop);
            if (!stopping)
                sub->wake_fd = dk_redis_conn_fd(sc.c);
            pthread_mutex_unlock(&sub->run_lock);
            if (stopping)
                break;
            if (down)
                dk_log_info("kv: subscribed to Redis again");
            down = false;
            connected_at = sc.last_rx = dk_mono_ms();
            sc.ping_at = 0;
            sub->on_state(sub->ctx, true);
        }
        if (kv_redis_sub_step(sub, &sc, ping_every))
            continue;
        pthread_mutex_lock(&sub->run_lock);
        sub->wake_fd = -1; /* before the socket is closed (its number may be reused) */
        pthread_mutex_unlock(&sub->run_lock);
        dk_redis_conn_free(sc.c);
        sc.c = NULL;
        if (atomic_load(&sub->stop))
            break; /* being ended: no more callbacks */
        sub->on_state(sub->ctx, false);
        dk_log_warn("kv: lost the Redis subscription; subscribing again");
        down = true;
        /* resubscribe at once, unless connections keep dying young */
        if (dk_mono_ms() - connected_at < KVR_SUB_YOUNG_MS) {
            kv_redis_sub_pause(sub, backoff);
            backoff = backoff * 2 > KVR_BACKOFF_MAX_MS ? KVR_BACKOFF_MAX_MS : backoff * 2;
        } else {
            backoff = KVR_BACKOFF_MIN_MS;
        }
    }
    pthread_mutex_lock(&sub->run_lock);
    sub->wake_fd = -1; /* a stop may be shutting it down right now: wait for that */
    pthread_mutex_unlock(&sub->run_lock);
    if (sc.c)
        dk_redis_conn_free(sc.c);
    return NULL;
}

static void kv_redis_sub_free(dk_kv_sub *sub)
{
    pthread_cond_destroy(&sub->run_cond);
    pthread_mutex_destroy(&sub->run_lock);
    dk_free(sub->channel);
    dk_free(sub);
}

/* Stops the thread, waits for it, frees the subscription. */
static void kv_redis_sub_end(dk_kv_sub *sub)
{
    pthread_mutex_lock(&sub->run_lock);
    atomic_store(&sub->stop, true);
    pthread_cond_broadcast(&sub->run_cond);
    if (sub->wake_fd >= 0)
        (void)shutdown(sub->wake_fd, SHUT_RDWR); /* ends the thread's wait on it */
    pthread_mutex_unlock(&sub->run_lock);
    pthread_join(sub->thread, NULL);
    kv_redis_sub_free(sub);
}

/* --- the port -------------------------------------------------------------------------------- */

static void kv_redis_close(dk_kv *kv)
{
    if (!kv)
        return;
    pthread_mutex_lock(&kv->subs_lock);
    dk_kv_sub *subs = kv->subs;
    kv->subs = NULL;
    pthread_mutex_unlock(&kv->subs_lock);
    while (subs) {
        dk_kv_sub *next = subs->next;
        kv_redis_sub_end(subs);
        subs = next;
    }
    for (int i = 0; i < kv->nidle; i++)
        dk_redis_conn_free(kv->idle[i]);
    dk_free(kv->idle);
    pthread_cond_destroy(&kv->cond);
    pthread_mutex_destroy(&kv->lock);
    pthread_mutex_destroy(&kv->subs_lock);
    dk_redis_url_release(&kv->url);
    dk_free(kv->prefix);
    dk_free(kv);
}

DK_MUSTCHECK static dk_status kv_redis_open(const dk_kv_options *opt, dk_kv **ret_kv)
{
    if (!opt || !ret_kv)
        return DK_E_INTERNAL;
    dk_kv *kv = DK_NEW(dk_kv);
    pthread_mutex_init(&kv->lock, NULL);
    pthread_mutex_init(&kv->subs_lock, NULL);
    dk_cond_init_monotonic(&kv->cond);

    const char *prefix = opt->key_prefix ? opt->key_prefix : "";
    kv->prefix = dk_strdup(prefix);
    kv->prefix_len = strlen(prefix);
    kv->timeout_ms = opt->timeout_ms > 0 ? opt->timeout_ms : KVR_DEFAULT_TIMEOUT_MS;
    kv->size = opt->pool_size > 0 ? opt->pool_size : KVR_DEFAULT_POOL;
    if (kv->size > KVR_MAX_POOL)
        kv->size = KVR_MAX_POOL;
    kv->idle = dk_calloc((size_t)kv->size, sizeof(*kv->idle));

    dk_status st = dk_redis_url_parse(opt->url, &kv->url);
    if (st == DK_OK)
        st = dk_redis_url_tls(&kv->url, opt->tls_ca_file);
    if (st != DK_OK) {
        kv_redis_close(kv);
        return st;
    }
    *ret_kv = kv; /* connections are made by the first calls that need them */
    return DK_OK;
}

DK_MUSTCHECK static dk_status kv_redis_get(dk_kv *kv, dk_arena *arena, const char *key,
                                           char **ret_val, size_t *ret_len)
{
    if (!kv || !arena || !key || !ret_val || !ret_len)
        return DK_E_INTERNAL;
    const char *argv[2] = {"GET"};
    size_t argvlen[2] = {3};
    redisReply *r;
    dk_status st = kv_redis_key_command(kv, true, key, 2, argv, argvlen, &r);
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

DK_MUSTCHECK static dk_status kv_redis_set(dk_kv *kv, const char *key, const char *val, size_t len,
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
    dk_status st = kv_redis_key_command(kv, true, key, argc, argv, argvlen, &r);
    if (st != DK_OK)
        return st;
    freeReplyObject(r);
    return DK_OK;
}

DK_MUSTCHECK static dk_status kv_redis_del(dk_kv *kv, const char *key)
{
    if (!kv || !key)
        return DK_E_INTERNAL;
    const char *argv[2] = {"DEL"};
    size_t argvlen[2] = {3};
    redisReply *r;
    dk_status st = kv_redis_key_command(kv, true, key, 2, argv, argvlen, &r);
    if (st != DK_OK)
        return st;
    freeReplyObject(r);
    return DK_OK;
}

DK_MUSTCHECK static dk_status kv_redis_exists(dk_kv *kv, const char *key, bool *ret_exists)
{
    if (!kv || !key || !ret_exists)
        return DK_E_INTERNAL;
    const char *argv[2] = {"EXISTS"};
    size_t argvlen[2] = {6};
    redisReply *r;
    dk_status st = kv_redis_key_command(kv, true, key, 2, argv, argvlen, &r);
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

DK_MUSTCHECK static dk_status kv_redis_set_nx(dk_kv *kv, const char *key, const char *val,
                                              size_t len, int64_t ttl_ms, bool *ret_set)
{
    if (!kv || !key || (!val && len) || !ret_set)
        return DK_E_INTERNAL;
    char ttl[24];
    const char *argv[6] = {"SET", NULL, val ? val : "", "NX", "PX", ttl};
    size_t argvlen[6] = {3, 0, len, 2, 2, 0};
    int argc = 4;
    if (ttl_ms > 0) {
        argvlen[5] = (size_t)snprintf(ttl, sizeof ttl, "%lld", (long long)ttl_ms);
        argc = 6;
    }
    redisReply *r;
    /* Not retried: a lost reply to a SET NX that took effect would read as "already there". */
    dk_status st = kv_redis_key_command(kv, false, key, argc, argv, argvlen, &r);
    if (st != DK_OK)
        return st;
    bool ok = r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_NIL;
    bool set = r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    if (!ok)
        return DK_E_INTERNAL;
    *ret_set = set;
    return DK_OK;
}

DK_MUSTCHECK static dk_status kv_redis_expire(dk_kv *kv, const char *key, int64_t ttl_ms,
                                              bool *ret_found)
{
    if (!kv || !key || !ret_found)
        return DK_E_INTERNAL;
    char ttl[24];
    const char *argv[3] = {"PERSIST", NULL, ttl};
    size_t argvlen[3] = {7, 0, 0};
    int argc = 2;
    redisReply *r;
    if (ttl_ms > 0) {
        argv[0] = "PEXPIRE";
        argvlen[2] = (size_t)snprintf(ttl, sizeof ttl, "%lld", (long long)ttl_ms);
        argc = 3;
    } else {
        /* PERSIST answers 0 for a key without expiry too: ask whether it exists instead */
        bool exists = false;
        dk_status est = kv_redis_exists(kv, key, &exists);
        if (est != DK_OK)
            return est;
        if (!exists) {
            *ret_found = false;
            return DK_OK;
        }
    }
    dk_status st = kv_redis_key_command(kv, true, key, argc, argv, argvlen, &r);
    if (st != DK_OK)
        return st;
    bool ok = r->type == REDIS_REPLY_INTEGER;
    bool found = argc == 2 || (ok && r->integer > 0);
    freeReplyObject(r);
    if (!ok)
        return DK_E_INTERNAL;
    *ret_found = found;
    return DK_OK;
}

DK_MUSTCHECK static dk_status kv_redis_rename(dk_kv *kv, const char *from, const char *to)
{
    if (!kv || !from || !to)
        return DK_E_INTERNAL;
    struct kv_redis_key kf, kt;
    kv_redis_key_init(&kf, kv, from);
    kv_redis_key_init(&kt, kv, to);
    const char *argv[3] = {"RENAME", kf.p, kt.p};
    size_t argvlen[3] = {6, kf.len, kt.len};
    redisReply *r = NULL;
    /* Not retried: a RENAME whose reply was lost has moved the key, and a retry would say it
     * is missing. */
    dk_status st = kv_redis_command(kv, kv->timeout_ms, false, 3, argv, argvlen, &r);
    kv_redis_key_release(&kf);
    kv_redis_key_release(&kt);
    if (st == DK_E_INTERNAL)
        return DK_E_NOT_FOUND; /* ERR no such key: the only error RENAME gives on valid keys */
    if (st != DK_OK)
        return st;
    freeReplyObject(r);
    return DK_OK;
}

DK_MUSTCHECK static dk_status kv_redis_incr_window(dk_kv *kv, const char *key, int64_t window_ms,
                                                   int64_t *ret_count, int64_t *ret_ttl_ms)
{
    if (!kv || !key || !ret_count || !ret_ttl_ms || window_ms <= 0)
        return DK_E_INTERNAL;
    char window[24];
    int wn = snprintf(window, sizeof window, "%lld", (long long)window_ms);
    /* EVAL script 1 KEY window: argv[3] is the key, so build it here. */
    struct kv_redis_key k;
    kv_redis_key_init(&k, kv, key);
    const char *argv[5] = {"EVAL", kv_redis_incr_window_lua, "1", k.p, window};
    size_t argvlen[5] = {4, sizeof kv_redis_incr_window_lua - 1, 1, k.len, (size_t)wn};
    redisReply *r;
    /* Not idempotent: a lost reply is not retried, so one hit is never counted twice. */
    dk_status st = kv_redis_command(kv, kv->timeout_ms, false, 5, argv, argvlen, &r);
    kv_redis_key_release(&k);
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

DK_MUSTCHECK static dk_status kv_redis_ping(dk_kv *kv, int timeout_ms)
{
    if (!kv)
        return DK_E_INTERNAL;
    const char *argv[1] = {"PING"};
    size_t argvlen[1] = {4};
    redisReply *r;
    dk_status st = kv_redis_command(kv, timeout_ms > 0 ? timeout_ms : kv->timeout_ms, true, 1, argv,
                                    argvlen, &r);
    if (st != DK_OK)
        return st;
    bool ok = r->type == REDIS_REPLY_STATUS && r->str && strcmp(r->str, "PONG") == 0;
    freeReplyObject(r);
    return ok ? DK_OK : DK_E_INTERNAL;
}

DK_MUSTCHECK static dk_status kv_redis_publish(dk_kv *kv, const char *channel, const char *msg,
                                               size_t len)
{
    if (!kv || !channel || (!msg && len))
        return DK_E_INTERNAL;
    const char *argv[3] = {"PUBLISH", NULL, msg ? msg : ""};
    size_t argvlen[3] = {7, 0, len};
    redisReply *r;
    /* Retried on a fresh connection when a reused one failed: a message may arrive twice, as
     * kv.h allows, but a publish does not fail because the server closed an idle connection. */
    dk_status st = kv_redis_key_command(kv, true, channel, 3, argv, argvlen, &r);
    if (st != DK_OK)
        return st;
    bool ok = r->type == REDIS_REPLY_INTEGER;
    freeReplyObject(r);
    return ok ? DK_OK : DK_E_INTERNAL;
}

DK_MUSTCHECK static dk_status kv_redis_subscribe(dk_kv *kv, const char *channel,
                                                 dk_kv_on_message on_message,
                                                 dk_kv_on_state on_state, void *ctx,
                                                 dk_kv_sub **ret_sub)
{
    if (!kv || !channel || !on_message || !on_state || !ret_sub)
        return DK_E_INTERNAL;
    dk_kv_sub *sub = DK_NEW(dk_kv_sub);
    sub->kv = kv;
    struct kv_redis_key k;
    kv_redis_key_init(&k, kv, channel);
    sub->channel = dk_malloc(k.len + 1);
    memcpy(sub->channel, k.p, k.len + 1);
    sub->channel_len = k.len;
    kv_redis_key_release(&k);
    sub->on_message = on_message;
    sub->on_state = on_state;
    sub->ctx = ctx;
    atomic_init(&sub->stop, false);
    sub->wake_fd = -1;
    pthread_mutex_init(&sub->run_lock, NULL);
    dk_cond_init_monotonic(&sub->run_cond);
    if (pthread_create(&sub->thread, NULL, kv_redis_sub_run, sub) != 0) {
        kv_redis_sub_free(sub);
        return DK_E_INTERNAL;
    }
    pthread_mutex_lock(&kv->subs_lock);
    sub->next = kv->subs;
    kv->subs = sub;
    pthread_mutex_unlock(&kv->subs_lock);
    *ret_sub = sub;
    return DK_OK;
}

static void kv_redis_unsubscribe(dk_kv *kv, dk_kv_sub *sub)
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
    kv_redis_sub_end(sub);
}

const struct dk_kv_ops dk_kv_redis_ops = {
    .name = "redis",
    .open = kv_redis_open,
    .close = kv_redis_close,
    .get = kv_redis_get,
    .set = kv_redis_set,
    .set_nx = kv_redis_set_nx,
    .expire = kv_redis_expire,
    .rename = kv_redis_rename,
    .del = kv_redis_del,
    .exists = kv_redis_exists,
    .incr_window = kv_redis_incr_window,
    .ping = kv_redis_ping,
    .publish = kv_redis_publish,
    .subscribe = kv_redis_subscribe,
    .unsubscribe = kv_redis_unsubscribe,
};
