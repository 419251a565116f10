/* housekeeper.c — the server's housekeeping thread: reaps connections whose request head is
 * late (guard.c) and gives freed heap memory back to the system once the server is idle.
 * Contract: started by dk_http_start, stopped (joined) by dk_http_stop.
 * Locking: srv->trim_lock guards trim_stop and the wake-up condition; the reaper takes
 * srv->guard_lock while trim_lock is held; malloc_trim runs with no lock held. */
#include <malloc.h>
#include <pthread.h>
#include <time.h>

#include "core/http/http_internal.h"
#include "core/timeutil.h"
#include "core/banned.h"

/* The housekeeping thread: closes connections whose request head is late (the connection
 * guard), and trims the heap. After a burst the heap keeps what its connections and requests
 * freed (connection pools are heap blocks): every DK_TRIM_EVERY_MS (half a second), if
 * requests finished since the last look and none is in flight now, malloc_trim gives the free
 * pages back, so the resident set falls back to idle size after the load (what a gateway held
 * without it: docs/design/measurements.md). */
#define DK_TRIM_EVERY_MS 500

static void *housekeeper_main(void *arg)
{
    dk_http_server *srv = arg;
    unsigned long long seen = 0;
    pthread_mutex_lock(&srv->trim_lock);
    while (!srv->trim_stop) {
        struct timespec ts = dk_mono_deadline(DK_TRIM_EVERY_MS);
        pthread_cond_timedwait(&srv->trim_cond, &srv->trim_lock, &ts);
        if (srv->trim_stop)
            break;
        dk_http_guard_reap(srv);
        unsigned long long done = atomic_load(&srv->completed);
        if (done != seen && atomic_load(&srv->inflight) == 0) {
            seen = done;
            pthread_mutex_unlock(&srv->trim_lock);
#ifdef __GLIBC__
            malloc_trim(0);
#endif
            pthread_mutex_lock(&srv->trim_lock);
        }
    }
    pthread_mutex_unlock(&srv->trim_lock);
    return NULL;
}

void dk_http_housekeeper_start(dk_http_server *srv)
{
    pthread_mutex_init(&srv->trim_lock, NULL);
    dk_cond_init_monotonic(&srv->trim_cond);
    srv->trim_stop = false;
    srv->trimmer_running = pthread_create(&srv->trimmer, NULL, housekeeper_main, srv) == 0;
}

void dk_http_housekeeper_stop(dk_http_server *srv)
{
    if (!srv->trimmer_running)
        return;
    pthread_mutex_lock(&srv->trim_lock);
    srv->trim_stop = true;
    pthread_cond_signal(&srv->trim_cond);
    pthread_mutex_unlock(&srv->trim_lock);
    pthread_join(srv->trimmer, NULL);
    srv->trimmer_running = false;
    pthread_cond_destroy(&srv->trim_cond);
    pthread_mutex_destroy(&srv->trim_lock);
}
