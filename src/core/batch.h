/* batch.h — groups work that threads hand in at the same time into one call (leader and
 * followers, no thread of its own, no timer). A thread that submits while fewer than
 * max_running groups are running becomes the leader: it takes the queued jobs (up to
 * max_jobs, oldest first, its own among them) and runs them with one call of run, which sets
 * each job's status; the other submitters sleep until theirs is set. A job submitted alone is
 * run at once by its own thread, so grouping adds no wait when nothing else is waiting.
 * Used for writes to PostgreSQL, where one statement for n rows costs far less than n
 * statements (docs/design/write-batching.md). Thread-safe; free only when no submit runs. */
#ifndef DK_BATCH_H
#define DK_BATCH_H

#include <pthread.h>
#include <stdbool.h>

#include "core/status.h"

typedef struct dk_batch dk_batch;

#define DK_BATCH_MAX_JOBS 64 /* the largest max_jobs */

/* One piece of work, on the submitter's stack: arg is the caller's, status is set by run. */
typedef struct dk_batch_job {
    void *arg;
    dk_status status;
    /* private */
    struct dk_batch_job *next;
    pthread_cond_t wake;
    bool done, lead;
} dk_batch_job;

/* Runs jobs[0..n) (n >= 1, in submission order) and sets every job's status. */
typedef void (*dk_batch_run_fn)(void *ctx, dk_batch_job **jobs, int n);

dk_batch *dk_batch_new(dk_batch_run_fn run, void *ctx, int max_jobs, int max_running);
void dk_batch_free(dk_batch *b); /* accepts NULL */
/* Runs arg in a group (possibly of one) and returns the status run gave it. */
dk_status dk_batch_submit(dk_batch *b, void *arg) DK_MUSTCHECK;
/* How many groups ran and how many jobs they held, since creation, and how many jobs wait for
 * a group now (for tests and metrics). */
void dk_batch_stats(dk_batch *b, long *ret_groups, long *ret_jobs, int *ret_queued);

#endif
