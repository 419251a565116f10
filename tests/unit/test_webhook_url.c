/* test_webhook_url.c — webhook URL checks: the private-address classification over many
 * addresses of both families (mapped, compatible, NAT64 and 6to4 forms included), URL syntax
 * (schemes, userinfo, length, ports, hosts, characters), resolution of real names (localhost,
 * an unresolvable .invalid name), and the target handed to the delivery worker. */
#include "testutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "services/notifications/webhook_url.h"
#include "adapters/http_client.h"
#include "adapters/resolver.h"
#include "core/banned.h"

/* The real adapters: libcurl's URL reading and getaddrinfo (32 lookups at once, as main.c). */
static webhook_net net;

static int net_open(void **state)
{
    (void)state;
    dk_resolver *r = NULL;
    if (dk_resolver_getaddrinfo_new(32, &r) != DK_OK)
        return -1;
    net = (webhook_net){&dk_http_client_curl_ops, &dk_resolver_getaddrinfo_ops, r};
    return 0;
}

static int net_close(void **state)
{
    (void)state;
    net.resolver->free(net.resolver_h);
    return 0;
}

/* --- webhook_addr_is_private -------------------------------------------------------------------- */

static bool private_text(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, text, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
    } else if (inet_pton(AF_INET6, text, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
    } else {
        fail_msg("not an address: %s", text);
    }
    return webhook_addr_is_private((const struct sockaddr *)&ss);
}

static void test_ipv4_private(void **state)
{
    (void)state;
    static const char *const priv[] = {
        "0.0.0.0",         "0.255.255.255",   "10.0.0.1",        "10.255.255.255",  "100.64.0.0",
        "100.100.1.1",     "100.127.255.255", "127.0.0.1",       "127.255.255.254", "169.254.0.1",
        "169.254.169.254", "172.16.0.1",      "172.20.1.1",      "172.31.255.255",  "192.168.0.1",
        "192.168.255.255", "224.0.0.1",       "239.255.255.250", "240.0.0.1",       "250.1.2.3",
        "255.255.255.255", "192.0.0.0",       "192.0.0.8",       "192.0.0.255",     "198.18.0.0",
        "198.18.0.1",      "198.19.255.255",
    };
    static const char *const pub[] = {
        "1.1.1.1",       "8.8.8.8",         "9.255.255.255",  "11.0.0.0",
        "93.184.216.34", "100.63.255.255",  "100.128.0.0",    "126.255.255.255",
        "128.0.0.1",     "169.253.255.255", "169.255.0.1",    "172.15.255.255",
        "172.32.0.0",    "192.167.255.255", "192.169.0.0",    "223.255.255.255",
        "192.0.1.0",     "191.255.255.255", "198.17.255.255", "198.20.0.0",
    };
    for (size_t i = 0; i < sizeof priv / sizeof priv[0]; i++)
        if (!private_text(priv[i]))
            fail_msg("%s should be private", priv[i]);
    for (size_t i = 0; i < sizeof pub / sizeof pub[0]; i++)
        if (private_text(pub[i]))
            fail_msg("%s should be public", pub[i]);
}

static void test_ipv6_private(void **state)
{
    (void)state;
    static const char *const priv[] = {
        "::",
        "::1",
        "fc00::1",
        "fd12:3456:789a::1",
        "fe80::1",
        "febf:ffff::1",
        "fec0::1",
        "ff02::1",
        "ff05::1:3",
        /* IPv4-mapped, IPv4-compatible, NAT64 and 6to4 forms of private IPv4 addresses */
        "::ffff:127.0.0.1",
        "::ffff:10.1.2.3",
        "::ffff:169.254.169.254",
        "::ffff:192.168.1.1",
        "::ffff:0.0.0.0",
        "::ffff:255.255.255.255",
        "::127.0.0.1",
        "::10.0.0.1",
        "::ffff:7f00:1",
        "64:ff9b::127.0.0.1",
        "64:ff9b::a00:1",
        "2002:7f00:1::1",
        "2002:c0a8:101::5",
        /* local-use NAT64 (any embedded address) and Teredo */
        "64:ff9b:1::808:808",
        "64:ff9b:1:ffff::1",
        "2001::1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        "2001:0:ffff:ffff::1",
    };
    static const char *const pub[] = {
        "2001:4860:4860::8888",
        "2606:4700:4700::1111",
        "2a00:1450:4001:80b::200e",
        "::ffff:8.8.8.8",
        "::ffff:93.184.216.34",
        "::8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
        "fbff:ffff::1",
        "fe00::1",
        "2001:db8::1",
        "2001:1::1",
        "64:ff9b:2::1",
    };
    for (size_t i = 0; i < sizeof priv / sizeof priv[0]; i++)
        if (!private_text(priv[i]))
            fail_msg("%s should be private", priv[i]);
    for (size_t i = 0; i < sizeof pub / sizeof pub[0]; i++)
        if (private_text(pub[i]))
            fail_msg("%s should be public", pub[i]);
}

static void test_other_families_private(void **state)
{
    (void)state;
    struct sockaddr sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_family = AF_UNIX;
    assert_true(webhook_addr_is_private(&sa));
    assert_true(webhook_addr_is_private(NULL));
}

/* --- webhook_url_check ------------------------------------------------------------------ */

static dk_status check(const char *url, bool allow_private, char *reason, size_t cap)
{
    reason[0] = '\0';
    return webhook_url_check(&net, url, allow_private, reason, cap);
}

static void expect_invalid(const char *url, bool allow_private, const char *needle)
{
    char reason[256];
    dk_status st = check(url, allow_private, reason, sizeof reason);
    if (st != DK_E_VALIDATION)
        fail_msg("%s: expected DK_E_VALIDATION, got %d (%s)", url, st, reason);
    if (!strstr(reason, needle))
        fail_msg("%s: reason \"%s\" lacks \"%s\"", url, reason, needle);
    assert_null(strstr(reason, "webhook_url")); /* the field is named by the caller */
}

static void expect_ok(const char *url, bool allow_private)
{
    char reason[256];
    dk_status st = check(url, allow_private, reason, sizeof reason);
    if (st != DK_OK)
        fail_msg("%s: expected DK_OK, got %d (%s)", url, st, reason);
}

static void test_schemes(void **state)
{
    (void)state;
    expect_invalid("ftp://93.184.216.34/x", false, "http or https");
    expect_invalid("file:///etc/passwd", false, "http or https");
    expect_invalid("gopher://93.184.216.34/", false, "http or https");
    expect_invalid("javascript:alert(1)", false, "http");
    expect_invalid("mailto:a@example.com", false, "http");
    expect_invalid("93.184.216.34/hook", false, "absolute");
    expect_invalid("//93.184.216.34/hook", false, "absolute");
    expect_invalid("/relative/path", false, "absolute");
    expect_invalid("", false, "absolute");
    expect_ok("http://93.184.216.34/hook", false);
    expect_ok("https://93.184.216.34/hook?x=1&y=2#frag", false);
    expect_ok("HTTPS://93.184.216.34:8443/", false);
    expect_ok("http://[2606:4700:4700::1111]/", false);
    char reason[64];
    assert_int_equal(webhook_url_check(&net, NULL, false, reason, sizeof reason), DK_E_VALIDATION);
    /* reason may be NULL */
    assert_int_equal(webhook_url_check(&net, "ftp://x/", false, NULL, 0), DK_E_VALIDATION);
}

static void test_userinfo_host_port(void **state)
{
    (void)state;
    expect_invalid("http://user:pw@93.184.216.34/", false, "user information");
    expect_invalid("http://user@93.184.216.34/", false, "user information");
    expect_invalid("http://:pw@93.184.216.34/", false, "user information");
    expect_invalid("https://@93.184.216.34/", false, "user information");
    expect_invalid("http://:80/", false, "must include a host");
    expect_invalid("http://?x", false, "must include a host");
    expect_invalid("https://#", false, "must include a host");
    expect_invalid("http://93.184.216.34:0/", false, "port");
    expect_invalid("http://93.184.216.34:65536/", false, "port");
    expect_invalid("http://93.184.216.34:99999999/", false, "port");
    expect_invalid("http://93.184.216.34:abc/", false, "port");
    expect_invalid("http://[fe80::1%25eth0]/", true, "zone");
    expect_invalid("http://exa mple.com/", false, "spaces");
    expect_invalid("http://93.184.216.34/a\r\nX-Evil: 1", false, "control");
    expect_invalid("http://93.184.216.34/caf\xc3\xa9", false, "non-ASCII");
    expect_ok("http://93.184.216.34:65535/", false);
    expect_ok("http://93.184.216.34:1/", false);
}

static void test_length(void **state)
{
    (void)state;
    char url[NT_WEBHOOK_URL_MAX + 16];
    const char *head = "http://93.184.216.34/";
    size_t hl = strlen(head);
    memcpy(url, head, hl);
    memset(url + hl, 'a', NT_WEBHOOK_URL_MAX - hl);
    url[NT_WEBHOOK_URL_MAX] = '\0';
    expect_ok(url, false); /* exactly 2048 */
    url[NT_WEBHOOK_URL_MAX] = 'a';
    url[NT_WEBHOOK_URL_MAX + 1] = '\0';
    expect_invalid(url, false, "2048");
}

static void test_resolution(void **state)
{
    (void)state;
    expect_invalid("http://nonexistent.invalid/hook", false, "does not resolve");
    expect_invalid("http://nonexistent.invalid/hook", true, "does not resolve");
    /* localhost resolves to loopback: refused unless private addresses are allowed */
    expect_invalid("http://localhost:8080/hook", false, "not allowed");
    expect_ok("http://localhost:8080/hook", true);
    expect_ok("http://LOCALHOST/hook", true);
    /* literal addresses are checked without a lookup */
    expect_invalid("http://127.0.0.1/", false, "not allowed");
    expect_invalid("http://10.0.0.5/", false, "not allowed");
    expect_invalid("http://169.254.169.254/latest/meta-data/", false, "not allowed");
    expect_invalid("http://[::1]:3000/", false, "not allowed");
    expect_invalid("http://[::ffff:127.0.0.1]/", false, "not allowed");
    expect_invalid("http://[fd00::1]/", false, "not allowed");
    expect_invalid("http://0.0.0.0:80/", false, "not allowed");
    /* numeric forms that are not dotted quads still end up at loopback */
    expect_invalid("http://2130706433/", false, "not allowed");
    expect_invalid("http://0x7f000001/", false, "not allowed");
    expect_invalid("http://127.1/", false, "not allowed");
    expect_ok("http://127.0.0.1:9/", true);
    expect_ok("http://[::1]:9/", true);
}

/* --- webhook_resolve -------------------------------------------------------------------- */

static void test_resolve_target(void **state)
{
    (void)state;
    webhook_target t;
    char why[128];
    assert_int_equal(
        webhook_resolve(&net, "https://93.184.216.34/x", false, 1000, &t, why, sizeof why), DK_OK);
    assert_string_equal(t.host, "93.184.216.34");
    assert_int_equal(t.port, 443);
    assert_true(t.literal);
    assert_int_equal(t.naddrs, 1);
    assert_string_equal(t.addrs[0], "93.184.216.34");

    assert_int_equal(webhook_resolve(&net, "http://[2606:4700:4700::1111]:8080/", false, 1000, &t,
                                     why, sizeof why),
                     DK_OK);
    assert_string_equal(t.host, "2606:4700:4700::1111");
    assert_int_equal(t.port, 8080);
    assert_true(t.literal);
    assert_string_equal(t.addrs[0], "[2606:4700:4700::1111]");

    assert_int_equal(
        webhook_resolve(&net, "http://localhost/hook", true, 1000, &t, why, sizeof why), DK_OK);
    assert_string_equal(t.host, "localhost");
    assert_int_equal(t.port, 80);
    assert_false(t.literal);
    assert_true(t.naddrs >= 1);
    for (int i = 0; i < t.naddrs; i++)
        assert_true(strcmp(t.addrs[i], "127.0.0.1") == 0 || strcmp(t.addrs[i], "[::1]") == 0);

    /* the kinds of failure the worker tells apart */
    assert_int_equal(
        webhook_resolve(&net, "http://localhost/hook", false, 1000, &t, why, sizeof why),
        DK_E_FORBIDDEN);
    assert_string_equal(why, "address not allowed");
    assert_int_equal(
        webhook_resolve(&net, "http://nonexistent.invalid/", false, 1000, &t, why, sizeof why),
        DK_E_UNAVAILABLE);
    assert_string_equal(why, "does not resolve");
    assert_int_equal(webhook_resolve(&net, "ftp://localhost/", true, 1000, &t, why, sizeof why),
                     DK_E_VALIDATION);
}

/* The rules over names with known addresses (the table resolver): every address must be
 * allowed, the public ones are pinned, and a name with more addresses than are kept counts as
 * not allowed. */
static void test_rules_over_a_table(void **state)
{
    (void)state;
    char many[4096] = "many.test=";
    for (int i = 0; i < DK_RESOLVER_MAX_ADDRS + 1; i++) {
        size_t n = strlen(many);
        snprintf(many + n, sizeof many - n, "%s93.184.216.%d", i ? "," : "", i + 1);
    }
    char table[8192];
    snprintf(table, sizeof table,
             "public.test=93.184.216.34,2606:4700:4700::1111;mixed.test=93.184.216.34,10.0.0.1;"
             "LOOP.test=::1;%s",
             many);
    dk_resolver *r = NULL;
    assert_int_equal(dk_resolver_table_new(table, &r), DK_OK);
    webhook_net tn = {&dk_http_client_curl_ops, &dk_resolver_table_ops, r};
    webhook_target t;
    char why[128];
    assert_int_equal(
        webhook_resolve(&tn, "https://public.test/x", false, 1000, &t, why, sizeof why), DK_OK);
    assert_false(t.literal);
    assert_int_equal(t.naddrs, 2);
    assert_string_equal(t.addrs[0], "93.184.216.34");
    assert_string_equal(t.addrs[1], "[2606:4700:4700::1111]");
    assert_int_equal(webhook_resolve(&tn, "https://mixed.test/x", false, 1000, &t, why, sizeof why),
                     DK_E_FORBIDDEN);
    assert_string_equal(why, "address not allowed");
    assert_int_equal(webhook_resolve(&tn, "https://mixed.test/x", true, 1000, &t, why, sizeof why),
                     DK_OK);
    assert_int_equal(
        webhook_resolve(&tn, "http://loop.TEST:8080/", false, 1000, &t, why, sizeof why),
        DK_E_FORBIDDEN);
    assert_int_equal(webhook_resolve(&tn, "https://many.test/x", false, 1000, &t, why, sizeof why),
                     DK_E_FORBIDDEN);
    assert_int_equal(webhook_resolve(&tn, "https://other.test/x", false, 1000, &t, why, sizeof why),
                     DK_E_UNAVAILABLE);
    assert_string_equal(why, "does not resolve");
    char reason[256];
    assert_int_equal(webhook_url_check(&tn, "https://mixed.test/x", false, reason, sizeof reason),
                     DK_E_VALIDATION);
    assert_non_null(strstr(reason, "not allowed"));
    tn.resolver->free(r);
    /* a malformed table is refused */
    assert_int_equal(dk_resolver_table_new("noaddress", &r), DK_E_VALIDATION);
    assert_int_equal(dk_resolver_table_new("x=999.1.1.1", &r), DK_E_VALIDATION);
    assert_int_equal(dk_resolver_table_new("=1.2.3.4", &r), DK_E_VALIDATION);
}

/* Many threads checking at once stay within the lookup limit or are told to come back. */
static void *many_checks(void *arg)
{
    int *bad = arg;
    for (int i = 0; i < 20; i++) {
        char reason[160];
        dk_status st = webhook_url_check(&net, "http://localhost/x", true, reason, sizeof reason);
        if (st != DK_OK && st != DK_E_UNAVAILABLE)
            (*bad)++;
    }
    return NULL;
}

static void test_concurrent_checks(void **state)
{
    (void)state;
    pthread_t t[8];
    int bad[8] = {0};
    for (int i = 0; i < 8; i++)
        assert_int_equal(pthread_create(&t[i], NULL, many_checks, &bad[i]), 0);
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(bad[i], 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv4_private),
        cmocka_unit_test(test_ipv6_private),
        cmocka_unit_test(test_other_families_private),
        cmocka_unit_test(test_schemes),
        cmocka_unit_test(test_userinfo_host_port),
        cmocka_unit_test(test_length),
        cmocka_unit_test(test_resolution),
        cmocka_unit_test(test_resolve_target),
        cmocka_unit_test(test_rules_over_a_table),
        cmocka_unit_test(test_concurrent_checks),
    };
    return cmocka_run_group_tests(tests, net_open, net_close);
}
