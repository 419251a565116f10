/* test_totp.c — RFC 6238 appendix B vectors (SHA-1), the RFC 4226 appendix D HOTP values, the
 * +-1 step window, base32 (RFC 4648 section 10 vectors), recovery codes, and sealing TOTP
 * secrets: round trip, user binding, tampering, key rotation. */
#include "testutil.h"

#include <stdio.h>
#include <string.h>

#include "core/arena.h"
#include "services/auth/totp.h"
#include "core/banned.h"

static const unsigned char rfc_key[] = "12345678901234567890"; /* 20 bytes, RFC 6238 SHA-1 */

static void test_rfc4226_hotp(void **state)
{
    (void)state;
    static const char *const want[] = {"755224", "287082", "359152", "969429", "338314",
                                       "254676", "287922", "162583", "399871", "520489"};
    for (uint64_t i = 0; i < 10; i++) {
        char out[TOTP_DIGITS + 1];
        totp_hotp(rfc_key, 20, i, out);
        assert_string_equal(out, want[i]);
    }
}

static void test_rfc6238_vectors(void **state)
{
    (void)state;
    /* Appendix B, SHA-1 column: the 8-digit values' last 6 digits */
    static const struct {
        int64_t t;
        const char *code8;
    } v[] = {{59, "94287082"},         {1111111109, "07081804"}, {1111111111, "14050471"},
             {1234567890, "89005924"}, {2000000000, "69279037"}, {20000000000, "65353130"}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char out[TOTP_DIGITS + 1];
        totp_hotp(rfc_key, 20, (uint64_t)totp_step(v[i].t), out);
        assert_string_equal(out, v[i].code8 + 2);
        /* and the matcher finds exactly that step */
        assert_int_equal(totp_match(rfc_key, 20, v[i].code8 + 2, totp_step(v[i].t)),
                         totp_step(v[i].t));
    }
}

static void test_window(void **state)
{
    (void)state;
    int64_t now = totp_step(1234567890);
    char prev[7], next[7], far[7];
    totp_hotp(rfc_key, 20, (uint64_t)(now - 1), prev);
    totp_hotp(rfc_key, 20, (uint64_t)(now + 1), next);
    totp_hotp(rfc_key, 20, (uint64_t)(now + 2), far);
    assert_int_equal(totp_match(rfc_key, 20, prev, now), now - 1);
    assert_int_equal(totp_match(rfc_key, 20, next, now), now + 1);
    assert_int_equal(totp_match(rfc_key, 20, far, now), -1);
    /* malformed codes never match */
    assert_int_equal(totp_match(rfc_key, 20, "", now), -1);
    assert_int_equal(totp_match(rfc_key, 20, "12345", now), -1);
    assert_int_equal(totp_match(rfc_key, 20, "1234567", now), -1);
    assert_int_equal(totp_match(rfc_key, 20, "12a456", now), -1);
    char spaced[8] = {prev[0], prev[1], prev[2], ' ', prev[3], prev[4], prev[5], 0};
    assert_int_equal(totp_match(rfc_key, 20, spaced, now), now - 1);
}

static void test_base32(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    static const struct {
        const char *in, *out;
    } v[] = {{"", ""},
             {"f", "MY"},
             {"fo", "MZXQ"},
             {"foo", "MZXW6"},
             {"foob", "MZXW6YQ"},
             {"fooba", "MZXW6YTB"},
             {"foobar", "MZXW6YTBOI"}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        assert_string_equal(totp_base32(a, (const unsigned char *)v[i].in, strlen(v[i].in)),
                            v[i].out);
        size_t n = 0;
        unsigned char *back = totp_base32_decode(a, v[i].out, &n);
        assert_non_null(back);
        assert_int_equal(n, strlen(v[i].in));
        assert_memory_equal(back, v[i].in, n);
    }
    size_t n = 0;
    assert_non_null(totp_base32_decode(a, "mzxw 6ytb oi==", &n));
    assert_int_equal(n, 6);
    assert_null(totp_base32_decode(a, "MZ1W", &n));
    dk_arena_free(a);
}

static void test_recovery_codes(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    char *c1 = totp_recovery_code(a), *c2 = totp_recovery_code(a);
    assert_int_equal(strlen(c1), 19);
    assert_true(c1[4] == '-' && c1[9] == '-' && c1[14] == '-');
    assert_string_not_equal(c1, c2);
    char *h = totp_recovery_hash(a, c1);
    assert_non_null(h);
    assert_int_equal(strlen(h), 64);
    /* dashes, spaces and case do not matter */
    char loose[40];
    snprintf(loose, sizeof loose, "%.4s %.4s%.4s%.4s", c1, c1 + 5, c1 + 10, c1 + 15);
    for (char *p = loose; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 32);
    assert_string_equal(totp_recovery_hash(a, loose), h);
    assert_string_not_equal(totp_recovery_hash(a, c2), h);
    assert_null(totp_recovery_hash(a, "abcd"));
    assert_null(totp_recovery_hash(a, "abcd-efgh-ijkl-mno1"));
    dk_arena_free(a);
}

static void test_seal_and_rotate(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    const char *k1 = "first key that is at least 32 characters";
    const char *k2 = "second key, also 32 characters or more!!";
    totp_keyring *r1 = totp_keyring_new(k1, strlen(k1), NULL, NULL);
    assert_non_null(r1);
    unsigned char secret[TOTP_SECRET_BYTES];
    memcpy(secret, rfc_key, sizeof secret);
    char *sealed = totp_seal(a, r1, "user-1", secret, sizeof secret);
    assert_non_null(sealed);
    assert_true(strncmp(sealed, "v1.", 3) == 0);
    assert_null(strstr(sealed, "12345678901234567890"));
    /* two seals of the same secret differ (fresh nonce) */
    assert_string_not_equal(totp_seal(a, r1, "user-1", secret, sizeof secret), sealed);

    unsigned char *out = NULL;
    size_t n = 0;
    bool stale = true;
    assert_int_equal(totp_open(a, r1, "user-1", sealed, &out, &n, &stale), DK_OK);
    assert_int_equal(n, sizeof secret);
    assert_memory_equal(out, secret, n);
    assert_false(stale);
    /* bound to the user: another user's row cannot borrow it */
    assert_int_equal(totp_open(a, r1, "user-2", sealed, &out, &n, &stale), DK_E_INTERNAL);
    /* tampering is detected */
    char *bad = dk_arena_strdup(a, sealed);
    size_t len = strlen(bad);
    bad[len - 2] = bad[len - 2] == 'A' ? 'B' : 'A';
    assert_int_equal(totp_open(a, r1, "user-1", bad, &out, &n, &stale), DK_E_INTERNAL);
    assert_int_equal(totp_open(a, r1, "user-1", "v2.nonsense", &out, &n, &stale), DK_E_INTERNAL);

    /* rotation: the new ring reads the old value and says it is stale */
    char prev[128];
    snprintf(prev, sizeof prev, "unrelated-old-key-0123456789abcdef,%s", k1);
    totp_keyring *r2 = totp_keyring_new(k2, strlen(k2), prev, NULL);
    assert_int_equal(totp_open(a, r2, "user-1", sealed, &out, &n, &stale), DK_OK);
    assert_true(stale);
    assert_memory_equal(out, secret, n);
    char *resealed = totp_seal(a, r2, "user-1", out, n);
    assert_int_equal(totp_open(a, r2, "user-1", resealed, &out, &n, &stale), DK_OK);
    assert_false(stale);
    /* a ring without the old key cannot read it */
    totp_keyring *r3 = totp_keyring_new(k2, strlen(k2), NULL, NULL);
    assert_int_equal(totp_open(a, r3, "user-1", sealed, &out, &n, &stale), DK_E_INTERNAL);
    /* the fallback key counts as a previous one */
    unsigned char fb[32];
    memset(fb, 7, sizeof fb);
    totp_keyring *r4 = totp_keyring_new(fb, sizeof fb, NULL, NULL);
    char *by_fb = totp_seal(a, r4, "user-1", secret, sizeof secret);
    totp_keyring *r5 = totp_keyring_new(k2, strlen(k2), NULL, fb);
    assert_int_equal(totp_open(a, r5, "user-1", by_fb, &out, &n, &stale), DK_OK);
    assert_true(stale);
    totp_keyring_free(r1);
    totp_keyring_free(r2);
    totp_keyring_free(r3);
    totp_keyring_free(r4);
    totp_keyring_free(r5);
    totp_keyring_free(NULL);
    dk_arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4226_hotp),   cmocka_unit_test(test_rfc6238_vectors),
        cmocka_unit_test(test_window),         cmocka_unit_test(test_base32),
        cmocka_unit_test(test_recovery_codes), cmocka_unit_test(test_seal_and_rotate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
