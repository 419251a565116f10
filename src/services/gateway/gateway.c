#include "services/gateway/gateway.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "ports/http_client.h"
#include "core/trace.h"
#include "core/banned.h"

#define GW_MAX_UPSTREAMS 16
#define GW_MAX_SERVICES  8
/* A streamed response pauses its upstream transfer while this much is waiting for the client.
 * Not below the core's high-water mark (256 KiB, DK_STREAM_HIGH_WATER in core/http/stream.c):
 * on_drained, which resumes the transfer, only fires for a buffer that has reached it. */
#define GW_STREAM_BOUND (256u * 1024u)
/* A streamed request body waiting for curl to send it: beyond this the client is held back
 * (the core suspends its connection) until curl has taken half of it. */
#define GW_UPLOAD_BOUND (256u * 1024u)

typedef struct gateway_upstream {
    char *base; /* "http://host:port", no trailing slash */
    atomic_int failures;
    atomic_llong open_until_ms; /* circuit open until then */
    atomic_bool ready;          /* last /ready probe answered 200 */
} gateway_upstream;

typedef struct gateway_pool {
    struct dk_gateway *gw;
    const dk_service *service;
    int n;
    gateway_upstream ups[GW_MAX_UPSTREAMS];
    atomic_uint next;
    dk_route *routes; /* the service's public routes with the forwarding handler */
} gateway_pool;

struct dk_gateway {
    dk_app *app;
    const struct dk_http_client_ops *client_ops;
    dk_http_client *client;
    int npools;
    gateway_pool pools[GW_MAX_SERVICES];
    int connect_timeout_ms, timeout_ms, circuit_failures;
    int64_t cooldown_ms, health_interval_ms;
    pthread_t health;
    pthread_mutex_t health_lock;
    pthread_cond_t health_cond;
    bool stop;
};

/* One forwarded request. On the heap, not in the request's arena: once a streamed response
 * has started, the client may go away (and its arena with it) while the upstream transfer
 * still runs. Freed in gateway_done. */
typedef struct gateway_job {
    dk_http_call call;
    dk_req *req; /* req and res: only until the client's request is resumed */
    dk_res *res;
    gateway_pool *pool;
    gateway_upstream *up;
    dk_stream *stream; /* a streamed response (after gateway_headers) */
    dk_span *span;     /* the forward's client span (NULL when not traced); ends with the job */
    /* A streamed request body (dk_req_body_streaming): the client's connection thread puts
     * (gateway_up_chunk, gateway_up_end), curl's thread takes (gateway_up_read); up_lock
     * guards the rest. */
    bool upload;
    pthread_mutex_t up_lock;
    char *up_buf; /* GW_UPLOAD_BOUND bytes; the unsent part is [up_off, up_len) */
    size_t up_off, up_len;
    bool up_ended;       /* the body has arrived whole */
    bool up_failed;      /* it will not: too large, or the client left */
    bool up_curl_paused; /* gateway_up_read had nothing: a chunk must resume the call */
    bool up_client_held; /* gateway_up_chunk took less than offered: the client waits for room */
} gateway_job;

static void gateway_job_free(gateway_job *j)
{
    if (j->span) {
        if (j->call.status > 0)
            dk_span_attr_int(j->span, "http.response.status_code", j->call.status);
        if (j->call.error != DK_OK || j->call.status >= 500)
            dk_span_error(j->span, j->call.error != DK_OK ? j->call.error_text : NULL);
        dk_span_end(j->span);
    }
    if (j->upload) {
        pthread_mutex_destroy(&j->up_lock);
        dk_free(j->up_buf);
    }
    dk_free(j);
}

static bool gateway_up_available(gateway_upstream *u, int64_t now)
{
    return atomic_load(&u->ready) && atomic_load(&u->open_until_ms) <= now;
}

static gateway_upstream *gateway_pick(gateway_pool *p)
{
    int64_t now = dk_mono_ms();
    unsigned start = atomic_fetch_add(&p->next, 1);
    for (int i = 0; i < p->n; i++) {
        gateway_upstream *u = &p->ups[(start + (unsigned)i) % (unsigned)p->n];
        if (gateway_up_available(u, now))
            return u;
    }
    return NULL;
}

static void gateway_record(dk_gateway *gw, gateway_upstream *u, bool ok)
{
    if (ok) {
        atomic_store(&u->failures, 0);
        return;
    }
    int f = atomic_fetch_add(&u->failures, 1) + 1;
    if (f >= gw->circuit_failures) {
        atomic_store(&u->open_until_ms, dk_mono_ms() + gw->cooldown_ms);
        atomic_store(&u->failures, 0);
        dk_log_warn("upstream %s: circuit open for %lld ms after %d failures", u->base,
                    (long long)gw->cooldown_ms, f);
    }
}

static bool gateway_hop_by_hop(const char *name)
{
    static const char *const drop[] = {"Connection",
                                       "Keep-Alive",
                                       "Proxy-Connection",
                                       "Proxy-Authenticate",
                                       "Proxy-Authorization",
                                       "TE",
                                       "Trailer",
                                       "Transfer-Encoding",
                                       "Upgrade",
                                       "Host",
                                       "Content-Length",
                                       "Expect",
                                       "X-Request-Id",
                                       "traceparent",
                                       "X-Forwarded-For",
                                       "X-Forwarded-Proto",
                                       "X-User-Id",
                                       "X-User-Role",
                                       "X-Session-Id",
                                       "Date",
                                       "Server"};
    for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
        if (strcasecmp(name, drop[i]) == 0)
            return true;
    /* identity and internal headers never cross the edge */
    return strncasecmp(name, "X-Docket-", 9) == 0;
}

static void gateway_add_header(void *ctx, const char *name, const char *value)
{
    gateway_job *j = ctx;
    if (gateway_hop_by_hop(name) || j->call.nheaders >= DK_HTTP_CALL_MAX_HEADERS - 6)
        return;
    j->call.headers[j->call.nheaders++] = dk_arena_printf(j->req->arena, "%s: %s", name, value);
}

/* The upstream's status tells the circuit breaker: a 503 is an upstream alive and shedding
 * load (or waiting on its database): it must not open the circuit and turn a busy service into
 * an absent one. */
static bool gateway_status_healthy(int status)
{
    return status < 500 || status == 501 || status == 503;
}

/* The upstream's headers, minus hop-by-hop ones, onto the client's response; returns the
 * Content-Type (NULL when none). */
static const char *gateway_copy_headers(dk_http_call *call, dk_res *res)
{
    const char *content_type = NULL;
    for (int i = 0; i < call->nresp_headers; i++) {
        const char *n = call->resp_names[i];
        if (strcasecmp(n, "Content-Type") == 0)
            content_type = call->resp_values[i];
        else if (!gateway_hop_by_hop(n))
            dk_res_header(res, n, call->resp_values[i]);
    }
    return content_type;
}

/* Runs on a connection thread when the client has taken what was buffered (or has gone):
 * the transfer may go on (or stop). */
static void gateway_drained(void *ctx)
{
    gateway_job *j = ctx;
    dk_gateway *gw = j->pool->gw;
    if (dk_stream_closed(j->stream))
        gw->client_ops->cancel(gw->client, &j->call);
    else
        gw->client_ops->resume(gw->client, &j->call);
}

/* Has the client left while its request waits for the upstream? (the http client's thread,
 * which alone clears j->req, so the request is still suspended and alive here) */
static bool gateway_abandoned(dk_http_call *call)
{
    gateway_job *j = call->ctx;
    return j->req && dk_req_client_gone(j->req);
}

/* The client's request is answered (its response is in res): the core drops the body
 * callbacks, and req and res are no longer ours. */
static void gateway_answer(gateway_job *j)
{
    if (!j->req)
        return;
    dk_req_resume(j->req);
    j->req = NULL;
    j->res = NULL;
}

/* The upstream's status and headers are in and its body is on its way: answer the client
 * with a streamed response (the client thread's side). While the request body still streams
 * up, the client's request is resumed only at its end (gateway_up_read): resuming drops the
 * body. */
static void gateway_headers(dk_http_call *call)
{
    gateway_job *j = call->ctx;
    gateway_record(j->pool->gw, j->up, gateway_status_healthy(call->status));
    const char *ct = gateway_copy_headers(call, j->res);
    j->stream = dk_res_stream(j->res, call->status, ct, gateway_drained, j);
    bool body_open = false;
    if (j->upload) {
        pthread_mutex_lock(&j->up_lock);
        body_open = !j->up_ended && !j->up_failed;
        pthread_mutex_unlock(&j->up_lock);
    }
    if (!body_open)
        gateway_answer(j);
}

/* ---------- streamed request bodies ---------- */

/* A piece of the client's body (on its connection's thread): into the buffer, as much as fits;
 * a paused upload is resumed. */
static size_t gateway_up_chunk(void *ctx, const char *data, size_t len)
{
    gateway_job *j = ctx;
    pthread_mutex_lock(&j->up_lock);
    if (j->up_off > 0 && j->up_len + len > GW_UPLOAD_BOUND) {
        memmove(j->up_buf, j->up_buf + j->up_off, j->up_len - j->up_off);
        j->up_len -= j->up_off;
        j->up_off = 0;
    }
    size_t room = GW_UPLOAD_BOUND - j->up_len;
    size_t take = len < room ? len : room;
    memcpy(j->up_buf + j->up_len, data, take);
    j->up_len += take;
    if (take < len)
        j->up_client_held = true;
    bool wake = take > 0 && j->up_curl_paused;
    if (wake)
        j->up_curl_paused = false;
    pthread_mutex_unlock(&j->up_lock);
    if (wake)
        j->pool->gw->client_ops->resume(j->pool->gw->client, &j->call);
    return take;
}

/* The end of the client's body: whole (the upload ends once sent) or not (too large, the client
 * left: the upstream call is abandoned). */
static void gateway_up_end(void *ctx, bool ok)
{
    gateway_job *j = ctx;
    dk_gateway *gw = j->pool->gw;
    pthread_mutex_lock(&j->up_lock);
    if (ok)
        j->up_ended = true;
    else
        j->up_failed = true;
    bool wake = j->up_curl_paused;
    j->up_curl_paused = false;
    pthread_mutex_unlock(&j->up_lock);
    if (!ok)
        gw->client_ops->cancel(gw->client, &j->call);
    else if (wake)
        gw->client_ops->resume(gw->client, &j->call);
}

/* curl wants body to send (its thread): what is buffered, else pause until a chunk comes, or
 * the end. Taking makes room: a client held back is let go once half the buffer is free. */
static size_t gateway_up_read(dk_http_call *call, char *buf, size_t max)
{
    gateway_job *j = call->ctx;
    pthread_mutex_lock(&j->up_lock);
    if (j->up_failed) {
        pthread_mutex_unlock(&j->up_lock);
        return DK_HTTP_READ_ABORT;
    }
    size_t avail = j->up_len - j->up_off;
    if (avail == 0) {
        bool ended = j->up_ended;
        if (!ended)
            j->up_curl_paused = true;
        pthread_mutex_unlock(&j->up_lock);
        if (!ended)
            return DK_HTTP_READ_PAUSE;
        if (j->stream)
            gateway_answer(j); /* the response started before the body's end */
        return 0;
    }
    size_t n = avail < max ? avail : max;
    memcpy(buf, j->up_buf + j->up_off, n);
    j->up_off += n;
    if (j->up_off == j->up_len)
        j->up_off = j->up_len = 0;
    bool release = j->up_client_held && j->up_len - j->up_off <= GW_UPLOAD_BOUND / 2;
    if (release)
        j->up_client_held = false;
    pthread_mutex_unlock(&j->up_lock);
    if (release && j->req)
        dk_req_body_resume(j->req);
    return n;
}

static bool gateway_up_failed(gateway_job *j)
{
    if (!j->upload)
        return false;
    pthread_mutex_lock(&j->up_lock);
    bool failed = j->up_failed;
    pthread_mutex_unlock(&j->up_lock);
    return failed;
}

static dk_http_data_action gateway_data(dk_http_call *call, const char *data, size_t len)
{
    gateway_job *j = call->ctx;
    if (dk_stream_buffered(j->stream) >= GW_STREAM_BOUND)
        return DK_HTTP_DATA_PAUSE; /* until gateway_drained */
    return dk_stream_write(j->stream, data, len) ? DK_HTTP_DATA_OK : DK_HTTP_DATA_ABORT;
}

static void gateway_done(dk_http_call *call)
{
    gateway_job *j = call->ctx;
    dk_gateway *gw = j->pool->gw;
    if (call->streamed) {
        /* the client has the status and headers: the body ends cleanly, or is cut */
        bool ok = call->error == DK_OK;
        /* cancelled (the client left), or the gateway is stopping: no fault of the upstream */
        if (!ok && !call->cancelled && call->error != DK_E_UNAVAILABLE) {
            gateway_record(gw, j->up, false);
            dk_log_warn("upstream %s failed after its headers: %s", j->up->base, call->error_text);
        }
        gateway_answer(j); /* when the request body had not ended (no callback may run after) */
        dk_stream_end(j->stream, !ok);
        dk_stream_release(j->stream);
        gateway_job_free(j);
        return;
    }
    dk_res *res = j->res;
    if (call->cancelled && gateway_up_failed(j)) {
        /* the client's body did not arrive whole: the core answers 413 for one too large; a
         * client that left gets nothing */
        dk_res_problem(res, DK_E_BAD_REQUEST, "the request body did not arrive whole");
    } else if (call->cancelled) {
        /* the client left while its request waited (gateway_abandoned): nobody to answer, and no
         * fault of the upstream's */
        dk_res_empty(res, 499);
    } else if (call->error == DK_OK) {
        gateway_record(gw, j->up, gateway_status_healthy(call->status));
        res->status = call->status;
        res->body = call->response;
        res->body_len = call->response_len;
        res->content_type = gateway_copy_headers(call, res);
    } else if (call->error == DK_E_UNAVAILABLE) {
        /* the http client closed under it: the gateway is stopping */
        dk_res_header(res, "Retry-After", "1");
        dk_res_problem(res, DK_E_UNAVAILABLE, "the gateway is shutting down");
    } else if (call->error == DK_E_TIMEOUT) {
        gateway_record(gw, j->up, false);
        dk_log_warn("upstream %s timed out: %s", j->up->base, call->error_text);
        dk_res_problem(res, DK_E_TIMEOUT, "the %s service did not answer in time",
                       j->pool->service->name);
    } else {
        gateway_record(gw, j->up, false);
        dk_log_warn("upstream %s failed: %s", j->up->base, call->error_text);
        dk_res_problem(res, DK_E_BAD_GATEWAY, "the %s service could not be reached",
                       j->pool->service->name);
    }
    gateway_answer(j);
    gateway_job_free(j);
}

/* Forwards a request; stream: the route is long-lived (DK_ROUTE_STREAM, e.g. SSE), so
 * gateway.timeout bounds only the wait for the upstream's headers, not the whole response. */
static void gateway_forward_with(dk_req *req, dk_res *res, bool stream)
{
    gateway_pool *p = req->service;
    dk_gateway *gw = p->gw;
    gateway_upstream *u = gateway_pick(p);
    if (!u) {
        char ra[24];
        snprintf(ra, sizeof ra, "%lld", (long long)((gw->cooldown_ms + 999) / 1000));
        dk_res_header(res, "Retry-After", ra);
        dk_res_problem(res, DK_E_UNAVAILABLE, "the %s service is not available; try again shortly",
                       p->service->name);
        return;
    }
    gateway_job *j = DK_NEW(gateway_job);
    j->req = req;
    j->res = res;
    j->pool = p;
    j->up = u;
    dk_http_call *c = &j->call;
    c->arena = req->arena;
    c->method = req->method;
    const char *qs = dk_req_query_string(req);
    c->url = dk_arena_printf(req->arena, "%s%s%s%s", u->base,
                             dk_percent_encode(req->arena, req->path, "/!$&'()*+,;=:@"),
                             *qs ? "?" : "", qs);
    dk_req_each_header(req, gateway_add_header, j);
    const char *xff = dk_req_header(req, "X-Forwarded-For");
    c->headers[c->nheaders++] =
        xff ? dk_arena_printf(req->arena, "X-Forwarded-For: %s, %s", xff, req->client_ip)
            : dk_arena_printf(req->arena, "X-Forwarded-For: %s", req->client_ip);
    c->headers[c->nheaders++] = dk_arena_printf(req->arena, "X-Request-Id: %s", req->request_id);
    /* the forward is a client span under the request's; the service's span hangs under it */
    j->span = dk_span_start(p->service->name, DK_SPAN_CLIENT);
    dk_span_attr_str(j->span, "http.request.method", req->method);
    dk_span_attr_str(j->span, "peer.service", p->service->name);
    char tp[DK_TRACEPARENT_LEN];
    if (!dk_span_traceparent(j->span, tp))
        snprintf(tp, sizeof tp, "00-%s-%s-%s", req->trace_id, req->span_id,
                 req->trace_sampled ? "01" : "00");
    c->headers[c->nheaders++] = dk_arena_printf(req->arena, "traceparent: %s", tp);
    c->connect_timeout_ms = gw->connect_timeout_ms;
    c->timeout_ms = stream ? 0 : gw->timeout_ms;
    c->headers_timeout_ms = stream ? gw->timeout_ms : 0;
    c->long_lived = stream; /* an event stream lives as long as the client's tab */
    if (dk_req_body_streaming(req)) {
        /* a large or chunked body: sent as it arrives; gateway.timeout bounds the upstream's
         * inactivity (not taking the body, then not answering) rather than the whole call */
        j->upload = true;
        pthread_mutex_init(&j->up_lock, NULL);
        j->up_buf = dk_malloc(GW_UPLOAD_BOUND);
        c->on_read = gateway_up_read;
        const char *cl = dk_req_header(req, "Content-Length");
        int64_t size = -1;
        if (!cl || !dk_parse_i64(cl, 0, INT64_MAX, &size))
            size = -1;
        c->body_size = size;
        c->timeout_ms = 0;
        c->headers_timeout_ms = gw->timeout_ms;
        dk_req_body_stream(req, gateway_up_chunk, gateway_up_end, j);
    } else {
        c->body = req->body;
        c->body_len = req->body_len;
    }
    c->on_headers = gateway_headers;
    c->on_data = gateway_data;
    c->done = gateway_done;
    c->abandoned = gateway_abandoned;
    c->ctx = j;
    dk_req_suspend(req);
    if (gw->client_ops->submit(gw->client, c) != DK_OK) {
        dk_res_header(res, "Retry-After", "1");
        dk_res_problem(res, DK_E_UNAVAILABLE, "the gateway is shutting down");
        dk_req_resume(req); /* drops the body callbacks before j goes */
        gateway_job_free(j);
    }
}

static void gateway_forward(dk_req *req, dk_res *res)
{
    gateway_forward_with(req, res, false);
}

static void gateway_forward_stream(dk_req *req, dk_res *res)
{
    gateway_forward_with(req, res, true);
}

/* Probes every upstream's /ready until stopped. */
static void *gateway_health_loop(void *arg)
{
    dk_gateway *gw = arg;
    pthread_mutex_lock(&gw->health_lock);
    while (!gw->stop) {
        pthread_mutex_unlock(&gw->health_lock);
        for (int i = 0; i < gw->npools; i++) {
            gateway_pool *p = &gw->pools[i];
            for (int k = 0; k < p->n; k++) {
                char url[512];
                snprintf(url, sizeof url, "%s/ready", p->ups[k].base);
                int code = gw->client_ops->probe(gw->client, url, gw->connect_timeout_ms);
                bool ready = code == 200;
                bool was = atomic_exchange(&p->ups[k].ready, ready);
                if (was != ready)
                    dk_log_info("upstream %s is %s", p->ups[k].base, ready ? "ready" : "not ready");
                if (ready && !was)
                    atomic_store(&p->ups[k].open_until_ms, 0);
            }
        }
        pthread_mutex_lock(&gw->health_lock);
        if (gw->stop)
            break;
        struct timespec ts = dk_mono_deadline(gw->health_interval_ms);
        pthread_cond_timedwait(&gw->health_cond, &gw->health_lock, &ts);
    }
    pthread_mutex_unlock(&gw->health_lock);
    return NULL;
}

static int gateway_parse_urls(gateway_pool *p, const char *list)
{
    const char *s = list;
    while (s && *s) {
        while (*s == ' ' || *s == ',')
            s++;
        if (!*s)
            break;
        const char *e = s;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > s && (t[-1] == ' ' || t[-1] == '/'))
            t--;
        if (p->n >= GW_MAX_UPSTREAMS)
            return -1;
        if (!((t - s > 7 && strncmp(s, "http://", 7) == 0) ||
              (t - s > 8 && strncmp(s, "https://", 8) == 0)))
            return -1;
        gateway_upstream *u = &p->ups[p->n++];
        u->base = dk_strndup(s, (size_t)(t - s));
        atomic_init(&u->failures, 0);
        atomic_init(&u->open_until_ms, 0);
        atomic_init(&u->ready, true); /* until the first probe says otherwise */
        s = e;
    }
    return p->n > 0 ? 0 : -1;
}

dk_status dk_gateway_new(dk_app *app, const dk_service *const *services, size_t nservices,
                         const struct dk_http_client_ops *client_ops, dk_gateway **ret)
{
    dk_gateway *gw = DK_NEW(dk_gateway);
    gw->app = app;
    const dk_config *c = app->config;
    gw->connect_timeout_ms = (int)dk_config_int(c, "gateway.connect_timeout");
    gw->timeout_ms = (int)dk_config_int(c, "gateway.timeout");
    gw->circuit_failures = (int)dk_config_int(c, "gateway.circuit_failures");
    gw->cooldown_ms = dk_config_int(c, "gateway.circuit_cooldown");
    gw->health_interval_ms = dk_config_int(c, "gateway.health_interval");
    pthread_mutex_init(&gw->health_lock, NULL);
    dk_cond_init_monotonic(&gw->health_cond);
    for (size_t i = 0; i < nservices && gw->npools < GW_MAX_SERVICES; i++) {
        char key[64];
        snprintf(key, sizeof key, "gateway.%s_url", services[i]->name);
        gateway_pool *p = &gw->pools[gw->npools++];
        p->gw = gw;
        p->service = services[i];
        if (gateway_parse_urls(p, dk_config_str(c, key)) != 0) {
            fprintf(stderr,
                    "config: %s must list the %s service's base URLs (http://host:port, "
                    "comma-separated) for the gateway\n",
                    key, services[i]->name);
            dk_gateway_free(gw);
            return DK_E_BAD_REQUEST;
        }
        p->routes = dk_calloc(services[i]->nroutes, sizeof(dk_route));
        for (size_t r = 0; r < services[i]->nroutes; r++) {
            p->routes[r] = services[i]->routes[r];
            p->routes[r].handler =
                (p->routes[r].flags & DK_ROUTE_STREAM) ? gateway_forward_stream : gateway_forward;
            /* the auth rate limit is the service's (it sees the client through
             * X-Forwarded-For); the gateway verifies tokens at the edge */
            p->routes[r].flags &= ~(unsigned)(DK_ROUTE_RATE_LIMIT | DK_ROUTE_OFFLOAD);
            /* large bodies go up as they arrive (small ones are buffered, as before) */
            p->routes[r].flags |= DK_ROUTE_BODY_STREAM;
        }
    }
    dk_http_client_options o = {.max_connections = 512};
    gw->client_ops = client_ops;
    if (gw->client_ops->open(&o, &gw->client) != DK_OK) {
        dk_gateway_free(gw);
        return DK_E_INTERNAL;
    }
    if (pthread_create(&gw->health, NULL, gateway_health_loop, gw) != 0) {
        gw->client_ops->close(gw->client);
        gw->client = NULL;
        dk_gateway_free(gw);
        return DK_E_INTERNAL;
    }
    *ret = gw;
    return DK_OK;
}

/* docket_gateway_upstream_up{service,upstream}: 1 while the upstream is in rotation. The
 * gateway's own /ready does not depend on upstreams: one service being down must not take the
 * whole edge out of the load balancer (its routes answer 502/503 instead). */
static void gateway_collect(void *ctx, dk_metrics_out *out)
{
    dk_gateway *gw = ctx;
    int64_t now = dk_mono_ms();
    dk_metrics_family(out, "docket_gateway_upstream_up", "gauge",
                      "1 while the upstream is in the gateway's rotation (ready, circuit closed).");
    for (int i = 0; i < gw->npools; i++) {
        gateway_pool *p = &gw->pools[i];
        for (int k = 0; k < p->n; k++) {
            char labels[600];
            snprintf(labels, sizeof labels, "service=\"%s\",upstream=\"%s\"", p->service->name,
                     p->ups[k].base);
            dk_metrics_sample(out, "docket_gateway_upstream_up", labels,
                              gateway_up_available(&p->ups[k], now) ? 1 : 0);
        }
    }
}

void dk_gateway_mount(dk_gateway *gw, dk_http_server *srv)
{
    for (int i = 0; i < gw->npools; i++) {
        gateway_pool *p = &gw->pools[i];
        dk_http_mount(srv, p->service->name, p->service->prefix, p->routes, p->service->nroutes, p);
    }
    dk_metrics_add_collector(gateway_collect, gw);
}

void dk_gateway_free(dk_gateway *gw)
{
    if (!gw)
        return;
    if (gw->client) {
        pthread_mutex_lock(&gw->health_lock);
        gw->stop = true;
        pthread_cond_signal(&gw->health_cond);
        pthread_mutex_unlock(&gw->health_lock);
        pthread_join(gw->health, NULL);
        gw->client_ops->close(gw->client);
    }
    for (int i = 0; i < gw->npools; i++) {
        for (int k = 0; k < gw->pools[i].n; k++)
            dk_free(gw->pools[i].ups[k].base);
        dk_free(gw->pools[i].routes);
    }
    pthread_cond_destroy(&gw->health_cond);
    pthread_mutex_destroy(&gw->health_lock);
    dk_free(gw);
}
