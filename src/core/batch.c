#include "core/batch.h"

#include "core/alloc.h"
#include "core/banned.h"

struct dk_batch {
    pthread_mutex_t lock;
    dk_batch_run_fn run;
    void *ctx;
    int max_jobs, max_running;
    int running;                /* groups being run */
    dk_batch_job *head, **tail; /* queued jobs, oldest first */
    long groups, jobs;          /* run so far */
};

dk_batch *dk_batch_new(dk_batch_run_fn run, void *ctx, int max_jobs, int max_running)
{
    dk_batch *b = DK_NEW(dk_batch);
    pthread_mutex_init(&b->lock, NULL);
    b->run = run;
    b->ctx = ctx;
    b->max_jobs = max_jobs < 1 ? 1 : max_jobs > DK_BATCH_MAX_JOBS ? DK_BATCH_MAX_JOBS : max_jobs;
    b->max_running = max_running < 1 ? 1 : max_running;
    b->tail = &b->head;
    return b;
}

void dk_batch_free(dk_batch *b)
{
    if (!b)
        return;
    pthread_mutex_destroy(&b->lock);
    dk_free(b);
}

/* Under the lock: the queue's oldest job becomes the next leader if a group may start. */
static void dk_batch_hand_on(dk_batch *b)
{
    if (b->head && !b->head->lead && b->running < b->max_running) {
        b->head->lead = true;
        pthread_cond_signal(&b->head->wake);
    }
}

/* Under the lock, by the thread of the queue's oldest job: takes a group, runs it unlocked,
 * wakes its jobs' threads and hands the lead on. */
static void dk_batch_lead(dk_batch *b)
{
    dk_batch_job *group[DK_BATCH_MAX_JOBS];
    int n = 0;
    while (b->head && n < b->max_jobs) {
        group[n++] = b->head;
        b->head = b->head->next;
    }
    if (!b->head)
        b->tail = &b->head;
    b->running++;
    dk_batch_hand_on(b); /* what did not fit may start a group of its own */
    pthread_mutex_unlock(&b->lock);
    b->run(b->ctx, group, n);
    pthread_mutex_lock(&b->lock);
    b->running--;
    b->groups++;
    b->jobs += n;
    for (int i = 0; i < n; i++) {
        group[i]->done = true;
        pthread_cond_signal(&group[i]->wake);
    }
    dk_batch_hand_on(b);
}

dk_status dk_batch_submit(dk_batch *b, void *arg)
{
    dk_batch_job job = {.arg = arg, .status = DK_E_INTERNAL};
    pthread_cond_init(&job.wake, NULL);
    pthread_mutex_lock(&b->lock);
    *b->tail = &job;
    b->tail = &job.next;
    /* a new group may start at once only with nothing older waiting for its turn */
    if (b->head == &job && b->running < b->max_running)
        job.lead = true;
    while (!job.done) {
        if (job.lead && b->head == &job)
            dk_batch_lead(b); /* the group holds this job: done when it returns */
        else
            pthread_cond_wait(&job.wake, &b->lock);
    }
    pthread_mutex_unlock(&b->lock);
    pthread_cond_destroy(&job.wake);
    return job.status;
}

void dk_batch_stats(dk_batch *b, long *ret_groups, long *ret_jobs, int *ret_queued)
{
    pthread_mutex_lock(&b->lock);
    *ret_groups = b->groups;
    *ret_jobs = b->jobs;
    *ret_queued = 0;
    for (const dk_batch_job *j = b->head; j; j = j->next)
        ++*ret_queued;
    pthread_mutex_unlock(&b->lock);
}
