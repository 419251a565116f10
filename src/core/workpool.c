#include "core/workpool.h"

#include <pthread.h>
#include <stdbool.h>

#include "core/alloc.h"
#include "core/banned.h"

struct dk_work {
    void (*fn)(void *ctx);
    void *ctx;
};

struct dk_workpool {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int nworkers, cap;    /* cap: queued jobs allowed beyond the running ones */
    int head, count;      /* ring buffer of queued jobs */
    struct dk_work *ring; /* cap entries */
    int busy;
    bool stop;
    pthread_t *threads;
};

static void *dk_workpool_main(void *arg)
{
    dk_workpool *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (p->count == 0 && !p->stop)
            pthread_cond_wait(&p->cond, &p->lock);
        if (p->count == 0 && p->stop)
            break;
        struct dk_work w = p->ring[p->head];
        p->head = (p->head + 1) % p->cap;
        p->count--;
        p->busy++;
        pthread_mutex_unlock(&p->lock);
        w.fn(w.ctx);
        pthread_mutex_lock(&p->lock);
        p->busy--;
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

dk_workpool *dk_workpool_new(int workers, int queue)
{
    dk_workpool *p = DK_NEW(dk_workpool);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->nworkers = workers < 1 ? 1 : workers;
    /* the ring holds the jobs waiting for a worker plus those just handed to one */
    p->cap = (queue < 0 ? 0 : queue) + p->nworkers;
    p->ring = dk_calloc((size_t)p->cap, sizeof *p->ring);
    p->threads = dk_calloc((size_t)p->nworkers, sizeof *p->threads);
    for (int i = 0; i < p->nworkers; i++) {
        if (pthread_create(&p->threads[i], NULL, dk_workpool_main, p) != 0) {
            p->nworkers = i;
            break;
        }
    }
    return p;
}

void dk_workpool_free(dk_workpool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->nworkers; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    dk_free(p->ring);
    dk_free(p->threads);
    dk_free(p);
}

dk_status dk_workpool_submit(dk_workpool *p, void (*fn)(void *ctx), void *ctx)
{
    pthread_mutex_lock(&p->lock);
    /* admitted: every worker busy-or-about-to-be plus at most `queue` waiting */
    if (p->stop || p->nworkers == 0 || p->count + p->busy >= p->cap) {
        pthread_mutex_unlock(&p->lock);
        return DK_E_UNAVAILABLE;
    }
    p->ring[(p->head + p->count) % p->cap] = (struct dk_work){fn, ctx};
    p->count++;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
    return DK_OK;
}

void dk_workpool_stats(dk_workpool *p, int *ret_busy, int *ret_queued)
{
    pthread_mutex_lock(&p->lock);
    *ret_busy = p->busy;
    *ret_queued = p->count;
    pthread_mutex_unlock(&p->lock);
}
