/* The outbound HTTP port on libcurl: one thread drives a curl multi handle; calls are queued
 * from any thread and woken with curl_multi_wakeup. Finished easy handles are kept for reuse,
 * so connections stay alive (CURLMOPT_MAXCONNECTS). */
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "ports/http_client.h"
#include "core/banned.h"

#define DK_CURL_FREE_HANDLES 64

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
    struct dk_http_transfer *active;
    int nfree;
    CURL *free_handles[DK_CURL_FREE_HANDLES];
};

struct dk_http_transfer {
    dk_http_call *call;
    CURL *easy;
    struct dk_http_transfer *prev, *next; /* the client's active list */
    struct curl_slist *headers;
    char *buf;
    size_t len, cap;
    bool too_big;
};

static pthread_once_t dk_curl_once = PTHREAD_ONCE_INIT;
static void dk_curl_global(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static size_t dk_curl_write(char *data, size_t size, size_t nmemb, void *userp)
{
    struct dk_http_transfer *t = userp;
    size_t n = size * nmemb;
    size_t max = t->call->max_response ? t->call->max_response : (size_t)8 << 20;
    if (t->len + n > max) {
        t->too_big = true;
        return 0; /* aborts the transfer */
    }
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
    return n;
}

static size_t dk_curl_header(char *data, size_t size, size_t nmemb, void *userp)
{
    struct dk_http_transfer *t = userp;
    size_t n = size * nmemb;
    dk_http_call *c = t->call;
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
    if (rc == CURLE_OK) {
        long code = 0;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
        c->status = (int)code;
        c->error = DK_OK;
        c->response = dk_arena_strndup(c->arena, t->buf ? t->buf : "", t->len);
        c->response_len = t->len;
    } else {
        c->status = 0;
        c->error = (rc == CURLE_OPERATION_TIMEDOUT) ? DK_E_TIMEOUT : DK_E_BAD_GATEWAY;
        if (t->too_big)
            snprintf(c->error_text, sizeof c->error_text, "upstream response too large");
        else
            snprintf(c->error_text, sizeof c->error_text, "%s", curl_easy_strerror(rc));
    }
    curl_multi_remove_handle(cl->multi, e);
    curl_slist_free_all(t->headers);
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
    if (strcmp(c->method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(c->method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, c->method);
        if (c->body_len > 0 || strcmp(c->method, "POST") == 0 || strcmp(c->method, "PUT") == 0 ||
            strcmp(c->method, "PATCH") == 0) {
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->body ? c->body : "");
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body_len);
        }
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
        curl_slist_free_all(t->headers);
        dk_free(t);
        dk_curl_give(cl, e);
        c->error = DK_E_BAD_GATEWAY;
        snprintf(c->error_text, sizeof c->error_text, "cannot start the transfer");
        c->done(c);
    }
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
        int running = 0;
        curl_multi_perform(cl->multi, &running);
        CURLMsg *msg;
        int left = 0;
        while ((msg = curl_multi_info_read(cl->multi, &left))) {
            if (msg->msg == CURLMSG_DONE)
                dk_curl_finish(cl, msg->easy_handle, msg->data.result);
        }
        curl_multi_poll(cl->multi, NULL, 0, 1000, NULL);
    }
    return NULL;
}

static dk_status dk_curl_open(const dk_http_client_options *opt, dk_http_client **ret)
{
    pthread_once(&dk_curl_once, dk_curl_global);
    dk_http_client *cl = DK_NEW(dk_http_client);
    pthread_mutex_init(&cl->lock, NULL);
    atomic_init(&cl->stop, false);
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

const struct dk_http_client_ops dk_http_client_curl_ops = {
    .open = dk_curl_open,
    .close = dk_curl_close,
    .submit = dk_curl_submit,
    .probe = dk_curl_probe,
};
