/* test_timer_wheel.c — the timing wheel: never early, found at the first expiry of its tick,
 * order across ticks, cancel (also of a due timer not yet taken), moving a timer, timers beyond
 * the ring's span (wrap-around), a clock that jumps, and a random run checked against a plain
 * list of due times. */
#include "testutil.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/timer_wheel.h"
#include "core/banned.h"

/* Expires everything due at now into out (the indexes of timers in ts); returns how many. */
static int expire_all(dk_wheel *w, dk_wheel_timer *ts, int64_t now, int *out, int cap)
{
    int n = 0;
    dk_wheel_timer *t;
    while ((t = dk_wheel_expire(w, now)) != NULL) {
        assert_true(t->due <= now);
        assert_false(dk_wheel_armed(t));
        assert_true(n < cap);
        out[n++] = (int)(t - ts);
    }
    return n;
}

static void test_fires_at_due_not_before(void **state)
{
    (void)state;
    dk_wheel w;
    dk_wheel_init(&w, 100, 1000, 10000);
    dk_wheel_timer ts[3] = {0};
    dk_wheel_set(&w, &ts[0], 10250);
    dk_wheel_set(&w, &ts[1], 10250);
    dk_wheel_set(&w, &ts[2], 10999);
    assert_int_equal(dk_wheel_count(&w), 3);
    int out[8];
    assert_int_equal(expire_all(&w, ts, 10249, out, 8), 0); /* one ms early */
    assert_int_equal(expire_all(&w, ts, 10250, out, 8), 0); /* due, its tick (to 10300) not */
    assert_int_equal(expire_all(&w, ts, 10299, out, 8), 0);
    assert_int_equal(expire_all(&w, ts, 10300, out, 8), 2);
    assert_true(out[0] == 0 && out[1] == 1); /* in the order they were set */
    assert_int_equal(dk_wheel_count(&w), 1);
    assert_int_equal(expire_all(&w, ts, 10999, out, 8), 0);
    assert_int_equal(expire_all(&w, ts, 11000, out, 8), 1);
    assert_int_equal(out[0], 2);
    assert_int_equal(dk_wheel_count(&w), 0);
    assert_null(dk_wheel_expire(&w, 20000));
    dk_wheel_release(&w);
}

static void test_order_across_ticks(void **state)
{
    (void)state;
    dk_wheel w;
    dk_wheel_init(&w, 10, 500, 0);
    dk_wheel_timer ts[40] = {0};
    for (int i = 39; i >= 0; i--) /* added latest first */
        dk_wheel_set(&w, &ts[i], 5 + (int64_t)i * 10);
    int out[40];
    assert_int_equal(expire_all(&w, ts, 400, out, 40), 40); /* within one revolution */
    for (int i = 0; i < 40; i++)
        assert_int_equal(out[i], i); /* one per tick: in due order */
    dk_wheel_release(&w);
}

static void test_cancel_and_move(void **state)
{
    (void)state;
    dk_wheel w;
    dk_wheel_init(&w, 100, 1000, 0);
    dk_wheel_timer ts[4] = {0};
    for (int i = 0; i < 4; i++)
        dk_wheel_set(&w, &ts[i], 300);
    dk_wheel_cancel(&w, &ts[1]);
    dk_wheel_cancel(&w, &ts[1]); /* harmless twice */
    assert_false(dk_wheel_armed(&ts[1]));
    dk_wheel_set(&w, &ts[2], 700); /* moved later */
    dk_wheel_set(&w, &ts[3], 350); /* moved within the tick */
    assert_int_equal(dk_wheel_count(&w), 3);
    int out[4];
    assert_int_equal(expire_all(&w, ts, 300, out, 4), 1);
    assert_int_equal(out[0], 0);
    /* a due timer not yet taken can be cancelled */
    dk_wheel_set(&w, &ts[0], 350);
    assert_null(dk_wheel_expire(&w, 360));
    assert_true(dk_wheel_expire(&w, 400) == &ts[3]); /* ts[3], then ts[0] ... */
    assert_true(dk_wheel_armed(&ts[0]));             /* ... which waits, taken off here */
    dk_wheel_cancel(&w, &ts[0]);
    assert_null(dk_wheel_expire(&w, 400));
    assert_int_equal(dk_wheel_count(&w), 1);
    assert_int_equal(expire_all(&w, ts, 699, out, 4), 0);
    assert_int_equal(expire_all(&w, ts, 700, out, 4), 1);
    assert_int_equal(out[0], 2);
    dk_wheel_release(&w);
}

static void test_wrap_around(void **state)
{
    (void)state;
    dk_wheel w;
    dk_wheel_init(&w, 100, 1000, 0); /* 16 slots: 1.6 s a revolution */
    size_t span = w.nslots * 100;
    dk_wheel_timer ts[3] = {0};
    dk_wheel_set(&w, &ts[0], 250);                         /* slot 2, this round */
    dk_wheel_set(&w, &ts[1], 250 + (int64_t)span);         /* slot 2, next round */
    dk_wheel_set(&w, &ts[2], 250 + 3 * (int64_t)span + 1); /* slot 2, three rounds on */
    int out[3];
    int64_t now = 0;
    int fired[3] = {0};
    for (now = 0; now <= 250 + 4 * (int64_t)span; now += 50) { /* every half tick */
        int n = expire_all(&w, ts, now, out, 3);
        for (int i = 0; i < n; i++) {
            assert_true(now - ts[out[i]].due < 100); /* at the first expiry of its tick */
            fired[out[i]]++;
        }
    }
    for (int i = 0; i < 3; i++)
        assert_int_equal(fired[i], 1);
    dk_wheel_release(&w);
}

static void test_clock_jumps(void **state)
{
    (void)state;
    dk_wheel w;
    dk_wheel_init(&w, 10, 100, 0);
    dk_wheel_timer ts[50] = {0};
    for (int i = 0; i < 50; i++)
        dk_wheel_set(&w, &ts[i], (int64_t)i * 37);
    int out[50];
    /* far beyond the span: everything due at once, each exactly once */
    assert_int_equal(expire_all(&w, ts, 100000, out, 50), 50);
    /* a timer set in the past is due at the next tick */
    dk_wheel_set(&w, &ts[0], 5);
    assert_int_equal(expire_all(&w, ts, 100009, out, 50), 0);
    assert_int_equal(expire_all(&w, ts, 100010, out, 50), 1);
    /* a clock going back finds nothing */
    dk_wheel_set(&w, &ts[1], 100020);
    assert_null(dk_wheel_expire(&w, 50));
    assert_int_equal(expire_all(&w, ts, 100019, out, 50), 0);
    assert_int_equal(expire_all(&w, ts, 100020, out, 50), 1);
    dk_wheel_release(&w);
}

/* Random sets, moves, cancels and expiries against the plain truth: after each expiry run the
 * timers handed out are armed and due, and every armed one whose tick has come was. A timer's
 * tick is its due time's rounded up, or the next one to be handed out when that came already. */
static void test_random_against_model(void **state)
{
    (void)state;
    enum { N = 300 };
    dk_wheel w;
    dk_wheel_init(&w, 50, 2000, 1000);
    dk_wheel_timer ts[N] = {0};
    bool armed[N] = {0};
    int64_t due[N] = {0}, tick[N] = {0};
    int out[N];
    srand(17);
    int64_t now = 1000;
    for (int step = 0; step < 20000; step++) {
        int i = rand() % N;
        switch (rand() % 4) {
        case 0:
        case 1: /* set or move: near, far (several revolutions), or a little in the past */
            due[i] = now + (rand() % 8 == 0 ? rand() % 20000 : rand() % 1500) - 20;
            dk_wheel_set(&w, &ts[i], due[i]);
            tick[i] = (due[i] + 49) / 50 > w.cur ? (due[i] + 49) / 50 : w.cur;
            armed[i] = true;
            break;
        case 2:
            dk_wheel_cancel(&w, &ts[i]);
            armed[i] = false;
            break;
        default: {
            now += rand() % 120;
            int n = expire_all(&w, ts, now, out, N);
            for (int k = 0; k < n; k++) {
                assert_true(armed[out[k]]);
                assert_true(due[out[k]] <= now);
                armed[out[k]] = false;
            }
            size_t left = 0;
            for (int k = 0; k < N; k++) {
                if (armed[k])
                    assert_true(tick[k] * 50 > now); /* nothing whose tick came is left */
                left += armed[k];
            }
            assert_int_equal(dk_wheel_count(&w), left);
        }
        }
    }
    dk_wheel_release(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fires_at_due_not_before),
        cmocka_unit_test(test_order_across_ticks),
        cmocka_unit_test(test_cancel_and_move),
        cmocka_unit_test(test_wrap_around),
        cmocka_unit_test(test_clock_jumps),
        cmocka_unit_test(test_random_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
