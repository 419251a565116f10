/* The resolver port on getaddrinfo. getaddrinfo has no timeout of its own, so each lookup runs
 * on a detached helper thread; the caller waits at most its timeout and then walks away. The
 * lookup record is shared by reference count: whichever of the two finishes last frees it.
 * The count of lookups running is the process's (a helper may outlive the resolver that
 * started it), checked against each resolver's limit. */
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "adapters/resolver.h"
#include "core/banned.h"

struct dk_resolver {
    int max_running;
};

static atomic_int dk_gai_running;

typedef struct dk_gai_lookup {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int refs;
    bool done;
    int gai_rc;
    dk_resolved out;
    char host[256];
} dk_gai_lookup;

static void dk_gai_unref(dk_gai_lookup *l)
{
    pthread_mutex_lock(&l->lock);
    int left = --l->refs;
    pthread_mutex_unlock(&l->lock);
    if (left > 0)
        return;
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->lock);
    dk_free(l);
}

static void *dk_gai_run(void *arg)
{
    dk_gai_lookup *l = arg;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(l->host, NULL, &hints, &res);
    pthread_mutex_lock(&l->lock);
    l->gai_rc = rc;
    dk_resolved *o = &l->out;
    for (struct addrinfo *ai = rc == 0 ? res : NULL; ai; ai = ai->ai_next) {
        size_t len = ai->ai_addrlen < sizeof o->addrs[0] ? ai->ai_addrlen : sizeof o->addrs[0];
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof ss);
        memcpy(&ss, ai->ai_addr, len);
        ss.ss_family = (sa_family_t)ai->ai_family;
        bool dup = false;
        for (int i = 0; i < o->n && !dup; i++)
            dup = memcmp(&o->addrs[i], &ss, sizeof ss) == 0;
        if (dup)
            continue;
        if (o->n < DK_RESOLVER_MAX_ADDRS)
            o->addrs[o->n++] = ss;
        else
            o->more++;
    }
    l->done = true;
    pthread_cond_signal(&l->cond);
    pthread_mutex_unlock(&l->lock);
    if (res)
        freeaddrinfo(res);
    atomic_fetch_sub(&dk_gai_running, 1);
    dk_gai_unref(l);
    return NULL;
}

/* Starts resolving host on a helper thread; *ret holds the caller's reference. */
static dk_status dk_gai_start(const dk_resolver *r, const char *host, dk_gai_lookup **ret)
{
    if (atomic_fetch_add(&dk_gai_running, 1) >= r->max_running) {
        atomic_fetch_sub(&dk_gai_running, 1);
        return DK_E_UNAVAILABLE;
    }
    dk_gai_lookup *l = DK_NEW(dk_gai_lookup);
    pthread_mutex_init(&l->lock, NULL);
    dk_cond_init_monotonic(&l->cond);
    l->refs = 2;
    dk_strlcpy(l->host, host, sizeof l->host);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    /* the helper takes no process signals (they belong to the main thread's sigwait) */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    int rc = pthread_create(&t, &attr, dk_gai_run, l);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        atomic_fetch_sub(&dk_gai_running, 1);
        l->refs = 1;
        dk_gai_unref(l);
        return DK_E_UNAVAILABLE;
    }
    *ret = l;
    return DK_OK;
}

static dk_status dk_gai_resolve(dk_resolver *r, const char *host, int64_t timeout_ms,
                                dk_resolved *ret)
{
    dk_gai_lookup *l = NULL;
    if (dk_gai_start(r, host, &l) != DK_OK)
        return DK_E_UNAVAILABLE;
    struct timespec deadline = dk_mono_deadline(timeout_ms > 0 ? timeout_ms : 1);
    pthread_mutex_lock(&l->lock);
    while (!l->done) {
        if (pthread_cond_timedwait(&l->cond, &l->lock, &deadline) != 0 && !l->done)
            break; /* timed out */
    }
    dk_status st = DK_OK;
    if (!l->done)
        st = DK_E_TIMEOUT;
    else if (l->gai_rc != 0 || l->out.n == 0)
        st = DK_E_NOT_FOUND;
    else
        *ret = l->out;
    pthread_mutex_unlock(&l->lock);
    dk_gai_unref(l);
    return st;
}

dk_status dk_resolver_getaddrinfo_new(int max_running, dk_resolver **ret)
{
    if (max_running < 1)
        return DK_E_VALIDATION;
    dk_resolver *r = DK_NEW(dk_resolver);
    r->max_running = max_running;
    *ret = r;
    return DK_OK;
}

static void dk_gai_free(dk_resolver *r)
{
    dk_free(r);
}

const struct dk_resolver_ops dk_resolver_getaddrinfo_ops = {
    .name = "getaddrinfo",
    .resolve = dk_gai_resolve,
    .free = dk_gai_free,
};
