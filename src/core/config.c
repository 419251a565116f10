/* config.c — loading, parsing and printing the configuration table (rows in config_table.c). */
#include "core/config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <yaml.h>

#include "core/alloc.h"
#include "core/banned.h"

#define CFG_MAX_KEY   128 /* longest dotted key a YAML file or flag may name */
#define CFG_MAX_DEPTH 8   /* deepest YAML mapping nesting */
#define CFG_NOT_FOUND SIZE_MAX

enum cfg_src { CFG_SRC_DEFAULT, CFG_SRC_FILE, CFG_SRC_ENV, CFG_SRC_FLAG };

typedef struct {
    char *text;       /* as given (trimmed for non-strings; canonical for booleans, choices) */
    int64_t num;      /* INT, DURATION (ms), SIZE (bytes); BOOL 0 or 1 */
    enum cfg_src src; /* the layer that set it */
    char *env_source; /* "env NAME" when src == CFG_SRC_ENV */
} cfg_value;

struct dk_config {
    cfg_value *values; /* one per row of dk_config_rows */
};

/* Where a value came from, for error messages. */
typedef struct {
    enum cfg_src src;
    const char *name; /* file path, environment variable, or flag as written */
    size_t line;      /* file only, 1-based */
} cfg_origin;

/* ---- small helpers ---------------------------------------------------------------------- */

static void cfg_err(char *err, size_t errlen, const char *fmt, ...) DK_PRINTF(3, 4);
static void cfg_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static char *cfg_strdup_printf(const char *fmt, ...) DK_PRINTF(1, 2);
static char *cfg_strdup_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    char *s = dk_malloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* Writes s into buf as a double-quoted, escaped string of at most ~64 source bytes. */
static void cfg_quote(const char *s, char *buf, size_t n)
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

/* Prints s double-quoted with escapes, whole. */
static void cfg_fput_quoted(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(out, "\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f)
            fprintf(out, "\\x%02x", ch);
        else
            fputc(ch, out);
    }
    fputc('"', out);
}

static size_t cfg_index(const char *key)
{
    for (size_t i = 0; i < dk_config_nrows; i++)
        if (strcmp(dk_config_rows[i].key, key) == 0)
            return i;
    return CFG_NOT_FOUND;
}

/* Finds the row a flag names: name[0..len), where '-' stands for '_'. */
static size_t cfg_index_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < dk_config_nrows; i++) {
        const char *key = dk_config_rows[i].key;
        if (strlen(key) != len)
            continue;
        size_t j = 0;
        while (j < len && (name[j] == key[j] || (name[j] == '-' && key[j] == '_')))
            j++;
        if (j == len)
            return i;
    }
    return CFG_NOT_FOUND;
}

static size_t cfg_must_index(const char *key, const char *fn)
{
    size_t i = key ? cfg_index(key) : CFG_NOT_FOUND;
    if (i == CFG_NOT_FOUND) {
        fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"%s: unknown configuration key %s\"}\n", fn,
                key ? key : "(null)");
        abort();
    }
    return i;
}

const dk_config_row *dk_config_row_find(const char *key)
{
    size_t i = key ? cfg_index(key) : CFG_NOT_FOUND;
    return i == CFG_NOT_FOUND ? NULL : &dk_config_rows[i];
}

bool dk_config_is_secret(const char *key)
{
    const dk_config_row *r = dk_config_row_find(key);
    return r && (r->flags & DK_CFG_SECRET);
}

bool dk_config_env_name(const char *key, char *buf, size_t n)
{
    static const char prefix[] = "DOCKET_";
    size_t len = strlen(key);
    if (n < sizeof prefix + len)
        return false;
    memcpy(buf, prefix, sizeof prefix - 1);
    char *o = buf + sizeof prefix - 1;
    for (size_t i = 0; i < len; i++) {
        char ch = key[i];
        *o++ = (ch == '.' || ch == '-') ? '_' : (char)toupper((unsigned char)ch);
    }
    *o = '\0';
    return true;
}

/* ---- value parsers ----------------------------------------------------------------------- */

static bool cfg_digits(const char **p, int64_t *ret)
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

static bool cfg_parse_int(const char *s, int64_t *ret)
{
    bool neg = false;
    if (*s == '+' || *s == '-')
        neg = *s++ == '-';
    int64_t v;
    if (!cfg_digits(&s, &v) || *s)
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
    if (cfg_digits(&p, &n) && !*p) { /* a bare number: seconds */
        if (__builtin_mul_overflow(n, 1000, &total))
            return false;
        *ret_ms = total;
        return true;
    }
    for (p = s; *p;) {
        if (!cfg_digits(&p, &n))
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
    if (!cfg_digits(&p, &n))
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

static bool cfg_parse_bool(const char *s, int64_t *ret)
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
static void cfg_fmt_duration(int64_t ms, char *buf, size_t n)
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

static void cfg_fmt_size(int64_t bytes, char *buf, size_t n)
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
static void cfg_fmt_bounds(const dk_config_row *r, char *buf, size_t n)
{
    char lo[32], hi[32];
    switch (r->type) {
    case DK_CFG_INT:
        snprintf(buf, n, "%" PRId64 "..%" PRId64, r->min, r->max);
        return;
    case DK_CFG_DURATION:
        cfg_fmt_duration(r->min, lo, sizeof lo);
        cfg_fmt_duration(r->max, hi, sizeof hi);
        break;
    case DK_CFG_SIZE:
        cfg_fmt_size(r->min, lo, sizeof lo);
        cfg_fmt_size(r->max, hi, sizeof hi);
        break;
    default:
        if (n)
            buf[0] = '\0';
        return;
    }
    snprintf(buf, n, "%s..%s", lo, hi);
}

/* "debug|info|warn|error" for a row with choices. */
static void cfg_fmt_choices(const dk_config_row *r, const char *sep, char *buf, size_t n)
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
static void cfg_fmt_expectation(const dk_config_row *r, char *buf, size_t n)
{
    char lo[32], hi[32], list[256];
    switch (r->type) {
    case DK_CFG_INT:
        snprintf(buf, n, "must be an integer between %" PRId64 " and %" PRId64, r->min, r->max);
        break;
    case DK_CFG_DURATION:
        cfg_fmt_duration(r->min, lo, sizeof lo);
        cfg_fmt_duration(r->max, hi, sizeof hi);
        snprintf(buf, n,
                 "must be a duration between %s and %s (e.g. 500ms, 30s, 15m, 2h, 7d; a bare "
                 "number means seconds)",
                 lo, hi);
        break;
    case DK_CFG_SIZE:
        cfg_fmt_size(r->min, lo, sizeof lo);
        cfg_fmt_size(r->max, hi, sizeof hi);
        snprintf(buf, n,
                 "must be a size between %s and %s (e.g. 512KiB, 1MiB, 2MB; a bare number means "
                 "bytes)",
                 lo, hi);
        break;
    case DK_CFG_BOOL:
        snprintf(buf, n, "must be true or false (or yes/no, on/off, 1/0)");
        break;
    case DK_CFG_STRING:
        cfg_fmt_choices(r, ", ", list, sizeof list);
        snprintf(buf, n, "must be one of %s", list);
        break;
    }
}

/* Copies s without leading and trailing white space. */
static char *cfg_trimmed(const char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t len = strlen(s);
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    return dk_strndup(s, len);
}

/* Parses value for row r: on success *ret_text (allocated) and *ret_num are written. */
static bool cfg_parse_value(const dk_config_row *r, const char *value, char **ret_text,
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
    DK_AUTOFREE char *t = cfg_trimmed(value);
    int64_t num = 0;
    bool ok = false;
    switch (r->type) {
    case DK_CFG_INT:
        ok = cfg_parse_int(t, &num);
        break;
    case DK_CFG_DURATION:
        ok = dk_config_parse_duration(t, &num);
        break;
    case DK_CFG_SIZE:
        ok = dk_config_parse_size(t, &num);
        break;
    case DK_CFG_BOOL:
        ok = cfg_parse_bool(t, &num);
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

static void cfg_fmt_origin(const cfg_origin *o, char *buf, size_t n)
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
static void cfg_fmt_bad_value(const dk_config_row *r, const char *value, const char *from,
                              char *err, size_t errlen)
{
    char shown[300], want[512];
    if (r->flags & DK_CFG_SECRET)
        snprintf(shown, sizeof shown, "<redacted>");
    else
        cfg_quote(value, shown, sizeof shown);
    cfg_fmt_expectation(r, want, sizeof want);
    cfg_err(err, errlen, "config: %s = %s (from %s): %s", r->key, shown, from, want);
}

dk_status dk_config_check(const dk_config_row *r, const char *value, const char *from, char *err,
                          size_t errlen)
{
    char *text = NULL;
    int64_t num;
    if (!cfg_parse_value(r, value, &text, &num)) {
        cfg_fmt_bad_value(r, value, from, err, errlen);
        return DK_E_BAD_REQUEST;
    }
    dk_free(text);
    return DK_OK;
}

/* Sets row i from value, or explains in err why it cannot. */
static dk_status cfg_assign(dk_config *c, size_t i, const char *value, const cfg_origin *o,
                            char *err, size_t errlen)
{
    const dk_config_row *r = &dk_config_rows[i];
    char *text = NULL;
    int64_t num = 0;
    if (!cfg_parse_value(r, value, &text, &num)) {
        char from[512];
        cfg_fmt_origin(o, from, sizeof from);
        cfg_fmt_bad_value(r, value, from, err, errlen);
        return DK_E_BAD_REQUEST;
    }
    cfg_value *v = &c->values[i];
    dk_free(v->text);
    dk_free(v->env_source);
    v->text = text;
    v->num = num;
    v->src = o->src;
    v->env_source = o->src == CFG_SRC_ENV ? cfg_strdup_printf("env %s", o->name) : NULL;
    return DK_OK;
}

/* ---- YAML file ------------------------------------------------------------------------- */

typedef struct {
    dk_config *c;
    const char *path;
    yaml_document_t *doc;
    bool *seen; /* per row: already set by this file */
    char *err;
    size_t errlen;
} cfg_file;

static bool cfg_yaml_is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *s = (const char *)n->data.scalar.value;
    size_t len = n->data.scalar.length;
    return len == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
           strcmp(s, "NULL") == 0;
}

/* The text of a scalar node, or NULL when it holds a NUL byte. */
static const char *cfg_yaml_text(const yaml_node_t *n)
{
    const char *s = (const char *)n->data.scalar.value;
    return memchr(s, '\0', n->data.scalar.length) ? NULL : s;
}

static dk_status cfg_yaml_error(const yaml_parser_t *p, const char *path, char *err, size_t errlen)
{
    const char *problem = p->problem ? p->problem : "cannot parse the file";
    switch (p->error) {
    case YAML_MEMORY_ERROR:
        cfg_err(err, errlen, "config: %s: out of memory while parsing", path);
        return DK_E_INTERNAL;
    case YAML_READER_ERROR:
        cfg_err(err, errlen, "config: %s: YAML error at byte %zu: %s", path, p->problem_offset,
                problem);
        break;
    default:
        if (p->context)
            cfg_err(err, errlen,
                    "config: %s line %zu column %zu: YAML syntax error: %s (%s at line %zu)", path,
                    p->problem_mark.line + 1, p->problem_mark.column + 1, problem, p->context,
                    p->context_mark.line + 1);
        else
            cfg_err(err, errlen, "config: %s line %zu column %zu: YAML syntax error: %s", path,
                    p->problem_mark.line + 1, p->problem_mark.column + 1, problem);
        break;
    }
    return DK_E_BAD_REQUEST;
}

/* Joins the scalar items of a sequence with commas, for STRING keys. */
static dk_status cfg_yaml_join(cfg_file *f, const char *key, yaml_node_t *seq, char **ret)
{
    size_t len = 0, cap = 64;
    char *buf = dk_malloc(cap);
    buf[0] = '\0';
    for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
         it++) {
        yaml_node_t *item = yaml_document_get_node(f->doc, *it);
        const char *s = item && item->type == YAML_SCALAR_NODE ? cfg_yaml_text(item) : NULL;
        if (!s) {
            cfg_err(f->err, f->errlen,
                    "config: %s (from file %s line %zu): list items must be plain values", key,
                    f->path, item ? item->start_mark.line + 1 : seq->start_mark.line + 1);
            dk_free(buf);
            return DK_E_BAD_REQUEST;
        }
        size_t slen = strlen(s);
        while (len + slen + 2 > cap)
            cap *= 2;
        buf = dk_realloc(buf, cap);
        if (len)
            buf[len++] = ',';
        memcpy(buf + len, s, slen + 1);
        len += slen;
    }
    *ret = buf;
    return DK_OK;
}

static dk_status cfg_yaml_walk(cfg_file *f, yaml_node_t *map, const char *prefix, int depth)
{
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top;
         pair++) {
        yaml_node_t *k = yaml_document_get_node(f->doc, pair->key);
        yaml_node_t *v = yaml_document_get_node(f->doc, pair->value);
        size_t line = k ? k->start_mark.line + 1 : map->start_mark.line + 1;
        const char *name = k && k->type == YAML_SCALAR_NODE ? cfg_yaml_text(k) : NULL;
        if (!name || !v) {
            cfg_err(f->err, f->errlen, "config: %s line %zu: keys must be plain names", f->path,
                    line);
            return DK_E_BAD_REQUEST;
        }
        char key[CFG_MAX_KEY];
        int w = snprintf(key, sizeof key, "%s%s%s", prefix, *prefix ? "." : "", name);
        if (w < 0 || (size_t)w >= sizeof key) {
            cfg_err(f->err, f->errlen, "config: unknown key \"%.60s...\" in %s line %zu", key,
                    f->path, line);
            return DK_E_BAD_REQUEST;
        }
        if (v->type == YAML_MAPPING_NODE) {
            if (depth >= CFG_MAX_DEPTH) {
                cfg_err(f->err, f->errlen, "config: unknown key \"%s\" in %s line %zu", key,
                        f->path, line);
                return DK_E_BAD_REQUEST;
            }
            dk_status st = cfg_yaml_walk(f, v, key, depth + 1);
            if (st != DK_OK)
                return st;
            continue;
        }
        size_t i = cfg_index(key);
        if (i == CFG_NOT_FOUND) {
            cfg_err(f->err, f->errlen, "config: unknown key \"%s\" in %s line %zu", key, f->path,
                    line);
            return DK_E_BAD_REQUEST;
        }
        if (f->seen[i]) {
            cfg_err(f->err, f->errlen, "config: key \"%s\" is set twice in %s (line %zu)", key,
                    f->path, line);
            return DK_E_BAD_REQUEST;
        }
        f->seen[i] = true;
        cfg_origin origin = {CFG_SRC_FILE, f->path, v->start_mark.line + 1};
        dk_status st;
        if (v->type == YAML_SEQUENCE_NODE) {
            if (dk_config_rows[i].type != DK_CFG_STRING || dk_config_rows[i].choices) {
                cfg_err(f->err, f->errlen,
                        "config: %s (from file %s line %zu): must be a single value, not a list",
                        key, f->path, origin.line);
                return DK_E_BAD_REQUEST;
            }
            DK_AUTOFREE char *joined = NULL;
            st = cfg_yaml_join(f, key, v, &joined);
            if (st == DK_OK)
                st = cfg_assign(f->c, i, joined, &origin, f->err, f->errlen);
        } else if (cfg_yaml_is_null(v)) {
            continue; /* `key:` with no value keeps the default */
        } else {
            const char *text = cfg_yaml_text(v);
            if (!text) {
                cfg_err(f->err, f->errlen, "config: %s (from file %s line %zu): holds a NUL byte",
                        key, f->path, origin.line);
                return DK_E_BAD_REQUEST;
            }
            st = cfg_assign(f->c, i, text, &origin, f->err, f->errlen);
        }
        if (st != DK_OK)
            return st;
    }
    return DK_OK;
}

static dk_status cfg_load_file(dk_config *c, const char *path, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        cfg_err(err, errlen, "config: cannot read config file %s: %s", path, strerror(errno));
        return DK_E_BAD_REQUEST;
    }
    struct stat sb;
    if (fstat(fileno(fp), &sb) == 0 && S_ISDIR(sb.st_mode)) {
        fclose(fp);
        cfg_err(err, errlen, "config: cannot read config file %s: it is a directory", path);
        return DK_E_BAD_REQUEST;
    }
    yaml_parser_t parser;
    yaml_document_t doc, extra;
    bool have_doc = false;
    DK_AUTOFREE bool *seen = dk_calloc(dk_config_nrows, sizeof *seen);
    dk_status st = DK_OK;
    if (!yaml_parser_initialize(&parser)) {
        fclose(fp);
        cfg_err(err, errlen, "config: %s: cannot start the YAML parser", path);
        return DK_E_INTERNAL;
    }
    yaml_parser_set_input_file(&parser, fp);
    if (!yaml_parser_load(&parser, &doc)) {
        st = cfg_yaml_error(&parser, path, err, errlen);
        goto out;
    }
    have_doc = true;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root && root->type == YAML_MAPPING_NODE) {
        cfg_file f = {c, path, &doc, seen, err, errlen};
        st = cfg_yaml_walk(&f, root, "", 0);
    } else if (root && !cfg_yaml_is_null(root)) {
        cfg_err(err, errlen, "config: %s line %zu: the top level must be a mapping of keys", path,
                root->start_mark.line + 1);
        st = DK_E_BAD_REQUEST;
    }
    if (st != DK_OK)
        goto out;
    /* A second document would be silently ignored: refuse it. */
    if (!yaml_parser_load(&parser, &extra)) {
        st = cfg_yaml_error(&parser, path, err, errlen);
        goto out;
    }
    if (yaml_document_get_root_node(&extra)) {
        cfg_err(err, errlen, "config: %s line %zu: only one YAML document is allowed", path,
                extra.start_mark.line + 1);
        st = DK_E_BAD_REQUEST;
    }
    yaml_document_delete(&extra);
out:
    if (have_doc)
        yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(fp);
    return st;
}

/* ---- environment and flags ------------------------------------------------------------- */

static dk_status cfg_load_env(dk_config *c, char *err, size_t errlen)
{
    for (size_t i = 0; i < dk_config_nrows; i++) {
        const dk_config_row *r = &dk_config_rows[i];
        char name[CFG_MAX_KEY + 8];
        if (!dk_config_env_name(r->key, name, sizeof name))
            abort(); /* a key longer than CFG_MAX_KEY: fix the table */
        const char *used = name;
        const char *v = getenv(name);
        if ((!v || !*v) && r->env) {
            used = r->env;
            v = getenv(r->env);
        }
        if (!v || !*v)
            continue;
        cfg_origin origin = {CFG_SRC_ENV, used, 0};
        dk_status st = cfg_assign(c, i, v, &origin, err, errlen);
        if (st != DK_OK)
            return st;
    }
    return DK_OK;
}

typedef struct {
    size_t row;
    const char *value;
    char *flag; /* "--key" as written, for messages */
} cfg_flag;

static dk_status cfg_parse_argv(int argc, char **argv, cfg_flag *flags, size_t *ret_n,
                                const char **ret_config, char *err, size_t errlen)
{
    size_t n = 0;
    for (int a = 0; a < argc; a++) {
        const char *arg = argv[a];
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            /* Only the part before '=': the value may be a secret. */
            DK_AUTOFREE char *head = dk_strndup(arg, strcspn(arg, "="));
            char shown[128];
            cfg_quote(head, shown, sizeof shown);
            cfg_err(err, errlen, "config: unexpected argument %s%s (flags are --key=value)", shown,
                    arg[strlen(head)] ? " with a value" : "");
            *ret_n = n;
            return DK_E_BAD_REQUEST;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const char *value = eq ? eq + 1 : NULL;
        bool is_config = nlen == 6 && memcmp(name, "config", 6) == 0;
        size_t row = is_config ? CFG_NOT_FOUND : cfg_index_flag(name, nlen);
        int shown_len = (int)(nlen > 100 ? 100 : nlen);
        if (!is_config && row == CFG_NOT_FOUND) {
            cfg_err(err, errlen, "config: unknown flag --%.*s (see docket --help)", shown_len,
                    name);
            *ret_n = n;
            return DK_E_BAD_REQUEST;
        }
        if (!value) {
            bool next_is_flag = a + 1 >= argc || strncmp(argv[a + 1], "--", 2) == 0;
            if (!is_config && dk_config_rows[row].type == DK_CFG_BOOL && next_is_flag) {
                value = "true";
            } else if (a + 1 < argc) {
                value = argv[++a];
            } else {
                cfg_err(err, errlen, "config: flag --%.*s needs a value", shown_len, name);
                *ret_n = n;
                return DK_E_BAD_REQUEST;
            }
        }
        if (is_config) {
            if (!*value) {
                cfg_err(err, errlen, "config: flag --config needs a file path");
                *ret_n = n;
                return DK_E_BAD_REQUEST;
            }
            *ret_config = value;
            continue;
        }
        flags[n].row = row;
        flags[n].value = value;
        flags[n].flag = cfg_strdup_printf("--%.*s", (int)nlen, name);
        n++;
    }
    *ret_n = n;
    return DK_OK;
}

/* ---- load and getters ------------------------------------------------------------------ */

dk_status dk_config_load_from(int argc, char **argv, const char *default_path, dk_config **ret,
                              char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    dk_config *c = DK_NEW(dk_config);
    c->values = dk_calloc(dk_config_nrows, sizeof *c->values);
    cfg_flag *flags = dk_calloc(argc > 0 ? (size_t)argc : 1, sizeof *flags);
    size_t nflags = 0;
    const char *path = NULL;
    dk_status st = DK_OK;

    for (size_t i = 0; i < dk_config_nrows && st == DK_OK; i++) {
        cfg_origin origin = {CFG_SRC_DEFAULT, NULL, 0};
        if (cfg_assign(c, i, dk_config_rows[i].def, &origin, err, errlen) != DK_OK)
            st = DK_E_INTERNAL; /* a bad row in config_table.c */
    }
    if (st == DK_OK)
        st = cfg_parse_argv(argc, argv, flags, &nflags, &path, err, errlen);
    if (st == DK_OK) {
        struct stat sb;
        if (path)
            st = cfg_load_file(c, path, err, errlen);
        else if (default_path && stat(default_path, &sb) == 0)
            st = cfg_load_file(c, default_path, err, errlen);
    }
    if (st == DK_OK)
        st = cfg_load_env(c, err, errlen);
    for (size_t i = 0; i < nflags && st == DK_OK; i++) {
        cfg_origin origin = {CFG_SRC_FLAG, flags[i].flag, 0};
        st = cfg_assign(c, flags[i].row, flags[i].value, &origin, err, errlen);
    }

    for (size_t i = 0; i < nflags; i++)
        dk_free(flags[i].flag);
    dk_free(flags);
    if (st != DK_OK) {
        dk_config_free(c);
        return st;
    }
    *ret = c;
    return DK_OK;
}

dk_status dk_config_load(int argc, char **argv, dk_config **ret, char *err, size_t errlen)
{
    return dk_config_load_from(argc, argv, DK_CONFIG_DEFAULT_PATH, ret, err, errlen);
}

void dk_config_free(dk_config *c)
{
    if (!c)
        return;
    for (size_t i = 0; c->values && i < dk_config_nrows; i++) {
        dk_free(c->values[i].text);
        dk_free(c->values[i].env_source);
    }
    dk_free(c->values);
    dk_free(c);
}

const char *dk_config_str(const dk_config *c, const char *key)
{
    return c->values[cfg_must_index(key, "dk_config_str")].text;
}

int64_t dk_config_int(const dk_config *c, const char *key)
{
    size_t i = cfg_must_index(key, "dk_config_int");
    dk_cfg_type t = dk_config_rows[i].type;
    if (t != DK_CFG_INT && t != DK_CFG_DURATION && t != DK_CFG_SIZE) {
        fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"dk_config_int: %s is not a number\"}\n",
                key);
        abort();
    }
    return c->values[i].num;
}

bool dk_config_bool(const dk_config *c, const char *key)
{
    size_t i = cfg_must_index(key, "dk_config_bool");
    if (dk_config_rows[i].type != DK_CFG_BOOL) {
        fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"dk_config_bool: %s is not a boolean\"}\n",
                key);
        abort();
    }
    return c->values[i].num != 0;
}

const char *dk_config_source(const dk_config *c, const char *key)
{
    const cfg_value *v = &c->values[cfg_must_index(key, "dk_config_source")];
    switch (v->src) {
    case CFG_SRC_FILE:
        return "file";
    case CFG_SRC_ENV:
        return v->env_source;
    case CFG_SRC_FLAG:
        return "flag";
    case CFG_SRC_DEFAULT:
        break;
    }
    return "default";
}

bool dk_config_is_set(const dk_config *c, const char *key)
{
    return c->values[cfg_must_index(key, "dk_config_is_set")].src != CFG_SRC_DEFAULT;
}

void dk_config_set_default(dk_config *c, const char *key, const char *value)
{
    size_t i = cfg_must_index(key, "dk_config_set_default");
    if (c->values[i].src != CFG_SRC_DEFAULT)
        return;
    char err[512];
    cfg_origin origin = {CFG_SRC_DEFAULT, NULL, 0};
    if (cfg_assign(c, i, value, &origin, err, sizeof err) != DK_OK) {
        fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"dk_config_set_default: %s\"}\n", err);
        abort();
    }
}

/* ---- printing -------------------------------------------------------------------------- */

static const char *cfg_type_name(const dk_config_row *r)
{
    switch (r->type) {
    case DK_CFG_STRING:
        return "string";
    case DK_CFG_INT:
        return "integer";
    case DK_CFG_BOOL:
        return "boolean";
    case DK_CFG_DURATION:
        return "duration";
    case DK_CFG_SIZE:
        return "size";
    }
    return "?";
}

static const char *cfg_placeholder(const dk_config_row *r)
{
    switch (r->type) {
    case DK_CFG_STRING:
        return "STRING";
    case DK_CFG_INT:
        return "INT";
    case DK_CFG_BOOL:
        return "BOOL";
    case DK_CFG_DURATION:
        return "DURATION";
    case DK_CFG_SIZE:
        return "SIZE";
    }
    return "?";
}

/* The section (part before the first dot) of a key, into buf. */
static void cfg_section_of(const char *key, char *buf, size_t n)
{
    size_t len = strcspn(key, ".");
    snprintf(buf, n, "%.*s", (int)len, key);
}

static const char *cfg_section_doc(const char *section)
{
    for (size_t i = 0; i < dk_config_nsections; i++)
        if (strcmp(dk_config_sections[i].name, section) == 0)
            return dk_config_sections[i].doc;
    return NULL;
}

/* Prints text without backticks, wrapped at width columns, each line indented. */
static void cfg_print_wrapped(FILE *out, const char *text, int indent, int width)
{
    int col = 0;
    const char *p = text;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        const char *w = p;
        int wlen = 0;
        for (; *p && *p != ' '; p++)
            if (*p != '`')
                wlen++;
        if (col > 0 && col + 1 + wlen > width) {
            fputc('\n', out);
            col = 0;
        }
        if (col == 0) {
            fprintf(out, "%*s", indent, "");
            col = indent;
        } else {
            fputc(' ', out);
            col++;
        }
        for (; w < p; w++)
            if (*w != '`')
                fputc(*w, out);
        col += wlen;
    }
    if (col > 0)
        fputc('\n', out);
}

static bool cfg_section_wanted(const char *section, const char *const *sections)
{
    if (!sections)
        return true;
    for (; *sections; sections++)
        if (strcmp(*sections, section) == 0)
            return true;
    return false;
}

void dk_config_print_help(FILE *out)
{
    dk_config_print_help_for(out, NULL);
}

void dk_config_print_help_for(FILE *out, const char *const *sections)
{
    if (sections) {
        fputs("Each as a flag --key=VALUE, in the environment as DOCKET_<KEY> (or the standard "
              "name\nshown), or in the YAML file given by --config PATH.\n",
              out);
    } else {
        fputs("Configuration. Every key below can be set in the YAML file, in the environment as\n"
              "DOCKET_<KEY> (dots and dashes become _, upper case; some keys also read a standard\n"
              "name, shown), or as a flag --key=VALUE or --key VALUE. Precedence, lowest to "
              "highest:\n"
              "built-in defaults, YAML file, environment, flags. Durations: 500ms, 30s, 15m, 2h, "
              "7d,\n"
              "1h30m (a bare number means seconds). Sizes: 512KiB, 1MiB, 2MB (a bare number means\n"
              "bytes). Booleans: true/false, yes/no, on/off, 1/0.\n\n"
              "  --config PATH\n"
              "      YAML configuration file (default: " DK_CONFIG_DEFAULT_PATH
              " when it exists).\n",
              out);
    }
    char section[CFG_MAX_KEY] = "", cur[CFG_MAX_KEY];
    for (size_t i = 0; i < dk_config_nrows; i++) {
        const dk_config_row *r = &dk_config_rows[i];
        cfg_section_of(r->key, cur, sizeof cur);
        if (!cfg_section_wanted(cur, sections))
            continue;
        if (strcmp(cur, section) != 0) {
            snprintf(section, sizeof section, "%s", cur);
            const char *sdoc = cfg_section_doc(section);
            fprintf(out, "\n%s:%s%s\n", section, sdoc ? " " : "", sdoc ? sdoc : "");
        }
        char bounds[80], choices[256];
        cfg_fmt_bounds(r, bounds, sizeof bounds);
        cfg_fmt_choices(r, "|", choices, sizeof choices);
        fprintf(out, "  --%s=%s  (%s%sdefault ", r->key, r->choices ? choices : cfg_placeholder(r),
                bounds, *bounds ? "; " : "");
        if (r->type == DK_CFG_STRING)
            cfg_fput_quoted(out, r->def);
        else
            fputs(r->def, out);
        if (r->env)
            fprintf(out, "; env %s", r->env);
        if (r->flags & DK_CFG_SECRET)
            fputs("; secret", out);
        fputs(")\n", out);
        cfg_print_wrapped(out, r->doc, 6, 96);
    }
}

/* Prints text for a markdown table cell: '|' escaped, '<' outside code spans escaped. */
static void cfg_md_cell(FILE *out, const char *text)
{
    bool code = false;
    for (const char *p = text; *p; p++) {
        if (*p == '`')
            code = !code;
        if (*p == '|')
            fputs("\\|", out);
        else if (*p == '<' && !code)
            fputs("&lt;", out);
        else
            fputc(*p, out);
    }
}

static const char cfg_md_intro[] =
    "# Configuration\n"
    "\n"
    "<!-- Generated from src/core/config_table.c by `docket config-docs`; do not edit by hand. "
    "-->\n"
    "\n"
    "Docket reads its configuration from four layers; each one overrides the one before it:\n"
    "\n"
    "1. built-in defaults (the tables below);\n"
    "2. a YAML file: `--config PATH`, or `" DK_CONFIG_DEFAULT_PATH "` when it exists and no\n"
    "   `--config` is given;\n"
    "3. environment variables;\n"
    "4. command-line flags.\n"
    "\n"
    "`docket --help` prints the same keys. A value that does not parse or is out of bounds stops\n"
    "Docket before it starts, with one line naming the key and where the value came from, e.g.\n"
    "`config: auth.max_sessions = \"abc\" (from env DOCKET_AUTH_MAX_SESSIONS): must be an integer\n"
    "between 1 and 1000`.\n"
    "\n"
    "## Environment variables\n"
    "\n"
    "Every key can be set as `DOCKET_<KEY>`: the key in upper case, with dots and dashes turned\n"
    "into `_` (`rate_limiting.max_requests` → `DOCKET_RATE_LIMITING_MAX_REQUESTS`,\n"
    "`server.port` → `DOCKET_SERVER_PORT`). Some keys also read a conventional name such as\n"
    "`DATABASE_URL` or `JWT_SECRET` (listed in the tables); when both are set, the `DOCKET_` name\n"
    "wins. An empty variable counts as unset.\n"
    "\n"
    "## Flags\n"
    "\n"
    "Every key is also a flag after the command: `--key=value` or `--key value`, e.g.\n"
    "`docket all --server.port=8080`; dashes may stand for underscores\n"
    "(`--rate-limiting.max-requests`). A boolean flag without a value means `true`.\n"
    "`--config PATH` names the YAML file. An unknown flag is an error.\n"
    "\n"
    "## YAML file\n"
    "\n"
    "Nested mappings name the keys (`server:` then `port:` is `server.port`); a dotted key\n"
    "(`server.port: 3001`) works too. Values are scalars; a string key also accepts a list, "
    "joined\n"
    "with commas. A key left empty (or `null`) keeps its default. An unknown key, a key set "
    "twice,\n"
    "a second YAML document or a syntax error is an error that names the file and line. The\n"
    "deployment's ConfigMap, for example:\n"
    "\n"
    "```yaml\n"
    "server:\n"
    "  port: 3001\n"
    "  host: \"0.0.0.0\"\n"
    "auth:\n"
    "  jwt_expiry: \"15m\"\n"
    "  refresh_expiry: \"7d\"\n"
    "  max_sessions: 5\n"
    "rate_limiting:\n"
    "  window_ms: 900000\n"
    "  max_requests: 100\n"
    "```\n"
    "\n"
    "## Values\n"
    "\n"
    "- **integer**: decimal, within the bounds shown.\n"
    "- **boolean**: `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`.\n"
    "- **duration**: numbers with units `ms`, `s`, `m`, `h`, `d`: `500ms`, `900s`, `15m`, `2h`,\n"
    "  `7d`, or combined, `1h30m`. A bare number means seconds.\n"
    "- **size**: a number with a unit, `B`, `KB`, `MB`, `GB`, `TB` (powers of 1000) or `KiB`,\n"
    "  `MiB`, `GiB`, `TiB` (powers of 1024): `512KiB`, `1MiB`, `2MB`. A bare number means bytes.\n"
    "- **secret** values are never printed: the effective configuration and error messages show\n"
    "  `<redacted>` instead.\n"
    "\n"
    "## Keys\n";

void dk_config_print_markdown(FILE *out)
{
    fputs(cfg_md_intro, out);
    char section[CFG_MAX_KEY] = "", cur[CFG_MAX_KEY];
    for (size_t i = 0; i < dk_config_nrows; i++) {
        const dk_config_row *r = &dk_config_rows[i];
        cfg_section_of(r->key, cur, sizeof cur);
        if (strcmp(cur, section) != 0) {
            snprintf(section, sizeof section, "%s", cur);
            const char *sdoc = cfg_section_doc(section);
            fprintf(out, "\n### `%s`\n\n", section);
            if (sdoc) {
                cfg_md_cell(out, sdoc);
                fputs("\n\n", out);
            }
            fputs("| Key | Type | Default | Environment | Description |\n"
                  "|---|---|---|---|---|\n",
                  out);
        }
        char env[CFG_MAX_KEY + 8], bounds[80], choices[256];
        if (!dk_config_env_name(r->key, env, sizeof env))
            abort();
        cfg_fmt_bounds(r, bounds, sizeof bounds);
        cfg_fmt_choices(r, "`, `", choices, sizeof choices);
        fprintf(out, "| `%s` | ", r->key);
        if (r->choices)
            fprintf(out, "one of `%s`", choices);
        else
            fprintf(out, "%s%s%s", cfg_type_name(r), *bounds ? ", " : "", bounds);
        if (*r->def)
            fprintf(out, " | `%s` | `%s`", r->def, env);
        else
            fprintf(out, " | (empty) | `%s`", env);
        if (r->env)
            fprintf(out, ", `%s`", r->env);
        fputs(" | ", out);
        if (r->flags & DK_CFG_SECRET)
            fputs("**Secret.** ", out);
        cfg_md_cell(out, r->doc);
        fputs(" |\n", out);
    }
}

void dk_config_print_effective(const dk_config *c, FILE *out)
{
    for (size_t i = 0; i < dk_config_nrows; i++) {
        const dk_config_row *r = &dk_config_rows[i];
        const cfg_value *v = &c->values[i];
        fprintf(out, "%s = ", r->key);
        if ((r->flags & DK_CFG_SECRET) && *v->text)
            fputs("<redacted>", out);
        else if (r->type == DK_CFG_STRING)
            cfg_fput_quoted(out, v->text);
        else
            fputs(v->text, out);
        fprintf(out, " (%s)\n", dk_config_source(c, r->key));
    }
}
