/* See http_client_wait.h. */
#include "core/http_client_wait.h"

#include "core/banned.h"

static void dk_http_wait_done(dk_http_call *c)
{
    dk_http_wait *w = (dk_http_wait *)c; /* the call is the waiter's first member */
    pthread_mutex_lock(&w->lock);
    w->done = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

bool dk_http_wait_run(const struct dk_http_client_ops *ops, dk_http_client *client, dk_http_wait *w)
{
    w->done = false;
    w->call.done = dk_http_wait_done;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    bool ok = ops->submit(client, &w->call) == DK_OK;
    pthread_mutex_lock(&w->lock);
    while (ok && !w->done)
        pthread_cond_wait(&w->cond, &w->lock);
    pthread_mutex_unlock(&w->lock);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    return ok;
}
