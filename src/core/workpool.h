/* workpool.h — a fixed set of worker threads with a bounded queue, for work that must not
 * occupy an HTTP thread (password hashing). submit never blocks: when every worker is busy and
 * the queue is full it refuses (DK_E_UNAVAILABLE) and the caller answers 503. Thread-safe;
 * free joins the workers after the queued jobs have run. */
#ifndef DK_WORKPOOL_H
#define DK_WORKPOOL_H

#include "core/status.h"

typedef struct dk_workpool dk_workpool;

dk_workpool *dk_workpool_new(int workers, int queue);
void dk_workpool_free(dk_workpool *p); /* accepts NULL */
dk_status dk_workpool_submit(dk_workpool *p, void (*fn)(void *ctx), void *ctx) DK_MUSTCHECK;
void dk_workpool_stats(dk_workpool *p, int *ret_busy, int *ret_queued);

#endif
