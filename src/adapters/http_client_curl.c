/* The outbound HTTP port on libcurl: one thread drives curl multi handles through their
 * event-driven interface (curl_multi_socket_action): curl says which sockets it waits on
 * (CURLMOPT_SOCKETFUNCTION) and, asked after each round (curl_multi_timeout, rather than a
 * TIMERFUNCTION, which reports a timer only when it changes: one fired a millisecond early
 * would be lost), when it next needs the time; the thread waits on an epoll set of those
 * sockets plus an eventfd that other threads write to.
 * A wakeup costs what its sockets cost, not a walk of every transfer: thousands of long-lived
 * streams (the gateway's SSE) cost nothing while they are quiet. Long-lived calls run in a
 * multi handle (a connection pool) of their own, apart from the calls that end soon, and with
 * a small receive buffer. Calls are queued from any thread. Finished easy handles are kept
 * for reuse, so connections stay alive (CURLMOPT_MAXCONNECTS, idle ones).
 * Streaming calls: a body whose Content-Length fits DK_CURL_STREAM_AFTER is buffered and
 * handed over whole, as without streaming; so is any body that arrives in the same round of
 * socket events as the headers. A transfer still running after that round, or whose buffer
 * passes DK_CURL_STREAM_AFTER, switches to on_headers/on_data. Pausing is curl's own
 * (CURL_WRITEFUNC_PAUSE); resume and cancel requests from other threads are flags on the call
 * plus an entry in a queue that this thread acts on (curl_easy_pause must run here); the queue
 * entry is looked up among the running calls, so a late request for a finished call is
 * ignored. The headers timeout is checked here too (curl's CURLOPT_TIMEOUT covers the whole
 * transfer only), over the calls that have one, not over all.
 * Streamed request bodies: curl's read callback asks on_read, whose pause is curl's
 * (CURL_READFUNC_PAUSE) and is lifted by resume like the receiving side's (both directions
 * are tracked apart: unpausing one must not unpause the other). */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <stdint.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "ports/http_client.h"
#include "adapters/http_client.h"
#include "core/banned.h"

#define DK_CURL_FREE_HANDLES 64
/* A streaming call's body buffered before it switches to on_data. */
#define DK_CURL_STREAM_AFTER (64u * 1024u)
/* Connections the probe handle keeps alive (one per upstream). */
#define DK_CURL_PROBE_CONNECTIONS 128
/* A long-lived stream's receive buffer (libcurl's default: 16 KiB; its least: 1 KiB). Its
 * messages are small, and it may stay open for hours. */
#define DK_CURL_LONG_BUFFER 2048L
/* Socket events taken per epoll_wait. */
#define DK_CURL_EVENTS 256

enum { DK_CURL_WAKE_RESUME = 1u, DK_CURL_WAKE_CANCEL = 2u };
/* epoll's tag for the wakefd (curl's sockets: the pool's index << 32 | the socket) */
#define DK_CURL_WAKE_TAG UINT64_MAX

struct dk_http_pending {
    dk_http_call *call;
    struct dk_http_pending *next;
};

/* A list of transfers (intrusive, doubly linked through one of a transfer's link pairs). */
struct dk_curl_link {
    struct dk_http_transfer *prev, *next;
};

/* A curl multi handle: a connection pool with its transfers. */
enum { DK_CURL_SHORT, DK_CURL_LONG, DK_CURL_NMULTI };
struct dk_curl_multi {
    CURLM *m;
    dk_http_client *cl;
    int index;
    long keep_alive; /* idle connections kept */
    long running;    /* transfers in it */
};

struct dk_http_client {
    /* calls that end soon, and long-lived streams apart: libcurl walks every connection of a
     * pool whenever a transfer leaves it (curl_multi_remove_handle looks for the connection
     * it used last, Curl_conncache_foreach), so with thousands of streams in the same pool
     * each short call cost a walk of them all */
    struct dk_curl_multi multis[DK_CURL_NMULTI];
    pthread_t thread;
    int epfd;   /* curl's sockets and wakefd */
    int wakefd; /* eventfd: other threads have queued something */
    pthread_mutex_t lock;
    struct dk_http_pending *queue, *queue_tail; /* calls to start */
    dk_http_call **wakeq;                       /* calls with resume/cancel flags to act on */
    size_t nwakeq, wakeq_cap;
    dk_http_call **wakeq_spare; /* this thread's: the queue it took last, for reuse */
    size_t spare_cap;
    atomic_bool stop;
    bool closing;          /* close is failing what still runs (the thread has stopped) */
    atomic_bool signalled; /* wakefd written since the thread last took the queues */
    /* running transfers: waiting (no answer streaming yet: the abandoned sweep walks these)
     * and streaming; watched (a headers deadline) is a second list through watch_link */
    struct dk_http_transfer *waiting, *streaming, *watched;
    struct dk_http_transfer *fresh; /* got their headers in this round of socket events */
    /* running transfers by call (chained hash): the wake queue's calls are looked up here */
    struct dk_http_transfer **map;
    size_t map_mask, map_n;
    int64_t next_sweep_ms; /* next poll of the calls' `abandoned` */
    int nfree;
    CURL *free_handles[DK_CURL_FREE_HANDLES];
    pthread_mutex_t probe_lock;
    CURL *probe; /* the probes' handle (blocking, any thread) */
};

struct dk_http_transfer {
    dk_http_call *call;
    dk_http_client *owner;
    struct dk_curl_multi *multi; /* the pool it runs in */
    CURL *easy;
    struct dk_curl_link link;       /* waiting or streaming */
    struct dk_curl_link watch_link; /* watched */
    struct dk_http_transfer *map_next;
    struct dk_http_transfer *fresh_next;
    struct curl_slist *headers;
    struct curl_slist *connect_to; /* the call's pinned addresses (CURLOPT_RESOLVE) */
    char *buf;
    size_t len, cap;  /* buffered body; for a streaming call, not yet delivered */
    int64_t deadline; /* for the headers (monotonic ms); 0: none */
    bool too_big, headers_done, streaming, paused, cancelled, watch, headers_late, in_fresh;
    bool send_paused; /* on_read had nothing: curl's sending is paused */
    bool own_buffer;  /* a long-lived stream's small receive buffer: the handle is not pooled */
};

static pthread_once_t dk_curl_once = PTHREAD_ONCE_INIT;
static void dk_curl_global(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---------- the transfer lists and the call map (this thread only) ---------- */

static void dk_curl_link_in(struct dk_http_transfer **head, struct dk_http_transfer *t)
{
    t->link.prev = NULL;
    t->link.next = *head;
    if (*head)
        (*head)->link.prev = t;
    *head = t;
}

static void dk_curl_link_out(struct dk_http_transfer **head, struct dk_http_transfer *t)
{
    if (t->link.prev)
        t->link.prev->link.next = t->link.next;
    else
        *head = t->link.next;
    if (t->link.next)
        t->link.next->link.prev = t->link.prev;
    t->link.prev = t->link.next = NULL;
}

static void dk_curl_watch(dk_http_client *cl, struct dk_http_transfer *t)
{
    t->watch = true;
    t->watch_link.prev = NULL;
    t->watch_link.next = cl->watched;
    if (cl->watched)
        cl->watched->watch_link.prev = t;
    cl->watched = t;
}

static void dk_curl_unwatch(dk_http_client *cl, struct dk_http_transfer *t)
{
    if (!t->watch)
        return;
    t->watch = false;
    if (t->watch_link.prev)
        t->watch_link.prev->watch_link.next = t->watch_link.next;
    else
        cl->watched = t->watch_link.next;
    if (t->watch_link.next)
        t->watch_link.next->watch_link.prev = t->watch_link.prev;
    t->watch_link.prev = t->watch_link.next = NULL;
}

static size_t dk_curl_slot(const dk_http_client *cl, const dk_http_call *c)
{
    uint64_t x = (uint64_t)(uintptr_t)c;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x & cl->map_mask;
}

static void dk_curl_map_put(dk_http_client *cl, struct dk_http_transfer *t)
{
    if (cl->map_n >= cl->map_mask + 1) { /* load factor 1: double */
        size_t old = cl->map_mask + 1;
        struct dk_http_transfer **prev = cl->map;
        cl->map = dk_calloc(old * 2, sizeof *cl->map);
        cl->map_mask = old * 2 - 1;
        for (size_t i = 0; i < old; i++) {
            struct dk_http_transfer *next;
            for (struct dk_http_transfer *x = prev[i]; x; x = next) {
                next = x->map_next;
                size_t k = dk_curl_slot(cl, x->call);
                x->map_next = cl->map[k];
                cl->map[k] = x;
            }
        }
        dk_free(prev);
    }
    size_t k = dk_curl_slot(cl, t->call);
    t->map_next = cl->map[k];
    cl->map[k] = t;
    cl->map_n++;
}

static struct dk_http_transfer *dk_curl_map_get(dk_http_client *cl, const dk_http_call *c)
{
    for (struct dk_http_transfer *t = cl->map[dk_curl_slot(cl, c)]; t; t = t->map_next)
        if (t->call == c)
            return t;
    return NULL;
}

static void dk_curl_map_del(dk_http_client *cl, struct dk_http_transfer *t)
{
    for (struct dk_http_transfer **p = &cl->map[dk_curl_slot(cl, t->call)]; *p;
         p = &(*p)->map_next) {
        if (*p == t) {
            *p = t->map_next;
            cl->map_n--;
            return;
        }
    }
}

/* ---------- curl's callbacks ---------- */

static void dk_curl_buffer(struct dk_http_transfer *t, const char *data, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 4096;
        while (ncap < t->len + n + 1)
            ncap *= 2;
        t->buf = dk_realloc(t->buf, ncap);
        t->cap = ncap;
    }
    memcpy(t->buf + t->len, data, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

/* Switches a streaming call to on_headers/on_data. */
static void dk_curl_begin_stream(struct dk_http_transfer *t)
{
    dk_http_client *cl = t->owner;
    dk_curl_link_out(&cl->waiting, t);
    dk_curl_link_in(&cl->streaming, t);
    t->streaming = true;
    t->call->streamed = true;
    t->call->on_headers(t->call);
}

/* Hands the buffered body to on_data; DK_HTTP_DATA_OK once nothing is left. A streaming
 * call's buffer is done with then (later pieces go straight to on_data): a long-lived stream
 * keeps none. */
static dk_http_data_action dk_curl_flush(struct dk_http_transfer *t)
{
    if (t->len > 0) {
        dk_http_data_action a = t->call->on_data(t->call, t->buf, t->len);
        if (a != DK_HTTP_DATA_OK)
            return a;
        t->len = 0;
    }
    if (t->streaming && t->buf) {
        dk_free(t->buf);
        t->buf = NULL;
        t->cap = 0;
    }
    return DK_HTTP_DATA_OK;
}

static size_t dk_curl_write(char *data, size_t size, size_t nmemb, void *userp)
{
    struct dk_http_transfer *t = userp;
    size_t n = size * nmemb;
    dk_http_call *c = t->call;
    if (!t->streaming) {
        if (!c->on_data) {
            size_t max = c->max_response ? c->max_response : (size_t)8 << 20;
            if (t->len + n > max) {
                t->too_big = true;
                return 0; /* aborts the transfer */
            }
            dk_curl_buffer(t, data, n);
            return n;
        }
        if (t->len + n <= DK_CURL_STREAM_AFTER) {
            dk_curl_buffer(t, data, n);
            return n;
        }
        dk_curl_begin_stream(t);
    }
    dk_http_data_action a = dk_curl_flush(t);
    if (a == DK_HTTP_DATA_OK)
        a = c->on_data(c, data, n);
    if (a == DK_HTTP_DATA_OK)
        return n;
    if (a == DK_HTTP_DATA_PAUSE) {
        t->paused = true;
        return CURL_WRITEFUNC_PAUSE; /* curl keeps this piece and offers it again */
    }
    t->cancelled = true;
    return 0;
}

/* A streamed request body: ask on_read. The headers deadline is then an inactivity one: it
 * runs while a piece is ready and after the end of the body, not while on_read waits. */
static size_t dk_curl_read(char *buf, size_t size, size_t nmemb, void *userp)
{
    struct dk_http_transfer *t = userp;
    size_t n = t->call->on_read(t->call, buf, size * nmemb);
    if (n == DK_HTTP_READ_ABORT) {
        t->cancelled = true;
        return CURL_READFUNC_ABORT;
    }
    if (n == DK_HTTP_READ_PAUSE) {
        t->send_paused = true;
        if (t->watch)
            t->deadline = INT64_MAX;
        return CURL_READFUNC_PAUSE;
    }
    if (t->watch)
        t->deadline = dk_mono_ms() + t->call->headers_timeout_ms;
    return n;
}

static size_t dk_curl_header(char *data, size_t size, size_t nmemb, void *userp)
{
    struct dk_http_transfer *t = userp;
    size_t n = size * nmemb;
    dk_http_call *c = t->call;
    if (t->headers_done)
        return n; /* trailers: the headers may already be on their way to the client */
    if (n <= 2 && (data[0] == '\r' || data[0] == '\n')) {
        /* the end of a header block: the final response's, unless it was a 1xx */
        long code = 0;
        curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &code);
        if (code >= 200) {
            t->headers_done = true;
            c->status = (int)code;
            /* a body of known length that fits the buffer is taken whole, however its
             * pieces arrive; anything else streams unless it comes with the headers */
            curl_off_t declared = -1;
            curl_easy_getinfo(t->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &declared);
            bool small = declared >= 0 && declared <= (curl_off_t)DK_CURL_STREAM_AFTER;
            if (c->on_data && !small && !t->in_fresh) {
                t->in_fresh = true;
                t->fresh_next = t->owner->fresh;
                t->owner->fresh = t;
            }
            dk_curl_unwatch(t->owner, t);
        }
        return n;
    }
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        c->nresp_headers = 0; /* a new response (e.g. after 100 Continue) */
        return n;
    }
    const char *colon = memchr(data, ':', n);
    if (!colon || c->nresp_headers >= DK_HTTP_CALL_MAX_HEADERS)
        return n;
    size_t nl = (size_t)(colon - data);
    const char *v = colon + 1;
    size_t vl = n - nl - 1;
    while (vl > 0 && (*v == ' ' || *v == '\t'))
        v++, vl--;
    while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
        vl--;
    c->resp_names[c->nresp_headers] = dk_arena_strndup(c->arena, data, nl);
    c->resp_values[c->nresp_headers] = dk_arena_strndup(c->arena, v, vl);
    c->nresp_headers++;
    return n;
}

/* curl's interest in a socket changed: the epoll set follows. A socket curl closes leaves
 * the set by itself (and curl says REMOVE before it closes it). */
static int dk_curl_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)e;
    struct dk_curl_multi *mu = userp;
    dk_http_client *cl = mu->cl;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(cl->epfd, EPOLL_CTL_DEL, s, NULL);
        return 0;
    }
    struct epoll_event ev = {
        .events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u),
        .data.u64 = ((uint64_t)mu->index << 32) | (uint32_t)s,
    };
    /* socketp marks a socket already in the set; a failure the other way round (a socket
     * closed and its number reused) falls back to the other operation */
    if (!socketp) {
        if (epoll_ctl(cl->epfd, EPOLL_CTL_ADD, s, &ev) != 0 && errno == EEXIST)
            epoll_ctl(cl->epfd, EPOLL_CTL_MOD, s, &ev);
        curl_multi_assign(mu->m, s, mu);
    } else if (epoll_ctl(cl->epfd, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT) {
        epoll_ctl(cl->epfd, EPOLL_CTL_ADD, s, &ev);
    }
    return 0;
}

/* ---------- transfers ---------- */

/* libcurl's connection cache limit counts the connections in use too, and whenever the cache
 * is over it, a connection coming back from a transfer makes libcurl walk every connection
 * (Curl_conncache_extract_oldest) and close the oldest idle one — often the one just back.
 * With thousands of long-lived streams that was a walk of them all, and a new connection, per
 * finished call. The limit follows the running transfers, so only the idle connections beyond
 * keep_alive are closed. */
static void dk_curl_running(struct dk_curl_multi *mu, long delta)
{
    mu->running += delta;
    curl_multi_setopt(mu->m, CURLMOPT_MAXCONNECTS, mu->keep_alive + mu->running);
}

static CURL *dk_curl_take(dk_http_client *cl)
{
    if (cl->nfree > 0) {
        CURL *e = cl->free_handles[--cl->nfree];
        curl_easy_reset(e);
        return e;
    }
    return curl_easy_init();
}

static void dk_curl_give(dk_http_client *cl, CURL *e, bool own_buffer)
{
    /* a handle with a receive buffer of its own size is not reused: libcurl keeps the buffer
     * it allocated across curl_easy_reset */
    if (!own_buffer && cl->nfree < DK_CURL_FREE_HANDLES)
        cl->free_handles[cl->nfree++] = e;
    else
        curl_easy_cleanup(e);
}

static void dk_curl_finish(dk_http_client *cl, CURL *e, CURLcode rc)
{
    struct dk_http_transfer *t = NULL;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&t);
    dk_http_call *c = t->call;
    dk_curl_link_out(t->streaming ? &cl->streaming : &cl->waiting, t);
    dk_curl_map_del(cl, t);
    if (t->in_fresh) {
        for (struct dk_http_transfer **p = &cl->fresh; *p; p = &(*p)->fresh_next) {
            if (*p == t) {
                *p = t->fresh_next;
                break;
            }
        }
    }
    dk_curl_unwatch(cl, t);
    c->streamed = t->streaming;
    if (rc == CURLE_OK && t->streaming && t->len > 0)
        rc = CURLE_WRITE_ERROR; /* body left undelivered: never a clean end */
    if (rc == CURLE_OK && !t->cancelled) {
        long code = 0;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
        c->status = (int)code;
        c->error = DK_OK;
        if (!t->streaming) {
            c->response = dk_arena_strndup(c->arena, t->buf ? t->buf : "", t->len);
            c->response_len = t->len;
        }
    } else {
        if (!t->streaming)
            c->status = 0;
        c->cancelled = t->cancelled;
        if (t->cancelled || cl->closing)
            c->error = DK_E_UNAVAILABLE;
        else if (rc == CURLE_OPERATION_TIMEDOUT || t->headers_late)
            c->error = DK_E_TIMEOUT;
        else
            c->error = DK_E_BAD_GATEWAY;
        if (t->cancelled)
            snprintf(c->error_text, sizeof c->error_text, "cancelled");
        else if (cl->closing)
            snprintf(c->error_text, sizeof c->error_text, "the client closed");
        else if (t->too_big)
            snprintf(c->error_text, sizeof c->error_text, "upstream response too large");
        else if (t->headers_late)
            snprintf(c->error_text, sizeof c->error_text, "no response headers in time");
        else
            snprintf(c->error_text, sizeof c->error_text, "%s", curl_easy_strerror(rc));
    }
    curl_multi_remove_handle(t->multi->m, e);
    dk_curl_running(t->multi, -1);
    curl_slist_free_all(t->headers);
    curl_slist_free_all(t->connect_to);
    dk_curl_give(cl, e, t->own_buffer);
    dk_free(t->buf);
    dk_free(t);
    c->done(c);
}

static void dk_curl_start(dk_http_client *cl, dk_http_call *c)
{
    /* a long-lived stream gets a handle that has no receive buffer yet (it takes a small one) */
    CURL *e = c->long_lived ? curl_easy_init() : dk_curl_take(cl);
    if (!e) {
        c->error = DK_E_BAD_GATEWAY;
        snprintf(c->error_text, sizeof c->error_text, "cannot create a transfer");
        c->done(c);
        return;
    }
    struct dk_http_transfer *t = DK_NEW(struct dk_http_transfer);
    t->call = c;
    t->owner = cl;
    t->own_buffer = c->long_lived;
    for (int i = 0; i < c->nheaders; i++)
        t->headers = curl_slist_append(t->headers, c->headers[i]);
    t->headers = curl_slist_append(t->headers, "Expect:");
    curl_easy_setopt(e, CURLOPT_URL, c->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)t);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, dk_curl_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, dk_curl_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (t->own_buffer)
        curl_easy_setopt(e, CURLOPT_BUFFERSIZE, DK_CURL_LONG_BUFFER);
    if (c->connect_to) {
        t->connect_to = curl_slist_append(NULL, c->connect_to);
        curl_easy_setopt(e, CURLOPT_RESOLVE, t->connect_to);
    }
    if (c->isolated) {
        curl_easy_setopt(e, CURLOPT_PROXY, "");
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
    }
    if (strcmp(c->method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(c->method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, c->method);
        if (c->on_read) {
            curl_easy_setopt(e, CURLOPT_UPLOAD, 1L); /* the method stays CUSTOMREQUEST's */
            curl_easy_setopt(e, CURLOPT_READFUNCTION, dk_curl_read);
            curl_easy_setopt(e, CURLOPT_READDATA, t);
            curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE,
                             (curl_off_t)(c->body_size >= 0 ? c->body_size : -1));
        } else if (c->body_len > 0 || strcmp(c->method, "POST") == 0 ||
                   strcmp(c->method, "PUT") == 0 || strcmp(c->method, "PATCH") == 0) {
            /* copied: a streamed response can outlive the caller's request memory */
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body_len);
            curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, c->body ? c->body : "");
        }
    }
    t->easy = e;
    t->multi = &cl->multis[c->long_lived ? DK_CURL_LONG : DK_CURL_SHORT];
    dk_curl_running(t->multi, 1);
    if (curl_multi_add_handle(t->multi->m, e) != CURLM_OK) {
        dk_curl_running(t->multi, -1);
        curl_slist_free_all(t->headers);
        curl_slist_free_all(t->connect_to);
        dk_curl_give(cl, e, t->own_buffer);
        dk_free(t);
        c->error = DK_E_BAD_GATEWAY;
        snprintf(c->error_text, sizeof c->error_text, "cannot start the transfer");
        c->done(c);
        return;
    }
    if (c->headers_timeout_ms > 0) {
        t->deadline = dk_mono_ms() + c->headers_timeout_ms;
        dk_curl_watch(cl, t);
    }
    dk_curl_link_in(&cl->waiting, t);
    dk_curl_map_put(cl, t);
}

/* Streaming calls whose headers came in the last round but whose body is still arriving:
 * hand them to on_headers and what came so far to on_data. */
static void dk_curl_start_streams(dk_http_client *cl)
{
    while (cl->fresh) {
        struct dk_http_transfer *t = cl->fresh;
        cl->fresh = t->fresh_next;
        t->in_fresh = false;
        if (t->streaming)
            continue; /* switched already, by size */
        dk_curl_begin_stream(t);
        dk_http_data_action a = dk_curl_flush(t);
        if (a == DK_HTTP_DATA_PAUSE) {
            t->paused = true;
            curl_easy_pause(t->easy, CURLPAUSE_RECV);
        } else if (a == DK_HTTP_DATA_ABORT) {
            t->cancelled = true;
            dk_curl_finish(cl, t->easy, CURLE_ABORTED_BY_CALLBACK);
        }
    }
}

/* About once a second: calls still waiting for their answer whose caller has given up
 * (`abandoned`) are cancelled, so the upstream stops working for nobody. Streaming calls are
 * on the other list: the walk is over the calls in flight only. */
static void dk_curl_sweep_abandoned(dk_http_client *cl, int64_t now)
{
    if (now < cl->next_sweep_ms)
        return;
    cl->next_sweep_ms = now + 1000;
    struct dk_http_transfer *next;
    for (struct dk_http_transfer *t = cl->waiting; t; t = next) {
        next = t->link.next;
        if (t->call->abandoned && t->call->abandoned(t->call)) {
            t->cancelled = true;
            dk_curl_finish(cl, t->easy, CURLE_ABORTED_BY_CALLBACK);
        }
    }
}

/* A resume or cancel request from another thread, for a call that may have finished since
 * (then it is no longer in the map, and the request is moot). */
static void dk_curl_wake_one(dk_http_client *cl, dk_http_call *call)
{
    struct dk_http_transfer *t = dk_curl_map_get(cl, call);
    if (!t)
        return;
    unsigned w = atomic_exchange(&call->wake, 0u);
    if (w & DK_CURL_WAKE_CANCEL) {
        t->cancelled = true;
        dk_curl_finish(cl, t->easy, CURLE_ABORTED_BY_CALLBACK);
        return;
    }
    if (!(w & DK_CURL_WAKE_RESUME) || (!t->paused && !t->send_paused))
        return;
    bool unpause = false;
    if (t->send_paused) { /* on_read has something now */
        t->send_paused = false;
        if (t->watch)
            t->deadline = dk_mono_ms() + t->call->headers_timeout_ms;
        unpause = true;
    }
    dk_http_data_action a = DK_HTTP_DATA_OK;
    if (t->paused) {
        t->paused = false;
        a = dk_curl_flush(t);
        if (a == DK_HTTP_DATA_PAUSE)
            t->paused = true;
        else
            unpause = true;
    }
    if (!unpause)
        return;
    /* what stays paused stays paused */
    int mask = (t->paused ? CURLPAUSE_RECV : 0) | (t->send_paused ? CURLPAUSE_SEND : 0);
    CURLcode rc =
        a == DK_HTTP_DATA_ABORT ? CURLE_ABORTED_BY_CALLBACK : curl_easy_pause(t->easy, mask);
    if (a == DK_HTTP_DATA_ABORT)
        t->cancelled = true;
    /* unpausing delivers what curl held back, through dk_curl_write: it may have been refused
     * (cancelled) or failed */
    if (rc != CURLE_OK)
        dk_curl_finish(cl, t->easy, rc);
}

/* What other threads queued: calls to start, then resume/cancel requests (a request for a
 * call submitted just before is in the same take, after its start). */
static void dk_curl_take_queues(dk_http_client *cl)
{
    atomic_store(&cl->signalled, false);
    pthread_mutex_lock(&cl->lock);
    struct dk_http_pending *q = cl->queue;
    cl->queue = cl->queue_tail = NULL;
    dk_http_call **w = cl->wakeq;
    size_t nw = cl->nwakeq, wcap = cl->wakeq_cap;
    cl->wakeq = cl->wakeq_spare;
    cl->wakeq_cap = cl->spare_cap;
    cl->nwakeq = 0;
    pthread_mutex_unlock(&cl->lock);
    while (q) {
        struct dk_http_pending *next = q->next;
        dk_curl_start(cl, q->call);
        dk_free(q);
        q = next;
    }
    for (size_t i = 0; i < nw; i++)
        dk_curl_wake_one(cl, w[i]);
    cl->wakeq_spare = w;
    cl->spare_cap = wcap;
}

/* Fails the calls whose headers are late; returns the soonest deadline left (INT64_MAX when
 * none). Only the calls that have one are walked. */
static int64_t dk_curl_deadlines(dk_http_client *cl, int64_t now)
{
    int64_t soonest = INT64_MAX;
    struct dk_http_transfer *next;
    for (struct dk_http_transfer *t = cl->watched; t; t = next) {
        next = t->watch_link.next;
        if (t->deadline <= now) {
            t->headers_late = true;
            dk_curl_finish(cl, t->easy, CURLE_OPERATION_TIMEDOUT);
        } else if (t->deadline < soonest) {
            soonest = t->deadline;
        }
    }
    return soonest;
}

/* Finished transfers and streams that have begun, after curl has run. */
static void dk_curl_after(dk_http_client *cl)
{
    for (int i = 0; i < DK_CURL_NMULTI; i++) {
        CURLMsg *msg;
        int left = 0;
        while ((msg = curl_multi_info_read(cl->multis[i].m, &left))) {
            if (msg->msg == CURLMSG_DONE)
                dk_curl_finish(cl, msg->easy_handle, msg->data.result);
        }
    }
    dk_curl_start_streams(cl);
}

/* The soonest of the pools' timers, in ms (-1: none). */
static long dk_curl_timeout(dk_http_client *cl)
{
    long soonest = -1;
    for (int i = 0; i < DK_CURL_NMULTI; i++) {
        long ms = -1;
        if (curl_multi_timeout(cl->multis[i].m, &ms) == CURLM_OK && ms >= 0 &&
            (soonest < 0 || ms < soonest))
            soonest = ms;
    }
    return soonest;
}

static void *dk_curl_loop(void *arg)
{
    dk_http_client *cl = arg;
    struct epoll_event evs[DK_CURL_EVENTS];
    int running = 0;
    while (!atomic_load(&cl->stop)) {
        dk_curl_take_queues(cl);
        /* curl's own timers (connect and total timeouts, handles to run now) */
        for (int i = 0; i < DK_CURL_NMULTI; i++) {
            long ms = -1;
            if (curl_multi_timeout(cl->multis[i].m, &ms) == CURLM_OK && ms == 0)
                curl_multi_socket_action(cl->multis[i].m, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        dk_curl_after(cl);
        int64_t now = dk_mono_ms();
        dk_curl_sweep_abandoned(cl, now);
        int64_t until = dk_curl_deadlines(cl, now);
        if (cl->waiting && cl->next_sweep_ms < until)
            until = cl->next_sweep_ms;
        int wait_ms = -1;
        if (until != INT64_MAX)
            wait_ms = until <= now ? 0 : (int)(until - now < 60000 ? until - now : 60000);
        /* asked after the rest: what ran since (finished calls, unpaused ones) may have set a
         * timer */
        long curl_ms = dk_curl_timeout(cl);
        if (curl_ms >= 0 && (wait_ms < 0 || curl_ms < wait_ms))
            wait_ms = (int)curl_ms;
        int n = epoll_wait(cl->epfd, evs, DK_CURL_EVENTS, wait_ms);
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            if (tag == DK_CURL_WAKE_TAG) {
                uint64_t v;
                ssize_t r = read(cl->wakefd, &v, sizeof v);
                (void)r;
                continue;
            }
            uint32_t ev = evs[i].events;
            int mask = 0;
            if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))
                mask |= CURL_CSELECT_IN;
            /* writable: readable asked too (a recv that may find nothing), so that curl reads
             * an answer already in (an upstream refusing an upload early, then closing)
             * before it writes more body and meets the reset of that close */
            if (ev & (EPOLLOUT | EPOLLERR))
                mask |= CURL_CSELECT_OUT | CURL_CSELECT_IN;
            curl_multi_socket_action(cl->multis[tag >> 32].m, (curl_socket_t)(uint32_t)tag, mask,
                                     &running);
        }
        dk_curl_after(cl);
    }
    return NULL;
}

/* Tells the client's thread that something is queued (one write until it has looked). */
static void dk_curl_signal(dk_http_client *cl)
{
    if (atomic_exchange(&cl->signalled, true))
        return;
    uint64_t one = 1;
    ssize_t w = write(cl->wakefd, &one, sizeof one);
    (void)w; /* the counter cannot overflow at one write per look */
}

static void dk_curl_free(dk_http_client *cl)
{
    for (int i = 0; i < DK_CURL_NMULTI; i++)
        if (cl->multis[i].m)
            curl_multi_cleanup(cl->multis[i].m);
    if (cl->epfd >= 0)
        close(cl->epfd);
    if (cl->wakefd >= 0)
        close(cl->wakefd);
    dk_free(cl->map);
    dk_free(cl->wakeq);
    dk_free(cl->wakeq_spare);
    if (cl->probe)
        curl_easy_cleanup(cl->probe);
    pthread_mutex_destroy(&cl->probe_lock);
    pthread_mutex_destroy(&cl->lock);
    dk_free(cl);
}

static dk_status dk_curl_open(const dk_http_client_options *opt, dk_http_client **ret)
{
    pthread_once(&dk_curl_once, dk_curl_global);
    dk_http_client *cl = DK_NEW(dk_http_client);
    pthread_mutex_init(&cl->lock, NULL);
    pthread_mutex_init(&cl->probe_lock, NULL);
    atomic_init(&cl->stop, false);
    atomic_init(&cl->signalled, false);
    cl->map_mask = 63;
    cl->map = dk_calloc(cl->map_mask + 1, sizeof *cl->map);
    cl->epfd = epoll_create1(EPOLL_CLOEXEC);
    cl->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = DK_CURL_WAKE_TAG};
    bool ok = cl->epfd >= 0 && cl->wakefd >= 0 &&
              epoll_ctl(cl->epfd, EPOLL_CTL_ADD, cl->wakefd, &ev) == 0;
    for (int i = 0; i < DK_CURL_NMULTI; i++) {
        struct dk_curl_multi *mu = &cl->multis[i];
        mu->cl = cl;
        mu->index = i;
        mu->m = curl_multi_init();
        ok = ok && mu->m;
    }
    if (!ok) {
        dk_curl_free(cl);
        return DK_E_INTERNAL;
    }
    long keep = opt && opt->max_connections > 0 ? opt->max_connections : 256;
    /* the streams' pool keeps a few idle connections for the next streams (reconnections) */
    cl->multis[DK_CURL_SHORT].keep_alive = keep;
    cl->multis[DK_CURL_LONG].keep_alive = keep / 4 > 0 ? keep / 4 : 1;
    for (int i = 0; i < DK_CURL_NMULTI; i++) {
        struct dk_curl_multi *mu = &cl->multis[i];
        curl_multi_setopt(mu->m, CURLMOPT_MAXCONNECTS, mu->keep_alive);
        curl_multi_setopt(mu->m, CURLMOPT_SOCKETFUNCTION, dk_curl_socket);
        curl_multi_setopt(mu->m, CURLMOPT_SOCKETDATA, mu);
    }
    if (pthread_create(&cl->thread, NULL, dk_curl_loop, cl) != 0) {
        dk_curl_free(cl);
        return DK_E_INTERNAL;
    }
    *ret = cl;
    return DK_OK;
}

static void dk_curl_close(dk_http_client *cl)
{
    if (!cl)
        return;
    atomic_store(&cl->stop, true);
    atomic_store(&cl->signalled, false);
    dk_curl_signal(cl);
    pthread_join(cl->thread, NULL);
    /* fail whatever is still queued or running (DK_E_UNAVAILABLE, as the port says) */
    cl->closing = true;
    struct dk_http_pending *q = cl->queue;
    while (q) {
        struct dk_http_pending *next = q->next;
        q->call->error = DK_E_UNAVAILABLE;
        q->call->done(q->call);
        dk_free(q);
        q = next;
    }
    while (cl->waiting)
        dk_curl_finish(cl, cl->waiting->easy, CURLE_ABORTED_BY_CALLBACK);
    while (cl->streaming)
        dk_curl_finish(cl, cl->streaming->easy, CURLE_ABORTED_BY_CALLBACK);
    for (int i = 0; i < cl->nfree; i++)
        curl_easy_cleanup(cl->free_handles[i]);
    dk_curl_free(cl);
}

static dk_status dk_curl_submit(dk_http_client *cl, dk_http_call *call)
{
    if (atomic_load(&cl->stop))
        return DK_E_UNAVAILABLE;
    atomic_store(&call->wake, 0u);
    call->streamed = false;
    call->cancelled = false;
    struct dk_http_pending *p = DK_NEW(struct dk_http_pending);
    p->call = call;
    pthread_mutex_lock(&cl->lock);
    if (cl->queue_tail)
        cl->queue_tail->next = p;
    else
        cl->queue = p;
    cl->queue_tail = p;
    pthread_mutex_unlock(&cl->lock);
    dk_curl_signal(cl);
    return DK_OK;
}

/* A resume or cancel request: a flag on the call, and the call in the wake queue unless a
 * request of its is in there already (its flags are taken together when it comes up). */
static void dk_curl_wake(dk_http_client *cl, dk_http_call *call, unsigned what)
{
    if (atomic_fetch_or(&call->wake, what) != 0u)
        return;
    pthread_mutex_lock(&cl->lock);
    if (cl->nwakeq == cl->wakeq_cap) {
        cl->wakeq_cap = cl->wakeq_cap ? cl->wakeq_cap * 2 : 64;
        cl->wakeq = dk_realloc(cl->wakeq, cl->wakeq_cap * sizeof *cl->wakeq);
    }
    cl->wakeq[cl->nwakeq++] = call;
    pthread_mutex_unlock(&cl->lock);
    dk_curl_signal(cl);
}

static void dk_curl_resume(dk_http_client *cl, dk_http_call *call)
{
    dk_curl_wake(cl, call, DK_CURL_WAKE_RESUME);
}

static void dk_curl_cancel(dk_http_client *cl, dk_http_call *call)
{
    dk_curl_wake(cl, call, DK_CURL_WAKE_CANCEL);
}

static size_t dk_curl_discard(char *data, size_t size, size_t nmemb, void *userp)
{
    return size * nmemb;
}

/* Probes go through one handle kept by the client, so its connections to the upstreams stay
 * alive between probes (a health check each second per upstream need not cost a connection
 * each, to either side). */
static int dk_curl_probe(dk_http_client *cl, const char *url, int timeout_ms)
{
    pthread_once(&dk_curl_once, dk_curl_global);
    pthread_mutex_lock(&cl->probe_lock);
    if (!cl->probe)
        cl->probe = curl_easy_init();
    CURL *e = cl->probe;
    long code = 0;
    if (e) {
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, dk_curl_discard);
        curl_easy_setopt(e, CURLOPT_MAXCONNECTS, (long)DK_CURL_PROBE_CONNECTIONS);
        if (curl_easy_perform(e) == CURLE_OK)
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    }
    pthread_mutex_unlock(&cl->probe_lock);
    return (int)code;
}

/* True when curl_url_get found the part (the text is freed). */
static bool dk_curl_url_has(CURLU *u, CURLUPart part)
{
    char *s = NULL;
    CURLUcode rc = curl_url_get(u, part, &s, 0);
    curl_free(s);
    return rc == CURLUE_OK;
}

static dk_status dk_curl_split_url(const char *url, dk_url_parts *ret)
{
    memset(ret, 0, sizeof *ret);
    CURLU *u = curl_url();
    if (!u)
        return DK_E_INTERNAL;
    char *scheme = NULL, *host = NULL, *port = NULL;
    CURLUcode rc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (rc == CURLUE_BAD_PORT_NUMBER)
        ret->error = DK_URL_BAD_PORT;
    else if (rc == CURLUE_NO_HOST)
        ret->error = DK_URL_NO_HOST;
    else if (rc == CURLUE_UNSUPPORTED_SCHEME)
        ret->error = DK_URL_BAD_SCHEME;
    else if (rc != CURLUE_OK || curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
             strlen(scheme) >= sizeof ret->scheme)
        ret->error = DK_URL_MALFORMED;
    if (ret->error == DK_URL_OK) {
        memcpy(ret->scheme, scheme, strlen(scheme) + 1);
        ret->userinfo = dk_curl_url_has(u, CURLUPART_USER) ||
                        dk_curl_url_has(u, CURLUPART_PASSWORD) ||
                        dk_curl_url_has(u, CURLUPART_OPTIONS);
        if (curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
            strlen(host) < sizeof ret->host)
            memcpy(ret->host, host, strlen(host) + 1);
        ret->zone = dk_curl_url_has(u, CURLUPART_ZONEID);
        int64_t pn = 0;
        if (curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
            dk_parse_i64(port, 1, 65535, &pn))
            ret->port = (int)pn;
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return ret->error == DK_URL_OK ? DK_OK : DK_E_VALIDATION;
}

const struct dk_http_client_ops dk_http_client_curl_ops = {
    .open = dk_curl_open,
    .close = dk_curl_close,
    .submit = dk_curl_submit,
    .resume = dk_curl_resume,
    .cancel = dk_curl_cancel,
    .probe = dk_curl_probe,
    .split_url = dk_curl_split_url,
};
