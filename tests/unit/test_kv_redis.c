/* test_kv_redis.c — the Redis kv adapter against a real Redis (DOCKET_TEST_REDIS_URL; skipped
 * when unset): values, expiry, counters, prefixes, db selection, threads, failures that must be
 * fast (nothing listening, a server that never answers), recovery after CLIENT KILL and after a
 * restart, AUTH from the URL against a redis-server this test starts itself, and publish/
 * subscribe: delivery between two stores, the prefix on channels, prompt unsubscribe, and the
 * subscription's state through CLIENT KILL, a paused server, a restart and a silent server. */
#include "testutil.h"

#include "kv_contract.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "core/arena.h"
#include "core/timeutil.h"
#include "ports/kv.h"
#include "adapters/kv.h"
#include "core/banned.h"

extern char **environ;

static const struct dk_kv_ops *ops = &dk_kv_redis_ops;

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

/* The test server's host and port, from "redis://host:port". */
static void test_host_port(char host[64], int *port)
{
    assert_int_equal(sscanf(test_url(), "redis://%63[^:/]:%d", host, port), 2);
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

static dk_kv *open_url(const char *url, const char *prefix, int pool, int timeout_ms)
{
    dk_kv_options opt = {
        .url = url, .pool_size = pool, .timeout_ms = timeout_ms, .key_prefix = prefix};
    dk_kv *kv = NULL;
    assert_int_equal(ops->open(&opt, &kv), DK_OK);
    assert_non_null(kv);
    return kv;
}

/* A store on the test server with a prefix of its own, so tests never share keys. */
static dk_kv *open_test(const char *name, int pool)
{
    char prefix[96];
    snprintf(prefix, sizeof prefix, "t%d-%s:", (int)getpid(), name);
    return open_url(test_url(), prefix, pool, 1000);
}

/* A plain hiredis connection, to look behind the adapter's back. */
static redisContext *raw_connect(const char *host, int port, const char *password)
{
    struct timeval tv = {.tv_sec = 2};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    assert_int_equal(redisSetTimeout(c, tv), REDIS_OK);
    if (password) {
        redisReply *r = redisCommand(c, "AUTH %s", password);
        assert_non_null(r);
        assert_int_equal(r->type, REDIS_REPLY_STATUS);
        freeReplyObject(r);
    }
    return c;
}

static redisContext *raw_test(void)
{
    char host[64];
    int port;
    test_host_port(host, &port);
    return raw_connect(host, port, NULL);
}

static redisReply *raw_cmd(redisContext *c, const char *fmt, const char *arg)
{
    redisReply *r = arg ? redisCommand(c, fmt, arg) : redisCommand(c, fmt);
    assert_non_null(r);
    return r;
}

static bool key_exists(dk_kv *kv, const char *key)
{
    return kv_contract_key_exists(ops, kv, key);
}

static int64_t wait_gone(dk_kv *kv, const char *key, int64_t deadline_ms)
{
    return kv_contract_wait_gone(ops, kv, key, deadline_ms);
}

/* A redis-server of our own on 127.0.0.1:port, reaped by redis_stop. */
struct redis_proc {
    pid_t pid;
    int port;
};

static bool redis_spawn(struct redis_proc *p, int port, const char *password)
{
    char port_s[16];
    snprintf(port_s, sizeof port_s, "%d", port);
    char *argv[16];
    int n = 0;
    argv[n++] = "redis-server";
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--port";
    argv[n++] = port_s;
    argv[n++] = "--save";
    argv[n++] = "";
    argv[n++] = "--appendonly";
    argv[n++] = "no";
    argv[n++] = "--daemonize";
    argv[n++] = "no";
    if (password) {
        argv[n++] = "--requirepass";
        argv[n++] = (char *)password;
    }
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    int rc = posix_spawnp(&p->pid, "redis-server", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return false;
    p->port = port;
    /* ready when it answers PING (NOAUTH counts: it is up) */
    for (int i = 0; i < 200; i++) {
        struct timeval tv = {.tv_sec = 1};
        redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
        if (c && !c->err) {
            redisReply *r = redisCommand(c, "PING");
            bool up = r && (r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_ERROR);
            if (r)
                freeReplyObject(r);
            redisFree(c);
            if (up)
                return true;
        } else if (c) {
            redisFree(c);
        }
        if (waitpid(p->pid, NULL, WNOHANG) == p->pid) /* it died (port taken?) */
            return false;
        sleep_ms(25);
    }
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    return false;
}

static void redis_stop(struct redis_proc *p)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGTERM);
    waitpid(p->pid, NULL, 0);
    p->pid = 0;
}

/* The server a test started, stopped by the teardown even when an assertion failed. */
static struct redis_proc spawned;

static int stop_spawned(void **state)
{
    (void)state;
    redis_stop(&spawned);
    return 0;
}

/* --- values ---------------------------------------------------------------------------------- */

static void test_get_set_del_exists(void **state)
{
    (void)state;
    dk_kv *kv = open_test("basic", 2);
    dk_arena *a = dk_arena_new();
    char *val = (char *)1;
    size_t len = 99;
    assert_int_equal(ops->get(kv, a, "absent", &val, &len), DK_OK);
    assert_null(val);
    assert_int_equal(len, 0);
    assert_false(key_exists(kv, "absent"));

    assert_int_equal(ops->set(kv, "k1", "hello", 5, 0), DK_OK);
    assert_true(key_exists(kv, "k1"));
    assert_int_equal(ops->get(kv, a, "k1", &val, &len), DK_OK);
    assert_int_equal(len, 5);
    assert_string_equal(val, "hello");

    assert_int_equal(ops->set(kv, "empty", "", 0, 0), DK_OK);
    assert_int_equal(ops->get(kv, a, "empty", &val, &len), DK_OK);
    assert_non_null(val);
    assert_int_equal(len, 0);

    assert_int_equal(ops->del(kv, "k1"), DK_OK);
    assert_false(key_exists(kv, "k1"));
    assert_int_equal(ops->get(kv, a, "k1", &val, &len), DK_OK);
    assert_null(val);
    assert_int_equal(ops->del(kv, "k1"), DK_OK);
    assert_int_equal(ops->del(kv, "empty"), DK_OK);
    assert_int_equal(ops->ping(kv, 500), DK_OK);
    dk_arena_free(a);
    ops->close(kv);
    ops->close(NULL);
}

static void test_set_nx_expire_rename(void **state)
{
    (void)state;
    dk_kv *kv = open_test("nx", 2);
    dk_arena *a = dk_arena_new();
    kv_contract_set_nx_expire_rename(ops, kv, a);
    dk_arena_free(a);
    ops->close(kv);
}

static void test_binary_and_injection_safe(void **state)
{
    (void)state;
    dk_kv *kv = open_test("bin", 1);
    dk_arena *a = dk_arena_new();
    const char bin[] = {'a', '\0', 'b', '\r', '\n', '\0', '\xff', '%', 's'};
    assert_int_equal(ops->set(kv, "bin", bin, sizeof bin, 0), DK_OK);
    char *val;
    size_t len;
    assert_int_equal(ops->get(kv, a, "bin", &val, &len), DK_OK);
    assert_int_equal(len, sizeof bin);
    assert_memory_equal(val, bin, sizeof bin);
    assert_int_equal(val[len], '\0');

    /* keys with spaces, CRLF and format directives are one argument, not a command line */
    const char *evil = "a b\r\nFLUSHALL\r\n%s%n";
    assert_int_equal(ops->set(kv, evil, "v", 1, 0), DK_OK);
    assert_int_equal(ops->get(kv, a, evil, &val, &len), DK_OK);
    assert_string_equal(val, "v");
    assert_true(key_exists(kv, "bin"));

    char longkey[1000];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    assert_int_equal(ops->set(kv, longkey, "long", 4, 0), DK_OK);
    assert_int_equal(ops->get(kv, a, longkey, &val, &len), DK_OK);
    assert_string_equal(val, "long");
    assert_int_equal(ops->del(kv, longkey), DK_OK);
    assert_int_equal(ops->del(kv, evil), DK_OK);
    assert_int_equal(ops->del(kv, "bin"), DK_OK);
    dk_arena_free(a);
    ops->close(kv);
}

static void test_prefix_is_applied(void **state)
{
    (void)state;
    char prefix[64];
    snprintf(prefix, sizeof prefix, "t%d-pfx:", (int)getpid());
    dk_kv *kv = open_url(test_url(), prefix, 1, 1000);
    assert_int_equal(ops->set(kv, "k", "v", 1, 0), DK_OK);

    redisContext *raw = raw_test();
    char full[96];
    snprintf(full, sizeof full, "%sk", prefix);
    redisReply *r = raw_cmd(raw, "GET %s", full);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_string_equal(r->str, "v");
    freeReplyObject(r);
    r = raw_cmd(raw, "SET %s raw", "k"); /* unprefixed: invisible to the store */
    freeReplyObject(r);
    assert_true(key_exists(kv, "k"));
    assert_int_equal(ops->del(kv, "k"), DK_OK);
    assert_false(key_exists(kv, "k"));
    r = raw_cmd(raw, "EXISTS %s", "k");
    assert_int_equal(r->integer, 1); /* the store deleted its own key only */
    freeReplyObject(r);
    r = raw_cmd(raw, "DEL %s", "k");
    freeReplyObject(r);
    redisFree(raw);
    ops->close(kv);
}

static void test_db_from_url(void **state)
{
    (void)state;
    char url[160];
    snprintf(url, sizeof url, "%s/3", test_url());
    char prefix[64];
    snprintf(prefix, sizeof prefix, "t%d-db:", (int)getpid());
    dk_kv *kv = open_url(url, prefix, 1, 1000);
    assert_int_equal(ops->set(kv, "k", "in-db-3", 7, 10000), DK_OK);

    char full[96];
    snprintf(full, sizeof full, "%sk", prefix);
    redisContext *raw = raw_test();
    redisReply *r = raw_cmd(raw, "EXISTS %s", full);
    assert_int_equal(r->integer, 0); /* not in db 0 */
    freeReplyObject(r);
    freeReplyObject(raw_cmd(raw, "SELECT 3", NULL));
    r = raw_cmd(raw, "GET %s", full);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_string_equal(r->str, "in-db-3");
    freeReplyObject(r);
    freeReplyObject(raw_cmd(raw, "DEL %s", full));
    redisFree(raw);
    ops->close(kv);
}

static void test_ttl_expiry(void **state)
{
    (void)state;
    dk_kv *kv = open_test("ttl", 2);
    int64_t start = dk_mono_ms();
    assert_int_equal(ops->set(kv, "short", "v", 1, 50), DK_OK);
    assert_int_equal(ops->set(kv, "long", "v", 1, 60000), DK_OK);
    assert_true(key_exists(kv, "short"));
    assert_true(wait_gone(kv, "short", 3000) >= 0);
    assert_true(dk_mono_ms() - start >= 45);
    assert_true(key_exists(kv, "long"));

    /* a set without TTL clears the TTL */
    assert_int_equal(ops->set(kv, "t", "v", 1, 30), DK_OK);
    assert_int_equal(ops->set(kv, "t", "w", 1, 0), DK_OK);
    sleep_ms(60);
    assert_true(key_exists(kv, "t"));
    assert_int_equal(ops->del(kv, "t"), DK_OK);
    assert_int_equal(ops->del(kv, "long"), DK_OK);
    ops->close(kv);
}

static void test_incr_window(void **state)
{
    (void)state;
    dk_kv *kv = open_test("incr", 2);
    int64_t count, ttl;
    for (int64_t i = 1; i <= 3; i++) {
        assert_int_equal(ops->incr_window(kv, "ctr", 60000, &count, &ttl), DK_OK);
        assert_int_equal(count, i);
        assert_true(ttl > 0 && ttl <= 60000);
    }
    dk_arena *a = dk_arena_new();
    char *val;
    size_t len;
    assert_int_equal(ops->get(kv, a, "ctr", &val, &len), DK_OK);
    assert_string_equal(val, "3");

    assert_int_equal(ops->incr_window(kv, "w", 50, &count, &ttl), DK_OK);
    assert_int_equal(count, 1);
    assert_true(ttl > 0 && ttl <= 50);
    assert_int_equal(ops->incr_window(kv, "w", 50, &count, &ttl), DK_OK);
    assert_int_equal(count, 2);
    assert_true(wait_gone(kv, "w", 3000) >= 0);
    assert_int_equal(ops->incr_window(kv, "w", 50, &count, &ttl), DK_OK);
    assert_int_equal(count, 1);

    /* a counter whose expiry was lost (set without TTL) gets one */
    assert_int_equal(ops->set(kv, "lost", "41", 2, 0), DK_OK);
    assert_int_equal(ops->incr_window(kv, "lost", 40, &count, &ttl), DK_OK);
    assert_int_equal(count, 42);
    assert_true(ttl > 0 && ttl <= 40);
    assert_true(wait_gone(kv, "lost", 3000) >= 0);

    /* not an integer: the server's error becomes DK_E_INTERNAL */
    assert_int_equal(ops->set(kv, "text", "abc", 3, 0), DK_OK);
    assert_int_equal(ops->incr_window(kv, "text", 1000, &count, &ttl), DK_E_INTERNAL);
    assert_int_equal(ops->get(kv, a, "text", &val, &len), DK_OK);
    assert_string_equal(val, "abc");
    /* and the connection that saw the error reply is still good */
    assert_int_equal(ops->incr_window(kv, "ctr", 60000, &count, &ttl), DK_OK);
    assert_int_equal(count, 4);
    assert_int_equal(ops->incr_window(kv, "ctr", 0, &count, &ttl), DK_E_INTERNAL);
    assert_int_equal(ops->del(kv, "text"), DK_OK);
    assert_int_equal(ops->del(kv, "ctr"), DK_OK);
    dk_arena_free(a);
    ops->close(kv);
}

struct worker {
    dk_kv *kv;
    int n;
    int failures;
    int64_t max_count;
};

static void *incr_worker(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < w->n; i++) {
        int64_t count, ttl;
        if (ops->incr_window(w->kv, "shared", 60000, &count, &ttl) != DK_OK) {
            w->failures++;
            continue;
        }
        if (count > w->max_count)
            w->max_count = count;
    }
    return NULL;
}

static void test_concurrent_increments(void **state)
{
    (void)state;
    /* more threads than connections: callers queue for the pool */
    dk_kv *kv = open_test("conc", 2);
    assert_int_equal(ops->del(kv, "shared"), DK_OK);
    enum { THREADS = 4, PER_THREAD = 500 };
    pthread_t th[THREADS];
    struct worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){.kv = kv, .n = PER_THREAD};
        assert_int_equal(pthread_create(&th[i], NULL, incr_worker, &w[i]), 0);
    }
    int64_t max = 0;
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(w[i].failures, 0);
        if (w[i].max_count > max)
            max = w[i].max_count;
    }
    assert_int_equal(max, THREADS * PER_THREAD);
    dk_arena *a = dk_arena_new();
    char *val;
    size_t len;
    assert_int_equal(ops->get(kv, a, "shared", &val, &len), DK_OK);
    char want[16];
    snprintf(want, sizeof want, "%d", THREADS * PER_THREAD);
    assert_string_equal(val, want);
    dk_arena_free(a);
    assert_int_equal(ops->del(kv, "shared"), DK_OK);
    ops->close(kv);
}

/* --- URLs ------------------------------------------------------------------------------------ */

static void test_url_parsing(void **state)
{
    (void)state;
    const char *bad[] = {
        NULL,
        "",
        "http://127.0.0.1:6379",
        "redis://",
        "redis://:6379",
        "redis://host:0",
        "redis://host:65536",
        "redis://host:12ab",
        "redis://host:",
        "redis://host/abc",
        "redis://host/1/2",
        "redis://host/-1",
        "redis://[::1",
        "redis://[]:6379",
        "redis://[::1]x",
        "redis://host?timeout=1",
        "redis://host#frag",
        "redis://user:p%zz@host",
        "redis://user:p%0@host",
        "redis://user:p%00w@host",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dk_kv_options opt = {.url = bad[i], .pool_size = 1, .timeout_ms = 100};
        dk_kv *kv = (dk_kv *)1;
        dk_status st = ops->open(&opt, &kv);
        if (st != DK_E_VALIDATION)
            fail_msg("URL %zu (%s) gave status %d", i, bad[i] ? bad[i] : "NULL", (int)st);
        assert_ptr_equal(kv, (dk_kv *)1); /* untouched on failure */
    }
    /* well-formed: connections are lazy, so these open without a server */
    const char *good[] = {
        "redis://localhost",          "REDIS://127.0.0.1:1/",
        "redis://[::1]:6380/2",       "redis://[::1]",
        "redis://:pw@host:6379/0",    "redis://user:p%40ss%3Aw@host",
        "redis://default:pw@host/15", "redis://justapassword@host",
        "redis://u:p@ss@host", /* the last '@' ends the userinfo */
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        dk_kv_options opt = {.url = good[i], .pool_size = 1, .timeout_ms = 100};
        dk_kv *kv = NULL;
        dk_status st = ops->open(&opt, &kv);
        if (st != DK_OK)
            fail_msg("URL %s gave status %d", good[i], (int)st);
        ops->close(kv);
    }
}

/* --- failures -------------------------------------------------------------------------------- */

static void test_dead_url_fails_fast(void **state)
{
    (void)state;
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", free_port());
    dk_kv *kv = open_url(url, "x:", 2, 300);
    dk_arena *a = dk_arena_new();
    char *val;
    size_t len;
    bool e;
    int64_t c, t;
    int64_t start = dk_mono_ms();
    assert_int_equal(ops->get(kv, a, "k", &val, &len), DK_E_UNAVAILABLE);
    assert_int_equal(ops->set(kv, "k", "v", 1, 0), DK_E_UNAVAILABLE);
    assert_int_equal(ops->del(kv, "k"), DK_E_UNAVAILABLE);
    assert_int_equal(ops->exists(kv, "k", &e), DK_E_UNAVAILABLE);
    assert_int_equal(ops->incr_window(kv, "k", 1000, &c, &t), DK_E_UNAVAILABLE);
    assert_int_equal(ops->ping(kv, 100), DK_E_UNAVAILABLE);
    assert_true(dk_mono_ms() - start < 300); /* refused at once: six calls, not one timeout */
    dk_arena_free(a);
    ops->close(kv);
}

/* A socket that completes the TCP handshake (the kernel's backlog) but never answers. */
static void test_silent_server_times_out(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 16), 0);
    socklen_t slen = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &slen), 0);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", ntohs(sa.sin_port));

    dk_kv *kv = open_url(url, "x:", 1, 200);
    int64_t c, t;
    int64_t start = dk_mono_ms();
    assert_int_equal(ops->incr_window(kv, "k", 1000, &c, &t), DK_E_UNAVAILABLE);
    int64_t took = dk_mono_ms() - start;
    assert_true(took >= 150 && took < 1000);

    /* ping's own timeout applies */
    start = dk_mono_ms();
    assert_int_equal(ops->ping(kv, 50), DK_E_UNAVAILABLE);
    took = dk_mono_ms() - start;
    assert_true(took < 500);

    ops->close(kv);
    close(fd);
}

struct slow_call {
    dk_kv *kv;
    dk_status st;
};

static void *slow_get(void *arg)
{
    struct slow_call *s = arg;
    dk_arena *a = dk_arena_new();
    char *val;
    size_t len;
    s->st = ops->get(s->kv, a, "k", &val, &len);
    dk_arena_free(a);
    return NULL;
}

static void test_busy_pool_waits_bounded(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 16), 0);
    socklen_t slen = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &slen), 0);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", ntohs(sa.sin_port));
    dk_kv *kv = open_url(url, "x:", 1, 300);

    enum { THREADS = 3 };
    pthread_t th[THREADS];
    struct slow_call calls[THREADS];
    int64_t start = dk_mono_ms();
    for (int i = 0; i < THREADS; i++) {
        calls[i] = (struct slow_call){.kv = kv, .st = DK_OK};
        assert_int_equal(pthread_create(&th[i], NULL, slow_get, &calls[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(calls[i].st, DK_E_UNAVAILABLE);
    }
    /* one holds the connection (a write and a read timeout at most), the others wait for it
     * at most one timeout and then either give up or get a slot back and time out once */
    assert_true(dk_mono_ms() - start < 2500);
    ops->close(kv);
    close(fd);
}

static int64_t client_kill_normal(void)
{
    redisContext *raw = raw_test();
    redisReply *r = raw_cmd(raw, "CLIENT KILL TYPE normal", NULL);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    int64_t killed = r->integer;
    freeReplyObject(r);
    redisFree(raw);
    return killed;
}

static void test_recovers_after_client_kill(void **state)
{
    (void)state;
    dk_kv *kv = open_test("kill", 2);
    int64_t c, t;
    assert_int_equal(ops->set(kv, "k", "v", 1, 60000), DK_OK);
    assert_int_equal(ops->del(kv, "ctr"), DK_OK);
    assert_int_equal(ops->incr_window(kv, "ctr", 60000, &c, &t), DK_OK);

    assert_true(client_kill_normal() >= 1); /* our idle connection(s) among them */
    /* the next call may fail once; the one after must succeed */
    dk_status st = ops->incr_window(kv, "ctr", 60000, &c, &t);
    assert_true(st == DK_OK || st == DK_E_UNAVAILABLE);
    if (st != DK_OK)
        assert_int_equal(ops->incr_window(kv, "ctr", 60000, &c, &t), DK_OK);
    assert_true(c == 2); /* never counted twice */

    /* idempotent reads retry on a fresh connection by themselves */
    assert_true(client_kill_normal() >= 1);
    dk_arena *a = dk_arena_new();
    char *val;
    size_t len;
    st = ops->get(kv, a, "k", &val, &len);
    if (st != DK_OK)
        assert_int_equal(ops->get(kv, a, "k", &val, &len), DK_OK);
    assert_string_equal(val, "v");
    assert_int_equal(ops->ping(kv, 500), DK_OK);

    /* A big write into a killed connection meets the peer's reset mid-way (EPIPE): SIGPIPE,
     * at its default here, must not end the process. */
    enum { BIG = 8 << 20 };
    char *big = malloc(BIG);
    assert_non_null(big);
    memset(big, 'b', BIG);
    for (int round = 0; round < 3; round++) {
        assert_true(client_kill_normal() >= 1);
        st = ops->set(kv, "big", big, BIG, 60000);
        if (st != DK_OK)
            assert_int_equal(ops->set(kv, "big", big, BIG, 60000), DK_OK);
    }
    free(big);
    assert_int_equal(ops->del(kv, "big"), DK_OK);
    assert_int_equal(ops->del(kv, "k"), DK_OK);
    assert_int_equal(ops->del(kv, "ctr"), DK_OK);
    dk_arena_free(a);
    ops->close(kv);
}

static void test_recovers_after_restart(void **state)
{
    (void)state;
    (void)test_url(); /* a Redis setup is present */
    int port = free_port();
    struct redis_proc *p = &spawned;
    if (!redis_spawn(p, port, NULL))
        skip();
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    dk_kv *kv = open_url(url, "r:", 2, 300);
    assert_int_equal(ops->set(kv, "k", "v", 1, 0), DK_OK);
    redis_stop(p);

    int64_t start = dk_mono_ms();
    int64_t c, t;
    assert_int_equal(ops->incr_window(kv, "ctr", 1000, &c, &t), DK_E_UNAVAILABLE);
    assert_int_equal(ops->ping(kv, 100), DK_E_UNAVAILABLE);
    assert_true(dk_mono_ms() - start < 600);

    if (!redis_spawn(p, port, NULL)) {
        ops->close(kv);
        fail_msg("could not restart redis-server on port %d", port);
    }
    /* the same store works again without being reopened */
    assert_int_equal(ops->ping(kv, 500), DK_OK);
    assert_int_equal(ops->incr_window(kv, "ctr", 1000, &c, &t), DK_OK);
    assert_int_equal(c, 1);
    ops->close(kv);
    redis_stop(p);
}

static void test_auth_from_url(void **state)
{
    (void)state;
    (void)test_url();
    const char *password = "s3:cr@t/x"; /* needs percent-encoding in a URL */
    const char *encoded = "s3%3Acr%40t%2Fx";
    int port = free_port();
    struct redis_proc *p = &spawned;
    if (!redis_spawn(p, port, password))
        skip();
    redisContext *raw = raw_connect("127.0.0.1", port, password);
    redisReply *r = redisCommand(raw, "ACL SETUSER alice on >al1ce ~* +@all");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    redisFree(raw);

    char url[160];
    const char *user_ok[] = {":", "default:", ""}; /* the last: redis-cli's password-only form */
    for (size_t i = 0; i < sizeof user_ok / sizeof user_ok[0]; i++) {
        snprintf(url, sizeof url, "redis://%s%s@127.0.0.1:%d/1", user_ok[i], encoded, port);
        dk_kv *kv = open_url(url, "a:", 1, 500);
        assert_int_equal(ops->set(kv, "k", "v", 1, 0), DK_OK);
        assert_int_equal(ops->ping(kv, 500), DK_OK);
        ops->close(kv);
    }
    snprintf(url, sizeof url, "redis://alice:al1ce@127.0.0.1:%d", port);
    dk_kv *kv = open_url(url, "a:", 1, 500);
    assert_int_equal(ops->set(kv, "k", "alice", 5, 0), DK_OK);
    ops->close(kv);

    /* refused: wrong password, wrong user, no password. A server that answers but refuses us
     * is not "unavailable". */
    const char *refused[] = {":wrong@", "alice:s3cr3t@", ""};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        snprintf(url, sizeof url, "redis://%s127.0.0.1:%d", refused[i], port);
        kv = open_url(url, "a:", 1, 500);
        bool e;
        assert_int_equal(ops->exists(kv, "k", &e), DK_E_INTERNAL);
        ops->close(kv);
    }
    redis_stop(p);
}

/* --- publish/subscribe ----------------------------------------------------------------------- */

/* What a subscription saw, filled by its thread. */
struct recorder {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int messages;
    char last[64];
    size_t last_len;
    bool live;
    int live_calls, down_calls;
};

static void rec_init(struct recorder *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
}

static void rec_release(struct recorder *r)
{
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
}

static void rec_message(void *ctx, const char *msg, size_t len)
{
    struct recorder *r = ctx;
    pthread_mutex_lock(&r->lock);
    r->messages++;
    r->last_len = len < sizeof r->last ? len : sizeof r->last - 1;
    memcpy(r->last, msg, r->last_len);
    r->last[r->last_len] = msg[len] == '\0' ? '\0' : '!'; /* the promised NUL after the bytes */
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

static void rec_state(void *ctx, bool live)
{
    struct recorder *r = ctx;
    pthread_mutex_lock(&r->lock);
    r->live = live;
    if (live)
        r->live_calls++;
    else
        r->down_calls++;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

enum rec_what { REC_MESSAGES, REC_LIVE_CALLS, REC_DOWN_CALLS };

/* Waits until the counter reaches at least n; the ms it took, or -1 after timeout_ms. */
static int64_t rec_wait(struct recorder *r, enum rec_what what, int n, int timeout_ms)
{
    int64_t start = dk_mono_ms();
    pthread_mutex_lock(&r->lock);
    for (;;) {
        int have = what == REC_MESSAGES     ? r->messages
                   : what == REC_LIVE_CALLS ? r->live_calls
                                            : r->down_calls;
        if (have >= n)
            break;
        int64_t left = timeout_ms - (dk_mono_ms() - start);
        if (left <= 0) {
            pthread_mutex_unlock(&r->lock);
            return -1;
        }
        pthread_mutex_unlock(&r->lock);
        sleep_ms(left < 5 ? (int)left : 5);
        pthread_mutex_lock(&r->lock);
    }
    pthread_mutex_unlock(&r->lock);
    return dk_mono_ms() - start;
}

static int rec_get(struct recorder *r, enum rec_what what)
{
    pthread_mutex_lock(&r->lock);
    int have = what == REC_MESSAGES     ? r->messages
               : what == REC_LIVE_CALLS ? r->live_calls
                                        : r->down_calls;
    pthread_mutex_unlock(&r->lock);
    return have;
}

static int64_t raw_numsub(redisContext *raw, const char *channel)
{
    redisReply *r = raw_cmd(raw, "PUBSUB NUMSUB %s", channel);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 2);
    int64_t n = r->element[1]->integer;
    freeReplyObject(r);
    return n;
}

static void test_publish_subscribe(void **state)
{
    (void)state;
    /* two stores on one server with one prefix: two processes of one deployment */
    dk_kv *a = open_test("ps", 2);
    dk_kv *b = open_test("ps", 2);
    struct recorder ra, rb;
    rec_init(&ra);
    rec_init(&rb);
    dk_kv_sub *sa = NULL, *sb = NULL;
    assert_int_equal(ops->subscribe(a, "ch", rec_message, rec_state, &ra, &sa), DK_OK);
    assert_int_equal(ops->subscribe(b, "ch", rec_message, rec_state, &rb, &sb), DK_OK);
    assert_true(rec_wait(&ra, REC_LIVE_CALLS, 1, 2000) >= 0);
    assert_true(rec_wait(&rb, REC_LIVE_CALLS, 1, 2000) >= 0);

    /* b publishes: both subscriptions get it, quickly */
    assert_int_equal(ops->publish(b, "ch", "hello", 5), DK_OK);
    int64_t took = rec_wait(&ra, REC_MESSAGES, 1, 1000);
    assert_true(took >= 0 && took < 100);
    assert_true(rec_wait(&rb, REC_MESSAGES, 1, 1000) >= 0);
    assert_string_equal(ra.last, "hello");

    /* binary-safe, and an empty message is a message */
    const char bin[] = {'x', '\0', '\r', '\n', 'y'};
    assert_int_equal(ops->publish(a, "ch", bin, sizeof bin), DK_OK);
    assert_true(rec_wait(&rb, REC_MESSAGES, 2, 1000) >= 0);
    assert_int_equal(rb.last_len, sizeof bin);
    assert_memory_equal(rb.last, bin, sizeof bin);
    assert_int_equal(ops->publish(a, "ch", "", 0), DK_OK);
    assert_true(rec_wait(&rb, REC_MESSAGES, 3, 1000) >= 0);
    assert_int_equal(rb.last_len, 0);

    /* the prefix applies to channels: the server sees "<prefix>ch" */
    char prefix[96], full[128];
    snprintf(prefix, sizeof prefix, "t%d-ps:", (int)getpid());
    snprintf(full, sizeof full, "%sch", prefix);
    redisContext *raw = raw_test();
    assert_int_equal(raw_numsub(raw, full), 2);
    assert_int_equal(raw_numsub(raw, "ch"), 0);
    freeReplyObject(raw_cmd(raw, "PUBLISH ch %s", "unprefixed")); /* not ours */
    freeReplyObject(raw_cmd(raw, "PUBLISH %s raw", full));
    assert_true(rec_wait(&ra, REC_MESSAGES, 4, 1000) >= 0);
    assert_string_equal(ra.last, "raw"); /* "unprefixed", sent before it, never arrived */

    /* a store with another prefix is another deployment */
    dk_kv *c = open_test("ps-other", 1);
    assert_int_equal(ops->publish(c, "ch", "elsewhere", 9), DK_OK);
    assert_int_equal(ops->publish(b, "ch", "mine", 4), DK_OK);
    assert_true(rec_wait(&ra, REC_MESSAGES, 5, 1000) >= 0);
    assert_string_equal(ra.last, "mine");

    /* unsubscribe is prompt and leaves the server */
    int64_t start = dk_mono_ms();
    ops->unsubscribe(a, sa);
    assert_true(dk_mono_ms() - start < 500);
    int64_t deadline = dk_mono_ms() + 2000;
    while (raw_numsub(raw, full) != 1 && dk_mono_ms() < deadline)
        sleep_ms(5);
    assert_int_equal(raw_numsub(raw, full), 1);
    assert_int_equal(ops->publish(b, "ch", "last", 4), DK_OK);
    assert_true(rec_wait(&rb, REC_MESSAGES, 6, 1000) >= 0);
    assert_string_equal(rb.last, "last");
    assert_int_equal(rec_get(&ra, REC_MESSAGES), 5);
    assert_int_equal(rec_get(&ra, REC_DOWN_CALLS), 0); /* no state change on unsubscribe */

    ops->unsubscribe(b, NULL);
    ops->close(c);
    ops->close(a);
    start = dk_mono_ms();
    ops->close(b); /* ends sb */
    assert_true(dk_mono_ms() - start < 500);
    deadline = dk_mono_ms() + 2000;
    while (raw_numsub(raw, full) != 0 && dk_mono_ms() < deadline)
        sleep_ms(5);
    assert_int_equal(raw_numsub(raw, full), 0);
    redisFree(raw);
    rec_release(&ra);
    rec_release(&rb);
}

static void test_subscription_after_client_kill(void **state)
{
    (void)state;
    dk_kv *kv = open_test("ps-kill", 1);
    struct recorder r;
    rec_init(&r);
    dk_kv_sub *sub = NULL;
    assert_int_equal(ops->subscribe(kv, "ch", rec_message, rec_state, &r, &sub), DK_OK);
    assert_true(rec_wait(&r, REC_LIVE_CALLS, 1, 2000) >= 0);

    redisContext *raw = raw_test();
    redisReply *k = raw_cmd(raw, "CLIENT KILL TYPE pubsub", NULL);
    assert_int_equal(k->type, REDIS_REPLY_INTEGER);
    assert_true(k->integer >= 1);
    freeReplyObject(k);
    /* noticed at once (the socket closed), reported, and subscribed again */
    int64_t took = rec_wait(&r, REC_DOWN_CALLS, 1, 1000);
    assert_true(took >= 0 && took < 500);
    assert_true(rec_wait(&r, REC_LIVE_CALLS, 2, 2000) >= 0);
    assert_true(r.live);
    assert_int_equal(ops->publish(kv, "ch", "after", 5), DK_OK);
    assert_true(rec_wait(&r, REC_MESSAGES, 1, 1000) >= 0);
    assert_string_equal(r.last, "after");
    redisFree(raw);
    ops->unsubscribe(kv, sub);
    ops->close(kv);
    rec_release(&r);
}

/* A server that stops answering without closing the socket: the subscription's PING goes
 * unanswered, and within about twice the timeout it is reported lost. */
static void test_subscription_notices_a_stalled_server(void **state)
{
    (void)state;
    char prefix[96];
    snprintf(prefix, sizeof prefix, "t%d-ps-pause:", (int)getpid());
    dk_kv *kv = open_url(test_url(), prefix, 1, 300);
    struct recorder r;
    rec_init(&r);
    dk_kv_sub *sub = NULL;
    assert_int_equal(ops->subscribe(kv, "ch", rec_message, rec_state, &r, &sub), DK_OK);
    assert_true(rec_wait(&r, REC_LIVE_CALLS, 1, 2000) >= 0);

    redisContext *raw = raw_test();
    int64_t start = dk_mono_ms();
    freeReplyObject(raw_cmd(raw, "CLIENT PAUSE 1500 ALL", NULL));
    int64_t took = rec_wait(&r, REC_DOWN_CALLS, 1, 1400);
    assert_true(took >= 0);
    assert_true(dk_mono_ms() - start <= 2 * 300 + 200);
    /* the pause ends: subscribed again */
    assert_true(rec_wait(&r, REC_LIVE_CALLS, 2, 4000) >= 0);
    assert_int_equal(ops->publish(kv, "ch", "back", 4), DK_OK);
    assert_true(rec_wait(&r, REC_MESSAGES, 1, 1000) >= 0);
    redisFree(raw);
    ops->unsubscribe(kv, sub);
    ops->close(kv);
    rec_release(&r);
}

static void test_subscription_across_a_restart(void **state)
{
    (void)state;
    (void)test_url();
    int port = free_port();
    struct redis_proc *p = &spawned;
    if (!redis_spawn(p, port, NULL))
        skip();
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    dk_kv *kv = open_url(url, "r:", 1, 300);
    struct recorder r;
    rec_init(&r);
    dk_kv_sub *sub = NULL;
    assert_int_equal(ops->subscribe(kv, "ch", rec_message, rec_state, &r, &sub), DK_OK);
    assert_true(rec_wait(&r, REC_LIVE_CALLS, 1, 2000) >= 0);

    redis_stop(p);
    assert_true(rec_wait(&r, REC_DOWN_CALLS, 1, 1000) >= 0);
    assert_int_equal(ops->publish(kv, "ch", "lost", 4), DK_E_UNAVAILABLE);
    sleep_ms(300); /* a few failed reconnects: still down, and not live */
    assert_false(r.live);
    assert_int_equal(rec_get(&r, REC_LIVE_CALLS), 1);

    if (!redis_spawn(p, port, NULL)) {
        ops->close(kv);
        fail_msg("could not restart redis-server on port %d", port);
    }
    /* back within the backoff (at most 2 s) */
    assert_true(rec_wait(&r, REC_LIVE_CALLS, 2, 3000) >= 0);
    assert_int_equal(ops->publish(kv, "ch", "again", 5), DK_OK);
    assert_true(rec_wait(&r, REC_MESSAGES, 1, 1000) >= 0);
    assert_string_equal(r.last, "again");
    ops->close(kv); /* ends the subscription */
    redis_stop(p);
    rec_release(&r);
}

/* Nothing listening, then a server that accepts but never answers: never live, and the
 * subscription still ends promptly. */
static void test_subscription_never_live_without_a_server(void **state)
{
    (void)state;
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", free_port());
    dk_kv *kv = open_url(url, "x:", 1, 200);
    struct recorder r;
    rec_init(&r);
    dk_kv_sub *sub = NULL;
    assert_int_equal(ops->subscribe(kv, "ch", rec_message, rec_state, &r, &sub), DK_OK);
    sleep_ms(300);
    assert_int_equal(rec_get(&r, REC_LIVE_CALLS), 0);
    assert_int_equal(rec_get(&r, REC_DOWN_CALLS), 0); /* never live, so never lost */
    int64_t start = dk_mono_ms();
    ops->unsubscribe(kv, sub);
    assert_true(dk_mono_ms() - start < 500);
    ops->close(kv);

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 16), 0);
    socklen_t slen = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &slen), 0);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", ntohs(sa.sin_port));
    kv = open_url(url, "x:", 1, 200);
    assert_int_equal(ops->subscribe(kv, "ch", rec_message, rec_state, &r, &sub), DK_OK);
    sleep_ms(500);
    assert_int_equal(rec_get(&r, REC_LIVE_CALLS), 0);
    start = dk_mono_ms();
    ops->close(kv); /* at worst one connect or SUBSCRIBE timeout to wait out */
    assert_true(dk_mono_ms() - start < 1000);
    close(fd);
    rec_release(&r);
}

int main(void)
{
    /* The adapter must survive writes to closed sockets with SIGPIPE at its default. */
    signal(SIGPIPE, SIG_DFL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_parsing),
        cmocka_unit_test(test_dead_url_fails_fast),
        cmocka_unit_test(test_silent_server_times_out),
        cmocka_unit_test(test_busy_pool_waits_bounded),
        cmocka_unit_test(test_get_set_del_exists),
        cmocka_unit_test(test_binary_and_injection_safe),
        cmocka_unit_test(test_set_nx_expire_rename),
        cmocka_unit_test(test_prefix_is_applied),
        cmocka_unit_test(test_db_from_url),
        cmocka_unit_test(test_ttl_expiry),
        cmocka_unit_test(test_incr_window),
        cmocka_unit_test(test_concurrent_increments),
        cmocka_unit_test(test_recovers_after_client_kill),
        cmocka_unit_test_teardown(test_recovers_after_restart, stop_spawned),
        cmocka_unit_test_teardown(test_auth_from_url, stop_spawned),
        cmocka_unit_test(test_publish_subscribe),
        cmocka_unit_test(test_subscription_after_client_kill),
        cmocka_unit_test(test_subscription_notices_a_stalled_server),
        cmocka_unit_test_teardown(test_subscription_across_a_restart, stop_spawned),
        cmocka_unit_test(test_subscription_never_live_without_a_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
