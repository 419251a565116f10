/* test_redis_url.c — the redis:// URL parser the Redis adapters share: every part it yields,
 * the malformed URLs it refuses (leaving the result untouched), and a connection to the test
 * Redis (DOCKET_TEST_REDIS_URL; that part is skipped when unset) that selects the URL's db. */
#include "testutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "adapters/redis_url.h"
#include "core/timeutil.h"
#include "core/banned.h"

struct url_case {
    const char *url;
    const char *host;
    int port;
    int db;
    const char *user;
    const char *password;
};

static void test_parts(void **state)
{
    (void)state;
    static const struct url_case cases[] = {
        {"redis://localhost", "localhost", 6379, 0, NULL, NULL},
        {"REDIS://127.0.0.1:1/", "127.0.0.1", 1, 0, NULL, NULL},
        {"redis://[::1]:6380/2", "::1", 6380, 2, NULL, NULL},
        {"redis://[::1]", "::1", 6379, 0, NULL, NULL},
        {"redis://:pw@host:6379/0", "host", 6379, 0, NULL, "pw"},
        {"redis://user:p%40ss%3Aw@host", "host", 6379, 0, "user", "p@ss:w"},
        {"redis://default:pw@host/15", "host", 6379, 15, "default", "pw"},
        {"redis://justapassword@host", "host", 6379, 0, NULL, "justapassword"},
        {"redis://u:p@ss@host:7000", "host", 7000, 0, "u", "p@ss"},
        {"redis://al%69ce:x@h", "h", 6379, 0, "alice", "x"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct url_case *c = &cases[i];
        dk_redis_url u;
        if (dk_redis_url_parse(c->url, &u) != DK_OK)
            fail_msg("URL %s refused", c->url);
        assert_string_equal(u.host, c->host);
        assert_int_equal(u.port, c->port);
        assert_int_equal(u.db, c->db);
        if (c->user)
            assert_string_equal(u.user, c->user);
        else
            assert_null(u.user);
        if (c->password) {
            assert_string_equal(u.password, c->password);
            assert_int_equal(u.password_len, strlen(c->password));
        } else {
            assert_null(u.password);
        }
        dk_redis_url_release(&u);
        assert_null(u.host);
        dk_redis_url_release(&u); /* twice is harmless */
    }
}

static void test_malformed(void **state)
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
        "redis://host/99999999999",
        "redis://[::1",
        "redis://[]:6379",
        "redis://[::1]x",
        "redis://host?timeout=1",
        "redis://host#frag",
        "redis://user:p%zz@host",
        "redis://user:p%0@host",
        "redis://user:p%00w@host",
        "redis://u%@host",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dk_redis_url u = {.host = (char *)"untouched", .port = -7};
        dk_status st = dk_redis_url_parse(bad[i], &u);
        if (st != DK_E_VALIDATION)
            fail_msg("URL %zu (%s) gave status %d", i, bad[i] ? bad[i] : "NULL", (int)st);
        assert_string_equal(u.host, "untouched");
        assert_int_equal(u.port, -7);
    }
}

/* One command of one or two words on a connection of ours. */
static redisReply *cmd(dk_redis_conn *c, const char *a, const char *b)
{
    const char *argv[2] = {a, b};
    size_t argvlen[2] = {strlen(a), b ? strlen(b) : 0};
    return dk_redis_command(c, b ? 2 : 1, argv, argvlen);
}

static void test_connect_selects_db(void **state)
{
    (void)state;
    const char *base = dk_test_env("DOCKET_TEST_REDIS_URL");
    if (!base)
        skip();
    char url[192];
    snprintf(url, sizeof url, "%s/5", base);
    dk_redis_url u;
    assert_int_equal(dk_redis_url_parse(url, &u), DK_OK);
    dk_redis_conn *c = NULL;
    assert_int_equal(dk_redis_connect(&u, 1000, &c), DK_OK);
    assert_non_null(c);
    assert_true(dk_redis_idle_alive(c));
    redisReply *r = cmd(c, "CLIENT", "INFO");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_non_null(strstr(r->str, " db=5 "));
    freeReplyObject(r);
    /* an error reply maps to a status */
    r = cmd(c, "NOSUCHCOMMAND", NULL);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ERROR);
    assert_int_equal(dk_redis_error_status(r), DK_E_INTERNAL);
    freeReplyObject(r);
    /* a connection the server closed is no longer alive */
    r = cmd(c, "QUIT", NULL);
    if (r)
        freeReplyObject(r);
    int64_t start = dk_mono_ms();
    while (dk_redis_idle_alive(c) && dk_mono_ms() - start < 1000)
        usleep(5000);
    assert_false(dk_redis_idle_alive(c));
    dk_redis_conn_free(c);
    dk_redis_url_release(&u);
}

static void test_connect_refused_is_unavailable(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t len = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd); /* nothing listens there now */
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", ntohs(sa.sin_port));
    dk_redis_url u;
    assert_int_equal(dk_redis_url_parse(url, &u), DK_OK);
    dk_redis_conn *c = NULL;
    assert_int_equal(dk_redis_connect(&u, 300, &c), DK_E_UNAVAILABLE);
    assert_null(c);
    dk_redis_url_release(&u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parts),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_connect_selects_db),
        cmocka_unit_test(test_connect_refused_is_unavailable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
