/* test_ratelimit.c — the fixed-window limiter: over the memory store always, over Redis too
 * when DOCKET_TEST_REDIS_URL is set; a kv failure comes back as the kv's status. */
#include "testutil.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "core/arena.h"
#include "core/ratelimit.h"
#include "core/timeutil.h"
#include "ports/kv.h"
#include "adapters/kv.h"
#include "core/banned.h"

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static dk_store *store_new(const struct dk_kv_ops *ops, const char *url)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "rlt%d:", (int)getpid());
    dk_kv_options opt = {.url = url, .pool_size = 2, .timeout_ms = 1000, .key_prefix = prefix};
    dk_store *s = test_calloc(1, sizeof *s);
    s->ops = ops;
    assert_int_equal(ops->open(&opt, &s->kv), DK_OK);
    return s;
}

static void store_free(dk_store *s)
{
    if (!s)
        return;
    s->ops->close(s->kv);
    test_free(s);
}

static int setup_memory(void **state)
{
    *state = store_new(&dk_kv_memory_ops, NULL);
    return 0;
}

static int setup_redis(void **state)
{
    const char *url = dk_test_env("DOCKET_TEST_REDIS_URL");
    *state = url ? store_new(&dk_kv_redis_ops, url) : NULL;
    return 0;
}

static int teardown(void **state)
{
    store_free(*state);
    return 0;
}

static dk_store *store_or_skip(void **state)
{
    if (!*state)
        skip();
    return *state;
}

/* A unique client name per run, so a shared Redis never carries a count over. */
static const char *client_name(char *buf, size_t cap, const char *base)
{
    snprintf(buf, cap, "%s-%d-%lld", base, (int)getpid(), (long long)dk_mono_ms());
    return buf;
}

static void test_allowed_then_denied(void **state)
{
    dk_store *s = store_or_skip(state);
    char client[64];
    client_name(client, sizeof client, "10.0.0.1");
    dk_ratelimit_result r;
    for (int64_t i = 1; i <= 3; i++) {
        assert_int_equal(dk_ratelimit_hit(s, "login", client, 3, 60000, &r), DK_OK);
        assert_true(r.allowed);
        assert_int_equal(r.limit, 3);
        assert_int_equal(r.remaining, 3 - i);
        assert_int_equal(r.reset_s, 60); /* ≤ 60000 ms left, rounded up */
        assert_int_equal(r.retry_after_s, 0);
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(dk_ratelimit_hit(s, "login", client, 3, 60000, &r), DK_OK);
        assert_false(r.allowed);
        assert_int_equal(r.limit, 3);
        assert_int_equal(r.remaining, 0); /* never negative */
        assert_true(r.reset_s >= 59 && r.reset_s <= 60);
        assert_int_equal(r.retry_after_s, r.reset_s);
    }

    /* other clients and other buckets count on their own */
    char other[64];
    client_name(other, sizeof other, "10.0.0.2");
    assert_int_equal(dk_ratelimit_hit(s, "login", other, 3, 60000, &r), DK_OK);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 2);
    assert_int_equal(dk_ratelimit_hit(s, "api", client, 3, 60000, &r), DK_OK);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 2);
}

static void test_key_layout(void **state)
{
    dk_store *s = store_or_skip(state);
    char client[64];
    client_name(client, sizeof client, "2001:db8::1"); /* colons in the client are fine */
    dk_ratelimit_result r;
    assert_int_equal(dk_ratelimit_hit(s, "signup", client, 5, 60000, &r), DK_OK);
    assert_int_equal(dk_ratelimit_hit(s, "signup", client, 5, 60000, &r), DK_OK);
    char key[128];
    snprintf(key, sizeof key, "rl:signup:%s", client);
    dk_arena *a = dk_arena_new();
    char *val;
    size_t len;
    assert_int_equal(s->ops->get(s->kv, a, key, &val, &len), DK_OK);
    assert_non_null(val);
    assert_string_equal(val, "2");
    dk_arena_free(a);

    /* a client longer than the limiter's stack buffer */
    char longc[600];
    memset(longc, 'c', sizeof longc - 1);
    longc[sizeof longc - 1] = '\0';
    longc[0] = (char)('a' + dk_mono_ms() % 26);
    assert_int_equal(dk_ratelimit_hit(s, "signup", longc, 1, 60000, &r), DK_OK);
    assert_true(r.allowed);
    assert_int_equal(dk_ratelimit_hit(s, "signup", longc, 1, 60000, &r), DK_OK);
    assert_false(r.allowed);
}

static void test_client_key(void **state)
{
    (void)state;
    char out[DK_RATELIMIT_CLIENT_KEY_LEN];
    assert_string_equal(dk_ratelimit_client_key("10.1.2.3", out), "10.1.2.3");
    assert_string_equal(dk_ratelimit_client_key("2001:db8:1:2:3:4:5:6", out), "2001:db8:1:2::/64");
    assert_string_equal(dk_ratelimit_client_key("2001:DB8:1:2::ffff", out), "2001:db8:1:2::/64");
    assert_string_equal(dk_ratelimit_client_key("::1", out), "0:0:0:0::/64");
    assert_string_equal(dk_ratelimit_client_key("::ffff:192.0.2.7", out), "192.0.2.7");
    assert_string_equal(dk_ratelimit_client_key("not:an:address", out), "not:an:address");
    assert_string_equal(dk_ratelimit_client_key("", out), "");
}

/* Addresses of one /64 share a counter; the next /64 has its own. */
static void test_ipv6_counted_by_prefix(void **state)
{
    dk_store *s = store_or_skip(state);
    unsigned tag = (unsigned)(getpid() ^ dk_mono_ms()) & 0xffff;
    char a[64], b[64], other[64];
    snprintf(a, sizeof a, "2001:db8:%x:1::1", tag);
    snprintf(b, sizeof b, "2001:db8:%x:1:ffff:ffff:ffff:fffe", tag);
    snprintf(other, sizeof other, "2001:db8:%x:2::1", tag);
    dk_ratelimit_result r;
    assert_int_equal(dk_ratelimit_hit(s, "v6", a, 2, 60000, &r), DK_OK);
    assert_true(r.allowed);
    assert_int_equal(dk_ratelimit_hit(s, "v6", b, 2, 60000, &r), DK_OK);
    assert_true(r.allowed);
    assert_int_equal(dk_ratelimit_hit(s, "v6", b, 2, 60000, &r), DK_OK);
    assert_false(r.allowed); /* a and b are one client */
    assert_int_equal(dk_ratelimit_hit(s, "v6", other, 2, 60000, &r), DK_OK);
    assert_true(r.allowed);
    char key[128];
    snprintf(key, sizeof key, "rl:v6:2001:db8:%x:1::/64", tag);
    dk_arena *ar = dk_arena_new();
    char *val;
    size_t len;
    assert_int_equal(s->ops->get(s->kv, ar, key, &val, &len), DK_OK);
    assert_non_null(val);
    assert_string_equal(val, "3");
    dk_arena_free(ar);
}

static void test_window_resets(void **state)
{
    dk_store *s = store_or_skip(state);
    char client[64];
    client_name(client, sizeof client, "reset");
    dk_ratelimit_result r;
    assert_int_equal(dk_ratelimit_hit(s, "b", client, 1, 80, &r), DK_OK);
    assert_true(r.allowed);
    assert_int_equal(r.reset_s, 1); /* 80 ms rounds up to one second */
    assert_int_equal(dk_ratelimit_hit(s, "b", client, 1, 80, &r), DK_OK);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_s, 1);

    /* poll until the window has passed: allowed again, with the full quota */
    int64_t start = dk_mono_ms();
    bool again = false;
    while (!again && dk_mono_ms() - start < 3000) {
        sleep_ms(10);
        assert_int_equal(dk_ratelimit_hit(s, "b", client, 1, 80, &r), DK_OK);
        again = r.allowed;
    }
    assert_true(again);
    assert_int_equal(r.remaining, 0);

    /* rounding: 1500 ms left reads as 2 s */
    client_name(client, sizeof client, "round");
    assert_int_equal(dk_ratelimit_hit(s, "b", client, 10, 1500, &r), DK_OK);
    assert_int_equal(r.reset_s, 2);
    assert_int_equal(r.remaining, 9);
}

static void test_limit_zero_and_bad_args(void **state)
{
    dk_store *s = store_or_skip(state);
    char client[64];
    client_name(client, sizeof client, "zero");
    dk_ratelimit_result r = {.limit = 77};
    assert_int_equal(dk_ratelimit_hit(s, "z", client, 0, 1000, &r), DK_OK);
    assert_false(r.allowed);
    assert_int_equal(r.remaining, 0);
    assert_true(r.retry_after_s >= 1);

    r.limit = 77;
    assert_int_equal(dk_ratelimit_hit(s, "z", client, -1, 1000, &r), DK_E_INTERNAL);
    assert_int_equal(dk_ratelimit_hit(s, "z", client, 5, 0, &r), DK_E_INTERNAL);
    assert_int_equal(dk_ratelimit_hit(s, NULL, client, 5, 1000, &r), DK_E_INTERNAL);
    assert_int_equal(dk_ratelimit_hit(s, "z", NULL, 5, 1000, &r), DK_E_INTERNAL);
    assert_int_equal(dk_ratelimit_hit(NULL, "z", client, 5, 1000, &r), DK_E_INTERNAL);
    assert_int_equal(r.limit, 77); /* untouched on failure */
}

static void test_kv_failure_is_returned(void **state)
{
    (void)state;
    /* a Redis URL where nothing listens */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t slen = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &slen), 0);
    close(fd);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", ntohs(sa.sin_port));
    dk_store *s = store_new(&dk_kv_redis_ops, url);
    dk_ratelimit_result r = {.limit = 77};
    assert_int_equal(dk_ratelimit_hit(s, "login", "1.2.3.4", 5, 1000, &r), DK_E_UNAVAILABLE);
    assert_int_equal(r.limit, 77);
    store_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_allowed_then_denied, setup_memory, teardown),
        cmocka_unit_test_setup_teardown(test_key_layout, setup_memory, teardown),
        cmocka_unit_test(test_client_key),
        cmocka_unit_test_setup_teardown(test_ipv6_counted_by_prefix, setup_memory, teardown),
        cmocka_unit_test_setup_teardown(test_window_resets, setup_memory, teardown),
        cmocka_unit_test_setup_teardown(test_limit_zero_and_bad_args, setup_memory, teardown),
        /* the same tests over Redis, named apart */
        {"redis_allowed_then_denied", test_allowed_then_denied, setup_redis, teardown, NULL},
        {"redis_key_layout", test_key_layout, setup_redis, teardown, NULL},
        {"redis_window_resets", test_window_resets, setup_redis, teardown, NULL},
        {"redis_limit_zero_and_bad_args", test_limit_zero_and_bad_args, setup_redis, teardown,
         NULL},
        cmocka_unit_test(test_kv_failure_is_returned),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
