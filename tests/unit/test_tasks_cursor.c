/* test_tasks_cursor.c — the tasks list cursor: round trips, and every way of altering,
 * truncating, re-keying or re-using it for other filters is refused. */
#include "testutil.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/arena.h"
#include "core/crypto.h"
#include "core/http.h"
#include "services/tasks/tasks_cursor.h"
#include "services/tasks/tasks_query.h"
#include "core/banned.h"

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void key_of(unsigned char key[32], unsigned char seed)
{
    for (int i = 0; i < 32; i++)
        key[i] = (unsigned char)(seed + i * 7);
}

static tasks_cursor sample(int sort, int64_t value)
{
    tasks_cursor c;
    memset(&c, 0, sizeof c);
    c.sort = sort;
    c.value = value;
    snprintf(c.id, sizeof c.id, "%s", "01936d5e-8f2a-7b3c-9d4e-5f6a7b8c9d0e");
    for (int i = 0; i < TASKS_FILTER_HASH_LEN; i++)
        c.filter_hash[i] = (unsigned char)(0xA0 + i);
    return c;
}

static void test_roundtrip(void **state)
{
    (void)state;
    unsigned char key[32];
    key_of(key, 1);
    const int64_t values[] = {
        0, 1, -1, 1700000000123, INT64_MAX, INT64_MIN, 9223372036854775807, -9223372036854775807,
        3};
    dk_arena *a = dk_arena_new();
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        for (int sort = 0; sort < 10; sort++) {
            tasks_cursor c = sample(sort, values[i]), back;
            char *text = tasks_cursor_encode(a, key, &c);
            assert_non_null(text);
            /* opaque and URL-safe: base64url without padding */
            for (const char *p = text; *p; p++)
                assert_non_null(strchr(b64chars, *p));
            assert_true(strlen(text) <= TASKS_CURSOR_TEXT_MAX);
            memset(&back, 0x55, sizeof back);
            assert_int_equal(tasks_cursor_decode(a, key, text, &back), DK_OK);
            assert_int_equal(back.sort, sort);
            assert_true(back.value == values[i]);
            assert_string_equal(back.id, c.id);
            assert_memory_equal(back.filter_hash, c.filter_hash, TASKS_FILTER_HASH_LEN);
        }
    }
    dk_arena_free(a);
}

static void test_encode_refuses_bad_input(void **state)
{
    (void)state;
    unsigned char key[32];
    key_of(key, 1);
    dk_arena *a = dk_arena_new();
    tasks_cursor c = sample(1, 5);
    snprintf(c.id, sizeof c.id, "%s", "not-a-uuid");
    assert_null(tasks_cursor_encode(a, key, &c));
    c = sample(1, 5);
    snprintf(c.id, sizeof c.id, "%s", "01936D5E-8F2A-7B3C-9D4E-5F6A7B8C9D0E"); /* not canonical */
    assert_null(tasks_cursor_encode(a, key, &c));
    c = sample(256, 5);
    assert_null(tasks_cursor_encode(a, key, &c));
    c = sample(-1, 5);
    assert_null(tasks_cursor_encode(a, key, &c));
    dk_arena_free(a);
}

/* Every single-character change anywhere in the text is refused. */
static void test_tamper_any_character(void **state)
{
    (void)state;
    unsigned char key[32];
    key_of(key, 9);
    dk_arena *a = dk_arena_new();
    tasks_cursor c = sample(3, 1700000000000), back;
    char *text = tasks_cursor_encode(a, key, &c);
    size_t n = strlen(text);
    char *t = dk_arena_strdup(a, text);
    int tried = 0;
    for (size_t i = 0; i < n; i++) {
        for (const char *r = b64chars; *r; r++) {
            if (*r == text[i])
                continue;
            t[i] = *r;
            assert_int_equal(tasks_cursor_decode(a, key, t, &back), DK_E_BAD_REQUEST);
            tried++;
        }
        t[i] = text[i];
    }
    assert_int_equal(tried, (int)n * 63);
    assert_int_equal(tasks_cursor_decode(a, key, t, &back), DK_OK);
    dk_arena_free(a);
}

static void test_malformed(void **state)
{
    (void)state;
    unsigned char key[32];
    key_of(key, 3);
    dk_arena *a = dk_arena_new();
    tasks_cursor c = sample(0, 42), back;
    char *text = tasks_cursor_encode(a, key, &c);
    size_t n = strlen(text);
    char buf[512];

    assert_int_equal(tasks_cursor_decode(a, key, NULL, &back), DK_E_BAD_REQUEST);
    assert_int_equal(tasks_cursor_decode(a, key, "", &back), DK_E_BAD_REQUEST);
    assert_int_equal(tasks_cursor_decode(a, key, "abc", &back), DK_E_BAD_REQUEST);
    assert_int_equal(tasks_cursor_decode(a, key, "' OR 1=1 --", &back), DK_E_BAD_REQUEST);
    /* truncated at every length */
    for (size_t i = 1; i < n; i++) {
        snprintf(buf, sizeof buf, "%.*s", (int)i, text);
        assert_int_equal(tasks_cursor_decode(a, key, buf, &back), DK_E_BAD_REQUEST);
    }
    /* extended, padded, with a standard-base64 alphabet or whitespace */
    snprintf(buf, sizeof buf, "%sA", text);
    assert_int_equal(tasks_cursor_decode(a, key, buf, &back), DK_E_BAD_REQUEST);
    snprintf(buf, sizeof buf, "%sAAAA", text);
    assert_int_equal(tasks_cursor_decode(a, key, buf, &back), DK_E_BAD_REQUEST);
    snprintf(buf, sizeof buf, "%s=", text);
    assert_int_equal(tasks_cursor_decode(a, key, buf, &back), DK_E_BAD_REQUEST);
    snprintf(buf, sizeof buf, " %s", text);
    assert_int_equal(tasks_cursor_decode(a, key, buf, &back), DK_E_BAD_REQUEST);
    snprintf(buf, sizeof buf, "%s", text);
    buf[5] = '+';
    assert_int_equal(tasks_cursor_decode(a, key, buf, &back), DK_E_BAD_REQUEST);
    /* far too long */
    memset(buf, 'A', sizeof buf - 1);
    buf[sizeof buf - 1] = '\0';
    assert_int_equal(tasks_cursor_decode(a, key, buf, &back), DK_E_BAD_REQUEST);
    dk_arena_free(a);
}

static void test_other_key_refused(void **state)
{
    (void)state;
    unsigned char k1[32], k2[32];
    key_of(k1, 1);
    key_of(k2, 1);
    k2[31] ^= 1;
    dk_arena *a = dk_arena_new();
    tasks_cursor c = sample(7, -5), back;
    char *text = tasks_cursor_encode(a, k1, &c);
    assert_int_equal(tasks_cursor_decode(a, k2, text, &back), DK_E_BAD_REQUEST);
    assert_int_equal(tasks_cursor_decode(a, k1, text, &back), DK_OK);
    dk_arena_free(a);
}

/* A record MACed correctly but of another version (or another context) is refused: the layout
 * is version(1) sort(1) hash(16) id(16) value(8) then HMAC over context + those 42 bytes. */
static void test_other_version_or_context_refused(void **state)
{
    (void)state;
    unsigned char key[32];
    key_of(key, 5);
    dk_arena *a = dk_arena_new();
    unsigned char body[42 + 32];
    memset(body, 0, sizeof body);
    body[0] = 1;
    body[1] = 1;
    const char ctx[] = "docket.tasks.list.cursor\n";
    unsigned char msg[sizeof ctx - 1 + 42];
    tasks_cursor back;

    /* version 1 with the right context decodes (the layout above is right) ... */
    memcpy(msg, ctx, sizeof ctx - 1);
    memcpy(msg + sizeof ctx - 1, body, 42);
    dk_hmac_sha256(key, 32, msg, sizeof msg, body + 42);
    assert_int_equal(tasks_cursor_decode(a, key, dk_base64url(a, body, sizeof body), &back), DK_OK);
    assert_string_equal(back.id, "00000000-0000-0000-0000-000000000000");
    /* ... version 2 does not */
    body[0] = 2;
    memcpy(msg + sizeof ctx - 1, body, 42);
    dk_hmac_sha256(key, 32, msg, sizeof msg, body + 42);
    assert_int_equal(tasks_cursor_decode(a, key, dk_base64url(a, body, sizeof body), &back),
                     DK_E_BAD_REQUEST);
    /* nor does a MAC without the context (another use of the same key) */
    body[0] = 1;
    dk_hmac_sha256(key, 32, body, 42, body + 42);
    assert_int_equal(tasks_cursor_decode(a, key, dk_base64url(a, body, sizeof body), &back),
                     DK_E_BAD_REQUEST);
    dk_arena_free(a);
}

/* ---------- the cursor in a list query: it must come back with the same filters ---------- */

typedef struct kv {
    const char *names[16];
    const char *values[16];
    int n;
} kv;

static const char *kv_get(void *ctx, const char *name)
{
    kv *p = ctx;
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->names[i], name) == 0)
            return p->values[i];
    return NULL;
}

static void kv_set(kv *p, const char *name, const char *value)
{
    for (int i = 0; i < p->n; i++) {
        if (strcmp(p->names[i], name) == 0) {
            p->values[i] = value;
            return;
        }
    }
    p->names[p->n] = name;
    p->values[p->n] = value;
    p->n++;
}

#define ME    "01936d5e-0000-7000-8000-000000000001"
#define OTHER "01936d5e-0000-7000-8000-000000000002"
#define ROWID "01936d5e-8f2a-7b3c-9d4e-5f6a7b8c9d0e"

static dk_status parse(dk_arena *a, kv *p, const char *caller, const unsigned char key[32],
                       tasks_list_query *q, dk_errors *errs)
{
    dk_errors_init(errs);
    return tasks_query_parse(a, kv_get, p, caller, key, q, errs);
}

static const char *error_field(dk_errors *e)
{
    assert_non_null(e->list);
    assert_int_equal(json_array_size(e->list), 1);
    return json_string_value(json_object_get(json_array_get(e->list, 0), "field"));
}

static void test_cursor_bound_to_filters(void **state)
{
    (void)state;
    unsigned char key[32];
    key_of(key, 11);
    dk_arena *a = dk_arena_new();
    kv p = {.n = 0};
    kv_set(&p, "status", "todo");
    kv_set(&p, "label", "home");
    kv_set(&p, "sort", "-due_at");
    tasks_list_query q, q2;
    dk_errors errs;
    assert_int_equal(parse(a, &p, ME, key, &q, &errs), DK_OK);
    char *cur = tasks_query_next_cursor(a, key, &q, 1700000000000, ROWID);
    assert_non_null(cur);

    /* the same filters (and another page size) continue */
    kv_set(&p, "cursor", cur);
    kv_set(&p, "limit", "5");
    assert_int_equal(parse(a, &p, ME, key, &q2, &errs), DK_OK);
    assert_true(q2.has_cursor);
    assert_true(q2.cursor.value == 1700000000000);
    assert_string_equal(q2.cursor.id, ROWID);

    /* any filter changed, added or removed → 400 naming the cursor */
    const char *changes[][2] = {{"status", "done"},
                                {"label", "work"},
                                {"priority", "high"},
                                {"owner", "me"},
                                {"assignee", OTHER},
                                {"due_before", "2030-01-01T00:00:00Z"},
                                {"due_after", "2020-01-01T00:00:00Z"},
                                {"q", "milk"}};
    for (size_t i = 0; i < sizeof changes / sizeof changes[0]; i++) {
        kv p2 = p;
        kv_set(&p2, changes[i][0], changes[i][1]);
        assert_int_equal(parse(a, &p2, ME, key, &q2, &errs), DK_E_BAD_REQUEST);
        assert_string_equal(error_field(&errs), "cursor");
        dk_errors_release(&errs);
    }
    /* another sort → 400 */
    kv p3 = p;
    kv_set(&p3, "sort", "due_at");
    assert_int_equal(parse(a, &p3, ME, key, &q2, &errs), DK_E_BAD_REQUEST);
    assert_string_equal(error_field(&errs), "cursor");
    dk_errors_release(&errs);
    /* another caller → 400 */
    assert_int_equal(parse(a, &p, OTHER, key, &q2, &errs), DK_E_BAD_REQUEST);
    assert_string_equal(error_field(&errs), "cursor");
    dk_errors_release(&errs);
    /* `me` and the caller's own id are the same filter */
    kv a1 = {.n = 0}, a2 = {.n = 0};
    kv_set(&a1, "owner", "me");
    kv_set(&a2, "owner", ME);
    assert_int_equal(parse(a, &a1, ME, key, &q, &errs), DK_OK);
    kv_set(&a2, "cursor", tasks_query_next_cursor(a, key, &q, 1, ROWID));
    assert_int_equal(parse(a, &a2, ME, key, &q2, &errs), DK_OK);
    /* a cursor from another server key → 400 */
    unsigned char other[32];
    key_of(other, 12);
    assert_int_equal(parse(a, &p, ME, other, &q2, &errs), DK_E_BAD_REQUEST);
    assert_string_equal(error_field(&errs), "cursor");
    dk_errors_release(&errs);
    dk_arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_encode_refuses_bad_input),
        cmocka_unit_test(test_tamper_any_character),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_other_key_refused),
        cmocka_unit_test(test_other_version_or_context_refused),
        cmocka_unit_test(test_cursor_bound_to_filters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
