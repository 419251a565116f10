/* batch.h — groups work that threads hand in at the same time into one call. A job handed in
 * while fewer than max_running groups run and none waits is run at once on the caller's thread,
 * alone: grouping adds no wait when nothing else is waiting. Otherwise it is queued; one of the
 * batch's runner threads (max_running of them) takes the queued jobs (oldest first, up to
 * max_jobs) and runs them with one call of run, which sets each job's status, then calls each
 * job's done. So a caller that queued need not wait: an HTTP handler suspends its request and
 * answers from done (docs/design/write-batching.md). Used for writes to PostgreSQL, where one
 * statement for n rows costs far less than n statements. Thread-safe; free runs what is queued
 * first, and must not race a submit. */
#ifndef DK_BATCH_H
#define DK_BATCH_H

#include <pthread.h>
#include <stdbool.h>

#include "core/status.h"

typedef struct dk_batch dk_batch;

#define DK_BATCH_MAX_JOBS    64 /* the largest max_jobs */
#define DK_BATCH_MAX_RUNNING 8  /* the largest max_running */

/* One piece of work, owned by the caller until done returns: arg is the caller's, status is set
 * by run. on_queue (may be NULL) is called on the caller's thread, under the batch's lock, just
 * before the job is queued (so that it cannot be done before the caller is ready for it: e.g.
 * suspend the request there); done is called on a runner thread after the job's group ran, and
 * may free the job. */
typedef struct dk_batch_job {
    void *arg;
    dk_status status;
    void (*on_queue)(struct dk_batch_job *job);
    void (*done)(struct dk_batch_job *job);
    struct dk_batch_job *next; /* private */
} dk_batch_job;

/* Runs jobs[0..n) (n >= 1, in submission order) and sets every job's status. */
typedef void (*dk_batch_run_fn)(void *ctx, dk_batch_job **jobs, int n);

/* NULL when the runner threads cannot be started. */
dk_batch *dk_batch_new(dk_batch_run_fn run, void *ctx, int max_jobs, int max_running);
void dk_batch_free(dk_batch *b); /* accepts NULL */
/* Returns once nothing is queued and no group runs (every done called); accepts NULL. */
void dk_batch_drain(dk_batch *b);
/* Runs job at once on this thread (true: job->status is set, done is not called) or queues it
 * (false: done will be called). */
bool dk_batch_run_or_queue(dk_batch *b, dk_batch_job *job) DK_MUSTCHECK;
/* How many groups ran and how many jobs they held, since creation, and how many jobs wait for
 * a group now (for tests and metrics). */
void dk_batch_stats(dk_batch *b, long *ret_groups, long *ret_jobs, int *ret_queued);

#endif
