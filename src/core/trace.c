/* The tracer: a thread-local current context, spans as small fixed-size records, a bounded
 * ring of finished spans and one exporter thread that posts them as OTLP/HTTP JSON
 * (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding: ids as hex, 64-bit
 * integers as strings, enums as numbers). The exporter wakes when a batch is full or the oldest
 * span has waited schedule_delay_ms; an export that fails drops its batch (counted). */
#include "core/trace.h"

#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/crypto.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "core/banned.h"

#define DK_SPAN_ATTRS     8
#define DK_TRACE_KV_MAX   16
#define DK_SPAN_ATTR_TEXT 128

typedef struct dk_span_attr {
    const char *key;
    bool is_int;
    int64_t i;
    char s[DK_SPAN_ATTR_TEXT];
} dk_span_attr;

typedef struct dk_trace_ctx {
    bool on;
    bool sampled;
    char trace_id[33];
    char span_id[17];
} dk_trace_ctx;

struct dk_span {
    char trace_id[33];
    char span_id[17];
    char parent[17];
    char name[80];
    dk_span_kind kind;
    bool error;
    char message[96];
    int64_t start_ns, end_ns;
    int nattrs;
    dk_span_attr attrs[DK_SPAN_ATTRS];
    dk_trace_ctx saved; /* the context before dk_span_push */
};

typedef enum {
    DK_SAMPLE_ON,
    DK_SAMPLE_OFF,
    DK_SAMPLE_RATIO,
} dk_sample_rule;

typedef struct dk_kv {
    char *key;
    char *value;
} dk_kv;

static struct {
    atomic_bool on;
    bool parent_based;
    dk_sample_rule rule;
    uint64_t ratio_bound; /* ratio * 2^56 */
    char url[1024];
    int max_queue, batch_size;
    int64_t delay_ms, timeout_ms;
    dk_kv resource[DK_TRACE_KV_MAX];
    int nresource;
    struct curl_slist *headers;
    char service_name[128];
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    dk_span **ring;
    int head, count;
    bool stop;
    int64_t oldest_ms; /* monotonic ms when the oldest queued span arrived */
} dk_tr = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static atomic_ullong dk_tr_dropped_full, dk_tr_dropped_export, dk_tr_exported;
/* The queue is full: spans are dropped before they are allocated (a dead collector costs a
 * load and an increment per span, not a record). */
static atomic_bool dk_tr_full;
static _Thread_local dk_trace_ctx dk_tr_cur;

static int64_t dk_tr_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static bool dk_tr_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static bool dk_tr_zero(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != '0')
            return false;
    return true;
}

bool dk_traceparent_parse(const char *tp, char trace_id[33], char span_id[17], bool *ret_sampled)
{
    if (!tp || strlen(tp) < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' ||
        !dk_tr_hex(tp, 2) || !dk_tr_hex(tp + 3, 32) || !dk_tr_hex(tp + 36, 16) ||
        !dk_tr_hex(tp + 53, 2) || strncmp(tp, "ff", 2) == 0 || dk_tr_zero(tp + 3, 32) ||
        dk_tr_zero(tp + 36, 16) || (strncmp(tp, "00", 2) == 0 && tp[55] != '\0'))
        return false;
    memcpy(trace_id, tp + 3, 32);
    trace_id[32] = '\0';
    memcpy(span_id, tp + 36, 16);
    span_id[16] = '\0';
    unsigned flags = (unsigned)strtoul((char[3]){tp[53], tp[54], '\0'}, NULL, 16);
    *ret_sampled = (flags & 1u) != 0;
    return true;
}

/* ---------- context ---------- */

void dk_trace_enter(const char *trace_id, const char *span_id, bool sampled)
{
    if (!trace_id || !span_id) {
        dk_tr_cur.on = false;
        return;
    }
    dk_tr_cur.on = true;
    dk_tr_cur.sampled = sampled;
    dk_strlcpy(dk_tr_cur.trace_id, trace_id, sizeof dk_tr_cur.trace_id);
    dk_strlcpy(dk_tr_cur.span_id, span_id, sizeof dk_tr_cur.span_id);
}

void dk_trace_leave(void)
{
    dk_tr_cur.on = false;
}

const char *dk_trace_current_trace_id(void)
{
    return dk_tr_cur.on ? dk_tr_cur.trace_id : NULL;
}

const char *dk_trace_current_span_id(void)
{
    return dk_tr_cur.on ? dk_tr_cur.span_id : NULL;
}

bool dk_trace_current_traceparent(char out[DK_TRACEPARENT_LEN])
{
    if (!dk_tr_cur.on)
        return false;
    snprintf(out, DK_TRACEPARENT_LEN, "00-%s-%s-%s", dk_tr_cur.trace_id, dk_tr_cur.span_id,
             dk_tr_cur.sampled ? "01" : "00");
    return true;
}

bool dk_trace_enter_traceparent(const char *traceparent)
{
    char t[33], s[17];
    bool sampled;
    if (!dk_traceparent_parse(traceparent, t, s, &sampled)) {
        dk_tr_cur.on = false;
        return false;
    }
    dk_trace_enter(t, s, sampled);
    return true;
}

/* ---------- sampling ---------- */

bool dk_trace_enabled(void)
{
    return atomic_load_explicit(&dk_tr.on, memory_order_relaxed);
}

bool dk_trace_sample(const char *trace_id, int parent_sampled)
{
    if (!dk_trace_enabled())
        return false;
    if (parent_sampled >= 0 && dk_tr.parent_based)
        return parent_sampled == 1;
    switch (dk_tr.rule) {
    case DK_SAMPLE_ON:
        return true;
    case DK_SAMPLE_OFF:
        return false;
    case DK_SAMPLE_RATIO: {
        /* the trace id's last 14 hex digits (56 bits: the random part W3C level 2 promises)
         * against ratio * 2^56, so every process decides the same for one trace */
        uint64_t v = 0;
        for (int i = 18; i < 32 && trace_id[i]; i++) {
            char c = trace_id[i];
            v = v * 16 + (uint64_t)(c <= '9' ? c - '0' : c - 'a' + 10);
        }
        return v < dk_tr.ratio_bound;
    }
    }
    return false;
}

/* ---------- spans ---------- */

static void dk_tr_new_id(char out[17])
{
    unsigned char rnd[8];
    do
        dk_fast_random(rnd, sizeof rnd);
    while (!(rnd[0] | rnd[1] | rnd[2] | rnd[3] | rnd[4] | rnd[5] | rnd[6] | rnd[7]));
    dk_hex(rnd, sizeof rnd, out);
}

/* False (and the span counted as dropped) when the queue has no room for it. */
static bool dk_tr_admit(void)
{
    if (!atomic_load_explicit(&dk_tr_full, memory_order_relaxed))
        return true;
    atomic_fetch_add_explicit(&dk_tr_dropped_full, 1, memory_order_relaxed);
    return false;
}

static dk_span *dk_span_alloc(const char *name, dk_span_kind kind)
{
    dk_span *s = dk_calloc(1, sizeof *s);
    dk_strlcpy(s->name, name, sizeof s->name);
    s->kind = kind;
    s->start_ns = dk_tr_now_ns();
    return s;
}

dk_span *dk_span_start(const char *name, dk_span_kind kind)
{
    if (!dk_tr_cur.on || !dk_tr_cur.sampled || !dk_trace_enabled() || !dk_tr_admit())
        return NULL;
    dk_span *s = dk_span_alloc(name, kind);
    memcpy(s->trace_id, dk_tr_cur.trace_id, sizeof s->trace_id);
    memcpy(s->parent, dk_tr_cur.span_id, sizeof s->parent);
    dk_tr_new_id(s->span_id);
    return s;
}

void dk_span_push(dk_span *s)
{
    if (!s)
        return;
    s->saved = dk_tr_cur;
    dk_trace_enter(s->trace_id, s->span_id, true);
}

void dk_span_pop(dk_span *s)
{
    if (!s)
        return;
    dk_tr_cur = s->saved;
}

void dk_span_attr_str(dk_span *s, const char *key, const char *value)
{
    if (!s || s->nattrs >= DK_SPAN_ATTRS || !value)
        return;
    dk_span_attr *a = &s->attrs[s->nattrs++];
    a->key = key;
    dk_strlcpy(a->s, value, sizeof a->s);
}

void dk_span_attr_int(dk_span *s, const char *key, int64_t value)
{
    if (!s || s->nattrs >= DK_SPAN_ATTRS)
        return;
    dk_span_attr *a = &s->attrs[s->nattrs++];
    a->key = key;
    a->is_int = true;
    a->i = value;
}

void dk_span_error(dk_span *s, const char *message)
{
    if (!s)
        return;
    s->error = true;
    dk_strlcpy(s->message, message ? message : "", sizeof s->message);
}

bool dk_span_traceparent(const dk_span *s, char out[DK_TRACEPARENT_LEN])
{
    if (!s)
        return false;
    snprintf(out, DK_TRACEPARENT_LEN, "00-%s-%s-01", s->trace_id, s->span_id);
    return true;
}

/* Queues a finished span; never blocks: a full queue drops it. */
static void dk_tr_queue(dk_span *s)
{
    if (!dk_trace_enabled()) {
        dk_free(s);
        return;
    }
    pthread_mutex_lock(&dk_tr.lock);
    if (!dk_tr.ring || dk_tr.stop || dk_tr.count >= dk_tr.max_queue) {
        pthread_mutex_unlock(&dk_tr.lock);
        atomic_fetch_add(&dk_tr_dropped_full, 1);
        dk_free(s);
        return;
    }
    if (dk_tr.count == 0)
        dk_tr.oldest_ms = dk_mono_ms();
    if (dk_tr.count + 1 >= dk_tr.max_queue)
        atomic_store(&dk_tr_full, true);
    dk_tr.ring[(dk_tr.head + dk_tr.count) % dk_tr.max_queue] = s;
    dk_tr.count++;
    bool wake = dk_tr.count == dk_tr.batch_size;
    pthread_mutex_unlock(&dk_tr.lock);
    if (wake)
        pthread_cond_signal(&dk_tr.cond);
}

void dk_span_end(dk_span *s)
{
    if (!s)
        return;
    s->end_ns = dk_tr_now_ns();
    if (s->end_ns < s->start_ns)
        s->end_ns = s->start_ns;
    dk_tr_queue(s);
}

void dk_trace_server_span(const char *trace_id, const char *span_id, const char *parent_span_id,
                          bool sampled, const char *method, const char *route, const char *service,
                          int status, double seconds)
{
    if (!sampled || !dk_trace_enabled() || !dk_tr_admit())
        return;
    char name[80];
    snprintf(name, sizeof name, "%s %s", method ? method : "HTTP", route ? route : "unmatched");
    dk_span *s = dk_span_alloc(name, DK_SPAN_SERVER);
    s->end_ns = s->start_ns;
    s->start_ns = s->end_ns - (int64_t)(seconds * 1e9);
    dk_strlcpy(s->trace_id, trace_id, sizeof s->trace_id);
    dk_strlcpy(s->span_id, span_id, sizeof s->span_id);
    dk_strlcpy(s->parent, parent_span_id ? parent_span_id : "", sizeof s->parent);
    dk_span_attr_str(s, "http.request.method", method);
    dk_span_attr_str(s, "http.route", route);
    dk_span_attr_int(s, "http.response.status_code", status);
    dk_span_attr_str(s, "docket.service", service);
    if (status >= 500)
        dk_span_error(s, NULL);
    dk_tr_queue(s);
}

void dk_trace_sql_name(const char *sql, char *out, size_t cap)
{
    /* the verb, then the first word after FROM / INTO / UPDATE / TABLE: "SELECT tasks" */
    char verb[16] = "";
    char table[48] = "";
    const char *p = sql ? sql : "";
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '(')
        p++;
    size_t n = 0;
    while (p[n] && ((p[n] >= 'A' && p[n] <= 'Z') || (p[n] >= 'a' && p[n] <= 'z')) &&
           n + 1 < sizeof verb) {
        verb[n] = (char)(p[n] >= 'a' ? p[n] - 32 : p[n]);
        n++;
    }
    verb[n] = '\0';
    static const char *const after[] = {" FROM ", " INTO ", "UPDATE ", " TABLE ",
                                        " from ", " into ", "update "};
    const char *best = NULL;
    for (size_t i = 0; i < sizeof after / sizeof after[0]; i++) {
        const char *f = strstr(p, after[i]);
        if (f && (!best || f < best)) {
            best = f + strlen(after[i]);
        }
    }
    if (best) {
        while (*best == ' ')
            best++;
        size_t k = 0;
        while (best[k] && k + 1 < sizeof table &&
               ((best[k] >= 'a' && best[k] <= 'z') || (best[k] >= 'A' && best[k] <= 'Z') ||
                (best[k] >= '0' && best[k] <= '9') || best[k] == '_' || best[k] == '.')) {
            table[k] = best[k];
            k++;
        }
        table[k] = '\0';
    }
    if (!verb[0])
        dk_strlcpy(verb, "SQL", sizeof verb);
    snprintf(out, cap, "%s%s%s", verb, table[0] ? " " : "", table);
}

dk_span *dk_span_sql(const char *system, const char *sql)
{
    if (!dk_tr_cur.on || !dk_tr_cur.sampled || atomic_load(&dk_tr_full))
        return dk_span_start("", DK_SPAN_INTERNAL); /* NULL; counts a drop when full */
    char name[80];
    dk_trace_sql_name(sql, name, sizeof name);
    dk_span *s = dk_span_start(name, DK_SPAN_CLIENT);
    dk_span_attr_str(s, "db.system", system);
    return s;
}

dk_span *dk_span_consume(const char *type, const char *system)
{
    if (!dk_tr_cur.on || !dk_tr_cur.sampled || atomic_load(&dk_tr_full))
        return dk_span_start("", DK_SPAN_INTERNAL); /* NULL; counts a drop when full */
    char name[80];
    snprintf(name, sizeof name, "process %s", type);
    dk_span *s = dk_span_start(name, DK_SPAN_CONSUMER);
    dk_span_attr_str(s, "messaging.system", system);
    dk_span_attr_str(s, "messaging.operation.type", "process");
    dk_span_attr_str(s, "docket.event.type", type);
    dk_span_push(s);
    return s;
}

void dk_span_consume_end(dk_span *s, dk_status st)
{
    if (!s)
        return;
    dk_span_pop(s);
    if (st != DK_OK)
        dk_span_error(s, dk_status_title(st));
    dk_span_end(s);
}

dk_span *dk_span_http(const char *peer, const char *method)
{
    if (!dk_tr_cur.on || !dk_tr_cur.sampled || atomic_load(&dk_tr_full))
        return dk_span_start("", DK_SPAN_INTERNAL); /* NULL; counts a drop when full */
    char name[80];
    snprintf(name, sizeof name, "%s %s", peer, method ? method : "HTTP");
    dk_span *s = dk_span_start(name, DK_SPAN_CLIENT);
    dk_span_attr_str(s, "http.request.method", method);
    dk_span_attr_str(s, "peer.service", peer);
    return s;
}

void dk_span_http_end(dk_span *s, bool transport_ok, long status)
{
    if (!s)
        return;
    if (status > 0)
        dk_span_attr_int(s, "http.response.status_code", status);
    if (!transport_ok)
        dk_span_error(s, "no response");
    else if (status >= 500)
        dk_span_error(s, NULL);
    dk_span_end(s);
}

uint64_t dk_trace_dropped(void)
{
    return atomic_load(&dk_tr_dropped_full) + atomic_load(&dk_tr_dropped_export);
}

uint64_t dk_trace_exported(void)
{
    return atomic_load(&dk_tr_exported);
}

/* ---------- export ---------- */

static json_t *dk_tr_kv_json(const char *key, json_t *value)
{
    return json_pack("{s:s, s:o}", "key", key, "value", value);
}

static json_t *dk_tr_str_value(const char *s)
{
    return json_pack("{s:s}", "stringValue", s);
}

static json_t *dk_tr_span_json(const dk_span *s)
{
    char start[24], end[24];
    snprintf(start, sizeof start, "%lld", (long long)s->start_ns);
    snprintf(end, sizeof end, "%lld", (long long)s->end_ns);
    json_t *attrs = json_array();
    for (int i = 0; i < s->nattrs; i++) {
        const dk_span_attr *a = &s->attrs[i];
        json_t *v;
        if (a->is_int) {
            char iv[24];
            snprintf(iv, sizeof iv, "%lld", (long long)a->i);
            v = json_pack("{s:s}", "intValue", iv);
        } else {
            v = dk_tr_str_value(a->s);
        }
        json_array_append_new(attrs, dk_tr_kv_json(a->key, v));
    }
    json_t *j = json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:o}", "traceId", s->trace_id, "spanId",
                          s->span_id, "name", s->name, "kind", (int)s->kind, "startTimeUnixNano",
                          start, "endTimeUnixNano", end, "attributes", attrs);
    if (s->parent[0])
        json_object_set_new(j, "parentSpanId", json_string(s->parent));
    if (s->error) {
        json_t *st = json_pack("{s:i}", "code", 2);
        if (s->message[0])
            json_object_set_new(st, "message", json_string(s->message));
        json_object_set_new(j, "status", st);
    }
    return j;
}

static char *dk_tr_encode(dk_span **spans, int n)
{
    json_t *rattrs = json_array();
    json_array_append_new(rattrs,
                          dk_tr_kv_json("service.name", dk_tr_str_value(dk_tr.service_name)));
    json_array_append_new(rattrs, dk_tr_kv_json("telemetry.sdk.name", dk_tr_str_value("docket")));
    json_array_append_new(rattrs, dk_tr_kv_json("telemetry.sdk.language", dk_tr_str_value("c")));
    char pid[16];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    json_array_append_new(rattrs,
                          dk_tr_kv_json("process.pid", json_pack("{s:s}", "intValue", pid)));
    for (int i = 0; i < dk_tr.nresource; i++)
        if (strcmp(dk_tr.resource[i].key, "service.name") != 0)
            json_array_append_new(rattrs, dk_tr_kv_json(dk_tr.resource[i].key,
                                                        dk_tr_str_value(dk_tr.resource[i].value)));
    json_t *list = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(list, dk_tr_span_json(spans[i]));
    json_t *doc =
        json_pack("{s:[{s:{s:o}, s:[{s:{s:s}, s:o}]}]}", "resourceSpans", "resource", "attributes",
                  rattrs, "scopeSpans", "scope", "name", "docket", "spans", list);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return text;
}

static size_t dk_tr_discard(char *p, size_t size, size_t n, void *ctx)
{
    (void)p;
    (void)ctx;
    return size * n;
}

static bool dk_tr_post(CURL *h, const char *body)
{
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, dk_tr.url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, dk_tr.headers);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)dk_tr.timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)dk_tr.timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, dk_tr_discard);
    CURLcode rc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    return rc == CURLE_OK && code >= 200 && code < 300;
}

/* Waits on the exporter's condition for up to ms (with the lock held). */
static void dk_tr_wait(int64_t ms)
{
    struct timespec ts = dk_mono_deadline(ms);
    pthread_cond_timedwait(&dk_tr.cond, &dk_tr.lock, &ts);
}

/* The exporter's condition waits on the monotonic clock (immune to clock steps). Made once, on
 * the first dk_trace_start, before any thread can wait on it or signal it. */
static void dk_tr_cond_init(void)
{
    pthread_cond_destroy(&dk_tr.cond);
    dk_cond_init_monotonic(&dk_tr.cond);
}

/* Drops every queued span (with the lock held). */
static void dk_tr_drop_queued(void)
{
    while (dk_tr.count > 0) {
        dk_free(dk_tr.ring[dk_tr.head]);
        dk_tr.head = (dk_tr.head + 1) % dk_tr.max_queue;
        dk_tr.count--;
        atomic_fetch_add(&dk_tr_dropped_export, 1);
    }
    atomic_store(&dk_tr_full, false);
}

static void *dk_tr_loop(void *arg)
{
    (void)arg;
    CURL *h = curl_easy_init();
    dk_span **batch = dk_calloc((size_t)dk_tr.batch_size, sizeof *batch);
    int64_t last_warn = 0;
    int64_t backoff_ms = 0; /* after a failed export: the pause before the next attempt */
    pthread_mutex_lock(&dk_tr.lock);
    for (;;) {
        /* a failing collector is tried again after a pause that doubles up to 30 s; meanwhile
         * the queue fills and new spans are dropped before they are even recorded */
        if (backoff_ms > 0 && !dk_tr.stop) {
            int64_t until = dk_mono_ms() + backoff_ms;
            while (!dk_tr.stop && dk_mono_ms() < until)
                dk_tr_wait(until - dk_mono_ms());
        }
        while (!dk_tr.stop && dk_tr.count < dk_tr.batch_size &&
               (dk_tr.count == 0 || dk_mono_ms() - dk_tr.oldest_ms < dk_tr.delay_ms))
            dk_tr_wait(dk_tr.count == 0 ? dk_tr.delay_ms
                                        : dk_tr.delay_ms - (dk_mono_ms() - dk_tr.oldest_ms));
        if (dk_tr.stop && (dk_tr.count == 0 || backoff_ms > 0)) {
            /* shutting down: what is left goes when the collector answers; when it does not,
             * it is dropped rather than waited on batch after batch */
            dk_tr_drop_queued();
            break;
        }
        int n = dk_tr.count < dk_tr.batch_size ? dk_tr.count : dk_tr.batch_size;
        for (int i = 0; i < n; i++) {
            batch[i] = dk_tr.ring[dk_tr.head];
            dk_tr.head = (dk_tr.head + 1) % dk_tr.max_queue;
        }
        dk_tr.count -= n;
        dk_tr.oldest_ms = dk_mono_ms();
        atomic_store(&dk_tr_full, false);
        pthread_mutex_unlock(&dk_tr.lock);

        char *body = dk_tr_encode(batch, n);
        bool ok = body && h && dk_tr_post(h, body);
        free(body);
        for (int i = 0; i < n; i++)
            dk_free(batch[i]);
        if (ok) {
            atomic_fetch_add(&dk_tr_exported, (unsigned long long)n);
            backoff_ms = 0;
        } else {
            atomic_fetch_add(&dk_tr_dropped_export, (unsigned long long)n);
            backoff_ms = backoff_ms ? (backoff_ms * 2 > 30000 ? 30000 : backoff_ms * 2) : 1000;
            if (dk_mono_ms() - last_warn > 60000) {
                last_warn = dk_mono_ms();
                dk_log_warn("trace export to %s failed; %d span(s) dropped, retrying in %lld ms "
                            "(docket_otel_spans_dropped_total counts them)",
                            dk_tr.url, n, (long long)backoff_ms);
            }
        }
        pthread_mutex_lock(&dk_tr.lock);
    }
    pthread_mutex_unlock(&dk_tr.lock);
    dk_free(batch);
    if (h)
        curl_easy_cleanup(h);
    return NULL;
}

static void dk_tr_collect(void *ctx, dk_metrics_out *out)
{
    (void)ctx;
    dk_metrics_family(out, "docket_otel_spans_exported_total", "counter",
                      "Spans the collector accepted.");
    dk_metrics_sample(out, "docket_otel_spans_exported_total", "",
                      (double)atomic_load(&dk_tr_exported));
    dk_metrics_family(out, "docket_otel_spans_dropped_total", "counter",
                      "Spans dropped: the export queue was full, or the collector failed.");
    dk_metrics_sample(out, "docket_otel_spans_dropped_total", "reason=\"queue_full\"",
                      (double)atomic_load(&dk_tr_dropped_full));
    dk_metrics_sample(out, "docket_otel_spans_dropped_total", "reason=\"export_failed\"",
                      (double)atomic_load(&dk_tr_dropped_export));
    pthread_mutex_lock(&dk_tr.lock);
    int queued = dk_tr.count;
    pthread_mutex_unlock(&dk_tr.lock);
    dk_metrics_family(out, "docket_otel_queue_spans", "gauge", "Spans waiting for export.");
    dk_metrics_sample(out, "docket_otel_queue_spans", "", queued);
}

static bool dk_tr_hex_any(const char *s)
{
    for (int i = 0; i < 2; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') ||
              (s[i] >= 'A' && s[i] <= 'F')))
            return false;
    return true;
}

/* "k=v,k2=v2" with percent-encoded values (the OTEL_* list format). */
static bool dk_tr_parse_kv(const char *text, dk_kv *out, int max, int *ret_n)
{
    int n = 0;
    const char *p = text ? text : "";
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (!eq || n >= max)
            return false;
        size_t kl = (size_t)(eq - p), vl = len - kl - 1;
        while (kl > 0 && p[0] == ' ')
            p++, kl--;
        while (kl > 0 && p[kl - 1] == ' ')
            kl--;
        if (kl == 0)
            return false;
        char *k = dk_malloc(kl + 1);
        memcpy(k, p, kl);
        k[kl] = '\0';
        char *v = dk_malloc(vl + 1);
        size_t o = 0;
        for (size_t i = 0; i < vl; i++) {
            const char *c = eq + 1 + i;
            if (c[0] == '%' && i + 2 < vl && dk_tr_hex_any(c + 1)) {
                v[o++] = (char)strtoul((char[3]){c[1], c[2], '\0'}, NULL, 16);
                i += 2;
            } else {
                v[o++] = c[0];
            }
        }
        v[o] = '\0';
        while (o > 0 && v[o - 1] == ' ')
            v[--o] = '\0';
        char *vs = v;
        while (*vs == ' ')
            vs++;
        if (vs != v)
            memmove(v, vs, strlen(vs) + 1);
        out[n].key = k;
        out[n].value = v;
        n++;
        p = end ? end + 1 : p + len;
    }
    *ret_n = n;
    return true;
}

static void dk_tr_kv_free(dk_kv *kv, int n)
{
    for (int i = 0; i < n; i++) {
        dk_free(kv[i].key);
        dk_free(kv[i].value);
        kv[i].key = kv[i].value = NULL;
    }
}

dk_status dk_trace_start(const dk_trace_options *opt, char *err, size_t cap)
{
    static pthread_once_t cond_once = PTHREAD_ONCE_INIT;
    pthread_once(&cond_once, dk_tr_cond_init);
    const char *sampler = opt->sampler && *opt->sampler ? opt->sampler : "parentbased_always_on";
    static const struct {
        const char *name;
        bool parent;
        dk_sample_rule rule;
    } samplers[] = {
        {"always_on", false, DK_SAMPLE_ON},
        {"always_off", false, DK_SAMPLE_OFF},
        {"traceidratio", false, DK_SAMPLE_RATIO},
        {"parentbased_always_on", true, DK_SAMPLE_ON},
        {"parentbased_always_off", true, DK_SAMPLE_OFF},
        {"parentbased_traceidratio", true, DK_SAMPLE_RATIO},
    };
    int found = -1;
    for (int i = 0; i < (int)(sizeof samplers / sizeof samplers[0]); i++)
        if (strcmp(samplers[i].name, sampler) == 0)
            found = i;
    if (found < 0) {
        snprintf(err, cap,
                 "otel.traces_sampler: unknown sampler '%s' (always_on, always_off, "
                 "traceidratio, parentbased_always_on, parentbased_always_off, "
                 "parentbased_traceidratio)",
                 sampler);
        return DK_E_VALIDATION;
    }
    if (!(opt->sampler_ratio >= 0 && opt->sampler_ratio <= 1)) {
        snprintf(err, cap, "otel.traces_sampler_arg: the ratio must be between 0 and 1");
        return DK_E_VALIDATION;
    }
    dk_kv hdr[DK_TRACE_KV_MAX];
    int nhdr = 0;
    if (!dk_tr_parse_kv(opt->headers, hdr, DK_TRACE_KV_MAX, &nhdr)) {
        snprintf(err, cap, "otel.headers: expected key=value pairs separated by commas");
        return DK_E_VALIDATION;
    }
    dk_kv res[DK_TRACE_KV_MAX];
    int nres = 0;
    if (!dk_tr_parse_kv(opt->resource_attributes, res, DK_TRACE_KV_MAX, &nres)) {
        dk_tr_kv_free(hdr, nhdr);
        snprintf(err, cap,
                 "otel.resource_attributes: expected key=value pairs separated by commas");
        return DK_E_VALIDATION;
    }
    const char *ep = opt->endpoint ? opt->endpoint : "";
    if (!*ep) {
        dk_tr_kv_free(hdr, nhdr);
        dk_tr_kv_free(res, nres);
        return DK_OK;
    }
    if (strncmp(ep, "http://", 7) != 0 && strncmp(ep, "https://", 8) != 0) {
        dk_tr_kv_free(hdr, nhdr);
        dk_tr_kv_free(res, nres);
        snprintf(err, cap, "otel.endpoint: expected an http:// or https:// URL");
        return DK_E_VALIDATION;
    }
    size_t el = strlen(ep);
    while (el > 0 && ep[el - 1] == '/')
        el--;
    snprintf(dk_tr.url, sizeof dk_tr.url, "%.*s/v1/traces", (int)el, ep);
    dk_tr.parent_based = samplers[found].parent;
    dk_tr.rule = samplers[found].rule;
    dk_tr.ratio_bound = (uint64_t)ldexp(opt->sampler_ratio, 56);
    dk_tr.max_queue = opt->max_queue > 0 ? opt->max_queue : 2048;
    dk_tr.batch_size = opt->batch_size > 0 ? opt->batch_size : 512;
    if (dk_tr.batch_size > dk_tr.max_queue)
        dk_tr.batch_size = dk_tr.max_queue;
    dk_tr.delay_ms = opt->schedule_delay_ms > 0 ? opt->schedule_delay_ms : 5000;
    dk_tr.timeout_ms = opt->export_timeout_ms > 0 ? opt->export_timeout_ms : 10000;
    memcpy(dk_tr.resource, res, sizeof res);
    dk_tr.nresource = nres;
    /* service.name: otel.service_name, else OTEL_RESOURCE_ATTRIBUTES's, else the caller's */
    const char *sn = opt->service_name;
    for (int i = 0; i < nres; i++)
        if (strcmp(res[i].key, "service.name") == 0 && (!sn || !*sn))
            sn = res[i].value;
    dk_strlcpy(dk_tr.service_name, sn && *sn ? sn : "docket", sizeof dk_tr.service_name);
    dk_tr.headers = curl_slist_append(NULL, "Content-Type: application/json");
    for (int i = 0; i < nhdr; i++) {
        size_t l = strlen(hdr[i].key) + strlen(hdr[i].value) + 3;
        char *line = dk_malloc(l);
        snprintf(line, l, "%s: %s", hdr[i].key, hdr[i].value);
        dk_tr.headers = curl_slist_append(dk_tr.headers, line);
        dk_free(line);
    }
    dk_tr_kv_free(hdr, nhdr);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    dk_tr.ring = dk_calloc((size_t)dk_tr.max_queue, sizeof *dk_tr.ring);
    dk_tr.head = dk_tr.count = 0;
    dk_tr.stop = false;
    atomic_store(&dk_tr_full, false);
    if (pthread_create(&dk_tr.thread, NULL, dk_tr_loop, NULL) != 0) {
        dk_free(dk_tr.ring);
        dk_tr.ring = NULL;
        curl_slist_free_all(dk_tr.headers);
        dk_tr.headers = NULL;
        dk_tr_kv_free(dk_tr.resource, dk_tr.nresource);
        dk_tr.nresource = 0;
        snprintf(err, cap, "cannot start the trace exporter thread");
        return DK_E_INTERNAL;
    }
    static atomic_bool collecting;
    if (!atomic_exchange(&collecting, true))
        dk_metrics_add_collector(dk_tr_collect, NULL);
    atomic_store(&dk_tr.on, true);
    return DK_OK;
}

void dk_trace_stop(void)
{
    if (!atomic_exchange(&dk_tr.on, false))
        return;
    pthread_mutex_lock(&dk_tr.lock);
    dk_tr.stop = true;
    pthread_mutex_unlock(&dk_tr.lock);
    pthread_cond_signal(&dk_tr.cond);
    pthread_join(dk_tr.thread, NULL);
    pthread_mutex_lock(&dk_tr.lock);
    dk_free(dk_tr.ring);
    dk_tr.ring = NULL;
    pthread_mutex_unlock(&dk_tr.lock);
    curl_slist_free_all(dk_tr.headers);
    dk_tr.headers = NULL;
    dk_tr_kv_free(dk_tr.resource, dk_tr.nresource);
    dk_tr.nresource = 0;
}
