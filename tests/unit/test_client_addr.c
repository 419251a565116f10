/* test_client_addr.c — trusted proxy ranges (parsing, matching IPv4, IPv6 and IPv4-mapped
 * addresses) and the forwarded-header walk: an untrusted peer is the client whatever it sends;
 * behind trusted proxies the first untrusted hop from the right is; spoofed entries further
 * left, garbage and "unknown" never win; Forwarded (RFC 7239) with quotes, ports and brackets. */
#include "testutil.h"

#include <stdio.h>
#include <string.h>

#include "core/client_addr.h"
#include "core/banned.h"

static void test_parse(void **state)
{
    (void)state;
    dk_proxy_list l;
    assert_int_equal(dk_proxy_list_parse("", &l), DK_OK);
    assert_int_equal(l.n, 0);
    dk_proxy_list_release(&l);
    assert_int_equal(dk_proxy_list_parse(NULL, &l), DK_OK);
    assert_int_equal(l.n, 0);
    dk_proxy_list_release(&l);
    assert_int_equal(
        dk_proxy_list_parse(" 10.0.0.0/8, 192.168.1.7 fd00::/8,,2001:db8::1 0.0.0.0/0", &l), DK_OK);
    assert_int_equal(l.n, 5);
    dk_proxy_list_release(&l);
    assert_null(l.ranges);
    dk_proxy_list_release(&l); /* twice is harmless */

    const char *bad[] = {"10.0.0.0/33", "10.0.0.0/", "10.0.0.0/-1",  "10.0.0.0/8x",
                         "::/129",      "10.0.0",    "hostname",     "10.0.0.0/8, nope",
                         "1.2.3.4:80",  "[::1]",     "10.0.0.0/0008"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dk_proxy_list u = {.n = 77};
        if (dk_proxy_list_parse(bad[i], &u) != DK_E_VALIDATION)
            fail_msg("accepted %s", bad[i]);
        assert_int_equal(u.n, 77); /* untouched */
    }
}

static void test_contains(void **state)
{
    (void)state;
    dk_proxy_list l;
    assert_int_equal(dk_proxy_list_parse("10.0.0.0/8 192.168.1.7 fd00::/8 172.16.0.0/12", &l),
                     DK_OK);
    const char *in[] = {"10.0.0.1",     "10.255.255.255", "192.168.1.7",
                        "fd12:3456::1", "172.31.0.9",     "::ffff:10.1.2.3"};
    const char *out[] = {"11.0.0.1",   "192.168.1.8", "fe80::1", "172.32.0.1",
                         "::10.1.2.3", "not an ip",   "",        "2001:db8::1"};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
        if (!dk_proxy_list_contains(&l, in[i]))
            fail_msg("%s should be inside", in[i]);
    for (size_t i = 0; i < sizeof out / sizeof out[0]; i++)
        if (dk_proxy_list_contains(&l, out[i]))
            fail_msg("%s should be outside", out[i]);
    assert_false(dk_proxy_list_contains(&l, NULL));
    dk_proxy_list_release(&l);

    /* an empty list holds nothing; 0.0.0.0/0 holds every IPv4 address but no IPv6 one */
    dk_proxy_list none = {0};
    assert_false(dk_proxy_list_contains(&none, "10.0.0.1"));
    assert_int_equal(dk_proxy_list_parse("0.0.0.0/0", &l), DK_OK);
    assert_true(dk_proxy_list_contains(&l, "203.0.113.9"));
    assert_false(dk_proxy_list_contains(&l, "2001:db8::1"));
    dk_proxy_list_release(&l);
}

struct walk_case {
    bool trust_peer;
    const char *peer;
    dk_fwd_header kind;
    const char *header;
    const char *want;
};

static void test_resolve(void **state)
{
    (void)state;
    dk_proxy_list l;
    assert_int_equal(dk_proxy_list_parse("10.0.0.0/8, fd00::/8", &l), DK_OK);
    const dk_fwd_header X = DK_FWD_X_FORWARDED_FOR;
    static const struct walk_case cases[] = {
        /* an untrusted peer is the client, whatever it claims */
        {false, "203.0.113.5", DK_FWD_X_FORWARDED_FOR, "1.1.1.1", "203.0.113.5"},
        {false, "203.0.113.5", DK_FWD_FORWARDED, "for=1.1.1.1", "203.0.113.5"},
        /* a trusted peer without the header */
        {false, "10.0.0.2", DK_FWD_X_FORWARDED_FOR, NULL, "10.0.0.2"},
        /* one proxy: its entry is the client */
        {false, "10.0.0.2", DK_FWD_X_FORWARDED_FOR, "198.51.100.7", "198.51.100.7"},
        /* a client forging entries: only the one our proxy added counts */
        {false, "10.0.0.2", DK_FWD_X_FORWARDED_FOR, "6.6.6.6, 198.51.100.7", "198.51.100.7"},
        /* two proxies of ours in a row (load balancer, then ingress) */
        {false, "10.0.0.2", DK_FWD_X_FORWARDED_FOR, "6.6.6.6, 198.51.100.7, 10.1.1.1",
         "198.51.100.7"},
        /* only proxies: the leftmost */
        {false, "10.0.0.2", DK_FWD_X_FORWARDED_FOR, "10.9.9.9,10.1.1.1", "10.9.9.9"},
        /* garbage or "unknown" ends the walk at the last address reached */
        {false, "10.0.0.2", DK_FWD_X_FORWARDED_FOR, "1.2.3.4, unknown", "10.0.0.2"},
        {false, "10.0.0.2", DK_FWD_X_FORWARDED_FOR, "1.2.3.4, junk, 10.3.3.3", "10.3.3.3"},
        {false, "10.0.0.2", DK_FWD_X_FORWARDED_FOR, "", "10.0.0.2"},
        {false, "10.0.0.2", DK_FWD_X_FORWARDED_FOR, "198.51.100.7,", "10.0.0.2"},
        /* ports and brackets, IPv6, IPv4-mapped peers */
        {false, "10.0.0.2", DK_FWD_X_FORWARDED_FOR, "198.51.100.7:5123", "198.51.100.7"},
        {false, "10.0.0.2", DK_FWD_X_FORWARDED_FOR, "[2001:db8::7]:443", "2001:db8::7"},
        {false, "10.0.0.2", DK_FWD_X_FORWARDED_FOR, " 2001:DB8::7 ", "2001:db8::7"},
        {false, "::ffff:10.0.0.2", DK_FWD_X_FORWARDED_FOR, "198.51.100.7", "198.51.100.7"},
        {false, "fd00::5", DK_FWD_X_FORWARDED_FOR, "198.51.100.7", "198.51.100.7"},
        {false, "10.0.0.2", DK_FWD_X_FORWARDED_FOR, "1.2.3.4:99x", "10.0.0.2"},
        {false, "10.0.0.2", DK_FWD_X_FORWARDED_FOR, "[2001:db8::7]x", "10.0.0.2"},
        /* trust_peer: the peer (the Docket gateway) is trusted for its own entry */
        {true, "203.0.113.5", DK_FWD_X_FORWARDED_FOR, "6.6.6.6, 198.51.100.7", "198.51.100.7"},
        {true, "203.0.113.5", DK_FWD_X_FORWARDED_FOR, NULL, "203.0.113.5"},
        /* Forwarded */
        {false, "10.0.0.2", DK_FWD_FORWARDED, "for=198.51.100.7;proto=https", "198.51.100.7"},
        {false, "10.0.0.2", DK_FWD_FORWARDED,
         "for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";by=10.0.0.1", "2001:db8:cafe::17"},
        {false, "10.0.0.2", DK_FWD_FORWARDED, "For=\"198.51.100.7:80\", for=10.4.4.4",
         "198.51.100.7"},
        {false, "10.0.0.2", DK_FWD_FORWARDED, "for=1.2.3.4, for=unknown", "10.0.0.2"},
        {false, "10.0.0.2", DK_FWD_FORWARDED, "for=1.2.3.4, for=_hidden", "10.0.0.2"},
        {false, "10.0.0.2", DK_FWD_FORWARDED, "for=1.2.3.4, proto=https", "10.0.0.2"},
        {false, "10.0.0.2", DK_FWD_FORWARDED, "by=\"a,b\";for=198.51.100.7", "198.51.100.7"},
        /* a peer that is not an address is passed through */
        {false, "unknown", DK_FWD_X_FORWARDED_FOR, "1.2.3.4", "unknown"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct walk_case *c = &cases[i];
        char out[DK_IP_STRLEN];
        dk_client_addr_resolve(&l, c->trust_peer, c->peer, c->kind, c->header, out);
        if (strcmp(out, c->want) != 0)
            fail_msg("case %zu (%s | %s): got %s, want %s", i, c->peer,
                     c->header ? c->header : "NULL", out, c->want);
    }
    /* no ranges: only trust_peer reads the header, one hop deep */
    dk_proxy_list none = {0};
    char out[DK_IP_STRLEN];
    dk_client_addr_resolve(&none, false, "10.0.0.2", X, "1.2.3.4", out);
    assert_string_equal(out, "10.0.0.2");
    dk_client_addr_resolve(&none, true, "10.0.0.2", X, "1.2.3.4, 10.0.0.9", out);
    assert_string_equal(out, "10.0.0.9");
    dk_client_addr_resolve(NULL, true, "10.0.0.2", X, "1.2.3.4", out);
    assert_string_equal(out, "1.2.3.4");

    /* a very long chain of our own proxies: bounded, and the answer is one of them */
    char big[64 * 12 + 32] = "6.6.6.6";
    for (int i = 0; i < 64; i++) {
        size_t n = strlen(big);
        snprintf(big + n, sizeof big - n, ", 10.0.0.%d", i + 1);
    }
    dk_client_addr_resolve(&l, false, "10.0.0.2", X, big, out);
    assert_string_equal(out, "10.0.0.1");
    dk_proxy_list_release(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_contains),
        cmocka_unit_test(test_resolve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
