/* test_validate.c — the shared field rules: e-mail, name and password accept/reject tables with
 * their exact messages, and the character (not byte) limits. */
#include "testutil.h"

#include <stdio.h>
#include <string.h>

#include "core/common.h"
#include "core/validate.h"
#include "core/banned.h"

#define INVALID_EMAIL "must be a valid e-mail address"

/* s repeated n times into buf (cap bytes), then suffix. */
static const char *rep(char *buf, size_t cap, const char *s, int n, const char *suffix)
{
    size_t len = 0, sl = strlen(s);
    for (int i = 0; i < n; i++) {
        assert_true(len + sl < cap);
        memcpy(buf + len, s, sl);
        len += sl;
    }
    assert_true(len + strlen(suffix) < cap);
    memcpy(buf + len, suffix, strlen(suffix) + 1);
    return buf;
}

static void test_email_accepts(void **state)
{
    static const char *good[] = {
        "a@b.co",
        "alice@example.com",
        "Alice.Smith@Example.COM",
        "first.last+tag@example.com",
        "o'brien@example.ie",
        "x_y-z@sub.domain.example.org",
        "user@123.example",
        "user@xn--bcher-kva.example",
        "a@b-c.d-e",
        "1234567890@example.com",
        "{}|~!#$%^&*=?`@example.com",
    };
    for (size_t i = 0; i < DK_ARRAY_LEN(good); i++) {
        const char *msg = dk_validate_email(good[i]);
        if (msg)
            fail_msg("rejected %s: %s", good[i], msg);
    }
}

static void test_email_rejects(void **state)
{
    static const char *bad[] = {
        "plain",
        "@example.com",
        "user@",
        "user@localhost", /* one label */
        "user@@example.com",
        "a@b@example.com",
        ".user@example.com",
        "user.@example.com",
        "us..er@example.com",
        "user@example..com",
        "user@.example.com",
        "user@example.com.",
        "user@-example.com",
        "user@example-.com",
        "user@exa_mple.com",
        "user@exa mple.com",
        "us er@example.com",
        " user@example.com",
        "user@example.com ",
        "user\t@example.com",
        "\"quoted\"@example.com",
        "a(b)@example.com",
        "a,b@example.com",
        "a:b@example.com",
        "a;b@example.com",
        "a<b>@example.com",
        "a[b]@example.com",
        "a\\b@example.com",
        "user@ex\xc3\xa4mple.com", /* non-ASCII domain (must be punycode) */
        "user@[127.0.0.1]",
        "user@example.com\x7f",
        "\x7fuser@example.com",
    };
    for (size_t i = 0; i < DK_ARRAY_LEN(bad); i++) {
        const char *msg = dk_validate_email(bad[i]);
        if (!msg)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_string_equal(msg, INVALID_EMAIL);
    }
    assert_string_equal(dk_validate_email(""), "is required");
}

static void test_email_lengths(void **state)
{
    char buf[400];
    /* local part: 64 is the limit */
    assert_null(dk_validate_email(rep(buf, sizeof buf, "a", 64, "@example.com")));
    assert_string_equal(dk_validate_email(rep(buf, sizeof buf, "a", 65, "@example.com")),
                        INVALID_EMAIL);
    /* domain labels: 63 is the limit */
    char dom[100];
    rep(dom, sizeof dom, "b", 63, ".com");
    snprintf(buf, sizeof buf, "a@%s", dom);
    assert_null(dk_validate_email(buf));
    rep(dom, sizeof dom, "b", 64, ".com");
    snprintf(buf, sizeof buf, "a@%s", dom);
    assert_string_equal(dk_validate_email(buf), INVALID_EMAIL);
    /* the whole address: 254 is the limit (58 + "@" + 3 × (63 + ".") + "com" = 254) */
    char label[64];
    rep(label, sizeof label, "c", 63, "");
    snprintf(buf, sizeof buf, "%s@%s.%s.%s.com", rep(dom, sizeof dom, "a", 58, ""), label, label,
             label);
    assert_int_equal(strlen(buf), 254);
    assert_null(dk_validate_email(buf));
    snprintf(buf, sizeof buf, "%s@%s.%s.%s.com", rep(dom, sizeof dom, "a", 59, ""), label, label,
             label);
    assert_int_equal(strlen(buf), 255);
    assert_string_equal(dk_validate_email(buf), "must be at most 254 characters");
}

static void test_name(void **state)
{
    static const char *good[] = {
        "A",
        "Ada Lovelace",
        "  padded  ",
        "Zoë Ñúñez",
        "\xe5\xb1\xb1\xe7\x94\xb0\xe5\xa4\xaa\xe9\x83\x8e", /* 山田太郎 */
        "\xf0\x9f\x98\x80 emoji",
        "O'Brien-Smith, Jr.",
    };
    for (size_t i = 0; i < DK_ARRAY_LEN(good); i++) {
        const char *msg = dk_validate_name(good[i]);
        if (msg)
            fail_msg("rejected \"%s\": %s", good[i], msg);
    }
    static const struct {
        const char *in, *msg;
    } bad[] = {
        {"", "must not be empty"},
        {" ", "must not be blank"},
        {"     ", "must not be blank"},
        {"a\tb", "must not contain control characters"},
        {"line\nbreak", "must not contain control characters"},
        {"\r", "must not contain control characters"},
        {"bell\x07", "must not contain control characters"},
        {"del\x7f", "must not contain control characters"},
        {"\xff", "must be valid UTF-8"},
        {"bad \xc0\xaf overlong", "must be valid UTF-8"},
        {"\xed\xa0\x80", "must be valid UTF-8"},
        {"trunc\xe2\x82", "must be valid UTF-8"},
    };
    for (size_t i = 0; i < DK_ARRAY_LEN(bad); i++) {
        const char *msg = dk_validate_name(bad[i].in);
        if (!msg)
            fail_msg("accepted \"%s\"", bad[i].in);
        assert_string_equal(msg, bad[i].msg);
    }
}

static void test_name_length_counts_characters(void **state)
{
    char buf[1024];
    assert_null(dk_validate_name(rep(buf, sizeof buf, "a", 100, "")));
    assert_string_equal(dk_validate_name(rep(buf, sizeof buf, "a", 101, "")),
                        "must be at most 100 characters");
    /* 100 two-byte characters (200 bytes) are fine; 101 are not */
    assert_null(dk_validate_name(rep(buf, sizeof buf, "\xc3\xa9", 100, "")));
    assert_string_equal(dk_validate_name(rep(buf, sizeof buf, "\xc3\xa9", 101, "")),
                        "must be at most 100 characters");
    /* 100 four-byte characters (400 bytes) */
    assert_null(dk_validate_name(rep(buf, sizeof buf, "\xf0\x9f\x98\x80", 100, "")));
}

static void test_password(void **state)
{
    char buf[2048];
    assert_string_equal(dk_validate_password(""), "must be at least 8 characters");
    assert_string_equal(dk_validate_password("1234567"), "must be at least 8 characters");
    assert_null(dk_validate_password("12345678"));
    assert_null(dk_validate_password("correct horse battery staple"));
    assert_null(dk_validate_password("        ")); /* spaces are characters */
    assert_null(dk_validate_password(rep(buf, sizeof buf, "x", 256, "")));
    assert_string_equal(dk_validate_password(rep(buf, sizeof buf, "x", 257, "")),
                        "must be at most 256 characters");
    /* characters, not bytes: 7 × é (14 bytes) is too short, 8 × é is enough */
    assert_string_equal(dk_validate_password(rep(buf, sizeof buf, "\xc3\xa9", 7, "")),
                        "must be at least 8 characters");
    assert_null(dk_validate_password(rep(buf, sizeof buf, "\xc3\xa9", 8, "")));
    assert_null(dk_validate_password(rep(buf, sizeof buf, "\xe2\x82\xac", 256, "")));
    assert_string_equal(dk_validate_password(rep(buf, sizeof buf, "\xe2\x82\xac", 257, "")),
                        "must be at most 256 characters");
    assert_string_equal(dk_validate_password("password\xff"), "must be valid UTF-8");
    assert_string_equal(dk_validate_password("\xc0\x80\xc0\x80\xc0\x80\xc0\x80"),
                        "must be valid UTF-8");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_email_accepts),
        cmocka_unit_test(test_email_rejects),
        cmocka_unit_test(test_email_lengths),
        cmocka_unit_test(test_name),
        cmocka_unit_test(test_name_length_counts_characters),
        cmocka_unit_test(test_password),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
