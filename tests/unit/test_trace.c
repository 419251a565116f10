/* test_trace.c — W3C traceparent parsing, sampling rules, SQL span names, the current context
 * and span parenting, the OTLP/JSON document posted to a collector (a socket server in this
 * test reads it), and the bounded queue: a dead collector or a full queue drops and counts,
 * never blocks. Exports go through the libcurl client adapter, as in docket. */
#include "testutil.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/common.h"
#include "core/timeutil.h"
#include "core/trace.h"
#include "adapters/http_client.h"
#include "core/banned.h"

static void test_traceparent_parse(void **state)
{
    (void)state;
    char t[33], s[17];
    bool sampled = false;
    assert_true(dk_traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", t,
                                     s, &sampled));
    assert_string_equal(t, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(s, "00f067aa0ba902b7");
    assert_true(sampled);
    assert_true(dk_traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", t,
                                     s, &sampled));
    assert_false(sampled);
    /* a later version may append fields */
    assert_true(dk_traceparent_parse(
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever", t, s, &sampled));
    static const char *const bad[] = {
        NULL,
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   /* upper case */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   /* zero parent */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* forbidden version */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", /* v00 has no more */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
    };
    for (size_t i = 0; i < DK_ARRAY_LEN(bad); i++)
        if (dk_traceparent_parse(bad[i], t, s, &sampled))
            fail_msg("accepted %s", bad[i] ? bad[i] : "NULL");
}

static void test_sql_names(void **state)
{
    (void)state;
    static const struct {
        const char *sql, *name;
    } cases[] = {
        {"SELECT id, title FROM tasks WHERE id = $1", "SELECT tasks"},
        {"  select * from tasks.tasks_outbox order by seq", "SELECT tasks.tasks_outbox"},
        {"INSERT INTO auth_sessions (id) VALUES ($1)", "INSERT auth_sessions"},
        {"UPDATE users SET name = $2 WHERE id = $1", "UPDATE users"},
        {"DELETE FROM notifications WHERE user_id = 'secret'", "DELETE notifications"},
        {"WITH x AS (SELECT 1) SELECT * FROM x", "WITH x"},
        {"BEGIN", "BEGIN"},
        {"", "SQL"},
    };
    for (size_t i = 0; i < DK_ARRAY_LEN(cases); i++) {
        char name[80];
        dk_trace_sql_name(cases[i].sql, name, sizeof name);
        assert_string_equal(name, cases[i].name);
    }
}

/* ---------- a collector: one thread accepting connections, keeping each body ---------- */

typedef struct collector {
    int fd;
    int port;
    pthread_t thread;
    pthread_mutex_t lock;
    json_t *bodies; /* array of parsed documents */
    int status;     /* the HTTP status it answers; 0: none (it holds the connection) */
    int held[64];
    int nheld;
    unsigned char *raw[32]; /* the first bodies as sent (protobuf) */
    size_t raw_len[32];
    int nraw;
} collector;

static void *collector_main(void *arg)
{
    collector *c = arg;
    for (;;) {
        int cfd = accept(c->fd, NULL, NULL);
        if (cfd < 0)
            return NULL;
        char *buf = malloc(1 << 20);
        size_t len = 0;
        long want = -1;
        char *body = NULL;
        for (;;) {
            ssize_t n = read(cfd, buf + len, (1 << 20) - 1 - len);
            if (n <= 0)
                break;
            len += (size_t)n;
            buf[len] = '\0';
            char *end = strstr(buf, "\r\n\r\n");
            if (end && want < 0) {
                char *cl = strcasestr(buf, "Content-Length:");
                want = cl ? strtol(cl + 15, NULL, 10) : 0;
                body = end + 4;
            }
            if (body && (long)(len - (size_t)(body - buf)) >= want)
                break;
        }
        if (body) {
            json_t *doc = json_loads(body, 0, NULL);
            pthread_mutex_lock(&c->lock);
            if (doc)
                json_array_append_new(c->bodies, doc);
            if (c->nraw < 32) {
                size_t bl = (size_t)(len - (size_t)(body - buf));
                c->raw[c->nraw] = malloc(bl + 1);
                memcpy(c->raw[c->nraw], body, bl);
                c->raw_len[c->nraw++] = bl;
            }
            pthread_mutex_unlock(&c->lock);
        }
        if (c->status == 0 && c->nheld < 64) {
            c->held[c->nheld++] = cfd; /* a hung collector: no answer until it stops */
            free(buf);
            continue;
        }
        char resp[128];
        int n = snprintf(resp, sizeof resp,
                         "HTTP/1.1 %d X\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                         c->status);
        ssize_t w = write(cfd, resp, (size_t)n);
        (void)w;
        close(cfd);
        free(buf);
    }
}

static void collector_start(collector *c, int status)
{
    memset(c, 0, sizeof *c);
    c->status = status;
    c->bodies = json_array();
    pthread_mutex_init(&c->lock, NULL);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(c->fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(c->fd, 16), 0);
    socklen_t al = sizeof a;
    getsockname(c->fd, (struct sockaddr *)&a, &al);
    c->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&c->thread, NULL, collector_main, c), 0);
}

static void collector_stop(collector *c)
{
    shutdown(c->fd, SHUT_RDWR);
    close(c->fd);
    pthread_join(c->thread, NULL);
    json_decref(c->bodies);
    for (int i = 0; i < c->nheld; i++)
        close(c->held[i]);
    for (int i = 0; i < c->nraw; i++)
        free(c->raw[i]);
    pthread_mutex_destroy(&c->lock);
}

static const char *test_protocol = "http/json"; /* the tests read JSON unless they say */
static int64_t test_timeout_ms = 2000;
static dk_http_client *test_http; /* the exporter's client, opened once for all tests */

static int test_http_close(void **state)
{
    (void)state;
    if (test_http)
        dk_http_client_curl_ops.close(test_http);
    test_http = NULL;
    return 0;
}

static void start_tracing(int port, const char *sampler, double ratio, int max_queue,
                          int64_t delay_ms)
{
    char url[64], err[256] = "";
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
    dk_trace_options o = {.endpoint = url,
                          .service_name = "docket-test",
                          .resource_attributes = "deployment.environment=unit%20test",
                          .headers = "x-api-key=k%3Dv",
                          .protocol = test_protocol,
                          .sampler = sampler,
                          .sampler_ratio = ratio,
                          .max_queue = max_queue,
                          .batch_size = 64,
                          .schedule_delay_ms = delay_ms,
                          .export_timeout_ms = test_timeout_ms,
                          .http_ops = &dk_http_client_curl_ops};
    dk_http_client_options ho = {.max_connections = 1};
    if (!test_http && dk_http_client_curl_ops.open(&ho, &test_http) != DK_OK)
        fail_msg("cannot open the HTTP client");
    o.http = test_http;
    if (dk_trace_start(&o, err, sizeof err) != DK_OK)
        fail_msg("dk_trace_start: %s", err);
}

static json_t *find_span(json_t *docs, const char *name)
{
    size_t i, j, k, l;
    json_t *doc, *rs, *ss, *sp;
    json_array_foreach(docs, i, doc)
    {
        json_array_foreach(json_object_get(doc, "resourceSpans"), j, rs)
        {
            json_array_foreach(json_object_get(rs, "scopeSpans"), k, ss)
            {
                json_array_foreach(json_object_get(ss, "spans"), l, sp)
                {
                    if (strcmp(json_string_value(json_object_get(sp, "name")), name) == 0)
                        return sp;
                }
            }
        }
    }
    return NULL;
}

static void test_export_document(void **state)
{
    (void)state;
    collector c;
    collector_start(&c, 200);
    start_tracing(c.port, NULL, 1, 128, 50);
    assert_true(dk_trace_enabled());
    /* a request from a sampled caller, with a child that has a child */
    const char *tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    char t[33], parent[17];
    bool sampled;
    assert_true(dk_traceparent_parse(tp, t, parent, &sampled));
    assert_true(dk_trace_sample(t, sampled));
    dk_trace_enter(t, "1111111111111111", true);
    dk_span *outer = dk_span_start("process task.updated", DK_SPAN_CONSUMER);
    dk_span_push(outer);
    dk_span *sql = dk_span_sql("sqlite", "SELECT id FROM tasks WHERE id = $1");
    dk_span_error(sql, "locked");
    dk_span_end(sql);
    char cur[DK_TRACEPARENT_LEN];
    assert_true(dk_trace_current_traceparent(cur));
    char outer_tp[DK_TRACEPARENT_LEN];
    assert_true(dk_span_traceparent(outer, outer_tp));
    assert_string_equal(cur, outer_tp);
    /* statement names are cached by a hash of the text: new text at the same address (an
     * arena reused) gets its own name */
    char stmt[64] = "SELECT a FROM t1 WHERE x = $1";
    dk_span_end(dk_span_sql("sqlite", stmt));
    dk_span_end(dk_span_sql("sqlite", stmt));
    memcpy(stmt + 15, "2", 1);
    dk_span_end(dk_span_sql("sqlite", stmt));
    dk_span_pop(outer);
    assert_string_equal(dk_trace_current_span_id(), "1111111111111111");
    dk_span_attr_int(outer, "docket.count", 3);
    dk_span_end(outer);
    dk_trace_server_span(t, "1111111111111111", parent, true, "GET", "/api/v1/tasks/{id}", "tasks",
                         200, 0.004);
    dk_trace_leave();
    assert_null(dk_trace_current_trace_id());
    assert_null(dk_span_start("outside", DK_SPAN_INTERNAL));
    dk_trace_stop(); /* flushes */
    pthread_mutex_lock(&c.lock);
    json_t *server = find_span(c.bodies, "GET /api/v1/tasks/{id}");
    json_t *cons = find_span(c.bodies, "process task.updated");
    json_t *q = find_span(c.bodies, "SELECT tasks");
    assert_non_null(server);
    assert_non_null(cons);
    assert_non_null(q);
    assert_non_null(find_span(c.bodies, "SELECT t1"));
    assert_non_null(find_span(c.bodies, "SELECT t2"));
    assert_string_equal(json_string_value(json_object_get(server, "traceId")), t);
    assert_string_equal(json_string_value(json_object_get(server, "parentSpanId")), parent);
    assert_int_equal(json_integer_value(json_object_get(server, "kind")), 2);
    assert_string_equal(json_string_value(json_object_get(cons, "parentSpanId")),
                        "1111111111111111");
    assert_string_equal(json_string_value(json_object_get(q, "parentSpanId")),
                        json_string_value(json_object_get(cons, "spanId")));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(q, "status"), "code")), 2);
    /* 64-bit integers are decimal strings in OTLP/JSON */
    const char *st = json_string_value(json_object_get(server, "startTimeUnixNano"));
    const char *en = json_string_value(json_object_get(server, "endTimeUnixNano"));
    assert_non_null(st);
    assert_non_null(en);
    assert_true(strtoll(en, NULL, 10) - strtoll(st, NULL, 10) == 4000000);
    char *text = json_dumps(c.bodies, 0); /* every export (the first is an empty probe) */
    assert_non_null(
        strstr(text, "\"service.name\", \"value\": {\"stringValue\": \"docket-test\"}"));
    assert_non_null(strstr(text, "\"stringValue\": \"unit test\""));
    assert_null(strstr(text, "$1")); /* no statement text */
    free(text);
    pthread_mutex_unlock(&c.lock);
    collector_stop(&c);
}

static void test_sampling(void **state)
{
    (void)state;
    collector c;
    collector_start(&c, 200);
    start_tracing(c.port, "parentbased_traceidratio", 0.25, 128, 50);
    int yes = 0;
    for (int i = 0; i < 4000; i++) {
        char id[33];
        unsigned long long a = (unsigned long long)rand(), b = (unsigned long long)rand();
        snprintf(id, sizeof id, "%016llx%08llx%08llx", a * 2654435761ull, b, a ^ b);
        bool s = dk_trace_sample(id, -1);
        assert_int_equal(s, dk_trace_sample(id, -1)); /* the same trace, the same answer */
        yes += s;
    }
    assert_in_range(yes, 800, 1200);
    /* a parent's decision wins */
    assert_true(dk_trace_sample("4bf92f3577b34da6a3ce929d0e0e4736", 1));
    assert_false(dk_trace_sample("4bf92f3577b34da6a3ce929d0e0e4736", 0));
    dk_trace_stop();
    assert_false(dk_trace_sample("4bf92f3577b34da6a3ce929d0e0e4736", 1)); /* off: never */
    char err[256];
    dk_trace_options bad = {.endpoint = "http://127.0.0.1:1", .sampler = "sometimes"};
    assert_int_equal(dk_trace_start(&bad, err, sizeof err), DK_E_VALIDATION);
    bad.sampler = "traceidratio";
    bad.sampler_ratio = 1.5;
    assert_int_equal(dk_trace_start(&bad, err, sizeof err), DK_E_VALIDATION);
    bad.sampler_ratio = 0.5;
    bad.headers = "no-equals-sign";
    assert_int_equal(dk_trace_start(&bad, err, sizeof err), DK_E_VALIDATION);
    bad.headers = NULL; /* valid now, but there is no client to export through */
    assert_int_equal(dk_trace_start(&bad, err, sizeof err), DK_E_INTERNAL);
    assert_false(dk_trace_enabled());
    collector_stop(&c);
}

static void test_dead_collector_and_full_queue(void **state)
{
    (void)state;
    /* a port nobody listens on: exports fail fast, spans are dropped and counted */
    collector c;
    collector_start(&c, 200);
    int dead = c.port;
    collector_stop(&c);
    uint64_t before = dk_trace_dropped();
    start_tracing(dead, "always_on", 1, 16, 60000); /* a long delay: the queue fills first */
    dk_trace_enter("4bf92f3577b34da6a3ce929d0e0e4736", "1111111111111111", true);
    int64_t t0 = dk_mono_ms();
    for (int i = 0; i < 1000; i++)
        dk_span_end(dk_span_start("work", DK_SPAN_INTERNAL));
    int64_t took = dk_mono_ms() - t0;
    dk_trace_leave();
    assert_true(took < 1000); /* recording never waits on the collector */
    /* 16 fit (a batch of 16 wakes the exporter, which fails), the rest were dropped at once */
    assert_true(dk_trace_dropped() - before >= 1000 - 2 * 16);
    /* once the probe has failed, spans are not even started (dropped and counted) */
    int64_t until = dk_mono_ms() + 5000;
    int started = 0;
    dk_trace_enter("4bf92f3577b34da6a3ce929d0e0e4736", "1111111111111111", true);
    for (;;) {
        dk_span *s = dk_span_start("probe", DK_SPAN_INTERNAL);
        if (!s)
            break;
        dk_span_end(s);
        started++;
        assert_true(dk_mono_ms() < until);
        usleep(10000);
    }
    for (int i = 0; i < 100; i++)
        assert_null(dk_span_start("work", DK_SPAN_INTERNAL));
    dk_trace_leave();
    dk_trace_stop();
    assert_int_equal(dk_trace_dropped() - before, 1000 + 100 + 1 + (uint64_t)started);

    /* a collector answering 500: failed exports are dropped too, counted, not retried forever */
    collector_start(&c, 500);
    before = dk_trace_dropped();
    uint64_t exported = dk_trace_exported();
    start_tracing(c.port, "always_on", 1, 64, 20);
    dk_trace_enter("4bf92f3577b34da6a3ce929d0e0e4736", "1111111111111111", true);
    for (int i = 0; i < 10; i++)
        dk_span_end(dk_span_start("work", DK_SPAN_INTERNAL));
    dk_trace_leave();
    dk_trace_stop();
    assert_int_equal(dk_trace_dropped() - before, 10);
    assert_int_equal(dk_trace_exported(), exported);
    collector_stop(&c);
}

static void test_collector_hanging_or_going_away(void **state)
{
    (void)state;
    /* a collector that never answers: the probe times out, then nothing is recorded */
    collector c;
    collector_start(&c, 0);
    test_timeout_ms = 200;
    uint64_t before = dk_trace_dropped();
    start_tracing(c.port, "always_on", 1, 128, 20);
    test_timeout_ms = 2000;
    dk_trace_enter("4bf92f3577b34da6a3ce929d0e0e4736", "1111111111111111", true);
    int64_t t0 = dk_mono_ms();
    int recorded = 0;
    for (dk_span *s; (s = dk_span_start("work", DK_SPAN_INTERNAL)) != NULL; usleep(5000)) {
        dk_span_end(s);
        recorded++;
        assert_true(dk_mono_ms() - t0 < 5000);
    }
    for (int i = 0; i < 50; i++)
        assert_null(dk_span_start("work", DK_SPAN_INTERNAL));
    dk_trace_leave();
    int64_t t1 = dk_mono_ms();
    dk_trace_stop(); /* in back-off: drops at once, does not wait for the collector */
    assert_true(dk_mono_ms() - t1 < 1000);
    assert_int_equal(dk_trace_dropped() - before, (uint64_t)recorded + 1 + 50);
    collector_stop(&c);

    /* a collector that answers, then goes away: the next export fails, and from then on spans
     * are dropped before they are recorded */
    collector_start(&c, 200);
    uint64_t exported = dk_trace_exported();
    start_tracing(c.port, "always_on", 1, 128, 20);
    dk_trace_enter("4bf92f3577b34da6a3ce929d0e0e4736", "1111111111111111", true);
    for (int i = 0; i < 5; i++)
        dk_span_end(dk_span_start("before", DK_SPAN_INTERNAL));
    t0 = dk_mono_ms();
    while (dk_trace_exported() - exported < 5) {
        assert_true(dk_mono_ms() - t0 < 5000);
        usleep(5000);
    }
    collector_stop(&c);
    before = dk_trace_dropped();
    recorded = 0;
    t0 = dk_mono_ms();
    for (dk_span *s; (s = dk_span_start("after", DK_SPAN_INTERNAL)) != NULL; usleep(5000)) {
        dk_span_end(s);
        recorded++;
        assert_true(dk_mono_ms() - t0 < 5000);
    }
    assert_true(recorded >= 1); /* the export that found it gone */
    dk_trace_leave();
    dk_trace_stop();
    assert_int_equal(dk_trace_dropped() - before, (uint64_t)recorded + 1);
    assert_int_equal(dk_trace_exported() - exported, 5);
}

/* The nth (0-based) length-delimited field number f of a protobuf message, or false. The
 * system test decodes with the official generated code; this walker checks the nesting. */
static bool pb_field(const unsigned char *p, size_t n, unsigned f, int nth,
                     const unsigned char **out, size_t *out_len)
{
    size_t i = 0;
    while (i < n) {
        uint64_t key = 0, len = 0;
        for (int sh = 0; i < n; sh += 7) {
            key |= (uint64_t)(p[i] & 0x7f) << sh;
            if (!(p[i++] & 0x80))
                break;
        }
        unsigned wire = (unsigned)(key & 7);
        if (wire == 0) {
            while (i < n && (p[i++] & 0x80))
                ;
        } else if (wire == 1) {
            i += 8;
        } else if (wire == 5) {
            i += 4;
        } else if (wire == 2) {
            for (int sh = 0; i < n; sh += 7) {
                len |= (uint64_t)(p[i] & 0x7f) << sh;
                if (!(p[i++] & 0x80))
                    break;
            }
            if (i + len > n)
                return false;
            if ((key >> 3) == f && nth-- == 0) {
                *out = p + i;
                *out_len = (size_t)len;
                return true;
            }
            i += (size_t)len;
        } else {
            return false;
        }
    }
    return false;
}

static void test_protobuf_export(void **state)
{
    (void)state;
    collector c;
    collector_start(&c, 200);
    test_protocol = NULL; /* the default: http/protobuf */
    start_tracing(c.port, "always_on", 1, 128, 50);
    test_protocol = "http/json";
    dk_trace_enter("4bf92f3577b34da6a3ce929d0e0e4736", "1111111111111111", true);
    dk_span *s = dk_span_start("work \xff half", DK_SPAN_INTERNAL); /* invalid UTF-8 */
    dk_span_attr_int(s, "docket.count", -3);
    dk_span_attr_str(s, "docket.what", "caf\xc3\xa9");
    dk_span_error(s, "broke");
    dk_span_end(s);
    dk_trace_leave();
    dk_trace_stop();
    pthread_mutex_lock(&c.lock);
    const unsigned char *rs = NULL, *ss, *sp, *f, *res;
    size_t rsl = 0, ssl, spl, fl, resl;
    for (int i = 0; i < c.nraw && !rs; i++) /* the first bodies may be empty probes */
        if (c.raw_len[i] > 0)
            assert_true(pb_field(c.raw[i], c.raw_len[i], 1, 0, &rs, &rsl));
    assert_non_null(rs);
    assert_true(pb_field(rs, rsl, 1, 0, &res, &resl)); /* the resource */
    assert_non_null(memmem(res, resl, "docket-test", 11));
    assert_non_null(memmem(res, resl, "unit test", 9));
    assert_true(pb_field(rs, rsl, 2, 0, &ss, &ssl));
    assert_true(pb_field(ss, ssl, 2, 0, &sp, &spl));
    assert_false(pb_field(ss, ssl, 2, 1, &f, &fl)); /* one span */
    assert_true(pb_field(sp, spl, 1, 0, &f, &fl));
    assert_int_equal(fl, 16);
    assert_memory_equal(f, "\x4b\xf9\x2f\x35\x77\xb3\x4d\xa6\xa3\xce\x92\x9d\x0e\x0e\x47\x36", 16);
    assert_true(pb_field(sp, spl, 4, 0, &f, &fl)); /* the parent */
    assert_memory_equal(f, "\x11\x11\x11\x11\x11\x11\x11\x11", 8);
    assert_true(pb_field(sp, spl, 5, 0, &f, &fl)); /* the name, made valid UTF-8 */
    assert_int_equal(fl, strlen("work ? half"));
    assert_memory_equal(f, "work ? half", fl);
    assert_true(pb_field(sp, spl, 9, 1, &f, &fl)); /* the second attribute */
    assert_non_null(memmem(f, fl, "caf\xc3\xa9", 5));
    assert_true(pb_field(sp, spl, 15, 0, &f, &fl)); /* status: message "broke", code 2 */
    assert_int_equal(fl, 2 + 5 + 2);
    assert_memory_equal(f + 7, "\x18\x02", 2);
    pthread_mutex_unlock(&c.lock);
    collector_stop(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traceparent_parse),
        cmocka_unit_test(test_sql_names),
        cmocka_unit_test(test_export_document),
        cmocka_unit_test(test_sampling),
        cmocka_unit_test(test_dead_collector_and_full_queue),
        cmocka_unit_test(test_protobuf_export),
        cmocka_unit_test(test_collector_hanging_or_going_away),
    };
    return cmocka_run_group_tests(tests, NULL, test_http_close);
}
