/* test_metrics.c — the Prometheus registry: request counters per label set, histogram buckets,
 * sums and counts, process metrics, collectors, and the text format's shape. */
#include "testutil.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/metrics.h"
#include "core/banned.h"

static int setup(void **state)
{
    *state = dk_arena_new();
    return 0;
}

static int teardown(void **state)
{
    dk_metrics_clear_collectors();
    dk_arena_free(*state);
    return 0;
}

static char *render(dk_arena *a)
{
    size_t len = 0;
    char *text = dk_metrics_render(a, &len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    assert_true(len > 0);
    assert_int_equal(text[len - 1], '\n'); /* the format needs a final newline */
    return text;
}

/* The number of lines of text that start with prefix. */
static int count_lines(const char *text, const char *prefix)
{
    int n = 0;
    size_t pl = strlen(prefix);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, prefix, pl) == 0)
            n++;
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return n;
}

/* The value on the line that starts with prefix (exactly one such line is required). */
static double line_value(const char *text, const char *prefix)
{
    int n = count_lines(text, prefix);
    if (n != 1)
        fail_msg("%d lines start with %s", n, prefix);
    size_t pl = strlen(prefix);
    for (const char *p = text; *p;) {
        if (strncmp(p, prefix, pl) == 0) {
            /* the value follows the line's last space */
            const char *nl = strchr(p, '\n');
            assert_non_null(nl);
            const char *sp = nl;
            while (sp > p && sp[-1] != ' ')
                sp--;
            assert_true(sp > p);
            return strtod(sp, NULL);
        }
        p = strchr(p, '\n');
        if (!p)
            break;
        p++;
    }
    return NAN;
}

static void test_counters(void **state)
{
    dk_arena *a = *state;
    dk_metrics_http("svc_counters", "GET", "/things/{id}", 200, 0.001);
    dk_metrics_http("svc_counters", "GET", "/things/{id}", 200, 0.002);
    dk_metrics_http("svc_counters", "GET", "/things/{id}", 404, 0.001);
    dk_metrics_http("svc_counters", "POST", "/things", 201, 0.003);
    char *t = render(a);
    assert_int_equal(line_value(t, "http_requests_total{service=\"svc_counters\",method=\"GET\","
                                   "route=\"/things/{id}\",status=\"200\"} "),
                     2);
    assert_int_equal(line_value(t, "http_requests_total{service=\"svc_counters\",method=\"GET\","
                                   "route=\"/things/{id}\",status=\"404\"} "),
                     1);
    assert_int_equal(line_value(t, "http_requests_total{service=\"svc_counters\",method=\"POST\","
                                   "route=\"/things\",status=\"201\"} "),
                     1);
    assert_int_equal(count_lines(t, "http_requests_total{service=\"svc_counters\""), 3);
    /* one histogram per service, method and route (the status is not a histogram label) */
    assert_int_equal(line_value(t, "http_request_duration_seconds_count{service=\"svc_counters\","
                                   "method=\"GET\",route=\"/things/{id}\"} "),
                     3);
    assert_int_equal(line_value(t, "http_request_duration_seconds_count{service=\"svc_counters\","
                                   "method=\"POST\",route=\"/things\"} "),
                     1);
}

static void test_histogram_buckets(void **state)
{
    dk_arena *a = *state;
    const char *labels = "service=\"svc_hist\",method=\"GET\",route=\"/h\"";
    dk_metrics_http("svc_hist", "GET", "/h", 200, 0.0003);
    dk_metrics_http("svc_hist", "GET", "/h", 200, 0.0005); /* on a bound: counts in le=0.0005 */
    dk_metrics_http("svc_hist", "GET", "/h", 500, 0.003);
    dk_metrics_http("svc_hist", "GET", "/h", 200, 0.7);
    dk_metrics_http("svc_hist", "GET", "/h", 200, 20); /* beyond the last bucket */
    char *t = render(a);
    static const struct {
        const char *le;
        int want;
    } rows[] = {
        {"0.0005", 2}, {"0.001", 2}, {"0.0025", 2}, {"0.005", 3}, {"0.01", 3},
        {"0.025", 3},  {"0.05", 3},  {"0.1", 3},    {"0.25", 3},  {"0.5", 3},
        {"1", 4},      {"2.5", 4},   {"5", 4},      {"10", 4},    {"+Inf", 5},
    };
    char prefix[256];
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        snprintf(prefix, sizeof prefix, "http_request_duration_seconds_bucket{%s,le=\"%s\"} ",
                 labels, rows[i].le);
        double v = line_value(t, prefix);
        if (v != rows[i].want)
            fail_msg("le=%s: %g, want %d", rows[i].le, v, rows[i].want);
    }
    snprintf(prefix, sizeof prefix, "http_request_duration_seconds_bucket{%s,", labels);
    assert_int_equal(count_lines(t, prefix), 15);
    snprintf(prefix, sizeof prefix, "http_request_duration_seconds_count{%s} ", labels);
    assert_int_equal(line_value(t, prefix), 5);
    snprintf(prefix, sizeof prefix, "http_request_duration_seconds_sum{%s} ", labels);
    double sum = line_value(t, prefix);
    assert_true(fabs(sum - 20.7038) < 1e-6);
}

static void test_openmetrics_exemplars(void **state)
{
    dk_arena *a = *state;
    const char *t1 = "4bf92f3577b34da6a3ce929d0e0e4736", *t2 = "0af7651916cd43dd8448eb211c80319c";
    dk_metrics_http_traced("svc_ex", "GET", "/e", 200, 0.003, t1);
    dk_metrics_http_traced("svc_ex", "GET", "/e", 200, 0.004, t2);    /* the same bucket: latest */
    dk_metrics_http_traced("svc_ex", "GET", "/e", 200, 0.7, NULL);    /* untraced: none */
    dk_metrics_http_traced("svc_ex", "GET", "/e", 200, 0.2, "short"); /* not an id: none */
    size_t len = 0;
    char *om = dk_metrics_render_as(a, &len, true);
    assert_int_equal(strlen(om), len);
    const char *b =
        strstr(om, "http_request_duration_seconds_bucket{service=\"svc_ex\",method=\"GET\","
                   "route=\"/e\",le=\"0.005\"} 2 # {trace_id=\"");
    assert_non_null(b);
    assert_memory_equal(strchr(b, '#') + 13, t2, 32);
    const char *ex = strchr(b, '#') + 13 + 32 + 3;
    assert_true(fabs(strtod(ex, NULL) - 0.004) < 1e-9);
    char *end;
    double at = strtod(strchr(ex, ' ') + 1, &end);
    assert_true(at > 1.7e9 && *end == '\n'); /* unix seconds with milliseconds */
    /* only that bucket has one */
    const char *prefix = "http_request_duration_seconds_bucket{service=\"svc_ex\"";
    int with = 0;
    for (const char *p = strstr(om, prefix); p; p = strstr(p + 1, prefix)) {
        const char *nl = strchr(p, '\n');
        const char *h = strstr(p, " # {");
        with += h && h < nl;
    }
    assert_int_equal(with, 1);
    /* OpenMetrics families: a counter's without _total, the text ends with # EOF */
    assert_non_null(strstr(om, "# TYPE http_requests counter\n"));
    assert_null(strstr(om, "# TYPE http_requests_total"));
    assert_non_null(strstr(om, "\nhttp_requests_total{"));
    assert_non_null(strstr(om, "# TYPE process_cpu_seconds counter\n"));
    assert_true(len > 6 && strcmp(om + len - 6, "# EOF\n") == 0);
    /* the text format has neither */
    char *text = render(a);
    assert_null(strstr(text, " # {"));
    assert_null(strstr(text, "# EOF"));
    assert_non_null(strstr(text, "# TYPE http_requests_total counter\n"));
}

static void test_families_and_process(void **state)
{
    dk_arena *a = *state;
    dk_metrics_http("svc_fam", "GET", "/f", 200, 0.01);
    char *t = render(a);
    static const char *lines[] = {
        "# HELP http_requests_total ",
        "# TYPE http_requests_total counter\n",
        "# HELP http_request_duration_seconds ",
        "# TYPE http_request_duration_seconds histogram\n",
        "# TYPE process_cpu_seconds_total counter\n",
        "# TYPE process_resident_memory_bytes gauge\n",
        "# TYPE process_virtual_memory_bytes gauge\n",
        "# TYPE process_open_fds gauge\n",
        "# TYPE process_max_fds gauge\n",
        "# TYPE process_start_time_seconds gauge\n",
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
        assert_int_equal(count_lines(t, lines[i]), 1);
    /* every family is declared once */
    assert_int_equal(count_lines(t, "# TYPE http_requests_total "), 1);
    assert_int_equal(count_lines(t, "# TYPE http_request_duration_seconds "), 1);
    /* process values are real */
    assert_true(line_value(t, "process_resident_memory_bytes ") > 1e6);
    assert_true(line_value(t, "process_virtual_memory_bytes ") > 1e6);
    assert_true(line_value(t, "process_open_fds ") >= 3);
    assert_true(line_value(t, "process_max_fds ") >= 64);
    assert_true(line_value(t, "process_cpu_seconds_total ") >= 0);
    double start = line_value(t, "process_start_time_seconds ");
    assert_true(start > 1.6e9); /* after 2020 */
    assert_true(start < 4.2e9);
    /* every non-comment line is `name{labels} value` or `name value` */
    for (const char *p = t; *p;) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        if (*p != '#') {
            const char *sp = nl;
            while (sp > p && sp[-1] != ' ')
                sp--;
            assert_true(sp > p + 1);
            char *end = NULL;
            char num[64];
            size_t n = (size_t)(nl - sp);
            assert_true(n > 0 && n < sizeof num);
            memcpy(num, sp, n);
            num[n] = '\0';
            (void)strtod(num, &end);
            if (*end != '\0' && strcmp(num, "NaN") != 0 && strcmp(num, "+Inf") != 0)
                fail_msg("bad value in line: %.*s", (int)(nl - p), p);
        }
        p = nl + 1;
    }
}

struct gauge_ctx {
    double value;
    int calls;
};

static void collector(void *ctx, dk_metrics_out *out)
{
    struct gauge_ctx *g = ctx;
    g->calls++;
    dk_metrics_family(out, "test_queue_depth", "gauge", "Items waiting in the test queue.");
    dk_metrics_sample(out, "test_queue_depth", "queue=\"a\"", g->value);
    dk_metrics_sample(out, "test_queue_depth", "queue=\"b\"", 2.5);
    dk_metrics_sample(out, "test_queue_depth", "", 7);
    dk_metrics_sample(out, "test_queue_depth_nan", NULL, NAN);
}

static void test_collectors(void **state)
{
    dk_arena *a = *state;
    struct gauge_ctx g = {.value = 42};
    dk_metrics_add_collector(collector, &g);
    char *t = render(a);
    assert_int_equal(g.calls, 1);
    assert_int_equal(count_lines(t, "# HELP test_queue_depth Items waiting in the test queue.\n"),
                     1);
    assert_int_equal(count_lines(t, "# TYPE test_queue_depth gauge\n"), 1);
    assert_int_equal(count_lines(t, "test_queue_depth{queue=\"a\"} 42\n"), 1);
    assert_int_equal(count_lines(t, "test_queue_depth{queue=\"b\"} 2.5\n"), 1);
    assert_int_equal(count_lines(t, "test_queue_depth 7\n"), 1);
    assert_int_equal(count_lines(t, "test_queue_depth_nan NaN\n"), 1);
    /* values are read at render time */
    g.value = 1e20;
    t = render(a);
    assert_int_equal(g.calls, 2);
    assert_int_equal(count_lines(t, "test_queue_depth{queue=\"a\"} 1e+20\n"), 1);
    dk_metrics_clear_collectors();
    t = render(a);
    assert_int_equal(g.calls, 2);
    assert_null(strstr(t, "test_queue_depth"));
}

struct hammer {
    const char *service;
};

static void *hammer_main(void *p)
{
    struct hammer *h = p;
    for (int i = 0; i < 2000; i++) {
        dk_metrics_http(h->service, "GET", "/hammer", i % 2 ? 200 : 503, 0.0001);
        /* series first seen by several threads at once (recording takes no lock once a
         * series exists, so these race to create it): each must end up as one series */
        if (i % 40 == 0) {
            static const char *const routes[] = {"/new/0", "/new/1", "/new/2", "/new/3", "/new/4",
                                                 "/new/5", "/new/6", "/new/7", "/new/8", "/new/9"};
            for (int r = 0; r < 10; r++)
                dk_metrics_http(h->service, "POST", routes[r], 201, 0.002);
        }
    }
    return NULL;
}

static void test_concurrent_updates(void **state)
{
    dk_arena *a = *state;
    struct hammer h = {"svc_hammer"};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer_main, &h), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    char *t = render(a);
    assert_int_equal(line_value(t, "http_requests_total{service=\"svc_hammer\",method=\"GET\","
                                   "route=\"/hammer\",status=\"200\"} "),
                     4000);
    assert_int_equal(line_value(t, "http_requests_total{service=\"svc_hammer\",method=\"GET\","
                                   "route=\"/hammer\",status=\"503\"} "),
                     4000);
    assert_int_equal(line_value(t, "http_request_duration_seconds_count{service=\"svc_hammer\","
                                   "method=\"GET\",route=\"/hammer\"} "),
                     8000);
    for (int r = 0; r < 10; r++) {
        char prefix[160];
        snprintf(prefix, sizeof prefix,
                 "http_requests_total{service=\"svc_hammer\",method=\"POST\",route=\"/new/%d\","
                 "status=\"201\"} ",
                 r);
        assert_int_equal(count_lines(t, prefix), 1);
        assert_int_equal(line_value(t, prefix), 4 * 50);
        snprintf(prefix, sizeof prefix,
                 "http_request_duration_seconds_bucket{service=\"svc_hammer\",method=\"POST\","
                 "route=\"/new/%d\",le=\"0.0025\"} ",
                 r);
        assert_int_equal(count_lines(t, prefix), 1);
        assert_int_equal(line_value(t, prefix), 4 * 50);
    }
}

static void test_equal_labels_at_different_addresses_share_a_series(void **state)
{
    /* Equal label strings are the same series wherever they are stored (the registry compares
     * them with strcmp); two lines with the same labels would be an invalid exposition. */
    dk_arena *a = *state;
    static char svc1[] = "svc_same", svc2[] = "svc_same";
    static char route1[] = "/same/{id}", route2[] = "/same/{id}";
    assert_ptr_not_equal(svc1, svc2);
    dk_metrics_http(svc1, "GET", route1, 200, 0.001);
    dk_metrics_http(svc2, "GET", route2, 200, 0.001);
    dk_metrics_http(svc1, "GET", route2, 200, 0.001);
    char *t = render(a);
    assert_int_equal(line_value(t, "http_requests_total{service=\"svc_same\",method=\"GET\","
                                   "route=\"/same/{id}\",status=\"200\"} "),
                     3);
    assert_int_equal(line_value(t, "http_request_duration_seconds_count{service=\"svc_same\","
                                   "method=\"GET\",route=\"/same/{id}\"} "),
                     3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_counters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_histogram_buckets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_openmetrics_exemplars, setup, teardown),
        cmocka_unit_test_setup_teardown(test_families_and_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_collectors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_updates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_equal_labels_at_different_addresses_share_a_series,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
