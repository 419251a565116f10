/* test_batch.c — grouping concurrent work: a lone job runs at once on its own thread; jobs that
 * arrive while a group runs are queued (on_queue first, on the caller's thread) and form the next
 * group on a runner thread, oldest first, up to max_jobs, each then done; no more than
 * max_running groups at once; every submitter gets the status its own job was given; drain and
 * free leave no queued job unanswered. */
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "core/batch.h"
#include "core/timeutil.h"
#include "core/banned.h"

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* What the run function saw; each job's arg is an int, whose status is DK_OK when even and
 * DK_E_CONFLICT when odd (so a submitter can tell its own answer from a neighbour's). */
typedef struct recorder {
    pthread_mutex_t lock;
    int ngroups;
    int sizes[64];
    int first[64]; /* the arg of each group's first job */
    int order[256];
    int norder;
    pthread_t runner[64];
    atomic_int running, most_running;
    atomic_bool gate_closed; /* the first group waits while set */
    int sleep_ms;
} recorder;

static void record_run(void *ctx, dk_batch_job **jobs, int n)
{
    recorder *r = ctx;
    int now = atomic_fetch_add(&r->running, 1) + 1;
    int most = atomic_load(&r->most_running);
    while (now > most && !atomic_compare_exchange_weak(&r->most_running, &most, now))
        ;
    pthread_mutex_lock(&r->lock);
    int g = r->ngroups++;
    if (g < 64) {
        r->sizes[g] = n;
        r->first[g] = *(int *)jobs[0]->arg;
        r->runner[g] = pthread_self();
    }
    for (int i = 0; i < n && r->norder < 256; i++)
        r->order[r->norder++] = *(int *)jobs[i]->arg;
    pthread_mutex_unlock(&r->lock);
    while (g == 0 && atomic_load(&r->gate_closed))
        sleep_ms(1);
    if (r->sleep_ms)
        sleep_ms(r->sleep_ms);
    for (int i = 0; i < n; i++)
        jobs[i]->status = *(int *)jobs[i]->arg % 2 ? DK_E_CONFLICT : DK_OK;
    atomic_fetch_sub(&r->running, 1);
}

static recorder *recorder_new(void)
{
    recorder *r = calloc(1, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    return r;
}

static void recorder_free(recorder *r)
{
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* A caller that waits for its job, queued or not: the status run gave arg. */
typedef struct waiter {
    dk_batch_job job; /* first */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
} waiter;

static void waiter_done(dk_batch_job *job)
{
    waiter *w = (waiter *)job;
    pthread_mutex_lock(&w->lock);
    w->done = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static dk_status submit(dk_batch *b, void *arg)
{
    waiter w = {.job = {.arg = arg, .status = DK_E_INTERNAL, .done = waiter_done}};
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    if (!dk_batch_run_or_queue(b, &w.job)) {
        pthread_mutex_lock(&w.lock);
        while (!w.done)
            pthread_cond_wait(&w.cond, &w.lock);
        pthread_mutex_unlock(&w.lock);
    }
    pthread_cond_destroy(&w.cond);
    pthread_mutex_destroy(&w.lock);
    return w.job.status;
}

typedef struct submitter {
    dk_batch *b;
    int arg;
    dk_status got;
    pthread_t thread;
} submitter;

static void *submit_main(void *arg)
{
    submitter *s = arg;
    s->got = submit(s->b, &s->arg);
    return NULL;
}

static void wait_queued(dk_batch *b, int want)
{
    int64_t deadline = dk_mono_ms() + 5000;
    for (;;) {
        long g, j;
        int q;
        dk_batch_stats(b, &g, &j, &q);
        if (q == want)
            return;
        if (dk_mono_ms() > deadline)
            fail_msg("never saw %d queued (now %d)", want, q);
        sleep_ms(1);
    }
}

static void test_a_lone_job_runs_at_once_on_its_own_thread(void **state)
{
    (void)state;
    recorder *r = recorder_new();
    dk_batch *b = dk_batch_new(record_run, r, 16, 2);
    int even = 4, odd = 7;
    assert_int_equal(submit(b, &even), DK_OK);
    assert_int_equal(submit(b, &odd), DK_E_CONFLICT);
    assert_int_equal(r->ngroups, 2);
    assert_int_equal(r->sizes[0], 1);
    assert_int_equal(r->sizes[1], 1);
    assert_true(pthread_equal(r->runner[0], pthread_self()));
    long g, j;
    int q;
    dk_batch_stats(b, &g, &j, &q);
    assert_int_equal(g, 2);
    assert_int_equal(j, 2);
    assert_int_equal(q, 0);
    dk_batch_free(b);
    recorder_free(r);
}

/* Runs a first job whose group is held, queues `queued` more one after the other, opens the
 * gate, and returns once all are answered. */
static void hold_then_queue(dk_batch *b, recorder *r, submitter *s, int queued)
{
    atomic_store(&r->gate_closed, true);
    s[0] = (submitter){.b = b, .arg = 100};
    assert_int_equal(pthread_create(&s[0].thread, NULL, submit_main, &s[0]), 0);
    int64_t deadline = dk_mono_ms() + 5000;
    while (atomic_load(&r->running) == 0 && dk_mono_ms() < deadline)
        sleep_ms(1);
    assert_int_equal(atomic_load(&r->running), 1);
    for (int i = 1; i <= queued; i++) {
        s[i] = (submitter){.b = b, .arg = i};
        assert_int_equal(pthread_create(&s[i].thread, NULL, submit_main, &s[i]), 0);
        wait_queued(b, i); /* one after the other: the queue's order is known */
    }
    atomic_store(&r->gate_closed, false);
    for (int i = 0; i <= queued; i++) {
        pthread_join(s[i].thread, NULL);
        assert_int_equal(s[i].got, s[i].arg % 2 ? DK_E_CONFLICT : DK_OK);
    }
}

static void test_jobs_waiting_for_a_group_form_the_next_one_in_order(void **state)
{
    (void)state;
    recorder *r = recorder_new();
    dk_batch *b = dk_batch_new(record_run, r, 16, 1);
    submitter s[6];
    hold_then_queue(b, r, s, 5);
    assert_int_equal(r->ngroups, 2);
    assert_int_equal(r->sizes[0], 1);
    assert_int_equal(r->sizes[1], 5);
    int want[] = {100, 1, 2, 3, 4, 5};
    assert_memory_equal(r->order, want, sizeof want);
    /* the second group ran on a runner thread, none of the submitters' */
    for (int i = 0; i < 6; i++)
        assert_false(pthread_equal(r->runner[1], s[i].thread));
    dk_batch_free(b);
    recorder_free(r);
}

static void test_a_group_holds_at_most_max_jobs(void **state)
{
    (void)state;
    recorder *r = recorder_new();
    dk_batch *b = dk_batch_new(record_run, r, 2, 1);
    submitter s[6];
    hold_then_queue(b, r, s, 5);
    assert_int_equal(r->ngroups, 4);
    int sizes[] = {1, 2, 2, 1};
    assert_memory_equal(r->sizes, sizes, sizeof sizes);
    int want[] = {100, 1, 2, 3, 4, 5};
    assert_memory_equal(r->order, want, sizeof want);
    dk_batch_free(b);
    recorder_free(r);
}

/* With max_running 2 and one group held, a job arriving alone starts a second group at once. */
static void test_a_second_group_starts_while_the_first_runs(void **state)
{
    (void)state;
    recorder *r = recorder_new();
    dk_batch *b = dk_batch_new(record_run, r, 16, 2);
    atomic_store(&r->gate_closed, true);
    submitter first = {.b = b, .arg = 100};
    assert_int_equal(pthread_create(&first.thread, NULL, submit_main, &first), 0);
    int64_t deadline = dk_mono_ms() + 5000;
    while (atomic_load(&r->running) == 0 && dk_mono_ms() < deadline)
        sleep_ms(1);
    int odd = 3;
    assert_int_equal(submit(b, &odd), DK_E_CONFLICT); /* returns while 1st is held */
    assert_int_equal(atomic_load(&r->running), 1);
    atomic_store(&r->gate_closed, false);
    pthread_join(first.thread, NULL);
    assert_int_equal(first.got, DK_OK);
    assert_int_equal(r->ngroups, 2);
    dk_batch_free(b);
    recorder_free(r);
}

/* A queued job's caller is not held: on_queue runs on its thread before run_or_queue returns
 * false, done later on a runner with the status set; drain returns once all are done, and free
 * runs what is still queued. */
typedef struct later {
    dk_batch_job job; /* first */
    int v;
    pthread_t queued_on;
    atomic_bool done;
} later;

static void later_queued(dk_batch_job *job)
{
    ((later *)job)->queued_on = pthread_self();
}

static void later_done(dk_batch_job *job)
{
    later *l = (later *)job;
    assert_int_equal(job->status, l->v % 2 ? DK_E_CONFLICT : DK_OK);
    atomic_store(&l->done, true);
}

static void test_queued_jobs_are_done_later_without_their_caller(void **state)
{
    (void)state;
    recorder *r = recorder_new();
    dk_batch *b = dk_batch_new(record_run, r, 16, 1);
    atomic_store(&r->gate_closed, true);
    submitter first = {.b = b, .arg = 100};
    assert_int_equal(pthread_create(&first.thread, NULL, submit_main, &first), 0);
    int64_t deadline = dk_mono_ms() + 5000;
    while (atomic_load(&r->running) == 0 && dk_mono_ms() < deadline)
        sleep_ms(1);
    later l[3];
    for (int i = 0; i < 3; i++) {
        l[i] = (later){.job = {.on_queue = later_queued, .done = later_done}, .v = i};
        l[i].job.arg = &l[i].v;
        assert_false(dk_batch_run_or_queue(b, &l[i].job));
        assert_true(pthread_equal(l[i].queued_on, pthread_self()));
        assert_false(atomic_load(&l[i].done));
    }
    atomic_store(&r->gate_closed, false);
    dk_batch_drain(b);
    for (int i = 0; i < 3; i++)
        assert_true(atomic_load(&l[i].done));
    pthread_join(first.thread, NULL);
    assert_int_equal(r->ngroups, 2);
    assert_int_equal(r->sizes[1], 3);
    /* free runs what is queued: a group held by its caller, two queued behind it */
    atomic_store(&r->gate_closed, true);
    r->ngroups = 0; /* the gate holds group 0 again */
    first = (submitter){.b = b, .arg = 100};
    assert_int_equal(pthread_create(&first.thread, NULL, submit_main, &first), 0);
    while (atomic_load(&r->running) == 0 && dk_mono_ms() < deadline)
        sleep_ms(1);
    for (int i = 0; i < 2; i++) {
        l[i] = (later){.job = {.done = later_done}, .v = 10 + i};
        l[i].job.arg = &l[i].v;
        assert_false(dk_batch_run_or_queue(b, &l[i].job));
    }
    atomic_store(&r->gate_closed, false);
    pthread_join(first.thread, NULL); /* no submit may race free */
    dk_batch_free(b);
    assert_true(atomic_load(&l[0].done) && atomic_load(&l[1].done));
    recorder_free(r);
}

typedef struct stress_arg {
    dk_batch *b;
    int base;
    atomic_int *wrong;
} stress_arg;

static void *stress_main(void *arg)
{
    stress_arg *s = arg;
    for (int i = 0; i < 500; i++) {
        int v = s->base + i;
        dk_status st = submit(s->b, &v);
        if (st != (v % 2 ? DK_E_CONFLICT : DK_OK))
            atomic_fetch_add(s->wrong, 1);
    }
    return NULL;
}

static void test_many_threads_each_get_their_own_answer(void **state)
{
    (void)state;
    recorder *r = recorder_new();
    dk_batch *b = dk_batch_new(record_run, r, 8, 2);
    enum { NT = 16 };
    pthread_t t[NT];
    stress_arg a[NT];
    atomic_int wrong = 0;
    for (int i = 0; i < NT; i++) {
        a[i] = (stress_arg){b, i * 1000, &wrong};
        assert_int_equal(pthread_create(&t[i], NULL, stress_main, &a[i]), 0);
    }
    for (int i = 0; i < NT; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&wrong), 0);
    long g, j;
    int q;
    dk_batch_stats(b, &g, &j, &q);
    assert_int_equal(j, NT * 500);
    assert_int_equal(q, 0);
    assert_true(g <= j);
    assert_true(atomic_load(&r->most_running) <= 2);
    dk_batch_free(b);
    recorder_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_lone_job_runs_at_once_on_its_own_thread),
        cmocka_unit_test(test_jobs_waiting_for_a_group_form_the_next_one_in_order),
        cmocka_unit_test(test_a_group_holds_at_most_max_jobs),
        cmocka_unit_test(test_a_second_group_starts_while_the_first_runs),
        cmocka_unit_test(test_queued_jobs_are_done_later_without_their_caller),
        cmocka_unit_test(test_many_threads_each_get_their_own_answer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
