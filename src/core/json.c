#include "core/json.h"

#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/str.h"
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

/* ---------- rendering ----------
 * Compact text, byte for byte what json_dumpb(JSON_COMPACT | JSON_ENCODE_ANY |
 * JSON_REAL_PRECISION(17)) writes (test_json compares them), in one pass. jansson's own dump
 * checks every object and array for reference loops (an snprintf of its address and a hash
 * table insert and delete each), a large share of a task list's CPU
 * (docs/design/measurements.md); the values built here are trees by construction. */

typedef dk_jw dk_jbuf;

static void dk_jb_reserve(dk_jbuf *b, size_t n)
{
    dk_sb_reserve(&b->sb, n);
}

static void dk_jb_put(dk_jbuf *b, const char *s, size_t n)
{
    dk_sb_put(&b->sb, s, n);
}

static void dk_jb_string(dk_jbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    dk_jb_reserve(b, n + 2);
    b->sb.s[b->sb.len++] = '"';
    size_t run = 0; /* bytes copied as they are, pending */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        dk_jb_put(b, s + run, i - run);
        run = i + 1;
        char esc[6] = {'\\', 0};
        size_t en = 2;
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            en = 6;
        }
        dk_jb_put(b, esc, en);
    }
    dk_jb_put(b, s + run, n - run);
    dk_jb_put(b, "\"", 1);
}

static void dk_jb_integer(dk_jbuf *b, json_int_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        tmp[--i] = '-';
    dk_jb_put(b, tmp + i, sizeof tmp - i);
}

/* jansson's real format: %.17g with '.' as the point, ".0" when it would read as an integer,
 * and the exponent without '+' or leading zeros. */
static void dk_jb_real(dk_jbuf *b, double v)
{
    char tmp[64];
    int n = snprintf(tmp, sizeof tmp, "%.17g", v);
    if (n <= 0 || (size_t)n >= sizeof tmp - 3)
        return;
    size_t len = (size_t)n;
    for (size_t i = 0; i < len; i++)
        if (tmp[i] == ',')
            tmp[i] = '.'; /* a locale's decimal comma */
    if (!memchr(tmp, '.', len) && !memchr(tmp, 'e', len)) {
        memcpy(tmp + len, ".0", 3);
        len += 2;
    }
    char *e = memchr(tmp, 'e', len);
    if (e) {
        char *start = e + 1, *end = e + 2;
        if (*start == '-')
            start++;
        while (*end == '0')
            end++;
        if (end != start) {
            memmove(start, end, len - (size_t)(end - tmp));
            len -= (size_t)(end - start);
        }
    }
    dk_jb_put(b, tmp, len);
}

static void dk_jb_value(dk_jbuf *b, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        dk_jb_put(b, "{", 1);
        const char *key;
        size_t klen;
        json_t *m;
        bool first = true;
        json_object_keylen_foreach((json_t *)v, key, klen, m)
        {
            if (!first)
                dk_jb_put(b, ",", 1);
            first = false;
            dk_jb_string(b, key, klen);
            dk_jb_put(b, ":", 1);
            dk_jb_value(b, m);
        }
        dk_jb_put(b, "}", 1);
        break;
    }
    case JSON_ARRAY: {
        dk_jb_put(b, "[", 1);
        size_t n = json_array_size(v);
        for (size_t i = 0; i < n; i++) {
            if (i)
                dk_jb_put(b, ",", 1);
            dk_jb_value(b, json_array_get(v, i));
        }
        dk_jb_put(b, "]", 1);
        break;
    }
    case JSON_STRING:
        dk_jb_string(b, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        dk_jb_integer(b, json_integer_value(v));
        break;
    case JSON_REAL:
        dk_jb_real(b, json_real_value(v));
        break;
    case JSON_TRUE:
        dk_jb_put(b, "true", 4);
        break;
    case JSON_FALSE:
        dk_jb_put(b, "false", 5);
        break;
    case JSON_NULL:
        dk_jb_put(b, "null", 4);
        break;
    }
}

/* ---------- the writer ---------- */

static void dk_jw_sep(dk_jw *w)
{
    if (w->comma)
        dk_jb_put(w, ",", 1);
    w->comma = false;
}

void dk_jw_object(dk_jw *w)
{
    dk_jw_sep(w);
    dk_jb_put(w, "{", 1);
}

void dk_jw_object_end(dk_jw *w)
{
    dk_jb_put(w, "}", 1);
    w->comma = true;
}

void dk_jw_array(dk_jw *w)
{
    dk_jw_sep(w);
    dk_jb_put(w, "[", 1);
}

void dk_jw_array_end(dk_jw *w)
{
    dk_jb_put(w, "]", 1);
    w->comma = true;
}

void dk_jw_key(dk_jw *w, const char *key)
{
    dk_jw_sep(w);
    dk_jb_string(w, key, strlen(key));
    dk_jb_put(w, ":", 1);
}

void dk_jw_stringn(dk_jw *w, const char *s, size_t n)
{
    dk_jw_sep(w);
    dk_jb_string(w, s, n);
    w->comma = true;
}

void dk_jw_string(dk_jw *w, const char *s)
{
    if (!s) {
        dk_jw_null(w);
        return;
    }
    dk_jw_stringn(w, s, strlen(s));
}

void dk_jw_int(dk_jw *w, long long v)
{
    dk_jw_sep(w);
    dk_jb_integer(w, (json_int_t)v);
    w->comma = true;
}

void dk_jw_bool(dk_jw *w, bool v)
{
    dk_jw_sep(w);
    if (v)
        dk_jb_put(w, "true", 4);
    else
        dk_jb_put(w, "false", 5);
    w->comma = true;
}

void dk_jw_null(dk_jw *w)
{
    dk_jw_sep(w);
    dk_jb_put(w, "null", 4);
    w->comma = true;
}

char *dk_jw_finish(dk_jw *w, dk_arena *a, size_t *ret_len)
{
    dk_jb_put(w, "", 1); /* the terminator, not counted */
    dk_arena_defer(a, dk_free, w->sb.s);
    char *out = w->sb.s;
    if (ret_len)
        *ret_len = w->sb.len - 1;
    *w = (dk_jw){0};
    return out;
}

char *dk_json_render(dk_arena *a, const json_t *v, size_t *ret_len)
{
    dk_jbuf b = {0};
    if (v)
        dk_jb_value(&b, v);
    return dk_jw_finish(&b, a, ret_len);
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
