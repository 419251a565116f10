/* http_client.h — the outbound HTTP port: asynchronous calls to other services (the gateway's
 * upstreams) over keep-alive connection pools, plus a blocking probe for health checks.
 * A call's request strings must live until the call starts; its response headers are
 * allocated in the arena the caller gives (on the client's thread, before on_headers or done).
 * `done` runs on the client's own thread once the call has finished, successfully or not;
 * until then the caller keeps the call alive. The client is thread-safe: submit, resume and
 * cancel from any thread.
 * Streaming (on_headers/on_data set): a response that has not arrived whole together with its
 * headers is delivered as it comes — on_headers, then on_data per piece — instead of being
 * buffered; on_data may pause the call (flow control) until resume.
 * Streaming request bodies (on_read set): the body is pulled piece by piece as it is sent;
 * on_read may pause the call until resume when it has nothing yet.
 * Calls to addresses a user chose (webhooks) are `isolated` and pinned (`connect_to`) to the
 * addresses their caller checked; split_url reads a URL the way the client will, so that what
 * a caller checks is where the call goes. */
#ifndef DK_PORTS_HTTP_CLIENT_H
#define DK_PORTS_HTTP_CLIENT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/status.h"

typedef struct dk_arena dk_arena;
typedef struct dk_http_client dk_http_client;

#define DK_HTTP_CALL_MAX_HEADERS 32

/* What on_data did with a piece of the body. */
typedef enum dk_http_data_action {
    DK_HTTP_DATA_OK,    /* consumed */
    DK_HTTP_DATA_PAUSE, /* not consumed: pause the call; the same data comes again after resume */
    DK_HTTP_DATA_ABORT, /* not consumed: end the call (done reports it cancelled) */
} dk_http_data_action;

#define DK_HTTP_READ_PAUSE ((size_t)-1)
#define DK_HTTP_READ_ABORT ((size_t)-2)

typedef struct dk_http_call {
    /* request */
    dk_arena *arena;
    const char *method;
    const char *url;
    int nheaders;
    const char *headers[DK_HTTP_CALL_MAX_HEADERS]; /* "Name: value" lines */
    const char *body;                              /* copied when the call starts */
    size_t body_len;
    /* a streamed request body instead (optional): on_read (on the client's thread) copies up
     * to max bytes into buf and returns how many, 0 at the end of the body, DK_HTTP_READ_PAUSE
     * when it has nothing yet (the upload waits until resume) or DK_HTTP_READ_ABORT (the call
     * fails, cancelled). body_size: the length when known (sent as Content-Length), -1 (sent
     * chunked). With on_read, headers_timeout_ms bounds the upstream's inactivity instead:
     * taking no body while some is ready, then sending no headers after the body's end. */
    size_t (*on_read)(struct dk_http_call *call, char *buf, size_t max);
    long long body_size;
    /* optional: "host:port:addr[,addr...]" (IPv6 addresses in brackets): connect to these
     * addresses for host:port instead of resolving host */
    const char *connect_to;
    /* a fresh connection, closed after the call, and no proxy from the environment */
    bool isolated;
    /* a stream that may stay open for hours (SSE) rather than a call that ends soon: the client
     * holds it with less memory (a small receive buffer) and keeps it apart from the short
     * calls, which thousands of open streams must not slow down */
    bool long_lived;
    int connect_timeout_ms;
    int timeout_ms;         /* the whole response (headers and body); 0: no limit */
    int headers_timeout_ms; /* status and headers; 0: only timeout_ms applies */
    size_t max_response;    /* a larger buffered body fails the call (DK_E_BAD_GATEWAY) */
    /* streaming (optional, both or neither): on_headers runs once the status and headers are
     * in (status and resp_* set) and the body is still arriving; on_data then gets the body
     * piece by piece (the first piece may hold what came with the headers). Both run on the
     * client's thread. A body that arrives whole with its headers, or a small one of declared
     * length, skips both: done gets it in `response`, as for a call without streaming. */
    void (*on_headers)(struct dk_http_call *call);
    dk_http_data_action (*on_data)(struct dk_http_call *call, const char *data, size_t len);
    /* outcome: error is DK_OK when a response arrived whole (any status), else
     * DK_E_BAD_GATEWAY (refused, reset, malformed, cut short), DK_E_TIMEOUT (connect, headers
     * or response timeout), DK_E_UNAVAILABLE (cancelled — by cancel, or on_data said ABORT —
     * or the client closed). `cancelled` tells the first apart; `streamed` says whether
     * on_headers ran (then `response` is NULL and an error means the body was cut after the
     * headers). */
    dk_status error;
    int status;
    bool streamed;
    bool cancelled;
    char *response;
    size_t response_len;
    int nresp_headers;
    const char *resp_names[DK_HTTP_CALL_MAX_HEADERS];
    const char *resp_values[DK_HTTP_CALL_MAX_HEADERS];
    char error_text[128];
    void (*done)(struct dk_http_call *call);
    /* optional: asked on the client's thread about once a second while no answer has begun to
     * stream; true cancels the call (done follows, `cancelled` set) — its caller has gone. */
    bool (*abandoned)(struct dk_http_call *call);
    void *ctx;
    atomic_uint wake; /* the client's: resume/cancel requests from other threads */
} dk_http_call;

/* What made a URL unreadable to the client (split_url). */
typedef enum dk_url_error {
    DK_URL_OK,
    DK_URL_MALFORMED,  /* not an absolute URL */
    DK_URL_NO_HOST,    /* no host part */
    DK_URL_BAD_SCHEME, /* a scheme the client does not speak */
    DK_URL_BAD_PORT,   /* a port that is not a number in 1..65535 */
} dk_url_error;

#define DK_URL_TEXT_MAX 2049 /* a part's bytes, NUL included */

/* A URL split as the client reads it. */
typedef struct dk_url_parts {
    dk_url_error error;
    char scheme[16];
    char host[DK_URL_TEXT_MAX]; /* as in the URL (an IPv6 literal in brackets); "" when none */
    bool userinfo;              /* user, password or login options present */
    bool zone;                  /* an IPv6 zone identifier present */
    int port;                   /* explicit or the scheme's default; 0: not a valid port */
} dk_url_parts;

typedef struct dk_http_client_options {
    int max_connections; /* kept alive across all hosts */
} dk_http_client_options;

struct dk_http_client_ops {
    dk_status (*open)(const dk_http_client_options *opt, dk_http_client **ret) DK_MUSTCHECK;
    void (*close)(dk_http_client *c); /* finishes nothing: fails pending calls */
    dk_status (*submit)(dk_http_client *c, dk_http_call *call) DK_MUSTCHECK;
    /* Resume a call paused by on_data or on_read, or cancel a call (done follows, `cancelled` set).
     * Thread-safe and asynchronous (they take effect on the client's thread); the call must
     * be alive while they run; once done has run they are ignored. */
    void (*resume)(dk_http_client *c, dk_http_call *call);
    void (*cancel)(dk_http_client *c, dk_http_call *call);
    /* Blocking GET; returns the HTTP status, or 0 when no response arrived in time. Probes of
     * one client run one at a time and keep their connections alive between them. */
    int (*probe)(dk_http_client *c, const char *url, int timeout_ms);
    /* Splits an absolute URL (at most DK_URL_TEXT_MAX - 1 bytes) the way calls read it; needs
     * no client. DK_OK (ret->error DK_URL_OK; the host may still be "" and the port 0),
     * DK_E_VALIDATION (ret->error says why), DK_E_INTERNAL (out of memory). */
    dk_status (*split_url)(const char *url, dk_url_parts *ret) DK_MUSTCHECK;
};

/* The outbound client registered in dk_app for calls to addresses users chose (webhooks). */
#define DK_HTTP_CLIENT "http.client"

#endif
