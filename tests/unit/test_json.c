/* test_json.c — jansson glue: compact rendering into an arena (UTF-8 kept, order kept, reals
 * roundtrip), arena-owned values, and the typed string getter. */
#include "testutil.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/json.h"
#include "ports/users_directory.h"
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

static void test_render_compact(void **state)
{
    dk_arena *a = *state;
    json_t *v = json_pack("{s:i,s:s,s:[i,b,n],s:{}}", "b", 1, "a", "x y", "list", 2, 1, "o");
    size_t len = 0;
    char *s = dk_json_render(a, v, &len);
    /* insertion order is kept and there is no whitespace */
    assert_string_equal(s, "{\"b\":1,\"a\":\"x y\",\"list\":[2,true,null],\"o\":{}}");
    assert_int_equal(len, strlen(s));
    json_decref(v);

    v = json_object();
    assert_string_equal(dk_json_render(a, v, NULL), "{}");
    json_decref(v);
    v = json_array();
    s = dk_json_render(a, v, &len);
    assert_string_equal(s, "[]");
    assert_int_equal(len, 2);
    json_decref(v);
}

static void test_render_scalars(void **state)
{
    /* any JSON value renders, not only objects and arrays */
    dk_arena *a = *state;
    json_t *v = dk_json_own(a, json_integer(-9007199254740993LL));
    assert_string_equal(dk_json_render(a, v, NULL), "-9007199254740993");
    v = dk_json_own(a, json_string("plain"));
    assert_string_equal(dk_json_render(a, v, NULL), "\"plain\"");
    v = dk_json_own(a, json_null());
    assert_string_equal(dk_json_render(a, v, NULL), "null");
    v = dk_json_own(a, json_true());
    assert_string_equal(dk_json_render(a, v, NULL), "true");
    v = dk_json_own(a, json_real(1.5));
    size_t len = 0;
    assert_string_equal(dk_json_render(a, v, &len), "1.5");
    assert_int_equal(len, 3);
}

static void test_render_reals_roundtrip(void **state)
{
    dk_arena *a = *state;
    const double vals[] = {0.1, 1.0 / 3.0, 2.5e-300, 123456789.123456789, -0.000001, 1e300};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        json_t *v = dk_json_own(a, json_pack("[f]", vals[i]));
        char *s = dk_json_render(a, v, NULL);
        json_error_t err;
        json_t *back = dk_json_own(a, json_loads(s, 0, &err));
        assert_non_null(back);
        json_t *r = json_array_get(back, 0);
        assert_true(json_is_real(r));
        if (json_real_value(r) != vals[i])
            fail_msg("%.17g rendered as %s does not read back", vals[i], s);
    }
}

static void test_render_strings_utf8_and_escapes(void **state)
{
    dk_arena *a = *state;
    /* UTF-8 stays UTF-8 (not \u escapes); quotes, backslashes and controls are escaped */
    json_t *v =
        dk_json_own(a, json_pack("{s:s}", "k", "caf\xc3\xa9 \xf0\x9f\x98\x80 \"q\" \\ \n\t\x01"));
    size_t len = 0;
    char *s = dk_json_render(a, v, &len);
    assert_string_equal(s, "{\"k\":\"caf\xc3\xa9 \xf0\x9f\x98\x80 \\\"q\\\" \\\\ \\n\\t\\u0001\"}");
    assert_int_equal(len, strlen(s));
    /* an embedded NUL is kept as \u0000 */
    v = dk_json_own(a, json_pack("[s%]", "a\0b", (size_t)3));
    assert_string_equal(dk_json_render(a, v, NULL), "[\"a\\u0000b\"]");
}

static void test_render_large(void **state)
{
    dk_arena *a = *state;
    json_t *arr = json_array();
    for (int i = 0; i < 5000; i++)
        json_array_append_new(arr, json_integer(i));
    size_t len = 0;
    char *s = dk_json_render(a, arr, &len);
    json_decref(arr);
    assert_int_equal(len, strlen(s));
    assert_int_equal(s[0], '[');
    assert_int_equal(s[len - 1], ']');
    assert_non_null(strstr(s, ",4998,4999]"));
    json_error_t err;
    json_t *back = json_loads(s, 0, &err);
    assert_non_null(back);
    assert_int_equal(json_array_size(back), 5000);
    json_decref(back);
}

static void test_own_decrefs_on_free(void **state)
{
    json_t *v = json_pack("{s:s}", "k", "v");
    json_incref(v); /* our reference, to watch the arena's */
    assert_int_equal(v->refcount, 2);
    dk_arena *a = dk_arena_new();
    assert_ptr_equal(dk_json_own(a, v), v);
    assert_int_equal(v->refcount, 2);
    dk_arena_free(a);
    assert_int_equal(v->refcount, 1);
    json_decref(v);

    /* also on reset; and NULL is passed through without registering anything */
    a = dk_arena_new();
    json_t *w = json_array();
    json_incref(w);
    assert_null(dk_json_own(a, NULL));
    (void)dk_json_own(a, w);
    dk_arena_reset(a);
    assert_int_equal(w->refcount, 1);
    dk_arena_free(a);
    assert_int_equal(w->refcount, 1);
    json_decref(w);

    /* the usual use: parse, hand to the arena, forget (LeakSanitizer checks) */
    a = dk_arena_new();
    json_error_t err;
    json_t *doc = dk_json_own(a, json_loads("{\"a\":[1,2,{\"b\":null}]}", 0, &err));
    assert_non_null(doc);
    dk_arena_free(a);
}

static void test_str_or_null(void **state)
{
    json_t *v = dk_json_str_or_null("x");
    assert_true(json_is_string(v));
    assert_string_equal(json_string_value(v), "x");
    json_decref(v);
    v = dk_json_str_or_null(NULL);
    assert_true(json_is_null(v));
    json_decref(v);
    v = dk_json_str_or_null("");
    assert_true(json_is_string(v));
    assert_string_equal(json_string_value(v), "");
    json_decref(v);
    /* not UTF-8: jansson refuses, and so NULL comes back */
    assert_null(dk_json_str_or_null("\xff"));
}

static void test_get_str(void **state)
{
    json_error_t err;
    json_t *o = json_loads("{\"s\":\"text\",\"e\":\"\",\"n\":null,\"i\":5,\"b\":false,"
                           "\"a\":[],\"o\":{}}",
                           0, &err);
    assert_non_null(o);
    static const struct {
        const char *key;
        const char *want; /* NULL: no string */
        bool present, wrong;
    } rows[] = {
        {"s", "text", true, false}, {"e", "", true, false},          {"n", NULL, true, false},
        {"i", NULL, true, true},    {"b", NULL, true, true},         {"a", NULL, true, true},
        {"o", NULL, true, true},    {"missing", NULL, false, false},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        bool present = !rows[i].present, wrong = !rows[i].wrong;
        const char *got = dk_json_get_str(o, rows[i].key, &present, &wrong);
        if (rows[i].want)
            assert_string_equal(got, rows[i].want);
        else
            assert_null(got);
        if (present != rows[i].present || wrong != rows[i].wrong)
            fail_msg("key %s: present %d wrong %d", rows[i].key, present, wrong);
    }
    /* the out-parameters are optional */
    assert_string_equal(dk_json_get_str(o, "s", NULL, NULL), "text");
    assert_null(dk_json_get_str(o, "i", NULL, NULL));
    /* not an object */
    json_t *arr = json_array();
    bool present = true, wrong = true;
    assert_null(dk_json_get_str(arr, "s", &present, &wrong));
    assert_false(present);
    assert_false(wrong);
    json_decref(arr);
    json_decref(o);
}

/* A random tree: objects, arrays, every scalar kind, strings with every ASCII byte (controls,
 * quotes, backslashes), multi-byte UTF-8 and NULs inside. */
static uint64_t rnd_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state;
}

static json_t *rnd_string(void)
{
    static const char *const pieces[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
                                         "/",        "\\",           "\""};
    char buf[64];
    size_t n = 0, want = rnd() % 24;
    while (n < want) {
        if (rnd() % 4 == 0) {
            const char *p = pieces[rnd() % (sizeof pieces / sizeof pieces[0])];
            size_t pl = strlen(p);
            if (n + pl > sizeof buf)
                break;
            memcpy(buf + n, p, pl);
            n += pl;
        } else {
            buf[n++] = (char)(rnd() % 128); /* NUL and controls included */
        }
    }
    return json_stringn(buf, n);
}

static json_t *rnd_value(int depth)
{
    switch (rnd() % (depth > 3 ? 6 : 8)) {
    case 0: {
        static const json_int_t ints[] = {0, -1, 7, 1234567890123LL, INT64_MAX, INT64_MIN};
        return rnd() % 2 ? json_integer(ints[rnd() % 6]) : json_integer((json_int_t)rnd());
    }
    case 1: {
        static const double reals[] = {0.0, -0.0, 1.0, 1e21, 1e-7, 2.5e-300, 0.1, -123.456, 1e300};
        return json_real(reals[rnd() % 9] * (rnd() % 2 ? 1.0 : 3.0));
    }
    case 2:
        return json_true();
    case 3:
        return json_false();
    case 4:
        return json_null();
    case 5:
        return rnd_string();
    case 6: {
        json_t *o = json_object();
        for (int i = (int)(rnd() % 6); i > 0; i--) {
            json_t *k = rnd_string();
            json_object_setn_new_nocheck(o, json_string_value(k), json_string_length(k),
                                         rnd_value(depth + 1));
            json_decref(k);
        }
        return o;
    }
    default: {
        json_t *arr = json_array();
        for (int i = (int)(rnd() % 6); i > 0; i--)
            json_array_append_new(arr, rnd_value(depth + 1));
        return arr;
    }
    }
}

static void test_render_matches_jansson(void **state)
{
    /* dk_json_render is its own writer: it must say exactly what jansson's dump says */
    dk_arena *a = *state;
    const size_t flags = JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17);
    for (int i = 0; i < 3000; i++) {
        json_t *v = dk_json_own(a, rnd_value(0));
        size_t len = 0;
        char *got = dk_json_render(a, v, &len);
        char *want = json_dumps(v, flags);
        assert_non_null(want);
        if (len != strlen(want) || memcmp(got, want, len) != 0 || got[len] != '\0')
            fail_msg("value %d: rendered\n%s\njansson\n%s", i, got, want);
        free(want);
    }
}

static void test_writer_matches_render(void **state)
{
    /* the writer gives the bytes dk_json_render gives for the same value */
    dk_arena *a = *state;
    for (int i = 0; i < 500; i++) {
        json_t *k1 = rnd_string(), *s1 = rnd_string(), *s2 = rnd_string();
        json_int_t n = (json_int_t)rnd();
        json_t *v =
            dk_json_own(a, json_pack("{s:O,s:[O,I,n,{}],s:n,s:{s:[]}}", json_string_value(k1), s1,
                                     "list", s2, n, "none", "o", "e"));
        /* json_pack takes the key as a C string: a key with a NUL ends there */
        dk_jw w = {0};
        dk_jw_object(&w);
        dk_jw_key(&w, json_string_value(k1));
        dk_jw_stringn(&w, json_string_value(s1), json_string_length(s1));
        dk_jw_key(&w, "list");
        dk_jw_array(&w);
        dk_jw_stringn(&w, json_string_value(s2), json_string_length(s2));
        dk_jw_int(&w, (long long)n);
        dk_jw_string(&w, NULL);
        dk_jw_object(&w);
        dk_jw_object_end(&w);
        dk_jw_array_end(&w);
        dk_jw_key(&w, "none");
        dk_jw_null(&w);
        dk_jw_key(&w, "o");
        dk_jw_object(&w);
        dk_jw_key(&w, "e");
        dk_jw_array(&w);
        dk_jw_array_end(&w);
        dk_jw_object_end(&w);
        dk_jw_object_end(&w);
        size_t len = 0;
        char *got = dk_jw_finish(&w, a, &len);
        assert_null(w.sb.s);
        size_t wlen = 0;
        char *want = dk_json_render(a, v, &wlen);
        if (!v) /* a key json_pack refused (not UTF-8 after the cut): nothing to compare */
            want = got, wlen = len;
        if (len != wlen || memcmp(got, want, len) != 0)
            fail_msg("writer\n%s\nrender\n%s", got, want);
        json_decref(k1);
        json_decref(s1);
        json_decref(s2);
    }
}

static void test_user_writer_matches_render(void **state)
{
    /* the {user} object of GET /users/me: written directly, the same bytes as rendered from
     * jansson values (booleans both ways, an avatar URL and none, text that needs escapes) */
    dk_arena *a = *state;
    dk_user users[] = {{.id = "0192e0a0-0000-7000-8000-000000000001",
                        .email = "ann@example.com",
                        .name = "Ann \"A\" \xc3\x85sa\n",
                        .role = "admin",
                        .avatar_url = "/api/v1/users/x/avatar?v=abc",
                        .created_at = 1700000000123,
                        .updated_at = 1700000001000,
                        .email_verified = true,
                        .mfa_enabled = false},
                       {.id = "u2",
                        .email = "b@example.com",
                        .name = "B",
                        .role = "user",
                        .avatar_url = NULL,
                        .created_at = 0,
                        .updated_at = 86400000,
                        .email_verified = false,
                        .mfa_enabled = true}};
    for (size_t i = 0; i < sizeof users / sizeof users[0]; i++) {
        json_t *v = dk_json_own(a, dk_user_json(&users[i]));
        const char *want = dk_json_render(a, v, NULL);
        dk_jw w = {0};
        dk_user_write(&w, &users[i]);
        size_t len = 0;
        const char *got = dk_jw_finish(&w, a, &len);
        assert_string_equal(got, want);
        assert_int_equal(len, strlen(want));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_render_compact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_scalars, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_reals_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_strings_utf8_and_escapes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_matches_jansson, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_matches_render, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_writer_matches_render, setup, teardown),
        cmocka_unit_test(test_own_decrefs_on_free),
        cmocka_unit_test(test_str_or_null),
        cmocka_unit_test(test_get_str),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
