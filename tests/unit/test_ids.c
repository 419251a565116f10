/* test_ids.c — UUIDv7 layout (version, variant, embedded time, ordering, uniqueness), UUID
 * syntax checks and client request-id validation. */
#include "testutil.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/common.h"
#include "core/ids.h"
#include "core/timeutil.h"
#include "core/banned.h"

static int64_t uuid_ms(const char *u)
{
    /* the first 48 bits: 8 hex digits, a dash, 4 hex digits */
    int64_t ms = 0;
    for (int i = 0; i < 13; i++) {
        if (i == 8)
            continue;
        char c = u[i];
        int v = c >= 'a' ? c - 'a' + 10 : c - '0';
        ms = ms * 16 + v;
    }
    return ms;
}

static void test_uuid7_format(void **state)
{
    for (int i = 0; i < 1000; i++) {
        char u[DK_UUID_LEN];
        memset(u, 'X', sizeof u);
        int64_t before = dk_now_ms();
        dk_uuid7(u);
        int64_t after = dk_now_ms();
        assert_int_equal(strlen(u), 36);
        assert_true(dk_uuid_valid(u));
        assert_int_equal(u[8], '-');
        assert_int_equal(u[13], '-');
        assert_int_equal(u[18], '-');
        assert_int_equal(u[23], '-');
        assert_int_equal(u[14], '7'); /* version nibble */
        if (!strchr("89ab", u[19]))   /* RFC 9562 variant 10xx */
            fail_msg("variant nibble of %s is %c", u, u[19]);
        int64_t ms = uuid_ms(u);
        assert_true(ms >= before && ms <= after);
    }
}

static void test_uuid7_unique_and_random(void **state)
{
    enum { N = 2000 };
    static char ids[N][DK_UUID_LEN];
    for (int i = 0; i < N; i++)
        dk_uuid7(ids[i]);
    for (int i = 0; i < N; i++)
        for (int k = i + 1; k < N; k++)
            if (strcmp(ids[i], ids[k]) == 0)
                fail_msg("duplicate uuid %s", ids[i]);
    /* the random tail differs even between ids of the same millisecond */
    for (int i = 1; i < N; i++)
        assert_memory_not_equal(ids[i] + 24, ids[i - 1] + 24, 12);
}

static void test_uuid7_time_order(void **state)
{
    /* ids made in later milliseconds sort after earlier ones, as text */
    char prev[DK_UUID_LEN];
    dk_uuid7(prev);
    for (int i = 0; i < 20; i++) {
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
        char u[DK_UUID_LEN];
        dk_uuid7(u);
        if (strcmp(prev, u) >= 0)
            fail_msg("%s does not sort after %s", u, prev);
        assert_true(uuid_ms(u) > uuid_ms(prev));
        memcpy(prev, u, sizeof u);
    }
}

static void test_uuid_valid(void **state)
{
    static const char *good[] = {
        "00000000-0000-0000-0000-000000000000", "0190a3b2-7c4d-7e5f-8a6b-1c2d3e4f5a6b",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "123e4567-e89b-12d3-a456-426614174000", /* v1: any version is a UUID */
    };
    static const char *bad[] = {
        "",
        "0190a3b2-7c4d-7e5f-8a6b-1c2d3e4f5a6",   /* 35 chars */
        "0190a3b2-7c4d-7e5f-8a6b-1c2d3e4f5a6b0", /* 37 chars */
        "0190A3B2-7C4D-7E5F-8A6B-1C2D3E4F5A6B",  /* upper case */
        "0190a3b2-7c4d-7e5f-8a6b1c2d3e4f5a6b-",  /* dash misplaced */
        "0190a3b27c4d7e5f8a6b1c2d3e4f5a6b",      /* no dashes */
        "{0190a3b2-7c4d-7e5f-8a6b-1c2d3e4f5a6}",
        "0190a3b2-7c4d-7e5f-8a6b-1c2d3e4f5a6g", /* g */
        "0190a3b2_7c4d_7e5f_8a6b_1c2d3e4f5a6b",
        " 190a3b2-7c4d-7e5f-8a6b-1c2d3e4f5a6b",
        "../../../../../../../../etc/passwd!!",
    };
    for (size_t i = 0; i < DK_ARRAY_LEN(good); i++)
        if (!dk_uuid_valid(good[i]))
            fail_msg("rejected %s", good[i]);
    for (size_t i = 0; i < DK_ARRAY_LEN(bad); i++)
        if (dk_uuid_valid(bad[i]))
            fail_msg("accepted %s", bad[i]);
    assert_false(dk_uuid_valid(NULL));
}

static void test_request_id_valid(void **state)
{
    char max[129], over[130];
    memset(max, 'a', 128);
    max[128] = '\0';
    memset(over, 'a', 129);
    over[129] = '\0';
    assert_true(dk_request_id_valid(max));
    assert_false(dk_request_id_valid(over));

    static const char *good[] = {
        "a",
        "Z",
        "0",
        "req-123",
        "abc.DEF_ghi:jkl-MNO",
        "0190a3b2-7c4d-7e5f-8a6b-1c2d3e4f5a6b",
        "._:-",
        "trace:span:1.2.3",
    };
    static const char *bad[] = {
        "",    " ",   "has space", " leading",   "trailing ", "tab\there",   "new\nline", "a/b",
        "a+b", "a=b", "quote\"",   "semi;colon", "<script>",  "caf\xc3\xa9", "a,b",       "100%",
    };
    for (size_t i = 0; i < DK_ARRAY_LEN(good); i++)
        if (!dk_request_id_valid(good[i]))
            fail_msg("rejected \"%s\"", good[i]);
    for (size_t i = 0; i < DK_ARRAY_LEN(bad); i++)
        if (dk_request_id_valid(bad[i]))
            fail_msg("accepted \"%s\"", bad[i]);
    assert_false(dk_request_id_valid(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uuid7_format),     cmocka_unit_test(test_uuid7_unique_and_random),
        cmocka_unit_test(test_uuid7_time_order), cmocka_unit_test(test_uuid_valid),
        cmocka_unit_test(test_request_id_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
