/* http.h — the HTTP core: a libmicrohttpd server, the router, requests and responses.
 * The server owns the edge duties every route shares: request ids, trace context, body limits,
 * Content-Type checks, bearer-token authentication and revocation checks, per-client rate
 * limits, problem+json errors, metrics and access logs. Handlers receive a dk_req whose memory
 * (the arena) lives until the response has been sent, and fill a dk_res. A handler runs on one
 * of the server's threads and may block (database calls); it must not keep pointers into the
 * request after it returns. */
#ifndef DK_HTTP_H
#define DK_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct dk_arena dk_arena;
typedef struct dk_app dk_app;
typedef struct dk_req dk_req;
typedef struct dk_res dk_res;
typedef struct dk_http_server dk_http_server;
struct MHD_Connection;

typedef void (*dk_handler_fn)(dk_req *req, dk_res *res);

enum {
    DK_ROUTE_AUTH = 1u << 0,        /* requires a valid, unrevoked access token */
    DK_ROUTE_RATE_LIMIT = 1u << 1,  /* counted against rate_limiting.* per client IP */
    DK_ROUTE_INTERNAL = 1u << 2,    /* service-to-service only: a token with role "service" */
    DK_ROUTE_OPS = 1u << 3,         /* /health, /ready, /metrics: no edge limits */
    DK_ROUTE_OFFLOAD = 1u << 4,     /* runs on the offload pool (CPU-heavy: password hashing) */
    DK_ROUTE_STREAM = 1u << 5,      /* a long-lived streaming response (SSE): proxies apply no
                                      response timeout once its headers have arrived */
    DK_ROUTE_BODY_STREAM = 1u << 6, /* a large request body streams to the handler (proxies):
                                       see dk_req_body_stream */
};
/* A body limit of the route's own, in MiB (1-255), in the top byte of its flags, instead of
 * server.body_limit: for routes whose contract fixes a size (avatars: 2 MiB). A larger body is
 * answered 413 before the handler runs, by the gateway and by the service alike. */
#define DK_ROUTE_BODY_MIB(n)       ((unsigned)(n) << 24)
#define DK_ROUTE_BODY_LIMIT(flags) ((size_t)(((flags) >> 24) & 0xffu) * 1024u * 1024u)

typedef struct dk_route {
    const char *method;  /* "GET", "POST", ... */
    const char *pattern; /* relative to the service prefix: "/sessions/{id}" */
    dk_handler_fn handler;
    unsigned flags;
} dk_route;

/* Who is calling, from a verified access token. */
typedef struct dk_identity {
    const char *user_id;
    const char *session_id;
    const char *role;
    int64_t expires_at_ms;
} dk_identity;

#define DK_MAX_PARAMS 4

struct dk_req {
    dk_arena *arena;
    const char *method;
    const char *path; /* without the query string */
    const char *body; /* NUL-terminated copy of the body, "" when none */
    size_t body_len;
    const char *request_id;
    char trace_id[33];
    char span_id[17];
    char parent_span_id[17];
    bool trace_sampled; /* the request's spans are recorded (core/trace.h) */
    const char *client_ip;
    const dk_identity *identity; /* set on DK_ROUTE_AUTH routes */
    void *service;               /* the state of the service owning the route */
    const char *service_name;
    const char *route_pattern; /* full pattern, for metrics */
    int nparams;
    const char *param_names[DK_MAX_PARAMS];
    const char *param_values[DK_MAX_PARAMS];
    struct MHD_Connection *conn;
    dk_app *app;
};

#define DK_MAX_RES_HEADERS 32

struct dk_res {
    int status;
    const char *content_type;
    const char *body;
    size_t body_len;
    int nheaders;
    const char *header_names[DK_MAX_RES_HEADERS];
    const char *header_values[DK_MAX_RES_HEADERS];
    dk_arena *arena;
    const char *request_id;
};

/* Request accessors. */
const char *dk_req_param(const dk_req *req, const char *name); /* path parameter */
const char *dk_req_header(const dk_req *req, const char *name);
const char *dk_req_query(const dk_req *req, const char *name);
/* The query string re-encoded from the parsed arguments ("" when none, no leading '?'). */
const char *dk_req_query_string(dk_req *req);
/* Calls fn for every request header, in the order received. */
void dk_req_each_header(const dk_req *req,
                        void (*fn)(void *ctx, const char *name, const char *value), void *ctx);
/* Parses a JSON object body. On failure (415 wrong Content-Type, 400 malformed JSON, 422 not an
 * object) it has already written the problem into res and returns the status. */
dk_status dk_req_json(dk_req *req, dk_res *res, json_t **ret_obj) DK_MUSTCHECK;

/* Answering later (the gateway): the handler calls dk_req_suspend and returns without a
 * response; another thread fills res and calls dk_req_resume, after which the response is
 * sent. Between the two, the request's arena stays alive. */
void dk_req_suspend(dk_req *req);
void dk_req_resume(dk_req *req);
/* True when the client has closed its side of the connection (checked without blocking); for
 * work that waited in a queue. DK_ROUTE_OFFLOAD handlers are skipped for such requests (499). */
bool dk_req_client_gone(const dk_req *req);

/* Streaming request bodies (DK_ROUTE_BODY_STREAM routes). A request on such a route whose body
 * is of unknown length (chunked) or declared larger than DK_BODY_STREAM_AFTER is dispatched as
 * soon as its headers are in, after the same edge duties (routing, CORS, rate limits, 413 on a
 * declared Content-Length over server.body_limit, authentication); req->body is then NULL and
 * dk_req_body_streaming is true. Any other request on the route is buffered and dispatched
 * whole, as on every other route. The handler of a streaming body registers callbacks with
 * dk_req_body_stream and answers later (dk_req_suspend ... dk_req_resume); it may answer before
 * the body has ended. Callbacks run on the connection's thread:
 *   on_chunk gets the body in order, as it arrives, and returns how much it took; when it took
 *     less, the connection stops reading (suspended, memory bounded) and the rest is offered
 *     again after dk_req_body_resume (thread-safe; harmless when nothing is held back);
 *   on_end(ctx, true) at the end of the body; on_end(ctx, false) when the body passes
 *     server.body_limit (the core then answers 413 unless the response has started, whatever
 *     the handler's answer) or the client goes away. Nothing runs after on_end.
 * dk_req_resume drops the callbacks (none runs after it has returned; the rest of the body is
 * read and discarded before the response goes out) and must not be called from inside them.
 * The request (and its arena) lives until dk_req_resume even when the client has gone. */
#define DK_BODY_STREAM_AFTER (64u * 1024u)
typedef size_t (*dk_body_chunk_fn)(void *ctx, const char *data, size_t len);
typedef void (*dk_body_end_fn)(void *ctx, bool ok);
bool dk_req_body_streaming(const dk_req *req);
void dk_req_body_stream(dk_req *req, dk_body_chunk_fn on_chunk, dk_body_end_fn on_end, void *ctx);
void dk_req_body_resume(dk_req *req);

/* Streaming responses (Server-Sent Events, proxied bodies). A handler — or, for a suspended
 * request, the thread that answers it — calls dk_res_stream instead of filling a body: the
 * status and headers go out first, then whatever any thread writes, until dk_stream_end. The
 * connection waits (suspended, no thread held) while nothing is buffered. The stream is
 * reference-counted between the connection and the producer: the producer owns one reference
 * from dk_res_stream until dk_stream_release. A drain ends at once the open streams of
 * DK_ROUTE_STREAM routes (event streams: their clients reconnect elsewhere); other streamed
 * bodies count as in-flight requests and may finish within the drain timeout. Writes are
 * thread-safe. On a DK_ROUTE_STREAM route whose handler answers at once (no dk_req_suspend, no
 * streamed body), the request and its arena are freed as soon as the response is queued —
 * right after the handler returns — while the stream goes on: its producer keeps copies of
 * what it needs, never pointers into req, res or the arena. */
typedef struct dk_stream dk_stream;
/* on_drained (may be NULL) runs, on the connection's thread, when the buffer falls to zero
 * after having reached the high-water mark (256 KiB; for flow control), and once more when the
 * client leaves an open stream (the producer then finds it closed). It never runs after
 * dk_stream_release has returned, and must not call dk_stream_release itself. */
dk_stream *dk_res_stream(dk_res *res, int status, const char *content_type,
                         void (*on_drained)(void *ctx), void *ctx);
/* Appends data; false when the client has gone away or the stream has ended (the producer
 * should stop). A write that would leave more than 1 MiB unsent ends the stream with an error
 * (the connection is cut): a client that stops reading cannot grow it without bound. */
bool dk_stream_write(dk_stream *s, const void *data, size_t len);
/* Bytes written but not yet sent to the client. */
size_t dk_stream_buffered(dk_stream *s);
/* No more data: the response ends once the buffer is sent. err = true cuts the connection
 * instead (the client sees a truncated response). Idempotent. */
void dk_stream_end(dk_stream *s, bool err);
/* True once the client is gone or the stream has ended. */
bool dk_stream_closed(dk_stream *s);
/* Drops the producer's reference (accepts NULL); ends the stream first if it is still open. */
void dk_stream_release(dk_stream *s);
/* Writes to any stream of the process so far that found its connection waiting: sent straight
 * to the socket (an idle event stream's small frame) or by resuming the connection. */
void dk_stream_write_counts(unsigned long long *direct, unsigned long long *resumed);

/* Responses. */
void dk_res_header(dk_res *res, const char *name, const char *value); /* copied */
void dk_res_json(dk_res *res, int status, json_t *body);              /* steals body */
struct dk_jw;
void dk_res_jw(dk_res *res, int status, struct dk_jw *w); /* the writer's text; empties it */
void dk_res_empty(dk_res *res, int status);
void dk_res_text(dk_res *res, int status, const char *content_type, const char *body, size_t len);
void dk_res_problem(dk_res *res, dk_status st, const char *detail_fmt, ...) DK_PRINTF(3, 4);
/* A problem with extension members merged in (steals ext). */
void dk_res_problem_ext(dk_res *res, dk_status st, json_t *ext, const char *detail_fmt, ...)
    DK_PRINTF(4, 5);

/* Validation errors (422): collect, then send. */
typedef struct dk_errors {
    json_t *list;
} dk_errors;
void dk_errors_init(dk_errors *e);
void dk_errors_add(dk_errors *e, const char *field, const char *fmt, ...) DK_PRINTF(3, 4);
bool dk_errors_any(const dk_errors *e);
/* Sends 422 with the collected errors and releases them. */
void dk_res_validation(dk_res *res, dk_errors *e);
/* The same for invalid query parameters: 400 with the collected errors. */
void dk_res_bad_query(dk_res *res, dk_errors *e);
void dk_errors_release(dk_errors *e);

/* A readiness check: DK_OK when the dependency answers; else writes a short reason. */
typedef dk_status (*dk_ready_fn)(void *ctx, char *reason, size_t cap);

typedef struct dk_http_options {
    const char *host;
    int port;
    int threads;
    size_t body_limit;
    int drain_timeout_ms;
    const char *process_name;    /* "all", "auth", ... for the ops routes' metrics label */
    const char *cors_origins;    /* comma-separated allowed origins, "*" for any; NULL/"" = off */
    int64_t edge_rate_limit_rps; /* per client IP per second on service routes; 0 = none */
    bool trust_forwarded_for;    /* take the client IP from X-Forwarded-For (behind a proxy) */
    bool reuse_port;             /* SO_REUSEPORT: several processes share the port (opt-in) */
    bool access_log;             /* an info line per request (else failures only) */
    int header_timeout_ms;       /* a request head must be complete this long after the
                                    connection or its request line (0: 10 s) */
    int max_connections;         /* open connections; beyond it requests get 503 (0: 10000) */
    int max_connections_per_ip;  /* per client address; beyond it refused at accept (0: none) */
    const struct dk_proxy_list *trusted_proxies; /* peers whose forwarded header is read; NULL */
    int forwarded_header;                        /* a dk_fwd_header: which header they set */
    int offload_workers; /* threads for DK_ROUTE_OFFLOAD handlers (0: run inline) */
    int offload_queue;   /* such requests waiting beyond the workers; more → 503 */
} dk_http_options;

dk_http_server *dk_http_new(const dk_http_options *opt, dk_app *app);
void dk_http_free(dk_http_server *srv); /* accepts NULL; stops first if running */
/* Mounts a service's routes under prefix; state is handed to its handlers as req->service. */
void dk_http_mount(dk_http_server *srv, const char *service_name, const char *prefix,
                   const dk_route *routes, size_t nroutes, void *state);
void dk_http_add_ready_check(dk_http_server *srv, const char *name, dk_ready_fn fn, void *ctx);
/* Binds and starts. A taken port is an error (SO_REUSEPORT only with opt.reuse_port); then
 * dk_http_start_error says why in a sentence for the user (the port, and how to choose another). */
dk_status dk_http_start(dk_http_server *srv) DK_MUSTCHECK;
const char *dk_http_start_error(const dk_http_server *srv);
int dk_http_port(const dk_http_server *srv); /* the bound port (after start) */
/* Graceful stop, first half: readiness turns 503, the listener closes, in-flight requests
 * finish (bounded by the drain timeout). Requests still suspended afterwards must be resumed
 * (e.g. by closing the component that answers them) before dk_http_stop. */
void dk_http_drain(dk_http_server *srv);
/* Drains (if not done yet), then stops the server. */
void dk_http_stop(dk_http_server *srv);

#endif
