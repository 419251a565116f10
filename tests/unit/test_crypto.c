/* test_crypto.c — randomness, constant-time comparison, SHA-256 and HMAC test vectors, hex,
 * base64url (RFC 4648 vectors, roundtrips, malformed input) and random tokens. */
#include "testutil.h"

#include <stdint.h>
#include <string.h>

#include "core/arena.h"
#include "core/common.h"
#include "core/crypto.h"
#include "core/banned.h"

static int setup(void **state)
{
    *state = dk_arena_new();
    return 0;
}

static int teardown(void **state)
{
    dk_arena_free(*state);
    return 0;
}

static void test_random_bytes(void **state)
{
    unsigned char a[32], b[32], zero[32] = {0};
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    dk_random_bytes(a, sizeof a);
    dk_random_bytes(b, sizeof b);
    assert_memory_not_equal(a, zero, sizeof a);
    assert_memory_not_equal(a, b, sizeof a);
    dk_random_bytes(a, 0); /* a zero-length request is fine */

    /* every byte value turns up over 64 KiB (a stuck or biased generator would not) */
    static unsigned char big[65536];
    dk_random_bytes(big, sizeof big);
    int seen[256] = {0};
    for (size_t i = 0; i < sizeof big; i++)
        seen[big[i]]++;
    for (int v = 0; v < 256; v++) {
        assert_true(seen[v] > 100);
        assert_true(seen[v] < 450);
    }
}

static void test_ct_equal(void **state)
{
    assert_true(dk_ct_equal("abc", "abc", 3));
    assert_false(dk_ct_equal("abc", "abd", 3));
    assert_false(dk_ct_equal("xbc", "abc", 3));
    assert_true(dk_ct_equal("abc", "abd", 2)); /* only n bytes count */
    assert_true(dk_ct_equal("a", "b", 0));

    assert_true(dk_ct_streq("", ""));
    assert_true(dk_ct_streq("secret", "secret"));
    assert_false(dk_ct_streq("secret", "secreT"));
    assert_false(dk_ct_streq("secret", "secret2"));
    assert_false(dk_ct_streq("secret2", "secret"));
    assert_false(dk_ct_streq("", "a"));
    assert_false(dk_ct_streq(NULL, "a"));
    assert_false(dk_ct_streq("a", NULL));
    assert_false(dk_ct_streq(NULL, NULL));
}

static void hex32(const unsigned char in[32], char out[65])
{
    dk_hex(in, 32, out);
}

static void test_sha256_vectors(void **state)
{
    unsigned char d[32];
    char h[65];
    dk_sha256("", 0, d);
    hex32(d, h);
    assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    dk_sha256("abc", 3, d);
    hex32(d, h);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    dk_sha256(two, strlen(two), d);
    hex32(d, h);
    assert_string_equal(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void test_hmac_vectors(void **state)
{
    /* RFC 4231 test cases 1, 2 and 6 */
    unsigned char mac[32];
    char h[65];
    unsigned char key1[20];
    memset(key1, 0x0b, sizeof key1);
    dk_hmac_sha256(key1, sizeof key1, "Hi There", 8, mac);
    hex32(mac, h);
    assert_string_equal(h, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");

    const char *data2 = "what do ya want for nothing?";
    dk_hmac_sha256("Jefe", 4, data2, strlen(data2), mac);
    hex32(mac, h);
    assert_string_equal(h, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

    unsigned char key6[131];
    memset(key6, 0xaa, sizeof key6);
    const char *data6 = "Test Using Larger Than Block-Size Key - Hash Key First";
    dk_hmac_sha256(key6, sizeof key6, data6, strlen(data6), mac);
    hex32(mac, h);
    assert_string_equal(h, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

static void test_hex(void **state)
{
    const unsigned char in[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
    char out[13];
    memset(out, 'X', sizeof out);
    dk_hex(in, sizeof in, out);
    assert_string_equal(out, "00017f80abff");
    char empty[1] = {'X'};
    dk_hex(in, 0, empty);
    assert_string_equal(empty, "");
}

static void test_base64url_vectors(void **state)
{
    dk_arena *a = *state;
    static const struct {
        const char *raw, *enc;
    } rows[] = {
        {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},
        {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"},
    };
    for (size_t i = 0; i < DK_ARRAY_LEN(rows); i++) {
        size_t n = strlen(rows[i].raw);
        assert_string_equal(dk_base64url(a, (const unsigned char *)rows[i].raw, n), rows[i].enc);
        size_t len = 999;
        unsigned char *dec = dk_base64url_decode(a, rows[i].enc, &len);
        assert_non_null(dec);
        assert_int_equal(len, n);
        assert_memory_equal(dec, rows[i].raw, n);
    }
    /* the URL alphabet: '-' and '_' instead of '+' and '/' */
    const unsigned char hi[] = {0xfb, 0xff, 0xbf};
    assert_string_equal(dk_base64url(a, hi, 3), "-_-_");
    const unsigned char hi2[] = {0xfb, 0xff};
    assert_string_equal(dk_base64url(a, hi2, 2), "-_8");
    size_t len = 0;
    unsigned char *dec = dk_base64url_decode(a, "-_-_", &len);
    assert_non_null(dec);
    assert_int_equal(len, 3);
    assert_memory_equal(dec, hi, 3);
}

static void test_base64url_padding_accepted(void **state)
{
    dk_arena *a = *state;
    size_t len = 0;
    unsigned char *d = dk_base64url_decode(a, "Zg==", &len);
    assert_non_null(d);
    assert_int_equal(len, 1);
    assert_int_equal(d[0], 'f');
    d = dk_base64url_decode(a, "Zm8=", &len);
    assert_non_null(d);
    assert_int_equal(len, 2);
    assert_memory_equal(d, "fo", 2);
}

static void test_base64url_invalid(void **state)
{
    dk_arena *a = *state;
    static const char *bad[] = {
        "Z",        /* one char: 6 bits, no byte */
        "Zm9vY",    /* 4n+1 chars */
        "Zm9v+g",   /* standard alphabet '+' */
        "Zm9v/g",   /* standard alphabet '/' */
        "Zm 9",     /* space */
        "Zm=9v",    /* padding in the middle */
        "Zm9\n",    /* newline */
        "Zh",       /* non-canonical: leftover bits set ('f' is Zg) */
        "Zm9",      /* non-canonical: "fo" is Zm8 */
        "Zm9vYmE*", /* punctuation */
        "\xc3\xa9", /* non-ASCII */
    };
    for (size_t i = 0; i < DK_ARRAY_LEN(bad); i++) {
        size_t len = 12345;
        if (dk_base64url_decode(a, bad[i], &len) != NULL)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_int_equal(len, 12345); /* untouched on failure */
    }
}

static void test_base64url_roundtrip(void **state)
{
    dk_arena *a = *state;
    unsigned char buf[300];
    for (size_t n = 0; n < sizeof buf; n++) {
        dk_random_bytes(buf, n);
        char *enc = dk_base64url(a, buf, n);
        assert_int_equal(strlen(enc), (n * 4 + 2) / 3); /* no padding */
        for (const char *p = enc; *p; p++)
            assert_non_null(
                strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", *p));
        size_t len = 0;
        unsigned char *dec = dk_base64url_decode(a, enc, &len);
        assert_non_null(dec);
        assert_int_equal(len, n);
        assert_memory_equal(dec, buf, n);
    }
}

static void test_random_token(void **state)
{
    dk_arena *a = *state;
    char *t1 = dk_random_token(a, 32);
    char *t2 = dk_random_token(a, 32);
    assert_int_equal(strlen(t1), 43); /* 256 bits */
    assert_string_not_equal(t1, t2);
    size_t len = 0;
    assert_non_null(dk_base64url_decode(a, t1, &len));
    assert_int_equal(len, 32);
    assert_int_equal(strlen(dk_random_token(a, 1)), 2);
    assert_string_equal(dk_random_token(a, 0), "");
    assert_int_equal(strlen(dk_random_token(a, 64)), 86);
}

static void test_random_token_longer_than_64_bytes(void **state)
{
    /* "n random bytes as base64url text (a token of n*8 bits)": 100 bytes are 134 characters */
    dk_arena *a = *state;
    char *t = dk_random_token(a, 100);
    assert_int_equal(strlen(t), 134);
    size_t len = 0;
    assert_non_null(dk_base64url_decode(a, t, &len));
    assert_int_equal(len, 100);
}

static void test_hmac_key_matches(void **state)
{
    (void)state;
    /* a prepared key gives the one-shot HMAC for short, block-sized, long and empty keys, and
     * stays usable for many messages */
    unsigned char key[200];
    for (size_t i = 0; i < sizeof key; i++)
        key[i] = (unsigned char)(i * 7 + 3);
    const size_t keylens[] = {0, 1, 32, 64, 65, 200};
    char msg[300];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (char)('a' + i % 26);
    for (size_t k = 0; k < sizeof keylens / sizeof keylens[0]; k++) {
        dk_hmac_key *hk = dk_hmac_key_new(key, keylens[k]);
        for (size_t n = 0; n <= sizeof msg; n += 37) {
            unsigned char want[32], got[32];
            dk_hmac_sha256(key, keylens[k], msg, n, want);
            dk_hmac_key_sign(hk, msg, n, got);
            assert_memory_equal(got, want, 32);
        }
        dk_hmac_key_free(hk);
    }
    /* RFC 4231 test case 2 */
    dk_hmac_key *hk = dk_hmac_key_new("Jefe", 4);
    unsigned char mac[32];
    dk_hmac_key_sign(hk, "what do ya want for nothing?", 28, mac);
    char hex[65];
    dk_hex(mac, 32, hex);
    assert_string_equal(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    dk_hmac_key_free(hk);
    dk_hmac_key_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_hmac_key_matches),
        cmocka_unit_test(test_ct_equal),
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_hmac_vectors),
        cmocka_unit_test(test_hex),
        cmocka_unit_test_setup_teardown(test_base64url_vectors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_base64url_padding_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_base64url_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_base64url_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_token_longer_than_64_bytes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
