/* test_session_guard.c — revocation and last-use records over the real kv adapters: revoke,
 * check, expiry of a revocation, touch throttled to once a second, last_used, and the store's
 * errors passed through (a Redis URL where nothing listens). */
#include "testutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/ids.h"
#include "core/session_guard.h"
#include "core/timeutil.h"
#include "ports/kv.h"
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
    return open_store(state, &dk_kv_redis_ops, url);
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

static void test_revoke_and_check(void **state)
{
    struct fixture *f = fx(state);
    char a[DK_UUID_LEN], b[DK_UUID_LEN];
    new_sid(a);
    new_sid(b);
    assert_int_equal(dk_session_check(&f->store, a), DK_OK);
    assert_int_equal(dk_session_check(&f->store, b), DK_OK);
    assert_int_equal(dk_session_revoke(&f->store, a, 60000), DK_OK);
    assert_int_equal(dk_session_check(&f->store, a), DK_E_UNAUTHORIZED);
    assert_int_equal(dk_session_check(&f->store, b), DK_OK); /* only that session */
    /* revoking twice is fine */
    assert_int_equal(dk_session_revoke(&f->store, a, 60000), DK_OK);
    assert_int_equal(dk_session_check(&f->store, a), DK_E_UNAUTHORIZED);
    /* the record is the documented key */
    char key[96], *val = NULL;
    size_t len = 0;
    snprintf(key, sizeof key, "rev:%s", a);
    assert_int_equal(f->store.ops->get(f->store.kv, f->arena, key, &val, &len), DK_OK);
    assert_non_null(val);
}

static void test_revocation_expires(void **state)
{
    struct fixture *f = fx(state);
    char sid[DK_UUID_LEN];
    new_sid(sid);
    assert_int_equal(dk_session_revoke(&f->store, sid, 80), DK_OK);
    assert_int_equal(dk_session_check(&f->store, sid), DK_E_UNAUTHORIZED);
    sleep_ms(150);
    assert_int_equal(dk_session_check(&f->store, sid), DK_OK);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_revoke_and_check, setup_memory, teardown),
        cmocka_unit_test_setup_teardown(test_revocation_expires, setup_memory, teardown),
        cmocka_unit_test_setup_teardown(test_touch_and_last_used, setup_memory, teardown),
        cmocka_unit_test_setup_teardown(test_touch_throttle_is_per_session, setup_memory, teardown),
        cmocka_unit_test_setup_teardown(test_touch_ttl, setup_memory, teardown),
        cmocka_unit_test_setup_teardown(test_last_used_garbage_reads_zero, setup_memory, teardown),
        cmocka_unit_test_setup_teardown(test_revoke_and_check, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_revocation_expires, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_touch_and_last_used, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_touch_ttl, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_last_used_garbage_reads_zero, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_store_errors_pass_through, setup_dead_redis, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
