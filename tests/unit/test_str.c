/* test_str.c — checked integer parsers, UTF-8 length (overlong forms, surrogates, truncation),
 * case-insensitive equality, bounded copy and lower-casing. */
#include "testutil.h"

#include <stdint.h>
#include <string.h>

#include "core/common.h"
#include "core/str.h"
#include "core/banned.h"

static void test_parse_i64_accepts(void **state)
{
    static const struct {
        const char *in;
        int64_t want;
    } rows[] = {
        {"0", 0},
        {"-0", 0},
        {"7", 7},
        {"007", 7},
        {"-42", -42},
        {"1000000", 1000000},
        {"9223372036854775807", INT64_MAX},
        {"-9223372036854775808", INT64_MIN},
    };
    for (size_t i = 0; i < DK_ARRAY_LEN(rows); i++) {
        int64_t v = 12345;
        if (!dk_parse_i64(rows[i].in, INT64_MIN, INT64_MAX, &v))
            fail_msg("rejected \"%s\"", rows[i].in);
        assert_int_equal(v, rows[i].want);
    }
}

static void test_parse_i64_rejects(void **state)
{
    static const char *bad[] = {
        "",
        "-",
        "+5",
        " 5",
        "5 ",
        "5x",
        "0x10",
        "1e3",
        "1.0",
        "--1",
        "- 1",
        "9223372036854775808",  /* INT64_MAX + 1 */
        "-9223372036854775809", /* INT64_MIN - 1 */
        "99999999999999999999999",
        "\xd9\xa3", /* ARABIC-INDIC DIGIT THREE */
    };
    for (size_t i = 0; i < DK_ARRAY_LEN(bad); i++) {
        int64_t v = 12345;
        if (dk_parse_i64(bad[i], INT64_MIN, INT64_MAX, &v))
            fail_msg("accepted \"%s\" as %lld", bad[i], (long long)v);
        assert_int_equal(v, 12345); /* untouched on failure */
    }
    int64_t v = 12345;
    assert_false(dk_parse_i64(NULL, 0, 10, &v));
    assert_int_equal(v, 12345);
}

static void test_parse_i64_bounds(void **state)
{
    int64_t v = -1;
    assert_true(dk_parse_i64("1", 1, 10, &v));
    assert_int_equal(v, 1);
    assert_true(dk_parse_i64("10", 1, 10, &v));
    assert_int_equal(v, 10);
    v = -1;
    assert_false(dk_parse_i64("0", 1, 10, &v));
    assert_false(dk_parse_i64("11", 1, 10, &v));
    assert_false(dk_parse_i64("-1", 0, INT64_MAX, &v));
    assert_int_equal(v, -1);
    assert_true(dk_parse_i64("-5", -5, -5, &v));
    assert_int_equal(v, -5);
}

static void test_parse_i64n(void **state)
{
    int64_t v = -1;
    /* only the first n bytes count */
    assert_true(dk_parse_i64n("12345", 3, 0, 1000, &v));
    assert_int_equal(v, 123);
    assert_true(dk_parse_i64n("42;rest", 2, 0, 100, &v));
    assert_int_equal(v, 42);
    assert_true(dk_parse_i64n("-9223372036854775808", 20, INT64_MIN, INT64_MAX, &v));
    assert_int_equal(v, INT64_MIN);
    v = -1;
    assert_false(dk_parse_i64n("42;rest", 3, 0, 100, &v));
    assert_false(dk_parse_i64n("123", 0, 0, 1000, &v));
    assert_false(dk_parse_i64n(NULL, 3, 0, 1000, &v));
    assert_false(dk_parse_i64n("000000000000000000001", 21, 0, 1000, &v)); /* over 20 bytes */
    assert_false(dk_parse_i64n("500", 3, 0, 100, &v));
    assert_int_equal(v, -1);
}

static long u8len(const char *s)
{
    return dk_utf8_len(s, strlen(s));
}

static void test_utf8_valid(void **state)
{
    assert_int_equal(dk_utf8_len("", 0), 0);
    assert_int_equal(u8len("hello"), 5);
    assert_int_equal(u8len("\xc3\xa9"), 1);         /* é */
    assert_int_equal(u8len("\xe2\x82\xac"), 1);     /* € */
    assert_int_equal(u8len("\xf0\x9f\x98\x80"), 1); /* U+1F600 */
    assert_int_equal(u8len("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z"), 5);
    assert_int_equal(u8len("\xc2\x80"), 1);         /* U+0080, smallest 2-byte */
    assert_int_equal(u8len("\xdf\xbf"), 1);         /* U+07FF */
    assert_int_equal(u8len("\xe0\xa0\x80"), 1);     /* U+0800, smallest 3-byte */
    assert_int_equal(u8len("\xed\x9f\xbf"), 1);     /* U+D7FF, just below the surrogates */
    assert_int_equal(u8len("\xee\x80\x80"), 1);     /* U+E000, just above */
    assert_int_equal(u8len("\xef\xbf\xbf"), 1);     /* U+FFFF */
    assert_int_equal(u8len("\xf0\x90\x80\x80"), 1); /* U+10000, smallest 4-byte */
    assert_int_equal(u8len("\xf4\x8f\xbf\xbf"), 1); /* U+10FFFF, the last code point */
    /* length-delimited: an embedded NUL is one code point, bytes past n are ignored */
    assert_int_equal(dk_utf8_len("a\0b", 3), 3);
    assert_int_equal(dk_utf8_len("\xc3\xa9\xc3\xa9", 2), 1);
}

static void test_utf8_invalid(void **state)
{
    static const struct {
        const char *bytes;
        size_t n;
        const char *why;
    } bad[] = {
        {"\x80", 1, "lone continuation byte"},
        {"a\xbf", 2, "continuation byte after ASCII"},
        {"\xc3", 1, "truncated 2-byte sequence"},
        {"\xe2\x82", 2, "truncated 3-byte sequence"},
        {"\xf0\x9f\x98", 3, "truncated 4-byte sequence"},
        {"\xc3\x28", 2, "2-byte lead with ASCII after it"},
        {"\xe2\x28\xa1", 3, "bad second byte of 3"},
        {"\xf0\x9f\x28\x80", 4, "bad third byte of 4"},
        {"\xc0\x80", 2, "overlong NUL"},
        {"\xc1\xbf", 2, "overlong U+007F"},
        {"\xe0\x80\x80", 3, "overlong 3-byte NUL"},
        {"\xe0\x9f\xbf", 3, "overlong U+07FF"},
        {"\xf0\x80\x80\x80", 4, "overlong 4-byte NUL"},
        {"\xf0\x8f\xbf\xbf", 4, "overlong U+FFFF"},
        {"\xed\xa0\x80", 3, "high surrogate U+D800"},
        {"\xed\xbf\xbf", 3, "low surrogate U+DFFF"},
        {"\xed\xa0\xbd\xed\xb8\x80", 6, "CESU-8 surrogate pair"},
        {"\xf4\x90\x80\x80", 4, "U+110000, past the last code point"},
        {"\xf5\x80\x80\x80", 4, "lead byte F5"},
        {"\xf8\x88\x80\x80\x80", 5, "5-byte form"},
        {"\xfc\x84\x80\x80\x80\x80", 6, "6-byte form"},
        {"\xfe", 1, "byte FE"},
        {"\xff", 1, "byte FF"},
        {"ok\xc3\xa9then\xff", 9, "valid text, then an invalid byte"},
    };
    for (size_t i = 0; i < DK_ARRAY_LEN(bad); i++) {
        long n = dk_utf8_len(bad[i].bytes, bad[i].n);
        if (n != -1)
            fail_msg("%s: got %ld, want -1", bad[i].why, n);
    }
}

static void test_utf8_scrub(void **state)
{
    (void)state;
    char out[64];
    /* valid text passes unchanged */
    const char *ua = "Mozilla/5.0 (X11) \u00e9 \u20ac";
    assert_int_equal(dk_utf8_scrub(out, sizeof out, ua, strlen(ua)), strlen(ua));
    assert_string_equal(out, ua);
    /* each bad byte and each control character becomes U+FFFD */
    const char *cases[][2] = {
        {"a\xff\xfe"
         "b",
         "a\xef\xbf\xbd\xef\xbf\xbd"
         "b"},
        {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},                 /* overlong '/' */
        {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* a surrogate */
        {"x\x80", "x\xef\xbf\xbd"},                               /* a lone continuation */
        {"tab\there", "tab\xef\xbf\xbdhere"},
        {"\x7f", "\xef\xbf\xbd"},
        {"\xe2\x82", "\xef\xbf\xbd\xef\xbf\xbd"}, /* truncated sequence */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = dk_utf8_scrub(out, sizeof out, cases[i][0], strlen(cases[i][0]));
        assert_string_equal(out, cases[i][1]);
        assert_int_equal(n, strlen(cases[i][1]));
        assert_true(dk_utf8_len(out, n) >= 0);
    }
    /* truncation never splits a character */
    assert_int_equal(dk_utf8_scrub(out, 4, "ab€", 5), 2);
    assert_string_equal(out, "ab");
    assert_int_equal(dk_utf8_scrub(out, 6, "ab€", 5), 5);
    assert_string_equal(out, "ab€");
    assert_int_equal(dk_utf8_scrub(out, 3, "a\xff", 2), 1);
    assert_string_equal(out, "a");
    assert_int_equal(dk_utf8_scrub(out, 1, "abc", 3), 0);
    assert_string_equal(out, "");
}

static void test_str_ieq(void **state)
{
    assert_true(dk_str_ieq("", ""));
    assert_true(dk_str_ieq("Content-Type", "content-type"));
    assert_true(dk_str_ieq("ABC", "abc"));
    assert_false(dk_str_ieq("abc", "abcd"));
    assert_false(dk_str_ieq("abcd", "abc"));
    assert_false(dk_str_ieq("abc", "abd"));
    assert_false(dk_str_ieq("a", ""));
    assert_false(dk_str_ieq(NULL, "a"));
    assert_false(dk_str_ieq("a", NULL));
    assert_false(dk_str_ieq(NULL, NULL));
    /* only ASCII folds: é (C3 A9) and É (C3 89) differ */
    assert_false(dk_str_ieq("\xc3\xa9", "\xc3\x89"));
}

static void test_strlcpy(void **state)
{
    char buf[8];
    memset(buf, 'X', sizeof buf);
    assert_int_equal(dk_strlcpy(buf, "abc", sizeof buf), 3);
    assert_string_equal(buf, "abc");

    memset(buf, 'X', sizeof buf);
    assert_int_equal(dk_strlcpy(buf, "abcdefghij", sizeof buf), 7);
    assert_string_equal(buf, "abcdefg");

    memset(buf, 'X', sizeof buf);
    assert_int_equal(dk_strlcpy(buf, "abcdefg", sizeof buf), 7); /* exactly fits */
    assert_string_equal(buf, "abcdefg");

    memset(buf, 'X', sizeof buf);
    assert_int_equal(dk_strlcpy(buf, "", sizeof buf), 0);
    assert_string_equal(buf, "");

    memset(buf, 'X', sizeof buf);
    assert_int_equal(dk_strlcpy(buf, "abc", 1), 0);
    assert_int_equal(buf[0], '\0');
    assert_int_equal(buf[1], 'X');

    memset(buf, 'X', sizeof buf);
    assert_int_equal(dk_strlcpy(buf, "abc", 0), 0);
    assert_int_equal(buf[0], 'X'); /* nothing written */
}

static void test_str_lower(void **state)
{
    char s[] = "Hello, WORLD-09 \xc3\x89";
    dk_str_lower(s);
    assert_string_equal(s, "hello, world-09 \xc3\x89"); /* non-ASCII bytes untouched */
    char empty[] = "";
    dk_str_lower(empty);
    assert_string_equal(empty, "");
    dk_str_lower(NULL); /* accepted */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_i64_accepts), cmocka_unit_test(test_parse_i64_rejects),
        cmocka_unit_test(test_parse_i64_bounds),  cmocka_unit_test(test_parse_i64n),
        cmocka_unit_test(test_utf8_valid),        cmocka_unit_test(test_utf8_invalid),
        cmocka_unit_test(test_str_ieq),           cmocka_unit_test(test_strlcpy),
        cmocka_unit_test(test_str_lower),         cmocka_unit_test(test_utf8_scrub),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
