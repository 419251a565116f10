/* test_console.c — the web console's compiled-in table and its header logic: every file has a
 * content type and a quoted ETag, index.html points at the versioned asset path; the gzip
 * copies are made and freed; Accept-Encoding (q-values, "*", an explicit refusal
 * winning over "*") and If-None-Match (lists, weak tags, "*") are read as RFC 9110 says. */
#include "testutil.h"

#include <stdio.h>
#include <string.h>

#include "services/console/console.h"
#include "services/console/console_assets.h"
#include "core/banned.h"

static void test_table(void **state)
{
    (void)state;
    assert_true(dk_console_nassets >= 4);
    assert_int_equal(strlen(dk_console_version), 16);
    bool index = false, app = false;
    for (size_t i = 0; i < dk_console_nassets; i++) {
        const dk_console_asset *a = &dk_console_assets[i];
        assert_non_null(a->content_type);
        assert_true(a->len > 0);
        assert_int_equal(a->etag[0], '"');
        assert_int_equal(a->etag[strlen(a->etag) - 1], '"');
        assert_string_not_equal(a->etag, a->etag_gz);
        if (strcmp(a->name, "index.html") == 0) {
            index = true;
            char want[64];
            snprintf(want, sizeof want, "/assets/%s/app.js", dk_console_version);
            assert_non_null(strstr((const char *)a->bytes, want));
            assert_null(strstr((const char *)a->bytes, "@ASSETS@"));
        }
        app |= strcmp(a->name, "app.js") == 0;
    }
    assert_true(index && app);
}

static void test_new_free(void **state)
{
    (void)state;
    /* the gzip copies are made and released without leaks (ASan); the system test
     * (tests/system/test_console.py) inflates what the server sends */
    dk_console *c = dk_console_new();
    assert_non_null(c);
    dk_console_free(c);
    dk_console_free(NULL);
}

static void test_accepts_gzip(void **state)
{
    (void)state;
    const char *yes[] = {"gzip",
                         "GZIP",
                         "gzip, deflate, br",
                         "br;q=1.0, gzip;q=0.8",
                         "*",
                         "deflate, *;q=0.5",
                         "x-gzip",
                         " gzip ;q=0.001",
                         "gzip;q=1",
                         "gzip;q=0.5"};
    const char *no[] = {
        NULL,           "",      "identity",    "br, deflate", "gzip;q=0", "gzip; q=0.0",
        "gzip;q=0.000", "*;q=0", "*, gzip;q=0", "gzip;q=0, *", "gzipx",    "agzip"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (!dk_console_accepts_gzip(yes[i]))
            fail_msg("should accept gzip: %s", yes[i]);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        if (dk_console_accepts_gzip(no[i]))
            fail_msg("should refuse gzip: %s", no[i] ? no[i] : "(null)");
    }
}

static void test_etag_matches(void **state)
{
    (void)state;
    const char *tag = "\"abc123\"";
    assert_true(dk_console_etag_matches("\"abc123\"", tag));
    assert_true(dk_console_etag_matches("W/\"abc123\"", tag));
    assert_true(dk_console_etag_matches("\"x\", \"abc123\"", tag));
    assert_true(dk_console_etag_matches("\"x\",\"abc123\" ", tag));
    assert_true(dk_console_etag_matches("*", tag));
    assert_false(dk_console_etag_matches(NULL, tag));
    assert_false(dk_console_etag_matches("", tag));
    assert_false(dk_console_etag_matches("\"abc12\"", tag));
    assert_false(dk_console_etag_matches("\"abc123-gz\"", tag));
    assert_false(dk_console_etag_matches("abc123", tag));
    assert_false(dk_console_etag_matches("\"abc123", tag));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_new_free),
        cmocka_unit_test(test_accepts_gzip),
        cmocka_unit_test(test_etag_matches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
