/* server.c — the libmicrohttpd server: the listening socket, the daemon and its callbacks
 * (a request's life from its head to its completion), graceful drain and stop.
 * Contract: dk_http_new/mount/start/drain/stop/free in core/http.h. server_on_request takes a
 * request in three steps (head, body chunks, the final call), dispatches it through the router
 * and queues its response; server_on_completed records it (metrics, span, access log) and frees its
 * exchange — unless a streamed body's handler still owns it (then dk_req_resume frees it).
 * Locking: the callbacks run on libmicrohttpd's threads, one connection on one thread at a time;
 * a streamed body's flags are read under x->bs_lock, the guard's entry under srv->guard_lock. */
#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/http/http_internal.h"
#include "core/alloc.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "core/trace.h"
#include "core/banned.h"

static const char *server_method_static(const char *m)
{
    static const char *known[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(m, known[i]) == 0)
            return known[i];
    return "OTHER";
}

dk_http_server *dk_http_new(const dk_http_options *opt, dk_app *app)
{
    dk_http_server *srv = DK_NEW(dk_http_server);
    srv->opt = *opt;
    srv->opt.host = dk_strdup(opt->host ? opt->host : "0.0.0.0");
    srv->opt.process_name = dk_strdup(opt->process_name ? opt->process_name : "docket");
    srv->opt.cors_origins =
        opt->cors_origins && *opt->cors_origins ? dk_strdup(opt->cors_origins) : NULL;
    srv->app = app;
    srv->listen_fd = srv->acceptor_wake = -1;
    atomic_init(&srv->draining, false);
    atomic_init(&srv->inflight, 0);
    pthread_mutex_init(&srv->streams_lock, NULL);
    pthread_mutex_init(&srv->guard_lock, NULL);
    atomic_init(&srv->nconns, 0);
    atomic_init(&srv->handing, 0);
    atomic_init(&srv->reaped, 0);
    if (opt->offload_workers > 0)
        srv->offload = dk_workpool_new(opt->offload_workers, opt->offload_queue);
    dk_http_mount(srv, srv->opt.process_name, "", dk_http_ops_routes,
                  sizeof dk_http_ops_routes / sizeof dk_http_ops_routes[0], srv);
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

const char *dk_http_start_error(const dk_http_server *srv)
{
    return srv->start_error;
}

int dk_http_port(const dk_http_server *srv)
{
    return srv->bound_port;
}

void dk_http_server_exchange_free(struct dk_http_exchange *x)
{
    dk_http_server *srv = x->srv;
    dk_arena_free(x->req.arena);
    atomic_fetch_sub(&srv->inflight, 1);
}

static enum MHD_Result server_queue(struct dk_http_exchange *x, struct MHD_Connection *conn);

/* What server_on_completed reports of a request (metrics, span, access log). */
struct server_done {
    dk_http_server *srv;
    double t0;
    const char *service, *route, *method; /* the route table's, or static */
    const char *path, *request_id, *client_ip;
    const char *trace_id, *span_id, *parent_span_id;
    bool sampled;
    int status;
};

/* A long-lived stream (an event stream) lives for hours on a connection: once its response is
 * queued, its request's arena (an 8 KiB block at least, and whatever the handler left in it)
 * is freed, and the connection keeps this small record instead. The connection's con_cls then
 * points at it with its lowest bit set (allocations are 16-byte aligned; an exchange never has
 * that bit). Only for requests answered by their handler at once, without a streamed body:
 * a suspended request's answering thread (the gateway) may still read its arena. */
struct server_detached {
    struct server_done d;
    dk_stream *stream;
    char trace_id[33], span_id[17], parent_span_id[17];
    char text[]; /* path, request id, client address */
};

#define DK_DETACHED_TAG ((uintptr_t)1)

static void server_detach(struct dk_http_exchange *x, void **con_cls)
{
    if (!x->stream || x->suspended || x->bs || !dk_http_stream_detach(x->stream))
        return;
    const char *path = x->req.path ? x->req.path : "";
    size_t lp = strlen(path) + 1, lr = strlen(x->req.request_id) + 1,
           lc = strlen(x->req.client_ip) + 1;
    struct server_detached *dd = dk_malloc(sizeof *dd + lp + lr + lc);
    char *t = dd->text;
    memcpy(t, path, lp);
    memcpy(t + lp, x->req.request_id, lr);
    memcpy(t + lp + lr, x->req.client_ip, lc);
    memcpy(dd->trace_id, x->req.trace_id, sizeof dd->trace_id);
    memcpy(dd->span_id, x->req.span_id, sizeof dd->span_id);
    memcpy(dd->parent_span_id, x->req.parent_span_id, sizeof dd->parent_span_id);
    dd->stream = x->stream;
    dd->d = (struct server_done){
        .srv = x->srv,
        .t0 = x->t0,
        .service = x->metric_service,
        .route = x->metric_route,
        .method = x->metric_method,
        .path = t,
        .request_id = t + lp,
        .client_ip = t + lp + lr,
        .trace_id = dd->trace_id,
        .span_id = dd->span_id,
        .parent_span_id = dd->parent_span_id,
        .sampled = x->req.trace_sampled,
        .status = x->res.status,
    };
    *con_cls = (void *)((uintptr_t)dd | DK_DETACHED_TAG);
    /* the arena goes (its stream cleanup leaves the detached stream alone), and the request
     * no longer counts as in flight: the housekeeper trims the heap while thousands of idle
     * streams are open (a drain still waits for their connections: dk_http_guard_pending) */
    dk_http_server_exchange_free(x);
}

static enum MHD_Result server_on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                         const char *method, const char *version,
                                         const char *upload_data, size_t *upload_size,
                                         void **con_cls)
{
    dk_http_server *srv = cls;
    struct dk_http_exchange *x = *con_cls;
    if (!x) {
        dk_arena *a = dk_arena_new();
        x = dk_arena_alloc(a, sizeof *x);
        x->srv = srv;
        x->t0 = dk_mono_s();
        x->req.arena = a;
        x->res.arena = a;
        x->req.conn = conn;
        x->req.app = srv->app;
        x->req.method = server_method_static(method);
        x->http11 = version && strcmp(version, MHD_HTTP_VERSION_1_1) == 0;
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
        dk_http_edge_trace_init(&x->req,
                                MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "traceparent"));
        x->req.client_ip = dk_http_edge_client_ip(a, conn);
        if (srv->opt.trust_forwarded_for || srv->opt.trusted_proxies)
            x->req.client_ip = dk_http_edge_forwarded_client(srv, a, conn, x->req.client_ip);
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        int64_t declared = 0;
        bool has_cl = cl && dk_parse_i64(cl, 0, INT64_MAX, &declared);
        const char *te =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
        bool chunked = !has_cl && te && strcasestr(te, "chunked");
        /* the route matters before dispatch only for a body: its limit, whether it streams */
        const struct dk_http_route_entry *route =
            (srv->body_stream_routes || srv->body_limit_routes) && (chunked || declared > 0)
                ? dk_http_router_lookup(srv, x)
                : NULL;
        x->body_limit = route && route->body_limit ? route->body_limit : srv->opt.body_limit;
        if (has_cl && (uint64_t)declared > x->body_limit)
            x->too_large = true;
        atomic_fetch_add(&srv->inflight, 1);
        *con_cls = x;
        /* the head is complete: no deadline until the response has gone */
        dk_http_guard_deadline_set(srv, dk_http_guard_conn_of(conn), INT64_MAX, false);
        if (dk_http_guard_refuses(srv, x, conn)) {
            x->dispatched = true;
            return server_queue(x, conn);
        }
        if (!srv->body_stream_routes ||
            !dk_http_body_streams(srv, route, chunked, has_cl ? (uint64_t)declared : 0)) {
            if (!x->too_large)
                return MHD_YES;
            /* a declared body over the limit: answered now (413, or whatever the edge says
             * first), without reading it; libmicrohttpd closes the connection afterwards */
            x->dispatched = true;
            x->req.body = "";
            dk_log_set_context(x->req.request_id, x->req.trace_id);
            dk_http_router_dispatch(x);
            dk_log_set_context(NULL, NULL);
            return server_queue(x, conn);
        }
        /* the body streams: dispatch now, the body follows through the handler's callbacks */
        x->bs = true;
        pthread_mutex_init(&x->bs_lock, NULL);
        pthread_mutex_init(&x->bs_cb_lock, NULL);
        dk_arena_defer(a, dk_http_body_stream_destroy, x);
        x->dispatched = true;
        x->req.body = NULL;
        dk_log_set_context(x->req.request_id, x->req.trace_id);
        dk_http_router_dispatch(x);
        dk_log_set_context(NULL, NULL);
        pthread_mutex_lock(&x->bs_lock);
        bool answered = !x->suspended || x->bs_answered;
        pthread_mutex_unlock(&x->bs_lock);
        if (!answered)
            return MHD_YES;
        /* answered before the body (an edge check, or at once): libmicrohttpd discards the
         * body and closes the connection after the response */
        dk_http_body_stream_end(x, false);
        x->bs_finished = true;
        return server_queue(x, conn);
    }
    if (x->bs) {
        if (*upload_size > 0) {
            dk_http_body_stream_upload(x, upload_data, upload_size);
            return MHD_YES;
        }
        /* the final call: the whole body has been read */
        if (!x->bs_finished) {
            x->bs_finished = true;
            if (!x->too_large)
                dk_http_body_stream_end(x, true);
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
        return server_queue(x, conn);
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
                        dk_arena_defer(x->req.arena, dk_http_body_buf_free, x);
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
        dk_http_router_dispatch(x);
        dk_log_set_context(NULL, NULL);
        if (x->suspended)
            return MHD_YES; /* answered later, after dk_req_resume */
    }
    enum MHD_Result ret = server_queue(x, conn);
    if (ret == MHD_YES)
        server_detach(x, con_cls);
    return ret;
}

static enum MHD_Result server_queue(struct dk_http_exchange *x, struct MHD_Connection *conn)
{
    dk_http_server *srv = x->srv;
    if (x->res.status == 0)
        dk_res_problem(&x->res, DK_E_INTERNAL, "the handler produced no response");

    struct MHD_Response *r =
        x->stream ? dk_http_stream_response(x->stream, conn,
                                            x->http11 && strcmp(x->req.method, "GET") == 0 &&
                                                x->res.status >= 200 && x->res.status != 204 &&
                                                x->res.status != 304)
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
static bool server_failure_log_admit(void)
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

/* Metrics, span and access log line of a finished request; the connection is ready for the
 * next one. */
static void server_report(const struct server_done *d, struct MHD_Connection *conn)
{
    dk_http_server *srv = d->srv;
    int status = d->status;
    double elapsed = dk_mono_s() - d->t0;
    const char *service = d->service ? d->service : srv->opt.process_name;
    const char *route = d->route ? d->route : "unmatched";
    dk_metrics_http_traced(service, d->method, route, status, elapsed,
                           d->sampled ? d->trace_id : NULL);
    dk_trace_server_span(d->trace_id, d->span_id, d->parent_span_id, d->sampled, d->method, route,
                         service, status, elapsed);
    /* the access log: a line per request at info (log.access); failures as warnings (503:
     * shed load, a dependency away) or errors, at most DK_FAILURE_LOG_PER_S lines a second so
     * an outage or a storm cannot flood the log; without log.access the rest are debug lines */
    dk_log_level lvl = status == 503 ? DK_LOG_WARN : status >= 500 ? DK_LOG_ERROR : DK_LOG_DEBUG;
    if (lvl > DK_LOG_DEBUG && !server_failure_log_admit())
        lvl = DK_LOG_DEBUG;
    if (lvl == DK_LOG_DEBUG && srv->opt.access_log)
        lvl = DK_LOG_INFO;
    if (dk_log_enabled(lvl)) {
        char extra[768];
        char epath[256], eroute[160];
        dk_json_escape(epath, sizeof epath, d->path ? d->path : "");
        dk_json_escape(eroute, sizeof eroute, route);
        snprintf(extra, sizeof extra,
                 ",\"method\":\"%s\",\"route\":\"%s\",\"path\":\"%s\",\"status\":%d,"
                 "\"duration_ms\":%.3f,\"client_ip\":\"%s\"",
                 d->method, eroute, epath, status, elapsed * 1000, d->client_ip);
        dk_log_set_context(d->request_id, d->trace_id);
        dk_trace_enter(d->trace_id, d->span_id, d->sampled);
        dk_log_with(lvl, extra, "request completed");
        dk_log_set_context(NULL, NULL);
    }
    atomic_fetch_add(&srv->completed, 1);
    /* a kept-alive connection has DK_HTTP_IDLE_TIMEOUT_S for its next request head */
    dk_http_guard_request_done(srv, dk_http_guard_conn_of(conn));
}

static void server_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                                enum MHD_RequestTerminationCode toe)
{
    dk_http_server *srv = cls;
    if (!*con_cls)
        return;
    if ((uintptr_t)*con_cls & DK_DETACHED_TAG) {
        struct server_detached *dd = (void *)((uintptr_t)*con_cls & ~DK_DETACHED_TAG);
        *con_cls = NULL;
        dk_http_stream_detached_done(dd->stream);
        server_report(&dd->d, conn);
        dk_free(dd);
        return;
    }
    struct dk_http_exchange *x = *con_cls;
    bool orphan = false;
    if (x->bs) {
        dk_http_body_stream_end(
            x, false); /* the client left mid-body (nothing runs when it has ended) */
        pthread_mutex_lock(&x->bs_lock);
        orphan = x->suspended && !x->bs_answered;
        x->bs_paused = x->bs_waiting = false; /* the connection is gone: nothing to resume */
        pthread_mutex_unlock(&x->bs_lock);
    }
    /* 499: the client went away before a response (while a handler still answers, its res is
     * not ours to read) */
    struct server_done d = {
        .srv = srv,
        .t0 = x->t0,
        .service = x->metric_service,
        .route = x->metric_route,
        .method = x->metric_method,
        .path = x->req.path,
        .request_id = x->req.request_id,
        .client_ip = x->req.client_ip,
        .trace_id = x->req.trace_id,
        .span_id = x->req.span_id,
        .parent_span_id = x->req.parent_span_id,
        .sampled = x->req.trace_sampled,
        .status = !orphan && x->res.status ? x->res.status : 499,
    };
    server_report(&d, conn);
    *con_cls = NULL;
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
    dk_http_server_exchange_free(x);
}

static void server_mhd_log(void *cls, const char *fmt, va_list ap) DK_PRINTF(2, 0);
static void server_mhd_log(void *cls, const char *fmt, va_list ap)
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

/* The listening socket: made here rather than by libmicrohttpd so that a taken port is an error
 * naming it (libmicrohttpd's address reuse would set SO_REUSEPORT and let a second process share
 * the port silently). SO_REUSEPORT only when server.reuse_port asks for it. */
static int server_listen_socket(dk_http_server *srv, char *err, size_t errcap)
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
    int fd = server_listen_socket(srv, err, errcap);
    if (fd < 0)
        return DK_E_UNAVAILABLE;
    /* the connections come from the acceptor (acceptor.c), which spreads them over the pool */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_NO_LISTEN_SOCKET;
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
        flags, 0, NULL, NULL, server_on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, server_mhd_log,
        NULL, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)threads, MHD_OPTION_NOTIFY_COMPLETED,
        server_on_completed, srv, MHD_OPTION_NOTIFY_CONNECTION, dk_http_guard_on_connection, srv,
        MHD_OPTION_URI_LOG_CALLBACK, dk_http_guard_on_uri, srv, MHD_OPTION_CONNECTION_LIMIT,
        hard_limit, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)(srv->opt.max_connections_per_ip > 0 ? srv->opt.max_connections_per_ip : 0),
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)DK_HTTP_IDLE_TIMEOUT_S,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(16 * 1024), MHD_OPTION_END);
    if (!srv->daemon) {
        close(fd);
        snprintf(err, errcap, "cannot start the HTTP server on %s:%d", srv->opt.host,
                 srv->opt.port);
        return DK_E_INTERNAL;
    }
    if (!dk_http_acceptor_start(srv, fd)) {
        MHD_stop_daemon(srv->daemon);
        srv->daemon = NULL;
        close(fd);
        snprintf(err, errcap, "cannot start the HTTP server's accepting thread");
        return DK_E_INTERNAL;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    srv->bound_port = srv->opt.port;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        srv->bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                         : ((struct sockaddr_in *)&ss)->sin_port);
    dk_http_housekeeper_start(srv);
    return DK_OK;
}

void dk_http_drain(dk_http_server *srv)
{
    if (!srv->daemon || atomic_load(&srv->draining))
        return;
    atomic_store(&srv->draining, true);
    dk_http_acceptor_stop(srv); /* new connections are refused from here on */
    dk_http_stream_end_all(srv);
    /* in-flight requests, and connections whose request is still arriving or may be on the
     * wire (dk_http_guard_pending), finish within the drain timeout */
    int64_t deadline = dk_mono_ms() + srv->opt.drain_timeout_ms;
    while ((atomic_load(&srv->inflight) > 0 || dk_http_guard_pending(srv) > 0) &&
           dk_mono_ms() < deadline) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    int left = atomic_load(&srv->inflight) + dk_http_guard_pending(srv);
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
    dk_http_housekeeper_stop(srv);
}
