/* The outbound HTTP port on libcurl: one thread drives a curl multi handle; calls are queued
 * from any thread and woken with curl_multi_wakeup. Finished easy handles are kept for reuse,
 * so connections stay alive (CURLMOPT_MAXCONNECTS).
 * Streaming calls: a body whose Content-Length fits DK_CURL_STREAM_AFTER is buffered and
 * handed over whole, as without streaming; so is any body that arrives within the same round
 * of curl_multi_perform as the headers. A transfer still running after that round, or whose
 * buffer passes DK_CURL_STREAM_AFTER, switches to on_headers/on_data. Pausing is curl's own
 * (CURL_WRITEFUNC_PAUSE); resume and cancel requests from other threads are flags on the call
 * that this thread acts on after a wakeup (curl_easy_pause must run here). The headers
 * timeout is checked here too: curl's CURLOPT_TIMEOUT covers the whole transfer only.
 * Streamed request bodies: curl's read callback asks on_read, whose pause is curl's
 * (CURL_READFUNC_PAUSE) and is lifted by resume like the receiving side's (both directions
 * are tracked apart: unpausing one must not unpause the other). */
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <stdint.h>
#include <strings.h>

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

enum { DK_CURL_WAKE_RESUME = 1u, DK_CURL_WAKE_CANCEL = 2u };

struct dk_http_pending {
    dk_http_call *call;
    struct dk_http_pending *next;
};

struct dk_http_client {
    CURLM *multi;
    pthread_t thread;
    pthread_mutex_t lock;
    struct dk_http_pending *queue, *queue_tail;
    atomic_bool stop;
    atomic_bool wakes; /* some call has resume/cancel flags set */
    struct dk_http_transfer *active;
    struct dk_http_transfer *fresh; /* got their headers in this round of perform */
    int nwatch;                     /* active transfers waiting for headers with a deadline */
    int64_t next_sweep_ms;          /* next poll of the calls' `abandoned` */
    int nfree;
    CURL *free_handles[DK_CURL_FREE_HANDLES];
};

struct dk_http_transfer {
    dk_http_call *call;
    dk_http_client *owner;
    CURL *easy;
    struct dk_http_transfer *prev, *next; /* the client's active list */
    struct dk_http_transfer *fresh_next;
    struct curl_slist *headers;
    struct curl_slist *connect_to; /* the call's pinned addresses (CURLOPT_RESOLVE) */
    char *buf;
    size_t len, cap;  /* buffered body; for a streaming call, not yet delivered */
    int64_t deadline; /* for the headers (monotonic ms); 0: none */
    bool too_big, headers_done, streaming, paused, cancelled, watch, headers_late, in_fresh;
    bool send_paused; /* on_read had nothing: curl's sending is paused */
};

static pthread_once_t dk_curl_once = PTHREAD_ONCE_INIT;
static void dk_curl_global(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

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
    t->streaming = true;
    t->call->streamed = true;
    t->call->on_headers(t->call);
}

/* Hands the buffered body to on_data; DK_HTTP_DATA_OK once nothing is left. */
static dk_http_data_action dk_curl_flush(struct dk_http_transfer *t)
{
    if (t->len == 0)
        return DK_HTTP_DATA_OK;
    dk_http_data_action a = t->call->on_data(t->call, t->buf, t->len);
    if (a == DK_HTTP_DATA_OK)
        t->len = 0;
    return a;
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

static void dk_curl_unwatch(dk_http_client *cl, struct dk_http_transfer *t)
{
    if (t->watch) {
        t->watch = false;
        cl->nwatch--;
    }
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

static CURL *dk_curl_take(dk_http_client *cl)
{
    if (cl->nfree > 0) {
        CURL *e = cl->free_handles[--cl->nfree];
        curl_easy_reset(e);
        return e;
    }
    return curl_easy_init();
}

static void dk_curl_give(dk_http_client *cl, CURL *e)
{
    if (cl->nfree < DK_CURL_FREE_HANDLES)
        cl->free_handles[cl->nfree++] = e;
    else
        curl_easy_cleanup(e);
}

static void dk_curl_finish(dk_http_client *cl, CURL *e, CURLcode rc)
{
    struct dk_http_transfer *t = NULL;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&t);
    dk_http_call *c = t->call;
    if (t->prev)
        t->prev->next = t->next;
    else
        cl->active = t->next;
    if (t->next)
        t->next->prev = t->prev;
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
        if (t->cancelled)
            c->error = DK_E_UNAVAILABLE;
        else if (rc == CURLE_OPERATION_TIMEDOUT || t->headers_late)
            c->error = DK_E_TIMEOUT;
        else
            c->error = DK_E_BAD_GATEWAY;
        if (t->cancelled)
            snprintf(c->error_text, sizeof c->error_text, "cancelled");
        else if (t->too_big)
            snprintf(c->error_text, sizeof c->error_text, "upstream response too large");
        else if (t->headers_late)
            snprintf(c->error_text, sizeof c->error_text, "no response headers in time");
        else
            snprintf(c->error_text, sizeof c->error_text, "%s", curl_easy_strerror(rc));
    }
    curl_multi_remove_handle(cl->multi, e);
    curl_slist_free_all(t->headers);
    curl_slist_free_all(t->connect_to);
    dk_free(t->buf);
    dk_free(t);
    dk_curl_give(cl, e);
    c->done(c);
}

static void dk_curl_start(dk_http_client *cl, dk_http_call *c)
{
    CURL *e = dk_curl_take(cl);
    struct dk_http_transfer *t = DK_NEW(struct dk_http_transfer);
    t->call = c;
    t->owner = cl;
    if (!e) {
        dk_free(t);
        c->error = DK_E_BAD_GATEWAY;
        snprintf(c->error_text, sizeof c->error_text, "cannot create a transfer");
        c->done(c);
        return;
    }
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
    if (c->headers_timeout_ms > 0) {
        t->deadline = dk_mono_ms() + c->headers_timeout_ms;
        t->watch = true;
        cl->nwatch++;
    }
    t->easy = e;
    t->next = cl->active;
    if (cl->active)
        cl->active->prev = t;
    cl->active = t;
    if (curl_multi_add_handle(cl->multi, e) != CURLM_OK) {
        cl->active = t->next;
        if (t->next)
            t->next->prev = NULL;
        dk_curl_unwatch(cl, t);
        curl_slist_free_all(t->headers);
        curl_slist_free_all(t->connect_to);
        dk_free(t);
        dk_curl_give(cl, e);
        c->error = DK_E_BAD_GATEWAY;
        snprintf(c->error_text, sizeof c->error_text, "cannot start the transfer");
        c->done(c);
    }
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
 * (`abandoned`) are cancelled, so the upstream stops working for nobody. */
static void dk_curl_sweep_abandoned(dk_http_client *cl)
{
    int64_t now = dk_mono_ms();
    if (now < cl->next_sweep_ms)
        return;
    cl->next_sweep_ms = now + 1000;
    struct dk_http_transfer *next;
    for (struct dk_http_transfer *t = cl->active; t; t = next) {
        next = t->next;
        if (t->call->abandoned && !t->streaming && t->call->abandoned(t->call)) {
            t->cancelled = true;
            dk_curl_finish(cl, t->easy, CURLE_ABORTED_BY_CALLBACK);
        }
    }
}

/* Resume and cancel requests from other threads. */
static void dk_curl_wakes(dk_http_client *cl)
{
    if (!atomic_exchange(&cl->wakes, false))
        return;
    struct dk_http_transfer *next;
    for (struct dk_http_transfer *t = cl->active; t; t = next) {
        next = t->next;
        unsigned w = atomic_exchange(&t->call->wake, 0u);
        if (w & DK_CURL_WAKE_CANCEL) {
            t->cancelled = true;
            dk_curl_finish(cl, t->easy, CURLE_ABORTED_BY_CALLBACK);
            continue;
        }
        if (!(w & DK_CURL_WAKE_RESUME) || (!t->paused && !t->send_paused))
            continue;
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
            continue;
        /* what stays paused stays paused */
        int mask = (t->paused ? CURLPAUSE_RECV : 0) | (t->send_paused ? CURLPAUSE_SEND : 0);
        CURLcode rc =
            a == DK_HTTP_DATA_ABORT ? CURLE_ABORTED_BY_CALLBACK : curl_easy_pause(t->easy, mask);
        if (a == DK_HTTP_DATA_ABORT)
            t->cancelled = true;
        /* unpausing delivers what curl held back, through dk_curl_write: it may have been
         * refused (cancelled) or failed */
        if (rc != CURLE_OK)
            dk_curl_finish(cl, t->easy, rc);
    }
}

/* Fails the calls whose headers are late; returns the ms until the next such deadline (or
 * fallback when none). */
static int dk_curl_deadlines(dk_http_client *cl, int fallback)
{
    if (cl->nwatch == 0)
        return fallback;
    int64_t now = dk_mono_ms();
    int64_t soonest = now + fallback;
    struct dk_http_transfer *next;
    for (struct dk_http_transfer *t = cl->active; t; t = next) {
        next = t->next;
        if (!t->watch)
            continue;
        if (t->deadline <= now) {
            t->headers_late = true;
            dk_curl_finish(cl, t->easy, CURLE_OPERATION_TIMEDOUT);
        } else if (t->deadline < soonest) {
            soonest = t->deadline;
        }
    }
    return (int)(soonest - now);
}

static void *dk_curl_loop(void *arg)
{
    dk_http_client *cl = arg;
    while (!atomic_load(&cl->stop)) {
        pthread_mutex_lock(&cl->lock);
        struct dk_http_pending *q = cl->queue;
        cl->queue = cl->queue_tail = NULL;
        pthread_mutex_unlock(&cl->lock);
        while (q) {
            struct dk_http_pending *next = q->next;
            dk_curl_start(cl, q->call);
            dk_free(q);
            q = next;
        }
        dk_curl_wakes(cl);
        int running = 0;
        curl_multi_perform(cl->multi, &running);
        CURLMsg *msg;
        int left = 0;
        while ((msg = curl_multi_info_read(cl->multi, &left))) {
            if (msg->msg == CURLMSG_DONE)
                dk_curl_finish(cl, msg->easy_handle, msg->data.result);
        }
        dk_curl_start_streams(cl);
        dk_curl_sweep_abandoned(cl);
        int wait_ms = dk_curl_deadlines(cl, 1000);
        curl_multi_poll(cl->multi, NULL, 0, wait_ms, NULL);
    }
    return NULL;
}

static dk_status dk_curl_open(const dk_http_client_options *opt, dk_http_client **ret)
{
    pthread_once(&dk_curl_once, dk_curl_global);
    dk_http_client *cl = DK_NEW(dk_http_client);
    pthread_mutex_init(&cl->lock, NULL);
    atomic_init(&cl->stop, false);
    atomic_init(&cl->wakes, false);
    cl->multi = curl_multi_init();
    if (!cl->multi) {
        dk_free(cl);
        return DK_E_INTERNAL;
    }
    curl_multi_setopt(cl->multi, CURLMOPT_MAXCONNECTS,
                      (long)(opt && opt->max_connections > 0 ? opt->max_connections : 256));
    if (pthread_create(&cl->thread, NULL, dk_curl_loop, cl) != 0) {
        curl_multi_cleanup(cl->multi);
        dk_free(cl);
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
    curl_multi_wakeup(cl->multi);
    pthread_join(cl->thread, NULL);
    /* fail whatever is still queued or running */
    struct dk_http_pending *q = cl->queue;
    while (q) {
        struct dk_http_pending *next = q->next;
        q->call->error = DK_E_UNAVAILABLE;
        q->call->done(q->call);
        dk_free(q);
        q = next;
    }
    while (cl->active)
        dk_curl_finish(cl, cl->active->easy, CURLE_ABORTED_BY_CALLBACK);
    for (int i = 0; i < cl->nfree; i++)
        curl_easy_cleanup(cl->free_handles[i]);
    curl_multi_cleanup(cl->multi);
    pthread_mutex_destroy(&cl->lock);
    dk_free(cl);
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
    curl_multi_wakeup(cl->multi);
    return DK_OK;
}

static void dk_curl_wake(dk_http_client *cl, dk_http_call *call, unsigned what)
{
    atomic_fetch_or(&call->wake, what);
    atomic_store(&cl->wakes, true);
    curl_multi_wakeup(cl->multi);
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

static int dk_curl_probe(dk_http_client *cl, const char *url, int timeout_ms)
{
    pthread_once(&dk_curl_once, dk_curl_global);
    CURL *e = curl_easy_init();
    if (!e)
        return 0;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, dk_curl_discard);
    long code = 0;
    if (curl_easy_perform(e) == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(e);
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
