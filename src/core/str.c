#include "core/str.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/banned.h"

bool dk_parse_i64n(const char *s, size_t n, int64_t min, int64_t max, int64_t *ret)
{
    if (!s || n == 0 || n > 20)
        return false;
    char buf[24];
    memcpy(buf, s, n);
    buf[n] = '\0';
    return dk_parse_i64(buf, min, max, ret);
}

bool dk_parse_i64(const char *s, int64_t min, int64_t max, int64_t *ret)
{
    if (!s || !*s)
        return false;
    const char *p = s;
    if (*p == '-')
        p++;
    if (!*p)
        return false;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9')
            return false;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno || !end || *end)
        return false;
    if (v < min || v > max)
        return false;
    *ret = (int64_t)v;
    return true;
}

/* The length of the valid UTF-8 sequence at p[0..n), or 0 when it is not one. */
static size_t dk_utf8_seq(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0) {
        len = 2;
        cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3;
        cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t k = 1; k < len; k++) {
        if ((p[k] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[k] & 0x3F);
    }
    /* overlong forms, surrogates and out-of-range code points are invalid */
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

long dk_utf8_len(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    long count = 0;
    while (i < n) {
        size_t len = dk_utf8_seq(p + i, n - i);
        if (len == 0)
            return -1;
        i += len;
        count++;
    }
    return count;
}

size_t dk_utf8_scrub(char *dst, size_t cap, const char *src, size_t n)
{
    static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */
    const unsigned char *p = (const unsigned char *)src;
    size_t i = 0, o = 0;
    if (cap == 0)
        return 0;
    while (i < n) {
        size_t len = dk_utf8_seq(p + i, n - i);
        const char *piece = src + i;
        size_t plen = len;
        if (len == 0 || p[i] < 0x20 || p[i] == 0x7f) {
            piece = replacement;
            plen = 3;
            len = 1;
        }
        if (o + plen > cap - 1)
            break;
        memcpy(dst + o, piece, plen);
        o += plen;
        i += len;
    }
    dst[o] = '\0';
    return o;
}

bool dk_str_ieq(const char *a, const char *b)
{
    if (!a || !b)
        return false;
    while (*a && *b) {
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
            return false;
        a++;
        b++;
    }
    return *a == *b;
}

size_t dk_strlcpy(char *dst, const char *src, size_t cap)
{
    if (cap == 0)
        return 0;
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
    return n;
}

void dk_str_lower(char *s)
{
    for (; s && *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

char *dk_percent_encode(dk_arena *a, const char *s, const char *keep)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = dk_arena_alloc(a, n * 3 + 1);
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '.' || *p == '_' || *p == '~' || strchr(keep, *p)) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
    return out;
}

void dk_sb_grow(dk_sb *b, size_t n)
{
    size_t cap = b->cap ? b->cap * 2 : 1024;
    while (cap < b->len + n)
        cap *= 2;
    b->s = dk_realloc(b->s, cap);
    b->cap = cap;
}

void dk_sb_printf(dk_sb *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    dk_sb_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

char *dk_sb_take(dk_sb *b, dk_arena *a)
{
    char *out = dk_arena_strndup(a, b->s ? b->s : "", b->len);
    dk_free(b->s);
    b->s = NULL;
    b->len = b->cap = 0;
    return out;
}

int dk_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}
