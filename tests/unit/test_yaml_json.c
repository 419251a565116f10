/* test_yaml_json.c — YAML to JSON: core-schema typing of plain scalars, quoted scalars stay
 * strings, nesting, errors (syntax, non-scalar keys, alias bombs, depth) and the compiled-in
 * OpenAPI document converting whole. */
#include "testutil.h"

#include <stdio.h>
#include <string.h>

#include "core/yaml_json.h"
#include "core/banned.h"

extern const unsigned char dk_openapi_yaml[];
extern const size_t dk_openapi_yaml_len;

static json_t *conv(const char *y)
{
    char err[256] = "";
    json_t *v = dk_yaml_to_json(y, strlen(y), err, sizeof err);
    if (!v)
        fail_msg("%s: %s", y, err);
    return v;
}

static void expect(const char *yaml, const char *json)
{
    json_t *v = conv(yaml);
    char *got = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    if (strcmp(got, json) != 0)
        fail_msg("%s -> %s, want %s", yaml, got, json);
    free(got);
    json_decref(v);
}

static void test_scalars_are_typed_by_the_core_schema(void **state)
{
    expect("a: 1", "{\"a\":1}");
    expect("a: -17", "{\"a\":-17}");
    expect("a: 0x1f", "{\"a\":31}");
    expect("a: 0o17", "{\"a\":15}");
    expect("a: 1.5", "{\"a\":1.5}");
    expect("a: 2e3", "{\"a\":2000.0}");
    expect("a: .5", "{\"a\":0.5}");
    expect("a: true\nb: False\nc: null\nd: ~\ne:", "{\"a\":true,\"b\":false,\"c\":null,\"d\":null,"
                                                   "\"e\":null}");
    /* not numbers: versions, times, words, yes/no (YAML 1.1 only) */
    expect("a: 3.1.0\nb: 07:30\nc: yes\nd: 1_000\ne: .inf\nf: 0x",
           "{\"a\":\"3.1.0\",\"b\":\"07:30\",\"c\":\"yes\",\"d\":\"1_000\",\"e\":\".inf\","
           "\"f\":\"0x\"}");
    /* quoted and block scalars stay strings */
    expect("a: '1'\nb: \"true\"\nc: |\n  x\n  y\n",
           "{\"a\":\"1\",\"b\":\"true\",\"c\":\"x\\ny\\n\"}");
    /* keys are strings, order is kept */
    expect("200: ok\n'404': missing\nz: 1\na: 2",
           "{\"200\":\"ok\",\"404\":\"missing\",\"z\":1,\"a\":2}");
}

static void test_nesting_and_aliases(void **state)
{
    expect("a:\n  - 1\n  - [x, {b: c}]\n", "{\"a\":[1,[\"x\",{\"b\":\"c\"}]]}");
    expect("base: &b {x: 1}\nuse: *b\n", "{\"base\":{\"x\":1},\"use\":{\"x\":1}}");
    expect("- a\n- b\n", "[\"a\",\"b\"]");
}

static void test_errors(void **state)
{
    static const char *const bad[] = {
        "a: [1, 2",            /* unclosed */
        "a: b: c",             /* mapping values not allowed */
        "? [1, 2]\n: x\n",     /* a key that is not a scalar */
        "",                    /* nothing */
        "a: \"\\x00b\"\nb: 1", /* a NUL in a key's value is fine, but ... */
    };
    for (size_t i = 0; i < 4; i++) {
        char err[256] = "";
        json_t *v = dk_yaml_to_json(bad[i], strlen(bad[i]), err, sizeof err);
        if (v)
            fail_msg("accepted %s", bad[i]);
        assert_true(err[0] != '\0');
    }
    /* a NUL inside a quoted value is kept (JSON can hold it) */
    char err[256] = "";
    json_t *v = dk_yaml_to_json(bad[4], strlen(bad[4]), err, sizeof err);
    assert_non_null(v);
    assert_int_equal(json_string_length(json_object_get(v, "a")), 2);
    json_decref(v);
    /* a NUL inside a key cannot be a JSON object key */
    const char *nulkey = "\"a\\x00b\": 1";
    assert_null(dk_yaml_to_json(nulkey, strlen(nulkey), err, sizeof err));
}

static void test_alias_bomb_and_depth_are_refused(void **state)
{
    char bomb[4096];
    size_t n = (size_t)snprintf(bomb, sizeof bomb, "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for (int i = 1; i < 9; i++)
        n += (size_t)snprintf(bomb + n, sizeof bomb - n,
                              "a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, "
                              "*a%d]\n",
                              i, i, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1,
                              i - 1);
    char err[256] = "";
    assert_null(dk_yaml_to_json(bomb, n, err, sizeof err));
    assert_non_null(strstr(err, "too"));
    char deep[512];
    memset(deep, '[', 200);
    deep[200] = '\0';
    assert_null(dk_yaml_to_json(deep, strlen(deep), err, sizeof err));
}

static void test_the_openapi_document_converts(void **state)
{
    char err[256] = "";
    json_t *doc =
        dk_yaml_to_json((const char *)dk_openapi_yaml, dk_openapi_yaml_len, err, sizeof err);
    if (!doc)
        fail_msg("%s", err);
    assert_string_equal(json_string_value(json_object_get(doc, "openapi")), "3.1.0");
    assert_true(json_is_object(json_object_get(json_object_get(doc, "paths"), "/openapi.json")));
    json_decref(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars_are_typed_by_the_core_schema),
        cmocka_unit_test(test_nesting_and_aliases),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_alias_bomb_and_depth_are_refused),
        cmocka_unit_test(test_the_openapi_document_converts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
