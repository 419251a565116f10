/* test_limiter.c — the bounded work pool: slot counting, the wait-queue bound, a waiting caller
 * admitted when a slot frees, the max_wait timeout, and a concurrency stress run. */
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "core/limiter.h"
#include "core/timeutil.h"
#include "core/banned.h"

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void stats(dk_limiter *l, int want_active, int want_waiting)
{
    int active = -1, waiting = -1;
    dk_limiter_stats(l, &active, &waiting);
    if (active != want_active || waiting != want_waiting)
        fail_msg("active %d waiting %d, want %d and %d", active, waiting, want_active,
                 want_waiting);
}

/* Waits (up to 2 s) until the limiter reports `waiting` callers in its queue. */
static void wait_for_waiting(dk_limiter *l, int waiting)
{
    int64_t deadline = dk_mono_ms() + 2000;
    for (;;) {
        int a = 0, w = 0;
        dk_limiter_stats(l, &a, &w);
        if (w == waiting)
            return;
        if (dk_mono_ms() > deadline)
            fail_msg("never saw %d waiting (now %d)", waiting, w);
        sleep_ms(1);
    }
}

static void test_enter_leave_counts(void **state)
{
    dk_limiter *l = dk_limiter_new(3, 0, 0);
    stats(l, 0, 0);
    assert_int_equal(dk_limiter_enter(l), DK_OK);
    stats(l, 1, 0);
    assert_int_equal(dk_limiter_enter(l), DK_OK);
    assert_int_equal(dk_limiter_enter(l), DK_OK);
    stats(l, 3, 0);
    /* full and no queue: refused at once */
    int64_t t0 = dk_mono_ms();
    assert_int_equal(dk_limiter_enter(l), DK_E_UNAVAILABLE);
    assert_true(dk_mono_ms() - t0 < 100);
    stats(l, 3, 0);
    dk_limiter_leave(l);
    stats(l, 2, 0);
    assert_int_equal(dk_limiter_enter(l), DK_OK);
    stats(l, 3, 0);
    for (int i = 0; i < 3; i++)
        dk_limiter_leave(l);
    stats(l, 0, 0);
    dk_limiter_free(l);
    dk_limiter_free(NULL); /* accepted */
}

static void test_bounds_clamped(void **state)
{
    /* fewer than one worker means one; a negative queue means none */
    dk_limiter *l = dk_limiter_new(0, -5, 0);
    assert_int_equal(dk_limiter_enter(l), DK_OK);
    assert_int_equal(dk_limiter_enter(l), DK_E_UNAVAILABLE);
    stats(l, 1, 0);
    dk_limiter_leave(l);
    dk_limiter_free(l);
}

struct caller {
    dk_limiter *l;
    int hold_ms; /* how long to keep the slot once in */
    dk_status st;
    int64_t waited_ms;
    atomic_int *inside, *max_inside;
};

static void *caller_main(void *p)
{
    struct caller *c = p;
    int64_t t0 = dk_mono_ms();
    c->st = dk_limiter_enter(c->l);
    c->waited_ms = dk_mono_ms() - t0;
    if (c->st == DK_OK) {
        if (c->inside) {
            int now = atomic_fetch_add(c->inside, 1) + 1;
            int seen = atomic_load(c->max_inside);
            while (now > seen && !atomic_compare_exchange_weak(c->max_inside, &seen, now))
                ;
        }
        if (c->hold_ms)
            sleep_ms(c->hold_ms);
        if (c->inside)
            atomic_fetch_sub(c->inside, 1);
        dk_limiter_leave(c->l);
    }
    return NULL;
}

static void test_waiter_admitted_after_leave(void **state)
{
    dk_limiter *l = dk_limiter_new(1, 1, 5000);
    assert_int_equal(dk_limiter_enter(l), DK_OK);
    struct caller c = {.l = l};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, caller_main, &c), 0);
    wait_for_waiting(l, 1);
    stats(l, 1, 1);
    /* the queue (1) is full now: a third caller is refused at once */
    int64_t t0 = dk_mono_ms();
    assert_int_equal(dk_limiter_enter(l), DK_E_UNAVAILABLE);
    assert_true(dk_mono_ms() - t0 < 100);
    sleep_ms(50);
    dk_limiter_leave(l); /* hands the slot to the waiter */
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(c.st, DK_OK);
    assert_true(c.waited_ms >= 40);
    assert_true(c.waited_ms < 2000);
    stats(l, 0, 0);
    dk_limiter_free(l);
}

static void test_max_wait_timeout(void **state)
{
    dk_limiter *l = dk_limiter_new(1, 4, 150);
    assert_int_equal(dk_limiter_enter(l), DK_OK);
    int64_t t0 = dk_mono_ms();
    assert_int_equal(dk_limiter_enter(l), DK_E_UNAVAILABLE);
    int64_t waited = dk_mono_ms() - t0;
    if (waited < 140 || waited > 1000)
        fail_msg("waited %lld ms for a 150 ms max wait", (long long)waited);
    stats(l, 1, 0); /* the timed-out caller left the queue */
    dk_limiter_leave(l);

    /* max_wait 0 with room in the queue: a full pool still refuses without blocking */
    dk_limiter *z = dk_limiter_new(1, 1, 0);
    assert_int_equal(dk_limiter_enter(z), DK_OK);
    t0 = dk_mono_ms();
    assert_int_equal(dk_limiter_enter(z), DK_E_UNAVAILABLE);
    assert_true(dk_mono_ms() - t0 < 100);
    stats(z, 1, 0);
    dk_limiter_leave(z);
    dk_limiter_free(z);

    /* a max wait over a second (the nanosecond carry) still ends on time */
    dk_limiter *s = dk_limiter_new(1, 1, 1100);
    assert_int_equal(dk_limiter_enter(s), DK_OK);
    t0 = dk_mono_ms();
    assert_int_equal(dk_limiter_enter(s), DK_E_UNAVAILABLE);
    waited = dk_mono_ms() - t0;
    if (waited < 1090 || waited > 2000)
        fail_msg("waited %lld ms for a 1100 ms max wait", (long long)waited);
    dk_limiter_leave(s);
    dk_limiter_free(s);
    dk_limiter_free(l);
}

static void test_several_waiters_in_turn(void **state)
{
    /* 2 workers, 3 waiters: all 5 get in eventually, never more than 2 at once */
    dk_limiter *l = dk_limiter_new(2, 3, 5000);
    atomic_int inside = 0, max_inside = 0;
    struct caller c[5];
    pthread_t th[5];
    for (int i = 0; i < 5; i++) {
        c[i] = (struct caller){.l = l, .hold_ms = 60, .inside = &inside, .max_inside = &max_inside};
        assert_int_equal(pthread_create(&th[i], NULL, caller_main, &c[i]), 0);
    }
    for (int i = 0; i < 5; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(c[i].st, DK_OK);
    assert_int_equal(atomic_load(&max_inside), 2);
    stats(l, 0, 0);
    dk_limiter_free(l);
}

static void test_stress_bound_holds(void **state)
{
    /* 16 threads against 3 workers and a queue of 4: whoever is refused is refused, but never
     * are more than 3 inside, and the counts return to zero */
    enum { T = 16, ROUNDS = 200 };
    dk_limiter *l = dk_limiter_new(3, 4, 20);
    atomic_int inside = 0, max_inside = 0;
    struct caller c[T];
    pthread_t th[T];
    for (int r = 0; r < ROUNDS / 20; r++) {
        for (int i = 0; i < T; i++) {
            c[i] =
                (struct caller){.l = l, .hold_ms = 1, .inside = &inside, .max_inside = &max_inside};
            assert_int_equal(pthread_create(&th[i], NULL, caller_main, &c[i]), 0);
        }
        int ok = 0;
        for (int i = 0; i < T; i++) {
            assert_int_equal(pthread_join(th[i], NULL), 0);
            assert_true(c[i].st == DK_OK || c[i].st == DK_E_UNAVAILABLE);
            ok += c[i].st == DK_OK;
        }
        assert_true(ok >= 3);
    }
    assert_true(atomic_load(&max_inside) <= 3);
    assert_true(atomic_load(&max_inside) >= 1);
    stats(l, 0, 0);
    dk_limiter_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_enter_leave_counts),
        cmocka_unit_test(test_bounds_clamped),
        cmocka_unit_test(test_waiter_admitted_after_leave),
        cmocka_unit_test(test_max_wait_timeout),
        cmocka_unit_test(test_several_waiters_in_turn),
        cmocka_unit_test(test_stress_bound_holds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
