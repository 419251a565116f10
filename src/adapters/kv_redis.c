/* kv_redis.c — the key-value port over Redis (hiredis 0.14, blocking API).
 * A fixed pool of pool_size connections, created on demand, guarded by a mutex and a condition
 * variable. Connect and every read/write are bounded by timeout_ms, and a call that finds the pool
 * busy waits at most timeout_ms, so a dead or stalled Redis costs a caller a bounded wait and
 * DK_E_UNAVAILABLE, never a hang. A connection that saw an I/O error is freed and its slot
 * reconnects on the next call; an idle connection the server has closed (restart, CLIENT KILL,
 * idle timeout) is noticed before use and replaced, so the store recovers without a restart.
 * The URL's password is kept only for AUTH and wiped on close; it never appears in a status. */
#include "ports/kv.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/timeutil.h"
#include "core/banned.h"

#define KVR_DEFAULT_PORT       6379
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
    char *host;
    int port;
    int db;
    char *user;     /* NULL: AUTH with the password alone */
    char *password; /* NULL: no AUTH */
    size_t password_len;
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

/* --- URL ------------------------------------------------------------------------------------- */

static int kvr_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into a new string; NULL when malformed or when it would hold a NUL. */
static char *kvr_pct_decode(const char *s, size_t n, size_t *ret_len)
{
    char *out = dk_malloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[o++] = s[i];
            continue;
        }
        int hi = i + 2 < n ? kvr_hex(s[i + 1]) : -1;
        int lo = i + 2 < n ? kvr_hex(s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            explicit_bzero(out, n + 1);
            dk_free(out);
            return NULL;
        }
        out[o++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[o] = '\0';
    if (ret_len)
        *ret_len = o;
    return out;
}

/* Decimal digits only, within [min, max]. */
static bool kvr_parse_uint(const char *s, size_t n, long min, long max, long *ret)
{
    if (n == 0 || n > 10)
        return false;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v < min || v > max)
        return false;
    *ret = v;
    return true;
}

/* redis://[[user]:password@]host[:port][/db], the form redis-cli accepts: userinfo without a
 * ':' is a password alone; user and password may be percent-encoded; host may be [IPv6]. */
static dk_status kvr_parse_url(dk_kv *kv, const char *url)
{
    static const char scheme[] = "redis://";
    if (!url || strncasecmp(url, scheme, sizeof scheme - 1) != 0)
        return DK_E_VALIDATION;
    const char *auth = url + sizeof scheme - 1;
    const char *auth_end = auth + strcspn(auth, "/?#");
    if (*auth_end == '?' || *auth_end == '#')
        return DK_E_VALIDATION;

    /* userinfo ends at the last '@' of the authority (an unencoded '@' in a password works) */
    const char *at = NULL;
    for (const char *p = auth; p < auth_end; p++)
        if (*p == '@')
            at = p;
    const char *host = auth;
    if (at) {
        const char *colon = memchr(auth, ':', (size_t)(at - auth));
        const char *pw = colon ? colon + 1 : auth;
        if (colon && colon > auth) {
            kv->user = kvr_pct_decode(auth, (size_t)(colon - auth), NULL);
            if (!kv->user)
                return DK_E_VALIDATION;
        }
        if (at > pw) {
            kv->password = kvr_pct_decode(pw, (size_t)(at - pw), &kv->password_len);
            if (!kv->password)
                return DK_E_VALIDATION;
        }
        host = at + 1;
    }

    const char *host_end, *port = NULL;
    if (*host == '[') {
        const char *close = memchr(host, ']', (size_t)(auth_end - host));
        if (!close || close == host + 1)
            return DK_E_VALIDATION;
        kv->host = dk_strndup(host + 1, (size_t)(close - host - 1));
        host_end = close + 1;
        if (host_end < auth_end) {
            if (*host_end != ':')
                return DK_E_VALIDATION;
            port = host_end + 1;
        }
    } else {
        const char *colon = memchr(host, ':', (size_t)(auth_end - host));
        host_end = colon ? colon : auth_end;
        if (host_end == host)
            return DK_E_VALIDATION;
        kv->host = dk_strndup(host, (size_t)(host_end - host));
        if (colon)
            port = colon + 1;
    }
    long v = KVR_DEFAULT_PORT;
    if (port && !kvr_parse_uint(port, (size_t)(auth_end - port), 1, 65535, &v))
        return DK_E_VALIDATION;
    kv->port = (int)v;

    v = 0;
    if (*auth_end == '/' && auth_end[1] != '\0' &&
        !kvr_parse_uint(auth_end + 1, strlen(auth_end + 1), 0, INT_MAX, &v))
        return DK_E_VALIDATION;
    kv->db = (int)v;
    return DK_OK;
}

/* --- SIGPIPE ----------------------------------------------------------------------------------
 * hiredis writes with write(2): a peer that has gone away would raise SIGPIPE and kill the
 * process. Block it on this thread around each exchange and swallow the one a failed write
 * left pending, without touching the process's signal dispositions. */

struct kvr_sigpipe {
    sigset_t old;
};

static void kvr_sigpipe_block(struct kvr_sigpipe *sp)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &sp->old);
}

static void kvr_sigpipe_restore(struct kvr_sigpipe *sp, bool io_failed)
{
    if (sigismember(&sp->old, SIGPIPE))
        return; /* the caller blocks SIGPIPE itself: leave its pending set alone */
    if (io_failed) {
        sigset_t set, pending;
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
            const struct timespec zero = {0, 0};
            while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR) {
            }
        }
    }
    pthread_sigmask(SIG_SETMASK, &sp->old, NULL);
}

/* --- connections ----------------------------------------------------------------------------- */

static struct timeval kvr_tv(int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return tv;
}

/* Maps an error reply: a server that is loading, busy, failing over or read-only is
 * temporarily unavailable; anything else (wrong type, bad password, bad db) is ours. */
static dk_status kvr_error_status(const redisReply *r)
{
    static const char *const transient[] = {"LOADING",  "BUSY ",    "MASTERDOWN",
                                            "TRYAGAIN", "READONLY", "CLUSTERDOWN"};
    for (size_t i = 0; i < sizeof transient / sizeof transient[0]; i++)
        if (r->str && strncmp(r->str, transient[i], strlen(transient[i])) == 0)
            return DK_E_UNAVAILABLE;
    return DK_E_INTERNAL;
}

/* Runs one setup command on a fresh connection; the status reply is checked and dropped. */
static dk_status kvr_setup_command(redisContext *c, int argc, const char **argv,
                                   const size_t *argvlen)
{
    struct kvr_sigpipe sp;
    kvr_sigpipe_block(&sp);
    redisReply *r = redisCommandArgv(c, argc, argv, argvlen);
    kvr_sigpipe_restore(&sp, c->err != 0);
    dk_status st = DK_OK;
    if (!r || c->err)
        st = DK_E_UNAVAILABLE;
    else if (r->type == REDIS_REPLY_ERROR)
        st = kvr_error_status(r);
    if (r)
        freeReplyObject(r);
    return st;
}

static dk_status kvr_connect(dk_kv *kv, int timeout_ms, redisContext **ret)
{
    struct timeval tv = kvr_tv(timeout_ms);
    redisContext *c = redisConnectWithTimeout(kv->host, kv->port, tv);
    if (!c)
        return DK_E_INTERNAL; /* out of memory */
    if (c->err || redisSetTimeout(c, tv) != REDIS_OK) {
        redisFree(c);
        return DK_E_UNAVAILABLE;
    }
    (void)redisEnableKeepAlive(c); /* best effort: notices a vanished peer on idle slots */
    dk_status st = DK_OK;
    if (kv->password) {
        bool with_user = kv->user && *kv->user && strcmp(kv->user, "default") != 0;
        const char *argv[3] = {"AUTH"};
        size_t argvlen[3] = {4};
        int argc = 1;
        if (with_user) {
            argv[argc] = kv->user;
            argvlen[argc++] = strlen(kv->user);
        }
        argv[argc] = kv->password;
        argvlen[argc++] = kv->password_len;
        st = kvr_setup_command(c, argc, argv, argvlen);
    }
    if (st == DK_OK && kv->db != 0) {
        char db[16];
        int n = snprintf(db, sizeof db, "%d", kv->db);
        const char *argv[2] = {"SELECT", db};
        size_t argvlen[2] = {6, (size_t)n};
        st = kvr_setup_command(c, 2, argv, argvlen);
    }
    if (st != DK_OK) {
        redisFree(c);
        return st;
    }
    *ret = c;
    return DK_OK;
}

/* An idle connection is healthy when nothing is waiting to be read on it: in RESP2 the server
 * never speaks unasked, so readable means it closed the socket or sent a parting error. */
static bool kvr_idle_alive(redisContext *c)
{
    if (c->err)
        return false;
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    int n;
    do {
        n = poll(&pfd, 1, 0);
    } while (n < 0 && errno == EINTR);
    return n == 0;
}

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
        if (kvr_idle_alive(c)) {
            *ret = c;
            *ret_reused = true;
            return DK_OK;
        }
        redisFree(c); /* closed by the server while idle: reconnect in the same slot */
    }
    dk_status st = kvr_connect(kv, timeout_ms, &c);
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
        if (custom_timeout && redisSetTimeout(c, kvr_tv(timeout_ms)) != REDIS_OK) {
            kvr_release(kv, c, false);
            return DK_E_UNAVAILABLE;
        }
        struct kvr_sigpipe sp;
        kvr_sigpipe_block(&sp);
        redisReply *r = redisCommandArgv(c, argc, argv, argvlen);
        kvr_sigpipe_restore(&sp, c->err != 0);
        if (!r || c->err) {
            if (r)
                freeReplyObject(r);
            kvr_release(kv, c, false);
            if (reused && idempotent && attempt == 0)
                continue;
            return DK_E_UNAVAILABLE;
        }
        bool keep = true;
        if (custom_timeout && redisSetTimeout(c, kvr_tv(kv->timeout_ms)) != REDIS_OK)
            keep = false;
        if (r->type == REDIS_REPLY_ERROR) {
            st = kvr_error_status(r);
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
    if (kv->password) {
        explicit_bzero(kv->password, kv->password_len);
        dk_free(kv->password);
    }
    dk_free(kv->user);
    dk_free(kv->host);
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

    dk_status st = kvr_parse_url(kv, opt->url);
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
