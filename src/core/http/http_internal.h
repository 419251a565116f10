/* http_internal.h — what the rooms of the HTTP core (src/core/http/) share, and nobody else.
 * The public contract is core/http.h; this header holds the server's state, the per-request
 * exchange and the connection-guard entry, and the functions one room calls in another.
 *
 * The locks, and who takes them (never two at once, except as noted):
 *  - srv->guard_lock (guard.c): the connection list, each entry's fd, deadline, busy/answered
 *    counters and reaped flag. Taken by the guard, the housekeeper and server_on_completed.
 *  - srv->streams_lock (stream.c): the list of open response streams. A stream's own lock
 *    (s->lock) may be taken inside it (dk_http_stream_end_all), never the other way round.
 *  - x->bs_lock / x->bs_cb_lock (body.c): a streamed request body's flags / its running
 *    callback. bs_cb_lock is never held while taking bs_lock.
 *  - srv->trim_lock (housekeeper.c): the housekeeping thread's stop flag and wake-up; the reaper
 *    it calls takes guard_lock after trim_lock.
 * Everything else in dk_http_server is written before dk_http_start (routes, options) or is
 * atomic (draining, inflight, nconns, handing, reaped, completed).
 * Names: what one room exports to another is dk_http_<room>_<noun>_<verb> (the room is the
 * file: server, acceptor, router, edge, body, stream, offload, guard, housekeeper, ops) and the
 * shared types and limits are dk_http_* / DK_HTTP_*; a room's static helpers are
 * <room>_<noun>_<verb>.
 * The public names in core/http.h (dk_http_*, dk_req_*, dk_res_*, dk_stream_*, dk_errors_*)
 * are the contract and keep their names. */
#ifndef DK_HTTP_INTERNAL_H
#define DK_HTTP_INTERNAL_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/app.h"
#include "core/arena.h"
#include "core/http.h"
#include "core/workpool.h"

#define DK_HTTP_MAX_ROUTES   128
#define DK_HTTP_MAX_SEGMENTS 12
#define DK_HTTP_MAX_READY    8

struct dk_http_route_entry {
    const char *service_name;
    const char *method;
    char *pattern; /* full pattern, e.g. /api/v1/auth/sessions/{id} */
    int nsegs;
    char *segs[DK_HTTP_MAX_SEGMENTS];
    dk_handler_fn handler;
    unsigned flags;
    size_t body_limit; /* 0: the server's */
    void *state;
};

struct dk_http_server {
    dk_http_options opt;
    dk_app *app;
    struct MHD_Daemon *daemon;
    /* the acceptor (acceptor.c): the listening socket, its thread and the eventfd that stops it */
    int listen_fd, acceptor_wake;
    pthread_t acceptor;
    bool acceptor_running;
    /* connections handed to libmicrohttpd whose worker has not yet taken them (its
     * NOTIFY_STARTED, where the guard learns of them): a drain waits for them too */
    atomic_int handing;
    int nroutes;
    struct dk_http_route_entry routes[DK_HTTP_MAX_ROUTES];
    int nready;
    struct {
        const char *name;
        dk_ready_fn fn;
        void *ctx;
    } ready[DK_HTTP_MAX_READY];
    atomic_bool draining;
    atomic_int inflight;
    int bound_port;
    char start_error[256]; /* why dk_http_start failed, for the user */
    /* the connection guard (see "the connection guard" below) */
    pthread_mutex_t guard_lock;
    /* every open connection, on one of two lists: those with a deadline (waiting for a request
     * head), which the housekeeper walks, and those without (a request under way — an event
     * stream for hours), which it need not */
    struct dk_http_conn *conns, *conns_held;
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
struct dk_http_exchange {
    dk_req req;
    dk_res res;
    dk_identity identity;
    char *buf; /* body being received (malloc'd, capped at body_limit) */
    size_t len, cap;
    size_t body_limit; /* the route's, else the server's */
    bool too_large;
    bool http11; /* the request line said HTTP/1.1 (a response of unknown length is chunked) */
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

/* ---------- the connection guard (guard.c) ---------- */

#define DK_HTTP_IDLE_TIMEOUT_S 60

struct dk_http_conn {
    struct dk_http_conn *prev, *next;
    int fd;
    int64_t deadline_ms; /* close unless a request head completes by then; INT64_MAX = none */
    int64_t opened_ms;
    unsigned answered; /* requests completed on it */
    bool busy;         /* a request line has arrived, its response is not complete yet */
    bool reaped;
    bool held; /* on srv->conns_held (deadline_ms == INT64_MAX) */
    /* the current request line (connection thread only) */
    bool bad_path;
    char bad_param[64]; /* a query parameter with a NUL or invalid UTF-8; "" = none */
};

/* ---------- what one room calls in another ---------- */

/* server.c */
void dk_http_server_exchange_free(struct dk_http_exchange *x);

/* body.c: streamed and buffered request bodies */
void dk_http_body_stream_end(struct dk_http_exchange *x, bool ok);
void dk_http_body_stream_destroy(void *p);
void dk_http_body_stream_upload(struct dk_http_exchange *x, const char *data, size_t *upload_size);
void dk_http_body_buf_free(void *p);
bool dk_http_body_streams(dk_http_server *srv, const struct dk_http_route_entry *r, bool chunked,
                          uint64_t declared);

/* stream.c: reference-counted response streams */
/* chunked: libmicrohttpd will send the body in chunks (HTTP/1.1, a response with a body) */
struct MHD_Response *dk_http_stream_response(dk_stream *s, struct MHD_Connection *conn,
                                             bool chunked);
/* A long-lived stream's exchange is about to be freed while the connection goes on: true when
 * the stream is long-lived (DK_ROUTE_STREAM); its exchange's reference is then dropped by
 * dk_http_stream_detached_done (when the connection is done) instead of with the request's
 * arena. */
bool dk_http_stream_detach(dk_stream *s);
void dk_http_stream_detached_done(dk_stream *s);
void dk_http_stream_end_all(dk_http_server *srv);

/* router.c */
const struct dk_http_route_entry *dk_http_router_lookup(dk_http_server *srv,
                                                        struct dk_http_exchange *x);
void dk_http_router_dispatch(struct dk_http_exchange *x);

/* edge.c: the checks every route shares */
bool dk_http_edge_route_rate_limit(struct dk_http_exchange *x);
bool dk_http_edge_authenticate(struct dk_http_exchange *x, bool internal);
bool dk_http_edge_cors(struct dk_http_exchange *x, const char *allow_methods);
bool dk_http_edge_rate_limit(struct dk_http_exchange *x);
void dk_http_edge_trace_init(dk_req *req, const char *traceparent);
const char *dk_http_edge_client_ip(dk_arena *a, struct MHD_Connection *c);
const char *dk_http_edge_forwarded_client(dk_http_server *srv, dk_arena *a,
                                          struct MHD_Connection *c, const char *peer);

/* offload.c */
void dk_http_offload_run(void *arg);

/* guard.c */
struct dk_http_conn *dk_http_guard_conn_of(struct MHD_Connection *conn);
void dk_http_guard_deadline_set(dk_http_server *srv, struct dk_http_conn *c, int64_t at,
                                bool sooner_only);
/* Its request is complete: the connection waits DK_HTTP_IDLE_TIMEOUT_S for the next one. */
void dk_http_guard_request_done(dk_http_server *srv, struct dk_http_conn *c);
void dk_http_guard_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                                 enum MHD_ConnectionNotificationCode code);
void dk_http_guard_reap(dk_http_server *srv);
int dk_http_guard_pending(dk_http_server *srv);
void *dk_http_guard_on_uri(void *cls, const char *uri, struct MHD_Connection *conn);
bool dk_http_guard_refuses(dk_http_server *srv, struct dk_http_exchange *x,
                           struct MHD_Connection *conn);

/* acceptor.c */
bool dk_http_acceptor_start(dk_http_server *srv, int listen_fd);
void dk_http_acceptor_stop(dk_http_server *srv);

/* housekeeper.c */
void dk_http_housekeeper_start(dk_http_server *srv);
void dk_http_housekeeper_stop(dk_http_server *srv);

/* ops.c: /health, /ready, /metrics, /openapi.* (mounted by dk_http_new) */
extern const dk_route dk_http_ops_routes[5];

#endif
