#include "core/metrics.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/banned.h"

static const double dk_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                    0.1,    0.25,  0.5,    1,     2.5,  5,     10};
#define DK_NBUCKETS       (sizeof dk_buckets / sizeof dk_buckets[0])
#define DK_SERIES_SLOTS   1024
#define DK_MAX_COLLECTORS 16
#define DK_MAX_QUEUES     8

/* The request series are recorded without the lock: a slot is filled once, under the lock,
 * and published by storing its route last (release); readers that see the route see the rest.
 * Counts are relaxed atomic adds. A histogram counts each request in one bucket (the last one
 * is +Inf) and its sum in nanoseconds; the exposition accumulates them. */
struct dk_labels {
    _Atomic(const char *) route;
    const char *service, *method;
    int status; /* 0 for histograms */
};
struct dk_series {
    struct dk_labels l; /* first: a slot's address is its labels' */
    atomic_uint_fast64_t count;
};
/* The latest exemplar of a bucket (OpenMetrics): a sampled request's trace id, its latency and
 * when it finished. Written under a per-bucket sequence lock taken with one compare-and-swap (a
 * writer that finds it taken skips: an exemplar is a sample, not a count); the renderer keeps a
 * copy only when the sequence did not move while it read. */
struct dk_exemplar {
    atomic_uint_fast32_t seq;      /* odd while written; 0: none yet */
    atomic_uint_fast64_t trace[4]; /* 32 hex digits */
    atomic_uint_fast64_t ns;
    atomic_uint_fast64_t at_ms; /* unix time */
};
struct dk_hist {
    struct dk_labels l;
    atomic_uint_fast64_t buckets[DK_NBUCKETS + 1];
    atomic_uint_fast64_t sum_ns;
    struct dk_exemplar ex[DK_NBUCKETS + 1];
};

static struct {
    pthread_mutex_t lock;
    struct dk_series series[DK_SERIES_SLOTS];
    struct dk_hist hists[DK_SERIES_SLOTS];
    int ncollectors;
    dk_metrics_collector collectors[DK_MAX_COLLECTORS];
    void *collector_ctx[DK_MAX_COLLECTORS];
    int nlags;
    struct {
        const char *service, *queue;
        double seconds;
    } lags[DK_MAX_QUEUES];
} dk_reg = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* FNV-1a over the label texts (not their addresses: equal labels are one series). */
static unsigned dk_hash_labels(const char *a, const char *b, const char *c, int d)
{
    uint32_t h = 2166136261u;
    const char *parts[] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        for (const char *p = parts[i]; p && *p; p++)
            h = (h ^ (unsigned char)*p) * 16777619u;
        h = (h ^ 0xff) * 16777619u;
    }
    h = (h ^ (uint32_t)d) * 16777619u;
    return h % DK_SERIES_SLOTS;
}

static bool dk_same(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* The slot of (service, method, route, status) in table (series or histograms, stride bytes
 * apart), filled under the lock on first sight; NULL when the table is full. */
static void *dk_slot(void *table, size_t stride, unsigned h, const char *service,
                     const char *method, const char *route, int status)
{
    for (unsigned i = 0; i < DK_SERIES_SLOTS; i++) {
        unsigned char *slot = (unsigned char *)table + (size_t)((h + i) % DK_SERIES_SLOTS) * stride;
        struct dk_labels *s = (struct dk_labels *)slot;
        const char *r = atomic_load_explicit(&s->route, memory_order_acquire);
        if (!r) {
            pthread_mutex_lock(&dk_reg.lock);
            r = atomic_load_explicit(&s->route, memory_order_relaxed);
            if (!r) {
                s->service = dk_strdup(service);
                s->method = dk_strdup(method);
                s->status = status;
                r = dk_strdup(route);
                atomic_store_explicit(&s->route, r, memory_order_release);
            }
            pthread_mutex_unlock(&dk_reg.lock);
        }
        if (dk_same(r, route) && dk_same(s->service, service) && dk_same(s->method, method) &&
            s->status == status)
            return slot;
    }
    return NULL;
}

static void dk_exemplar_put(struct dk_exemplar *e, const char *trace_id, uint64_t ns)
{
    uint_fast32_t seq = atomic_load_explicit(&e->seq, memory_order_relaxed);
    if ((seq & 1) || !atomic_compare_exchange_strong_explicit(
                         &e->seq, &seq, seq + 1, memory_order_acquire, memory_order_relaxed))
        return; /* another request is writing it */
    uint64_t t[4];
    memcpy(t, trace_id, sizeof t);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    for (int i = 0; i < 4; i++)
        atomic_store_explicit(&e->trace[i], t[i], memory_order_relaxed);
    atomic_store_explicit(&e->ns, ns, memory_order_relaxed);
    atomic_store_explicit(&e->at_ms, (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000,
                          memory_order_relaxed);
    atomic_store_explicit(&e->seq, seq + 2, memory_order_release);
}

/* A consistent copy of the exemplar into trace (33 bytes); false when there is none (or it was
 * being written). */
static bool dk_exemplar_get(struct dk_exemplar *e, char trace[33], uint64_t *ns, uint64_t *at_ms)
{
    uint_fast32_t seq = atomic_load_explicit(&e->seq, memory_order_acquire);
    if (seq == 0 || (seq & 1))
        return false;
    uint64_t t[4];
    for (int i = 0; i < 4; i++)
        t[i] = atomic_load_explicit(&e->trace[i], memory_order_relaxed);
    *ns = atomic_load_explicit(&e->ns, memory_order_relaxed);
    *at_ms = atomic_load_explicit(&e->at_ms, memory_order_relaxed);
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&e->seq, memory_order_relaxed) != seq)
        return false;
    memcpy(trace, t, 32);
    trace[32] = '\0';
    return true;
}

void dk_metrics_http(const char *service, const char *method, const char *route, int status,
                     double seconds)
{
    dk_metrics_http_traced(service, method, route, status, seconds, NULL);
}

void dk_metrics_http_traced(const char *service, const char *method, const char *route, int status,
                            double seconds, const char *trace_id)
{
    /* label strings are copied into the registry (kept for the life of the process), so
     * the series outlives whatever server or route table produced it */
    struct dk_series *s =
        dk_slot(dk_reg.series, sizeof dk_reg.series[0],
                dk_hash_labels(service, method, route, status), service, method, route, status);
    if (s)
        atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
    struct dk_hist *hs =
        dk_slot(dk_reg.hists, sizeof dk_reg.hists[0], dk_hash_labels(service, method, route, 0),
                service, method, route, 0);
    if (!hs)
        return;
    size_t b = 0;
    while (b < DK_NBUCKETS && seconds > dk_buckets[b])
        b++;
    atomic_fetch_add_explicit(&hs->buckets[b], 1, memory_order_relaxed);
    double ns = seconds > 0 ? seconds * 1e9 : 0;
    atomic_fetch_add_explicit(&hs->sum_ns, ns < 1.8e19 ? (uint_fast64_t)ns : 0,
                              memory_order_relaxed);
    if (trace_id && strlen(trace_id) == 32)
        dk_exemplar_put(&hs->ex[b], trace_id, ns < 1.8e19 ? (uint64_t)ns : 0);
}

void dk_metrics_queue_lag(const char *service, const char *queue, double seconds)
{
    pthread_mutex_lock(&dk_reg.lock);
    int i = 0;
    while (i < dk_reg.nlags &&
           !(dk_same(dk_reg.lags[i].service, service) && dk_same(dk_reg.lags[i].queue, queue)))
        i++;
    if (i == dk_reg.nlags && i < DK_MAX_QUEUES) {
        dk_reg.lags[i].service = service;
        dk_reg.lags[i].queue = queue;
        dk_reg.nlags++;
    }
    if (i < dk_reg.nlags)
        dk_reg.lags[i].seconds = seconds;
    pthread_mutex_unlock(&dk_reg.lock);
}

void dk_metrics_add_collector(dk_metrics_collector fn, void *ctx)
{
    pthread_mutex_lock(&dk_reg.lock);
    if (dk_reg.ncollectors < DK_MAX_COLLECTORS) {
        dk_reg.collectors[dk_reg.ncollectors] = fn;
        dk_reg.collector_ctx[dk_reg.ncollectors] = ctx;
        dk_reg.ncollectors++;
    }
    pthread_mutex_unlock(&dk_reg.lock);
}

void dk_metrics_clear_collectors(void)
{
    pthread_mutex_lock(&dk_reg.lock);
    dk_reg.ncollectors = 0;
    pthread_mutex_unlock(&dk_reg.lock);
}

/* A growing text buffer (render only; bounded by the number of series). */
struct dk_metrics_out {
    char *buf;
    size_t len, cap;
    bool openmetrics;
};

static void dk_out_printf(dk_metrics_out *o, const char *fmt, ...) DK_PRINTF(2, 3);
static void dk_out_printf(dk_metrics_out *o, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        o->cap = o->cap * 2 + (size_t)n;
        o->buf = dk_realloc(o->buf, o->cap);
    }
}

static void dk_out_value(dk_metrics_out *o, double v)
{
    if (isnan(v))
        dk_out_printf(o, "NaN\n");
    else if (v == floor(v) && fabs(v) < 1e15)
        dk_out_printf(o, "%.0f\n", v);
    else
        dk_out_printf(o, "%.9g\n", v);
}

void dk_metrics_family(dk_metrics_out *out, const char *name, const char *type, const char *help)
{
    /* OpenMetrics names a counter's family without the _total its sample carries */
    size_t n = strlen(name);
    if (out->openmetrics && strcmp(type, "counter") == 0 && n > 6 &&
        strcmp(name + n - 6, "_total") == 0)
        n -= 6;
    dk_out_printf(out, "# HELP %.*s %s\n# TYPE %.*s %s\n", (int)n, name, help, (int)n, name, type);
}

void dk_metrics_sample(dk_metrics_out *out, const char *name, const char *labels, double value)
{
    if (labels && *labels)
        dk_out_printf(out, "%s{%s} ", name, labels);
    else
        dk_out_printf(out, "%s ", name);
    dk_out_value(out, value);
}

static void dk_metrics_process(dk_metrics_out *o)
{
    long ticks = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    double cpu = 0, start = 0, vsize = 0, rss = 0;
    FILE *f = fopen("/proc/self/stat", "r");
    if (f) {
        char buf[1024];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = '\0';
        fclose(f);
        char *p = strrchr(buf, ')');
        if (p) {
            /* fields after ") ": state(3) ... utime(14) stime(15) ... starttime(22) vsize(23) rss(24) */
            unsigned long long utime = 0, stime = 0, starttime = 0, vs = 0;
            long long rs = 0;
            if (sscanf(p + 2,
                       "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d "
                       "%*d %llu %llu %lld",
                       &utime, &stime, &starttime, &vs, &rs) == 5) {
                cpu = (double)(utime + stime) / (double)ticks;
                vsize = (double)vs;
                rss = (double)rs * (double)page;
                double boot = 0;
                FILE *sf = fopen("/proc/stat", "r");
                if (sf) {
                    char line[256];
                    while (fgets(line, sizeof line, sf)) {
                        unsigned long long bt;
                        if (sscanf(line, "btime %llu", &bt) == 1) {
                            boot = (double)bt;
                            break;
                        }
                    }
                    fclose(sf);
                }
                start = boot + (double)starttime / (double)ticks;
            }
        }
    }
    int fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (e->d_name[0] != '.')
                fds++;
        closedir(d);
        fds--; /* the directory stream itself */
    }
    struct rlimit rl;
    double maxfds = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (double)rl.rlim_cur : 0;
    dk_metrics_family(o, "process_cpu_seconds_total", "counter",
                      "Total user and system CPU time spent in seconds.");
    dk_metrics_sample(o, "process_cpu_seconds_total", "", cpu);
    dk_metrics_family(o, "process_resident_memory_bytes", "gauge",
                      "Resident memory size in bytes.");
    dk_metrics_sample(o, "process_resident_memory_bytes", "", rss);
    dk_metrics_family(o, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    dk_metrics_sample(o, "process_virtual_memory_bytes", "", vsize);
    dk_metrics_family(o, "process_open_fds", "gauge", "Number of open file descriptors.");
    dk_metrics_sample(o, "process_open_fds", "", fds);
    dk_metrics_family(o, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
    dk_metrics_sample(o, "process_max_fds", "", maxfds);
    dk_metrics_family(o, "process_start_time_seconds", "gauge",
                      "Start time of the process since unix epoch in seconds.");
    dk_metrics_sample(o, "process_start_time_seconds", "", start);
}

char *dk_metrics_render(dk_arena *a, size_t *ret_len)
{
    return dk_metrics_render_as(a, ret_len, false);
}

char *dk_metrics_render_as(dk_arena *a, size_t *ret_len, bool openmetrics)
{
    dk_metrics_out o = {
        .buf = dk_malloc(16384), .len = 0, .cap = 16384, .openmetrics = openmetrics};
    o.buf[0] = '\0';
    pthread_mutex_lock(&dk_reg.lock);
    dk_metrics_family(&o, "http_requests_total", "counter", "HTTP requests handled.");
    for (unsigned i = 0; i < DK_SERIES_SLOTS; i++) {
        struct dk_series *s = &dk_reg.series[i];
        const char *route = atomic_load_explicit(&s->l.route, memory_order_acquire);
        if (!route)
            continue;
        dk_out_printf(
            &o,
            "http_requests_total{service=\"%s\",method=\"%s\",route=\"%s\",status=\"%d\"} "
            "%llu\n",
            s->l.service, s->l.method, route, s->l.status,
            (unsigned long long)atomic_load_explicit(&s->count, memory_order_relaxed));
    }
    dk_metrics_family(&o, "http_request_duration_seconds", "histogram",
                      "HTTP request latency in seconds.");
    for (unsigned i = 0; i < DK_SERIES_SLOTS; i++) {
        struct dk_hist *h = &dk_reg.hists[i];
        const char *route = atomic_load_explicit(&h->l.route, memory_order_acquire);
        if (!route)
            continue;
        char labels[512];
        snprintf(labels, sizeof labels, "service=\"%s\",method=\"%s\",route=\"%s\"", h->l.service,
                 h->l.method, route);
        /* one reading of each bucket, accumulated: +Inf and _count are the same total */
        unsigned long long cum = 0;
        for (size_t b = 0; b <= DK_NBUCKETS; b++) {
            cum += atomic_load_explicit(&h->buckets[b], memory_order_relaxed);
            if (b < DK_NBUCKETS)
                dk_out_printf(&o, "http_request_duration_seconds_bucket{%s,le=\"%g\"} %llu", labels,
                              dk_buckets[b], cum);
            else
                dk_out_printf(&o, "http_request_duration_seconds_bucket{%s,le=\"+Inf\"} %llu",
                              labels, cum);
            char trace[33];
            uint64_t ns, at_ms;
            if (openmetrics && dk_exemplar_get(&h->ex[b], trace, &ns, &at_ms))
                dk_out_printf(&o, " # {trace_id=\"%s\"} %.9g %llu.%03llu", trace, (double)ns / 1e9,
                              (unsigned long long)(at_ms / 1000),
                              (unsigned long long)(at_ms % 1000));
            dk_out_printf(&o, "\n");
        }
        dk_out_printf(&o, "http_request_duration_seconds_sum{%s} %.9g\n", labels,
                      (double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) / 1e9);
        dk_out_printf(&o, "http_request_duration_seconds_count{%s} %llu\n", labels, cum);
    }
    if (dk_reg.nlags > 0)
        dk_metrics_family(&o, "docket_queue_lag_seconds", "gauge",
                          "Age of the oldest event a queue's consumer has not handled yet.");
    for (int i = 0; i < dk_reg.nlags; i++)
        dk_out_printf(&o, "docket_queue_lag_seconds{service=\"%s\",queue=\"%s\"} %.3f\n",
                      dk_reg.lags[i].service, dk_reg.lags[i].queue, dk_reg.lags[i].seconds);
    int ncollectors = dk_reg.ncollectors;
    dk_metrics_collector collectors[DK_MAX_COLLECTORS];
    void *ctx[DK_MAX_COLLECTORS];
    memcpy(collectors, dk_reg.collectors, sizeof collectors);
    memcpy(ctx, dk_reg.collector_ctx, sizeof ctx);
    pthread_mutex_unlock(&dk_reg.lock);
    dk_metrics_process(&o);
    for (int i = 0; i < ncollectors; i++)
        collectors[i](ctx[i], &o);
    if (openmetrics)
        dk_out_printf(&o, "# EOF\n");
    char *text = dk_arena_strndup(a, o.buf, o.len);
    if (ret_len)
        *ret_len = o.len;
    dk_free(o.buf);
    return text;
}
