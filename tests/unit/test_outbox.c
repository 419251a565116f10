/* test_outbox.c — the transactional outbox on SQLite with the in-process bus: an event exists
 * only if its transaction committed, it is published in order and removed once the bus took
 * it, a refusing subscriber makes the relay keep it and retry (nothing lost, order kept), and
 * the queue-lag gauge reports a stuck event and returns to 0. */
#include "testutil.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/arena.h"
#include "core/metrics.h"
#include "core/outbox.h"
#include "core/sql.h"
#include "core/timeutil.h"
#include "ports/events.h"
#include "adapters/db.h"
#include "adapters/events.h"
#include "core/banned.h"

#define TABLE "t_outbox"

struct sink {
    pthread_mutex_t lock;
    int refuse; /* refuse this many deliveries first */
    int n;
    char ids[16][64];
    char types[16][32];
};

static dk_status on_event(void *ctx, const char *type, const char *payload)
{
    struct sink *s = ctx;
    pthread_mutex_lock(&s->lock);
    if (s->refuse > 0) {
        s->refuse--;
        pthread_mutex_unlock(&s->lock);
        return DK_E_UNAVAILABLE;
    }
    json_error_t err;
    json_t *ev = json_loads(payload, 0, &err);
    assert_non_null(ev);
    assert_true(json_is_integer(json_object_get(ev, "occurred_at")));
    if (s->n < 16) {
        snprintf(s->ids[s->n], sizeof s->ids[0], "%s", json_string_value(json_object_get(ev, "n")));
        snprintf(s->types[s->n], sizeof s->types[0], "%s", type);
        s->n++;
    }
    json_decref(ev);
    pthread_mutex_unlock(&s->lock);
    return DK_OK;
}

static int sink_count(struct sink *s)
{
    pthread_mutex_lock(&s->lock);
    int n = s->n;
    pthread_mutex_unlock(&s->lock);
    return n;
}

static bool wait_count(struct sink *s, int want, int timeout_ms)
{
    int64_t end = dk_mono_ms() + timeout_ms;
    while (dk_mono_ms() < end) {
        if (sink_count(s) >= want)
            return true;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return sink_count(s) >= want;
}

static dk_database open_db(const char *test)
{
    char *dir = dk_test_tmpdir(test);
    char url[512];
    snprintf(url, sizeof url, "sqlite:%s/docket.db", dir);
    free(dir);
    dk_database d = {.ops = dk_db_ops_for_url(url)};
    dk_db_options o = {.url = url, .pool_size = 4, .acquire_timeout_ms = 5000};
    assert_int_equal(d.ops->open(&o, &d.db), DK_OK);
    dk_arena *a = dk_arena_new();
    assert_int_equal(dk_sql(&d, a, DK_OUTBOX_SQLITE_DDL("t"), 0, NULL, NULL), DK_OK);
    assert_int_equal(dk_sql(&d, a, DK_OUTBOX_TRACE_DDL("t"), 0, NULL, NULL), DK_OK);
    dk_arena_free(a);
    return d;
}

static void add(const dk_database *d, const char *n, bool commit)
{
    dk_arena *a = dk_arena_new();
    dk_tx tx;
    assert_int_equal(dk_tx_begin(d, &tx), DK_OK);
    json_t *p = json_pack("{s:s}", "n", n);
    assert_int_equal(dk_outbox_add(&tx, a, TABLE, "thing.happened", p), DK_OK);
    json_decref(p);
    assert_int_equal(dk_tx_end(&tx, commit ? DK_OK : DK_E_CONFLICT),
                     commit ? DK_OK : DK_E_CONFLICT);
    dk_arena_free(a);
}

static int64_t rows_left(const dk_database *d);

/* dk_tx_query_commit: the last statement commits with it (SQLite: query, then commit), and a
 * failing one commits nothing of the transaction. */
static void test_query_commit_ends_the_transaction(void **state)
{
    (void)state;
    dk_database d = open_db("outbox_query_commit");
    dk_arena *a = dk_arena_new();
    const char *ins =
        "INSERT INTO " TABLE " (id, type, payload, created_at) VALUES ($1, 't', '{}', 1)";
    const char *p1[] = {"a"}, *p2[] = {"b"};
    dk_tx tx;
    assert_int_equal(dk_tx_begin(&d, &tx), DK_OK);
    assert_int_equal(dk_tx_query(&tx, a, ins, 1, p1, NULL), DK_OK);
    assert_int_equal(dk_tx_query_commit(&tx, a, ins, 1, p2, NULL), DK_OK);
    assert_null(tx.conn); /* over: released */
    assert_int_equal(dk_tx_end(&tx, DK_OK), DK_OK);
    assert_int_equal(rows_left(&d), 2);
    assert_int_equal(dk_tx_begin(&d, &tx), DK_OK);
    assert_int_equal(dk_tx_query(&tx, a, ins, 1, p1, NULL), DK_OK);
    assert_int_not_equal(dk_tx_query_commit(&tx, a, "INSERT INTO nope VALUES (1)", 0, NULL, NULL),
                         DK_OK);
    assert_non_null(tx.conn); /* still open: rolled back by the end */
    assert_int_not_equal(dk_tx_end(&tx, DK_E_INTERNAL), DK_OK);
    assert_int_equal(rows_left(&d), 2);
    dk_arena_free(a);
    d.ops->close(d.db);
}

static int64_t rows_left(const dk_database *d)
{
    dk_arena *a = dk_arena_new();
    dk_db_rows *r = NULL;
    assert_int_equal(dk_sql(d, a, "SELECT COUNT(*) FROM " TABLE, 0, NULL, &r), DK_OK);
    int64_t n = dk_sql_get_int(r, 0, 0);
    dk_arena_free(a);
    return n;
}

static double lag_of(const char *service)
{
    dk_arena *a = dk_arena_new();
    char *text = dk_metrics_render(a, NULL);
    char needle[128];
    snprintf(needle, sizeof needle, "docket_queue_lag_seconds{service=\"%s\",queue=\"outbox\"} ",
             service);
    const char *p = strstr(text, needle);
    double v = p ? strtod(p + strlen(needle), NULL) : -1;
    dk_arena_free(a);
    return v;
}

static void test_committed_events_in_order_rolled_back_never(void **state)
{
    (void)state;
    dk_database d = open_db("outbox_order");
    dk_bus bus = {.ops = &dk_events_inproc_ops};
    assert_int_equal(bus.ops->open(&(dk_events_options){0}, &bus.ev), DK_OK);
    static struct sink s = {.lock = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(bus.ops->subscribe(bus.ev, "thing.happened", on_event, &s), DK_OK);
    add(&d, "1", true);
    add(&d, "x", false); /* rolled back: no event */
    add(&d, "2", true);
    dk_outbox *o = dk_outbox_start(&d, &bus, "t_order", TABLE, 50);
    assert_non_null(o);
    add(&d, "3", true);
    dk_outbox_kick(o);
    assert_true(wait_count(&s, 3, 5000));
    dk_outbox_stop(o);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.ids[0], "1");
    assert_string_equal(s.ids[1], "2");
    assert_string_equal(s.ids[2], "3");
    assert_string_equal(s.types[0], "thing.happened");
    assert_int_equal(rows_left(&d), 0);
    assert_true(lag_of("t_order") == 0);
    bus.ops->close(bus.ev);
    d.ops->close(d.db);
}

static void test_refused_events_are_kept_and_retried(void **state)
{
    (void)state;
    dk_database d = open_db("outbox_retry");
    dk_bus bus = {.ops = &dk_events_inproc_ops};
    assert_int_equal(bus.ops->open(&(dk_events_options){0}, &bus.ev), DK_OK);
    static struct sink s = {.lock = PTHREAD_MUTEX_INITIALIZER, .refuse = 3};
    assert_int_equal(bus.ops->subscribe(bus.ev, "thing.happened", on_event, &s), DK_OK);
    add(&d, "a", true);
    add(&d, "b", true);
    dk_outbox *o = dk_outbox_start(&d, &bus, "t_retry", TABLE, 100);
    assert_non_null(o);
    /* the first three passes are refused; later ones deliver both, first "a" */
    assert_true(wait_count(&s, 2, 5000));
    dk_outbox_stop(o);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.ids[0], "a"); /* order kept through the retries */
    assert_string_equal(s.ids[1], "b");
    assert_int_equal(rows_left(&d), 0);
    assert_true(lag_of("t_retry") == 0);
    bus.ops->close(bus.ev);
    d.ops->close(d.db);
}

static void test_stuck_event_shows_as_lag(void **state)
{
    (void)state;
    dk_database d = open_db("outbox_lag");
    dk_bus bus = {.ops = &dk_events_inproc_ops};
    assert_int_equal(bus.ops->open(&(dk_events_options){0}, &bus.ev), DK_OK);
    static struct sink s = {.lock = PTHREAD_MUTEX_INITIALIZER, .refuse = 1000000};
    assert_int_equal(bus.ops->subscribe(bus.ev, "thing.happened", on_event, &s), DK_OK);
    add(&d, "stuck", true);
    dk_outbox *o = dk_outbox_start(&d, &bus, "t_lag", TABLE, 20);
    struct timespec ts = {1, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
    assert_true(lag_of("t_lag") >= 1.0);
    assert_int_equal(rows_left(&d), 1); /* never dropped */
    pthread_mutex_lock(&s.lock);
    s.refuse = 0;
    pthread_mutex_unlock(&s.lock);
    assert_true(wait_count(&s, 1, 5000));
    dk_outbox_stop(o);
    assert_int_equal(rows_left(&d), 0);
    assert_true(lag_of("t_lag") == 0);
    bus.ops->close(bus.ev);
    d.ops->close(d.db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_committed_events_in_order_rolled_back_never),
        cmocka_unit_test(test_query_commit_ends_the_transaction),
        cmocka_unit_test(test_refused_events_are_kept_and_retried),
        cmocka_unit_test(test_stuck_event_shows_as_lag),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
