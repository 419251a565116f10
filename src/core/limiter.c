#include "core/limiter.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "core/alloc.h"
#include "core/timeutil.h"
#include "core/banned.h"

struct dk_limiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int workers, queue, max_wait_ms;
    int active, waiting;
};

dk_limiter *dk_limiter_new(int workers, int queue, int max_wait_ms)
{
    dk_limiter *l = DK_NEW(dk_limiter);
    pthread_mutex_init(&l->lock, NULL);
    dk_cond_init_monotonic(&l->cond);
    l->workers = workers < 1 ? 1 : workers;
    l->queue = queue < 0 ? 0 : queue;
    l->max_wait_ms = max_wait_ms;
    return l;
}

void dk_limiter_free(dk_limiter *l)
{
    if (!l)
        return;
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->lock);
    dk_free(l);
}

dk_status dk_limiter_enter(dk_limiter *l)
{
    pthread_mutex_lock(&l->lock);
    if (l->active < l->workers) {
        l->active++;
        pthread_mutex_unlock(&l->lock);
        return DK_OK;
    }
    if (l->waiting >= l->queue) {
        pthread_mutex_unlock(&l->lock);
        return DK_E_UNAVAILABLE;
    }
    struct timespec deadline = dk_mono_deadline(l->max_wait_ms);
    l->waiting++;
    int rc = 0;
    while (l->active >= l->workers && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&l->cond, &l->lock, &deadline);
    l->waiting--;
    dk_status st = DK_E_UNAVAILABLE;
    if (l->active < l->workers) {
        l->active++;
        st = DK_OK;
    }
    pthread_mutex_unlock(&l->lock);
    return st;
}

void dk_limiter_leave(dk_limiter *l)
{
    pthread_mutex_lock(&l->lock);
    l->active--;
    pthread_cond_signal(&l->cond);
    pthread_mutex_unlock(&l->lock);
}

void dk_limiter_stats(dk_limiter *l, int *ret_active, int *ret_waiting)
{
    pthread_mutex_lock(&l->lock);
    *ret_active = l->active;
    *ret_waiting = l->waiting;
    pthread_mutex_unlock(&l->lock);
}
