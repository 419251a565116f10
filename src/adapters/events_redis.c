/* events_redis.c — the event port over Redis Streams (plain or TLS: redis_conn.c), at least once
 * across processes.
 *
 * Every event is one entry of the stream ER_STREAM: XADD … MAXLEN ~ 100000 * type T payload P.
 * Each service reads it through a consumer group of its own (opt->group), so every service sees
 * every event once, and the replicas of one service (consumers of one group) share the work.
 *
 * Publishing borrows the one publishing connection for one XADD: a caller waits at most
 * timeout_ms for it, and connect, write and read are bounded by timeout_ms, so a dead or stalled
 * Redis costs a bounded wait and DK_E_UNAVAILABLE. A connection found closed while idle is
 * replaced; an XADD that failed on a reused connection is sent once more on a fresh one (a
 * duplicate is allowed: subscribers are idempotent).
 *
 * start() creates the group (at "0": a group created after events were published still gets
 * every event the stream keeps) and runs one
 * consumer thread with a connection of its own: XREADGROUP … COUNT 32 BLOCK 500 >, then every
 * local subscriber of the entry's type is called; the entry is acknowledged when all returned
 * DK_OK (or when nobody here subscribes to its type) and left pending otherwise. At start, after
 * every reconnect and every ER_RECLAIM_EVERY_MS, XAUTOCLAIM takes over entries pending for more
 * than ER_RECLAIM_IDLE_MS in the group (a failed handler here, or a consumer that died) and
 * delivers them again. When Redis goes away the thread reconnects with a backoff from 100 ms to
 * 2 s and recreates the group if Redis lost it. close() stops the thread within ~1 s (BLOCK 500
 * and I/O bounded by 500 ms more), and on a clean exit removes this consumer from the group when
 * it holds no pending entries.
 *
 * Test knobs (environment, read by open): DOCKET_EVENTS_RECLAIM_IDLE_MS and
 * DOCKET_EVENTS_RECLAIM_EVERY_MS override the idle time before a pending entry is taken over
 * (10000) and the reclaim period (5000), 1..3600000 ms.
 *
 * Limits: an entry older than the last 100000 is trimmed even if a group has not read it yet; an
 * entry that always fails is retried every ER_RECLAIM_IDLE_MS for as long as it stays. */
#include "ports/events.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "adapters/redis_url.h"
#include "core/alloc.h"
#include "core/log.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "core/trace.h"
#include "adapters/events.h"
#include "core/banned.h"

#define ER_STREAM             "docket:events"
#define ER_MAXLEN             "100000"
#define ER_BATCH              32
#define ER_BLOCK_MS           500
#define ER_IO_MARGIN_MS       500 /* consumer: connect timeout, and read timeout over BLOCK */
#define ER_DEFAULT_TIMEOUT_MS 1000
#define ER_RECLAIM_IDLE_MS    10000
#define ER_RECLAIM_EVERY_MS   5000
#define ER_RECLAIM_PAGES      8 /* XAUTOCLAIM pages of ER_BATCH per round */
#define ER_BACKOFF_MIN_MS     100
#define ER_BACKOFF_MAX_MS     2000
#define ER_MAX_SUBS           32
#define ER_TYPE_MAX           64
#define ER_NAME_MAX           128

struct events_redis_sub {
    char type[ER_TYPE_MAX];
    dk_event_fn fn;
    void *ctx;
};

struct dk_events {
    dk_redis_url url;
    char *group; /* NULL: publish only */
    char *consumer;
    int timeout_ms;
    int64_t reclaim_idle_ms;
    int64_t reclaim_every_ms;

    struct events_redis_sub subs[ER_MAX_SUBS];
    int nsubs;
    bool started;

    /* publishing: one connection, lent to one caller at a time */
    pthread_mutex_t pub_lock;
    pthread_cond_t pub_cond; /* signalled when the connection is handed back */
    bool pub_busy;
    dk_redis_conn *pub;

    /* consuming */
    pthread_mutex_t run_lock;
    pthread_cond_t run_cond; /* signalled by close */
    atomic_bool stop;
    bool running; /* the thread was created */
    pthread_t thread;
    dk_redis_conn *first; /* the connection start() made, handed to the thread */
};

/* --- small helpers --------------------------------------------------------------------------- */

static void events_redis_deadline(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void events_redis_cond_init(pthread_cond_t *c)
{
    dk_cond_init_monotonic(c);
}

static bool events_redis_reply_is(const redisReply *r, const char *prefix)
{
    return r && r->type == REDIS_REPLY_ERROR && r->str &&
           strncmp(r->str, prefix, strlen(prefix)) == 0;
}

static bool events_redis_name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    return n > 0 && n <= ER_NAME_MAX;
}

static int64_t events_redis_env_ms(const char *name, int64_t def)
{
    const char *v = getenv(name);
    int64_t ms;
    if (v && *v && dk_parse_i64(v, 1, 3600000, &ms))
        return ms;
    return def;
}

/* --- the port: set-up ------------------------------------------------------------------------ */

DK_MUSTCHECK static dk_status events_redis_open(const dk_events_options *opt, dk_events **ret)
{
    if (!opt || !ret)
        return DK_E_INTERNAL;
    if ((opt->group && !events_redis_name_ok(opt->group)) ||
        (opt->consumer && !events_redis_name_ok(opt->consumer)))
        return DK_E_VALIDATION;
    dk_redis_url url = {0};
    dk_status st = dk_redis_url_parse(opt->url, &url);
    if (st == DK_OK)
        st = dk_redis_url_tls(&url, opt->tls_ca_file);
    if (st != DK_OK) {
        dk_redis_url_release(&url);
        return st;
    }

    dk_events *ev = DK_NEW(dk_events);
    ev->url = url;
    ev->group = opt->group ? dk_strdup(opt->group) : NULL;
    if (opt->consumer) {
        ev->consumer = dk_strdup(opt->consumer);
    } else {
        char host[64] = "host";
        (void)gethostname(host, sizeof host);
        host[sizeof host - 1] = '\0';
        char name[96];
        snprintf(name, sizeof name, "%s-%ld", host, (long)getpid());
        ev->consumer = dk_strdup(name);
    }
    ev->timeout_ms = opt->timeout_ms > 0 ? opt->timeout_ms : ER_DEFAULT_TIMEOUT_MS;
    ev->reclaim_idle_ms = events_redis_env_ms("DOCKET_EVENTS_RECLAIM_IDLE_MS", ER_RECLAIM_IDLE_MS);
    ev->reclaim_every_ms =
        events_redis_env_ms("DOCKET_EVENTS_RECLAIM_EVERY_MS", ER_RECLAIM_EVERY_MS);
    pthread_mutex_init(&ev->pub_lock, NULL);
    events_redis_cond_init(&ev->pub_cond);
    pthread_mutex_init(&ev->run_lock, NULL);
    events_redis_cond_init(&ev->run_cond);
    atomic_init(&ev->stop, false);
    *ret = ev;
    return DK_OK;
}

DK_MUSTCHECK static dk_status events_redis_subscribe(dk_events *ev, const char *type,
                                                     dk_event_fn fn, void *ctx)
{
    if (!ev || !type || !*type || !fn || strlen(type) >= ER_TYPE_MAX)
        return DK_E_INTERNAL;
    if (ev->started || ev->nsubs >= ER_MAX_SUBS)
        return DK_E_INTERNAL; /* subscribe during start-up only */
    struct events_redis_sub *s = &ev->subs[ev->nsubs++];
    dk_strlcpy(s->type, type, sizeof s->type);
    s->fn = fn;
    s->ctx = ctx;
    return DK_OK;
}

/* --- publishing ------------------------------------------------------------------------------ */

/* Borrows the publishing connection (maybe not yet connected) for at most timeout_ms. */
static dk_status events_redis_pub_acquire(dk_events *ev)
{
    struct timespec deadline;
    bool have_deadline = false;
    pthread_mutex_lock(&ev->pub_lock);
    while (ev->pub_busy) {
        if (!have_deadline) {
            events_redis_deadline(&deadline, ev->timeout_ms);
            have_deadline = true;
        }
        if (pthread_cond_timedwait(&ev->pub_cond, &ev->pub_lock, &deadline) == ETIMEDOUT &&
            ev->pub_busy) {
            pthread_mutex_unlock(&ev->pub_lock);
            return DK_E_UNAVAILABLE;
        }
    }
    ev->pub_busy = true;
    pthread_mutex_unlock(&ev->pub_lock);
    return DK_OK;
}

static void events_redis_pub_release(dk_events *ev)
{
    pthread_mutex_lock(&ev->pub_lock);
    ev->pub_busy = false;
    pthread_cond_signal(&ev->pub_cond);
    pthread_mutex_unlock(&ev->pub_lock);
}

static void events_redis_pub_drop(dk_events *ev)
{
    if (ev->pub)
        dk_redis_conn_free(ev->pub);
    ev->pub = NULL;
}

DK_MUSTCHECK static dk_status events_redis_publish(dk_events *ev, const char *type,
                                                   const char *payload)
{
    if (!ev || !type || !*type || !payload)
        return DK_E_INTERNAL;
    /* the publisher's trace context travels with the entry (W3C traceparent), so the
     * consumer's spans join the trace of the request that caused the event */
    char tp[DK_TRACEPARENT_LEN];
    bool traced = dk_trace_current_traceparent(tp);
    const char *argv[] = {"XADD", ER_STREAM, "MAXLEN",  "~",     ER_MAXLEN,     "*",
                          "type", type,      "payload", payload, "traceparent", tp};
    int argc = traced ? 12 : 10;
    size_t argvlen[sizeof argv / sizeof argv[0]];
    for (int i = 0; i < argc; i++)
        argvlen[i] = strlen(argv[i]);

    dk_status st = events_redis_pub_acquire(ev);
    if (st != DK_OK)
        return st;
    for (int attempt = 0;; attempt++) {
        bool reused = ev->pub != NULL;
        if (reused && !dk_redis_idle_alive(ev->pub)) {
            events_redis_pub_drop(ev); /* closed by the server while idle */
            reused = false;
        }
        if (!ev->pub) {
            st = dk_redis_connect(&ev->url, ev->timeout_ms, &ev->pub);
            if (st != DK_OK) {
                ev->pub = NULL;
                break;
            }
        }
        dk_redis_sigpipe sp;
        dk_redis_sigpipe_block(&sp);
        redisReply *r = dk_redis_command(ev->pub, argc, argv, argvlen);
        dk_redis_sigpipe_restore(&sp, r == NULL);
        if (!r) {
            events_redis_pub_drop(ev);
            st = DK_E_UNAVAILABLE;
            if (reused && attempt == 0)
                continue;
            break;
        }
        if (r->type == REDIS_REPLY_ERROR) {
            st = dk_redis_error_status(r);
            if (events_redis_reply_is(r, "READONLY"))
                events_redis_pub_drop(
                    ev); /* a replica after failover: reconnect to find the primary */
        } else {
            st = r->type == REDIS_REPLY_STRING ? DK_OK : DK_E_INTERNAL;
        }
        freeReplyObject(r);
        break;
    }
    events_redis_pub_release(ev);
    return st;
}

/* --- consuming ------------------------------------------------------------------------------- */

/* One command on the consumer's connection; NULL after an I/O failure (the connection is then
 * broken and unusable). */
static redisReply *events_redis_cmd(dk_redis_conn *c, int argc, const char **argv)
{
    size_t argvlen[3 + 2 * ER_BATCH + 8];
    for (int i = 0; i < argc; i++)
        argvlen[i] = strlen(argv[i]);
    return dk_redis_command(c, argc, argv, argvlen);
}

/* XGROUP CREATE … 0 MKSTREAM; the group may exist already. A new group starts from the
 * oldest event kept, so a service deployed after others published misses nothing (its
 * subscribers are idempotent). */
static dk_status events_redis_ensure_group(dk_events *ev, dk_redis_conn *c)
{
    const char *argv[] = {"XGROUP", "CREATE", ER_STREAM, ev->group, "0", "MKSTREAM"};
    redisReply *r = events_redis_cmd(c, 6, argv);
    if (!r)
        return DK_E_UNAVAILABLE;
    dk_status st = DK_OK;
    if (r->type == REDIS_REPLY_ERROR && !events_redis_reply_is(r, "BUSYGROUP"))
        st = dk_redis_error_status(r);
    freeReplyObject(r);
    return st;
}

/* A connection for the consumer thread: a short connect timeout, reads bounded a little past
 * the BLOCK time, a client name that shows who it is, and the group in place. */
static dk_status events_redis_consumer_connect(dk_events *ev, dk_redis_conn **ret)
{
    int margin = ev->timeout_ms < ER_IO_MARGIN_MS ? ev->timeout_ms : ER_IO_MARGIN_MS;
    dk_redis_conn *c = NULL;
    dk_status st = dk_redis_connect(&ev->url, margin, &c);
    if (st != DK_OK)
        return st;
    if (!dk_redis_set_timeout(c, ER_BLOCK_MS + margin)) {
        dk_redis_conn_free(c);
        return DK_E_UNAVAILABLE;
    }
    char name[2 * ER_NAME_MAX + 32];
    snprintf(name, sizeof name, "docket-events:%s:%s", ev->group, ev->consumer);
    for (char *p = name; *p; p++)
        if (*p <= ' ' || *p >= 0x7f)
            *p = '_';
    const char *argv[] = {"CLIENT", "SETNAME", name};
    redisReply *r = events_redis_cmd(c, 3, argv); /* best effort: only an I/O failure matters */
    if (r)
        freeReplyObject(r);
    st = dk_redis_conn_broken(c) ? DK_E_UNAVAILABLE : events_redis_ensure_group(ev, c);
    if (st != DK_OK) {
        dk_redis_conn_free(c);
        return st;
    }
    *ret = c;
    return DK_OK;
}

static const char *events_redis_field(const redisReply *fields, const char *name)
{
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *k = fields->element[i], *v = fields->element[i + 1];
        if (k->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING &&
            strcmp(k->str, name) == 0)
            return v->str;
    }
    return NULL;
}

/* Calls every local subscriber of the entry's type; true when the entry may be acknowledged. */
static bool events_redis_deliver(dk_events *ev, const char *id, const redisReply *fields)
{
    if (!fields || fields->type != REDIS_REPLY_ARRAY)
        return true; /* deleted from the stream meanwhile: nothing to deliver */
    const char *type = events_redis_field(fields, "type");
    const char *payload = events_redis_field(fields, "payload");
    if (!type || !payload) {
        dk_log_warn("event %s in " ER_STREAM " has no type or payload; dropped", id);
        return true;
    }
    bool ok = true;
    (void)dk_trace_enter_traceparent(events_redis_field(fields, "traceparent"));
    for (int i = 0; i < ev->nsubs; i++) {
        if (strcmp(ev->subs[i].type, type) != 0)
            continue;
        dk_span *sp = dk_span_consume(type, "redis");
        dk_status st = ev->subs[i].fn(ev->subs[i].ctx, type, payload);
        dk_span_consume_end(sp, st);
        if (st != DK_OK) {
            ok = false;
            dk_log_warn("event %s (%s): handler failed with %s; it will be delivered again", id,
                        type, dk_status_title(st));
        }
    }
    dk_trace_leave();
    return ok;
}

/* Delivers an array of [id, fields] entries and acknowledges those that succeeded. Stops early
 * (leaving the rest pending) when close() asks. */
static dk_status events_redis_handle_entries(dk_events *ev, dk_redis_conn *c,
                                             const redisReply *entries)
{
    const char *argv[3 + ER_BATCH] = {"XACK", ER_STREAM, ev->group};
    int argc = 3;
    for (size_t i = 0; i < entries->elements && argc < 3 + ER_BATCH; i++) {
        if (atomic_load(&ev->stop))
            break;
        const redisReply *e = entries->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
            e->element[0]->type != REDIS_REPLY_STRING)
            continue;
        const char *id = e->element[0]->str;
        if (events_redis_deliver(ev, id, e->element[1]))
            argv[argc++] = id;
    }
    if (argc == 3)
        return DK_OK;
    redisReply *r = events_redis_cmd(c, argc, argv);
    if (!r)
        return DK_E_UNAVAILABLE; /* unacknowledged entries come back after the idle time */
    dk_status st = r->type == REDIS_REPLY_ERROR ? dk_redis_error_status(r) : DK_OK;
    freeReplyObject(r);
    return st;
}

/* XAUTOCLAIM: takes over entries pending longer than the idle time, anywhere in the group. */
static dk_status events_redis_reclaim(dk_events *ev, dk_redis_conn *c)
{
    char idle[24], cursor[64] = "0-0";
    snprintf(idle, sizeof idle, "%lld", (long long)ev->reclaim_idle_ms);
    for (int page = 0; page < ER_RECLAIM_PAGES && !atomic_load(&ev->stop); page++) {
        const char *argv[] = {"XAUTOCLAIM", ER_STREAM, ev->group, ev->consumer,
                              idle,         cursor,    "COUNT",   "32"};
        redisReply *r = events_redis_cmd(c, 8, argv);
        if (!r)
            return DK_E_UNAVAILABLE;
        if (r->type == REDIS_REPLY_ERROR) {
            dk_status st = DK_E_INTERNAL;
            if (events_redis_reply_is(r, "NOGROUP"))
                st = events_redis_ensure_group(ev, c);
            else
                dk_log_warn("XAUTOCLAIM on " ER_STREAM " failed: %s", r->str);
            freeReplyObject(r);
            return st;
        }
        bool ok = r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
                  r->element[0]->type == REDIS_REPLY_STRING &&
                  r->element[1]->type == REDIS_REPLY_ARRAY;
        dk_status st = ok ? events_redis_handle_entries(ev, c, r->element[1]) : DK_E_INTERNAL;
        bool more = ok && st == DK_OK && strcmp(r->element[0]->str, "0-0") != 0 &&
                    r->element[1]->elements > 0;
        if (more)
            dk_strlcpy(cursor, r->element[0]->str, sizeof cursor);
        freeReplyObject(r);
        if (st != DK_OK || !more)
            return st;
    }
    return DK_OK;
}

/* One XREADGROUP of new entries (blocks up to ER_BLOCK_MS). */
static dk_status events_redis_read_new(dk_events *ev, dk_redis_conn *c)
{
    const char *argv[] = {"XREADGROUP", "GROUP", ev->group, ev->consumer, "COUNT", "32",
                          "BLOCK",      "500",   "STREAMS", ER_STREAM,    ">"};
    redisReply *r = events_redis_cmd(c, 11, argv);
    if (!r)
        return DK_E_UNAVAILABLE;
    dk_status st = DK_OK;
    if (r->type == REDIS_REPLY_ERROR) {
        if (events_redis_reply_is(r, "NOGROUP") || events_redis_reply_is(r, "UNBLOCKED")) {
            st = events_redis_ensure_group(ev, c); /* Redis lost the stream (restart, flush, DEL) */
        } else {
            st = dk_redis_error_status(r);
            dk_log_warn("XREADGROUP on " ER_STREAM " failed: %s", r->str);
        }
    } else if (r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements && st == DK_OK; i++) {
            const redisReply *s = r->element[i];
            if (s->type == REDIS_REPLY_ARRAY && s->elements == 2 &&
                s->element[1]->type == REDIS_REPLY_ARRAY)
                st = events_redis_handle_entries(ev, c, s->element[1]);
        }
    } else if (r->type != REDIS_REPLY_NIL) {
        st = DK_E_INTERNAL;
    }
    freeReplyObject(r);
    return st;
}

/* On a clean exit: a consumer holding no pending entries leaves the group, so the group does
 * not collect one dead consumer per restart. One holding some stays, and others reclaim them. */
static void events_redis_forget_consumer(dk_events *ev, dk_redis_conn *c)
{
    const char *argv[] = {"XPENDING", ER_STREAM, ev->group, "-", "+", "1", ev->consumer};
    redisReply *r = events_redis_cmd(c, 7, argv);
    bool none = r && r->type == REDIS_REPLY_ARRAY && r->elements == 0;
    if (r)
        freeReplyObject(r);
    if (!none)
        return;
    const char *del[] = {"XGROUP", "DELCONSUMER", ER_STREAM, ev->group, ev->consumer};
    r = events_redis_cmd(c, 5, del);
    if (r)
        freeReplyObject(r);
}

/* Sleeps up to ms, or less when close() asks. */
static void events_redis_pause(dk_events *ev, int ms)
{
    struct timespec deadline;
    events_redis_deadline(&deadline, ms);
    pthread_mutex_lock(&ev->run_lock);
    while (!atomic_load(&ev->stop) &&
           pthread_cond_timedwait(&ev->run_cond, &ev->run_lock, &deadline) != ETIMEDOUT) {
    }
    pthread_mutex_unlock(&ev->run_lock);
}

static void *events_redis_run(void *arg)
{
    dk_events *ev = arg;
    /* Writes to a vanished server must not kill the process: on this thread SIGPIPE stays
     * blocked (a write then fails with EPIPE), and the process's dispositions are untouched. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    dk_redis_conn *c = ev->first;
    ev->first = NULL;
    int backoff = ER_BACKOFF_MIN_MS;
    int64_t next_reclaim = 0;
    bool down = false;
    while (!atomic_load(&ev->stop)) {
        dk_status st;
        if (!c) {
            st = events_redis_consumer_connect(ev, &c);
            if (st != DK_OK) {
                c = NULL;
                if (!down)
                    dk_log_warn("events: Redis unreachable (%s); retrying", dk_status_title(st));
                down = true;
                events_redis_pause(ev, backoff);
                backoff = backoff * 2 > ER_BACKOFF_MAX_MS ? ER_BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
            if (down)
                dk_log_info("events: Redis reachable again; consuming");
            down = false;
            next_reclaim = 0; /* what was pending while we were away */
        }
        st = DK_OK;
        if (dk_mono_ms() >= next_reclaim) {
            st = events_redis_reclaim(ev, c);
            next_reclaim = dk_mono_ms() + ev->reclaim_every_ms;
        }
        if (st == DK_OK)
            st = events_redis_read_new(ev, c);
        if (st == DK_OK) {
            backoff = ER_BACKOFF_MIN_MS;
            continue;
        }
        if (dk_redis_conn_broken(c)) {
            dk_redis_conn_free(c);
            c = NULL;
            if (!down)
                dk_log_warn("events: lost the Redis connection; reconnecting");
            down = true;
        }
        events_redis_pause(ev, backoff); /* never spin on a failing server */
        backoff = backoff * 2 > ER_BACKOFF_MAX_MS ? ER_BACKOFF_MAX_MS : backoff * 2;
    }
    if (c) {
        if (!dk_redis_conn_broken(c))
            events_redis_forget_consumer(ev, c);
        dk_redis_conn_free(c);
    }
    return NULL;
}

DK_MUSTCHECK static dk_status events_redis_start(dk_events *ev)
{
    if (!ev || ev->started)
        return DK_E_INTERNAL;
    ev->started = true;
    if (ev->nsubs == 0)
        return DK_OK; /* publish only: no group to read */
    if (!ev->group)
        return DK_E_VALIDATION;
    /* Create the group now, so it sees every event published once start() has returned. When
     * Redis is unreachable, the thread keeps trying (and the group starts from then on). */
    dk_status st = events_redis_consumer_connect(ev, &ev->first);
    if (st == DK_E_UNAVAILABLE) {
        ev->first = NULL;
        dk_log_warn("events: Redis unreachable at start; the consumer will keep trying");
    } else if (st != DK_OK) {
        ev->first = NULL;
        return st;
    }
    if (pthread_create(&ev->thread, NULL, events_redis_run, ev) != 0) {
        if (ev->first)
            dk_redis_conn_free(ev->first);
        ev->first = NULL;
        return DK_E_INTERNAL;
    }
    ev->running = true;
    return DK_OK;
}

static void events_redis_close(dk_events *ev)
{
    if (!ev)
        return;
    if (ev->running) {
        pthread_mutex_lock(&ev->run_lock);
        atomic_store(&ev->stop, true);
        pthread_cond_broadcast(&ev->run_cond);
        pthread_mutex_unlock(&ev->run_lock);
        pthread_join(ev->thread, NULL);
    }
    if (ev->first)
        dk_redis_conn_free(ev->first);
    events_redis_pub_drop(ev);
    pthread_cond_destroy(&ev->run_cond);
    pthread_mutex_destroy(&ev->run_lock);
    pthread_cond_destroy(&ev->pub_cond);
    pthread_mutex_destroy(&ev->pub_lock);
    dk_redis_url_release(&ev->url);
    dk_free(ev->group);
    dk_free(ev->consumer);
    dk_free(ev);
}

const struct dk_events_ops dk_events_redis_ops = {
    .name = "redis",
    .open = events_redis_open,
    .start = events_redis_start,
    .close = events_redis_close,
    .subscribe = events_redis_subscribe,
    .publish = events_redis_publish,
};
