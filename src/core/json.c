#include "core/json.h"

#include "core/arena.h"
#include "core/banned.h"

static void dk_json_decref_cb(void *p)
{
    json_decref((json_t *)p);
}

json_t *dk_json_own(dk_arena *a, json_t *v)
{
    if (v)
        dk_arena_defer(a, dk_json_decref_cb, v);
    return v;
}

char *dk_json_render(dk_arena *a, const json_t *v, size_t *ret_len)
{
    const size_t flags = JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17);
    size_t n = json_dumpb(v, NULL, 0, flags);
    char *buf = dk_arena_alloc(a, n + 1);
    if (n > 0)
        (void)json_dumpb(v, buf, n, flags);
    buf[n] = '\0';
    if (ret_len)
        *ret_len = n;
    return buf;
}

json_t *dk_json_str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

const char *dk_json_get_str(const json_t *obj, const char *key, bool *ret_present,
                            bool *ret_wrong_type)
{
    json_t *v = json_object_get(obj, key);
    if (ret_present)
        *ret_present = v != NULL;
    if (ret_wrong_type)
        *ret_wrong_type = v && !json_is_string(v) && !json_is_null(v);
    return json_is_string(v) ? json_string_value(v) : NULL;
}
