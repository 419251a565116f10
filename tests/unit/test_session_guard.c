/* test_session_guard.c — revocation and last-use records over the real kv adapters: revoke,
 * check, expiry of a revocation, touch throttled to once a second, last_used, and the store's
 * errors passed through (a Redis URL where nothing listens). The check cache (guard started):
 * hits cost no store call, a revocation in another "process" (a second store on the same
 * Redis) is refused within 100 ms, no check that starts after a revoke returned accepts the
 * session, a lost subscription (CLIENT KILL, a paused server) flushes the cache and sends checks
 * to the store until it is back, and a revocation that cannot be broadcast is an error. */
#include "testutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "core/arena.h"
#include "core/ids.h"
#include "core/session_guard.h"
#include "core/timeutil.h"
#include "ports/kv.h"
#include "adapters/kv.h"
#include "core/banned.h"

struct fixture {
    dk_store store;
    dk_arena *arena;
};

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int open_store(void **state, const struct dk_kv_ops *ops, const char *url)
{
    struct fixture *f = test_calloc(1, sizeof *f);
    dk_kv_options opt = {.url = url, .pool_size = 2, .timeout_ms = 300, .key_prefix = "sgtest:"};
    f->store.ops = ops;
    if (ops->open(&opt, &f->store.kv) != DK_OK) {
        test_free(f);
        return -1;
    }
    f->arena = dk_arena_new();
    *state = f;
    return 0;
}

static int setup_memory(void **state)
{
    return open_store(state, &dk_kv_memory_ops, NULL);
}

/* A Redis URL on a loopback port where nothing listens. */
static int setup_dead_redis(void **state)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t slen = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &slen) != 0)
        return -1;
    close(fd);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", ntohs(sa.sin_port));
    return open_store(state, &dk_kv_redis_ops, url);
}

/* A real Redis when DOCKET_TEST_REDIS_URL is set (scripts/with-test-servers.sh); else the tests
 * using it are skipped. */
static int setup_redis(void **state)
{
    const char *url = dk_test_env("DOCKET_TEST_REDIS_URL");
    if (!url) {
        *state = NULL;
        return 0;
    }
    if (open_store(state, &dk_kv_redis_ops, url) != 0)
        return -1;
    /* the server is shared with earlier tests: start unseeded */
    struct fixture *f = *state;
    return f->store.ops->del(f->store.kv, DK_SESSION_SEEDED_KEY) == DK_OK ? 0 : -1;
}

static struct fixture *fx(void **state)
{
    if (!*state)
        skip();
    return *state;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (!f)
        return 0;
    f->store.ops->close(f->store.kv);
    dk_arena_free(f->arena);
    test_free(f);
    return 0;
}

static void new_sid(char sid[DK_UUID_LEN])
{
    dk_uuid7(sid);
}

/* A new session, recorded live in the store as the auth service does at login. */
static void open_sid(const dk_store *s, char sid[DK_UUID_LEN])
{
    dk_uuid7(sid);
    assert_int_equal(dk_session_open(s, sid, 600000), DK_OK);
}

static char *record(struct fixture *f, const char *sid)
{
    char key[96], *val = NULL;
    size_t len = 0;
    snprintf(key, sizeof key, "sess:%s", sid);
    assert_int_equal(f->store.ops->get(f->store.kv, f->arena, key, &val, &len), DK_OK);
    return val;
}

static void mark_seeded(const dk_store *s)
{
    char token[DK_SESSION_SEED_TOKEN_LEN];
    assert_int_equal(dk_session_seed_begin(s, token), DK_OK);
    assert_int_equal(dk_session_seed_end(s, token), DK_OK);
}

static void test_revoke_and_check(void **state)
{
    struct fixture *f = fx(state);
    char a[DK_UUID_LEN], b[DK_UUID_LEN];
    open_sid(&f->store, a);
    open_sid(&f->store, b);
    assert_int_equal(dk_session_check(&f->store, a), DK_OK);
    assert_int_equal(dk_session_check(&f->store, b), DK_OK);
    assert_int_equal(dk_session_revoke(&f->store, a, 60000), DK_OK);
    assert_int_equal(dk_session_check(&f->store, a), DK_E_UNAUTHORIZED);
    assert_int_equal(dk_session_check(&f->store, b), DK_OK); /* only that session */
    /* revoking twice is fine */
    assert_int_equal(dk_session_revoke(&f->store, a, 60000), DK_OK);
    assert_int_equal(dk_session_check(&f->store, a), DK_E_UNAUTHORIZED);
    /* the records are the documented keys */
    assert_string_equal(record(f, a), "0");
    assert_string_equal(record(f, b), "1");
    /* opening again (a refresh) never brings a revoked session back */
    assert_int_equal(dk_session_open(&f->store, a, 600000), DK_OK);
    assert_int_equal(dk_session_check(&f->store, a), DK_E_UNAUTHORIZED);
}

/* No record: without a source, unknown while the store is not seeded, dead once it is. */
static void test_missing_record(void **state)
{
    struct fixture *f = fx(state);
    char sid[DK_UUID_LEN];
    new_sid(sid);
    assert_int_equal(dk_session_check(&f->store, sid), DK_E_UNAVAILABLE);
    bool seeded = true;
    assert_int_equal(dk_session_seeded(&f->store, &seeded), DK_OK);
    assert_false(seeded);
    mark_seeded(&f->store);
    assert_int_equal(dk_session_seeded(&f->store, &seeded), DK_OK);
    assert_true(seeded);
    assert_int_equal(dk_session_check(&f->store, sid), DK_E_UNAUTHORIZED); /* never issued */
    /* the marker has no expiry */
    bool found = false;
    assert_int_equal(f->store.ops->expire(f->store.kv, DK_SESSION_SEEDED_KEY, 0, &found), DK_OK);
    assert_true(found);
}

static void test_revocation_expires(void **state)
{
    struct fixture *f = fx(state);
    char sid[DK_UUID_LEN];
    open_sid(&f->store, sid);
    assert_int_equal(dk_session_revoke(&f->store, sid, 80), DK_OK);
    assert_int_equal(dk_session_check(&f->store, sid), DK_E_UNAUTHORIZED);
    sleep_ms(150);
    assert_null(record(f, sid));
    /* the record is gone, but a gone record never means live */
    assert_int_equal(dk_session_check(&f->store, sid), DK_E_UNAVAILABLE);
    mark_seeded(&f->store);
    assert_int_equal(dk_session_check(&f->store, sid), DK_E_UNAUTHORIZED);
}

static void test_open_sets_the_lifetime(void **state)
{
    struct fixture *f = fx(state);
    mark_seeded(&f->store);
    char sid[DK_UUID_LEN];
    new_sid(sid);
    assert_int_equal(dk_session_open(&f->store, sid, 80), DK_OK);
    assert_int_equal(dk_session_check(&f->store, sid), DK_OK);
    assert_int_equal(dk_session_open(&f->store, sid, 600000), DK_OK); /* a refresh: longer */
    sleep_ms(150);
    assert_int_equal(dk_session_check(&f->store, sid), DK_OK);
    char other[DK_UUID_LEN];
    new_sid(other);
    assert_int_equal(dk_session_open(&f->store, other, 80), DK_OK);
    sleep_ms(150);
    assert_int_equal(dk_session_check(&f->store, other), DK_E_UNAUTHORIZED); /* expired */
    assert_int_equal(dk_session_open(&f->store, other, 0), DK_OK);           /* no-op */
    assert_null(record(f, other));
}

/* The source (the sessions table in the auth service's process) answers for missing records,
 * and its answer is remembered in the store for the processes that have none. */
struct source_fake {
    int calls;
    const char *live_sid;
    dk_status fail;
};

static dk_status source_lookup(void *ctx, const char *sid, bool *ret_live, int64_t *ret_ttl_ms)
{
    struct source_fake *src = ctx;
    src->calls++;
    if (src->fail != DK_OK)
        return src->fail;
    *ret_live = strcmp(sid, src->live_sid) == 0;
    *ret_ttl_ms = 60000;
    return DK_OK;
}

static void test_source_answers_missing_records(void **state)
{
    struct fixture *f = fx(state);
    char live[DK_UUID_LEN], dead[DK_UUID_LEN];
    new_sid(live);
    new_sid(dead);
    struct source_fake src = {.live_sid = live};
    dk_session_guard_set_source(source_lookup, &src);
    assert_int_equal(dk_session_check(&f->store, live), DK_OK);
    assert_int_equal(dk_session_check(&f->store, dead), DK_E_UNAUTHORIZED);
    assert_int_equal(src.calls, 2);
    assert_string_equal(record(f, live), "1");
    assert_string_equal(record(f, dead), "0");
    assert_int_equal(dk_session_check(&f->store, live), DK_OK);
    assert_int_equal(dk_session_check(&f->store, dead), DK_E_UNAUTHORIZED);
    assert_int_equal(src.calls, 2); /* the store answered */
    /* the source's errors pass through */
    char other[DK_UUID_LEN];
    new_sid(other);
    src.fail = DK_E_UNAVAILABLE;
    assert_int_equal(dk_session_check(&f->store, other), DK_E_UNAVAILABLE);
    dk_session_guard_set_source(NULL, NULL);
    assert_int_equal(dk_session_check(&f->store, other), DK_E_UNAVAILABLE); /* not seeded */
}

/* A seed whose canary vanished (the store was emptied meanwhile) does not mark the store. */
static void test_seed_interrupted(void **state)
{
    struct fixture *f = fx(state);
    char token[DK_SESSION_SEED_TOKEN_LEN], key[96];
    assert_int_equal(dk_session_seed_begin(&f->store, token), DK_OK);
    snprintf(key, sizeof key, "sess:seeding:%s", token);
    assert_int_equal(f->store.ops->del(f->store.kv, key), DK_OK);
    assert_int_equal(dk_session_seed_end(&f->store, token), DK_E_NOT_FOUND);
    bool seeded = true;
    assert_int_equal(dk_session_seeded(&f->store, &seeded), DK_OK);
    assert_false(seeded);
}

/* Sleeps until the wall clock is early in a second, so that a few steps fit in one. */
static void align_to_second_start(void)
{
    while (dk_now_ms() % 1000 > 200)
        sleep_ms(5);
}

static void test_touch_and_last_used(void **state)
{
    struct fixture *f = fx(state);
    char sid[DK_UUID_LEN];
    new_sid(sid);
    int64_t ms = -1;
    assert_int_equal(dk_session_last_used(&f->store, f->arena, sid, &ms), DK_OK);
    assert_int_equal(ms, 0); /* never touched */

    align_to_second_start();
    int64_t before = dk_now_ms();
    assert_int_equal(dk_session_touch(&f->store, sid, 60000), DK_OK);
    int64_t after = dk_now_ms();
    assert_int_equal(dk_session_last_used(&f->store, f->arena, sid, &ms), DK_OK);
    assert_true(ms >= before && ms <= after);

    /* within the same second, a second touch does not write: prove it by deleting the record
     * and touching again */
    char key[96];
    snprintf(key, sizeof key, "seen:%s", sid);
    assert_int_equal(f->store.ops->del(f->store.kv, key), DK_OK);
    assert_int_equal(dk_session_touch(&f->store, sid, 60000), DK_OK);
    assert_int_equal(dk_session_last_used(&f->store, f->arena, sid, &ms), DK_OK);
    assert_int_equal(ms, 0);

    /* in the next second it writes again */
    while (dk_now_ms() / 1000 == after / 1000)
        sleep_ms(10);
    before = dk_now_ms();
    assert_int_equal(dk_session_touch(&f->store, sid, 60000), DK_OK);
    assert_int_equal(dk_session_last_used(&f->store, f->arena, sid, &ms), DK_OK);
    assert_true(ms >= before && ms <= dk_now_ms());
}

static void test_touch_throttle_is_per_session(void **state)
{
    struct fixture *f = fx(state);
    char a[DK_UUID_LEN], b[DK_UUID_LEN];
    new_sid(a);
    new_sid(b);
    align_to_second_start();
    assert_int_equal(dk_session_touch(&f->store, a, 60000), DK_OK);
    assert_int_equal(dk_session_touch(&f->store, b, 60000), DK_OK); /* not throttled by a */
    int64_t ma = 0, mb = 0;
    assert_int_equal(dk_session_last_used(&f->store, f->arena, a, &ma), DK_OK);
    assert_int_equal(dk_session_last_used(&f->store, f->arena, b, &mb), DK_OK);
    assert_true(ma > 0);
    assert_true(mb > 0);
}

static void test_touch_ttl(void **state)
{
    struct fixture *f = fx(state);
    char sid[DK_UUID_LEN];
    new_sid(sid);
    assert_int_equal(dk_session_touch(&f->store, sid, 80), DK_OK);
    int64_t ms = 0;
    assert_int_equal(dk_session_last_used(&f->store, f->arena, sid, &ms), DK_OK);
    assert_true(ms > 0);
    sleep_ms(150);
    assert_int_equal(dk_session_last_used(&f->store, f->arena, sid, &ms), DK_OK);
    assert_int_equal(ms, 0);
}

static void test_last_used_garbage_reads_zero(void **state)
{
    struct fixture *f = fx(state);
    char key[96];
    snprintf(key, sizeof key, "seen:%s", "garbage-session");
    assert_int_equal(f->store.ops->set(f->store.kv, key, "12abc", 5, 60000), DK_OK);
    int64_t ms = -1;
    assert_int_equal(dk_session_last_used(&f->store, f->arena, "garbage-session", &ms), DK_OK);
    assert_int_equal(ms, 0);
    assert_int_equal(f->store.ops->set(f->store.kv, key, "-5", 2, 60000), DK_OK);
    ms = -1;
    assert_int_equal(dk_session_last_used(&f->store, f->arena, "garbage-session", &ms), DK_OK);
    assert_int_equal(ms, 0);
}

static void test_store_errors_pass_through(void **state)
{
    struct fixture *f = fx(state);
    char sid[DK_UUID_LEN];
    new_sid(sid);
    int64_t t0 = dk_mono_ms();
    assert_int_equal(dk_session_check(&f->store, sid), DK_E_UNAVAILABLE);
    assert_int_equal(dk_session_revoke(&f->store, sid, 1000), DK_E_UNAVAILABLE);
    assert_int_equal(dk_session_touch(&f->store, sid, 1000), DK_E_UNAVAILABLE);
    int64_t ms = 777;
    assert_int_equal(dk_session_last_used(&f->store, f->arena, sid, &ms), DK_E_UNAVAILABLE);
    assert_int_equal(ms, 777);             /* untouched on failure */
    assert_true(dk_mono_ms() - t0 < 3000); /* fast failures, no hang */
}

/* --- the check cache ------------------------------------------------------------------------- */

static int teardown_guard(void **state)
{
    dk_session_guard_stop();
    return teardown(state);
}

static dk_session_guard_stats guard_stats(void)
{
    dk_session_guard_stats st;
    dk_session_guard_stats_get(&st);
    return st;
}

/* Waits until the guard is live with at least min_outages behind it; false after timeout_ms. */
static bool wait_live(uint64_t min_outages, int timeout_ms)
{
    int64_t deadline = dk_mono_ms() + timeout_ms;
    for (;;) {
        dk_session_guard_stats st = guard_stats();
        if (st.live && st.outages >= min_outages)
            return true;
        if (dk_mono_ms() >= deadline)
            return false;
        sleep_ms(2);
    }
}

static bool wait_not_live(int timeout_ms)
{
    int64_t deadline = dk_mono_ms() + timeout_ms;
    while (guard_stats().live) {
        if (dk_mono_ms() >= deadline)
            return false;
        sleep_ms(2);
    }
    return true;
}

/* Writes the revocation record alone, as a writer that forgot the broadcast would. */
static void revoke_record_only(const dk_store *s, const char *sid)
{
    char key[96];
    snprintf(key, sizeof key, "sess:%s", sid);
    assert_int_equal(s->ops->set(s->kv, key, "0", 1, 60000), DK_OK);
}

static void test_guard_memory(void **state)
{
    struct fixture *f = fx(state);
    assert_false(guard_stats().started);
    assert_int_equal(dk_session_guard_start(&f->store), DK_OK);
    assert_int_equal(dk_session_guard_start(&f->store), DK_E_INTERNAL); /* once */
    dk_session_guard_stats st = guard_stats();
    assert_true(st.started);
    assert_true(st.live); /* the memory store is live at once */

    char a[DK_UUID_LEN], b[DK_UUID_LEN];
    open_sid(&f->store, a);
    open_sid(&f->store, b);
    assert_int_equal(dk_session_check(&f->store, a), DK_OK);
    /* cached: a record written without the broadcast is not seen... */
    revoke_record_only(&f->store, a);
    assert_int_equal(dk_session_check(&f->store, a), DK_OK);
    /* ...until the broadcast evicts it */
    assert_int_equal(f->store.ops->publish(f->store.kv, DK_SESSION_GUARD_CHANNEL, a, strlen(a)),
                     DK_OK);
    assert_int_equal(dk_session_check(&f->store, a), DK_E_UNAUTHORIZED);
    assert_int_equal(dk_session_check(&f->store, a), DK_E_UNAUTHORIZED); /* never cached */

    /* dk_session_revoke does both */
    assert_int_equal(dk_session_check(&f->store, b), DK_OK);
    assert_int_equal(dk_session_check(&f->store, b), DK_OK);
    assert_int_equal(dk_session_revoke(&f->store, b, 60000), DK_OK);
    assert_int_equal(dk_session_check(&f->store, b), DK_E_UNAUTHORIZED);

    /* stopped: every check asks the store, as without the guard */
    char c[DK_UUID_LEN];
    open_sid(&f->store, c);
    assert_int_equal(dk_session_check(&f->store, c), DK_OK);
    dk_session_guard_stop();
    assert_false(guard_stats().started);
    revoke_record_only(&f->store, c);
    assert_int_equal(dk_session_check(&f->store, c), DK_E_UNAUTHORIZED);
    dk_session_guard_stop(); /* harmless twice */

    /* a restart forgets what was cached before */
    char d[DK_UUID_LEN];
    open_sid(&f->store, d);
    assert_int_equal(dk_session_guard_start(&f->store), DK_OK);
    assert_int_equal(dk_session_check(&f->store, d), DK_OK);
    dk_session_guard_stop();
    revoke_record_only(&f->store, d);
    assert_int_equal(dk_session_guard_start(&f->store), DK_OK);
    assert_int_equal(dk_session_check(&f->store, d), DK_E_UNAUTHORIZED);

    /* another store than the guard's is never answered from the cache */
    dk_store other = {.ops = &dk_kv_memory_ops};
    dk_kv_options opt = {.key_prefix = "sgtest:"};
    assert_int_equal(other.ops->open(&opt, &other.kv), DK_OK);
    char e[DK_UUID_LEN];
    open_sid(&f->store, e);
    assert_int_equal(dk_session_check(&f->store, e), DK_OK); /* cached for f's store */
    revoke_record_only(&other, e);
    assert_int_equal(dk_session_check(&other, e), DK_E_UNAUTHORIZED);
    other.ops->close(other.kv);
}

/* Threads check one session after another while the main thread revokes them: once
 * dk_session_revoke has returned, no check that starts afterwards may accept the session — in
 * particular not one whose store answer ("not revoked") was on its way during the revocation. */
enum { RACE_ROUNDS = 1000, RACE_THREADS = 3 };

struct race {
    const dk_store *store;
    char sids[RACE_ROUNDS][DK_UUID_LEN];
    atomic_int round;      /* the session being hammered */
    atomic_int revoked;    /* rounds whose revoke has returned */
    atomic_int violations; /* checks that started after the revoke and still said OK */
    atomic_int errors;
    atomic_bool done;
};

static void *race_checker(void *arg)
{
    struct race *r = arg;
    while (!atomic_load(&r->done)) {
        int i = atomic_load(&r->round);
        bool after = atomic_load(&r->revoked) > i;
        dk_status st = dk_session_check(r->store, r->sids[i]);
        if (st == DK_OK && after)
            atomic_fetch_add(&r->violations, 1);
        else if (st != DK_OK && st != DK_E_UNAUTHORIZED)
            atomic_fetch_add(&r->errors, 1);
    }
    return NULL;
}

static void test_guard_no_stale_answer_after_revoke(void **state)
{
    struct fixture *f = fx(state);
    assert_int_equal(dk_session_guard_start(&f->store), DK_OK);
    assert_true(wait_live(0, 2000));
    struct race *r = test_calloc(1, sizeof *r);
    r->store = &f->store;
    for (int i = 0; i < RACE_ROUNDS; i++)
        open_sid(&f->store, r->sids[i]);
    pthread_t th[RACE_THREADS];
    for (int i = 0; i < RACE_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, race_checker, r), 0);
    /* no assertion while the checkers run: they must be joined whatever happens */
    for (int i = 0; i < RACE_ROUNDS; i++) {
        atomic_store(&r->round, i);
        for (int k = 0; k < 20; k++) /* let the checkers cache it */
            if (dk_session_check(&f->store, r->sids[i]) != DK_OK)
                atomic_fetch_add(&r->errors, 1);
        if (dk_session_revoke(&f->store, r->sids[i], 60000) != DK_OK)
            atomic_fetch_add(&r->errors, 1);
        atomic_store(&r->revoked, i + 1);
        for (int k = 0; k < 20; k++)
            if (dk_session_check(&f->store, r->sids[i]) != DK_E_UNAUTHORIZED)
                atomic_fetch_add(&r->violations, 1);
    }
    atomic_store(&r->done, true);
    for (int i = 0; i < RACE_THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(atomic_load(&r->violations), 0);
    assert_int_equal(atomic_load(&r->errors), 0);
    test_free(r);
}

/* --- the check cache over Redis -------------------------------------------------------------- */

static redisContext *raw_redis(void)
{
    char host[64];
    int port;
    const char *url = dk_test_env("DOCKET_TEST_REDIS_URL");
    assert_non_null(url);
    assert_int_equal(sscanf(url, "redis://%63[^:/]:%d", host, &port), 2);
    struct timeval tv = {.tv_sec = 2};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    return c;
}

static void raw_do(redisContext *c, const char *cmd)
{
    redisReply *r = redisCommand(c, cmd);
    assert_non_null(r);
    assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
}

/* GET calls the server has run since the last CONFIG RESETSTAT. */
static long get_calls(redisContext *c)
{
    redisReply *r = redisCommand(c, "INFO commandstats");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    long calls = 0;
    const char *p = strstr(r->str, "cmdstat_get:calls=");
    if (p)
        assert_int_equal(sscanf(p, "cmdstat_get:calls=%ld", &calls), 1);
    freeReplyObject(r);
    return calls;
}

/* A second store on the same server and prefix: another process of the deployment. */
static dk_store open_peer(const char *url)
{
    dk_store s = {.ops = &dk_kv_redis_ops};
    dk_kv_options opt = {.url = url, .pool_size = 2, .timeout_ms = 300, .key_prefix = "sgtest:"};
    assert_int_equal(s.ops->open(&opt, &s.kv), DK_OK);
    return s;
}

static void test_guard_redis_saves_calls_and_sees_remote_revocations(void **state)
{
    struct fixture *f = fx(state);
    dk_store peer = open_peer(dk_test_env("DOCKET_TEST_REDIS_URL"));
    redisContext *raw = raw_redis();
    char sid[DK_UUID_LEN];
    open_sid(&f->store, sid);

    /* without the guard: one GET per check */
    raw_do(raw, "CONFIG RESETSTAT");
    for (int i = 0; i < 50; i++)
        assert_int_equal(dk_session_check(&f->store, sid), DK_OK);
    assert_int_equal(get_calls(raw), 50);

    assert_int_equal(dk_session_guard_start(&f->store), DK_OK);
    assert_true(wait_live(0, 2000));
    raw_do(raw, "CONFIG RESETSTAT");
    for (int i = 0; i < 500; i++)
        assert_int_equal(dk_session_check(&f->store, sid), DK_OK);
    assert_int_equal(get_calls(raw), 1); /* the first one only */

    /* revoked through the other process: refused here within 100 ms */
    int64_t start = dk_mono_ms();
    assert_int_equal(dk_session_revoke(&peer, sid, 60000), DK_OK);
    dk_status st;
    while ((st = dk_session_check(&f->store, sid)) == DK_OK && dk_mono_ms() - start < 1000)
        sleep_ms(1);
    assert_int_equal(st, DK_E_UNAUTHORIZED);
    assert_true(dk_mono_ms() - start < 100);

    /* what the broadcast buys: a record written without it stays unseen while cached */
    char quiet[DK_UUID_LEN];
    open_sid(&f->store, quiet);
    assert_int_equal(dk_session_check(&f->store, quiet), DK_OK);
    revoke_record_only(&peer, quiet);
    sleep_ms(50);
    assert_int_equal(dk_session_check(&f->store, quiet), DK_OK);

    redisFree(raw);
    peer.ops->close(peer.kv);
}

static void test_guard_redis_client_kill_flushes(void **state)
{
    struct fixture *f = fx(state);
    redisContext *raw = raw_redis();
    assert_int_equal(dk_session_guard_start(&f->store), DK_OK);
    assert_true(wait_live(0, 2000));
    char sid[DK_UUID_LEN];
    open_sid(&f->store, sid);
    assert_int_equal(dk_session_check(&f->store, sid), DK_OK);
    raw_do(raw, "CONFIG RESETSTAT");
    assert_int_equal(dk_session_check(&f->store, sid), DK_OK);
    assert_int_equal(get_calls(raw), 0); /* cached */

    uint64_t outages = guard_stats().outages;
    raw_do(raw, "CLIENT KILL TYPE pubsub");
    /* lost, flushed, subscribed again */
    assert_true(wait_live(outages + 1, 3000));
    raw_do(raw, "CONFIG RESETSTAT");
    assert_int_equal(dk_session_check(&f->store, sid), DK_OK);
    assert_int_equal(get_calls(raw), 1); /* asked the store: the cache was flushed */
    assert_int_equal(dk_session_check(&f->store, sid), DK_OK);
    assert_int_equal(get_calls(raw), 1); /* and cached again */
    redisFree(raw);
}

static void test_guard_redis_down_asks_the_store(void **state)
{
    struct fixture *f = fx(state);
    redisContext *raw = raw_redis();
    assert_int_equal(dk_session_guard_start(&f->store), DK_OK);
    assert_true(wait_live(0, 2000));
    char sid[DK_UUID_LEN];
    open_sid(&f->store, sid);
    assert_int_equal(dk_session_check(&f->store, sid), DK_OK);

    /* the server stalls: the subscription notices (its PING goes unanswered), and checks go
     * to the store, failing as it fails, instead of trusting the cache */
    uint64_t outages = guard_stats().outages;
    raw_do(raw, "CLIENT PAUSE 2000 ALL");
    int64_t start = dk_mono_ms();
    assert_true(wait_not_live(1500));
    assert_true(dk_mono_ms() - start < 2 * 300 + 300);
    assert_true(guard_stats().outages > outages);
    assert_int_equal(dk_session_check(&f->store, sid), DK_E_UNAVAILABLE);

    /* back: live again and answering */
    assert_true(wait_live(outages + 1, 5000));
    assert_int_equal(dk_session_check(&f->store, sid), DK_OK);
    raw_do(raw, "CONFIG RESETSTAT");
    assert_int_equal(dk_session_check(&f->store, sid), DK_OK);
    assert_int_equal(get_calls(raw), 0);
    redisFree(raw);
}

/* A revocation whose record was written but whose broadcast failed is reported as failed:
 * other processes may still hold the session in their caches. */
static void test_guard_redis_broadcast_failure_is_an_error(void **state)
{
    struct fixture *f = fx(state);
    redisContext *raw = raw_redis();
    char user[64], cmd[192];
    snprintf(user, sizeof user, "sgtest-nopub-%d", (int)getpid());
    snprintf(cmd, sizeof cmd, "ACL SETUSER %s on >pw ~* &* +@all -publish", user);
    raw_do(raw, cmd);
    char host[64], url[192];
    int port;
    assert_int_equal(
        sscanf(dk_test_env("DOCKET_TEST_REDIS_URL"), "redis://%63[^:/]:%d", host, &port), 2);
    snprintf(url, sizeof url, "redis://%s:pw@%s:%d", user, host, port);
    dk_store mute = open_peer(url);

    assert_int_equal(dk_session_guard_start(&f->store), DK_OK);
    assert_true(wait_live(0, 2000));
    char sid[DK_UUID_LEN];
    open_sid(&f->store, sid);
    assert_int_equal(dk_session_check(&f->store, sid), DK_OK);
    assert_int_equal(dk_session_revoke(&mute, sid, 60000), DK_E_INTERNAL);
    /* the record is there (the source of truth), but this process never heard of it */
    assert_int_equal(dk_session_check(&mute, sid), DK_E_UNAUTHORIZED);
    sleep_ms(50);
    assert_int_equal(dk_session_check(&f->store, sid), DK_OK);

    mute.ops->close(mute.kv);
    snprintf(cmd, sizeof cmd, "ACL DELUSER %s", user);
    raw_do(raw, cmd);
    redisFree(raw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_revoke_and_check, setup_memory, teardown),
        cmocka_unit_test_setup_teardown(test_missing_record, setup_memory, teardown),
        cmocka_unit_test_setup_teardown(test_revocation_expires, setup_memory, teardown),
        cmocka_unit_test_setup_teardown(test_open_sets_the_lifetime, setup_memory, teardown),
        cmocka_unit_test_setup_teardown(test_source_answers_missing_records, setup_memory,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_seed_interrupted, setup_memory, teardown),
        cmocka_unit_test_setup_teardown(test_touch_and_last_used, setup_memory, teardown),
        cmocka_unit_test_setup_teardown(test_touch_throttle_is_per_session, setup_memory, teardown),
        cmocka_unit_test_setup_teardown(test_touch_ttl, setup_memory, teardown),
        cmocka_unit_test_setup_teardown(test_last_used_garbage_reads_zero, setup_memory, teardown),
        cmocka_unit_test_setup_teardown(test_revoke_and_check, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_missing_record, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_revocation_expires, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_open_sets_the_lifetime, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_seed_interrupted, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_touch_and_last_used, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_touch_ttl, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_last_used_garbage_reads_zero, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_store_errors_pass_through, setup_dead_redis, teardown),
        cmocka_unit_test_setup_teardown(test_guard_memory, setup_memory, teardown_guard),
        cmocka_unit_test_setup_teardown(test_guard_no_stale_answer_after_revoke, setup_memory,
                                        teardown_guard),
        cmocka_unit_test_setup_teardown(test_revoke_and_check, setup_redis, teardown_guard),
        cmocka_unit_test_setup_teardown(test_guard_redis_saves_calls_and_sees_remote_revocations,
                                        setup_redis, teardown_guard),
        cmocka_unit_test_setup_teardown(test_guard_redis_client_kill_flushes, setup_redis,
                                        teardown_guard),
        cmocka_unit_test_setup_teardown(test_guard_redis_down_asks_the_store, setup_redis,
                                        teardown_guard),
        cmocka_unit_test_setup_teardown(test_guard_redis_broadcast_failure_is_an_error, setup_redis,
                                        teardown_guard),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
