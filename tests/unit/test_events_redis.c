/* test_events_redis.c — the Redis Streams event adapter against a real Redis
 * (DOCKET_TEST_REDIS_URL; skipped when unset): every group gets each event once, the consumers of
 * one group share the work, a failed handler and a dead consumer's entries are delivered again
 * (short reclaim times through DOCKET_EVENTS_RECLAIM_*), events nobody here wants are
 * acknowledged, the consumer recovers after its connection is killed and after the stream is
 * deleted, a dead Redis fails publish fast, and close() returns within a second. Each test uses
 * consumer groups named after the process, so reruns against one Redis do not interfere. */
#include "testutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "core/timeutil.h"
#include "ports/events.h"
#include "adapters/events.h"
#include "core/banned.h"

static const struct dk_events_ops *ops = &dk_events_redis_ops;

#define STREAM   "docket:events"
#define MAX_SEEN 256

/* --- helpers --------------------------------------------------------------------------------- */

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static const char *test_url(void)
{
    const char *url = dk_test_env("DOCKET_TEST_REDIS_URL");
    if (!url)
        skip();
    return url;
}

static redisContext *raw_connect(const char *url)
{
    char host[64];
    int port, db = 0;
    int n = sscanf(url, "redis://%63[^:/]:%d/%d", host, &port, &db);
    assert_true(n >= 2);
    struct timeval tv = {.tv_sec = 2};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    assert_int_equal(redisSetTimeout(c, tv), REDIS_OK);
    if (db) {
        redisReply *r = redisCommand(c, "SELECT %d", db);
        assert_non_null(r);
        freeReplyObject(r);
    }
    return c;
}

/* One command behind the adapter's back, on a connection of its own; tried twice, since
 * test_kv_redis (run alongside by ctest -j) kills every client once. */
static redisReply *raw(const char *url, const char *fmt, ...)
{
    for (int attempt = 0;; attempt++) {
        redisContext *c = raw_connect(url);
        va_list ap;
        va_start(ap, fmt);
        redisReply *r = redisvCommand(c, fmt, ap);
        va_end(ap);
        redisFree(c);
        if (r || attempt == 1) {
            assert_non_null(r);
            return r;
        }
    }
}

/* A group name of this process: "t<pid>-<name>". */
static void group_name(char out[64], const char *name)
{
    snprintf(out, 64, "t%d-%s", (int)getpid(), name);
}

static void destroy_group(const char *url, const char *group)
{
    freeReplyObject(raw(url, "XGROUP DESTROY " STREAM " %s", group));
}

/* Entries pending (delivered, not acknowledged) in a group. */
static long long pending_count(const char *url, const char *group)
{
    redisReply *r = raw(url, "XPENDING " STREAM " %s", group);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    long long n = r->element[0]->integer;
    freeReplyObject(r);
    return n;
}

static long long consumers_in(const char *url, const char *group)
{
    redisReply *r = raw(url, "XINFO CONSUMERS " STREAM " %s", group);
    long long n = r->type == REDIS_REPLY_ARRAY ? (long long)r->elements : -1;
    freeReplyObject(r);
    return n;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t len = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static dk_events *open_bus(const char *url, const char *group, const char *consumer)
{
    dk_events_options opt = {.url = url, .group = group, .consumer = consumer, .timeout_ms = 1000};
    dk_events *ev = NULL;
    assert_int_equal(ops->open(&opt, &ev), DK_OK);
    assert_non_null(ev);
    return ev;
}

static int64_t timed_close(dk_events *ev)
{
    int64_t start = dk_mono_ms();
    ops->close(ev);
    return dk_mono_ms() - start;
}

/* What a subscriber saw. */
struct recorder {
    pthread_mutex_t lock;
    int calls;
    int fail_first; /* this many calls fail before the rest succeed */
    int wrong_type; /* calls for a type other than "x" */
    int foreign;    /* events another process published (another run of this test) */
    char *seen[MAX_SEEN];
    int64_t at[MAX_SEEN];
};

/* Recorders are static: a test that fails leaves its bus running, and its thread must not write
 * into a stack frame that is gone. */
static void rec_init(struct recorder *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
}

static void rec_release(struct recorder *r)
{
    assert_int_equal(r->wrong_type, 0);
    for (int i = 0; i < r->calls && i < MAX_SEEN; i++)
        free(r->seen[i]);
    pthread_mutex_destroy(&r->lock);
}

static int rec_calls(struct recorder *r)
{
    pthread_mutex_lock(&r->lock);
    int n = r->calls;
    pthread_mutex_unlock(&r->lock);
    return n;
}

/* Calls plus events of other runs: all the work this subscriber did. */
static int rec_work(struct recorder *r)
{
    pthread_mutex_lock(&r->lock);
    int n = r->calls + r->foreign;
    pthread_mutex_unlock(&r->lock);
    return n;
}

/* How many times payload was seen. */
static int rec_count(struct recorder *r, const char *payload)
{
    int n = 0;
    pthread_mutex_lock(&r->lock);
    for (int i = 0; i < r->calls && i < MAX_SEEN; i++)
        n += strcmp(r->seen[i], payload) == 0;
    pthread_mutex_unlock(&r->lock);
    return n;
}

static dk_status on_event(void *ctx, const char *type, const char *payload)
{
    struct recorder *r = ctx; /* runs on the consumer thread: no cmocka asserts here */
    pthread_mutex_lock(&r->lock);
    if (strcmp(type, "x") != 0) {
        r->wrong_type++;
        pthread_mutex_unlock(&r->lock);
        return DK_OK;
    }
    char tag[32];
    snprintf(tag, sizeof tag, ",\"pid\":%d}", (int)getpid());
    if (!strstr(payload, tag)) {
        r->foreign++;
        pthread_mutex_unlock(&r->lock);
        return DK_OK;
    }
    int i = r->calls++;
    if (i < MAX_SEEN) {
        r->seen[i] = strdup(payload);
        r->at[i] = dk_mono_ms();
    }
    bool fail = i < r->fail_first;
    pthread_mutex_unlock(&r->lock);
    return fail ? DK_E_UNAVAILABLE : DK_OK;
}

static bool wait_calls(struct recorder **rs, int nrs, int want, int64_t timeout_ms)
{
    int64_t start = dk_mono_ms();
    while (dk_mono_ms() - start < timeout_ms) {
        int total = 0;
        for (int i = 0; i < nrs; i++)
            total += rec_calls(rs[i]);
        if (total >= want)
            return true;
        sleep_ms(10);
    }
    return false;
}

static bool wait_no_pending(const char *url, const char *group, int64_t timeout_ms)
{
    int64_t start = dk_mono_ms();
    while (dk_mono_ms() - start < timeout_ms) {
        if (pending_count(url, group) == 0)
            return true;
        sleep_ms(20);
    }
    return false;
}

static void payload_of(char out[64], int i)
{
    snprintf(out, 64, "{\"n\":%d,\"pid\":%d}", i, (int)getpid());
}

static void set_reclaim(const char *idle, const char *every)
{
    setenv("DOCKET_EVENTS_RECLAIM_IDLE_MS", idle, 1);
    setenv("DOCKET_EVENTS_RECLAIM_EVERY_MS", every, 1);
}

static int unset_reclaim(void **state)
{
    (void)state;
    unsetenv("DOCKET_EVENTS_RECLAIM_IDLE_MS");
    unsetenv("DOCKET_EVENTS_RECLAIM_EVERY_MS");
    return 0;
}

/* Every test starts from an empty stream: a new group reads the stream from its oldest entry,
 * so entries of earlier tests would otherwise reach it. */
static int fresh_stream(void **state)
{
    (void)state;
    const char *url = dk_test_env("DOCKET_TEST_REDIS_URL");
    if (url)
        freeReplyObject(raw(url, "DEL " STREAM));
    return 0;
}

/* --- tests ----------------------------------------------------------------------------------- */

/* A group created after events were published still gets them (a service deployed after
 * others had published misses nothing). */
static void test_new_group_gets_earlier_events(void **state)
{
    (void)state;
    const char *url = test_url();
    char g[64];
    group_name(g, "late");
    static struct recorder r; /* static: see rec_init */
    rec_init(&r);
    dk_events *pub = open_bus(url, g, "publisher");
    char p[64];
    for (int i = 0; i < 3; i++) {
        payload_of(p, i);
        assert_int_equal(ops->publish(pub, "x", p), DK_OK);
    }
    dk_events *late = open_bus(url, g, "c1");
    assert_int_equal(ops->subscribe(late, "x", on_event, &r), DK_OK);
    assert_int_equal(ops->start(late), DK_OK);
    struct recorder *one[] = {&r};
    assert_true(wait_calls(one, 1, 3, 5000));
    for (int i = 0; i < 3; i++) {
        payload_of(p, i);
        assert_int_equal(rec_count(&r, p), 1);
    }
    assert_true(timed_close(late) < 1000);
    ops->close(pub);
    destroy_group(url, g);
}

static void test_each_group_gets_each_event_once(void **state)
{
    (void)state;
    const char *url = test_url();
    char ga[64], gb[64];
    group_name(ga, "a");
    group_name(gb, "b");
    static struct recorder ra, rb; /* static: see rec_init */
    rec_init(&ra);
    rec_init(&rb);
    dk_events *a = open_bus(url, ga, "c1");
    dk_events *b = open_bus(url, gb, "c1");
    assert_int_equal(ops->subscribe(a, "x", on_event, &ra), DK_OK);
    assert_int_equal(ops->subscribe(b, "x", on_event, &rb), DK_OK);
    assert_int_equal(ops->start(a), DK_OK);
    assert_int_equal(ops->start(b), DK_OK);

    assert_int_equal(ops->publish(a, "y", "{\"nobody\":\"listens\"}"), DK_OK);
    char p[64];
    for (int i = 0; i < 5; i++) {
        payload_of(p, i);
        assert_int_equal(ops->publish(a, "x", p), DK_OK);
    }
    struct recorder *both[] = {&ra, &rb};
    assert_true(wait_calls(both, 2, 10, 5000));
    sleep_ms(700); /* a duplicate would show up by now */
    assert_int_equal(rec_calls(&ra), 5);
    assert_int_equal(rec_calls(&rb), 5);
    for (int i = 0; i < 5; i++) {
        payload_of(p, i);
        assert_int_equal(rec_count(&ra, p), 1);
        assert_int_equal(rec_count(&rb, p), 1);
    }
    /* all acknowledged, including the "y" nobody here subscribes to */
    assert_true(wait_no_pending(url, ga, 2000));
    assert_true(wait_no_pending(url, gb, 2000));

    assert_true(timed_close(a) < 1000);
    assert_true(timed_close(b) < 1000);
    /* a clean close with nothing pending leaves the group */
    assert_int_equal(consumers_in(url, ga), 0);
    destroy_group(url, ga);
    destroy_group(url, gb);
    rec_release(&ra);
    rec_release(&rb);
}

static void test_consumers_of_a_group_share_the_work(void **state)
{
    (void)state;
    const char *url = test_url();
    char g[64];
    group_name(g, "shared");
    static struct recorder r1, r2;
    rec_init(&r1);
    rec_init(&r2);
    dk_events *c1 = open_bus(url, g, "c1");
    dk_events *c2 = open_bus(url, g, "c2");
    dk_events *pub = open_bus(url, NULL, NULL); /* publish only */
    assert_int_equal(ops->subscribe(c1, "x", on_event, &r1), DK_OK);
    assert_int_equal(ops->subscribe(c2, "x", on_event, &r2), DK_OK);
    assert_int_equal(ops->start(c1), DK_OK);
    assert_int_equal(ops->start(c2), DK_OK);
    assert_int_equal(ops->start(pub), DK_OK);

    char p[64];
    for (int i = 0; i < 20; i++) {
        payload_of(p, 100 + i);
        assert_int_equal(ops->publish(pub, "x", p), DK_OK);
        sleep_ms(10);
    }
    struct recorder *both[] = {&r1, &r2};
    assert_true(wait_calls(both, 2, 20, 5000));
    sleep_ms(700);
    assert_int_equal(rec_calls(&r1) + rec_calls(&r2), 20);
    for (int i = 0; i < 20; i++) {
        payload_of(p, 100 + i);
        assert_int_equal(rec_count(&r1, p) + rec_count(&r2, p), 1);
    }
    /* both did some of the work (when another run of this test shares the Redis, its events
     * count as work too: the two runs' events can interleave so that ours all go to one) */
    assert_true(rec_work(&r1) > 0);
    assert_true(rec_work(&r2) > 0);
    assert_true(wait_no_pending(url, g, 2000));

    assert_true(timed_close(c1) < 1000);
    assert_true(timed_close(c2) < 1000);
    ops->close(pub);
    destroy_group(url, g);
    rec_release(&r1);
    rec_release(&r2);
}

static void test_failed_handler_gets_the_event_again(void **state)
{
    (void)state;
    const char *url = test_url();
    set_reclaim("300", "100");
    char g[64];
    group_name(g, "retry");
    static struct recorder r;
    rec_init(&r);
    r.fail_first = 1;
    dk_events *ev = open_bus(url, g, "c1");
    assert_int_equal(ops->subscribe(ev, "x", on_event, &r), DK_OK);
    assert_int_equal(ops->start(ev), DK_OK);
    char p[64];
    payload_of(p, 1000);
    assert_int_equal(ops->publish(ev, "x", p), DK_OK);

    struct recorder *one[] = {&r};
    assert_true(wait_calls(one, 1, 2, 5000));
    assert_true(wait_no_pending(url, g, 2000)); /* acknowledged after the success */
    sleep_ms(800);                              /* and never delivered again */
    assert_int_equal(rec_calls(&r), 2);
    assert_int_equal(rec_count(&r, p), 2);
    /* redelivered only once it had been pending for the idle time */
    assert_true(r.at[1] - r.at[0] >= 250);

    assert_true(timed_close(ev) < 1000);
    destroy_group(url, g);
    rec_release(&r);
}

static void test_dead_consumers_entries_are_reclaimed(void **state)
{
    (void)state;
    const char *url = test_url();
    set_reclaim("300", "100");
    char g[64];
    group_name(g, "orphans");
    /* a consumer "ghost" of the group reads an entry and dies before acknowledging it */
    redisReply *rep = raw(url, "XGROUP CREATE " STREAM " %s $ MKSTREAM", g);
    assert_int_equal(rep->type, REDIS_REPLY_STATUS);
    freeReplyObject(rep);
    char p[64];
    payload_of(p, 2000);
    rep = raw(url, "XADD " STREAM " * type x payload %s", p);
    freeReplyObject(rep);
    rep = raw(url, "XREADGROUP GROUP %s ghost COUNT 1 STREAMS " STREAM " >", g);
    assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
    freeReplyObject(rep);
    assert_int_equal(pending_count(url, g), 1);

    /* a live consumer of the same group takes it over once it has been idle long enough */
    static struct recorder r;
    rec_init(&r);
    dk_events *ev = open_bus(url, g, "live");
    assert_int_equal(ops->subscribe(ev, "x", on_event, &r), DK_OK);
    assert_int_equal(ops->start(ev), DK_OK);
    struct recorder *one[] = {&r};
    assert_true(wait_calls(one, 1, 1, 5000));
    assert_int_equal(rec_count(&r, p), 1);
    assert_true(wait_no_pending(url, g, 2000));

    assert_true(timed_close(ev) < 1000);
    destroy_group(url, g);
    rec_release(&r);
}

static void test_recovers_after_client_kill(void **state)
{
    (void)state;
    const char *url = test_url();
    char g[64];
    group_name(g, "kill");
    static struct recorder r;
    rec_init(&r);
    dk_events *ev = open_bus(url, g, "c1");
    assert_int_equal(ops->subscribe(ev, "x", on_event, &r), DK_OK);
    assert_int_equal(ops->start(ev), DK_OK);
    char p[64];
    payload_of(p, 3000);
    assert_int_equal(ops->publish(ev, "x", p), DK_OK);
    struct recorder *one[] = {&r};
    assert_true(wait_calls(one, 1, 1, 5000));

    /* kill every connection of this bus: the consumer (by its name) and the publisher (by
     * its last command) */
    redisReply *list = raw(url, "CLIENT LIST");
    assert_int_equal(list->type, REDIS_REPLY_STRING);
    char name[128];
    snprintf(name, sizeof name, "name=docket-events:%s:c1 ", g);
    int killed = 0;
    for (char *line = list->str; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        long long id;
        if ((strstr(line, name) || strstr(line, " cmd=xadd ")) &&
            sscanf(line, "id=%lld", &id) == 1) {
            freeReplyObject(raw(url, "CLIENT KILL ID %lld", id));
            killed++;
        }
        line = nl ? nl + 1 : NULL;
    }
    freeReplyObject(list);
    assert_true(killed >= 2);

    /* publish reconnects; the consumer reconnects after its backoff and goes on */
    payload_of(p, 3001);
    assert_int_equal(ops->publish(ev, "x", p), DK_OK);
    assert_true(wait_calls(one, 1, 2, 5000));
    assert_int_equal(rec_count(&r, p), 1);
    assert_true(timed_close(ev) < 1000);
    destroy_group(url, g);
    rec_release(&r);
}

static void test_recreates_a_lost_stream(void **state)
{
    (void)state;
    const char *base = test_url();
    if (strchr(base + strlen("redis://"), '/'))
        skip(); /* needs a db of its own: the test URL already names one */
    char url[160];
    snprintf(url, sizeof url, "%s/11", base);
    char g[64];
    group_name(g, "lost");
    static struct recorder r;
    rec_init(&r);
    dk_events *ev = open_bus(url, g, "c1");
    assert_int_equal(ops->subscribe(ev, "x", on_event, &r), DK_OK);
    assert_int_equal(ops->start(ev), DK_OK);
    /* Redis forgets the stream and the group (a restart without persistence, a flush) */
    freeReplyObject(raw(url, "DEL " STREAM));
    /* the consumer notices NOGROUP, creates the group again and reads from then on */
    struct recorder *one[] = {&r};
    int64_t start = dk_mono_ms();
    while (rec_calls(&r) == 0 && dk_mono_ms() - start < 5000) {
        char p[64];
        payload_of(p, 4000);
        assert_int_equal(ops->publish(ev, "x", p), DK_OK);
        sleep_ms(200);
    }
    assert_true(wait_calls(one, 1, 1, 100));
    assert_true(timed_close(ev) < 1000);
    freeReplyObject(raw(url, "DEL " STREAM));
    rec_release(&r);
}

static void test_redis_down(void **state)
{
    (void)state;
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", free_port());
    static struct recorder r;
    rec_init(&r);
    dk_events *ev = open_bus(url, "down", "c1");
    int64_t start = dk_mono_ms();
    assert_int_equal(ops->publish(ev, "x", "{}"), DK_E_UNAVAILABLE);
    assert_int_equal(ops->publish(ev, "x", "{}"), DK_E_UNAVAILABLE);
    assert_true(dk_mono_ms() - start < 300);
    /* start does not fail a service whose Redis is away: the consumer keeps trying */
    assert_int_equal(ops->subscribe(ev, "x", on_event, &r), DK_OK);
    assert_int_equal(ops->start(ev), DK_OK);
    sleep_ms(700); /* a few backoff rounds */
    assert_true(timed_close(ev) < 1000);
    assert_int_equal(rec_calls(&r), 0);
    rec_release(&r);
}

static void test_close_is_prompt(void **state)
{
    (void)state;
    const char *url = test_url();
    char g[64];
    group_name(g, "close");
    static struct recorder r;
    rec_init(&r);
    for (int i = 0; i < 3; i++) {
        dk_events *ev = open_bus(url, g, "c1");
        assert_int_equal(ops->subscribe(ev, "x", on_event, &r), DK_OK);
        assert_int_equal(ops->start(ev), DK_OK);
        sleep_ms(100 + 150 * i); /* somewhere inside a blocking read */
        int64_t took = timed_close(ev);
        if (took >= 1000)
            fail_msg("close took %lld ms", (long long)took);
    }
    /* never started, and NULL */
    dk_events *ev = open_bus(url, g, "c1");
    ops->close(ev);
    ops->close(NULL);
    destroy_group(url, g);
    rec_release(&r);
}

static void test_contract(void **state)
{
    (void)state;
    static struct recorder r;
    rec_init(&r);
    /* malformed options are refused and *ret is untouched */
    const char *bad_urls[] = {NULL, "", "http://x", "redis://host:0"};
    for (size_t i = 0; i < sizeof bad_urls / sizeof bad_urls[0]; i++) {
        dk_events_options opt = {.url = bad_urls[i], .group = "g", .consumer = "c"};
        dk_events *ev = (dk_events *)1;
        assert_int_equal(ops->open(&opt, &ev), DK_E_VALIDATION);
        assert_ptr_equal(ev, (dk_events *)1);
    }
    dk_events_options empty_group = {.url = "redis://127.0.0.1:1", .group = "", .consumer = "c"};
    dk_events *ev = (dk_events *)1;
    assert_int_equal(ops->open(&empty_group, &ev), DK_E_VALIDATION);
    assert_ptr_equal(ev, (dk_events *)1);

    /* subscribe: during start-up only, a type that fits */
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", free_port());
    ev = open_bus(url, "g", "c");
    char longtype[100];
    memset(longtype, 't', sizeof longtype - 1);
    longtype[sizeof longtype - 1] = '\0';
    assert_int_equal(ops->subscribe(ev, longtype, on_event, &r), DK_E_INTERNAL);
    assert_int_equal(ops->subscribe(ev, "", on_event, &r), DK_E_INTERNAL);
    assert_int_equal(ops->subscribe(ev, "x", on_event, &r), DK_OK);
    assert_int_equal(ops->start(ev), DK_OK);
    assert_int_equal(ops->subscribe(ev, "x", on_event, &r), DK_E_INTERNAL);
    assert_int_equal(ops->start(ev), DK_E_INTERNAL);
    ops->close(ev);
    /* a subscriber needs a group */
    ev = open_bus(url, NULL, NULL);
    assert_int_equal(ops->subscribe(ev, "x", on_event, &r), DK_OK);
    assert_int_equal(ops->start(ev), DK_E_VALIDATION);
    ops->close(ev);
    rec_release(&r);
}

int main(void)
{
    /* The adapter must survive writes to closed sockets with SIGPIPE at its default. */
    signal(SIGPIPE, SIG_DFL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_contract),
        cmocka_unit_test(test_redis_down),
        cmocka_unit_test_setup(test_each_group_gets_each_event_once, fresh_stream),
        cmocka_unit_test_setup(test_new_group_gets_earlier_events, fresh_stream),
        cmocka_unit_test_setup(test_consumers_of_a_group_share_the_work, fresh_stream),
        cmocka_unit_test_setup_teardown(test_failed_handler_gets_the_event_again, fresh_stream,
                                        unset_reclaim),
        cmocka_unit_test_setup_teardown(test_dead_consumers_entries_are_reclaimed, fresh_stream,
                                        unset_reclaim),
        cmocka_unit_test_setup(test_recovers_after_client_kill, fresh_stream),
        cmocka_unit_test_setup(test_recreates_a_lost_stream, fresh_stream),
        cmocka_unit_test(test_close_is_prompt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
