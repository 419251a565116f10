/* config_values.c — the values of the configuration table: parsing (integers, durations,
 * sizes, booleans, choices), validation against a row's bounds, and the messages that say what
 * was expected and where the bad value came from. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/config_internal.h"
#include "core/banned.h"

/* Writes s into buf as a double-quoted, escaped string of at most ~64 source bytes. */
void config_quote(const char *s, char *buf, size_t n)
{
    size_t o = 0, i = 0;
    const size_t limit = 64;
#define CFG_PUT(ch)                                                                                \
    do {                                                                                           \
        if (o + 1 < n)                                                                             \
            buf[o++] = (ch);                                                                       \
    } while (0)
    CFG_PUT('"');
    for (; s[i] && i < limit; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            CFG_PUT('\\');
            CFG_PUT((char)ch);
        } else if (ch < 0x20 || ch == 0x7f) {
            static const char hex[] = "0123456789abcdef";
            CFG_PUT('\\');
            CFG_PUT('x');
            CFG_PUT(hex[ch >> 4]);
            CFG_PUT(hex[ch & 15]);
        } else {
            CFG_PUT((char)ch);
        }
    }
    if (s[i]) {
        CFG_PUT('.');
        CFG_PUT('.');
        CFG_PUT('.');
    }
    CFG_PUT('"');
#undef CFG_PUT
    if (n)
        buf[o < n ? o : n - 1] = '\0';
}

/* ---- value parsers ----------------------------------------------------------------------- */

static bool config_digits(const char **p, int64_t *ret)
{
    const char *s = *p;
    if (!isdigit((unsigned char)*s))
        return false;
    int64_t v = 0;
    for (; isdigit((unsigned char)*s); s++) {
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *s - '0', &v))
            return false;
    }
    *p = s;
    *ret = v;
    return true;
}

static bool config_parse_int(const char *s, int64_t *ret)
{
    bool neg = false;
    if (*s == '+' || *s == '-')
        neg = *s++ == '-';
    int64_t v;
    if (!config_digits(&s, &v) || *s)
        return false;
    *ret = neg ? -v : v;
    return true;
}

bool dk_config_parse_duration(const char *s, int64_t *ret_ms)
{
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    int64_t total = 0, n;
    const char *p = s;
    if (!*p)
        return false;
    if (config_digits(&p, &n) && !*p) { /* a bare number: seconds */
        if (__builtin_mul_overflow(n, 1000, &total))
            return false;
        *ret_ms = total;
        return true;
    }
    for (p = s; *p;) {
        if (!config_digits(&p, &n))
            return false;
        const char *u = p;
        while (isalpha((unsigned char)*p))
            p++;
        size_t ulen = (size_t)(p - u);
        int64_t mult = 0;
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
            if (strlen(units[i].unit) == ulen && strncasecmp(u, units[i].unit, ulen) == 0)
                mult = units[i].ms;
        if (!mult || __builtin_mul_overflow(n, mult, &n) ||
            __builtin_add_overflow(total, n, &total))
            return false;
    }
    *ret_ms = total;
    return true;
}

bool dk_config_parse_size(const char *s, int64_t *ret_bytes)
{
    static const struct {
        const char *unit;
        int64_t bytes;
    } units[] = {{"", 1},
                 {"b", 1},
                 {"kb", INT64_C(1000)},
                 {"mb", INT64_C(1000000)},
                 {"gb", INT64_C(1000000000)},
                 {"tb", INT64_C(1000000000000)},
                 {"kib", INT64_C(1) << 10},
                 {"mib", INT64_C(1) << 20},
                 {"gib", INT64_C(1) << 30},
                 {"tib", INT64_C(1) << 40}};
    const char *p = s;
    int64_t n;
    if (!config_digits(&p, &n))
        return false;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcasecmp(p, units[i].unit) == 0) {
            if (__builtin_mul_overflow(n, units[i].bytes, &n))
                return false;
            *ret_bytes = n;
            return true;
        }
    }
    return false;
}

static bool config_parse_bool(const char *s, int64_t *ret)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *ret = 1;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *ret = 0;
            return true;
        }
    }
    return false;
}

/* Human form of a duration in ms: the largest unit that divides it. */
static void config_fmt_duration(int64_t ms, char *buf, size_t n)
{
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}};
    if (ms == 0) {
        snprintf(buf, n, "0s");
        return;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (ms % units[i].ms == 0) {
            snprintf(buf, n, "%" PRId64 "%s", ms / units[i].ms, units[i].unit);
            return;
        }
    }
    snprintf(buf, n, "%" PRId64 "ms", ms);
}

static void config_fmt_size(int64_t bytes, char *buf, size_t n)
{
    static const struct {
        const char *unit;
        int64_t bytes;
    } units[] = {{"TiB", INT64_C(1) << 40},
                 {"GiB", INT64_C(1) << 30},
                 {"MiB", INT64_C(1) << 20},
                 {"KiB", INT64_C(1) << 10}};
    for (size_t i = 0; bytes != 0 && i < sizeof units / sizeof units[0]; i++) {
        if (bytes % units[i].bytes == 0) {
            snprintf(buf, n, "%" PRId64 "%s", bytes / units[i].bytes, units[i].unit);
            return;
        }
    }
    snprintf(buf, n, "%" PRId64, bytes);
}

/* The bounds of a row in its own notation, e.g. "1s..1d"; "" for types without bounds. */
void config_fmt_bounds(const dk_config_row *r, char *buf, size_t n)
{
    char lo[32], hi[32];
    switch (r->type) {
    case DK_CFG_INT:
        snprintf(buf, n, "%" PRId64 "..%" PRId64, r->min, r->max);
        return;
    case DK_CFG_DURATION:
        config_fmt_duration(r->min, lo, sizeof lo);
        config_fmt_duration(r->max, hi, sizeof hi);
        break;
    case DK_CFG_SIZE:
        config_fmt_size(r->min, lo, sizeof lo);
        config_fmt_size(r->max, hi, sizeof hi);
        break;
    default:
        if (n)
            buf[0] = '\0';
        return;
    }
    snprintf(buf, n, "%s..%s", lo, hi);
}

/* "debug|info|warn|error" for a row with choices. */
void config_fmt_choices(const dk_config_row *r, const char *sep, char *buf, size_t n)
{
    size_t o = 0;
    buf[0] = '\0';
    for (const char *const *c = r->choices; c && *c && o < n; c++) {
        int w = snprintf(buf + o, n - o, "%s%s", c == r->choices ? "" : sep, *c);
        if (w < 0)
            break;
        o += (size_t)w;
    }
}

/* What a valid value of the row looks like, for error messages. */
static void config_fmt_expectation(const dk_config_row *r, char *buf, size_t n)
{
    char lo[32], hi[32], list[256];
    switch (r->type) {
    case DK_CFG_INT:
        snprintf(buf, n, "must be an integer between %" PRId64 " and %" PRId64, r->min, r->max);
        break;
    case DK_CFG_DURATION:
        config_fmt_duration(r->min, lo, sizeof lo);
        config_fmt_duration(r->max, hi, sizeof hi);
        snprintf(buf, n,
                 "must be a duration between %s and %s (e.g. 500ms, 30s, 15m, 2h, 7d; a bare "
                 "number means seconds)",
                 lo, hi);
        break;
    case DK_CFG_SIZE:
        config_fmt_size(r->min, lo, sizeof lo);
        config_fmt_size(r->max, hi, sizeof hi);
        snprintf(buf, n,
                 "must be a size between %s and %s (e.g. 512KiB, 1MiB, 2MB; a bare number means "
                 "bytes)",
                 lo, hi);
        break;
    case DK_CFG_BOOL:
        snprintf(buf, n, "must be true or false (or yes/no, on/off, 1/0)");
        break;
    case DK_CFG_STRING:
        config_fmt_choices(r, ", ", list, sizeof list);
        snprintf(buf, n, "must be one of %s", list);
        break;
    }
}

/* Copies s without leading and trailing white space. */
static char *config_trimmed(const char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t len = strlen(s);
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    return dk_strndup(s, len);
}

/* Parses value for row r: on success *ret_text (allocated) and *ret_num are written. */
static bool config_parse_value(const dk_config_row *r, const char *value, char **ret_text,
                               int64_t *ret_num)
{
    if (r->type == DK_CFG_STRING) {
        if (!r->choices) {
            *ret_text = dk_strdup(value);
            *ret_num = 0;
            return true;
        }
        for (const char *const *c = r->choices; *c; c++) {
            if (strcasecmp(*c, value) == 0) {
                *ret_text = dk_strdup(*c);
                *ret_num = 0;
                return true;
            }
        }
        return false;
    }
    DK_AUTOFREE char *t = config_trimmed(value);
    int64_t num = 0;
    bool ok = false;
    switch (r->type) {
    case DK_CFG_INT:
        ok = config_parse_int(t, &num);
        break;
    case DK_CFG_DURATION:
        ok = dk_config_parse_duration(t, &num);
        break;
    case DK_CFG_SIZE:
        ok = dk_config_parse_size(t, &num);
        break;
    case DK_CFG_BOOL:
        ok = config_parse_bool(t, &num);
        if (ok) {
            dk_free(t);
            t = dk_strdup(num ? "true" : "false");
        }
        break;
    case DK_CFG_STRING:
        break;
    }
    if (!ok || (r->type != DK_CFG_BOOL && (num < r->min || num > r->max)))
        return false;
    *ret_text = DK_TAKE_PTR(t);
    *ret_num = num;
    return true;
}

static void config_fmt_origin(const config_origin *o, char *buf, size_t n)
{
    switch (o->src) {
    case CFG_SRC_DEFAULT:
        snprintf(buf, n, "built-in default");
        break;
    case CFG_SRC_FILE:
        snprintf(buf, n, "file %s line %zu", o->name, o->line);
        break;
    case CFG_SRC_ENV:
        snprintf(buf, n, "env %s", o->name);
        break;
    case CFG_SRC_FLAG:
        snprintf(buf, n, "flag %s", o->name);
        break;
    }
}

/* Writes the one-line message for a value of row r that does not parse (secrets redacted). */
static void config_fmt_bad_value(const dk_config_row *r, const char *value, const char *from,
                                 char *err, size_t errlen)
{
    char shown[300], want[512];
    if (r->flags & DK_CFG_SECRET)
        snprintf(shown, sizeof shown, "<redacted>");
    else
        config_quote(value, shown, sizeof shown);
    config_fmt_expectation(r, want, sizeof want);
    config_err(err, errlen, "config: %s = %s (from %s): %s", r->key, shown, from, want);
}

dk_status dk_config_check(const dk_config_row *r, const char *value, const char *from, char *err,
                          size_t errlen)
{
    char *text = NULL;
    int64_t num;
    if (!config_parse_value(r, value, &text, &num)) {
        config_fmt_bad_value(r, value, from, err, errlen);
        return DK_E_BAD_REQUEST;
    }
    dk_free(text);
    return DK_OK;
}

/* Sets row i from value, or explains in err why it cannot. */
dk_status config_assign(dk_config *c, size_t i, const char *value, const config_origin *o,
                        char *err, size_t errlen)
{
    const dk_config_row *r = &dk_config_rows[i];
    char *text = NULL;
    int64_t num = 0;
    if (!config_parse_value(r, value, &text, &num)) {
        char from[512];
        config_fmt_origin(o, from, sizeof from);
        config_fmt_bad_value(r, value, from, err, errlen);
        return DK_E_BAD_REQUEST;
    }
    config_value *v = &c->values[i];
    dk_free(v->text);
    dk_free(v->env_source);
    v->text = text;
    v->num = num;
    v->src = o->src;
    v->env_source = o->src == CFG_SRC_ENV ? config_strdup_printf("env %s", o->name) : NULL;
    return DK_OK;
}
