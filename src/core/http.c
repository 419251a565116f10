#include "core/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <malloc.h>
#include <pthread.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/app.h"
#include "core/arena.h"
#include "core/client_addr.h"
#include "core/crypto.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/trace.h"
#include "core/ratelimit.h"
#include "core/session_guard.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "core/token.h"
#include "core/workpool.h"
#include "core/yaml_json.h"
#include "core/banned.h"

#define DK_MAX_ROUTES   128
#define DK_MAX_SEGMENTS 12
#define DK_MAX_READY    8

struct dk_route_entry {
    const char *service_name;
    const char *method;
    char *pattern; /* full pattern, e.g. /api/v1/auth/sessions/{id} */
    int nsegs;
    char *segs[DK_MAX_SEGMENTS];
    dk_handler_fn handler;
    unsigned flags;
    size_t body_limit; /* 0: the server's */
    void *state;
};

struct dk_http_server {
    dk_http_options opt;
    dk_app *app;
    struct MHD_Daemon *daemon;
    int nroutes;
    struct dk_route_entry routes[DK_MAX_ROUTES];
    int nready;
    struct {
        const char *name;
        dk_ready_fn fn;
        void *ctx;
    } ready[DK_MAX_READY];
    atomic_bool draining;
    atomic_int inflight;
    int bound_port;
    char start_error[256]; /* why dk_http_start failed, for the user */
    /* the connection guard (see "the connection guard" below) */
    pthread_mutex_t guard_lock;
    struct dk_conn *conns; /* every open connection */
    atomic_int nconns;
    atomic_ullong reaped; /* connections closed for a late request head */
    int header_timeout_ms, max_connections;
    dk_workpool *offload;
    pthread_mutex_t streams_lock;
    struct dk_stream *streams; /* open streaming responses (ended on drain) */
    int body_stream_routes;    /* routes with DK_ROUTE_BODY_STREAM */
    int body_limit_routes;     /* routes with a body limit of their own */
    /* the trimmer: gives freed heap memory back to the system once the server is idle */
    atomic_ullong completed; /* requests finished, ever */
    pthread_t trimmer;
    bool trimmer_running;
    pthread_mutex_t trim_lock;
    pthread_cond_t trim_cond;
    bool trim_stop;
};

/* Per-request state, allocated in the request's arena. */
struct dk_exchange {
    dk_req req;
    dk_res res;
    dk_identity identity;
    char *buf; /* body being received (malloc'd, capped at body_limit) */
    size_t len, cap;
    size_t body_limit; /* the route's, else the server's */
    bool too_large;
    bool suspended;
    bool dispatched;
    dk_handler_fn offload_handler;
    struct dk_stream *stream; /* set by dk_res_stream */
    double t0;
    const char *metric_service;
    const char *metric_route;
    const char *metric_method;
    dk_http_server *srv;
    int edge_nheaders; /* response headers set by the edge duties, before the handler */
    /* A streamed request body (DK_ROUTE_BODY_STREAM): dispatched when the headers are in.
     * bs_lock guards the flags shared with the handler's threads; bs_cb_lock is held while a
     * callback runs, so dk_req_resume can drop them and know none is running. */
    bool bs;
    bool bs_finished; /* the whole body has been read (the final access-handler call) */
    pthread_mutex_t bs_lock, bs_cb_lock;
    dk_body_chunk_fn on_chunk;
    dk_body_end_fn on_end;
    void *bs_ctx;
    uint64_t bs_received; /* bytes taken by on_chunk, or discarded */
    bool bs_paused;       /* connection suspended: on_chunk took less than it was offered */
    bool bs_wake;         /* dk_req_body_resume came while not paused */
    bool bs_answered;     /* the handler has resumed the request (its answer is in res) */
    bool bs_waiting;      /* connection suspended after the body, waiting for the answer */
    bool bs_orphaned;     /* the client left before the answer: dk_req_resume frees */
};

static const char *dk_static_method(const char *m)
{
    static const char *known[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(m, known[i]) == 0)
            return known[i];
    return "OTHER";
}

/* ---------- request accessors ---------- */

const char *dk_req_param(const dk_req *req, const char *name)
{
    for (int i = 0; i < req->nparams; i++)
        if (strcmp(req->param_names[i], name) == 0)
            return req->param_values[i];
    return NULL;
}

const char *dk_req_header(const dk_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *dk_req_query(const dk_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

struct dk_query_build {
    dk_arena *arena;
    char *buf;
    size_t len, cap;
};

static void dk_qb_append(struct dk_query_build *q, const char *s, size_t n)
{
    if (q->len + n + 1 > q->cap) {
        size_t ncap = (q->cap ? q->cap * 2 : 256) + n;
        char *nb = dk_arena_alloc(q->arena, ncap);
        if (q->len)
            memcpy(nb, q->buf, q->len);
        q->buf = nb;
        q->cap = ncap;
    }
    memcpy(q->buf + q->len, s, n);
    q->len += n;
    q->buf[q->len] = '\0';
}

static void dk_qb_escape(struct dk_query_build *q, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            dk_qb_append(q, (const char *)p, 1);
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            dk_qb_append(q, e, 3);
        }
    }
}

static enum MHD_Result dk_query_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    struct dk_query_build *q = cls;
    if (q->len)
        dk_qb_append(q, "&", 1);
    dk_qb_escape(q, key);
    if (value) {
        dk_qb_append(q, "=", 1);
        dk_qb_escape(q, value);
    }
    return MHD_YES;
}

const char *dk_req_query_string(dk_req *req)
{
    struct dk_query_build q = {.arena = req->arena};
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, dk_query_arg, &q);
    return q.buf ? q.buf : "";
}

struct dk_header_iter {
    void (*fn)(void *ctx, const char *name, const char *value);
    void *ctx;
};

static enum MHD_Result dk_header_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    struct dk_header_iter *it = cls;
    it->fn(it->ctx, key, value ? value : "");
    return MHD_YES;
}

void dk_req_each_header(const dk_req *req,
                        void (*fn)(void *ctx, const char *name, const char *value), void *ctx)
{
    struct dk_header_iter it = {fn, ctx};
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, dk_header_cb, &it);
}

static bool dk_content_type_is_json(const char *ct)
{
    if (!ct)
        return false;
    while (*ct == ' ')
        ct++;
    const char *want = "application/json";
    size_t n = strlen(want);
    if (strncasecmp(ct, want, n) != 0)
        return false;
    const char *rest = ct + n;
    while (*rest == ' ')
        rest++;
    return *rest == '\0' || *rest == ';';
}

dk_status dk_req_json(dk_req *req, dk_res *res, json_t **ret_obj)
{
    if (!dk_content_type_is_json(dk_req_header(req, MHD_HTTP_HEADER_CONTENT_TYPE))) {
        dk_res_problem(res, DK_E_MEDIA_TYPE, "the request body must be sent as application/json");
        return DK_E_MEDIA_TYPE;
    }
    json_error_t err;
    json_t *v = json_loadb(req->body, req->body_len, JSON_DECODE_ANY, &err);
    if (!v) {
        dk_res_problem(res, DK_E_BAD_REQUEST, "malformed JSON at line %d, column %d: %s", err.line,
                       err.column, err.text);
        return DK_E_BAD_REQUEST;
    }
    dk_json_own(req->arena, v);
    if (!json_is_object(v)) {
        dk_errors e;
        dk_errors_init(&e);
        dk_errors_add(&e, "body", "must be a JSON object");
        dk_res_validation(res, &e);
        return DK_E_VALIDATION;
    }
    *ret_obj = v;
    return DK_OK;
}

struct dk_exchange;
static void dk_exchange_free(struct dk_exchange *x);

void dk_req_suspend(dk_req *req)
{
    struct dk_exchange *x = (struct dk_exchange *)req; /* req is the first member */
    x->suspended = true;
    if (x->bs)
        return; /* the connection goes on reading the body; it waits after it if need be */
    MHD_suspend_connection(req->conn);
}

void dk_req_resume(dk_req *req)
{
    struct dk_exchange *x = (struct dk_exchange *)req;
    if (!x->bs) {
        MHD_resume_connection(req->conn);
        return;
    }
    pthread_mutex_lock(&x->bs_cb_lock); /* waits for a callback that is running */
    x->on_chunk = NULL;
    x->on_end = NULL;
    pthread_mutex_unlock(&x->bs_cb_lock);
    pthread_mutex_lock(&x->bs_lock);
    x->bs_answered = true;
    if (x->bs_orphaned) {
        pthread_mutex_unlock(&x->bs_lock);
        dk_exchange_free(x);
        return;
    }
    /* a connection held back by on_chunk reads (and discards) the rest of the body; one
     * waiting after the body sends the answer */
    bool wake = x->bs_paused || x->bs_waiting;
    x->bs_paused = x->bs_waiting = false;
    if (wake)
        MHD_resume_connection(req->conn);
    pthread_mutex_unlock(&x->bs_lock);
}

/* ---------- streamed request bodies ---------- */

bool dk_req_body_streaming(const dk_req *req)
{
    return ((const struct dk_exchange *)(const void *)req)->bs;
}

void dk_req_body_stream(dk_req *req, dk_body_chunk_fn on_chunk, dk_body_end_fn on_end, void *ctx)
{
    struct dk_exchange *x = (struct dk_exchange *)req;
    if (!x->bs)
        return;
    pthread_mutex_lock(&x->bs_cb_lock);
    x->on_chunk = on_chunk;
    x->on_end = on_end;
    x->bs_ctx = ctx;
    pthread_mutex_unlock(&x->bs_cb_lock);
}

void dk_req_body_resume(dk_req *req)
{
    struct dk_exchange *x = (struct dk_exchange *)req;
    if (!x->bs)
        return;
    pthread_mutex_lock(&x->bs_lock);
    if (x->bs_paused) {
        x->bs_paused = false;
        MHD_resume_connection(req->conn);
    } else if (!x->bs_orphaned && !x->bs_answered) {
        x->bs_wake = true;
    }
    pthread_mutex_unlock(&x->bs_lock);
}

/* Offers data to on_chunk; returns what it took (everything once the callbacks are gone: the
 * rest of the body is discarded). */
static size_t dk_bs_chunk(struct dk_exchange *x, const char *data, size_t n)
{
    pthread_mutex_lock(&x->bs_cb_lock);
    size_t took = x->on_chunk ? x->on_chunk(x->bs_ctx, data, n) : n;
    pthread_mutex_unlock(&x->bs_cb_lock);
    return took < n ? took : n;
}

/* Ends the body for the handler (once); no callback runs afterwards. */
static void dk_bs_end(struct dk_exchange *x, bool ok)
{
    pthread_mutex_lock(&x->bs_cb_lock);
    dk_body_end_fn fn = x->on_end;
    x->on_chunk = NULL;
    x->on_end = NULL;
    if (fn)
        fn(x->bs_ctx, ok);
    pthread_mutex_unlock(&x->bs_cb_lock);
}

static void dk_bs_destroy(void *p)
{
    struct dk_exchange *x = p;
    pthread_mutex_destroy(&x->bs_lock);
    pthread_mutex_destroy(&x->bs_cb_lock);
}

/* Body data on a streaming exchange: to on_chunk until it takes less, then the connection is
 * suspended with the rest left in libmicrohttpd's buffer (*upload_size) for after
 * dk_req_body_resume. Past the body limit the handler is told (on_end false) and the rest is
 * discarded; the final call answers 413. */
static void dk_bs_upload(struct dk_exchange *x, const char *data, size_t *upload_size)
{
    size_t n = *upload_size;
    if (!x->too_large && x->bs_received + n > x->body_limit) {
        x->too_large = true;
        dk_bs_end(x, false);
    }
    if (x->too_large) {
        *upload_size = 0;
        return;
    }
    while (n > 0) {
        size_t took = dk_bs_chunk(x, data, n);
        x->bs_received += took;
        data += took;
        n -= took;
        if (n == 0)
            break;
        pthread_mutex_lock(&x->bs_lock);
        if (x->bs_wake || x->bs_answered) { /* room came meanwhile, or nobody wants it */
            x->bs_wake = false;
            pthread_mutex_unlock(&x->bs_lock);
            continue;
        }
        x->bs_paused = true;
        MHD_suspend_connection(x->req.conn);
        pthread_mutex_unlock(&x->bs_lock);
        break;
    }
    *upload_size = n;
}

/* ---------- streaming responses ---------- */

#define DK_STREAM_HIGH_WATER (256u * 1024u)
/* Unsent bytes a stream may hold; a write beyond it cuts the connection (a client that stopped
 * reading an event stream). Producers that respect the high-water mark never reach it. */
#define DK_STREAM_MAX_BUFFER (4u * DK_STREAM_HIGH_WATER)

/* References: the producer's (until dk_stream_release), the exchange's (until the request's
 * arena is freed: the request is over, sent or abandoned) and, once the connection reads from
 * it, the MHD response's (until libmicrohttpd destroys the response). The stream is "gone"
 * when either of the last two lets go: nobody will read it any more. */
struct dk_stream {
    pthread_mutex_t lock;
    pthread_mutex_t cb_lock; /* held while on_drained runs; dk_stream_release clears it */
    int refs;
    char *buf;
    size_t off, len, cap; /* unsent bytes are buf[off, len) */
    bool ended, err, gone, suspended, want_drain, listed, long_lived, woken;
    struct MHD_Connection *conn;
    void (*on_drained)(void *ctx);
    void *ctx;
    dk_http_server *srv;
    struct dk_stream *prev, *next; /* srv->streams */
};

void dk_stream_end(dk_stream *s, bool err);

static void dk_stream_unref(dk_stream *s)
{
    pthread_mutex_lock(&s->lock);
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&s->lock);
    if (!last)
        return;
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->cb_lock);
    dk_free(s->buf);
    dk_free(s);
}

/* Runs the producer's on_drained unless it has released the stream meanwhile. */
static void dk_stream_notify(dk_stream *s)
{
    pthread_mutex_lock(&s->cb_lock);
    if (s->on_drained)
        s->on_drained(s->ctx);
    pthread_mutex_unlock(&s->cb_lock);
}

/* Nobody reads the stream any more (the response is done or the request is over): later
 * writes fail. A producer still producing is woken through on_drained (it may be waiting for
 * a drain that will never come) and finds the stream closed. */
static void dk_stream_gone(dk_stream *s)
{
    pthread_mutex_lock(&s->lock);
    s->gone = true;
    s->conn = NULL;
    bool wake = !s->ended && !s->woken;
    s->woken = true;
    pthread_mutex_unlock(&s->lock);
    if (wake)
        dk_stream_notify(s);
}

/* The request's arena is being freed (dk_on_completed): the exchange lets go. */
static void dk_stream_exchange_done(void *p)
{
    dk_stream *s = p;
    dk_stream_gone(s);
    dk_stream_unref(s);
}

/* Whether the request's route is a long-lived stream (DK_ROUTE_STREAM): those are ended when
 * the server drains; other streamed bodies are in-flight requests the drain waits for. */
static bool dk_route_is_stream(const dk_http_server *srv, const char *route_pattern)
{
    for (int i = 0; route_pattern && i < srv->nroutes; i++)
        if (srv->routes[i].pattern == route_pattern)
            return (srv->routes[i].flags & DK_ROUTE_STREAM) != 0;
    return false;
}

dk_stream *dk_res_stream(dk_res *res, int status, const char *content_type,
                         void (*on_drained)(void *ctx), void *ctx)
{
    struct dk_exchange *x =
        (struct dk_exchange *)(void *)((char *)res - offsetof(struct dk_exchange, res));
    dk_stream *s = dk_calloc(1, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->cb_lock, NULL);
    s->refs = 2; /* the producer's and the exchange's */
    s->on_drained = on_drained;
    s->ctx = ctx;
    s->srv = x->srv;
    s->long_lived = dk_route_is_stream(x->srv, x->req.route_pattern);
    dk_arena_defer(x->req.arena, dk_stream_exchange_done, s);
    res->status = status;
    res->content_type = content_type;
    res->body = "";
    res->body_len = 0;
    x->stream = s;
    return s;
}

/* Hands data to libmicrohttpd; with nothing buffered the connection is suspended until the
 * producer writes or ends (returning 0 with the connection suspended is MHD's way to wait). */
static ssize_t dk_stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    dk_stream *s = cls;
    pthread_mutex_lock(&s->lock);
    size_t avail = s->len - s->off;
    if (avail > 0) {
        size_t n = avail < max ? avail : max;
        memcpy(out, s->buf + s->off, n);
        s->off += n;
        bool drained = false;
        if (s->off == s->len) {
            s->off = s->len = 0;
            drained = s->want_drain;
            s->want_drain = false;
        }
        pthread_mutex_unlock(&s->lock);
        if (drained)
            dk_stream_notify(s);
        return (ssize_t)n;
    }
    if (s->ended) {
        bool err = s->err;
        pthread_mutex_unlock(&s->lock);
        return err ? MHD_CONTENT_READER_END_WITH_ERROR : MHD_CONTENT_READER_END_OF_STREAM;
    }
    s->suspended = true;
    MHD_suspend_connection(s->conn);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

/* The connection is done with the response (sent, or the client went away). */
static void dk_stream_conn_done(void *cls)
{
    dk_stream *s = cls;
    dk_http_server *srv = s->srv;
    pthread_mutex_lock(&srv->streams_lock);
    if (s->listed) {
        if (s->prev)
            s->prev->next = s->next;
        else
            srv->streams = s->next;
        if (s->next)
            s->next->prev = s->prev;
        s->listed = false;
    }
    pthread_mutex_unlock(&srv->streams_lock);
    dk_stream_gone(s);
    dk_stream_unref(s);
}

static struct MHD_Response *dk_stream_response(dk_stream *s, struct MHD_Connection *conn)
{
    pthread_mutex_lock(&s->lock);
    if (s->gone) { /* cannot happen while the exchange holds its reference; be safe */
        pthread_mutex_unlock(&s->lock);
        return NULL;
    }
    s->conn = conn;
    s->refs++;
    pthread_mutex_unlock(&s->lock);
    struct MHD_Response *r = MHD_create_response_from_callback(
        MHD_SIZE_UNKNOWN, 16 * 1024, dk_stream_read, s, dk_stream_conn_done);
    if (!r) {
        dk_stream_gone(s);
        dk_stream_unref(s);
        return NULL;
    }
    dk_http_server *srv = s->srv;
    pthread_mutex_lock(&srv->streams_lock);
    s->listed = true;
    s->prev = NULL;
    s->next = srv->streams;
    if (srv->streams)
        srv->streams->prev = s;
    srv->streams = s;
    pthread_mutex_unlock(&srv->streams_lock);
    if (s->long_lived && atomic_load(&srv->draining))
        dk_stream_end(s, false);
    return r;
}

bool dk_stream_write(dk_stream *s, const void *data, size_t len)
{
    pthread_mutex_lock(&s->lock);
    if (s->gone || s->ended) {
        pthread_mutex_unlock(&s->lock);
        return false;
    }
    if (s->len - s->off + len > DK_STREAM_MAX_BUFFER) {
        /* a client that stopped reading: drop it rather than buffer without bound — the
         * buffer goes now, and the connection is cut at once (libmicrohttpd would otherwise
         * first wait for the client to take what its socket holds) */
        s->ended = true;
        s->err = true;
        s->off = s->len = 0;
        if (s->conn) {
            const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(s->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
            if (ci)
                (void)shutdown(ci->connect_fd, SHUT_RDWR);
        }
        if (s->suspended && s->conn) {
            s->suspended = false;
            MHD_resume_connection(s->conn);
        }
        pthread_mutex_unlock(&s->lock);
        return false;
    }
    if (s->len + len > s->cap) {
        if (s->off > 0) {
            memmove(s->buf, s->buf + s->off, s->len - s->off);
            s->len -= s->off;
            s->off = 0;
        }
        if (s->len + len > s->cap) {
            size_t ncap = s->cap ? s->cap * 2 : 4096;
            while (ncap < s->len + len)
                ncap *= 2;
            s->buf = dk_realloc(s->buf, ncap);
            s->cap = ncap;
        }
    }
    memcpy(s->buf + s->len, data, len);
    s->len += len;
    if (s->len - s->off >= DK_STREAM_HIGH_WATER)
        s->want_drain = true;
    if (s->suspended && s->conn) {
        s->suspended = false;
        MHD_resume_connection(s->conn);
    }
    pthread_mutex_unlock(&s->lock);
    return true;
}

size_t dk_stream_buffered(dk_stream *s)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->len - s->off;
    pthread_mutex_unlock(&s->lock);
    return n;
}

void dk_stream_end(dk_stream *s, bool err)
{
    pthread_mutex_lock(&s->lock);
    if (!s->ended) {
        s->ended = true;
        s->err = err;
        if (s->suspended && s->conn) {
            s->suspended = false;
            MHD_resume_connection(s->conn);
        }
    }
    pthread_mutex_unlock(&s->lock);
}

bool dk_stream_closed(dk_stream *s)
{
    pthread_mutex_lock(&s->lock);
    bool closed = s->gone || s->ended;
    pthread_mutex_unlock(&s->lock);
    return closed;
}

/* After this returns on_drained is not running and will not run again, so the producer may
 * free its context (on_drained must therefore not call dk_stream_release itself). */
void dk_stream_release(dk_stream *s)
{
    if (!s)
        return;
    dk_stream_end(s, false);
    pthread_mutex_lock(&s->cb_lock);
    s->on_drained = NULL;
    pthread_mutex_unlock(&s->cb_lock);
    dk_stream_unref(s);
}

/* Ends every open long-lived stream (drain): their clients see the end and reconnect
 * elsewhere. Finite streamed bodies (a proxied download) go on: the drain waits for them like
 * for any request in flight, and ending them here would truncate them silently. */
static void dk_streams_end_all(dk_http_server *srv)
{
    pthread_mutex_lock(&srv->streams_lock);
    for (dk_stream *s = srv->streams; s; s = s->next)
        if (s->long_lived)
            dk_stream_end(s, false);
    pthread_mutex_unlock(&srv->streams_lock);
}

/* ---------- responses ---------- */

void dk_res_header(dk_res *res, const char *name, const char *value)
{
    if (res->nheaders >= DK_MAX_RES_HEADERS)
        return;
    res->header_names[res->nheaders] = dk_arena_strdup(res->arena, name);
    res->header_values[res->nheaders] = dk_arena_strdup(res->arena, value);
    res->nheaders++;
}

void dk_res_json(dk_res *res, int status, json_t *body)
{
    res->status = status;
    res->content_type = "application/json";
    res->body = dk_json_render(res->arena, body, &res->body_len);
    json_decref(body);
}

void dk_res_jw(dk_res *res, int status, dk_jw *w)
{
    res->status = status;
    res->content_type = "application/json";
    res->body = dk_jw_finish(w, res->arena, &res->body_len);
}

void dk_res_empty(dk_res *res, int status)
{
    res->status = status;
    res->content_type = NULL;
    res->body = "";
    res->body_len = 0;
}

void dk_res_text(dk_res *res, int status, const char *content_type, const char *body, size_t len)
{
    res->status = status;
    res->content_type = content_type;
    res->body = body;
    res->body_len = len;
}

static void dk_res_problem_v(dk_res *res, dk_status st, json_t *ext, const char *fmt, va_list ap)
    DK_PRINTF(4, 0);
static void dk_res_problem_v(dk_res *res, dk_status st, json_t *ext, const char *fmt, va_list ap)
{
    char detail[1024];
    vsnprintf(detail, sizeof detail, fmt, ap);
    int http = dk_status_http(st);
    json_t *p = json_object();
    json_object_set_new(p, "type", json_string("about:blank"));
    json_object_set_new(p, "title", json_string(dk_status_title(st)));
    json_object_set_new(p, "status", json_integer(http));
    json_t *d = json_string(detail);
    json_object_set_new(p, "detail", d ? d : json_string("(detail not valid UTF-8)"));
    json_object_set_new(p, "request_id", json_string(res->request_id ? res->request_id : ""));
    if (ext) {
        json_object_update(p, ext);
        json_decref(ext);
    }
    if (st == DK_E_UNAUTHORIZED) {
        bool has = false;
        for (int i = 0; i < res->nheaders; i++)
            if (strcasecmp(res->header_names[i], "WWW-Authenticate") == 0)
                has = true;
        if (!has)
            dk_res_header(res, "WWW-Authenticate", "Bearer realm=\"docket\"");
    }
    res->status = http;
    res->content_type = "application/problem+json";
    res->body = dk_json_render(res->arena, p, &res->body_len);
    json_decref(p);
}

void dk_res_problem(dk_res *res, dk_status st, const char *detail_fmt, ...)
{
    va_list ap;
    va_start(ap, detail_fmt);
    dk_res_problem_v(res, st, NULL, detail_fmt, ap);
    va_end(ap);
}

void dk_res_problem_ext(dk_res *res, dk_status st, json_t *ext, const char *detail_fmt, ...)
{
    va_list ap;
    va_start(ap, detail_fmt);
    dk_res_problem_v(res, st, ext, detail_fmt, ap);
    va_end(ap);
}

void dk_errors_init(dk_errors *e)
{
    e->list = NULL;
}

void dk_errors_add(dk_errors *e, const char *field, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!e->list)
        e->list = json_array();
    json_t *item = json_object();
    json_object_set_new(item, "field", json_string(field));
    json_object_set_new(item, "message", json_string(msg));
    json_array_append_new(e->list, item);
}

bool dk_errors_any(const dk_errors *e)
{
    return e->list && json_array_size(e->list) > 0;
}

void dk_errors_release(dk_errors *e)
{
    json_decref(e->list);
    e->list = NULL;
}

/* {"errors": [...]} taken from e (emptied); *ret_n gets how many. */
static json_t *dk_errors_ext(dk_errors *e, size_t *ret_n)
{
    json_t *ext = json_object();
    json_object_set_new(ext, "errors", e->list ? e->list : json_array());
    e->list = NULL;
    *ret_n = json_array_size(json_object_get(ext, "errors"));
    return ext;
}

void dk_res_validation(dk_res *res, dk_errors *e)
{
    size_t n = 0;
    json_t *ext = dk_errors_ext(e, &n);
    dk_res_problem_ext(res, DK_E_VALIDATION, ext, "%zu field%s failed validation", n,
                       n == 1 ? "" : "s");
}

void dk_res_bad_query(dk_res *res, dk_errors *e)
{
    size_t n = 0;
    json_t *ext = dk_errors_ext(e, &n);
    dk_res_problem_ext(res, DK_E_BAD_REQUEST, ext, "%zu query parameter%s %s invalid", n,
                       n == 1 ? "" : "s", n == 1 ? "is" : "are");
}

/* ---------- server set-up ---------- */

static const dk_route dk_ops_routes[5]; /* /health, /ready, /metrics, /openapi.*: below */

dk_http_server *dk_http_new(const dk_http_options *opt, dk_app *app)
{
    dk_http_server *srv = DK_NEW(dk_http_server);
    srv->opt = *opt;
    srv->opt.host = dk_strdup(opt->host ? opt->host : "0.0.0.0");
    srv->opt.process_name = dk_strdup(opt->process_name ? opt->process_name : "docket");
    srv->opt.cors_origins =
        opt->cors_origins && *opt->cors_origins ? dk_strdup(opt->cors_origins) : NULL;
    srv->app = app;
    atomic_init(&srv->draining, false);
    atomic_init(&srv->inflight, 0);
    pthread_mutex_init(&srv->streams_lock, NULL);
    pthread_mutex_init(&srv->guard_lock, NULL);
    atomic_init(&srv->nconns, 0);
    atomic_init(&srv->reaped, 0);
    if (opt->offload_workers > 0)
        srv->offload = dk_workpool_new(opt->offload_workers, opt->offload_queue);
    dk_http_mount(srv, srv->opt.process_name, "", dk_ops_routes,
                  sizeof dk_ops_routes / sizeof dk_ops_routes[0], srv);
    return srv;
}

void dk_http_free(dk_http_server *srv)
{
    if (!srv)
        return;
    if (srv->daemon)
        dk_http_stop(srv);
    dk_workpool_free(srv->offload);
    for (int i = 0; i < srv->nroutes; i++) {
        dk_free(srv->routes[i].pattern);
        for (int s = 0; s < srv->routes[i].nsegs; s++)
            dk_free(srv->routes[i].segs[s]);
    }
    dk_free((char *)srv->opt.host);
    dk_free((char *)srv->opt.process_name);
    dk_free((char *)srv->opt.cors_origins);
    pthread_mutex_destroy(&srv->streams_lock);
    pthread_mutex_destroy(&srv->guard_lock);
    dk_free(srv);
}

void dk_http_mount(dk_http_server *srv, const char *service_name, const char *prefix,
                   const dk_route *routes, size_t nroutes, void *state)
{
    for (size_t i = 0; i < nroutes; i++) {
        if (srv->nroutes >= DK_MAX_ROUTES) {
            fprintf(stderr, "too many routes\n");
            abort();
        }
        struct dk_route_entry *r = &srv->routes[srv->nroutes++];
        size_t plen = strlen(prefix), rlen = strlen(routes[i].pattern);
        /* "/" relative pattern means the prefix itself */
        bool root = strcmp(routes[i].pattern, "/") == 0;
        r->pattern = dk_malloc(plen + rlen + 1);
        memcpy(r->pattern, prefix, plen);
        if (root) {
            r->pattern[plen] = '\0';
        } else {
            memcpy(r->pattern + plen, routes[i].pattern, rlen + 1);
        }
        r->service_name = service_name;
        r->method = routes[i].method;
        r->handler = routes[i].handler;
        r->flags = routes[i].flags;
        r->body_limit = DK_ROUTE_BODY_LIMIT(routes[i].flags);
        if (r->body_limit)
            srv->body_limit_routes++;
        r->state = state;
        if (r->flags & DK_ROUTE_BODY_STREAM)
            srv->body_stream_routes++;
        const char *p = r->pattern;
        while (*p) {
            while (*p == '/')
                p++;
            if (!*p)
                break;
            const char *e = strchr(p, '/');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            if (r->nsegs >= DK_MAX_SEGMENTS) {
                fprintf(stderr, "route %s has too many segments\n", r->pattern);
                abort();
            }
            r->segs[r->nsegs++] = dk_strndup(p, n);
            p += n;
        }
    }
}

void dk_http_add_ready_check(dk_http_server *srv, const char *name, dk_ready_fn fn, void *ctx)
{
    if (srv->nready >= DK_MAX_READY)
        return;
    srv->ready[srv->nready].name = name;
    srv->ready[srv->nready].fn = fn;
    srv->ready[srv->nready].ctx = ctx;
    srv->nready++;
}

const char *dk_http_start_error(const dk_http_server *srv)
{
    return srv->start_error;
}

int dk_http_port(const dk_http_server *srv)
{
    return srv->bound_port;
}

/* ---------- routing ---------- */

/* Splits path into segments in the arena; false when there are too many. */
static int dk_split_path(dk_arena *a, const char *path, char **segs, int max)
{
    int n = 0;
    const char *p = path;
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (n >= max)
            return -1;
        segs[n++] = dk_arena_strndup(a, p, len);
        p += len;
    }
    return n;
}

static bool dk_route_matches(const struct dk_route_entry *r, char **segs, int nsegs, dk_req *req)
{
    if (r->nsegs != nsegs)
        return false;
    int np = 0;
    for (int i = 0; i < nsegs; i++) {
        const char *s = r->segs[i];
        if (s[0] == '{') {
            if (np >= DK_MAX_PARAMS)
                return false;
            if (req) {
                size_t n = strlen(s);
                req->param_names[np] = dk_arena_strndup(req->arena, s + 1, n - 2);
                req->param_values[np] = segs[i];
            }
            np++;
        } else if (strcmp(s, segs[i]) != 0) {
            return false;
        }
    }
    if (req)
        req->nparams = np;
    return true;
}

/* ---------- ops routes ---------- */

static void dk_ops_health(dk_req *req, dk_res *res)
{
    static const char body[] = "{\"status\":\"ok\"}";
    dk_res_text(res, 200, "application/json", body, sizeof body - 1);
}

static void dk_ops_ready(dk_req *req, dk_res *res)
{
    dk_http_server *srv = req->service;
    json_t *checks = json_object();
    bool ok = true;
    char failing[256] = "";
    if (atomic_load(&srv->draining)) {
        ok = false;
        json_object_set_new(checks, "server", json_string("shutting down"));
        dk_strlcpy(failing, "server", sizeof failing);
    }
    for (int i = 0; i < srv->nready; i++) {
        char reason[256] = "";
        dk_status st = srv->ready[i].fn(srv->ready[i].ctx, reason, sizeof reason);
        if (st == DK_OK) {
            json_object_set_new(checks, srv->ready[i].name, json_string("ok"));
        } else {
            ok = false;
            json_t *r = json_string(reason[0] ? reason : dk_status_title(st));
            json_object_set_new(checks, srv->ready[i].name, r ? r : json_string("unavailable"));
            size_t fl = strlen(failing);
            snprintf(failing + fl, sizeof failing - fl, "%s%s", fl ? ", " : "", srv->ready[i].name);
        }
    }
    if (ok) {
        dk_res_json(res, 200, json_pack("{s:s,s:o}", "status", "ok", "checks", checks));
    } else {
        json_t *ext = json_pack("{s:o}", "checks", checks);
        dk_res_header(res, "Retry-After", "1");
        dk_res_problem_ext(res, DK_E_UNAVAILABLE, ext, "not ready: %s", failing);
    }
}

static void dk_ops_metrics(dk_req *req, dk_res *res)
{
    size_t len = 0;
    char *text = dk_metrics_render(req->arena, &len);
    dk_res_text(res, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

/* The OpenAPI document, compiled in (cmake/embed.cmake); its JSON form is made once. */
extern const unsigned char dk_openapi_yaml[];
extern const size_t dk_openapi_yaml_len;
static pthread_once_t dk_openapi_once = PTHREAD_ONCE_INIT;
static char *dk_openapi_json_text;
static size_t dk_openapi_json_len;

static void dk_openapi_json_make(void)
{
    char err[256] = "";
    json_t *doc =
        dk_yaml_to_json((const char *)dk_openapi_yaml, dk_openapi_yaml_len, err, sizeof err);
    if (!doc) {
        dk_log_error("the compiled-in OpenAPI document does not convert to JSON: %s", err);
        return;
    }
    dk_openapi_json_text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    dk_openapi_json_len = dk_openapi_json_text ? strlen(dk_openapi_json_text) : 0;
    json_decref(doc);
}

static void dk_ops_openapi(dk_req *req, dk_res *res)
{
    dk_res_header(res, "Cache-Control", "public, max-age=300");
    if (strstr(req->path, ".json")) {
        pthread_once(&dk_openapi_once, dk_openapi_json_make);
        if (!dk_openapi_json_text) {
            dk_res_problem(res, DK_E_INTERNAL, "the OpenAPI document could not be converted");
            return;
        }
        dk_res_text(res, 200, "application/json", dk_openapi_json_text, dk_openapi_json_len);
        return;
    }
    dk_res_text(res, 200, "application/yaml", (const char *)dk_openapi_yaml, dk_openapi_yaml_len);
}

/* Frees what the ops routes made lazily (for leak checks at exit). */
static void dk_openapi_json_free(void) __attribute__((destructor));
static void dk_openapi_json_free(void)
{
    free(dk_openapi_json_text);
    dk_openapi_json_text = NULL;
}

static const dk_route dk_ops_routes[] = {
    {"GET", "/health", dk_ops_health, DK_ROUTE_OPS},
    {"GET", "/ready", dk_ops_ready, DK_ROUTE_OPS},
    {"GET", "/metrics", dk_ops_metrics, DK_ROUTE_OPS},
    {"GET", "/openapi.yaml", dk_ops_openapi, DK_ROUTE_OPS},
    {"GET", "/openapi.json", dk_ops_openapi, DK_ROUTE_OPS},
};

/* ---------- edge duties ---------- */

static bool dk_rate_limit(struct dk_exchange *x)
{
    dk_app *app = x->srv->app;
    if (!app->rate_limit_enabled)
        return true;
    dk_ratelimit_result rl;
    dk_status st = dk_ratelimit_hit(&app->store, "auth", x->req.client_ip, app->rate_limit_max,
                                    app->rate_limit_window_ms, &rl);
    if (st != DK_OK) {
        dk_log_error("rate limiter unavailable: %s", dk_status_title(st));
        dk_res_header(&x->res, "Retry-After", "1");
        dk_res_problem(&x->res, DK_E_UNAVAILABLE, "the rate limiter's store is unavailable");
        return false;
    }
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)rl.limit);
    dk_res_header(&x->res, "RateLimit-Limit", buf);
    snprintf(buf, sizeof buf, "%lld", (long long)rl.remaining);
    dk_res_header(&x->res, "RateLimit-Remaining", buf);
    snprintf(buf, sizeof buf, "%lld", (long long)rl.reset_s);
    dk_res_header(&x->res, "RateLimit-Reset", buf);
    if (!rl.allowed) {
        snprintf(buf, sizeof buf, "%lld", (long long)rl.retry_after_s);
        dk_res_header(&x->res, "Retry-After", buf);
        dk_res_problem(&x->res, DK_E_RATE_LIMITED,
                       "too many requests from this client: %lld per %lld s; retry in %lld s",
                       (long long)rl.limit, (long long)(app->rate_limit_window_ms / 1000),
                       (long long)rl.retry_after_s);
        return false;
    }
    return true;
}

static bool dk_authenticate(struct dk_exchange *x, bool internal)
{
    dk_app *app = x->srv->app;
    const char *h = dk_req_header(&x->req, MHD_HTTP_HEADER_AUTHORIZATION);
    const char *token = NULL;
    if (h && strncasecmp(h, "Bearer ", 7) == 0) {
        token = h + 7;
        while (*token == ' ')
            token++;
    }
    dk_status st = DK_E_UNAUTHORIZED;
    if (token && *token)
        st = dk_tokens_verify(app->tokens, x->req.arena, token, &x->identity);
    if (st == DK_OK && internal) {
        /* service tokens have no session: the role is what admits them */
        if (strcmp(x->identity.role, "service") != 0) {
            dk_res_problem(&x->res, DK_E_NOT_FOUND, "no such resource: %s", x->req.path);
            return false;
        }
        x->req.identity = &x->identity;
        return true;
    }
    if (st == DK_OK && strcmp(x->identity.role, "service") == 0)
        st = DK_E_UNAUTHORIZED; /* a service token is not a user's */
    if (st == DK_OK)
        st = dk_session_check(&app->store, x->identity.session_id);
    if (st == DK_OK) {
        dk_status tst = dk_session_touch(&app->store, x->identity.session_id, app->refresh_ttl_ms);
        if (tst != DK_OK)
            dk_log_warn("could not record session use: %s", dk_status_title(tst));
        x->req.identity = &x->identity;
        return true;
    }
    if (st == DK_E_UNAUTHORIZED) {
        dk_res_header(&x->res, "WWW-Authenticate",
                      token ? "Bearer realm=\"docket\", error=\"invalid_token\""
                            : "Bearer realm=\"docket\"");
        dk_res_problem(&x->res, DK_E_UNAUTHORIZED,
                       token ? "the access token is invalid, expired or revoked"
                             : "this endpoint needs an access token (Authorization: Bearer …)");
    } else {
        dk_res_header(&x->res, "Retry-After", "1");
        dk_res_problem(&x->res, DK_E_UNAVAILABLE, "the session store is unavailable");
    }
    return false;
}

static bool dk_origin_allowed(const char *list, const char *origin)
{
    if (!list || !origin || !*origin)
        return false;
    size_t on = strlen(origin);
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && t[-1] == ' ')
            t--;
        size_t n = (size_t)(t - p);
        if ((n == 1 && *p == '*') || (n == on && strncmp(p, origin, n) == 0))
            return true;
        p = e;
    }
    return false;
}

/* CORS: adds the response headers for an allowed Origin; answers preflights. Returns true
 * when the request has been answered. */
static bool dk_cors(struct dk_exchange *x, const char *allow_methods)
{
    const char *origin = dk_req_header(&x->req, "Origin");
    if (!dk_origin_allowed(x->srv->opt.cors_origins, origin))
        return false;
    dk_res_header(&x->res, "Access-Control-Allow-Origin", origin);
    dk_res_header(&x->res, "Vary", "Origin");
    dk_res_header(&x->res, "Access-Control-Expose-Headers",
                  "X-Request-Id, ETag, Location, Retry-After, RateLimit-Limit, "
                  "RateLimit-Remaining, RateLimit-Reset");
    if (strcmp(x->req.method, "OPTIONS") == 0 &&
        dk_req_header(&x->req, "Access-Control-Request-Method") && allow_methods) {
        dk_res_header(&x->res, "Access-Control-Allow-Methods", allow_methods);
        dk_res_header(&x->res, "Access-Control-Allow-Headers",
                      "Authorization, Content-Type, If-Match, If-None-Match, X-Request-Id, "
                      "traceparent, Last-Event-ID");
        dk_res_header(&x->res, "Access-Control-Max-Age", "600");
        dk_res_empty(&x->res, 204);
        return true;
    }
    return false;
}

static bool dk_edge_rate_limit(struct dk_exchange *x)
{
    int64_t rps = x->srv->opt.edge_rate_limit_rps;
    if (rps <= 0)
        return true;
    dk_ratelimit_result rl;
    dk_status st = dk_ratelimit_hit(&x->srv->app->store, "edge", x->req.client_ip, rps, 1000, &rl);
    if (st != DK_OK) {
        dk_log_error("edge rate limiter unavailable: %s", dk_status_title(st));
        dk_res_header(&x->res, "Retry-After", "1");
        dk_res_problem(&x->res, DK_E_UNAVAILABLE, "the rate limiter's store is unavailable");
        return false;
    }
    if (rl.allowed)
        return true;
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)rl.limit);
    dk_res_header(&x->res, "RateLimit-Limit", buf);
    dk_res_header(&x->res, "RateLimit-Remaining", "0");
    snprintf(buf, sizeof buf, "%lld", (long long)rl.reset_s);
    dk_res_header(&x->res, "RateLimit-Reset", buf);
    dk_res_header(&x->res, "Retry-After", buf);
    dk_res_problem(&x->res, DK_E_RATE_LIMITED,
                   "more than %lld requests per second from this client", (long long)rps);
    return false;
}

/* A handler on the offload pool: the connection is suspended meanwhile. */
bool dk_req_client_gone(const dk_req *req)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return false;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0)
        return false;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR))
        return true;
    char c;
    return recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

static void dk_offloaded(void *arg)
{
    struct dk_exchange *x = arg;
    dk_log_set_context(x->req.request_id, x->req.trace_id);
    dk_trace_enter(x->req.trace_id, x->req.span_id, x->req.trace_sampled);
    /* a request that waited in the queue while its client gave up is not worth its CPU (an
     * Argon2 hash): 499, as for any client that leaves before its answer */
    if (dk_req_client_gone(&x->req))
        dk_res_empty(&x->res, 499);
    else
        x->offload_handler(&x->req, &x->res);
    if (x->res.status == 0)
        dk_res_problem(&x->res, DK_E_INTERNAL, "the handler produced no response");
    dk_log_set_context(NULL, NULL);
    dk_req_resume(&x->req);
}

static void dk_dispatch(struct dk_exchange *x)
{
    dk_http_server *srv = x->srv;
    dk_req *req = &x->req;
    const char *path = req->path;

    x->metric_service = srv->opt.process_name;
    x->metric_route = "unmatched";
    dk_trace_enter(req->trace_id, req->span_id, req->trace_sampled);

    char *segs[DK_MAX_SEGMENTS + 1];
    int nsegs = dk_split_path(req->arena, path, segs, DK_MAX_SEGMENTS + 1);
    const struct dk_route_entry *found = NULL;
    char allow[128] = "";
    if (nsegs >= 0) {
        for (int i = 0; i < srv->nroutes; i++) {
            const struct dk_route_entry *r = &srv->routes[i];
            if (!dk_route_matches(r, segs, nsegs, NULL))
                continue;
            if (strcmp(r->method, req->method) == 0) {
                found = r;
                break;
            }
            size_t al = strlen(allow);
            if (!strstr(allow, r->method))
                snprintf(allow + al, sizeof allow - al, "%s%s", al ? ", " : "", r->method);
        }
    }
    if (!found) {
        if (allow[0] && dk_cors(x, allow))
            return;
        if (allow[0]) {
            dk_res_header(&x->res, "Allow", allow);
            dk_res_problem(&x->res, DK_E_METHOD, "%s is not allowed here; allowed: %s", req->method,
                           allow);
        } else {
            dk_res_problem(&x->res, DK_E_NOT_FOUND, "no such resource: %s", path);
        }
        return;
    }
    (void)dk_route_matches(found, segs, nsegs, req);
    x->metric_service = found->service_name;
    x->metric_route = found->pattern;
    req->service = found->state;
    req->service_name = found->service_name;
    req->route_pattern = found->pattern;

    if (!(found->flags & DK_ROUTE_OPS)) {
        (void)dk_cors(x, NULL);
        if (!dk_edge_rate_limit(x))
            return;
    }
    if ((found->flags & DK_ROUTE_RATE_LIMIT) && !dk_rate_limit(x))
        return;
    if (x->too_large) {
        dk_res_problem(&x->res, DK_E_TOO_LARGE, "the request body exceeds the limit of %zu bytes",
                       x->body_limit);
        return;
    }
    if ((found->flags & (DK_ROUTE_AUTH | DK_ROUTE_INTERNAL)) &&
        !dk_authenticate(x, (found->flags & DK_ROUTE_INTERNAL) != 0))
        return;
    if ((found->flags & DK_ROUTE_OFFLOAD) && srv->offload) {
        x->offload_handler = found->handler;
        dk_req_suspend(req);
        if (dk_workpool_submit(srv->offload, dk_offloaded, x) != DK_OK) {
            dk_res_header(&x->res, "Retry-After", "1");
            dk_res_problem(&x->res, DK_E_UNAVAILABLE,
                           "the server is busy with other sign-ins; try again shortly");
            dk_req_resume(req);
        }
        return;
    }
    x->edge_nheaders = x->res.nheaders;
    found->handler(req, &x->res);
    if (!x->suspended && x->res.status == 0) /* once suspended, res belongs to another thread */
        dk_res_problem(&x->res, DK_E_INTERNAL, "the handler produced no response");
}

/* ---------- the connection guard ---------- */

/* Every connection is tracked from accept to close (libmicrohttpd's socket context), so that
 *  - the housekeeping thread closes a connection whose request head is not complete by its
 *    deadline: server.header_timeout after the connection opened or its request line arrived,
 *    DK_IDLE_TIMEOUT_S after its previous response (a client trickling header bytes — slowloris —
 *    keeps libmicrohttpd's inactivity timer alive, not this deadline);
 *  - a request beyond server.max_connections open connections is answered 503 at once;
 *  - the raw request line is checked before libmicrohttpd decodes it into C strings, where a
 *    percent-encoded NUL would cut a value short and invalid UTF-8 would reach the database.
 * Locking: guard_lock protects the list and each entry's fd, deadline and reaped flag; the
 * per-request URI flags are written and read on the connection's own thread only. */
#define DK_IDLE_TIMEOUT_S 60

struct dk_conn {
    struct dk_conn *prev, *next;
    int fd;
    int64_t deadline_ms; /* close unless a request head completes by then; INT64_MAX = none */
    int64_t opened_ms;
    unsigned answered; /* requests completed on it */
    bool busy;         /* a request line has arrived, its response is not complete yet */
    bool reaped;
    /* the current request line (connection thread only) */
    bool bad_path;
    char bad_param[64]; /* a query parameter with a NUL or invalid UTF-8; "" = none */
};

static struct dk_conn *dk_conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static void dk_conn_deadline(dk_http_server *srv, struct dk_conn *c, int64_t at, bool sooner_only)
{
    if (!c)
        return;
    pthread_mutex_lock(&srv->guard_lock);
    if (!sooner_only || at < c->deadline_ms)
        c->deadline_ms = at;
    pthread_mutex_unlock(&srv->guard_lock);
}

static void dk_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                             enum MHD_ConnectionNotificationCode code)
{
    dk_http_server *srv = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        struct dk_conn *c = DK_NEW(struct dk_conn);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        c->fd = ci ? ci->connect_fd : -1;
        c->opened_ms = dk_mono_ms();
        c->deadline_ms = c->opened_ms + srv->header_timeout_ms;
        pthread_mutex_lock(&srv->guard_lock);
        c->next = srv->conns;
        if (srv->conns)
            srv->conns->prev = c;
        srv->conns = c;
        pthread_mutex_unlock(&srv->guard_lock);
        atomic_fetch_add(&srv->nconns, 1);
        *socket_context = c;
        return;
    }
    struct dk_conn *c = *socket_context;
    if (!c)
        return;
    /* libmicrohttpd closes the socket after this returns: the housekeeper, which shuts sockets
     * down under the lock, can no longer reach it */
    pthread_mutex_lock(&srv->guard_lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&srv->guard_lock);
    atomic_fetch_sub(&srv->nconns, 1);
    dk_free(c);
    *socket_context = NULL;
}

/* Closes the connections whose request head is late (the housekeeping thread). */
static void dk_conns_reap(dk_http_server *srv)
{
    int64_t now = dk_mono_ms();
    unsigned n = 0;
    pthread_mutex_lock(&srv->guard_lock);
    for (struct dk_conn *c = srv->conns; c; c = c->next) {
        if (!c->reaped && c->fd >= 0 && now > c->deadline_ms) {
            (void)shutdown(c->fd, SHUT_RDWR); /* libmicrohttpd sees the end and closes it */
            c->reaped = true;
            n++;
        }
    }
    pthread_mutex_unlock(&srv->guard_lock);
    if (n) {
        atomic_fetch_add(&srv->reaped, n);
        dk_log_debug("closed %u connection(s) whose request head took longer than %d ms", n,
                     srv->header_timeout_ms);
    }
}

/* Connections a graceful stop waits for: a request under way, or opened moments ago with no
 * request yet (its request may be on the wire; closing it would fail a client that did
 * nothing wrong). Idle kept-alive connections are not waited for. */
static int dk_conns_pending(dk_http_server *srv)
{
    int64_t now = dk_mono_ms();
    int n = 0;
    pthread_mutex_lock(&srv->guard_lock);
    for (struct dk_conn *c = srv->conns; c; c = c->next)
        if (!c->reaped && (c->busy || (c->answered == 0 && now - c->opened_ms < 1000)))
            n++;
    pthread_mutex_unlock(&srv->guard_lock);
    return n;
}

static int dk_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* True when s[0, n) percent-decodes (and '+' → ' ' when plus) to text without a NUL that is
 * valid UTF-8. Raw bytes are taken as they are. */
static bool dk_uri_part_clean(const char *s, size_t n, bool plus)
{
    char stackbuf[512];
    char *buf = n < sizeof stackbuf ? stackbuf : dk_malloc(n + 1);
    size_t m = 0;
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        char ch = s[i];
        if (ch == '%' && i + 2 < n && dk_hexval(s[i + 1]) >= 0 && dk_hexval(s[i + 2]) >= 0) {
            ch = (char)(dk_hexval(s[i + 1]) * 16 + dk_hexval(s[i + 2]));
            i += 2;
        } else if (ch == '+' && plus) {
            ch = ' ';
        }
        if (ch == '\0')
            ok = false;
        buf[m++] = ch;
    }
    if (ok)
        ok = dk_utf8_len(buf, m) >= 0;
    if (buf != stackbuf)
        dk_free(buf);
    return ok;
}

/* Checks the raw request-target of the current request (path and query). */
static void dk_uri_check(const char *uri, bool *ret_bad_path, char *bad_param, size_t cap)
{
    const char *q = strchr(uri, '?');
    size_t plen = q ? (size_t)(q - uri) : strlen(uri);
    *ret_bad_path = !dk_uri_part_clean(uri, plen, false);
    bad_param[0] = '\0';
    if (!q)
        return;
    const char *p = q + 1;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t klen = eq ? (size_t)(eq - p) : len;
        bool key_ok = dk_uri_part_clean(p, klen, true);
        bool val_ok = !eq || dk_uri_part_clean(eq + 1, len - klen - 1, true);
        if (!key_ok || !val_ok) {
            /* name the parameter by its key, as the client wrote it (printable ASCII only) */
            size_t o = 0;
            for (size_t i = 0; i < klen && o + 1 < cap; i++)
                bad_param[o++] = (p[i] > 0x20 && p[i] < 0x7f) ? p[i] : '?';
            bad_param[o] = '\0';
            if (!o)
                dk_strlcpy(bad_param, "?", cap);
            return;
        }
        if (!amp)
            break;
        p = amp + 1;
    }
}

static void *dk_on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    dk_http_server *srv = cls;
    struct dk_conn *c = dk_conn_of(conn);
    if (c) {
        dk_uri_check(uri, &c->bad_path, c->bad_param, sizeof c->bad_param);
        pthread_mutex_lock(&srv->guard_lock);
        c->busy = true;
        pthread_mutex_unlock(&srv->guard_lock);
        dk_conn_deadline(srv, c, dk_mono_ms() + srv->header_timeout_ms, true);
    }
    return NULL;
}

/* Answers what the guard refuses before anything else runs; false when the request may go on. */
static bool dk_guard_refuses(dk_http_server *srv, struct dk_exchange *x,
                             struct MHD_Connection *conn)
{
    struct dk_conn *c = dk_conn_of(conn);
    if (srv->max_connections > 0 && atomic_load(&srv->nconns) > srv->max_connections) {
        dk_res_header(&x->res, "Retry-After", "1");
        dk_res_header(&x->res, "Connection", "close");
        dk_res_problem(&x->res, DK_E_UNAVAILABLE,
                       "the server has too many open connections; try again shortly");
        return true;
    }
    if (c && c->bad_path) {
        dk_res_problem(&x->res, DK_E_NOT_FOUND,
                       "no such resource (the path holds a NUL byte or invalid UTF-8)");
        return true;
    }
    if (c && c->bad_param[0]) {
        dk_errors e;
        dk_errors_init(&e);
        dk_errors_add(&e, c->bad_param, "holds a NUL byte or invalid UTF-8");
        dk_res_bad_query(&x->res, &e);
        return true;
    }
    /* (a NUL inside a header value cannot be seen here: libmicrohttpd 0.9.75 ends the value
     * at it before any callback runs) */
    return false;
}

/* ---------- libmicrohttpd callbacks ---------- */

static void dk_trace_init(dk_req *req, const char *traceparent)
{
    /* W3C: 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags> (core/trace.c) */
    unsigned char rnd[16];
    bool parent_sampled = false;
    if (dk_traceparent_parse(traceparent, req->trace_id, req->parent_span_id, &parent_sampled)) {
        req->trace_sampled = dk_trace_sample(req->trace_id, parent_sampled);
    } else {
        dk_fast_random(rnd, 16);
        dk_hex(rnd, 16, req->trace_id);
        req->parent_span_id[0] = '\0';
        req->trace_sampled = dk_trace_sample(req->trace_id, -1);
    }
    dk_fast_random(rnd, 8);
    dk_hex(rnd, 8, req->span_id);
}

static const char *dk_client_ip(dk_arena *a, struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char buf[INET6_ADDRSTRLEN] = "unknown";
    if (ci && ci->client_addr) {
        if (ci->client_addr->sa_family == AF_INET) {
            inet_ntop(AF_INET, &((const struct sockaddr_in *)ci->client_addr)->sin_addr, buf,
                      sizeof buf);
        } else if (ci->client_addr->sa_family == AF_INET6) {
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ci->client_addr)->sin6_addr, buf,
                      sizeof buf);
        }
    }
    return dk_arena_strdup(a, buf);
}

/* Every value of a request header, joined with ", " in the order received; NULL when absent. */
struct dk_joined_header {
    dk_arena *arena;
    const char *name;
    char *value;
};

static enum MHD_Result dk_join_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    (void)kind;
    struct dk_joined_header *j = cls;
    if (value && strcasecmp(key, j->name) == 0)
        j->value = j->value ? dk_arena_printf(j->arena, "%s, %s", j->value, value)
                            : dk_arena_strdup(j->arena, value);
    return MHD_YES;
}

/* The client's address behind trusted proxies (core/client_addr.h). */
static const char *dk_forwarded_client(dk_http_server *srv, dk_arena *a, struct MHD_Connection *c,
                                       const char *peer)
{
    dk_fwd_header kind = srv->opt.forwarded_header;
    struct dk_joined_header j = {a, kind == DK_FWD_FORWARDED ? "Forwarded" : "X-Forwarded-For",
                                 NULL};
    (void)MHD_get_connection_values(c, MHD_HEADER_KIND, dk_join_header, &j);
    char *out = dk_arena_alloc(a, DK_IP_STRLEN);
    dk_client_addr_resolve(srv->opt.trusted_proxies, srv->opt.trust_forwarded_for, peer, kind,
                           j.value, out);
    return out;
}

static void dk_exchange_free_buf(void *p)
{
    struct dk_exchange *x = p;
    dk_free(x->buf);
    x->buf = NULL;
}

static void dk_exchange_free(struct dk_exchange *x)
{
    dk_http_server *srv = x->srv;
    dk_arena_free(x->req.arena);
    atomic_fetch_sub(&srv->inflight, 1);
}

/* The route a request will be dispatched to (method and path), or NULL. */
static const struct dk_route_entry *dk_route_lookup(dk_http_server *srv, struct dk_exchange *x)
{
    char *segs[DK_MAX_SEGMENTS + 1];
    int nsegs = dk_split_path(x->req.arena, x->req.path, segs, DK_MAX_SEGMENTS + 1);
    for (int i = 0; nsegs >= 0 && i < srv->nroutes; i++) {
        const struct dk_route_entry *r = &srv->routes[i];
        if (strcmp(r->method, x->req.method) == 0 && dk_route_matches(r, segs, nsegs, NULL))
            return r;
    }
    return NULL;
}

/* Whether the request's body streams to its handler: a DK_ROUTE_BODY_STREAM route and a body
 * of unknown length or declared larger than DK_BODY_STREAM_AFTER. */
static bool dk_body_streams(dk_http_server *srv, const struct dk_route_entry *r, bool chunked,
                            uint64_t declared)
{
    if (!srv->body_stream_routes || !(chunked || declared > DK_BODY_STREAM_AFTER))
        return false;
    return r && (r->flags & DK_ROUTE_BODY_STREAM) != 0;
}

static enum MHD_Result dk_queue(struct dk_exchange *x, struct MHD_Connection *conn);

static enum MHD_Result dk_on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                     const char *method, const char *version,
                                     const char *upload_data, size_t *upload_size, void **con_cls)
{
    dk_http_server *srv = cls;
    struct dk_exchange *x = *con_cls;
    if (!x) {
        dk_arena *a = dk_arena_new();
        x = dk_arena_alloc(a, sizeof *x);
        x->srv = srv;
        x->t0 = dk_mono_s();
        x->req.arena = a;
        x->res.arena = a;
        x->req.conn = conn;
        x->req.app = srv->app;
        x->req.method = dk_static_method(method);
        x->metric_method = x->req.method;
        x->req.path = dk_arena_strdup(a, url);
        const char *rid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
        if (dk_request_id_valid(rid)) {
            x->req.request_id = dk_arena_strdup(a, rid);
        } else {
            char *id = dk_arena_alloc(a, DK_UUID_LEN);
            dk_uuid7_fast(id);
            x->req.request_id = id;
        }
        x->res.request_id = x->req.request_id;
        dk_trace_init(&x->req, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "traceparent"));
        x->req.client_ip = dk_client_ip(a, conn);
        if (srv->opt.trust_forwarded_for || srv->opt.trusted_proxies)
            x->req.client_ip = dk_forwarded_client(srv, a, conn, x->req.client_ip);
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        int64_t declared = 0;
        bool has_cl = cl && dk_parse_i64(cl, 0, INT64_MAX, &declared);
        const char *te =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
        bool chunked = !has_cl && te && strcasestr(te, "chunked");
        /* the route matters before dispatch only for a body: its limit, whether it streams */
        const struct dk_route_entry *route =
            (srv->body_stream_routes || srv->body_limit_routes) && (chunked || declared > 0)
                ? dk_route_lookup(srv, x)
                : NULL;
        x->body_limit = route && route->body_limit ? route->body_limit : srv->opt.body_limit;
        if (has_cl && (uint64_t)declared > x->body_limit)
            x->too_large = true;
        atomic_fetch_add(&srv->inflight, 1);
        *con_cls = x;
        /* the head is complete: no deadline until the response has gone */
        dk_conn_deadline(srv, dk_conn_of(conn), INT64_MAX, false);
        if (dk_guard_refuses(srv, x, conn)) {
            x->dispatched = true;
            return dk_queue(x, conn);
        }
        if (!srv->body_stream_routes ||
            !dk_body_streams(srv, route, chunked, has_cl ? (uint64_t)declared : 0)) {
            if (!x->too_large)
                return MHD_YES;
            /* a declared body over the limit: answered now (413, or whatever the edge says
             * first), without reading it; libmicrohttpd closes the connection afterwards */
            x->dispatched = true;
            x->req.body = "";
            dk_log_set_context(x->req.request_id, x->req.trace_id);
            dk_dispatch(x);
            dk_log_set_context(NULL, NULL);
            return dk_queue(x, conn);
        }
        /* the body streams: dispatch now, the body follows through the handler's callbacks */
        x->bs = true;
        pthread_mutex_init(&x->bs_lock, NULL);
        pthread_mutex_init(&x->bs_cb_lock, NULL);
        dk_arena_defer(a, dk_bs_destroy, x);
        x->dispatched = true;
        x->req.body = NULL;
        dk_log_set_context(x->req.request_id, x->req.trace_id);
        dk_dispatch(x);
        dk_log_set_context(NULL, NULL);
        pthread_mutex_lock(&x->bs_lock);
        bool answered = !x->suspended || x->bs_answered;
        pthread_mutex_unlock(&x->bs_lock);
        if (!answered)
            return MHD_YES;
        /* answered before the body (an edge check, or at once): libmicrohttpd discards the
         * body and closes the connection after the response */
        dk_bs_end(x, false);
        x->bs_finished = true;
        return dk_queue(x, conn);
    }
    if (x->bs) {
        if (*upload_size > 0) {
            dk_bs_upload(x, upload_data, upload_size);
            return MHD_YES;
        }
        /* the final call: the whole body has been read */
        if (!x->bs_finished) {
            x->bs_finished = true;
            if (!x->too_large)
                dk_bs_end(x, true);
        }
        pthread_mutex_lock(&x->bs_lock);
        if (x->suspended && !x->bs_answered) {
            x->bs_waiting = true;
            MHD_suspend_connection(conn);
            pthread_mutex_unlock(&x->bs_lock);
            return MHD_YES; /* dk_req_resume wakes it */
        }
        pthread_mutex_unlock(&x->bs_lock);
        if (x->too_large && !x->stream) {
            x->res.nheaders = x->edge_nheaders; /* the handler's answer no longer applies */
            dk_res_problem(&x->res, DK_E_TOO_LARGE,
                           "the request body exceeds the limit of %zu bytes", x->body_limit);
        }
        return dk_queue(x, conn);
    }
    if (*upload_size > 0) {
        if (!x->too_large) {
            if (x->len + *upload_size > x->body_limit) {
                x->too_large = true;
            } else {
                if (x->len + *upload_size + 1 > x->cap) {
                    size_t ncap = x->cap ? x->cap * 2 : 1024;
                    while (ncap < x->len + *upload_size + 1)
                        ncap *= 2;
                    if (ncap > x->body_limit + 1)
                        ncap = x->body_limit + 1;
                    if (!x->buf)
                        dk_arena_defer(x->req.arena, dk_exchange_free_buf, x);
                    x->buf = dk_realloc(x->buf, ncap);
                    x->cap = ncap;
                }
                memcpy(x->buf + x->len, upload_data, *upload_size);
                x->len += *upload_size;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }

    /* The whole request is here: handle it and queue the response. */
    if (!x->dispatched) {
        x->dispatched = true;
        if (x->buf) {
            x->buf[x->len] = '\0';
            x->req.body = x->buf;
            x->req.body_len = x->len;
        } else {
            x->req.body = "";
        }
        dk_log_set_context(x->req.request_id, x->req.trace_id);
        dk_dispatch(x);
        dk_log_set_context(NULL, NULL);
        if (x->suspended)
            return MHD_YES; /* answered later, after dk_req_resume */
    }
    return dk_queue(x, conn);
}

static enum MHD_Result dk_queue(struct dk_exchange *x, struct MHD_Connection *conn)
{
    dk_http_server *srv = x->srv;
    if (x->res.status == 0)
        dk_res_problem(&x->res, DK_E_INTERNAL, "the handler produced no response");

    struct MHD_Response *r =
        x->stream ? dk_stream_response(x->stream, conn)
                  : MHD_create_response_from_buffer(x->res.body_len, (void *)x->res.body,
                                                    MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    if (x->res.content_type)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, x->res.content_type);
    MHD_add_response_header(r, "X-Request-Id", x->req.request_id);
    for (int i = 0; i < x->res.nheaders; i++)
        MHD_add_response_header(r, x->res.header_names[i], x->res.header_values[i]);
    if (atomic_load(&srv->draining))
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)x->res.status, r);
    MHD_destroy_response(r);
    return ret;
}

#define DK_FAILURE_LOG_PER_S 20

/* A per-process budget of failure log lines per second; reports what it suppressed. */
static bool dk_failure_log_admit(void)
{
    static atomic_llong second = 0;
    static atomic_int used = 0, dropped = 0;
    long long now = dk_mono_ms() / 1000;
    long long was = atomic_load(&second);
    if (now != was && atomic_compare_exchange_strong(&second, &was, now)) {
        int d = atomic_exchange(&dropped, 0);
        atomic_store(&used, 0);
        if (d > 0)
            dk_log_warn("%d more failed request(s) in the last second were not logged", d);
    }
    if (atomic_fetch_add(&used, 1) < DK_FAILURE_LOG_PER_S)
        return true;
    atomic_fetch_add(&dropped, 1);
    return false;
}

static void dk_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                            enum MHD_RequestTerminationCode toe)
{
    dk_http_server *srv = cls;
    struct dk_exchange *x = *con_cls;
    if (!x)
        return;
    bool orphan = false;
    if (x->bs) {
        dk_bs_end(x, false); /* the client left mid-body (nothing runs when it has ended) */
        pthread_mutex_lock(&x->bs_lock);
        orphan = x->suspended && !x->bs_answered;
        x->bs_paused = x->bs_waiting = false; /* the connection is gone: nothing to resume */
        pthread_mutex_unlock(&x->bs_lock);
    }
    double elapsed = dk_mono_s() - x->t0;
    /* 499: the client went away before a response (while a handler still answers, its res is
     * not ours to read) */
    int status = !orphan && x->res.status ? x->res.status : 499;
    dk_metrics_http(x->metric_service ? x->metric_service : srv->opt.process_name, x->metric_method,
                    x->metric_route ? x->metric_route : "unmatched", status, elapsed);
    dk_trace_server_span(
        x->req.trace_id, x->req.span_id, x->req.parent_span_id, x->req.trace_sampled,
        x->metric_method, x->metric_route ? x->metric_route : "unmatched",
        x->metric_service ? x->metric_service : srv->opt.process_name, status, elapsed);
    /* the access log: a line per request at info (log.access); failures as warnings (503:
     * shed load, a dependency away) or errors, at most DK_FAILURE_LOG_PER_S lines a second so
     * an outage or a storm cannot flood the log; without log.access the rest are debug lines */
    dk_log_level lvl = status == 503 ? DK_LOG_WARN : status >= 500 ? DK_LOG_ERROR : DK_LOG_DEBUG;
    if (lvl > DK_LOG_DEBUG && !dk_failure_log_admit())
        lvl = DK_LOG_DEBUG;
    if (lvl == DK_LOG_DEBUG && srv->opt.access_log)
        lvl = DK_LOG_INFO;
    if (dk_log_enabled(lvl)) {
        char extra[768];
        char epath[256], eroute[160];
        dk_json_escape(epath, sizeof epath, x->req.path ? x->req.path : "");
        dk_json_escape(eroute, sizeof eroute, x->metric_route ? x->metric_route : "unmatched");
        snprintf(extra, sizeof extra,
                 ",\"method\":\"%s\",\"route\":\"%s\",\"path\":\"%s\",\"status\":%d,"
                 "\"duration_ms\":%.3f,\"client_ip\":\"%s\"",
                 x->metric_method, eroute, epath, status, elapsed * 1000, x->req.client_ip);
        dk_log_set_context(x->req.request_id, x->req.trace_id);
        dk_trace_enter(x->req.trace_id, x->req.span_id, x->req.trace_sampled);
        dk_log_with(lvl, extra, "request completed");
        dk_log_set_context(NULL, NULL);
    }
    *con_cls = NULL;
    atomic_fetch_add(&srv->completed, 1);
    /* a kept-alive connection has DK_IDLE_TIMEOUT_S for its next request head */
    struct dk_conn *dc = dk_conn_of(conn);
    if (dc) {
        pthread_mutex_lock(&srv->guard_lock);
        dc->busy = false;
        dc->answered++;
        dc->deadline_ms = dk_mono_ms() + DK_IDLE_TIMEOUT_S * 1000;
        pthread_mutex_unlock(&srv->guard_lock);
    }
    if (orphan) {
        /* the handler still owns the request: dk_req_resume frees it (unless it came
         * meanwhile). Nothing here touches the exchange after the lock. */
        pthread_mutex_lock(&x->bs_lock);
        bool still = !x->bs_answered;
        x->bs_orphaned = still;
        pthread_mutex_unlock(&x->bs_lock);
        if (still)
            return;
    }
    dk_exchange_free(x);
}

static void dk_mhd_log(void *cls, const char *fmt, va_list ap) DK_PRINTF(2, 0);
static void dk_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    /* a client that leaves mid-response (an event stream closed by the browser) is routine */
    if (strstr(msg, "no longer available for sending") || strstr(msg, "Connection reset"))
        dk_log_debug("http: %s", msg);
    else
        dk_log_warn("http: %s", msg);
}

/* The housekeeping thread: closes connections whose request head is late (the connection
 * guard), and trims the heap. After a burst the heap keeps what its connections and requests freed (connection pools are
 * heap blocks): every DK_TRIM_EVERY_MS (half a second), if requests finished since the last
 * look and none is in flight now, malloc_trim gives the free pages back, so the resident set
 * falls back to idle size after the load (a gateway held 22 MiB after a 200-connection
 * storm). */
#define DK_TRIM_EVERY_MS 500

static void *dk_trimmer_main(void *arg)
{
    dk_http_server *srv = arg;
    unsigned long long seen = 0;
    pthread_mutex_lock(&srv->trim_lock);
    while (!srv->trim_stop) {
        struct timespec ts = dk_mono_deadline(DK_TRIM_EVERY_MS);
        pthread_cond_timedwait(&srv->trim_cond, &srv->trim_lock, &ts);
        if (srv->trim_stop)
            break;
        dk_conns_reap(srv);
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

static void dk_trimmer_start(dk_http_server *srv)
{
    pthread_mutex_init(&srv->trim_lock, NULL);
    dk_cond_init_monotonic(&srv->trim_cond);
    srv->trim_stop = false;
    srv->trimmer_running = pthread_create(&srv->trimmer, NULL, dk_trimmer_main, srv) == 0;
}

static void dk_trimmer_stop(dk_http_server *srv)
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

/* The listening socket: made here rather than by libmicrohttpd so that a taken port is an error
 * naming it (libmicrohttpd's address reuse would set SO_REUSEPORT and let a second process share
 * the port silently). SO_REUSEPORT only when server.reuse_port asks for it. */
static int dk_listen_socket(dk_http_server *srv, char *err, size_t errcap)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[16];
    snprintf(port, sizeof port, "%d", srv->opt.port);
    int gai = getaddrinfo(srv->opt.host, port, &hints, &res);
    if (gai != 0 || !res) {
        snprintf(err, errcap, "cannot resolve the listen address %s (server.host): %s",
                 srv->opt.host, gai_strerror(gai));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1, e = 0;
    if (fd < 0) {
        e = errno;
    } else {
        /* SO_REUSEADDR: restart while old connections sit in TIME_WAIT (on Linux it never lets
         * two listeners share a port) */
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (srv->opt.reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
            e = errno;
        if (!e && res->ai_family == AF_INET6)
            (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (!e && bind(fd, res->ai_addr, res->ai_addrlen) != 0)
            e = errno;
        if (!e && listen(fd, 1024) != 0)
            e = errno;
    }
    freeaddrinfo(res);
    if (e == 0)
        return fd;
    if (fd >= 0)
        close(fd);
    if (e == EADDRINUSE)
        snprintf(err, errcap,
                 "port %d on %s is already in use (another docket?): choose another with "
                 "--server.port=PORT or DOCKET_SERVER_PORT=PORT",
                 srv->opt.port, srv->opt.host);
    else if (e == EACCES)
        snprintf(err, errcap,
                 "not allowed to listen on port %d (ports below 1024 need privileges): choose "
                 "another with --server.port=PORT or DOCKET_SERVER_PORT=PORT",
                 srv->opt.port);
    else if (e == EADDRNOTAVAIL)
        snprintf(err, errcap, "cannot listen on %s: no such local address (server.host)",
                 srv->opt.host);
    else
        snprintf(err, errcap, "cannot listen on %s:%d: %s", srv->opt.host, srv->opt.port,
                 strerror(e));
    return -1;
}

dk_status dk_http_start(dk_http_server *srv)
{
    char *err = srv->start_error;
    size_t errcap = sizeof srv->start_error;
    err[0] = '\0';
    int fd = dk_listen_socket(srv, err, errcap);
    if (fd < 0)
        return DK_E_UNAVAILABLE;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME;
    int threads = srv->opt.threads > 0 ? srv->opt.threads : 8;
    srv->header_timeout_ms = srv->opt.header_timeout_ms > 0 ? srv->opt.header_timeout_ms : 10000;
    srv->max_connections = srv->opt.max_connections > 0 ? srv->opt.max_connections : 10000;
    /* libmicrohttpd's own limit lies above ours, so that the requests beyond ours are answered
     * 503 rather than cut; the file limit must hold both */
    unsigned hard_limit = (unsigned)srv->max_connections + (unsigned)srv->max_connections / 8 + 16;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < hard_limit + 256) {
        rlim_t want = hard_limit + 256;
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < hard_limit + 256) {
            hard_limit = rl.rlim_cur > 512 ? (unsigned)rl.rlim_cur - 256 : 256;
            if ((unsigned)srv->max_connections > hard_limit)
                srv->max_connections = (int)hard_limit;
            dk_log_info("the open-file limit (%llu) allows %u connections, fewer than "
                        "server.max_connections",
                        (unsigned long long)rl.rlim_cur, hard_limit);
        }
    }
    srv->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, dk_on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, dk_mhd_log, NULL,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)threads,
        MHD_OPTION_NOTIFY_COMPLETED, dk_on_completed, srv, MHD_OPTION_NOTIFY_CONNECTION,
        dk_on_connection, srv, MHD_OPTION_URI_LOG_CALLBACK, dk_on_uri, srv,
        MHD_OPTION_CONNECTION_LIMIT, hard_limit, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)(srv->opt.max_connections_per_ip > 0 ? srv->opt.max_connections_per_ip : 0),
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)DK_IDLE_TIMEOUT_S,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(16 * 1024), MHD_OPTION_END);
    if (!srv->daemon) {
        close(fd);
        snprintf(err, errcap, "cannot start the HTTP server on %s:%d", srv->opt.host,
                 srv->opt.port);
        return DK_E_INTERNAL;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    srv->bound_port = srv->opt.port;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        srv->bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                         : ((struct sockaddr_in *)&ss)->sin_port);
    dk_trimmer_start(srv);
    return DK_OK;
}

void dk_http_drain(dk_http_server *srv)
{
    if (!srv->daemon || atomic_load(&srv->draining))
        return;
    atomic_store(&srv->draining, true);
    MHD_socket fd = MHD_quiesce_daemon(srv->daemon);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    dk_streams_end_all(srv);
    /* in-flight requests, and connections whose request is still arriving or may be on the
     * wire (dk_conns_pending), finish within the drain timeout */
    int64_t deadline = dk_mono_ms() + srv->opt.drain_timeout_ms;
    while ((atomic_load(&srv->inflight) > 0 || dk_conns_pending(srv) > 0) &&
           dk_mono_ms() < deadline) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    int left = atomic_load(&srv->inflight) + dk_conns_pending(srv);
    if (left > 0)
        dk_log_warn("drain timeout: %d request(s) still in flight are cut off", left);
}

void dk_http_stop(dk_http_server *srv)
{
    if (!srv->daemon)
        return;
    dk_http_drain(srv);
    /* requests answered later (offloaded) must have been resumed: the offload pool finishes
     * its jobs first, each of which resumes its connection */
    if (srv->offload) {
        dk_workpool_free(srv->offload);
        srv->offload = NULL;
    }
    MHD_stop_daemon(srv->daemon);
    srv->daemon = NULL;
    dk_trimmer_stop(srv);
}
