/* http_client.h — the outbound HTTP port: asynchronous calls to other services (the gateway's
 * upstreams) over keep-alive connection pools, plus a blocking probe for health checks.
 * A call's memory (request and response) lives in the arena the caller gives; `done` runs on
 * the client's own thread once the call has finished, successfully or not. The client is
 * thread-safe: submit from any thread. */
#ifndef DK_PORTS_HTTP_CLIENT_H
#define DK_PORTS_HTTP_CLIENT_H

#include <stddef.h>

#include "core/status.h"

typedef struct dk_arena dk_arena;
typedef struct dk_http_client dk_http_client;

#define DK_HTTP_CALL_MAX_HEADERS 32

typedef struct dk_http_call {
    /* request */
    dk_arena *arena;
    const char *method;
    const char *url;
    int nheaders;
    const char *headers[DK_HTTP_CALL_MAX_HEADERS]; /* "Name: value" lines */
    const char *body;
    size_t body_len;
    int connect_timeout_ms;
    int timeout_ms;
    size_t max_response; /* a larger response body fails the call (DK_E_BAD_GATEWAY) */
    /* outcome: error is DK_OK when a response arrived (any status), else DK_E_BAD_GATEWAY
     * (refused, reset, malformed), DK_E_TIMEOUT (connect or response timeout) */
    dk_status error;
    int status;
    char *response;
    size_t response_len;
    int nresp_headers;
    const char *resp_names[DK_HTTP_CALL_MAX_HEADERS];
    const char *resp_values[DK_HTTP_CALL_MAX_HEADERS];
    char error_text[128];
    void (*done)(struct dk_http_call *call);
    void *ctx;
} dk_http_call;

typedef struct dk_http_client_options {
    int max_connections; /* kept alive across all hosts */
} dk_http_client_options;

struct dk_http_client_ops {
    dk_status (*open)(const dk_http_client_options *opt, dk_http_client **ret) DK_MUSTCHECK;
    void (*close)(dk_http_client *c); /* finishes nothing: fails pending calls */
    dk_status (*submit)(dk_http_client *c, dk_http_call *call) DK_MUSTCHECK;
    /* Blocking GET; returns the HTTP status, or 0 when no response arrived in time. */
    int (*probe)(dk_http_client *c, const char *url, int timeout_ms);
};

extern const struct dk_http_client_ops dk_http_client_curl_ops;

#endif
