/* test_redis_conn.c — Redis connections over TLS (rediss://), against a redis-server this test
 * starts with --tls-port and a throwaway CA made here with the openssl command (skipped when
 * redis-server or openssl is missing): the CA trusted through redis.tls_ca_file and through
 * SSL_CERT_FILE; an untrusted CA, a certificate for another name and an unreadable CA file
 * refused; AUTH, SELECT, a 1 MiB value and an idle connection (TLS 1.3 session tickets) over
 * TLS; the kv adapter (commands and publish/subscribe) and the events adapter (a stream
 * consumed by a group) over TLS. */
#include "testutil.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "adapters/redis_url.h"
#include "core/arena.h"
#include "core/timeutil.h"
#include "ports/events.h"
#include "ports/kv.h"
#include "adapters/kv.h"
#include "adapters/events.h"
#include "core/banned.h"

extern char **environ;

#define PASSWORD "tls-pa55"

static struct {
    char *dir;
    char ca[512], other_ca[512], cert[512], key[512];
    pid_t pid;
    int port;
} srv;

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
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

static bool have_program(const char *name)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", name);
    return system(cmd) == 0;
}

/* A CA, a second CA nobody trusts, and a server certificate for DNS:localhost signed by the
 * first, all in dir. */
static bool make_certs(const char *dir)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "set -e; cd '%s'; k='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes';"
             "openssl req -x509 $k -keyout ca.key -out ca.pem -days 2 -subj /CN=docket-test-ca;"
             "openssl req -x509 $k -keyout other.key -out other.pem -days 2 -subj /CN=other-ca;"
             "openssl req $k -keyout server.key -out server.csr -subj /CN=localhost;"
             "printf 'subjectAltName=DNS:localhost\\n' >ext;"
             "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
             "-out server.pem -days 2 -extfile ext",
             dir);
    char quiet[2200];
    snprintf(quiet, sizeof quiet, "(%s) >/dev/null 2>&1", cmd);
    return system(quiet) == 0;
}

static bool spawn_server(void)
{
    char port_s[16];
    snprintf(port_s, sizeof port_s, "%d", srv.port);
    char *argv[] = {"redis-server",
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--tls-port",
                    port_s,
                    "--tls-cert-file",
                    srv.cert,
                    "--tls-key-file",
                    srv.key,
                    "--tls-ca-cert-file",
                    srv.ca,
                    "--tls-auth-clients",
                    "no",
                    "--requirepass",
                    PASSWORD,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    int rc = posix_spawnp(&srv.pid, "redis-server", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    return rc == 0;
}

/* rediss://…@localhost:port with the given path (or none). */
static void tls_url(char *out, size_t n, const char *host, const char *path)
{
    snprintf(out, n, "rediss://:" PASSWORD "@%s:%d%s", host, srv.port, path ? path : "");
}

static dk_status try_connect(const char *url, const char *ca_file, dk_redis_conn **ret)
{
    dk_redis_url u;
    assert_int_equal(dk_redis_url_parse(url, &u), DK_OK);
    assert_true(u.tls);
    dk_status st = dk_redis_url_tls(&u, ca_file);
    if (st == DK_OK)
        st = dk_redis_connect(&u, 1000, ret);
    dk_redis_url_release(&u);
    return st;
}

static int setup(void **state)
{
    (void)state;
    if (!have_program("redis-server") || !have_program("openssl"))
        return 0;
    srv.dir = dk_test_tmpdir("redis_conn");
    snprintf(srv.ca, sizeof srv.ca, "%s/ca.pem", srv.dir);
    snprintf(srv.other_ca, sizeof srv.other_ca, "%s/other.pem", srv.dir);
    snprintf(srv.cert, sizeof srv.cert, "%s/server.pem", srv.dir);
    snprintf(srv.key, sizeof srv.key, "%s/server.key", srv.dir);
    if (!make_certs(srv.dir))
        return -1;
    srv.port = free_port();
    if (!spawn_server())
        return -1;
    char url[256];
    tls_url(url, sizeof url, "localhost", NULL);
    for (int i = 0; i < 200; i++) {
        dk_redis_conn *c = NULL;
        if (try_connect(url, srv.ca, &c) == DK_OK) {
            dk_redis_conn_free(c);
            return 0;
        }
        if (waitpid(srv.pid, NULL, WNOHANG) == srv.pid)
            return -1;
        sleep_ms(25);
    }
    return -1;
}

static int teardown(void **state)
{
    (void)state;
    if (srv.pid > 0) {
        kill(srv.pid, SIGTERM);
        waitpid(srv.pid, NULL, 0);
    }
    free(srv.dir);
    return 0;
}

static void need_server(void)
{
    if (srv.pid <= 0)
        skip();
}

static redisReply *cmd(dk_redis_conn *c, int argc, const char **argv)
{
    size_t argvlen[8];
    for (int i = 0; i < argc; i++)
        argvlen[i] = strlen(argv[i]);
    return dk_redis_command(c, argc, argv, argvlen);
}

static void test_tls_with_ca_file(void **state)
{
    (void)state;
    need_server();
    char url[256];
    tls_url(url, sizeof url, "localhost", "/4");
    dk_redis_conn *c = NULL;
    assert_int_equal(try_connect(url, srv.ca, &c), DK_OK);
    /* AUTH and SELECT went over TLS */
    redisReply *r = cmd(c, 2, (const char *[]){"CLIENT", "INFO"});
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_non_null(strstr(r->str, " db=4 "));
    freeReplyObject(r);

    /* a value larger than any TLS record or read buffer, both ways */
    size_t big = 1024 * 1024;
    char *val = malloc(big + 1);
    for (size_t i = 0; i < big; i++)
        val[i] = (char)('a' + i % 26);
    const char *set_argv[3] = {"SET", "tls:big", val};
    size_t set_len[3] = {3, 7, big};
    r = dk_redis_command(c, 3, set_argv, set_len);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    r = cmd(c, 2, (const char *[]){"GET", "tls:big"});
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_int_equal(r->len, big);
    assert_memory_equal(r->str, val, big);
    freeReplyObject(r);
    free(val);

    /* idle for a while (session tickets and all): still healthy, and usable */
    sleep_ms(100);
    assert_true(dk_redis_idle_alive(c));
    r = cmd(c, 1, (const char *[]){"PING"});
    assert_non_null(r);
    assert_string_equal(r->str, "PONG");
    freeReplyObject(r);

    /* closed by the server: no longer alive */
    r = cmd(c, 1, (const char *[]){"QUIT"});
    if (r)
        freeReplyObject(r);
    int64_t start = dk_mono_ms();
    while (dk_redis_idle_alive(c) && dk_mono_ms() - start < 1000)
        sleep_ms(5);
    assert_false(dk_redis_idle_alive(c));
    dk_redis_conn_free(c);
}

static void test_tls_with_ssl_cert_file(void **state)
{
    (void)state;
    need_server();
    char url[256];
    tls_url(url, sizeof url, "localhost", NULL);
    dk_redis_conn *c = NULL;
    assert_int_equal(setenv("SSL_CERT_FILE", srv.ca, 1), 0);
    dk_status st = try_connect(url, NULL, &c);
    unsetenv("SSL_CERT_FILE");
    assert_int_equal(st, DK_OK);
    redisReply *r = cmd(c, 1, (const char *[]){"PING"});
    assert_non_null(r);
    assert_string_equal(r->str, "PONG");
    freeReplyObject(r);
    dk_redis_conn_free(c);
}

static void test_tls_refusals(void **state)
{
    (void)state;
    need_server();
    char url[256];
    dk_redis_conn *c = NULL;
    tls_url(url, sizeof url, "localhost", NULL);
    /* a CA that did not sign the server's certificate; then the system store alone */
    assert_int_equal(try_connect(url, srv.other_ca, &c), DK_E_UNAVAILABLE);
    assert_int_equal(setenv("SSL_CERT_FILE", srv.other_ca, 1), 0);
    dk_status st = try_connect(url, "", &c);
    unsetenv("SSL_CERT_FILE");
    assert_int_equal(st, DK_E_UNAVAILABLE);
    /* the right CA, but the certificate names localhost, not 127.0.0.1 */
    tls_url(url, sizeof url, "127.0.0.1", NULL);
    assert_int_equal(try_connect(url, srv.ca, &c), DK_E_UNAVAILABLE);
    /* a CA file that cannot be read, or that holds no certificate */
    tls_url(url, sizeof url, "localhost", NULL);
    char missing[600];
    snprintf(missing, sizeof missing, "%s/nonexistent.pem", srv.dir);
    assert_int_equal(try_connect(url, missing, &c), DK_E_VALIDATION);
    assert_int_equal(try_connect(url, srv.key, &c), DK_E_VALIDATION);
    /* plain redis:// to the TLS port gets no answer it understands */
    char plain[256];
    snprintf(plain, sizeof plain, "redis://:" PASSWORD "@localhost:%d", srv.port);
    dk_redis_url u;
    assert_int_equal(dk_redis_url_parse(plain, &u), DK_OK);
    assert_false(u.tls);
    assert_int_equal(dk_redis_url_tls(&u, srv.ca), DK_OK); /* a no-op for redis:// */
    assert_int_not_equal(dk_redis_connect(&u, 300, &c), DK_OK);
    dk_redis_url_release(&u);
    assert_null(c);
}

struct inbox {
    atomic_int messages;
    atomic_int events;
    char last[64];
};

static void on_message(void *ctx, const char *msg, size_t len)
{
    struct inbox *in = ctx;
    snprintf(in->last, sizeof in->last, "%.*s", (int)len, msg);
    atomic_fetch_add(&in->messages, 1);
}

static void on_state(void *ctx, bool up)
{
    (void)ctx;
    (void)up;
}

static void test_kv_over_tls(void **state)
{
    (void)state;
    need_server();
    char url[256];
    tls_url(url, sizeof url, "localhost", "/2");
    dk_kv_options opt = {
        .url = url, .tls_ca_file = srv.ca, .pool_size = 2, .timeout_ms = 1000, .key_prefix = "t:"};
    dk_kv *kv = NULL, *other = NULL;
    assert_int_equal(dk_kv_redis_ops.open(&opt, &kv), DK_OK);
    assert_int_equal(dk_kv_redis_ops.open(&opt, &other), DK_OK);
    assert_int_equal(dk_kv_redis_ops.set(kv, "k", "over tls", 8, 0), DK_OK);
    dk_arena *a = dk_arena_new();
    char *v = NULL;
    size_t len = 0;
    assert_int_equal(dk_kv_redis_ops.get(other, a, "k", &v, &len), DK_OK);
    assert_string_equal(v, "over tls");
    dk_arena_free(a);
    int64_t count = 0, ttl = 0;
    assert_int_equal(dk_kv_redis_ops.incr_window(kv, "n", 10000, &count, &ttl), DK_OK);
    assert_int_equal(count, 1);

    struct inbox in = {0};
    dk_kv_sub *sub = NULL;
    assert_int_equal(dk_kv_redis_ops.subscribe(other, "ch", on_message, on_state, &in, &sub),
                     DK_OK);
    /* the subscription is asynchronous: publish until it has been heard */
    int64_t start = dk_mono_ms();
    while (atomic_load(&in.messages) == 0 && dk_mono_ms() - start < 5000) {
        assert_int_equal(dk_kv_redis_ops.publish(kv, "ch", "hello", 5), DK_OK);
        sleep_ms(20);
    }
    assert_true(atomic_load(&in.messages) > 0);
    assert_string_equal(in.last, "hello");
    dk_kv_redis_ops.unsubscribe(other, sub);
    dk_kv_redis_ops.close(other);
    dk_kv_redis_ops.close(kv);

    /* untrusted: the store opens (connections are lazy) but every call is unavailable */
    opt.tls_ca_file = srv.other_ca;
    assert_int_equal(dk_kv_redis_ops.open(&opt, &kv), DK_OK);
    assert_int_equal(dk_kv_redis_ops.ping(kv, 500), DK_E_UNAVAILABLE);
    dk_kv_redis_ops.close(kv);
}

static dk_status on_event(void *ctx, const char *type, const char *payload)
{
    struct inbox *in = ctx;
    snprintf(in->last, sizeof in->last, "%s %s", type, payload);
    atomic_fetch_add(&in->events, 1);
    return DK_OK;
}

static void test_events_over_tls(void **state)
{
    (void)state;
    need_server();
    char url[256];
    tls_url(url, sizeof url, "localhost", "/3");
    char group[64];
    snprintf(group, sizeof group, "tls%d", (int)getpid());
    dk_events_options opt = {
        .url = url, .tls_ca_file = srv.ca, .group = group, .consumer = "c1", .timeout_ms = 1000};
    dk_events *consumer = NULL, *publisher = NULL;
    struct inbox in = {0};
    assert_int_equal(dk_events_redis_ops.open(&opt, &consumer), DK_OK);
    assert_int_equal(dk_events_redis_ops.subscribe(consumer, "tls.test", on_event, &in), DK_OK);
    assert_int_equal(dk_events_redis_ops.start(consumer), DK_OK);
    opt.group = NULL;
    assert_int_equal(dk_events_redis_ops.open(&opt, &publisher), DK_OK);
    assert_int_equal(dk_events_redis_ops.publish(publisher, "tls.test", "{\"n\":1}"), DK_OK);
    int64_t start = dk_mono_ms();
    while (atomic_load(&in.events) == 0 && dk_mono_ms() - start < 5000)
        sleep_ms(10);
    assert_int_equal(atomic_load(&in.events), 1);
    assert_string_equal(in.last, "tls.test {\"n\":1}");
    dk_events_redis_ops.close(publisher);
    dk_events_redis_ops.close(consumer);

    /* a CA file that cannot be read is refused when the bus opens */
    opt.tls_ca_file = "/nonexistent/ca.pem";
    publisher = NULL;
    assert_int_equal(dk_events_redis_ops.open(&opt, &publisher), DK_E_VALIDATION);
    assert_null(publisher);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls_with_ca_file), cmocka_unit_test(test_tls_with_ssl_cert_file),
        cmocka_unit_test(test_tls_refusals),     cmocka_unit_test(test_kv_over_tls),
        cmocka_unit_test(test_events_over_tls),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
