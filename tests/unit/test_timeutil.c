/* test_timeutil.c — clocks, RFC 3339 formatting and parsing: offsets, fractions, leap years,
 * leap seconds, malformed input, and format/parse roundtrips. */
#include "testutil.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/common.h"
#include "core/crypto.h"
#include "core/timeutil.h"
#include "core/banned.h"

static void test_clocks(void **state)
{
    int64_t wall = dk_now_ms();
    int64_t sys = (int64_t)time(NULL) * 1000;
    assert_true(wall >= sys - 1000 && wall <= sys + 2000);

    int64_t m1 = dk_mono_ms();
    double s1 = dk_mono_s();
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    int64_t m2 = dk_mono_ms();
    double s2 = dk_mono_s();
    assert_true(m2 - m1 >= 20);
    assert_true(m2 - m1 < 2000);
    assert_true(s2 - s1 >= 0.019);
    assert_true(s2 - s1 < 2.0);
    /* the two monotonic readings are the same clock */
    assert_true(s1 * 1000 - (double)m1 > -2 && s1 * 1000 - (double)m1 < 2);
}

static void test_format(void **state)
{
    static const struct {
        int64_t ms;
        const char *want;
    } rows[] = {
        {0, "1970-01-01T00:00:00.000Z"},
        {1, "1970-01-01T00:00:00.001Z"},
        {999, "1970-01-01T00:00:00.999Z"},
        {1000, "1970-01-01T00:00:01.000Z"},
        {1795964136123, "2026-11-29T14:55:36.123Z"},
        {1709164800000, "2024-02-29T00:00:00.000Z"},
        {951868799999, "2000-02-29T23:59:59.999Z"},
        {253402300799999, "9999-12-31T23:59:59.999Z"},
        {-1, "1969-12-31T23:59:59.999Z"},
        {-999, "1969-12-31T23:59:59.001Z"},
        {-1000, "1969-12-31T23:59:59.000Z"},
        {-1001, "1969-12-31T23:59:58.999Z"},
        {-14182940000, "1969-07-20T20:17:40.000Z"},
        {-62135596800000, "0001-01-01T00:00:00.000Z"},
    };
    for (size_t i = 0; i < DK_ARRAY_LEN(rows); i++) {
        char out[DK_RFC3339_LEN];
        memset(out, 'X', sizeof out);
        dk_time_format(rows[i].ms, out);
        if (strcmp(out, rows[i].want) != 0)
            fail_msg("%lld: got %s, want %s", (long long)rows[i].ms, out, rows[i].want);
    }
}

static void test_parse_valid(void **state)
{
    static const struct {
        const char *in;
        int64_t want;
    } rows[] = {
        {"1970-01-01T00:00:00Z", 0},
        {"1970-01-01T00:00:00.000Z", 0},
        {"2026-11-29T14:55:36.123Z", 1795964136123},
        {"2026-11-29t14:55:36.123z", 1795964136123},
        {"2026-11-29T16:55:36.123+02:00", 1795964136123},
        {"2026-11-29T09:25:36.123-05:30", 1795964136123},
        {"2026-11-30T00:40:36.123+09:45", 1795964136123},
        {"2026-11-29T14:55:36.123+00:00", 1795964136123},
        {"2026-11-29T14:55:36.123-00:00", 1795964136123},
        /* fractions: any of 1..9 digits, truncated to milliseconds */
        {"1970-01-01T00:00:00.5Z", 500},
        {"1970-01-01T00:00:00.05Z", 50},
        {"1970-01-01T00:00:00.123456789Z", 123},
        {"1970-01-01T00:00:00.999999Z", 999},
        {"1970-01-01T00:00:00.000000001Z", 0},
        /* leap years */
        {"2024-02-29T00:00:00Z", 1709164800000},
        {"2000-02-29T23:59:59.999Z", 951868799999},
        /* a leap second is accepted and clamped to :59 */
        {"2016-12-31T23:59:60Z", 1483228799000},
        {"9999-12-31T23:59:59.999Z", 253402300799999},
        {"0001-01-01T00:00:00Z", -62135596800000},
        {"1969-12-31T23:59:59.999Z", -1},
        {"1969-07-20T20:17:40Z", -14182940000},
        /* an offset can move the instant across a day, month and year */
        {"2025-01-01T01:00:00+02:00", 1735686000000},
        {"2024-12-31T23:00:00-01:00", 1735689600000},
    };
    for (size_t i = 0; i < DK_ARRAY_LEN(rows); i++) {
        int64_t ms = 42;
        if (!dk_time_parse(rows[i].in, &ms))
            fail_msg("rejected %s", rows[i].in);
        if (ms != rows[i].want)
            fail_msg("%s: got %lld, want %lld", rows[i].in, (long long)ms, (long long)rows[i].want);
    }
}

static void test_parse_invalid(void **state)
{
    static const char *bad[] = {
        "",
        "2026-11-29",
        "2026-11-29T14:55:36",             /* no offset */
        "2026-11-29 14:55:36Z",            /* space instead of T */
        "2026-11-29T14:55Z",               /* no seconds */
        "2026-11-29T14:55:36.Z",           /* fraction without digits */
        "2026-11-29T14:55:36.1234567890Z", /* more than 9 fraction digits */
        "2026-11-29T14:55:36,123Z",        /* comma fraction */
        "2026-11-29T14:55:36ZZ",           /* trailing garbage */
        "2026-11-29T14:55:36Z ",
        " 2026-11-29T14:55:36Z",
        "2026-11-29T14:55:36+0200", /* offset without colon */
        "2026-11-29T14:55:36+02",
        "2026-11-29T14:55:36+2:00",
        "2026-11-29T14:55:36+24:00", /* offset hour out of range */
        "2026-11-29T14:55:36+02:60",
        "2026-11-29T14:55:36+02:00:00",
        "2026-13-01T00:00:00Z", /* month 13 */
        "2026-00-01T00:00:00Z",
        "2026-01-00T00:00:00Z", /* day 0 */
        "2026-01-32T00:00:00Z",
        "2026-04-31T00:00:00Z", /* April has 30 days */
        "2023-02-29T00:00:00Z", /* not a leap year */
        "1900-02-29T00:00:00Z", /* divisible by 100, not by 400 */
        "2026-11-29T24:00:00Z",
        "2026-11-29T23:60:00Z",
        "2026-11-29T23:59:61Z",
        "0000-01-01T00:00:00Z", /* year 0 */
        "-001-01-01T00:00:00Z",
        "20261-1-29T14:55:36Z",
        "2026/11/29T14:55:36Z",
        "2026-11-29T14-55-36Z",
        "2O26-11-29T14:55:36Z", /* letter O */
        "+2026-11-29T14:55:36Z",
        "2026-11-29T14:55:36.12a3Z",
        "not a timestamp at all",
    };
    for (size_t i = 0; i < DK_ARRAY_LEN(bad); i++) {
        int64_t ms = 42;
        if (dk_time_parse(bad[i], &ms))
            fail_msg("accepted \"%s\" as %lld", bad[i], (long long)ms);
        assert_int_equal(ms, 42); /* untouched on failure */
    }
    int64_t ms = 42;
    assert_false(dk_time_parse(NULL, &ms));
    assert_int_equal(ms, 42);
}

static void test_leap_years_every_century(void **state)
{
    for (int y = 1600; y <= 2400; y++) {
        char s[64];
        snprintf(s, sizeof s, "%04d-02-29T12:00:00Z", y);
        bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        int64_t ms = 0;
        bool ok = dk_time_parse(s, &ms);
        if (ok != leap)
            fail_msg("%s: parse %s, leap year %s", s, ok ? "ok" : "failed", leap ? "yes" : "no");
        if (ok) {
            /* Feb 29 is the day after Feb 28 */
            char prev[64];
            snprintf(prev, sizeof prev, "%04d-02-28T12:00:00Z", y);
            int64_t pms = 0;
            assert_true(dk_time_parse(prev, &pms));
            assert_int_equal(ms - pms, 86400000);
        }
    }
}

static void test_roundtrip(void **state)
{
    /* formatted text parses back to the same instant, over the four-digit years */
    const int64_t lo = -62135596800000, hi = 253402300799999;
    for (int i = 0; i < 20000; i++) {
        uint64_t r;
        dk_random_bytes(&r, sizeof r);
        int64_t ms = lo + (int64_t)(r % (uint64_t)(hi - lo + 1));
        char out[DK_RFC3339_LEN];
        dk_time_format(ms, out);
        assert_int_equal(strlen(out), 24);
        int64_t back = 0;
        if (!dk_time_parse(out, &back))
            fail_msg("cannot parse own output %s", out);
        if (back != ms)
            fail_msg("%lld -> %s -> %lld", (long long)ms, out, (long long)back);
    }
    /* and now */
    int64_t now = dk_now_ms();
    char out[DK_RFC3339_LEN];
    dk_time_format(now, out);
    int64_t back = 0;
    assert_true(dk_time_parse(out, &back));
    assert_int_equal(back, now);
}

static void test_day_boundaries(void **state)
{
    /* every day of 2023 and 2024 is exactly 86400 s after the one before */
    int64_t prev = 0;
    bool have = false;
    for (int y = 2023; y <= 2024; y++) {
        for (int m = 1; m <= 12; m++) {
            for (int d = 1; d <= 31; d++) {
                char s[64];
                snprintf(s, sizeof s, "%04d-%02d-%02dT00:00:00Z", y, m, d);
                int64_t ms = 0;
                if (!dk_time_parse(s, &ms))
                    continue;
                if (have)
                    assert_int_equal(ms - prev, 86400000);
                char out[DK_RFC3339_LEN];
                dk_time_format(ms, out);
                char want[64];
                snprintf(want, sizeof want, "%04d-%02d-%02dT00:00:00.000Z", y, m, d);
                assert_string_equal(out, want);
                prev = ms;
                have = true;
            }
        }
    }
    /* 731 days were visited: 365 + 366 */
    int64_t first = 0;
    assert_true(dk_time_parse("2023-01-01T00:00:00Z", &first));
    assert_int_equal(prev - first, 730LL * 86400000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clocks),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_invalid),
        cmocka_unit_test(test_leap_years_every_century),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_day_boundaries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
