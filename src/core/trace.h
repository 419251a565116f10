/* trace.h — distributed tracing: spans with W3C trace context, exported as OTLP/HTTP protobuf
 * (or JSON).
 * The HTTP core records a server span per request; adapters open child spans (SQL, Redis,
 * outbound HTTP, Argon2) under the thread's current context, which the core sets while a
 * request's handler runs (dk_trace_enter) and which the event bus restores from a traceparent.
 * Finished spans go to a bounded queue drained by one background exporter thread: a full queue
 * drops the span, and while the collector fails no span is recorded at all (both counted in
 * docket_otel_spans_dropped_total), so recording never blocks nor grows memory. The exporter
 * posts through the outbound HTTP port (ports/http_client.h) whose client the caller passes
 * in; the core includes no HTTP library. Without an endpoint (or with sampling off) every call
 * here is a cheap no-op and dk_span_start returns NULL; every dk_span_* function accepts NULL.
 * A span belongs to whoever started it until dk_span_end (which frees it); it may end on
 * another thread. Thread-safe. */
#ifndef DK_TRACE_H
#define DK_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct dk_span dk_span;
struct dk_http_client_ops;
typedef struct dk_http_client dk_http_client;

/* OTLP SpanKind values. */
typedef enum {
    DK_SPAN_INTERNAL = 1,
    DK_SPAN_SERVER = 2,
    DK_SPAN_CLIENT = 3,
    DK_SPAN_PRODUCER = 4,
    DK_SPAN_CONSUMER = 5,
} dk_span_kind;

#define DK_TRACEPARENT_LEN 56 /* "00-<32>-<16>-<2>" plus NUL */

typedef struct dk_trace_options {
    const char *endpoint;            /* OTLP/HTTP base URL ("/v1/traces" is appended); "" = off */
    const char *service_name;        /* service.name */
    const char *resource_attributes; /* "k=v,k2=v2" (OTEL_RESOURCE_ATTRIBUTES), may be NULL */
    const char *headers;             /* "k=v,k2=v2" (OTEL_EXPORTER_OTLP_HEADERS), may be NULL */
    const char *protocol;            /* "http/protobuf" (NULL: the default) or "http/json" */
    const char *sampler;             /* OTEL_TRACES_SAMPLER name; NULL = parentbased_always_on */
    double sampler_ratio;            /* for the *traceidratio samplers, 0..1 */
    int max_queue;                   /* spans waiting for export; more are dropped */
    int batch_size;                  /* spans per export request */
    int64_t schedule_delay_ms;       /* the longest a span waits before an export starts */
    int64_t export_timeout_ms;       /* one export request */
    /* the client exports are posted through (needed with an endpoint); the caller keeps it
     * open until dk_trace_stop has returned */
    const struct dk_http_client_ops *http_ops;
    dk_http_client *http;
} dk_trace_options;

/* Validates the options and, with an endpoint, starts the exporter. DK_E_VALIDATION (with a
 * sentence in err) for an unknown sampler, a bad ratio or malformed headers/attributes;
 * DK_E_INTERNAL without a client to export through or when the thread cannot start. */
dk_status dk_trace_start(const dk_trace_options *opt, char *err, size_t cap) DK_MUSTCHECK;
/* Exports what is queued (bounded by the export timeout), stops the exporter thread. */
void dk_trace_stop(void);
bool dk_trace_enabled(void);

/* Sampling decision for a new request: parent_sampled is -1 without a parent, else 0/1. */
bool dk_trace_sample(const char *trace_id, int parent_sampled);

/* The thread's current context: children started on this thread hang under span_id. The
 * strings are copied. dk_trace_leave clears it. */
void dk_trace_enter(const char *trace_id, const char *span_id, bool sampled);
void dk_trace_leave(void);
/* The current ids (NULL outside a context), for log lines. */
const char *dk_trace_current_trace_id(void);
const char *dk_trace_current_span_id(void);
/* Writes the current context as a W3C traceparent; false when there is none. */
bool dk_trace_current_traceparent(char out[DK_TRACEPARENT_LEN]);
/* Parses a traceparent into the thread's current context (a remote parent); false (context
 * cleared) when it is missing or malformed. */
bool dk_trace_enter_traceparent(const char *traceparent);
/* Parses "00-<trace>-<span>-<flags>"; false when malformed (W3C rules). */
bool dk_traceparent_parse(const char *tp, char trace_id[33], char span_id[17], bool *ret_sampled);

/* A child of the current context, or NULL (no sampled context, tracing off). */
dk_span *dk_span_start(const char *name, dk_span_kind kind);
/* Makes s the thread's current context (children hang under it) until dk_span_pop. */
void dk_span_push(dk_span *s);
/* Restores the context that was current before dk_span_push(s). Call before dk_span_end. */
void dk_span_pop(dk_span *s);
void dk_span_attr_str(dk_span *s, const char *key, const char *value); /* key: a literal */
void dk_span_attr_int(dk_span *s, const char *key, int64_t value);
void dk_span_error(dk_span *s, const char *message); /* status ERROR */
/* The span as a traceparent (for an outbound request it stands for); false for NULL. */
bool dk_span_traceparent(const dk_span *s, char out[DK_TRACEPARENT_LEN]);
void dk_span_end(dk_span *s); /* queues it for export and frees it */

/* The server span of a finished request (the HTTP core), with its own ids. */
void dk_trace_server_span(const char *trace_id, const char *span_id, const char *parent_span_id,
                          bool sampled, const char *method, const char *route, const char *service,
                          int status, double seconds);

/* A span name for a SQL statement: its verb and first table ("SELECT tasks"), never values. */
void dk_trace_sql_name(const char *sql, char *out, size_t cap);

/* A client span for a SQL statement (db.system = system), named by dk_trace_sql_name. */
dk_span *dk_span_sql(const char *system, const char *sql);

/* The event bus: a consumer span for handling one event of type (messaging.system = system),
 * a child of the current context (restored from the event's traceparent), made current while
 * the handler runs; dk_span_consume_end pops and ends it, marking a failed handler. */
dk_span *dk_span_consume(const char *type, const char *system);
void dk_span_consume_end(dk_span *s, dk_status st);

/* An outbound HTTP call as a client span "<peer> <method>" ("S3 PUT", "webhook POST");
 * dk_span_http_end records the status (0: no response) and ends it. */
dk_span *dk_span_http(const char *peer, const char *method);
void dk_span_http_end(dk_span *s, bool transport_ok, long status);

/* Counters, for tests and metrics. */
uint64_t dk_trace_dropped(void);
uint64_t dk_trace_exported(void);

#endif
