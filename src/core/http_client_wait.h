/* http_client_wait.h — one outbound call made synchronously over the http_client port: submit,
 * then wait on this thread until the client's thread has run `done`. For callers with a thread
 * of their own to block (the webhook sender, the trace exporter). `done` is taken; the call's
 * ctx and its other callbacks stay the caller's. A waiter belongs to one thread; it lives on
 * that thread's stack and holds nothing after dk_http_wait_run returns. */
#ifndef DK_HTTP_CLIENT_WAIT_H
#define DK_HTTP_CLIENT_WAIT_H

#include <pthread.h>
#include <stdbool.h>

#include "ports/http_client.h"

typedef struct dk_http_wait {
    dk_http_call call; /* first: `done` finds the waiter from the call */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
} dk_http_wait;

/* Submits w->call through ops/client and waits for it to finish; false when it could not
 * start (its outcome fields then mean nothing). */
bool dk_http_wait_run(const struct dk_http_client_ops *ops, dk_http_client *client,
                      dk_http_wait *w) DK_MUSTCHECK;

#endif
