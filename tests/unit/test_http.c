/* test_http.c — the HTTP core end to end: a real server on an ephemeral 127.0.0.1 port, called
 * with libcurl. Routing and path parameters, problem+json (404/405/415/400/422/413/500),
 * request ids, trace context, bearer authentication and revocation, rate limits, /health,
 * /ready, /metrics, the graceful drain of dk_http_stop, and streaming responses (dk_stream:
 * incremental delivery, flow control, clients that leave, drain), and streamed request bodies
 * (DK_ROUTE_BODY_STREAM: chunks in order, back-pressure, over-limit bodies, clients that
 * leave mid-upload, answers before the body's end). */
#include "testutil.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/app.h"
#include "core/arena.h"
#include "core/http.h"
#include "core/ids.h"
#include "core/log.h"
#include "core/session_guard.h"
#include "core/timeutil.h"
#include "core/token.h"
#include "ports/kv.h"
#include "adapters/kv.h"
#include "core/banned.h"

#define SECRET       "http-test-secret-0123456789abcdef"
#define BODY_LIMIT   1024
#define SERVICE_NAME "things"
#define PROCESS_NAME "httptest"

struct fixture {
    dk_app app;
    dk_http_server *srv;
    int port;
    dk_http_server *edge; /* CORS, forwarded-for and an edge rate limit switched on */
    int edge_port;
    dk_http_server *streams; /* streaming routes; drained by test_stream_drain */
    int streams_port;
    dk_http_server *uploads; /* streamed request bodies; body limit UPLOAD_LIMIT */
    int uploads_port;
    atomic_bool ready_fails;
    atomic_bool slow_started;
    dk_arena *arena; /* test-side allocations */
};

static struct fixture *F;

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---------- the routes under test ---------- */

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static void h_get_thing(dk_req *req, dk_res *res)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", str_or_null(dk_req_param(req, "id")));
    json_object_set_new(o, "nparams", json_integer(req->nparams));
    json_object_set_new(o, "missing_param", str_or_null(dk_req_param(req, "nope")));
    json_object_set_new(o, "q", str_or_null(dk_req_query(req, "q")));
    json_object_set_new(o, "x_test", str_or_null(dk_req_header(req, "X-Test")));
    json_object_set_new(o, "service", str_or_null(req->service_name));
    json_object_set_new(o, "state_ok", json_boolean(req->service == F));
    json_object_set_new(o, "app_ok", json_boolean(req->app == &F->app));
    json_object_set_new(o, "route", str_or_null(req->route_pattern));
    json_object_set_new(o, "method", str_or_null(req->method));
    json_object_set_new(o, "path", str_or_null(req->path));
    json_object_set_new(o, "request_id", str_or_null(req->request_id));
    json_object_set_new(o, "trace_id", json_string(req->trace_id));
    json_object_set_new(o, "span_id", json_string(req->span_id));
    json_object_set_new(o, "parent_span_id", json_string(req->parent_span_id));
    json_object_set_new(o, "client_ip", str_or_null(req->client_ip));
    json_object_set_new(o, "has_identity", json_boolean(req->identity != NULL));
    dk_res_json(res, 200, o);
}

static void h_get_part(dk_req *req, dk_res *res)
{
    dk_res_json(res, 200,
                json_pack("{s:s,s:s,s:i}", "id", dk_req_param(req, "id"), "part",
                          dk_req_param(req, "part"), "nparams", req->nparams));
}

static void h_post_thing(dk_req *req, dk_res *res)
{
    json_t *body = NULL;
    if (dk_req_json(req, res, &body) != DK_OK)
        return;
    dk_errors e;
    dk_errors_init(&e);
    json_t *name = json_object_get(body, "name");
    if (!name)
        dk_errors_add(&e, "name", "is required");
    else if (!json_is_string(name))
        dk_errors_add(&e, "name", "must be a string");
    json_t *count = json_object_get(body, "count");
    if (count && !json_is_integer(count))
        dk_errors_add(&e, "count", "must be an integer, not %s", "that");
    if (dk_errors_any(&e)) {
        dk_res_validation(res, &e);
        return;
    }
    dk_errors_release(&e);
    dk_res_header(res, "Location", "/api/v1/things/new");
    dk_res_json(res, 201,
                json_pack("{s:O,s:I}", "name", name, "body_len", (json_int_t)req->body_len));
}

static void h_delete_thing(dk_req *req, dk_res *res)
{
    dk_res_empty(res, 204);
}

static void h_me(dk_req *req, dk_res *res)
{
    const dk_identity *id = req->identity;
    if (!id) {
        dk_res_problem(res, DK_E_INTERNAL, "no identity on an authenticated route");
        return;
    }
    dk_res_json(res, 200,
                json_pack("{s:s,s:s,s:s,s:I}", "user_id", id->user_id, "session_id", id->session_id,
                          "role", id->role, "expires_at_ms", (json_int_t)id->expires_at_ms));
}

static void h_limited(dk_req *req, dk_res *res)
{
    dk_res_json(res, 200, json_pack("{s:b}", "ok", 1));
}

static void h_counted(dk_req *req, dk_res *res)
{
    dk_res_json(res, 200, json_object());
}

static void h_silent(dk_req *req, dk_res *res)
{
    /* forgets to answer */
}

static void h_problem(dk_req *req, dk_res *res)
{
    dk_res_header(res, "X-Custom", "custom value");
    dk_res_problem_ext(res, DK_E_CONFLICT,
                       json_pack("{s:s,s:i}", "resource", "thing", "version", 7),
                       "version %d is stale", 6);
}

static void h_text(dk_req *req, dk_res *res)
{
    static const char text[] = "plain text\n";
    dk_res_header(res, "Cache-Control", "no-store");
    dk_res_text(res, 200, "text/plain; charset=utf-8", text, sizeof text - 1);
}

static void h_root(dk_req *req, dk_res *res)
{
    dk_res_json(res, 200, json_pack("{s:s}", "root", req->route_pattern));
}

static void h_dynamic_header(dk_req *req, dk_res *res)
{
    /* a header name built at run time, reused by the handler right after the call */
    static char name[32];
    snprintf(name, sizeof name, "X-Dynamic");
    dk_res_header(res, name, "first");
    snprintf(name, sizeof name, "X-Clobbered");
    dk_res_empty(res, 204);
}

static void add_header(void *ctx, const char *name, const char *value)
{
    json_object_set_new(ctx, name, json_string(value));
}

static void h_echo(dk_req *req, dk_res *res)
{
    json_t *headers = json_object();
    dk_req_each_header(req, add_header, headers);
    dk_res_json(res, 200,
                json_pack("{s:s,s:o,s:s}", "query", dk_req_query_string(req), "headers", headers,
                          "client_ip", req->client_ip));
}

static void h_internal(dk_req *req, dk_res *res)
{
    dk_res_json(res, 200,
                json_pack("{s:s,s:s}", "caller", req->identity ? req->identity->user_id : "",
                          "role", req->identity ? req->identity->role : ""));
}

/* Answers from another thread, as the gateway does. */
struct later {
    dk_req *req;
    dk_res *res;
};

static void *resume_main(void *p)
{
    struct later *l = p;
    sleep_ms(50);
    dk_res_header(l->res, "X-Answered", "later");
    dk_res_json(l->res, 200, json_pack("{s:s}", "answered", "later"));
    dk_req_resume(l->req);
    return NULL;
}

static void h_suspended(dk_req *req, dk_res *res)
{
    struct later *l = dk_arena_alloc(req->arena, sizeof *l);
    l->req = req;
    l->res = res;
    dk_req_suspend(req);
    pthread_t th;
    if (pthread_create(&th, NULL, resume_main, l) != 0)
        abort();
    pthread_detach(th);
}

static void h_slow(dk_req *req, dk_res *res)
{
    atomic_store(&F->slow_started, true);
    sleep_ms(300);
    dk_res_json(res, 200, json_pack("{s:s}", "slow", "done"));
}

/* ---------- streaming routes (dk_stream) ---------- */

/* A producer thread per streamed request, driven by query parameters:
 *   n        pieces to write (0: until the client is gone)
 *   size     bytes per piece (default: "piece <i>\n")
 *   delay_ms pause between pieces
 *   fail     1: end with an error after the pieces (the client sees a cut response)
 *   flow     1: wait for on_drained whenever more than STREAM_BOUND bytes are buffered */
#define STREAM_BOUND (256u * 1024u)

struct producer {
    dk_stream *s;
    dk_req *req; /* set when the request is answered later (dk_req_resume after the stream) */
    dk_res *res;
    long n, size, delay_ms;
    bool fail, flow;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool drained;
};

static struct stream_stats {
    atomic_int running;         /* producer threads alive */
    atomic_int write_refused;   /* producers that saw dk_stream_write return false */
    atomic_int drained_calls;   /* on_drained callbacks */
    atomic_size_t max_buffered; /* the most dk_stream_buffered reported after a write */
    atomic_long written;        /* bytes accepted by dk_stream_write */
    atomic_int arena_freed;     /* /events/held: its request's arena has been freed */
} SS;

static long query_long(dk_req *req, const char *name, long dflt)
{
    const char *v = dk_req_query(req, name);
    return v ? strtol(v, NULL, 10) : dflt;
}

static void producer_drained(void *ctx)
{
    struct producer *p = ctx;
    atomic_fetch_add(&SS.drained_calls, 1);
    pthread_mutex_lock(&p->lock);
    p->drained = true;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

static void *producer_main(void *arg)
{
    struct producer *p = arg;
    if (p->req) {
        /* answered later: the stream starts on this thread, then the request resumes */
        sleep_ms(20);
        p->s = dk_res_stream(p->res, 200, "text/event-stream", producer_drained, p);
        dk_req_resume(p->req);
    }
    char *piece = malloc(p->size > 0 ? (size_t)p->size : 64);
    assert_non_null(piece);
    for (long i = 0; p->n == 0 || i < p->n; i++) {
        size_t len;
        if (p->size > 0) {
            for (long k = 0; k < p->size; k++)
                piece[k] = (char)('a' + (i * 7 + k) % 26);
            len = (size_t)p->size;
        } else {
            len = (size_t)snprintf(piece, 64, "piece %ld\n", i);
        }
        if (!dk_stream_write(p->s, piece, len)) {
            atomic_fetch_add(&SS.write_refused, 1);
            break;
        }
        atomic_fetch_add(&SS.written, (long)len);
        size_t b = dk_stream_buffered(p->s);
        size_t was = atomic_load(&SS.max_buffered);
        while (b > was && !atomic_compare_exchange_weak(&SS.max_buffered, &was, b))
            ;
        if (p->flow && b >= STREAM_BOUND) {
            /* wait for the client to catch up (or to go away): on_drained wakes us; a drain
             * signalled earlier (a stale flag) must not let a write through above the bound,
             * so the buffer itself is what is waited on */
            pthread_mutex_lock(&p->lock);
            while (!dk_stream_closed(p->s) && dk_stream_buffered(p->s) >= STREAM_BOUND) {
                if (!p->drained) {
                    struct timespec ts;
                    clock_gettime(CLOCK_REALTIME, &ts);
                    ts.tv_nsec += 20 * 1000 * 1000;
                    if (ts.tv_nsec >= 1000000000) {
                        ts.tv_sec++;
                        ts.tv_nsec -= 1000000000;
                    }
                    pthread_cond_timedwait(&p->cond, &p->lock, &ts);
                }
                p->drained = false;
            }
            p->drained = false;
            pthread_mutex_unlock(&p->lock);
        }
        if (p->delay_ms > 0)
            sleep_ms((int)p->delay_ms);
    }
    free(piece);
    dk_stream_end(p->s, p->fail);
    dk_stream_release(p->s);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p);
    atomic_fetch_sub(&SS.running, 1);
    return NULL;
}

static void start_producer(dk_req *req, dk_res *res, bool later)
{
    struct producer *p = calloc(1, sizeof *p);
    assert_non_null(p);
    p->n = query_long(req, "n", 3);
    p->size = query_long(req, "size", 0);
    p->delay_ms = query_long(req, "delay_ms", 0);
    p->fail = query_long(req, "fail", 0) == 1;
    p->flow = query_long(req, "flow", 0) == 1;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    if (later) {
        p->req = req;
        p->res = res;
        dk_req_suspend(req);
    } else {
        dk_res_header(res, "Cache-Control", "no-store");
        p->s = dk_res_stream(res, 200, "text/event-stream", producer_drained, p);
    }
    atomic_fetch_add(&SS.running, 1);
    pthread_t th;
    if (pthread_create(&th, NULL, producer_main, p) != 0)
        abort();
    pthread_detach(th);
}

static void h_stream(dk_req *req, dk_res *res)
{
    start_producer(req, res, false);
}

static void h_stream_later(dk_req *req, dk_res *res)
{
    start_producer(req, res, true);
}

static void mark_arena_freed(void *p)
{
    (void)p;
    atomic_store(&SS.arena_freed, 1);
}

/* A long-lived stream that reports when its request's arena goes. */
static void h_stream_held(dk_req *req, dk_res *res)
{
    dk_arena_defer(req->arena, mark_arena_freed, NULL);
    start_producer(req, res, false);
}

static const dk_route STREAM_ROUTES[] = {
    {"GET", "/events", h_stream, DK_ROUTE_STREAM}, /* long-lived (SSE-like) */
    {"GET", "/events/later", h_stream_later, DK_ROUTE_STREAM},
    {"GET", "/events/held", h_stream_held, DK_ROUTE_STREAM},
    {"GET", "/download", h_stream, 0}, /* a finite streamed body */
    {"GET", "/download/later", h_stream_later, 0},
};

/* ---------- streamed request bodies: a sink that checks and counts what it gets ---------- */

#define UPLOAD_LIMIT (4u << 20)

/* The body expected: byte i of an upload is PATTERN(i). */
#define PATTERN(i) ((char)('a' + (int)((i) % 23)))

static struct upload_stats {
    atomic_int handled;   /* streaming bodies dispatched */
    atomic_int ended_ok;  /* on_end(true) */
    atomic_int ended_bad; /* on_end(false) */
    atomic_int finished;  /* sinks answered and freed */
} UP;

struct sink {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    dk_req *req;
    dk_res *res;
    size_t cap; /* what the sink holds at most before on_chunk refuses */
    size_t held, total, max_held;
    long chunks, refusals, partials; /* on_chunk calls; those that took nothing, less */
    bool in_order, ended, ok, held_back, early;
    int stall_ms; /* the consumer takes nothing for this long at first */
    int step_ms;  /* then waits this long between 16 KiB steps */
};

static size_t sink_chunk(void *ctx, const char *data, size_t len)
{
    struct sink *k = ctx;
    pthread_mutex_lock(&k->lock);
    size_t room = k->cap - k->held;
    size_t take = len < room ? len : room;
    for (size_t i = 0; i < take; i++)
        if (data[i] != PATTERN(k->total + i))
            k->in_order = false;
    k->total += take;
    k->held += take;
    if (k->held > k->max_held)
        k->max_held = k->held;
    k->chunks++;
    if (take == 0)
        k->refusals++;
    if (take < len) {
        k->held_back = true;
        k->partials++;
    }
    pthread_cond_signal(&k->cond);
    pthread_mutex_unlock(&k->lock);
    return take;
}

static void sink_end(void *ctx, bool ok)
{
    struct sink *k = ctx;
    atomic_fetch_add(ok ? &UP.ended_ok : &UP.ended_bad, 1);
    pthread_mutex_lock(&k->lock);
    k->ended = true;
    k->ok = ok;
    pthread_cond_signal(&k->cond);
    pthread_mutex_unlock(&k->lock);
}

/* The consumer: takes what the sink holds (slowly when asked), lets a held-back client go,
 * and answers once the body has ended (or, early, after the first piece). */
static void *sink_main(void *arg)
{
    struct sink *k = arg;
    if (k->stall_ms)
        sleep_ms(k->stall_ms);
    pthread_mutex_lock(&k->lock);
    for (;;) {
        while (k->held == 0 && !k->ended && !(k->early && k->total > 0))
            pthread_cond_wait(&k->cond, &k->lock);
        if (k->early && k->total > 0)
            break;
        if (k->held == 0 && k->ended)
            break;
        size_t step = k->held < 16384 ? k->held : 16384;
        k->held -= step;
        bool release = k->held_back && k->held <= k->cap / 2;
        if (release)
            k->held_back = false;
        pthread_mutex_unlock(&k->lock);
        if (release)
            dk_req_body_resume(k->req);
        if (k->step_ms)
            sleep_ms(k->step_ms);
        pthread_mutex_lock(&k->lock);
    }
    json_t *o = json_pack("{s:I,s:b,s:b,s:I,s:I,s:I,s:I}", "bytes", (json_int_t)k->total,
                          "in_order", k->in_order, "ok", k->ok, "max_held", (json_int_t)k->max_held,
                          "chunks", (json_int_t)k->chunks, "refusals", (json_int_t)k->refusals,
                          "partials", (json_int_t)k->partials);
    bool early = k->early;
    pthread_mutex_unlock(&k->lock);
    if (early)
        dk_res_problem(k->res, DK_E_FORBIDDEN, "refused after %zu bytes", (size_t)1);
    else
        dk_res_json(k->res, 200, o);
    if (early)
        json_decref(o);
    dk_req_resume(k->req); /* no callback runs after this: the sink can go */
    pthread_mutex_destroy(&k->lock);
    pthread_cond_destroy(&k->cond);
    free(k);
    atomic_fetch_add(&UP.finished, 1);
    return NULL;
}

/* POST /upload?cap=&stall=&step=&early=1 */
static void h_upload(dk_req *req, dk_res *res)
{
    if (!dk_req_body_streaming(req)) { /* small: buffered as on any route */
        json_t *o = json_pack("{s:I,s:b}", "bytes", (json_int_t)req->body_len, "streamed", 0);
        dk_res_json(res, 200, o);
        return;
    }
    atomic_fetch_add(&UP.handled, 1);
    struct sink *k = calloc(1, sizeof *k);
    assert_non_null(k);
    pthread_mutex_init(&k->lock, NULL);
    pthread_cond_init(&k->cond, NULL);
    k->req = req;
    k->res = res;
    k->cap = (size_t)query_long(req, "cap", 1 << 30);
    k->stall_ms = (int)query_long(req, "stall", 0);
    k->step_ms = (int)query_long(req, "step", 0);
    k->early = query_long(req, "early", 0) != 0;
    k->in_order = true;
    dk_req_body_stream(req, sink_chunk, sink_end, k);
    dk_req_suspend(req);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, sink_main, k), 0);
    pthread_detach(t);
}

static const dk_route UPLOAD_ROUTES[] = {
    {"POST", "/upload", h_upload, DK_ROUTE_BODY_STREAM},
    {"PUT", "/upload/auth", h_upload, DK_ROUTE_BODY_STREAM | DK_ROUTE_AUTH},
};

static const dk_route ROUTES[] = {
    {"GET", "/things/{id}", h_get_thing, 0},
    {"DELETE", "/things/{id}", h_delete_thing, 0},
    {"POST", "/things", h_post_thing, 0},
    {"GET", "/things/{id}/parts/{part}", h_get_part, 0},
    {"GET", "/me", h_me, DK_ROUTE_AUTH},
    {"POST", "/limited", h_limited, DK_ROUTE_RATE_LIMIT},
    {"GET", "/counted", h_counted, 0},
    {"GET", "/silent", h_silent, 0},
    {"GET", "/problem", h_problem, 0},
    {"GET", "/text", h_text, 0},
    {"GET", "/slow", h_slow, 0},
    {"GET", "/", h_root, 0},
    {"GET", "/dynamic", h_dynamic_header, 0},
    {"GET", "/echo", h_echo, 0},
    {"POST", "/echo", h_echo, 0},
    {"GET", "/internal/{id}", h_internal, DK_ROUTE_INTERNAL},
};

static dk_status ready_check(void *ctx, char *reason, size_t cap)
{
    struct fixture *f = ctx;
    if (atomic_load(&f->ready_fails)) {
        snprintf(reason, cap, "database down");
        return DK_E_UNAVAILABLE;
    }
    return DK_OK;
}

static int group_setup(void **state)
{
    dk_log_init(PROCESS_NAME, DK_LOG_ERROR);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct fixture *f = calloc(1, sizeof *f);
    F = f;
    dk_kv_options kvo = {.key_prefix = "httptest:"};
    f->app.store.ops = &dk_kv_memory_ops;
    if (dk_kv_memory_ops.open(&kvo, &f->app.store.kv) != DK_OK)
        return -1;
    f->app.tokens = dk_tokens_new((const unsigned char *)SECRET, sizeof SECRET - 1, 900000);
    f->app.rate_limit_enabled = true;
    f->app.rate_limit_window_ms = 60000;
    f->app.rate_limit_max = 2;
    f->app.refresh_ttl_ms = 604800000;
    f->app.process = PROCESS_NAME;
    atomic_init(&f->ready_fails, false);
    atomic_init(&f->slow_started, false);
    f->arena = dk_arena_new();
    dk_http_options opt = {.host = "127.0.0.1",
                           .port = 0,
                           .threads = 2,
                           .body_limit = BODY_LIMIT,
                           .drain_timeout_ms = 1000,
                           .process_name = PROCESS_NAME};
    f->srv = dk_http_new(&opt, &f->app);
    dk_http_mount(f->srv, SERVICE_NAME, "/api/v1", ROUTES, sizeof ROUTES / sizeof ROUTES[0], f);
    dk_http_add_ready_check(f->srv, "database", ready_check, f);
    if (dk_http_start(f->srv) != DK_OK)
        return -1;
    f->port = dk_http_port(f->srv);
    if (f->port <= 0 || f->port > 65535)
        return -1;
    /* The second server lives as long as the first: see test_server_can_be_recreated. */
    dk_http_options eopt = opt;
    eopt.process_name = "edgetest";
    eopt.cors_origins = "https://app.example, https://other.example";
    eopt.edge_rate_limit_rps = 3;
    eopt.trust_forwarded_for = true;
    f->edge = dk_http_new(&eopt, &f->app);
    dk_http_mount(f->edge, "edge", "/api/v1", ROUTES, sizeof ROUTES / sizeof ROUTES[0], f);
    if (dk_http_start(f->edge) != DK_OK)
        return -1;
    f->edge_port = dk_http_port(f->edge);
    dk_http_options sopt = opt;
    sopt.process_name = "streamtest";
    f->streams = dk_http_new(&sopt, &f->app);
    dk_http_mount(f->streams, "streams", "/api/v1", STREAM_ROUTES,
                  sizeof STREAM_ROUTES / sizeof STREAM_ROUTES[0], f);
    if (dk_http_start(f->streams) != DK_OK)
        return -1;
    f->streams_port = dk_http_port(f->streams);
    dk_http_options uopt = opt;
    uopt.process_name = "uploadtest";
    uopt.body_limit = UPLOAD_LIMIT;
    f->uploads = dk_http_new(&uopt, &f->app);
    dk_http_mount(f->uploads, "uploads", "/api/v1", UPLOAD_ROUTES,
                  sizeof UPLOAD_ROUTES / sizeof UPLOAD_ROUTES[0], f);
    if (dk_http_start(f->uploads) != DK_OK)
        return -1;
    f->uploads_port = dk_http_port(f->uploads);
    *state = f;
    return 0;
}

static int group_teardown(void **state)
{
    struct fixture *f = F;
    dk_http_free(f->srv);
    dk_http_free(f->edge);
    dk_http_free(f->streams);
    dk_http_free(f->uploads);
    dk_tokens_free(f->app.tokens);
    f->app.store.ops->close(f->app.store.kv);
    dk_arena_free(f->arena);
    free(f);
    F = NULL;
    curl_global_cleanup();
    return 0;
}

/* ---------- a small libcurl client ---------- */

struct resp {
    long status;
    CURLcode rc;
    char *body; /* NUL-terminated; in the fixture arena */
    size_t len;
    char *headers; /* raw header block of the final response */
    json_t *json;  /* body parsed when it is JSON; owned by the fixture arena */
};

struct buf {
    char *p;
    size_t len, cap;
};

static void buf_add(struct buf *b, const void *data, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        assert_non_null(p);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    buf_add(ud, data, size * n);
    return size * n;
}

static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    struct buf *b = ud;
    if (size * n >= 5 && strncmp(data, "HTTP/", 5) == 0)
        b->len = 0; /* a new response (after 100 Continue): keep only the last */
    buf_add(b, data, size * n);
    return size * n;
}

struct upload {
    const char *data;
    size_t len, off, piece;
};

static size_t on_read(char *out, size_t size, size_t n, void *ud)
{
    struct upload *u = ud;
    size_t want = size * n;
    if (want > u->piece)
        want = u->piece;
    if (want > u->len - u->off)
        want = u->len - u->off;
    memcpy(out, u->data + u->off, want);
    u->off += want;
    return want;
}

static void json_decref_cb(void *p)
{
    json_decref(p);
}

enum body_mode { PLAIN, CHUNKED };

/* One request to 127.0.0.1:port. headers: NULL-terminated list of "Name: value" lines. body
 * NULL: none. */
static struct resp request_at(int port, const char *method, const char *path,
                              const char *const *headers, const char *body, size_t body_len,
                              enum body_mode mode)
{
    struct resp r = {0};
    CURL *c = curl_easy_init();
    assert_non_null(c);
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    struct buf bb = {0}, hb = {0};
    struct curl_slist *hl = NULL;
    hl = curl_slist_append(hl, "Expect:");
    for (const char *const *h = headers; h && *h; h++)
        hl = curl_slist_append(hl, *h);
    struct upload up = {.data = body, .len = body_len, .piece = 100};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &bb);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &hb);
    if (body && mode == PLAIN) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)body_len);
    } else if (body && mode == CHUNKED) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, &up);
        hl = curl_slist_append(hl, "Transfer-Encoding: chunked");
    }
    if (strcmp(method, "GET") != 0 && !(strcmp(method, "POST") == 0 && body))
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    r.rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    r.body = dk_arena_strndup(F->arena, bb.p ? bb.p : "", bb.len);
    r.len = bb.len;
    r.headers = dk_arena_strdup(F->arena, hb.p ? hb.p : "");
    free(bb.p);
    free(hb.p);
    json_error_t err;
    r.json = json_loadb(r.body, r.len, JSON_DECODE_ANY, &err);
    if (r.json)
        dk_arena_defer(F->arena, json_decref_cb, r.json);
    return r;
}

static struct resp request_full(const char *method, const char *path, const char *const *headers,
                                const char *body, size_t body_len, enum body_mode mode)
{
    return request_at(F->port, method, path, headers, body, body_len, mode);
}

/* A request to the second server (CORS, forwarded-for, edge rate limit). */
static struct resp edge_request(const char *method, const char *path, const char *const *headers)
{
    return request_at(F->edge_port, method, path, headers, NULL, 0, PLAIN);
}

static struct resp request(const char *method, const char *path, const char *const *headers,
                           const char *body)
{
    return request_full(method, path, headers, body, body ? strlen(body) : 0, PLAIN);
}

static struct resp get(const char *path)
{
    return request("GET", path, NULL, NULL);
}

/* The value of header name in r (first occurrence; NULL when absent); *ret_count (optional)
 * gets the number of occurrences. */
static const char *header_n(const struct resp *r, const char *name, int *ret_count)
{
    size_t nl = strlen(name);
    const char *found = NULL;
    int count = 0;
    for (const char *p = r->headers; *p;) {
        const char *eol = strstr(p, "\r\n");
        if (!eol)
            break;
        if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            count++;
            if (!found) {
                const char *v = p + nl + 1;
                while (*v == ' ')
                    v++;
                found = dk_arena_strndup(F->arena, v, (size_t)(eol - v));
            }
        }
        p = eol + 2;
    }
    if (ret_count)
        *ret_count = count;
    return found;
}

static const char *header(const struct resp *r, const char *name)
{
    return header_n(r, name, NULL);
}

static void expect_header(const struct resp *r, const char *name, const char *want)
{
    const char *got = header(r, name);
    if (!got || strcmp(got, want) != 0)
        fail_msg("header %s: %s%s%s, want \"%s\"", name, got ? "\"" : "", got ? got : "absent",
                 got ? "\"" : "", want);
}

static long long header_int(const struct resp *r, const char *name)
{
    const char *v = header(r, name);
    if (!v)
        fail_msg("no %s header", name);
    char *end = NULL;
    long long n = strtoll(v, &end, 10);
    if (end == v || *end)
        fail_msg("header %s: \"%s\" is not an integer", name, v);
    return n;
}

static const char *jstr(const struct resp *r, const char *key)
{
    json_t *v = json_object_get(r->json, key);
    if (!json_is_string(v))
        fail_msg("member %s is not a string in %s", key, r->body);
    return json_string_value(v);
}

static json_int_t jint(const struct resp *r, const char *key)
{
    json_t *v = json_object_get(r->json, key);
    if (!json_is_integer(v))
        fail_msg("member %s is not an integer in %s", key, r->body);
    return json_integer_value(v);
}

static void expect_status(const struct resp *r, long want)
{
    if (r->rc != CURLE_OK)
        fail_msg("request failed: %s", curl_easy_strerror(r->rc));
    if (r->status != want)
        fail_msg("status %ld, want %ld; body %s", r->status, want, r->body);
}

/* A problem+json response with the given status and title whose request_id is the response's
 * X-Request-Id header. */
static void expect_problem(const struct resp *r, long status, const char *title)
{
    expect_status(r, status);
    expect_header(r, "Content-Type", "application/problem+json");
    if (!json_is_object(r->json))
        fail_msg("not a JSON object: %s", r->body);
    assert_string_equal(jstr(r, "type"), "about:blank");
    assert_string_equal(jstr(r, "title"), title);
    assert_int_equal(jint(r, "status"), status);
    assert_true(strlen(jstr(r, "detail")) > 0);
    const char *rid = header(r, "X-Request-Id");
    assert_non_null(rid);
    assert_string_equal(jstr(r, "request_id"), rid);
}

/* ---------- routing ---------- */

static void test_path_params_query_headers(void **state)
{
    static const char *const hdrs[] = {"X-Test: hello there", NULL};
    struct resp r = request("GET", "/api/v1/things/abc-123?q=x%20y&other=1", hdrs, NULL);
    expect_status(&r, 200);
    expect_header(&r, "Content-Type", "application/json");
    assert_string_equal(jstr(&r, "id"), "abc-123");
    assert_int_equal(jint(&r, "nparams"), 1);
    assert_true(json_is_null(json_object_get(r.json, "missing_param")));
    assert_string_equal(jstr(&r, "q"), "x y");
    assert_string_equal(jstr(&r, "x_test"), "hello there");
    assert_string_equal(jstr(&r, "service"), SERVICE_NAME);
    assert_true(json_is_true(json_object_get(r.json, "state_ok")));
    assert_true(json_is_true(json_object_get(r.json, "app_ok")));
    assert_string_equal(jstr(&r, "route"), "/api/v1/things/{id}");
    assert_string_equal(jstr(&r, "method"), "GET");
    assert_string_equal(jstr(&r, "path"), "/api/v1/things/abc-123");
    assert_string_equal(jstr(&r, "client_ip"), "127.0.0.1");
    assert_true(json_is_false(json_object_get(r.json, "has_identity")));
    /* the handler saw the same request id the response carries */
    assert_string_equal(jstr(&r, "request_id"), header(&r, "X-Request-Id"));

    r = get("/api/v1/things/t1/parts/p2");
    expect_status(&r, 200);
    assert_string_equal(jstr(&r, "id"), "t1");
    assert_string_equal(jstr(&r, "part"), "p2");
    assert_int_equal(jint(&r, "nparams"), 2);

    /* parameters arrive percent-decoded */
    r = get("/api/v1/things/a%20b%C3%A9");
    expect_status(&r, 200);
    assert_string_equal(jstr(&r, "id"), "a b\xc3\xa9");

    /* "/" mounts the prefix itself */
    r = get("/api/v1");
    expect_status(&r, 200);
    assert_string_equal(jstr(&r, "root"), "/api/v1");

    /* a parameter is one whole segment */
    r = get("/api/v1/things/t1/parts");
    expect_problem(&r, 404, "Not Found");
}

static void test_not_found(void **state)
{
    static const char *paths[] = {
        "/api/v1/nope",
        "/api/v1/things/1/extra",
        "/api/v2/things/1",
        "/",
        "/api",
        "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t", /* more segments than any route */
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        struct resp r = get(paths[i]);
        expect_problem(&r, 404, "Not Found");
        assert_null(header(&r, "Allow"));
    }
}

static void test_method_not_allowed(void **state)
{
    struct resp r = request("PUT", "/api/v1/things/1", NULL, NULL);
    expect_problem(&r, 405, "Method Not Allowed");
    expect_header(&r, "Allow", "GET, DELETE");

    r = request("PATCH", "/api/v1/things", NULL, NULL);
    expect_problem(&r, 405, "Method Not Allowed");
    expect_header(&r, "Allow", "POST");

    r = get("/api/v1/things");
    expect_problem(&r, 405, "Method Not Allowed");
    expect_header(&r, "Allow", "POST");

    r = request("POST", "/api/v1/me", NULL, NULL);
    expect_problem(&r, 405, "Method Not Allowed");
    expect_header(&r, "Allow", "GET");

    /* an unknown method */
    r = request("BREW", "/api/v1/things/1", NULL, NULL);
    expect_problem(&r, 405, "Method Not Allowed");
    expect_header(&r, "Allow", "GET, DELETE");

    /* and the allowed one works */
    r = request("DELETE", "/api/v1/things/1", NULL, NULL);
    expect_status(&r, 204);
    assert_int_equal(r.len, 0);
    assert_null(header(&r, "Content-Type"));
    assert_non_null(header(&r, "X-Request-Id"));
}

/* ---------- request bodies ---------- */

static const char *const JSON_CT[] = {"Content-Type: application/json", NULL};

static void test_json_body_accepted(void **state)
{
    struct resp r = request("POST", "/api/v1/things", JSON_CT, "{\"name\":\"first\"}");
    expect_status(&r, 201);
    assert_string_equal(jstr(&r, "name"), "first");
    assert_int_equal(jint(&r, "body_len"), 16);
    expect_header(&r, "Location", "/api/v1/things/new");

    static const char *cts[] = {
        "Content-Type: application/json; charset=utf-8",
        "Content-Type: application/json;charset=UTF-8",
        "Content-Type: Application/JSON",
    };
    for (size_t i = 0; i < sizeof cts / sizeof cts[0]; i++) {
        const char *hdrs[] = {cts[i], NULL};
        r = request("POST", "/api/v1/things", hdrs, "{\"name\":\"x\"}");
        if (r.status != 201)
            fail_msg("%s: status %ld, body %s", cts[i], r.status, r.body);
    }
}

static void test_content_type_required(void **state)
{
    static const char *cts[] = {
        "Content-Type:", /* curl: send no Content-Type at all */
        "Content-Type: text/plain",
        "Content-Type: application/x-www-form-urlencoded",
        "Content-Type: application/jsonx",
        "Content-Type: application/json-patch+json",
        "Content-Type: text/json",
        "Content-Type: multipart/form-data; boundary=x",
    };
    for (size_t i = 0; i < sizeof cts / sizeof cts[0]; i++) {
        const char *hdrs[] = {cts[i], NULL};
        struct resp r = request("POST", "/api/v1/things", hdrs, "{\"name\":\"x\"}");
        if (r.status != 415)
            fail_msg("%s: status %ld, body %s", cts[i], r.status, r.body);
        expect_problem(&r, 415, "Unsupported Media Type");
    }
}

static void test_malformed_json(void **state)
{
    static const char *bodies[] = {
        "{\"name\":", "{name: \"x\"}", "{\"name\":\"x\",}", "", "{\"name\":\"x\"} trailing",
        "\xff\xfe",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        struct resp r = request("POST", "/api/v1/things", JSON_CT, bodies[i]);
        if (r.status != 400)
            fail_msg("body \"%s\": status %ld", bodies[i], r.status);
        expect_problem(&r, 400, "Bad Request");
    }
}

static void test_json_not_an_object(void **state)
{
    static const char *bodies[] = {"[1,2]", "\"text\"", "42", "null", "true"};
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        struct resp r = request("POST", "/api/v1/things", JSON_CT, bodies[i]);
        if (r.status != 422)
            fail_msg("body %s: status %ld", bodies[i], r.status);
        expect_problem(&r, 422, "Unprocessable Content");
        json_t *errors = json_object_get(r.json, "errors");
        assert_true(json_is_array(errors));
        assert_int_equal(json_array_size(errors), 1);
        json_t *e0 = json_array_get(errors, 0);
        assert_string_equal(json_string_value(json_object_get(e0, "field")), "body");
        assert_string_equal(json_string_value(json_object_get(e0, "message")),
                            "must be a JSON object");
    }
}

static void test_validation_errors(void **state)
{
    struct resp r = request("POST", "/api/v1/things", JSON_CT, "{}");
    expect_problem(&r, 422, "Unprocessable Content");
    assert_string_equal(jstr(&r, "detail"), "1 field failed validation");
    json_t *errors = json_object_get(r.json, "errors");
    assert_int_equal(json_array_size(errors), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(errors, 0), "field")),
                        "name");
    assert_string_equal(json_string_value(json_object_get(json_array_get(errors, 0), "message")),
                        "is required");

    r = request("POST", "/api/v1/things", JSON_CT, "{\"name\":5,\"count\":\"x\",\"extra\":1}");
    expect_problem(&r, 422, "Unprocessable Content");
    assert_string_equal(jstr(&r, "detail"), "2 fields failed validation");
    errors = json_object_get(r.json, "errors");
    assert_int_equal(json_array_size(errors), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(errors, 0), "field")),
                        "name");
    assert_string_equal(json_string_value(json_object_get(json_array_get(errors, 1), "field")),
                        "count");
    assert_string_equal(json_string_value(json_object_get(json_array_get(errors, 1), "message")),
                        "must be an integer, not that");
}

/* {"name":"xxx…"} padded to exactly n bytes */
static char *json_of_size(size_t n)
{
    char *s = dk_arena_alloc(F->arena, n + 1);
    memset(s, 'x', n);
    memcpy(s, "{\"name\":\"", 9);
    memcpy(s + n - 2, "\"}", 2);
    s[n] = '\0';
    return s;
}

static void test_body_limit_with_content_length(void **state)
{
    /* exactly the limit is fine */
    char *at = json_of_size(BODY_LIMIT);
    struct resp r = request("POST", "/api/v1/things", JSON_CT, at);
    expect_status(&r, 201);
    assert_int_equal(jint(&r, "body_len"), BODY_LIMIT);
    /* one byte more is 413 */
    char *over = json_of_size(BODY_LIMIT + 1);
    r = request("POST", "/api/v1/things", JSON_CT, over);
    expect_problem(&r, 413, "Content Too Large");
    /* far more too, and the connection is answered, not hung */
    char *big = json_of_size(200000);
    r = request("POST", "/api/v1/things", JSON_CT, big);
    expect_problem(&r, 413, "Content Too Large");
}

static void test_body_limit_chunked(void **state)
{
    /* no Content-Length: the limit is enforced while the chunks arrive */
    static const char *const hdrs[] = {"Content-Type: application/json", NULL};
    char *under = json_of_size(900);
    struct resp r = request_full("POST", "/api/v1/things", hdrs, under, 900, CHUNKED);
    expect_status(&r, 201);
    assert_int_equal(jint(&r, "body_len"), 900);
    char *at = json_of_size(BODY_LIMIT);
    r = request_full("POST", "/api/v1/things", hdrs, at, BODY_LIMIT, CHUNKED);
    expect_status(&r, 201);
    assert_int_equal(jint(&r, "body_len"), BODY_LIMIT);
    char *over = json_of_size(BODY_LIMIT + 1);
    r = request_full("POST", "/api/v1/things", hdrs, over, BODY_LIMIT + 1, CHUNKED);
    expect_problem(&r, 413, "Content Too Large");
    char *big = json_of_size(50000);
    r = request_full("POST", "/api/v1/things", hdrs, big, 50000, CHUNKED);
    expect_problem(&r, 413, "Content Too Large");
}

/* ---------- streamed request bodies ---------- */

static void expect_unauthorized(const struct resp *r, bool invalid_token);
static char *issue(const char *user, const char *sid, const char *role);

struct pattern_upload {
    size_t len, off, piece;
};

static size_t pattern_read(char *out, size_t size, size_t n, void *ud)
{
    struct pattern_upload *u = ud;
    size_t want = size * n;
    if (want > u->piece)
        want = u->piece;
    if (want > u->len - u->off)
        want = u->len - u->off;
    for (size_t i = 0; i < want; i++)
        out[i] = PATTERN(u->off + i);
    u->off += want;
    return want;
}

/* POSTs (PUTs for /upload/auth) len pattern bytes to the uploads server, in pieces of at most
 * piece bytes, with Content-Length or chunked. */
static struct resp upload(const char *path, const char *const *headers, size_t len, bool chunked,
                          size_t piece)
{
    struct resp r = {0};
    CURL *c = curl_easy_init();
    assert_non_null(c);
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", F->uploads_port, path);
    struct buf bb = {0}, hb = {0};
    struct curl_slist *hl = NULL;
    bool expect = false;
    for (const char *const *h = headers; h && *h; h++) {
        hl = curl_slist_append(hl, *h);
        expect = expect || strncasecmp(*h, "Expect:", 7) == 0;
    }
    if (!expect)
        hl = curl_slist_append(hl, "Expect:");
    if (chunked)
        hl = curl_slist_append(hl, "Transfer-Encoding: chunked");
    struct pattern_upload up = {.len = len, .piece = piece};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 20000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &bb);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &hb);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, pattern_read);
    curl_easy_setopt(c, CURLOPT_READDATA, &up);
    if (!chunked)
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    if (strstr(path, "/auth"))
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    r.rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    r.body = dk_arena_strndup(F->arena, bb.p ? bb.p : "", bb.len);
    r.len = bb.len;
    r.headers = dk_arena_strdup(F->arena, hb.p ? hb.p : "");
    free(bb.p);
    free(hb.p);
    json_error_t err;
    r.json = json_loadb(r.body, r.len, JSON_DECODE_ANY, &err);
    if (r.json)
        dk_arena_defer(F->arena, json_decref_cb, r.json);
    return r;
}

static bool jbool(const struct resp *r, const char *key)
{
    json_t *v = json_object_get(r->json, key);
    assert_true(json_is_boolean(v));
    return json_is_true(v);
}

static void wait_count(atomic_int *c, int want, const char *what)
{
    for (int i = 0; i < 500 && atomic_load(c) < want; i++)
        sleep_ms(10);
    if (atomic_load(c) < want)
        fail_msg("%s: %d, expected %d", what, atomic_load(c), want);
}

static void test_body_stream_in_order(void **state)
{
    int handled = atomic_load(&UP.handled), ok = atomic_load(&UP.ended_ok);
    /* chunked, in odd-sized pieces: all of it, in order, over many calls */
    struct resp r = upload("/api/v1/upload", NULL, 1u << 20, true, 7001);
    expect_status(&r, 200);
    assert_int_equal(jint(&r, "bytes"), 1 << 20);
    assert_true(jbool(&r, "in_order"));
    assert_true(jbool(&r, "ok"));
    assert_true(jint(&r, "chunks") > 16);
    /* a declared length */
    r = upload("/api/v1/upload", NULL, 300001, false, 65536);
    expect_status(&r, 200);
    assert_int_equal(jint(&r, "bytes"), 300001);
    assert_true(jbool(&r, "in_order"));
    assert_true(jbool(&r, "ok"));
    assert_int_equal(atomic_load(&UP.handled), handled + 2);
    assert_int_equal(atomic_load(&UP.ended_ok), ok + 2);
    /* a small body of declared length on the same route is buffered, as on any route */
    r = upload("/api/v1/upload", NULL, 1000, false, 1000);
    expect_status(&r, 200);
    assert_int_equal(jint(&r, "bytes"), 1000);
    assert_false(jbool(&r, "streamed"));
    assert_int_equal(atomic_load(&UP.handled), handled + 2);
}

static void test_body_stream_back_pressure(void **state)
{
    /* a consumer that holds at most 64 KiB and takes nothing for 300 ms, then 16 KiB a ms:
     * the connection waits (suspended) instead of buffering or spinning, and nothing is lost
     * or reordered when the rest is offered again */
    struct resp r =
        upload("/api/v1/upload?cap=65536&stall=300&step=1", NULL, 3u << 20, false, 65536);
    expect_status(&r, 200);
    assert_int_equal(jint(&r, "bytes"), 3 << 20);
    assert_true(jbool(&r, "in_order"));
    assert_true(jbool(&r, "ok"));
    assert_true(jint(&r, "max_held") <= 65536);
    assert_true(jint(&r, "partials") >= 1); /* it did push back */
    assert_true(jint(&r, "refusals") <= 2); /* no offers in a loop while it was full */
    /* chunked too */
    r = upload("/api/v1/upload?cap=32768&step=1", NULL, 1u << 20, true, 50000);
    expect_status(&r, 200);
    assert_int_equal(jint(&r, "bytes"), 1 << 20);
    assert_true(jbool(&r, "in_order"));
    assert_true(jint(&r, "max_held") <= 32768);
    assert_true(jint(&r, "partials") >= 1);
}

static void test_body_stream_over_limit(void **state)
{
    int bad = atomic_load(&UP.ended_bad), fin = atomic_load(&UP.finished);
    int handled = atomic_load(&UP.handled);
    /* chunked past the limit: the handler is told (on_end false) and the client gets 413,
     * whatever the handler answered */
    struct resp r = upload("/api/v1/upload", NULL, UPLOAD_LIMIT + 100000, true, 65536);
    expect_problem(&r, 413, "Content Too Large");
    wait_count(&UP.ended_bad, bad + 1, "bodies ended as failed");
    wait_count(&UP.finished, fin + 1, "sinks finished");
    assert_int_equal(atomic_load(&UP.handled), handled + 1);
    /* exactly the limit is fine */
    r = upload("/api/v1/upload", NULL, UPLOAD_LIMIT, true, 65536);
    expect_status(&r, 200);
    assert_int_equal(jint(&r, "bytes"), UPLOAD_LIMIT);
    /* a declared length over the limit: 413 at once, the handler never runs */
    static const char *const expect100[] = {"Expect: 100-continue", NULL};
    handled = atomic_load(&UP.handled);
    r = upload("/api/v1/upload", expect100, UPLOAD_LIMIT + 1, false, 65536);
    expect_problem(&r, 413, "Content Too Large");
    assert_int_equal(atomic_load(&UP.handled), handled);
}

static void test_body_stream_edge_checks_first(void **state)
{
    /* authentication happens when the headers are in, before any of the body is taken */
    static const char *const expect100[] = {"Expect: 100-continue", NULL};
    int handled = atomic_load(&UP.handled);
    struct resp r = upload("/api/v1/upload/auth", expect100, 1u << 20, true, 65536);
    expect_unauthorized(&r, false);
    assert_int_equal(atomic_load(&UP.handled), handled);
    char *tok = issue("u-up", "s-up", "user");
    char auth[1024];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", tok);
    const char *const hdrs[] = {auth, NULL};
    r = upload("/api/v1/upload/auth", hdrs, 200000, false, 65536);
    expect_status(&r, 200);
    assert_int_equal(jint(&r, "bytes"), 200000);
    assert_int_equal(atomic_load(&UP.handled), handled + 1);
}

static void test_body_stream_answer_before_the_end(void **state)
{
    /* the handler answers after the first piece: the rest is read and discarded, then the
     * client gets that answer */
    int fin = atomic_load(&UP.finished);
    struct resp r = upload("/api/v1/upload?early=1", NULL, 1u << 20, true, 16384);
    expect_problem(&r, 403, "Forbidden");
    wait_count(&UP.finished, fin + 1, "sinks finished");
    /* the server goes on serving */
    r = upload("/api/v1/upload", NULL, 200000, false, 65536);
    expect_status(&r, 200);
    assert_int_equal(jint(&r, "bytes"), 200000);
}

/* Sends the headers and 200000 bytes of a body of 1 MiB, then closes the connection after
 * linger_ms. */
static void upload_and_leave(const char *path, int linger_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)F->uploads_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char head[256];
    int n =
        snprintf(head, sizeof head,
                 "POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1048576\r\n\r\n", path);
    assert_int_equal(write(fd, head, (size_t)n), n);
    static char part[200000];
    for (size_t i = 0; i < sizeof part; i++)
        part[i] = PATTERN(i);
    size_t off = 0;
    while (off < sizeof part) {
        ssize_t w = write(fd, part + off, sizeof part - off);
        assert_true(w > 0);
        off += (size_t)w;
    }
    sleep_ms(linger_ms);
    close(fd);
}

static void test_body_stream_client_leaves(void **state)
{
    /* the handler hears of it (on_end false), answers into the void, and the request's memory
     * goes when it has (ASan: no leak, no use after free) */
    int bad = atomic_load(&UP.ended_bad), fin = atomic_load(&UP.finished);
    upload_and_leave("/api/v1/upload", 100);
    wait_count(&UP.ended_bad, bad + 1, "bodies ended as failed");
    wait_count(&UP.finished, fin + 1, "sinks finished");
    /* the same after the connection has been held back by a full consumer. (A client that
     * leaves while its connection is held back is noticed later: libmicrohttpd 0.9.75 watches
     * no suspended connection, and with edge-triggered epoll misses an end of stream that came
     * meanwhile, until its connection timeout.) */
    upload_and_leave("/api/v1/upload?cap=65536&stall=200", 700);
    wait_count(&UP.ended_bad, bad + 2, "bodies ended as failed");
    wait_count(&UP.finished, fin + 2, "sinks finished");
    struct resp r = upload("/api/v1/upload", NULL, 100000, false, 65536);
    expect_status(&r, 200);
}

/* ---------- request ids and trace context ---------- */

static void test_request_id_echoed(void **state)
{
    static const char *ids[] = {"abc-123", "a", "req.1_2:3-4",
                                "0190a3b2-7c4d-7e5f-8a6b-1c2d3e4f5a6b"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        char h[200];
        snprintf(h, sizeof h, "X-Request-Id: %s", ids[i]);
        const char *hdrs[] = {h, NULL};
        struct resp r = request("GET", "/api/v1/things/1", hdrs, NULL);
        expect_status(&r, 200);
        expect_header(&r, "X-Request-Id", ids[i]);
        assert_string_equal(jstr(&r, "request_id"), ids[i]);
        /* problems carry it too */
        r = request("GET", "/api/v1/nope", hdrs, NULL);
        expect_problem(&r, 404, "Not Found");
        assert_string_equal(jstr(&r, "request_id"), ids[i]);
    }
    char h[200] = "X-Request-Id: ";
    size_t n = strlen(h);
    memset(h + n, 'r', 128);
    h[n + 128] = '\0';
    const char *hdrs[] = {h, NULL};
    struct resp r = request("GET", "/api/v1/things/1", hdrs, NULL);
    expect_header(&r, "X-Request-Id", h + n); /* 128 characters: kept */
}

static void test_request_id_replaced(void **state)
{
    char long_id[200] = "X-Request-Id: ";
    size_t n = strlen(long_id);
    memset(long_id + n, 'r', 129);
    long_id[n + 129] = '\0';
    const char *bad[] = {
        long_id,
        "X-Request-Id: has spaces in it",
        "X-Request-Id: semi;colon",
        "X-Request-Id: <script>",
        "X-Request-Id: caf\xc3\xa9",
    };
    char seen[8][DK_UUID_LEN];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *hdrs[] = {bad[i], NULL};
        struct resp r = request("GET", "/api/v1/things/1", hdrs, NULL);
        expect_status(&r, 200);
        const char *rid = header(&r, "X-Request-Id");
        assert_non_null(rid);
        if (!dk_uuid_valid(rid) || rid[14] != '7')
            fail_msg("%s: replaced by %s, want a UUIDv7", bad[i], rid);
        assert_string_equal(jstr(&r, "request_id"), rid);
        memcpy(seen[i], rid, DK_UUID_LEN);
    }
    /* none sent: generated, and different every time */
    struct resp r = get("/api/v1/things/1");
    const char *rid = header(&r, "X-Request-Id");
    assert_true(dk_uuid_valid(rid));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_string_not_equal(seen[i], rid);
}

static bool is_hex(const char *s, size_t n)
{
    if (strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr("0123456789abcdef", s[i]))
            return false;
    return true;
}

static void test_traceparent(void **state)
{
    static const char *const good[] = {
        "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", NULL};
    struct resp r = request("GET", "/api/v1/things/1", good, NULL);
    expect_status(&r, 200);
    assert_string_equal(jstr(&r, "trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(jstr(&r, "parent_span_id"), "00f067aa0ba902b7");
    assert_true(is_hex(jstr(&r, "span_id"), 16));
    assert_string_not_equal(jstr(&r, "span_id"), "00f067aa0ba902b7");

    static const char *bad[] = {
        "traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01", /* zero id */
        "traceparent: ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", /* version ff */
        "traceparent: 00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", /* upper case */
        "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  /* short */
        "traceparent: garbage",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *hdrs[] = {bad[i], NULL};
        r = request("GET", "/api/v1/things/1", hdrs, NULL);
        expect_status(&r, 200);
        const char *tid = jstr(&r, "trace_id");
        if (!is_hex(tid, 32) || strcmp(tid, "4bf92f3577b34da6a3ce929d0e0e4736") == 0 ||
            strcmp(tid, "00000000000000000000000000000000") == 0)
            fail_msg("%s: trace id %s", bad[i], tid);
        assert_string_equal(jstr(&r, "parent_span_id"), "");
    }
    /* none: a fresh trace per request */
    struct resp a = get("/api/v1/things/1"), b = get("/api/v1/things/1");
    assert_true(is_hex(jstr(&a, "trace_id"), 32));
    assert_string_not_equal(jstr(&a, "trace_id"), jstr(&b, "trace_id"));
}

/* ---------- authentication ---------- */

static void expect_unauthorized(const struct resp *r, bool invalid_token)
{
    expect_problem(r, 401, "Unauthorized");
    int n = 0;
    const char *www = header_n(r, "WWW-Authenticate", &n);
    assert_non_null(www);
    assert_int_equal(n, 1);
    assert_int_equal(strncmp(www, "Bearer", 6), 0);
    if (invalid_token != (strstr(www, "error=\"invalid_token\"") != NULL))
        fail_msg("WWW-Authenticate: %s", www);
}

static char *issue(const char *user, const char *sid, const char *role)
{
    char *tok = NULL;
    assert_int_equal(dk_tokens_issue(F->app.tokens, F->arena, user, sid, role, &tok), DK_OK);
    /* a live session, as a login records it (an unknown one is refused) */
    assert_int_equal(dk_session_open(&F->app.store, sid, 600000), DK_OK);
    return tok;
}

static const char *bearer(const char *token)
{
    return dk_arena_printf(F->arena, "Authorization: Bearer %s", token);
}

static void test_auth_missing_or_bad(void **state)
{
    struct resp r = get("/api/v1/me");
    expect_unauthorized(&r, false);

    static const char *bad[] = {
        "Authorization: Bearer garbage",
        "Authorization: Bearer a.b.c",
        "Authorization: Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1In0.",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *hdrs[] = {bad[i], NULL};
        r = request("GET", "/api/v1/me", hdrs, NULL);
        expect_unauthorized(&r, true);
    }
    /* not a bearer credential at all */
    static const char *const basic[] = {"Authorization: Basic dXNlcjpwYXNz", NULL};
    r = request("GET", "/api/v1/me", basic, NULL);
    expect_unauthorized(&r, false);

    /* a token signed with another key */
    dk_tokens *other = dk_tokens_new((const unsigned char *)"not-our-secret", 14, 900000);
    char *tok = NULL;
    assert_int_equal(dk_tokens_issue(other, F->arena, "u1", "s-other", "user", &tok), DK_OK);
    dk_tokens_free(other);
    const char *hdrs[] = {bearer(tok), NULL};
    r = request("GET", "/api/v1/me", hdrs, NULL);
    expect_unauthorized(&r, true);
}

static void test_auth_ok_then_revoked(void **state)
{
    char sid[DK_UUID_LEN];
    dk_uuid7(sid);
    char *tok = issue("user-42", sid, "admin");
    const char *hdrs[] = {bearer(tok), NULL};
    struct resp r = request("GET", "/api/v1/me", hdrs, NULL);
    expect_status(&r, 200);
    assert_string_equal(jstr(&r, "user_id"), "user-42");
    assert_string_equal(jstr(&r, "session_id"), sid);
    assert_string_equal(jstr(&r, "role"), "admin");
    json_int_t exp = jint(&r, "expires_at_ms");
    assert_true(exp > dk_now_ms() + 899000 - 1000 && exp <= dk_now_ms() + 900000);
    assert_null(header(&r, "WWW-Authenticate"));

    /* the scheme is case-insensitive */
    const char *lower[] = {dk_arena_printf(F->arena, "Authorization: bearer %s", tok), NULL};
    r = request("GET", "/api/v1/me", lower, NULL);
    expect_status(&r, 200);

    /* the session's use was recorded */
    int64_t used = 0;
    assert_int_equal(dk_session_last_used(&F->app.store, F->arena, sid, &used), DK_OK);
    assert_true(used > 0 && used <= dk_now_ms());

    /* revoked: the same token stops working at once */
    assert_int_equal(dk_session_revoke(&F->app.store, sid, 60000), DK_OK);
    r = request("GET", "/api/v1/me", hdrs, NULL);
    expect_unauthorized(&r, true);

    /* another session of the same user is unaffected */
    char sid2[DK_UUID_LEN];
    dk_uuid7(sid2);
    const char *hdrs2[] = {bearer(issue("user-42", sid2, "user")), NULL};
    r = request("GET", "/api/v1/me", hdrs2, NULL);
    expect_status(&r, 200);
    assert_string_equal(jstr(&r, "role"), "user");
}

/* ---------- rate limits ---------- */

static void test_rate_limit(void **state)
{
    struct resp r = request("POST", "/api/v1/limited", NULL, NULL);
    expect_status(&r, 200);
    expect_header(&r, "RateLimit-Limit", "2");
    expect_header(&r, "RateLimit-Remaining", "1");
    long long reset = header_int(&r, "RateLimit-Reset");
    assert_true(reset >= 1 && reset <= 60);
    assert_null(header(&r, "Retry-After"));

    r = request("POST", "/api/v1/limited", NULL, NULL);
    expect_status(&r, 200);
    expect_header(&r, "RateLimit-Remaining", "0");

    r = request("POST", "/api/v1/limited", NULL, NULL);
    expect_problem(&r, 429, "Too Many Requests");
    expect_header(&r, "RateLimit-Limit", "2");
    expect_header(&r, "RateLimit-Remaining", "0");
    long long retry = header_int(&r, "Retry-After");
    assert_true(retry >= 1 && retry <= 60);
    assert_int_equal(retry, header_int(&r, "RateLimit-Reset"));

    /* routes without the flag carry no rate-limit headers and are not limited */
    r = get("/api/v1/things/1");
    expect_status(&r, 200);
    assert_null(header(&r, "RateLimit-Limit"));
}

/* ---------- responses ---------- */

static void test_handler_without_response(void **state)
{
    struct resp r = get("/api/v1/silent");
    expect_problem(&r, 500, "Internal Server Error");
}

static void test_problem_ext_and_headers(void **state)
{
    struct resp r = get("/api/v1/problem");
    expect_problem(&r, 409, "Conflict");
    assert_string_equal(jstr(&r, "detail"), "version 6 is stale");
    assert_string_equal(jstr(&r, "resource"), "thing");
    assert_int_equal(jint(&r, "version"), 7);
    expect_header(&r, "X-Custom", "custom value");

    r = get("/api/v1/text");
    expect_status(&r, 200);
    expect_header(&r, "Content-Type", "text/plain; charset=utf-8");
    expect_header(&r, "Cache-Control", "no-store");
    assert_string_equal(r.body, "plain text\n");
}

static void test_response_header_name_copied(void **state)
{
    /* dk_res_header is documented as copying: a name the handler reuses afterwards must
     * still arrive as it was at the call */
    struct resp r = get("/api/v1/dynamic");
    expect_status(&r, 204);
    expect_header(&r, "X-Dynamic", "first");
    assert_null(header(&r, "X-Clobbered"));
}

/* A listener on 127.0.0.1 (with SO_REUSEPORT when reuse, as another docket with
 * server.reuse_port would have); its port in *ret_port. */
static int listen_holder(bool reuse, int *ret_port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    int one = 1;
    if (reuse)
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one), 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t slen = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 4), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &slen), 0);
    *ret_port = ntohs(sa.sin_port);
    return fd;
}

static void test_start_fails_on_taken_port(void **state)
{
    /* taken by a plain listener, and by one that allows sharing: either way an error naming
     * the port, unless this server asks for sharing too */
    for (int reuse = 0; reuse <= 1; reuse++) {
        int port = 0;
        int fd = listen_holder(reuse, &port);
        dk_http_options opt = {.host = "127.0.0.1",
                               .port = port,
                               .threads = 1,
                               .body_limit = BODY_LIMIT,
                               .drain_timeout_ms = 100};
        dk_http_server *srv = dk_http_new(&opt, &F->app);
        dk_status st = dk_http_start(srv);
        char want[64];
        snprintf(want, sizeof want, "port %d on 127.0.0.1 is already in use", port);
        assert_int_equal(st, DK_E_UNAVAILABLE);
        assert_non_null(strstr(dk_http_start_error(srv), want));
        assert_non_null(strstr(dk_http_start_error(srv), "--server.port"));
        dk_http_free(srv);
        if (reuse) {
            opt.reuse_port = true;
            srv = dk_http_new(&opt, &F->app);
            assert_int_equal(dk_http_start(srv), DK_OK);
            assert_int_equal(dk_http_port(srv), port);
            dk_http_free(srv);
        }
        close(fd);
    }
}

/* ---------- ops routes ---------- */

static void test_health(void **state)
{
    struct resp r = get("/health");
    expect_status(&r, 200);
    expect_header(&r, "Content-Type", "application/json");
    assert_string_equal(jstr(&r, "status"), "ok");
    assert_non_null(header(&r, "X-Request-Id"));
    /* the ops routes are GET only */
    r = request("POST", "/health", NULL, NULL);
    expect_problem(&r, 405, "Method Not Allowed");
    expect_header(&r, "Allow", "GET");
    /* health does not ask the dependencies */
    atomic_store(&F->ready_fails, true);
    r = get("/health");
    atomic_store(&F->ready_fails, false);
    expect_status(&r, 200);
}

static void test_ready(void **state)
{
    struct resp r = get("/ready");
    expect_status(&r, 200);
    assert_string_equal(jstr(&r, "status"), "ok");
    json_t *checks = json_object_get(r.json, "checks");
    assert_string_equal(json_string_value(json_object_get(checks, "database")), "ok");

    atomic_store(&F->ready_fails, true);
    r = get("/ready");
    atomic_store(&F->ready_fails, false);
    expect_problem(&r, 503, "Service Unavailable");
    checks = json_object_get(r.json, "checks");
    assert_true(json_is_object(checks));
    assert_string_equal(json_string_value(json_object_get(checks, "database")), "database down");
    assert_non_null(strstr(jstr(&r, "detail"), "database"));
    expect_header(&r, "Retry-After", "1");

    r = get("/ready");
    expect_status(&r, 200);
}

/* Polls /metrics until the line with prefix shows want (metrics are recorded once a response
 * has been sent, so the last request may land a moment later). */
static void expect_metric(const char *prefix, long long want)
{
    int64_t deadline = dk_mono_ms() + 3000;
    long long got = -1;
    for (;;) {
        struct resp r = get("/metrics");
        expect_status(&r, 200);
        const char *p = strstr(r.body, prefix);
        if (p) {
            const char *sp = strchr(p + strlen(prefix), ' ');
            got = sp ? strtoll(sp + 1, NULL, 10) : -1;
            if (got == want)
                return;
        }
        if (dk_mono_ms() > deadline)
            fail_msg("metric %s is %lld, want %lld", prefix, got, want);
        sleep_ms(20);
    }
}

static void test_metrics(void **state)
{
    for (int i = 0; i < 3; i++) {
        struct resp r = get("/api/v1/counted");
        expect_status(&r, 200);
    }
    expect_metric("http_requests_total{service=\"" SERVICE_NAME "\",method=\"GET\","
                  "route=\"/api/v1/counted\",status=\"200\"}",
                  3);
    expect_metric("http_request_duration_seconds_count{service=\"" SERVICE_NAME
                  "\",method=\"GET\",route=\"/api/v1/counted\"}",
                  3);
    expect_metric("http_request_duration_seconds_bucket{service=\"" SERVICE_NAME
                  "\",method=\"GET\",route=\"/api/v1/counted\",le=\"+Inf\"}",
                  3);
    struct resp r = get("/metrics");
    expect_status(&r, 200);
    expect_header(&r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    static const char *want[] = {
        "# TYPE http_requests_total counter\n",
        "# TYPE http_request_duration_seconds histogram\n",
        "http_requests_total{service=\"" SERVICE_NAME
        "\",method=\"GET\",route=\"/api/v1/things/{id}\",status=\"200\"}",
        "http_requests_total{service=\"" SERVICE_NAME
        "\",method=\"POST\",route=\"/api/v1/things\",status=\"201\"}",
        "http_requests_total{service=\"" PROCESS_NAME
        "\",method=\"GET\",route=\"/health\",status=\"200\"}",
        "http_requests_total{service=\"" PROCESS_NAME
        "\",method=\"GET\",route=\"unmatched\",status=\"404\"}",
        "route=\"/api/v1/counted\",le=\"0.005\"}",
        "# TYPE process_resident_memory_bytes gauge\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(r.body, want[i]))
            fail_msg("/metrics lacks %s", want[i]);
    assert_int_equal(r.body[r.len - 1], '\n');
}

/* ---------- request details, internal routes ---------- */

static const char *json_key_ci(json_t *obj, const char *name)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        if (strcasecmp(key, name) == 0)
            return json_string_value(v);
    }
    return NULL;
}

static void test_query_string_and_header_iteration(void **state)
{
    static const char *const hdrs[] = {"X-Test: v1", "X-Other: two words", NULL};
    struct resp r = request("GET", "/api/v1/echo?b=2&a=x%20y&flag&e=%C3%A9", hdrs, NULL);
    expect_status(&r, 200);
    /* re-encoded from the parsed arguments, in order */
    assert_string_equal(jstr(&r, "query"), "b=2&a=x%20y&flag&e=%C3%A9");
    json_t *h = json_object_get(r.json, "headers");
    const char *v = json_key_ci(h, "X-Test");
    assert_non_null(v);
    assert_string_equal(v, "v1");
    v = json_key_ci(h, "X-Other");
    assert_non_null(v);
    assert_string_equal(v, "two words");
    assert_non_null(json_key_ci(h, "Host"));

    r = get("/api/v1/echo");
    expect_status(&r, 200);
    assert_string_equal(jstr(&r, "query"), "");
    /* reserved characters in values come back escaped */
    r = get("/api/v1/echo?q=a%26b%3Dc%2Bd");
    expect_status(&r, 200);
    assert_string_equal(jstr(&r, "query"), "q=a%26b%3Dc%2Bd");
}

static void test_internal_routes(void **state)
{
    /* a service token opens internal routes */
    const char *svc[] = {bearer(issue("gateway", "svc", "service")), NULL};
    struct resp r = request("GET", "/api/v1/internal/7", svc, NULL);
    expect_status(&r, 200);
    assert_string_equal(jstr(&r, "caller"), "gateway");
    assert_string_equal(jstr(&r, "role"), "service");

    /* a user's token does not, and the route does not admit to existing */
    char sid[DK_UUID_LEN];
    dk_uuid7(sid);
    const char *user[] = {bearer(issue("user-1", sid, "admin")), NULL};
    r = request("GET", "/api/v1/internal/7", user, NULL);
    expect_problem(&r, 404, "Not Found");

    /* no token */
    r = get("/api/v1/internal/7");
    expect_status(&r, 401);

    /* and a service token is not a user's token */
    r = request("GET", "/api/v1/me", svc, NULL);
    expect_unauthorized(&r, true);
}

/* ---------- the edge server: CORS, X-Forwarded-For, edge rate limit ---------- */

/* A fresh client address per call, so the edge limiter (3/s per client) stays out of the way. */
static const char *fresh_xff(void)
{
    static int n;
    n++;
    return dk_arena_printf(F->arena, "X-Forwarded-For: 10.1.%d.%d", n / 250, n % 250 + 1);
}

static void test_cors(void **state)
{
    const char *ok[] = {"Origin: https://app.example", fresh_xff(), NULL};
    struct resp r = edge_request("GET", "/api/v1/things/1", ok);
    expect_status(&r, 200);
    expect_header(&r, "Access-Control-Allow-Origin", "https://app.example");
    expect_header(&r, "Vary", "Origin");
    const char *expose = header(&r, "Access-Control-Expose-Headers");
    assert_non_null(expose);
    assert_non_null(strstr(expose, "X-Request-Id"));

    const char *other[] = {"Origin: https://other.example", fresh_xff(), NULL};
    r = edge_request("GET", "/api/v1/things/1", other);
    expect_header(&r, "Access-Control-Allow-Origin", "https://other.example");

    static const char *denied[] = {"Origin: https://evil.example",
                                   "Origin: https://app.example.evil", "Origin: http://app.example",
                                   "Origin: null"};
    for (size_t i = 0; i < sizeof denied / sizeof denied[0]; i++) {
        const char *hdrs[] = {denied[i], fresh_xff(), NULL};
        r = edge_request("GET", "/api/v1/things/1", hdrs);
        expect_status(&r, 200);
        assert_null(header(&r, "Access-Control-Allow-Origin"));
    }

    /* preflight */
    const char *pre[] = {"Origin: https://app.example", "Access-Control-Request-Method: DELETE",
                         "Access-Control-Request-Headers: authorization", fresh_xff(), NULL};
    r = edge_request("OPTIONS", "/api/v1/things/1", pre);
    expect_status(&r, 204);
    expect_header(&r, "Access-Control-Allow-Origin", "https://app.example");
    expect_header(&r, "Access-Control-Allow-Methods", "GET, DELETE");
    const char *allow_headers = header(&r, "Access-Control-Allow-Headers");
    assert_non_null(allow_headers);
    assert_non_null(strstr(allow_headers, "Authorization"));
    assert_non_null(strstr(allow_headers, "Content-Type"));
    expect_header(&r, "Access-Control-Max-Age", "600");

    /* a preflight from elsewhere is an ordinary OPTIONS: 405 */
    const char *bad_pre[] = {"Origin: https://evil.example",
                             "Access-Control-Request-Method: DELETE", fresh_xff(), NULL};
    r = edge_request("OPTIONS", "/api/v1/things/1", bad_pre);
    expect_problem(&r, 405, "Method Not Allowed");
    assert_null(header(&r, "Access-Control-Allow-Origin"));
    /* on an unknown path: 404 */
    r = edge_request("OPTIONS", "/api/v1/nothing", pre);
    expect_problem(&r, 404, "Not Found");
    /* and the server without CORS configured answers no preflight */
    r = request("OPTIONS", "/api/v1/things/1", pre, NULL);
    expect_problem(&r, 405, "Method Not Allowed");
    assert_null(header(&r, "Access-Control-Allow-Origin"));
}

static void test_forwarded_for(void **state)
{
    static const struct {
        const char *xff, *want;
    } rows[] = {
        {"203.0.113.7", "203.0.113.7"},
        {"1.2.3.4, 198.51.100.9", "198.51.100.9"}, /* the last hop is our proxy's */
        {"1.2.3.4,198.51.100.10 ", "198.51.100.10"},
        {"2001:db8::1", "2001:db8::1"},
        {"not-an-ip", "127.0.0.1"},
        {"1.2.3.4, 999.1.1.1", "127.0.0.1"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char h[128];
        snprintf(h, sizeof h, "X-Forwarded-For: %s", rows[i].xff);
        const char *hdrs[] = {h, NULL};
        struct resp r = edge_request("GET", "/api/v1/echo", hdrs);
        expect_status(&r, 200);
        if (strcmp(jstr(&r, "client_ip"), rows[i].want) != 0)
            fail_msg("X-Forwarded-For %s: client %s, want %s", rows[i].xff, jstr(&r, "client_ip"),
                     rows[i].want);
    }
    /* a server that does not trust the header ignores it */
    static const char *const spoof[] = {"X-Forwarded-For: 203.0.113.7", NULL};
    struct resp r = request("GET", "/api/v1/echo", spoof, NULL);
    expect_status(&r, 200);
    assert_string_equal(jstr(&r, "client_ip"), "127.0.0.1");
}

static void test_edge_rate_limit(void **state)
{
    static const char *const me[] = {"X-Forwarded-For: 192.0.2.77", NULL};
    for (int i = 0; i < 3; i++) {
        struct resp r = edge_request("GET", "/api/v1/things/1", me);
        expect_status(&r, 200);
    }
    struct resp r = edge_request("GET", "/api/v1/things/1", me);
    expect_problem(&r, 429, "Too Many Requests");
    expect_header(&r, "RateLimit-Limit", "3");
    expect_header(&r, "RateLimit-Remaining", "0");
    long long retry = header_int(&r, "Retry-After");
    assert_int_equal(retry, 1);
    /* the ops routes are not limited */
    r = edge_request("GET", "/health", me);
    expect_status(&r, 200);
    /* another client is not affected */
    static const char *const other[] = {"X-Forwarded-For: 192.0.2.78", NULL};
    r = edge_request("GET", "/api/v1/things/1", other);
    expect_status(&r, 200);
    /* the window passes */
    sleep_ms(1100);
    r = edge_request("GET", "/api/v1/things/1", me);
    expect_status(&r, 200);
}

/* ---------- streaming responses (dk_stream) ---------- */

struct stream_client {
    const char *path;
    size_t abort_after; /* the client hangs up once it has this many bytes (0: never) */
    int read_delay_ms;  /* a slow reader: pause in every write callback */
    long timeout_ms;    /* default 10 s */
    CURLcode rc;
    long status;
    struct buf body, headers;
    int64_t t_start, t_first, t_end; /* ms: request sent, first body byte, transfer over */
};

static size_t sc_body(char *data, size_t size, size_t n, void *ud)
{
    struct stream_client *c = ud;
    if (c->body.len == 0)
        c->t_first = dk_mono_ms();
    buf_add(&c->body, data, size * n);
    if (c->abort_after && c->body.len >= c->abort_after)
        return 0; /* hang up */
    if (c->read_delay_ms)
        sleep_ms(c->read_delay_ms);
    return size * n;
}

static int sc_small_rcvbuf(void *ud, curl_socket_t fd, curlsocktype purpose)
{
    int sz = 64 * 1024;
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    return CURL_SOCKOPT_OK;
}

static void stream_get(struct stream_client *c)
{
    CURL *h = curl_easy_init();
    assert_non_null(h);
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", F->streams_port, c->path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->timeout_ms ? c->timeout_ms : 10000L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sc_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &c->headers);
    if (c->read_delay_ms) {
        curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 16384L);
        curl_easy_setopt(h, CURLOPT_SOCKOPTFUNCTION, sc_small_rcvbuf);
    }
    c->t_start = dk_mono_ms();
    c->rc = curl_easy_perform(h);
    c->t_end = dk_mono_ms();
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &c->status);
    curl_easy_cleanup(h);
}

static void stream_client_free(struct stream_client *c)
{
    free(c->body.p);
    free(c->headers.p);
}

static void *stream_get_main(void *arg)
{
    stream_get(arg);
    return NULL;
}

/* Waits until every producer thread has finished (they stop when the stream ends or the
 * client is gone); fails after ms. */
static void wait_producers(int ms, const char *what)
{
    int64_t deadline = dk_mono_ms() + ms;
    while (atomic_load(&SS.running) > 0) {
        if (dk_mono_ms() > deadline)
            fail_msg("%d producer(s) still running %d ms after %s", atomic_load(&SS.running), ms,
                     what);
        sleep_ms(5);
    }
}

static const char *sc_header(struct stream_client *c, const char *name)
{
    struct resp r = {.headers = c->headers.p ? c->headers.p : ""};
    return header(&r, name);
}

static void test_stream_incremental(void **state)
{
    /* three pieces 400 ms apart: the first arrives long before the end; on this long-lived
     * stream the pieces written while the connection waits go straight to its socket (one
     * chunk each, no resume) */
    unsigned long long direct0, resumed0, direct1, resumed1;
    dk_stream_write_counts(&direct0, &resumed0);
    struct stream_client c = {.path = "/api/v1/events?n=3&delay_ms=400"};
    stream_get(&c);
    dk_stream_write_counts(&direct1, &resumed1);
    if (direct1 - direct0 < 2)
        fail_msg("%llu of 3 pieces written straight to the socket", direct1 - direct0);
    if (c.rc != CURLE_OK)
        fail_msg("stream failed: %s", curl_easy_strerror(c.rc));
    assert_int_equal(c.status, 200);
    assert_string_equal(c.body.p, "piece 0\npiece 1\npiece 2\n");
    if (c.t_first - c.t_start > 300 || c.t_end - c.t_first < 600)
        fail_msg("not incremental: first byte after %lld ms, end %lld ms later",
                 (long long)(c.t_first - c.t_start), (long long)(c.t_end - c.t_first));
    assert_string_equal(sc_header(&c, "Content-Type"), "text/event-stream");
    assert_string_equal(sc_header(&c, "Cache-Control"), "no-store");
    assert_non_null(sc_header(&c, "X-Request-Id"));
    assert_string_equal(sc_header(&c, "Transfer-Encoding"), "chunked");
    stream_client_free(&c);
    wait_producers(2000, "the stream ended");
}

static void test_stream_long_lived_frees_its_request(void **state)
{
    /* an event stream lives for hours: its request's arena goes as soon as the response is
     * queued, while the stream goes on; the request is still counted when it ends */
    atomic_store(&SS.arena_freed, 0);
    struct stream_client c = {.path = "/api/v1/events/held?n=3&delay_ms=400"};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, stream_get_main, &c), 0);
    int64_t deadline = dk_mono_ms() + 350;
    while (!atomic_load(&SS.arena_freed) && dk_mono_ms() < deadline)
        sleep_ms(5);
    assert_int_equal(atomic_load(&SS.arena_freed), 1);
    assert_int_equal(atomic_load(&SS.running), 1); /* the stream is still open */
    pthread_join(th, NULL);
    assert_int_equal(c.rc, CURLE_OK);
    assert_int_equal(c.status, 200);
    assert_string_equal(c.body.p, "piece 0\npiece 1\npiece 2\n");
    assert_non_null(sc_header(&c, "X-Request-Id"));
    stream_client_free(&c);
    wait_producers(2000, "the stream ended");
    expect_metric("http_requests_total{service=\"streams\",method=\"GET\","
                  "route=\"/api/v1/events/held\",status=\"200\"}",
                  1);
}

static void test_stream_answered_later(void **state)
{
    /* the gateway's way: suspend, then start the stream and resume from another thread */
    for (int i = 0; i < 3; i++) {
        struct stream_client c = {.path = "/api/v1/download/later?n=4&delay_ms=30"};
        stream_get(&c);
        if (c.rc != CURLE_OK)
            fail_msg("stream failed: %s", curl_easy_strerror(c.rc));
        assert_int_equal(c.status, 200);
        assert_string_equal(c.body.p, "piece 0\npiece 1\npiece 2\npiece 3\n");
        stream_client_free(&c);
    }
    /* many pieces written before the connection even has the response */
    struct stream_client c = {.path = "/api/v1/download/later?n=2000&size=100"};
    stream_get(&c);
    assert_int_equal(c.rc, CURLE_OK);
    assert_int_equal(c.body.len, 2000 * 100);
    stream_client_free(&c);
    wait_producers(2000, "the streams ended");
}

static void test_stream_end_with_error(void **state)
{
    struct stream_client c = {.path = "/api/v1/download?n=2&fail=1"};
    stream_get(&c);
    /* the response is cut: no terminating chunk */
    if (c.rc == CURLE_OK)
        fail_msg("a stream ended with an error looked complete: %s", c.body.p);
    assert_int_equal(c.status, 200);
    assert_string_equal(c.body.p, "piece 0\npiece 1\n");
    stream_client_free(&c);
    wait_producers(2000, "the stream was cut");
}

static void test_stream_client_goes_away(void **state)
{
    int refused = atomic_load(&SS.write_refused);
    struct stream_client c = {.path = "/api/v1/events?n=0&delay_ms=20", .abort_after = 1};
    stream_get(&c);
    assert_int_equal(c.rc, CURLE_WRITE_ERROR);
    /* the producer learns it from dk_stream_write and stops */
    wait_producers(3000, "the client hung up");
    assert_int_equal(atomic_load(&SS.write_refused), refused + 1);
    stream_client_free(&c);
}

static void test_stream_client_gone_before_the_response(void **state)
{
    /* the client leaves while the request is suspended, before the stream is attached to
     * the connection: writes must still fail once the request is over */
    int refused = atomic_load(&SS.write_refused);
    struct stream_client c = {.path = "/api/v1/events/later?n=0&delay_ms=10", .timeout_ms = 5};
    stream_get(&c);
    assert_int_equal(c.rc, CURLE_OPERATION_TIMEDOUT);
    wait_producers(3000, "the client left before the response");
    assert_int_equal(atomic_load(&SS.write_refused), refused + 1);
    stream_client_free(&c);
}

static void expect_pattern(const struct stream_client *c, long pieces, long size)
{
    if ((long)c->body.len != pieces * size)
        fail_msg("got %zu bytes, want %ld", c->body.len, pieces * size);
    for (long i = 0; i < pieces; i++)
        for (long k = 0; k < size; k++)
            if (c->body.p[i * size + k] != (char)('a' + (i * 7 + k) % 26))
                fail_msg("byte %ld of piece %ld is wrong", k, i);
}

static void test_stream_flow_control(void **state)
{
    /* 8 MiB to a slow reader: the producer waits for on_drained above the bound, so the
     * server never holds much more than the bound */
    atomic_store(&SS.max_buffered, 0);
    int drained = atomic_load(&SS.drained_calls);
    struct stream_client c = {.path = "/api/v1/download?n=128&size=65536&flow=1",
                              .read_delay_ms = 2,
                              .timeout_ms = 30000};
    stream_get(&c);
    if (c.rc != CURLE_OK)
        fail_msg("stream failed: %s", curl_easy_strerror(c.rc));
    expect_pattern(&c, 128, 65536);
    if (atomic_load(&SS.drained_calls) == drained)
        fail_msg("on_drained never ran for a slow reader");
    size_t most = atomic_load(&SS.max_buffered);
    if (most > STREAM_BOUND + 65536)
        fail_msg("%zu bytes were buffered at once (bound %u)", most, STREAM_BOUND);
    stream_client_free(&c);
    wait_producers(2000, "the stream ended");
}

static void test_stream_client_gone_during_flow_control(void **state)
{
    /* the producer waits for a drain when the client hangs up: it must be woken */
    int refused = atomic_load(&SS.write_refused);
    struct stream_client c = {.path = "/api/v1/download?n=0&size=65536&flow=1",
                              .read_delay_ms = 20,
                              .abort_after = 512 * 1024};
    stream_get(&c);
    assert_int_equal(c.rc, CURLE_WRITE_ERROR);
    wait_producers(5000, "the client hung up on a flow-controlled stream");
    assert_int_equal(atomic_load(&SS.write_refused), refused + 1);
    stream_client_free(&c);
}

static void reader_that_stops(const char *path)
{
    atomic_store(&SS.max_buffered, 0);
    int refused = atomic_load(&SS.write_refused);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    int small = 4096;
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)F->streams_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    char req[256];
    int rl = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    assert_int_equal(write(fd, req, (size_t)rl), (ssize_t)rl);
    for (int i = 0; i < 2000 && atomic_load(&SS.write_refused) == refused; i++)
        sleep_ms(10);
    wait_producers(20000, "the stream of a client that does not read was dropped");
    assert_int_equal(atomic_load(&SS.write_refused), refused + 1);
    size_t most = atomic_load(&SS.max_buffered);
    if (most > 1024 * 1024)
        fail_msg("%zu bytes were buffered at once (cap 1 MiB)", most);
    close(fd);
}

static void test_stream_reader_that_stops_is_dropped(void **state)
{
    /* a producer that ignores flow control, a client that never reads: the stream's buffer
     * stops at its cap (1 MiB), the write is refused and the connection cut — with large
     * pieces, and with small ones (written straight to the socket while it takes them) */
    reader_that_stops("/api/v1/events?n=0&size=65536");
    reader_that_stops("/api/v1/events?n=0&size=1000");
}

static void test_stream_http10_is_not_chunked(void **state)
{
    /* an HTTP/1.0 client gets the body as it is, ended by the connection's close: no piece
     * may go out as a chunk */
    unsigned long long direct0, resumed0, direct1, resumed1;
    dk_stream_write_counts(&direct0, &resumed0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)F->streams_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    static const char req[] = "GET /api/v1/events?n=3&delay_ms=100 HTTP/1.0\r\nHost: x\r\n\r\n";
    assert_int_equal(write(fd, req, sizeof req - 1), (ssize_t)(sizeof req - 1));
    char buf[4096];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof buf - 1 && (n = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    close(fd);
    wait_producers(2000, "the HTTP/1.0 stream ended");
    dk_stream_write_counts(&direct1, &resumed1);
    const char *body = strstr(buf, "\r\n\r\n");
    assert_non_null(body);
    assert_string_equal(body + 4, "piece 0\npiece 1\npiece 2\n");
    assert_null(strcasestr(buf, "Transfer-Encoding"));
    assert_int_equal(direct1, direct0);
}

static void test_stream_drain(void **state)
{
    /* runs last of the stream tests: it drains the stream server. A long-lived stream ends
     * (cleanly: its client reconnects elsewhere); a finite streamed body still in flight
     * is finished, like any in-flight request. */
    struct stream_client ev = {.path = "/api/v1/events?n=0&delay_ms=20"};
    struct stream_client dl = {.path = "/api/v1/download?n=6&delay_ms=100"};
    pthread_t tev, tdl;
    assert_int_equal(pthread_create(&tev, NULL, stream_get_main, &ev), 0);
    assert_int_equal(pthread_create(&tdl, NULL, stream_get_main, &dl), 0);
    int64_t deadline = dk_mono_ms() + 3000;
    while (atomic_load(&SS.running) < 2) {
        if (dk_mono_ms() > deadline)
            fail_msg("the streams did not start");
        sleep_ms(5);
    }
    sleep_ms(50);
    int64_t t0 = dk_mono_ms();
    dk_http_drain(F->streams);
    int64_t took = dk_mono_ms() - t0;
    assert_int_equal(pthread_join(tev, NULL), 0);
    assert_int_equal(pthread_join(tdl, NULL), 0);
    if (ev.rc != CURLE_OK)
        fail_msg("the long-lived stream was not ended cleanly: %s", curl_easy_strerror(ev.rc));
    if (ev.t_end - t0 > 500)
        fail_msg("the long-lived stream ended %lld ms after the drain began",
                 (long long)(ev.t_end - t0));
    if (dl.rc != CURLE_OK)
        fail_msg("the streamed download failed during the drain: %s", curl_easy_strerror(dl.rc));
    assert_string_equal(dl.body.p, "piece 0\npiece 1\npiece 2\npiece 3\npiece 4\npiece 5\n");
    if (took > 1500)
        fail_msg("the drain took %lld ms", (long long)took);
    wait_producers(2000, "the drain");
    stream_client_free(&ev);
    stream_client_free(&dl);
}

/* ---------- graceful stop ---------- */

struct slow_call {
    struct resp r;
};

static void *slow_main(void *p)
{
    struct slow_call *c = p;
    c->r = get("/api/v1/slow");
    return NULL;
}

static void test_stop_drains_in_flight(void **state)
{
    /* runs last: it stops the shared server */
    struct slow_call call;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, slow_main, &call), 0);
    int64_t deadline = dk_mono_ms() + 3000;
    while (!atomic_load(&F->slow_started)) {
        if (dk_mono_ms() > deadline)
            fail_msg("the slow handler never started");
        sleep_ms(2);
    }
    int64_t t0 = dk_mono_ms();
    dk_http_stop(F->srv);
    int64_t took = dk_mono_ms() - t0;
    assert_int_equal(pthread_join(th, NULL), 0);
    expect_status(&call.r, 200);
    assert_string_equal(jstr(&call.r, "slow"), "done");
    /* the in-flight request was waited for, within the drain timeout */
    if (took < 150 || took > 1500)
        fail_msg("dk_http_stop took %lld ms with a 300 ms request in flight", (long long)took);
    /* the response said the connection closes */
    const char *conn = header(&call.r, "Connection");
    assert_non_null(conn);
    assert_string_equal(conn, "close");
    /* and nothing listens any more */
    struct resp r = get("/health");
    assert_int_not_equal(r.rc, CURLE_OK);
    dk_http_stop(F->srv);  /* a second stop is harmless */
    dk_http_stop(F->edge); /* the tests after this one fork: no server threads then */
}

/* ---------- server lifetime ---------- */

static void h_ok(dk_req *req, dk_res *res)
{
    dk_res_json(res, 200, json_object());
}

static const dk_route SHORT_ROUTES[] = {{"GET", "/probe/{id}", h_ok, 0}};

/* One short-lived server: start, one request to /short/probe/1 and /metrics, free. */
static bool short_lived_server(const char *process)
{
    dk_http_options opt = {.host = "127.0.0.1",
                           .port = 0,
                           .threads = 1,
                           .body_limit = BODY_LIMIT,
                           .drain_timeout_ms = 500,
                           .process_name = process};
    dk_http_server *srv = dk_http_new(&opt, &F->app);
    dk_http_mount(srv, "short", "/short", SHORT_ROUTES, 1, NULL);
    if (dk_http_start(srv) != DK_OK)
        return false;
    int saved = F->port;
    F->port = dk_http_port(srv);
    struct resp a = get("/short/probe/1");
    struct resp m = get("/metrics");
    struct resp n = get("/nothing-here");
    F->port = saved;
    dk_http_free(srv);
    return a.status == 200 && m.status == 200 && n.status == 404 &&
           strstr(m.body, "route=\"/short/probe/{id}\"") != NULL;
}

static void two_servers_one_after_another(void)
{
    /* Metrics outlive a server: a second server's /metrics must not read the first one's
     * freed route patterns or process name (AddressSanitizer reports it if it does). */
    bool ok = short_lived_server("first-process") && short_lived_server("second-process");
    _exit(ok ? 0 : 3);
}

/* Runs fn in a child process, so that a crash is reported as the test's failure; returns the
 * wait status. Used after the shared servers have stopped (no threads left to upset fork). */
static int run_isolated(void (*fn)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        fn();
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return st;
}

static void test_server_can_be_recreated(void **state)
{
    int st = run_isolated(two_servers_one_after_another);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("a second server in the same process failed (wait status %#x); see the "
                 "sanitizer report above",
                 (unsigned)st);
}

static const dk_route SUSPEND_ROUTES[] = {{"GET", "/suspended", h_suspended, 0}};

static void suspend_and_resume(void)
{
    dk_http_options opt = {.host = "127.0.0.1",
                           .port = 0,
                           .threads = 2,
                           .body_limit = BODY_LIMIT,
                           .drain_timeout_ms = 500,
                           .process_name = PROCESS_NAME};
    dk_http_server *srv = dk_http_new(&opt, &F->app);
    dk_http_mount(srv, "later", "/api/v1", SUSPEND_ROUTES, 1, NULL);
    if (dk_http_start(srv) != DK_OK)
        _exit(4);
    bool ok = true;
    for (int i = 0; i < 3 && ok; i++) {
        struct resp r =
            request_at(dk_http_port(srv), "GET", "/api/v1/suspended", NULL, NULL, 0, PLAIN);
        const char *h = header(&r, "X-Answered");
        const char *a = json_string_value(json_object_get(r.json, "answered"));
        ok = r.rc == CURLE_OK && r.status == 200 && h && strcmp(h, "later") == 0 && a &&
             strcmp(a, "later") == 0;
        if (!ok)
            fprintf(stderr, "suspended request: rc %d status %ld body %s\n", (int)r.rc, r.status,
                    r.body);
    }
    _exit(ok ? 0 : 3);
}

static void test_suspend_resume(void **state)
{
    /* a handler that suspends and answers from another thread (the gateway's way) */
    int st = run_isolated(suspend_and_resume);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("suspend/resume failed (wait status %#x); see the output above", (unsigned)st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_params_query_headers),
        cmocka_unit_test(test_not_found),
        cmocka_unit_test(test_method_not_allowed),
        cmocka_unit_test(test_json_body_accepted),
        cmocka_unit_test(test_content_type_required),
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_json_not_an_object),
        cmocka_unit_test(test_validation_errors),
        cmocka_unit_test(test_body_limit_with_content_length),
        cmocka_unit_test(test_body_limit_chunked),
        cmocka_unit_test(test_body_stream_in_order),
        cmocka_unit_test(test_body_stream_back_pressure),
        cmocka_unit_test(test_body_stream_over_limit),
        cmocka_unit_test(test_body_stream_edge_checks_first),
        cmocka_unit_test(test_body_stream_answer_before_the_end),
        cmocka_unit_test(test_body_stream_client_leaves),
        cmocka_unit_test(test_request_id_echoed),
        cmocka_unit_test(test_request_id_replaced),
        cmocka_unit_test(test_traceparent),
        cmocka_unit_test(test_auth_missing_or_bad),
        cmocka_unit_test(test_auth_ok_then_revoked),
        cmocka_unit_test(test_rate_limit),
        cmocka_unit_test(test_handler_without_response),
        cmocka_unit_test(test_problem_ext_and_headers),
        cmocka_unit_test(test_response_header_name_copied),
        cmocka_unit_test(test_start_fails_on_taken_port),
        cmocka_unit_test(test_health),
        cmocka_unit_test(test_ready),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_query_string_and_header_iteration),
        cmocka_unit_test(test_internal_routes),
        cmocka_unit_test(test_cors),
        cmocka_unit_test(test_forwarded_for),
        cmocka_unit_test(test_edge_rate_limit),
        cmocka_unit_test(test_stream_incremental),
        cmocka_unit_test(test_stream_long_lived_frees_its_request),
        cmocka_unit_test(test_stream_http10_is_not_chunked),
        cmocka_unit_test(test_stream_answered_later),
        cmocka_unit_test(test_stream_end_with_error),
        cmocka_unit_test(test_stream_client_goes_away),
        cmocka_unit_test(test_stream_client_gone_before_the_response),
        cmocka_unit_test(test_stream_flow_control),
        cmocka_unit_test(test_stream_client_gone_during_flow_control),
        cmocka_unit_test(test_stream_reader_that_stops_is_dropped),
        cmocka_unit_test(test_stream_drain),
        cmocka_unit_test(test_stop_drains_in_flight),
        cmocka_unit_test(test_suspend_resume),
        cmocka_unit_test(test_server_can_be_recreated),
    };
    if (getenv("TEST_FILTER")) /* e.g. TEST_FILTER='test_body_stream*' */
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
