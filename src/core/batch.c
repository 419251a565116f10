#include "core/batch.h"

#include "core/alloc.h"
#include "core/log.h"
#include "core/banned.h"

struct dk_batch {
    pthread_mutex_t lock;
    pthread_cond_t work; /* runners: a job is queued and a group may start, or stop */
    pthread_cond_t idle; /* dk_batch_drain: nothing queued, nothing running */
    dk_batch_run_fn run;
    void *ctx;
    int max_jobs, max_running;
    int running;                /* groups being run, on runners or callers */
    dk_batch_job *head, **tail; /* queued jobs, oldest first */
    int queued;
    long groups, jobs; /* run so far */
    bool stop;
    int nthreads;
    pthread_t threads[DK_BATCH_MAX_RUNNING];
};

/* Under the lock: a runner should take the queue's head now. */
static bool batch_startable(const dk_batch *b)
{
    return b->head && b->running < b->max_running;
}

/* Under the lock: a group ended (n jobs); wakes a runner if what waits may start. */
static void batch_ended(dk_batch *b, int n)
{
    b->running--;
    b->groups++;
    b->jobs += n;
    if (batch_startable(b))
        pthread_cond_signal(&b->work);
    if (!b->head && b->running == 0)
        pthread_cond_broadcast(&b->idle);
}

static void *batch_runner(void *arg)
{
    dk_batch *b = arg;
    dk_batch_job *group[DK_BATCH_MAX_JOBS];
    pthread_mutex_lock(&b->lock);
    for (;;) {
        while (!batch_startable(b) && !(b->stop && !b->head))
            pthread_cond_wait(&b->work, &b->lock);
        if (!b->head)
            break; /* stopping, nothing left */
        int n = 0;
        while (b->head && n < b->max_jobs) {
            group[n++] = b->head;
            b->head = b->head->next;
        }
        if (!b->head)
            b->tail = &b->head;
        b->queued -= n;
        b->running++;
        if (batch_startable(b)) /* what did not fit may start a group of its own */
            pthread_cond_signal(&b->work);
        pthread_mutex_unlock(&b->lock);
        b->run(b->ctx, group, n);
        for (int i = 0; i < n; i++)
            group[i]->done(group[i]); /* may free the job: not touched after */
        pthread_mutex_lock(&b->lock);
        batch_ended(b, n);
    }
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

dk_batch *dk_batch_new(dk_batch_run_fn run, void *ctx, int max_jobs, int max_running)
{
    dk_batch *b = DK_NEW(dk_batch);
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->work, NULL);
    pthread_cond_init(&b->idle, NULL);
    b->run = run;
    b->ctx = ctx;
    b->max_jobs = max_jobs < 1 ? 1 : max_jobs > DK_BATCH_MAX_JOBS ? DK_BATCH_MAX_JOBS : max_jobs;
    b->max_running = max_running < 1                      ? 1
                     : max_running > DK_BATCH_MAX_RUNNING ? DK_BATCH_MAX_RUNNING
                                                          : max_running;
    b->tail = &b->head;
    for (; b->nthreads < b->max_running; b->nthreads++)
        if (pthread_create(&b->threads[b->nthreads], NULL, batch_runner, b) != 0) {
            dk_log_error("batch: cannot start a runner thread");
            dk_batch_free(b);
            return NULL;
        }
    return b;
}

void dk_batch_free(dk_batch *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->lock);
    b->stop = true;
    pthread_cond_broadcast(&b->work);
    pthread_mutex_unlock(&b->lock);
    for (int i = 0; i < b->nthreads; i++)
        pthread_join(b->threads[i], NULL);
    pthread_cond_destroy(&b->work);
    pthread_cond_destroy(&b->idle);
    pthread_mutex_destroy(&b->lock);
    dk_free(b);
}

bool dk_batch_run_or_queue(dk_batch *b, dk_batch_job *job)
{
    pthread_mutex_lock(&b->lock);
    if (!b->head && b->running < b->max_running) {
        b->running++;
        pthread_mutex_unlock(&b->lock);
        dk_batch_job *group[1] = {job};
        b->run(b->ctx, group, 1);
        pthread_mutex_lock(&b->lock);
        batch_ended(b, 1);
        pthread_mutex_unlock(&b->lock);
        return true;
    }
    if (job->on_queue)
        job->on_queue(job);
    job->next = NULL;
    *b->tail = job;
    b->tail = &job->next;
    b->queued++;
    if (batch_startable(b))
        pthread_cond_signal(&b->work);
    pthread_mutex_unlock(&b->lock);
    return false;
}

void dk_batch_drain(dk_batch *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->lock);
    while (b->head || b->running > 0)
        pthread_cond_wait(&b->idle, &b->lock);
    pthread_mutex_unlock(&b->lock);
}

void dk_batch_stats(dk_batch *b, long *ret_groups, long *ret_jobs, int *ret_queued)
{
    pthread_mutex_lock(&b->lock);
    *ret_groups = b->groups;
    *ret_jobs = b->jobs;
    *ret_queued = b->queued;
    pthread_mutex_unlock(&b->lock);
}
