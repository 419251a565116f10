/* The tracer: a thread-local current context, spans as fixed-size binary records (ids as
 * bytes, times, a kind, a few attributes whose keys are literals and whose strings are copied
 * into the record), a preallocated ring of finished records and one exporter thread that
 * encodes them — OTLP/HTTP protobuf (the default) or JSON
 * (https://opentelemetry.io/docs/specs/otlp/#otlphttp) — and posts them. A request thread
 * never encodes, allocates per span only a record it frees itself, and takes the ring's lock
 * once per span. The exporter wakes when a batch is full or the oldest span has waited
 * schedule_delay_ms. A collector that fails (refused, timed out, non-2xx) puts the tracer in
 * back-off: spans are then dropped where they would start, with one atomic increment, and
 * the exporter probes the collector with an empty export after 1 s, doubling up to 30 s, so a
 * dead collector costs neither records nor encoding (docs/design/measurements.md).
 * Exports go through the outbound HTTP port (ports/http_client.h): the composition root opens
 * a client for them and passes it in dk_trace_options; the exporter submits one call at a time
 * and waits for it (core/http_client_wait.h), so the core includes no HTTP library. */
#include "core/trace.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/crypto.h"
#include "core/http_client_wait.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "ports/http_client.h"
#include "core/banned.h"

#define DK_SPAN_ATTRS   8
#define DK_TRACE_KV_MAX 16
#define DK_SPAN_TEXT    240 /* name, status message and string attribute values */

typedef struct dk_span_attr {
    const char *key; /* a literal */
    int64_t i;
    uint16_t off, len; /* a string value: text[off .. off+len) */
    bool is_int;
} dk_span_attr;

typedef struct dk_trace_ctx {
    bool on;
    bool sampled;
    char trace_id[33];
    char span_id[17];
} dk_trace_ctx;

/* One span as it is recorded and queued: copied by value into the ring. */
typedef struct dk_span_rec {
    unsigned char trace_id[16];
    unsigned char span_id[8];
    unsigned char parent[8]; /* all zero: a root span */
    int64_t start_ns, end_ns;
    uint8_t kind;
    bool error;
    uint8_t nattrs;
    uint16_t name_len;
    uint16_t msg_off, msg_len;
    uint16_t used;    /* of text */
    uint32_t pb_size; /* the exporter's: the encoded Span's size */
    dk_span_attr attrs[DK_SPAN_ATTRS];
    char text[DK_SPAN_TEXT];
} dk_span_rec;

struct dk_span {
    dk_span_rec r;
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

/* Why new spans are dropped where they would start (dk_tr_gate). */
enum {
    DK_GATE_OPEN = 0,
    DK_GATE_FULL = 1,    /* the ring is full */
    DK_GATE_BACKOFF = 2, /* the collector failed: nothing is recorded until a probe succeeds */
};

static struct {
    atomic_bool on;
    bool parent_based;
    bool json; /* http/json, else http/protobuf */
    dk_sample_rule rule;
    uint64_t ratio_bound; /* ratio * 2^56 */
    char url[1024];
    int max_queue, batch_size;
    int64_t delay_ms, timeout_ms;
    dk_kv resource[DK_TRACE_KV_MAX];
    int nresource;
    /* "Name: value" lines of every export: Content-Type, then otel.headers (malloc'd) */
    const char *headers[1 + DK_TRACE_KV_MAX];
    int nheaders;
    const struct dk_http_client_ops *http_ops;
    dk_http_client *http;
    char service_name[128];
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    dk_span_rec *ring;
    int head, count;
    bool stop;
    int64_t oldest_ms; /* monotonic ms when the oldest queued span arrived */
} dk_tr = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static atomic_ullong dk_tr_dropped_full, dk_tr_dropped_export, dk_tr_dropped_down, dk_tr_exported;
static atomic_int dk_tr_gate;
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

static int dk_tr_nibble(char c)
{
    return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* n bytes from 2n lower-case hex digits (already validated). */
static void dk_tr_unhex(const char *hex, unsigned char *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (unsigned char)(dk_tr_nibble(hex[2 * i]) << 4 | dk_tr_nibble(hex[2 * i + 1]));
}

static void dk_tr_new_id(unsigned char out[8])
{
    do
        dk_fast_random(out, 8);
    while (!(out[0] | out[1] | out[2] | out[3] | out[4] | out[5] | out[6] | out[7]));
}

/* False (and the span counted as dropped) while the ring is full or the collector is failing:
 * one relaxed load when spans flow, one increment when they are dropped. */
static bool dk_tr_admit(void)
{
    int g = atomic_load_explicit(&dk_tr_gate, memory_order_relaxed);
    if (g == DK_GATE_OPEN)
        return true;
    atomic_fetch_add_explicit(g == DK_GATE_FULL ? &dk_tr_dropped_full : &dk_tr_dropped_down, 1,
                              memory_order_relaxed);
    return false;
}

/* Whether a span started now on this thread would be recorded (no drop counted). */
static bool dk_tr_would_record(void)
{
    return dk_tr_cur.on && dk_tr_cur.sampled &&
           atomic_load_explicit(&dk_tr_gate, memory_order_relaxed) == DK_GATE_OPEN;
}

/* For the span helpers that skip their work when nothing would be recorded: NULL, counting the
 * drop when a sampled context meets a closed gate. */
static dk_span *dk_tr_not_recorded(void)
{
    if (dk_tr_cur.on && dk_tr_cur.sampled && dk_trace_enabled() && dk_tr_admit())
        atomic_fetch_add_explicit(&dk_tr_dropped_down, 1, memory_order_relaxed); /* reopened */
    return NULL;
}

/* Copies up to len bytes of s into the record's text; returns the offset (len updated). */
static uint16_t dk_tr_text(dk_span_rec *r, const char *s, size_t *len)
{
    size_t room = sizeof r->text - r->used;
    if (*len > room)
        *len = room;
    uint16_t off = r->used;
    memcpy(r->text + off, s, *len);
    r->used = (uint16_t)(r->used + *len);
    return off;
}

static void dk_tr_rec_init(dk_span_rec *r, const char *name, size_t name_len, dk_span_kind kind)
{
    r->kind = (uint8_t)kind;
    r->error = false;
    r->nattrs = 0;
    r->msg_off = r->msg_len = 0;
    r->used = 0;
    if (name_len > 96)
        name_len = 96;
    (void)dk_tr_text(r, name, &name_len); /* at offset 0 */
    r->name_len = (uint16_t)name_len;
    r->start_ns = dk_tr_now_ns();
}

static dk_span *dk_span_start_n(const char *name, size_t name_len, dk_span_kind kind)
{
    if (!dk_tr_cur.on || !dk_tr_cur.sampled || !dk_trace_enabled() || !dk_tr_admit())
        return NULL;
    dk_span *s = dk_malloc(sizeof *s); /* no zeroing: every field read is set below */
    dk_tr_rec_init(&s->r, name, name_len, kind);
    dk_tr_unhex(dk_tr_cur.trace_id, s->r.trace_id, 16);
    dk_tr_unhex(dk_tr_cur.span_id, s->r.parent, 8);
    dk_tr_new_id(s->r.span_id);
    return s;
}

dk_span *dk_span_start(const char *name, dk_span_kind kind)
{
    return dk_span_start_n(name, name ? strlen(name) : 0, kind);
}

void dk_span_push(dk_span *s)
{
    if (!s)
        return;
    s->saved = dk_tr_cur;
    dk_tr_cur.on = true;
    dk_tr_cur.sampled = true;
    dk_hex(s->r.trace_id, 16, dk_tr_cur.trace_id);
    dk_hex(s->r.span_id, 8, dk_tr_cur.span_id);
}

void dk_span_pop(dk_span *s)
{
    if (!s)
        return;
    dk_tr_cur = s->saved;
}

static void dk_tr_attr_str(dk_span_rec *r, const char *key, const char *value)
{
    if (r->nattrs >= DK_SPAN_ATTRS || !value)
        return;
    dk_span_attr *a = &r->attrs[r->nattrs++];
    size_t len = strlen(value);
    a->key = key;
    a->is_int = false;
    a->off = dk_tr_text(r, value, &len);
    a->len = (uint16_t)len;
}

static void dk_tr_attr_int(dk_span_rec *r, const char *key, int64_t value)
{
    if (r->nattrs >= DK_SPAN_ATTRS)
        return;
    dk_span_attr *a = &r->attrs[r->nattrs++];
    a->key = key;
    a->is_int = true;
    a->i = value;
    a->off = a->len = 0;
}

static void dk_tr_error(dk_span_rec *r, const char *message)
{
    r->error = true;
    size_t len = message ? strlen(message) : 0;
    if (len > 96)
        len = 96;
    r->msg_off = dk_tr_text(r, message ? message : "", &len);
    r->msg_len = (uint16_t)len;
}

void dk_span_attr_str(dk_span *s, const char *key, const char *value)
{
    if (s)
        dk_tr_attr_str(&s->r, key, value);
}

void dk_span_attr_int(dk_span *s, const char *key, int64_t value)
{
    if (s)
        dk_tr_attr_int(&s->r, key, value);
}

void dk_span_error(dk_span *s, const char *message)
{
    if (s)
        dk_tr_error(&s->r, message);
}

bool dk_span_traceparent(const dk_span *s, char out[DK_TRACEPARENT_LEN])
{
    if (!s)
        return false;
    memcpy(out, "00-", 3);
    dk_hex(s->r.trace_id, 16, out + 3);
    out[35] = '-';
    dk_hex(s->r.span_id, 8, out + 36);
    memcpy(out + 52, "-01", 4);
    return true;
}

/* Copies a finished record into the ring; never blocks on the collector: a full ring drops. */
static void dk_tr_queue(const dk_span_rec *r)
{
    pthread_mutex_lock(&dk_tr.lock);
    if (!dk_tr.ring || dk_tr.stop || dk_tr.count >= dk_tr.max_queue) {
        pthread_mutex_unlock(&dk_tr.lock);
        atomic_fetch_add_explicit(&dk_tr_dropped_full, 1, memory_order_relaxed);
        return;
    }
    if (dk_tr.count == 0)
        dk_tr.oldest_ms = dk_mono_ms();
    int i = dk_tr.head + dk_tr.count;
    if (i >= dk_tr.max_queue)
        i -= dk_tr.max_queue;
    /* the fixed part, then only the text in use */
    memcpy(&dk_tr.ring[i], r, offsetof(dk_span_rec, text));
    memcpy(dk_tr.ring[i].text, r->text, r->used);
    dk_tr.count++;
    if (dk_tr.count >= dk_tr.max_queue)
        atomic_store_explicit(&dk_tr_gate, DK_GATE_FULL, memory_order_relaxed);
    bool wake = dk_tr.count == dk_tr.batch_size;
    pthread_mutex_unlock(&dk_tr.lock);
    if (wake)
        pthread_cond_signal(&dk_tr.cond);
}

void dk_span_end(dk_span *s)
{
    if (!s)
        return;
    s->r.end_ns = dk_tr_now_ns();
    if (s->r.end_ns < s->r.start_ns)
        s->r.end_ns = s->r.start_ns;
    if (dk_trace_enabled())
        dk_tr_queue(&s->r);
    dk_free(s);
}

void dk_trace_server_span(const char *trace_id, const char *span_id, const char *parent_span_id,
                          bool sampled, const char *method, const char *route, const char *service,
                          int status, double seconds)
{
    if (!sampled || !dk_trace_enabled() || !dk_tr_admit())
        return;
    dk_span_rec r;
    /* "METHOD /route/{template}", built without formatting (once per request) */
    char name[112];
    const char *m = method ? method : "HTTP", *rt = route ? route : "unmatched";
    size_t ml = strnlen(m, 15), rl = strnlen(rt, sizeof name - 17);
    memcpy(name, m, ml);
    name[ml] = ' ';
    memcpy(name + ml + 1, rt, rl);
    dk_tr_rec_init(&r, name, ml + 1 + rl, DK_SPAN_SERVER);
    r.end_ns = r.start_ns;
    r.start_ns = r.end_ns - (int64_t)(seconds * 1e9);
    dk_tr_unhex(trace_id, r.trace_id, 16);
    dk_tr_unhex(span_id, r.span_id, 8);
    if (parent_span_id && strlen(parent_span_id) == 16)
        dk_tr_unhex(parent_span_id, r.parent, 8);
    else
        memset(r.parent, 0, sizeof r.parent);
    dk_tr_attr_str(&r, "http.request.method", method);
    dk_tr_attr_str(&r, "http.route", route);
    dk_tr_attr_int(&r, "http.response.status_code", status);
    dk_tr_attr_str(&r, "docket.service", service);
    if (status >= 500)
        dk_tr_error(&r, NULL);
    dk_tr_queue(&r);
}

/* The length of the keyword FROM / INTO / UPDATE / TABLE (any case) at q when a separator
 * follows it, else 0. */
static inline size_t dk_tr_sql_keyword(const char *q)
{
    static const struct {
        const char *word;
        size_t len;
    } kw[] = {{"from", 4}, {"into", 4}, {"update", 6}, {"table", 5}};
    char c = (char)(q[0] | 0x20);
    if (c != 'f' && c != 'i' && c != 'u' && c != 't')
        return 0; /* most words */
    for (size_t i = 0; i < sizeof kw / sizeof kw[0]; i++) {
        if (c != kw[i].word[0])
            continue;
        size_t n = 1;
        while (n < kw[i].len && (q[n] | 0x20) == kw[i].word[n])
            n++;
        if (n == kw[i].len && (q[n] == ' ' || q[n] == '\n' || q[n] == '\t'))
            return n;
    }
    return 0;
}

void dk_trace_sql_name(const char *sql, char *out, size_t cap)
{
    /* the verb, then the first word after FROM / INTO / UPDATE / TABLE: "SELECT tasks". One
     * pass that jumps from space to space (strchr), no formatting: it runs for every SQL span
     * on the request's thread (docs/design/measurements.md). */
    char name[16 + 48];
    size_t n = 0;
    const char *p = sql ? sql : "";
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '(')
        p++;
    while (((p[n] >= 'A' && p[n] <= 'Z') || (p[n] >= 'a' && p[n] <= 'z')) && n < 15) {
        name[n] = (char)(p[n] >= 'a' ? p[n] - 32 : p[n]);
        n++;
    }
    if (n == 0) {
        memcpy(name, "SQL", 3);
        n = 3;
    }
    const char *best = NULL;
    size_t k = dk_tr_sql_keyword(p);
    if (k)
        best = p + k;
    for (const char *q = p; !best && (q = strchr(q, ' ')) != NULL;) {
        q++;
        k = dk_tr_sql_keyword(q);
        if (k)
            best = q + k;
    }
    if (best) {
        while (*best == ' ' || *best == '\n' || *best == '\t')
            best++;
        size_t t = 0;
        while (t < 47 &&
               ((best[t] >= 'a' && best[t] <= 'z') || (best[t] >= 'A' && best[t] <= 'Z') ||
                (best[t] >= '0' && best[t] <= '9') || best[t] == '_' || best[t] == '.'))
            t++;
        if (t > 0) {
            name[n++] = ' ';
            memcpy(name + n, best, t);
            n += t;
        }
    }
    if (cap == 0)
        return;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, name, n);
    out[n] = '\0';
}

/* The names of the statements a thread ran last, found by two independent 64-bit hashes of the
 * text and its length (statements are often built per call, e.g. a task read's, so their
 * addresses differ; their text is the program's, never user input): a SQL span's name is then
 * one pass of hashing instead of a scan (docs/design/measurements.md). */
#define DK_TR_SQL_CACHE 16
typedef struct dk_tr_sql_entry {
    uint64_t h1, h2;
    size_t len; /* 0: empty */
    uint8_t name_len;
    char name[64];
} dk_tr_sql_entry;
static _Thread_local dk_tr_sql_entry dk_tr_sqlc[DK_TR_SQL_CACHE];

dk_span *dk_span_sql(const char *system, const char *sql)
{
    if (!dk_tr_would_record())
        return dk_tr_not_recorded();
    const char *text = sql ? sql : "";
    size_t len = strlen(text), i = 0;
    uint64_t h1 = 1469598103934665603ull, h2 = len;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, text + i, 8);
        h1 = (h1 ^ w) * 1099511628211ull;
        h2 = (h2 + w) * 0x9e3779b97f4a7c15ull;
        h2 ^= h2 >> 29;
    }
    for (; i < len; i++) {
        h1 = (h1 ^ (unsigned char)text[i]) * 1099511628211ull;
        h2 = (h2 + (unsigned char)text[i]) * 0x9e3779b97f4a7c15ull;
    }
    dk_tr_sql_entry *e = &dk_tr_sqlc[(h1 ^ (h1 >> 32)) % DK_TR_SQL_CACHE];
    if (len == 0 || e->len != len || e->h1 != h1 || e->h2 != h2) {
        dk_trace_sql_name(text, e->name, sizeof e->name);
        e->name_len = (uint8_t)strlen(e->name);
        e->len = len;
        e->h1 = h1;
        e->h2 = h2;
    }
    dk_span *s = dk_span_start_n(e->name, e->name_len, DK_SPAN_CLIENT);
    dk_span_attr_str(s, "db.system", system);
    return s;
}

dk_span *dk_span_consume(const char *type, const char *system)
{
    if (!dk_tr_would_record())
        return dk_tr_not_recorded();
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
    if (!dk_tr_would_record())
        return dk_tr_not_recorded();
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
    return atomic_load(&dk_tr_dropped_full) + atomic_load(&dk_tr_dropped_export) +
           atomic_load(&dk_tr_dropped_down);
}

uint64_t dk_trace_exported(void)
{
    return atomic_load(&dk_tr_exported);
}

/* ---------- export: encoding (the exporter thread only) ---------- */

/* Strings leave as valid UTF-8 (both encodings require it): in a string cut in the middle of a
 * character or holding invalid bytes, every non-ASCII byte becomes '?' (in place, so the record
 * keeps its layout). ASCII text, nearly all of it, is checked eight bytes at a time. */
static void dk_tr_clean_text(char *s, size_t n)
{
    size_t i = 0;
    uint64_t high = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        high |= w;
    }
    for (; i < n; i++)
        high |= (unsigned char)s[i];
    if (!(high & 0x8080808080808080ull) || dk_utf8_len(s, n) >= 0)
        return;
    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            s[i] = '?';
}

static void dk_tr_clean(dk_span_rec *r)
{
    dk_tr_clean_text(r->text, r->name_len);
    if (r->error)
        dk_tr_clean_text(r->text + r->msg_off, r->msg_len);
    for (int i = 0; i < r->nattrs; i++)
        if (!r->attrs[i].is_int)
            dk_tr_clean_text(r->text + r->attrs[i].off, r->attrs[i].len);
}

/* Protobuf wire format (https://protobuf.dev/programming-guides/encoding/), the few shapes the
 * OTLP trace messages need. */
static size_t dk_pb_vlen(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static void dk_pb_varint(dk_sb *b, uint64_t v)
{
    dk_sb_reserve(b, 10);
    while (v >= 0x80) {
        b->s[b->len++] = (char)(v | 0x80);
        v >>= 7;
    }
    b->s[b->len++] = (char)v;
}

static void dk_pb_tag(dk_sb *b, unsigned field, unsigned wire)
{
    dk_pb_varint(b, (uint64_t)(field << 3 | wire));
}

static void dk_pb_bytes(dk_sb *b, unsigned field, const void *p, size_t n)
{
    dk_pb_tag(b, field, 2);
    dk_pb_varint(b, n);
    dk_sb_put(b, p, n);
}

static void dk_pb_fixed64(dk_sb *b, unsigned field, uint64_t v)
{
    dk_pb_tag(b, field, 1);
    dk_sb_reserve(b, 8);
    for (int i = 0; i < 8; i++)
        b->s[b->len++] = (char)(v >> (8 * i));
}

/* The size of a length-delimited field (one-byte tag) holding n bytes. */
static size_t dk_pb_field(size_t n)
{
    return 1 + dk_pb_vlen(n) + n;
}

/* KeyValue{key=1, value=2: AnyValue{string_value=1 | int_value=3}} */
static size_t dk_pb_any_size(bool is_int, int64_t i, size_t slen)
{
    return is_int ? 1 + dk_pb_vlen((uint64_t)i) : dk_pb_field(slen);
}

static size_t dk_pb_kv_size(const char *key, bool is_int, int64_t i, size_t slen)
{
    return dk_pb_field(strlen(key)) + dk_pb_field(dk_pb_any_size(is_int, i, slen));
}

static void dk_pb_kv(dk_sb *b, unsigned field, const char *key, bool is_int, int64_t i,
                     const char *s, size_t slen)
{
    size_t kl = strlen(key);
    dk_pb_tag(b, field, 2);
    dk_pb_varint(b, dk_pb_kv_size(key, is_int, i, slen));
    dk_pb_bytes(b, 1, key, kl);
    dk_pb_tag(b, 2, 2);
    dk_pb_varint(b, dk_pb_any_size(is_int, i, slen));
    if (is_int) {
        dk_pb_tag(b, 3, 0);
        dk_pb_varint(b, (uint64_t)i);
    } else {
        dk_pb_bytes(b, 1, s, slen);
    }
}

/* A record's strings (cleaned by dk_tr_clean when the batch was taken). */
typedef struct dk_tr_strs {
    const char *name, *msg, *val[DK_SPAN_ATTRS];
    size_t name_len, msg_len, val_len[DK_SPAN_ATTRS];
} dk_tr_strs;

static void dk_tr_strings(const dk_span_rec *r, dk_tr_strs *t)
{
    t->name = r->text;
    t->name_len = r->name_len;
    t->msg = r->text + r->msg_off;
    t->msg_len = r->error ? r->msg_len : 0;
    for (int i = 0; i < r->nattrs; i++) {
        t->val[i] = r->text + r->attrs[i].off;
        t->val_len[i] = r->attrs[i].is_int ? 0 : r->attrs[i].len;
    }
}

static bool dk_tr_has_parent(const dk_span_rec *r)
{
    static const unsigned char zero[8];
    return memcmp(r->parent, zero, 8) != 0;
}

/* Span: trace_id=1 span_id=2 parent_span_id=4 name=5 kind=6 start=7 end=8 attributes=9
 * status=15 (Status: message=2 code=3). */
static size_t dk_pb_status_size(const dk_tr_strs *t)
{
    return (t->msg_len ? dk_pb_field(t->msg_len) : 0) + 2;
}

static size_t dk_pb_span_size(const dk_span_rec *r, const dk_tr_strs *t)
{
    size_t n = dk_pb_field(16) + dk_pb_field(8) + (dk_tr_has_parent(r) ? dk_pb_field(8) : 0) +
               dk_pb_field(t->name_len) + 2 + 9 + 9;
    for (int i = 0; i < r->nattrs; i++)
        n += dk_pb_field(
            dk_pb_kv_size(r->attrs[i].key, r->attrs[i].is_int, r->attrs[i].i, t->val_len[i]));
    if (r->error)
        n += dk_pb_field(dk_pb_status_size(t));
    return n;
}

static void dk_pb_span(dk_sb *b, const dk_span_rec *r, const dk_tr_strs *t)
{
    dk_pb_tag(b, 2, 2);          /* ScopeSpans.spans */
    dk_pb_varint(b, r->pb_size); /* computed by the sizing pass */
    dk_pb_bytes(b, 1, r->trace_id, 16);
    dk_pb_bytes(b, 2, r->span_id, 8);
    if (dk_tr_has_parent(r))
        dk_pb_bytes(b, 4, r->parent, 8);
    dk_pb_bytes(b, 5, t->name, t->name_len);
    dk_pb_tag(b, 6, 0);
    dk_pb_varint(b, r->kind);
    dk_pb_fixed64(b, 7, (uint64_t)r->start_ns);
    dk_pb_fixed64(b, 8, (uint64_t)r->end_ns);
    for (int i = 0; i < r->nattrs; i++)
        dk_pb_kv(b, 9, r->attrs[i].key, r->attrs[i].is_int, r->attrs[i].i, t->val[i],
                 t->val_len[i]);
    if (r->error) {
        dk_pb_tag(b, 15, 2);
        dk_pb_varint(b, dk_pb_status_size(t));
        if (t->msg_len)
            dk_pb_bytes(b, 2, t->msg, t->msg_len);
        dk_pb_tag(b, 3, 0);
        dk_pb_varint(b, 2); /* STATUS_CODE_ERROR */
    }
}

/* JSON (the OTLP/JSON mapping: ids as hex, 64-bit integers as decimal strings, enums as
 * numbers). */
static void dk_js_str(dk_sb *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    dk_sb_reserve(b, 6 * n + 2);
    b->s[b->len++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            b->s[b->len++] = '\\';
            b->s[b->len++] = (char)c;
        } else if (c < 0x20) {
            memcpy(b->s + b->len, "\\u00", 4);
            b->len += 4;
            b->s[b->len++] = hex[c >> 4];
            b->s[b->len++] = hex[c & 15];
        } else {
            b->s[b->len++] = (char)c;
        }
    }
    b->s[b->len++] = '"';
}

static void dk_js_lit(dk_sb *b, const char *s)
{
    dk_sb_put(b, s, strlen(s));
}

static void dk_js_hex(dk_sb *b, const unsigned char *p, size_t n)
{
    dk_sb_reserve(b, 2 * n + 3);
    b->s[b->len++] = '"';
    dk_hex(p, n, b->s + b->len); /* writes a NUL after the digits, within the reserve */
    b->len += 2 * n;
    b->s[b->len++] = '"';
}

static void dk_js_int(dk_sb *b, int64_t v, bool quoted)
{
    char t[24];
    int n = snprintf(t, sizeof t, quoted ? "\"%lld\"" : "%lld", (long long)v);
    dk_sb_put(b, t, (size_t)n);
}

static void dk_js_kv(dk_sb *b, const char *key, bool is_int, int64_t i, const char *s, size_t n)
{
    dk_js_lit(b, "{\"key\":");
    dk_js_str(b, key, strlen(key));
    if (is_int) {
        dk_js_lit(b, ",\"value\":{\"intValue\":");
        dk_js_int(b, i, true);
    } else {
        dk_js_lit(b, ",\"value\":{\"stringValue\":");
        dk_js_str(b, s, n);
    }
    dk_js_lit(b, "}}");
}

static void dk_js_span(dk_sb *b, const dk_span_rec *r, const dk_tr_strs *t)
{
    dk_js_lit(b, "{\"traceId\":");
    dk_js_hex(b, r->trace_id, 16);
    dk_js_lit(b, ",\"spanId\":");
    dk_js_hex(b, r->span_id, 8);
    if (dk_tr_has_parent(r)) {
        dk_js_lit(b, ",\"parentSpanId\":");
        dk_js_hex(b, r->parent, 8);
    }
    dk_js_lit(b, ",\"name\":");
    dk_js_str(b, t->name, t->name_len);
    dk_js_lit(b, ",\"kind\":");
    dk_js_int(b, r->kind, false);
    dk_js_lit(b, ",\"startTimeUnixNano\":");
    dk_js_int(b, r->start_ns, true);
    dk_js_lit(b, ",\"endTimeUnixNano\":");
    dk_js_int(b, r->end_ns, true);
    dk_js_lit(b, ",\"attributes\":[");
    for (int i = 0; i < r->nattrs; i++) {
        if (i)
            dk_js_lit(b, ",");
        dk_js_kv(b, r->attrs[i].key, r->attrs[i].is_int, r->attrs[i].i, t->val[i], t->val_len[i]);
    }
    dk_js_lit(b, "]");
    if (r->error) {
        dk_js_lit(b, ",\"status\":{\"code\":2");
        if (t->msg_len) {
            dk_js_lit(b, ",\"message\":");
            dk_js_str(b, t->msg, t->msg_len);
        }
        dk_js_lit(b, "}");
    }
    dk_js_lit(b, "}");
}

/* The resource (service.name, the SDK, process.pid, OTEL_RESOURCE_ATTRIBUTES) never changes:
 * encoded once, as the Resource message's body (protobuf) or its attributes array (JSON). */
static dk_sb dk_tr_resource;

static void dk_tr_resource_encode(void)
{
    char pid[16];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    const char *keys[DK_TRACE_KV_MAX + 4], *vals[DK_TRACE_KV_MAX + 4];
    int n = 0;
    keys[n] = "service.name", vals[n++] = dk_tr.service_name;
    keys[n] = "telemetry.sdk.name", vals[n++] = "docket";
    keys[n] = "telemetry.sdk.language", vals[n++] = "c";
    keys[n] = "process.pid", vals[n++] = NULL;
    for (int i = 0; i < dk_tr.nresource; i++)
        if (strcmp(dk_tr.resource[i].key, "service.name") != 0)
            keys[n] = dk_tr.resource[i].key, vals[n++] = dk_tr.resource[i].value;
    dk_sb *b = &dk_tr_resource;
    b->len = 0;
    if (!dk_tr.json) {
        for (int i = 0; i < n; i++)
            dk_pb_kv(b, 1, keys[i], !vals[i], (int64_t)getpid(), vals[i] ? vals[i] : "",
                     vals[i] ? strlen(vals[i]) : 0);
        return;
    }
    dk_js_lit(b, "[");
    for (int i = 0; i < n; i++) {
        if (i)
            dk_js_lit(b, ",");
        dk_js_kv(b, keys[i], !vals[i], (int64_t)getpid(), vals[i] ? vals[i] : "",
                 vals[i] ? strlen(vals[i]) : 0);
    }
    dk_js_lit(b, "]");
}

static const char dk_tr_scope[] = "\x0a\x06"
                                  "docket"; /* InstrumentationScope{name="docket"} */

/* One ExportTraceServiceRequest for n records into out (cleared first). n == 0 makes the
 * empty request a probe sends. */
static void dk_tr_encode(dk_sb *out, dk_span_rec *recs, int n, dk_tr_strs *t)
{
    out->len = 0;
    if (dk_tr.json) {
        if (n == 0) {
            dk_js_lit(out, "{\"resourceSpans\":[]}");
            return;
        }
        dk_js_lit(out, "{\"resourceSpans\":[{\"resource\":{\"attributes\":");
        dk_sb_put(out, dk_tr_resource.s, dk_tr_resource.len);
        dk_js_lit(out, "},\"scopeSpans\":[{\"scope\":{\"name\":\"docket\"},\"spans\":[");
        for (int i = 0; i < n; i++) {
            if (i)
                dk_js_lit(out, ",");
            dk_tr_strings(&recs[i], t);
            dk_js_span(out, &recs[i], t);
        }
        dk_js_lit(out, "]}]}]}");
        return;
    }
    if (n == 0)
        return; /* an empty message is zero bytes */
    /* sizes first: every length prefix is known before its message is written */
    size_t scope = dk_pb_field(sizeof dk_tr_scope - 1);
    for (int i = 0; i < n; i++) {
        dk_tr_strings(&recs[i], t);
        recs[i].pb_size = (uint32_t)dk_pb_span_size(&recs[i], t);
        scope += dk_pb_field(recs[i].pb_size);
    }
    size_t rs = dk_pb_field(dk_tr_resource.len) + dk_pb_field(scope);
    dk_sb_reserve(out, dk_pb_field(rs));
    dk_pb_tag(out, 1, 2); /* ExportTraceServiceRequest.resource_spans */
    dk_pb_varint(out, rs);
    dk_pb_bytes(out, 1, dk_tr_resource.s, dk_tr_resource.len); /* ResourceSpans.resource */
    dk_pb_tag(out, 2, 2);                                      /* ResourceSpans.scope_spans */
    dk_pb_varint(out, scope);
    dk_pb_bytes(out, 1, dk_tr_scope, sizeof dk_tr_scope - 1); /* ScopeSpans.scope */
    for (int i = 0; i < n; i++) {
        dk_tr_strings(&recs[i], t);
        dk_pb_span(out, &recs[i], t);
    }
}

/* ---------- export: the exporter thread ---------- */

_Static_assert(1 + DK_TRACE_KV_MAX <= DK_HTTP_CALL_MAX_HEADERS, "an export's headers fit a call");

/* The collector's answer is read and dropped, whatever its size. */
static void dk_tr_call_headers(dk_http_call *c)
{
    (void)c;
}

static dk_http_data_action dk_tr_call_data(dk_http_call *c, const char *data, size_t len)
{
    (void)c, (void)data, (void)len;
    return DK_HTTP_DATA_OK;
}

/* Posts body to the collector and waits for the answer (bounded by the export timeout, which
 * covers connecting too); true for a 2xx. a holds the response headers and is reset after. */
static bool dk_tr_post(dk_arena *a, const dk_sb *body)
{
    dk_http_wait w = {.call = {
                          .arena = a,
                          .method = "POST",
                          .url = dk_tr.url,
                          .nheaders = dk_tr.nheaders,
                          .body = body->len ? body->s : "",
                          .body_len = body->len,
                          .connect_timeout_ms = (int)dk_tr.timeout_ms,
                          .timeout_ms = (int)dk_tr.timeout_ms,
                          .on_headers = dk_tr_call_headers,
                          .on_data = dk_tr_call_data,
                      }};
    memcpy(w.call.headers, dk_tr.headers, (size_t)dk_tr.nheaders * sizeof dk_tr.headers[0]);
    bool ok = dk_http_wait_run(dk_tr.http_ops, dk_tr.http, &w);
    ok = ok && w.call.error == DK_OK && w.call.status >= 200 && w.call.status < 300;
    dk_arena_reset(a);
    return ok;
}

/* Frees the otel.headers lines (the first line, Content-Type, is a literal). */
static void dk_tr_headers_free(void)
{
    for (int i = 1; i < dk_tr.nheaders; i++)
        dk_free((char *)dk_tr.headers[i]);
    dk_tr.nheaders = 0;
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
    atomic_fetch_add(&dk_tr_dropped_export, (unsigned long long)dk_tr.count);
    dk_tr.head = dk_tr.count = 0;
}

static void dk_tr_warn(int64_t *last_warn, int n, int64_t backoff_ms)
{
    if (*last_warn && dk_mono_ms() - *last_warn < 60000)
        return;
    *last_warn = dk_mono_ms();
    dk_log_warn("trace export to %s failed; %d span(s) dropped, spans are dropped unrecorded "
                "until it answers (next try in %lld ms; docket_otel_spans_dropped_total counts "
                "them)",
                dk_tr.url, n, (long long)backoff_ms);
}

static void *dk_tr_loop(void *arg)
{
    (void)arg;
    dk_arena *a = dk_arena_new();
    dk_span_rec *batch = dk_malloc((size_t)dk_tr.batch_size * sizeof *batch);
    dk_tr_strs *strs = dk_malloc(sizeof *strs);
    dk_sb body = {0};
    int64_t last_warn = 0;
    /* the collector is probed (an empty export) before anything is recorded for it; after a
     * failure the probe repeats after a pause that doubles from 1 s up to 30 s, and until a
     * probe succeeds the gate stays in back-off: nothing is recorded nor encoded */
    int64_t backoff_ms = 0;
    bool probe = true;
    pthread_mutex_lock(&dk_tr.lock);
    for (;;) {
        if (probe && !dk_tr.stop) {
            if (backoff_ms > 0) {
                int64_t until = dk_mono_ms() + backoff_ms;
                while (!dk_tr.stop && dk_mono_ms() < until)
                    dk_tr_wait(until - dk_mono_ms());
                if (dk_tr.stop)
                    continue;
            }
            pthread_mutex_unlock(&dk_tr.lock);
            dk_tr_encode(&body, NULL, 0, strs);
            bool ok = dk_tr_post(a, &body);
            pthread_mutex_lock(&dk_tr.lock);
            if (ok) {
                probe = false;
                backoff_ms = 0;
                atomic_store(&dk_tr_gate,
                             dk_tr.count >= dk_tr.max_queue ? DK_GATE_FULL : DK_GATE_OPEN);
            } else {
                atomic_store(&dk_tr_gate, DK_GATE_BACKOFF);
                dk_tr_drop_queued();
                backoff_ms = backoff_ms ? (backoff_ms * 2 > 30000 ? 30000 : backoff_ms * 2) : 1000;
                dk_tr_warn(&last_warn, 0, backoff_ms);
            }
            continue;
        }
        while (!dk_tr.stop && dk_tr.count < dk_tr.batch_size &&
               (dk_tr.count == 0 || dk_mono_ms() - dk_tr.oldest_ms < dk_tr.delay_ms))
            dk_tr_wait(dk_tr.count == 0 ? dk_tr.delay_ms
                                        : dk_tr.delay_ms - (dk_mono_ms() - dk_tr.oldest_ms));
        if (dk_tr.stop && (dk_tr.count == 0 || backoff_ms > 0)) {
            /* shutting down: what is left goes when the collector answers (or has not been
             * probed yet); when it is failing, it is dropped rather than waited on batch after
             * batch */
            dk_tr_drop_queued();
            break;
        }
        int n = dk_tr.count < dk_tr.batch_size ? dk_tr.count : dk_tr.batch_size;
        for (int i = 0; i < n; i++) {
            memcpy(&batch[i], &dk_tr.ring[dk_tr.head], offsetof(dk_span_rec, text));
            memcpy(batch[i].text, dk_tr.ring[dk_tr.head].text, dk_tr.ring[dk_tr.head].used);
            if (++dk_tr.head == dk_tr.max_queue)
                dk_tr.head = 0;
        }
        dk_tr.count -= n;
        dk_tr.oldest_ms = dk_mono_ms();
        if (atomic_load(&dk_tr_gate) == DK_GATE_FULL)
            atomic_store(&dk_tr_gate, DK_GATE_OPEN);
        pthread_mutex_unlock(&dk_tr.lock);

        for (int i = 0; i < n; i++)
            dk_tr_clean(&batch[i]);
        dk_tr_encode(&body, batch, n, strs);
        bool ok = dk_tr_post(a, &body);
        pthread_mutex_lock(&dk_tr.lock);
        if (ok) {
            atomic_fetch_add(&dk_tr_exported, (unsigned long long)n);
        } else {
            atomic_store(&dk_tr_gate, DK_GATE_BACKOFF);
            atomic_fetch_add(&dk_tr_dropped_export, (unsigned long long)n);
            dk_tr_drop_queued();
            probe = true;
            backoff_ms = 1000;
            dk_tr_warn(&last_warn, n, backoff_ms);
        }
    }
    atomic_store(&dk_tr_gate, DK_GATE_OPEN);
    pthread_mutex_unlock(&dk_tr.lock);
    dk_free(body.s);
    dk_free(strs);
    dk_free(batch);
    dk_arena_free(a);
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
                      "Spans dropped: the export queue was full, an export failed, or the "
                      "collector was failing (dropped unrecorded until it answers).");
    dk_metrics_sample(out, "docket_otel_spans_dropped_total", "reason=\"queue_full\"",
                      (double)atomic_load(&dk_tr_dropped_full));
    dk_metrics_sample(out, "docket_otel_spans_dropped_total", "reason=\"export_failed\"",
                      (double)atomic_load(&dk_tr_dropped_export));
    dk_metrics_sample(out, "docket_otel_spans_dropped_total", "reason=\"collector_down\"",
                      (double)atomic_load(&dk_tr_dropped_down));
    pthread_mutex_lock(&dk_tr.lock);
    int queued = dk_tr.count;
    pthread_mutex_unlock(&dk_tr.lock);
    dk_metrics_family(out, "docket_otel_queue_spans", "gauge", "Spans waiting for export.");
    dk_metrics_sample(out, "docket_otel_queue_spans", "", queued);
    dk_metrics_family(out, "docket_otel_collector_up", "gauge",
                      "1 while the collector answers, 0 while exports are in back-off.");
    dk_metrics_sample(out, "docket_otel_collector_up", "",
                      atomic_load(&dk_tr_gate) == DK_GATE_BACKOFF ? 0 : 1);
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
    const char *proto = opt->protocol && *opt->protocol ? opt->protocol : "http/protobuf";
    if (strcmp(proto, "http/protobuf") != 0 && strcmp(proto, "http/json") != 0) {
        snprintf(err, cap,
                 "otel.protocol: '%s' is not supported (http/protobuf or http/json; grpc is not "
                 "implemented)",
                 proto);
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
    if (!opt->http_ops || !opt->http) {
        dk_tr_kv_free(hdr, nhdr);
        dk_tr_kv_free(res, nres);
        snprintf(err, cap, "no HTTP client to export traces through");
        return DK_E_INTERNAL;
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
    dk_tr.json = strcmp(proto, "http/json") == 0;
    dk_tr.http_ops = opt->http_ops;
    dk_tr.http = opt->http;
    dk_tr.nheaders = 0;
    dk_tr.headers[dk_tr.nheaders++] =
        dk_tr.json ? "Content-Type: application/json" : "Content-Type: application/x-protobuf";
    for (int i = 0; i < nhdr; i++) {
        size_t l = strlen(hdr[i].key) + strlen(hdr[i].value) + 3;
        char *line = dk_malloc(l);
        snprintf(line, l, "%s: %s", hdr[i].key, hdr[i].value);
        dk_tr.headers[dk_tr.nheaders++] = line;
    }
    dk_tr_kv_free(hdr, nhdr);
    dk_tr_resource_encode();
    /* the whole ring up front (pages are touched only as spans fill it) */
    dk_tr.ring = dk_malloc((size_t)dk_tr.max_queue * sizeof *dk_tr.ring);
    dk_tr.head = dk_tr.count = 0;
    dk_tr.stop = false;
    atomic_store(&dk_tr_gate, DK_GATE_OPEN);
    if (pthread_create(&dk_tr.thread, NULL, dk_tr_loop, NULL) != 0) {
        dk_free(dk_tr.ring);
        dk_tr.ring = NULL;
        dk_tr_headers_free();
        dk_tr_kv_free(dk_tr.resource, dk_tr.nresource);
        dk_tr.nresource = 0;
        dk_free(dk_tr_resource.s);
        dk_tr_resource = (dk_sb){0};
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
    dk_tr_headers_free();
    dk_tr_kv_free(dk_tr.resource, dk_tr.nresource);
    dk_tr.nresource = 0;
    dk_free(dk_tr_resource.s);
    dk_tr_resource = (dk_sb){0};
}
