/* test_kv_memory.c — the in-process kv adapter: values, expiry, counters, threads, sweeping,
 * publish/subscribe (fan-out before publish returns, channels, unsubscribe, callbacks that never
 * overlap under concurrent publishers). */
#include "testutil.h"

#include "kv_contract.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/arena.h"
#include "core/timeutil.h"
#include "ports/kv.h"
#include "adapters/kv.h"
#include "core/banned.h"

/* Defined in kv_memory.c for tests only. */
size_t dk_kv_memory_entries(dk_kv *kv);

static const struct dk_kv_ops *ops = &dk_kv_memory_ops;

static int open_store(void **state)
{
    dk_kv_options opt = {.key_prefix = "test:"};
    dk_kv *kv = NULL;
    if (ops->open(&opt, &kv) != DK_OK)
        return -1;
    *state = kv;
    return 0;
}

static int close_store(void **state)
{
    ops->close(*state);
    return 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static bool key_exists(dk_kv *kv, const char *key)
{
    return kv_contract_key_exists(ops, kv, key);
}

static int64_t wait_gone(dk_kv *kv, const char *key, int64_t deadline_ms)
{
    return kv_contract_wait_gone(ops, kv, key, deadline_ms);
}

static void test_get_set_del_exists(void **state)
{
    dk_kv *kv = *state;
    dk_arena *a = dk_arena_new();
    char *val = (char *)1;
    size_t len = 99;
    assert_int_equal(ops->get(kv, a, "absent", &val, &len), DK_OK);
    assert_null(val);
    assert_int_equal(len, 0);
    assert_false(key_exists(kv, "absent"));

    assert_int_equal(ops->set(kv, "k1", "hello", 5, 0), DK_OK);
    assert_true(key_exists(kv, "k1"));
    assert_int_equal(ops->get(kv, a, "k1", &val, &len), DK_OK);
    assert_int_equal(len, 5);
    assert_string_equal(val, "hello");

    /* overwrite, longer then shorter */
    assert_int_equal(ops->set(kv, "k1", "a longer value", 14, 0), DK_OK);
    assert_int_equal(ops->get(kv, a, "k1", &val, &len), DK_OK);
    assert_string_equal(val, "a longer value");
    assert_int_equal(ops->set(kv, "k1", "x", 1, 0), DK_OK);
    assert_int_equal(ops->get(kv, a, "k1", &val, &len), DK_OK);
    assert_int_equal(len, 1);
    assert_string_equal(val, "x");

    /* an empty value is present, unlike an absent key */
    assert_int_equal(ops->set(kv, "empty", "", 0, 0), DK_OK);
    assert_int_equal(ops->get(kv, a, "empty", &val, &len), DK_OK);
    assert_non_null(val);
    assert_int_equal(len, 0);
    assert_true(key_exists(kv, "empty"));

    assert_int_equal(ops->del(kv, "k1"), DK_OK);
    assert_false(key_exists(kv, "k1"));
    assert_int_equal(ops->get(kv, a, "k1", &val, &len), DK_OK);
    assert_null(val);
    assert_int_equal(ops->del(kv, "k1"), DK_OK); /* deleting an absent key is fine */
    assert_int_equal(ops->ping(kv, 100), DK_OK);
    dk_arena_free(a);
}

static void test_set_nx_expire_rename(void **state)
{
    dk_arena *a = dk_arena_new();
    kv_contract_set_nx_expire_rename(ops, *state, a);
    /* rename across shards and onto itself */
    char from[32], to[32];
    for (int i = 0; i < 64; i++) {
        snprintf(from, sizeof from, "from-%d", i);
        snprintf(to, sizeof to, "to-%d", i);
        assert_int_equal(ops->set(*state, from, "v", 1, 0), DK_OK);
        assert_int_equal(ops->rename(*state, from, to), DK_OK);
        assert_false(key_exists(*state, from));
        assert_true(key_exists(*state, to));
        assert_int_equal(ops->rename(*state, to, to), DK_OK);
        assert_true(key_exists(*state, to));
    }
    dk_arena_free(a);
}

static void test_binary_values(void **state)
{
    dk_kv *kv = *state;
    dk_arena *a = dk_arena_new();
    const char bin[] = {'a', '\0', 'b', '\0', '\xff', '\0'};
    assert_int_equal(ops->set(kv, "bin", bin, sizeof bin, 0), DK_OK);
    char *val;
    size_t len;
    assert_int_equal(ops->get(kv, a, "bin", &val, &len), DK_OK);
    assert_int_equal(len, sizeof bin);
    assert_memory_equal(val, bin, sizeof bin);
    assert_int_equal(val[len], '\0'); /* terminated for convenience */

    /* a key longer than the adapter's stack buffer */
    char longkey[1000];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    assert_int_equal(ops->set(kv, longkey, "v", 1, 0), DK_OK);
    assert_int_equal(ops->get(kv, a, longkey, &val, &len), DK_OK);
    assert_string_equal(val, "v");
    longkey[500] = 'x'; /* same length, different bytes */
    assert_false(key_exists(kv, longkey));
    dk_arena_free(a);
}

static void test_prefix_separates_nothing_visible(void **state)
{
    (void)state;
    /* Two stores with different prefixes are independent, and a prefix is transparent to
     * the caller: the key it asked for is the key it reads back. */
    dk_kv *a = NULL, *b = NULL;
    dk_kv_options oa = {.key_prefix = "a:"}, ob = {.key_prefix = NULL};
    assert_int_equal(ops->open(&oa, &a), DK_OK);
    assert_int_equal(ops->open(&ob, &b), DK_OK);
    assert_int_equal(ops->set(a, "k", "1", 1, 0), DK_OK);
    assert_true(key_exists(a, "k"));
    assert_false(key_exists(a, "a:k"));
    assert_false(key_exists(b, "k"));
    assert_false(key_exists(b, "a:k"));
    ops->close(a);
    ops->close(b);
    ops->close(NULL);
}

static void test_ttl_expiry(void **state)
{
    dk_kv *kv = *state;
    int64_t start = dk_mono_ms();
    assert_int_equal(ops->set(kv, "short", "v", 1, 50), DK_OK);
    assert_int_equal(ops->set(kv, "long", "v", 1, 60000), DK_OK);
    assert_int_equal(ops->set(kv, "forever", "v", 1, 0), DK_OK);
    assert_true(key_exists(kv, "short"));
    int64_t took = wait_gone(kv, "short", 2000);
    assert_true(took >= 0);
    assert_true(dk_mono_ms() - start >= 50);
    assert_true(key_exists(kv, "long"));
    assert_true(key_exists(kv, "forever"));

    /* get of an expired key reads as absent */
    dk_arena *a = dk_arena_new();
    char *val;
    size_t len;
    assert_int_equal(ops->get(kv, a, "short", &val, &len), DK_OK);
    assert_null(val);

    /* a set without TTL clears an earlier TTL */
    assert_int_equal(ops->set(kv, "t", "v", 1, 30), DK_OK);
    assert_int_equal(ops->set(kv, "t", "w", 1, 0), DK_OK);
    sleep_ms(60);
    assert_int_equal(ops->get(kv, a, "t", &val, &len), DK_OK);
    assert_non_null(val);
    assert_string_equal(val, "w");
    dk_arena_free(a);
}

static void test_incr_window(void **state)
{
    dk_kv *kv = *state;
    int64_t count, ttl;
    for (int64_t i = 1; i <= 3; i++) {
        assert_int_equal(ops->incr_window(kv, "ctr", 60000, &count, &ttl), DK_OK);
        assert_int_equal(count, i);
        assert_true(ttl > 0 && ttl <= 60000);
    }
    dk_arena *a = dk_arena_new();
    char *val;
    size_t len;
    assert_int_equal(ops->get(kv, a, "ctr", &val, &len), DK_OK);
    assert_string_equal(val, "3"); /* a counter reads as its decimal value, as in Redis */

    /* the window resets: a new window starts with 1 */
    assert_int_equal(ops->incr_window(kv, "w", 50, &count, &ttl), DK_OK);
    assert_int_equal(count, 1);
    assert_true(ttl > 0 && ttl <= 50);
    assert_int_equal(ops->incr_window(kv, "w", 50, &count, &ttl), DK_OK);
    assert_int_equal(count, 2);
    assert_true(wait_gone(kv, "w", 2000) >= 0);
    assert_int_equal(ops->incr_window(kv, "w", 50, &count, &ttl), DK_OK);
    assert_int_equal(count, 1);

    /* a counter set without expiry gets one on the next hit */
    assert_int_equal(ops->set(kv, "plain", "41", 2, 0), DK_OK);
    assert_int_equal(ops->incr_window(kv, "plain", 40, &count, &ttl), DK_OK);
    assert_int_equal(count, 42);
    assert_true(ttl > 0 && ttl <= 40);
    assert_true(wait_gone(kv, "plain", 2000) >= 0);

    /* not an integer, or about to overflow: an error, value untouched */
    assert_int_equal(ops->set(kv, "text", "abc", 3, 0), DK_OK);
    assert_int_equal(ops->incr_window(kv, "text", 1000, &count, &ttl), DK_E_INTERNAL);
    assert_int_equal(ops->get(kv, a, "text", &val, &len), DK_OK);
    assert_string_equal(val, "abc");
    assert_int_equal(ops->set(kv, "max", "9223372036854775807", 19, 0), DK_OK);
    assert_int_equal(ops->incr_window(kv, "max", 1000, &count, &ttl), DK_E_INTERNAL);
    assert_int_equal(ops->incr_window(kv, "ctr", 0, &count, &ttl), DK_E_INTERNAL);
    dk_arena_free(a);
}

struct worker {
    dk_kv *kv;
    int id;
    int n;
    int failures;
};

static void *incr_worker(void *arg)
{
    struct worker *w = arg;
    dk_arena *a = dk_arena_new();
    char key[32];
    snprintf(key, sizeof key, "own-%d", w->id);
    for (int i = 0; i < w->n; i++) {
        int64_t count, ttl;
        if (ops->incr_window(w->kv, "shared", 60000, &count, &ttl) != DK_OK)
            w->failures++;
        /* other traffic on the same store at the same time */
        char val[16];
        int len = snprintf(val, sizeof val, "%d", i);
        if (ops->set(w->kv, key, val, (size_t)len, i % 2 ? 1 : 0) != DK_OK)
            w->failures++;
        char *got;
        size_t got_len;
        if (ops->get(w->kv, a, key, &got, &got_len) != DK_OK)
            w->failures++;
        dk_arena_reset(a);
    }
    dk_arena_free(a);
    return NULL;
}

static void test_concurrent_increments(void **state)
{
    dk_kv *kv = *state;
    enum { THREADS = 4, PER_THREAD = 5000 };
    pthread_t th[THREADS];
    struct worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){.kv = kv, .id = i, .n = PER_THREAD};
        assert_int_equal(pthread_create(&th[i], NULL, incr_worker, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(w[i].failures, 0);
    }
    int64_t count, ttl;
    assert_int_equal(ops->incr_window(kv, "shared", 60000, &count, &ttl), DK_OK);
    assert_int_equal(count, THREADS * PER_THREAD + 1);
}

static void test_sweep_bounds_memory(void **state)
{
    dk_kv *kv = *state;
    enum { N = 20000 };
    char key[32];
    size_t before = dk_kv_memory_entries(kv);
    int64_t start = dk_mono_ms();
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "dead-%d", i);
        assert_int_equal(ops->set(kv, key, "v", 1, 400), DK_OK);
    }
    if (dk_mono_ms() - start < 400) /* nothing could have expired yet */
        assert_int_equal(dk_kv_memory_entries(kv), before + N);
    int64_t last_insert = dk_mono_ms();
    while (dk_mono_ms() - last_insert <= 410) /* every dead key has expired now */
        sleep_ms(10);
    /* Nobody reads the dead keys again; only new inserts happen. */
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "live-%d", i);
        assert_int_equal(ops->set(kv, key, "v", 1, 600000), DK_OK);
    }
    size_t after = dk_kv_memory_entries(kv);
    assert_true(after >= before + N);
    assert_true(after <= before + N + N / 20); /* at most 5% of the dead keys left */

    /* deleting the live keys removes exactly them (and perhaps dead keys met on the way) */
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "live-%d", i);
        assert_int_equal(ops->del(kv, key), DK_OK);
    }
    assert_true(dk_kv_memory_entries(kv) <= after - N);
    assert_int_equal(ops->set(kv, "after-shrink", "v", 1, 0), DK_OK);
    assert_true(key_exists(kv, "after-shrink"));
}

static void test_many_keys_survive_resizes(void **state)
{
    dk_kv *kv = *state;
    enum { N = 5000 };
    char key[32], val[32];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "r-%d", i);
        int len = snprintf(val, sizeof val, "v%d", i);
        assert_int_equal(ops->set(kv, key, val, (size_t)len, 0), DK_OK);
    }
    dk_arena *a = dk_arena_new();
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "r-%d", i);
        snprintf(val, sizeof val, "v%d", i);
        char *got;
        size_t len;
        assert_int_equal(ops->get(kv, a, key, &got, &len), DK_OK);
        assert_non_null(got);
        assert_string_equal(got, val);
    }
    dk_arena_free(a);
}

/* --- publish/subscribe ----------------------------------------------------------------------- */

struct recorder {
    int messages;
    char last[64];
    size_t last_len;
    int live_calls, down_calls;
    bool live;
    atomic_int inside; /* callbacks running right now */
    atomic_int overlaps;
};

static void rec_message(void *ctx, const char *msg, size_t len)
{
    struct recorder *r = ctx;
    if (atomic_fetch_add(&r->inside, 1) != 0)
        atomic_fetch_add(&r->overlaps, 1);
    r->messages++;
    r->last_len = len < sizeof r->last ? len : sizeof r->last - 1;
    memcpy(r->last, msg, r->last_len);
    r->last[r->last_len] = msg[len] == '\0' ? '\0' : '!'; /* the promised NUL after the bytes */
    atomic_fetch_sub(&r->inside, 1);
}

static void rec_state(void *ctx, bool live)
{
    struct recorder *r = ctx;
    r->live = live;
    if (live)
        r->live_calls++;
    else
        r->down_calls++;
}

static void test_publish_subscribe(void **state)
{
    dk_kv *kv = *state;
    struct recorder a = {0}, b = {0}, other = {0};
    dk_kv_sub *sa = NULL, *sb = NULL, *so = NULL;
    assert_int_equal(ops->subscribe(kv, "ch", rec_message, rec_state, &a, &sa), DK_OK);
    assert_true(a.live); /* live before subscribe returns */
    assert_int_equal(a.live_calls, 1);
    assert_int_equal(ops->subscribe(kv, "ch", rec_message, rec_state, &b, &sb), DK_OK);
    assert_int_equal(ops->subscribe(kv, "other", rec_message, rec_state, &other, &so), DK_OK);

    assert_int_equal(ops->publish(kv, "ch", "hello", 5), DK_OK);
    /* delivered before publish returned, to the channel's subscribers only */
    assert_int_equal(a.messages, 1);
    assert_int_equal(b.messages, 1);
    assert_int_equal(other.messages, 0);
    assert_string_equal(a.last, "hello");
    assert_int_equal(a.last_len, 5);

    const char bin[] = {'x', '\0', 'y'};
    assert_int_equal(ops->publish(kv, "other", bin, sizeof bin), DK_OK);
    assert_int_equal(other.messages, 1);
    assert_int_equal(other.last_len, 3);
    assert_memory_equal(other.last, bin, 3);
    assert_int_equal(a.messages, 1);

    ops->unsubscribe(kv, sa);
    assert_int_equal(ops->publish(kv, "ch", "again", 5), DK_OK);
    assert_int_equal(a.messages, 1); /* gone */
    assert_int_equal(b.messages, 2);
    assert_string_equal(b.last, "again");
    assert_int_equal(a.down_calls, 0); /* unsubscribe does not report a state */

    assert_int_equal(ops->publish(kv, "nobody", "x", 1), DK_OK);
    assert_int_equal(ops->publish(kv, "ch", "", 0), DK_OK);
    assert_int_equal(b.messages, 3);
    assert_int_equal(b.last_len, 0);
    ops->unsubscribe(kv, NULL);
    ops->unsubscribe(kv, so);
    (void)sb; /* left for close to end */
}

static void test_pubsub_stays_in_its_store(void **state)
{
    dk_kv *kv = *state;
    dk_kv *second = NULL;
    dk_kv_options opt = {.key_prefix = "test:"};
    assert_int_equal(ops->open(&opt, &second), DK_OK);
    struct recorder r = {0};
    dk_kv_sub *sub = NULL;
    assert_int_equal(ops->subscribe(second, "ch", rec_message, rec_state, &r, &sub), DK_OK);
    assert_int_equal(ops->publish(kv, "ch", "hello", 5), DK_OK);
    assert_int_equal(r.messages, 0); /* another store is another process */
    assert_int_equal(ops->publish(second, "ch", "hello", 5), DK_OK);
    assert_int_equal(r.messages, 1);
    ops->close(second); /* ends the subscription */
}

struct publisher {
    dk_kv *kv;
    int n;
};

static void *publish_many(void *arg)
{
    struct publisher *p = arg;
    for (int i = 0; i < p->n; i++)
        if (ops->publish(p->kv, "ch", "m", 1) != DK_OK)
            return (void *)1;
    return NULL;
}

static void test_pubsub_callbacks_never_overlap(void **state)
{
    dk_kv *kv = *state;
    struct recorder r = {0};
    dk_kv_sub *sub = NULL;
    assert_int_equal(ops->subscribe(kv, "ch", rec_message, rec_state, &r, &sub), DK_OK);
    enum { THREADS = 4, EACH = 2000 };
    pthread_t th[THREADS];
    struct publisher p = {.kv = kv, .n = EACH};
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, publish_many, &p), 0);
    for (int i = 0; i < THREADS; i++) {
        void *ret = (void *)1;
        assert_int_equal(pthread_join(th[i], &ret), 0);
        assert_null(ret);
    }
    assert_int_equal(r.messages, THREADS * EACH);
    assert_int_equal(atomic_load(&r.overlaps), 0);
    ops->unsubscribe(kv, sub);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_set_del_exists, open_store, close_store),
        cmocka_unit_test_setup_teardown(test_binary_values, open_store, close_store),
        cmocka_unit_test_setup_teardown(test_set_nx_expire_rename, open_store, close_store),
        cmocka_unit_test(test_prefix_separates_nothing_visible),
        cmocka_unit_test_setup_teardown(test_ttl_expiry, open_store, close_store),
        cmocka_unit_test_setup_teardown(test_incr_window, open_store, close_store),
        cmocka_unit_test_setup_teardown(test_concurrent_increments, open_store, close_store),
        cmocka_unit_test_setup_teardown(test_sweep_bounds_memory, open_store, close_store),
        cmocka_unit_test_setup_teardown(test_many_keys_survive_resizes, open_store, close_store),
        cmocka_unit_test_setup_teardown(test_publish_subscribe, open_store, close_store),
        cmocka_unit_test_setup_teardown(test_pubsub_stays_in_its_store, open_store, close_store),
        cmocka_unit_test_setup_teardown(test_pubsub_callbacks_never_overlap, open_store,
                                        close_store),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
