/* metrics.h — the process's Prometheus registry: HTTP request counters and latency histograms
 * recorded by the HTTP core for every route, process_* metrics read from /proc, and gauges that
 * modules contribute through collectors (pool sizes, queue lag). Rendering produces the text
 * exposition format 0.0.4, or OpenMetrics with exemplars (trace ids) on the latency buckets. Thread-safe. Label values must be static or long-lived strings. */
#ifndef DK_METRICS_H
#define DK_METRICS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct dk_arena dk_arena;
typedef struct dk_metrics_out dk_metrics_out;

/* Records one finished request. service, method and route must outlive the process (route
 * patterns, string literals). */
void dk_metrics_http(const char *service, const char *method, const char *route, int status,
                     double seconds);
/* The same, and with a sampled request's trace id (32 hex digits; NULL: none) kept as the
 * exemplar of the latency bucket it fell in (the latest one per bucket), shown in the
 * OpenMetrics exposition. */
void dk_metrics_http_traced(const char *service, const char *method, const char *route, int status,
                            double seconds, const char *trace_id);

/* Sets docket_queue_lag_seconds{service,queue}: how far a queue's consumer is behind (the age
 * of the oldest event not yet handled, 0 when it is caught up). service and queue must be
 * long-lived strings; up to 8 queues per process. */
void dk_metrics_queue_lag(const char *service, const char *queue, double seconds);

/* A collector writes gauge/counter families at render time. */
typedef void (*dk_metrics_collector)(void *ctx, dk_metrics_out *out);
void dk_metrics_add_collector(dk_metrics_collector fn, void *ctx);
void dk_metrics_clear_collectors(void);
/* Writes "# HELP", "# TYPE" once per family; call before the family's samples. */
void dk_metrics_family(dk_metrics_out *out, const char *name, const char *type, const char *help);
/* One sample line: name{labels} value; labels is "" or `a="x",b="y"` (already escaped). */
void dk_metrics_sample(dk_metrics_out *out, const char *name, const char *labels, double value);

/* The whole exposition, in the arena: text format 0.0.4. */
char *dk_metrics_render(dk_arena *a, size_t *ret_len);
/* Text 0.0.4, or OpenMetrics 1.0.0 (counter families without _total, histogram buckets with
 * their exemplars, "# EOF"). */
char *dk_metrics_render_as(dk_arena *a, size_t *ret_len, bool openmetrics);

#endif
