/* config.c — loading the configuration table (rows in config_table.c): defaults, then the YAML
 * file, then DOCKET_* environment variables, then --flags, each layer validated as it is read
 * (config_values.c); and the getters. The printers (help, Markdown, effective values) are in
 * config_print.c. */
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
#include "core/config_internal.h"
#include "core/banned.h"

/* ---- small helpers ---------------------------------------------------------------------- */

void config_err(char *err, size_t errlen, const char *fmt, ...) DK_PRINTF(3, 4);
void config_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

char *config_strdup_printf(const char *fmt, ...) DK_PRINTF(1, 2);
char *config_strdup_printf(const char *fmt, ...)
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

static size_t config_index(const char *key)
{
    for (size_t i = 0; i < dk_config_nrows; i++)
        if (strcmp(dk_config_rows[i].key, key) == 0)
            return i;
    return CFG_NOT_FOUND;
}

/* Finds the row a flag names: name[0..len), where '-' stands for '_'. */
static size_t config_index_flag(const char *name, size_t len)
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

static size_t config_must_index(const char *key, const char *fn)
{
    size_t i = key ? config_index(key) : CFG_NOT_FOUND;
    if (i == CFG_NOT_FOUND) {
        fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"%s: unknown configuration key %s\"}\n", fn,
                key ? key : "(null)");
        abort();
    }
    return i;
}

const dk_config_row *dk_config_row_find(const char *key)
{
    size_t i = key ? config_index(key) : CFG_NOT_FOUND;
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

/* ---- YAML file ------------------------------------------------------------------------- */

typedef struct {
    dk_config *c;
    const char *path;
    yaml_document_t *doc;
    bool *seen; /* per row: already set by this file */
    char *err;
    size_t errlen;
} config_file;

static bool config_yaml_is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *s = (const char *)n->data.scalar.value;
    size_t len = n->data.scalar.length;
    return len == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
           strcmp(s, "NULL") == 0;
}

/* The text of a scalar node, or NULL when it holds a NUL byte. */
static const char *config_yaml_text(const yaml_node_t *n)
{
    const char *s = (const char *)n->data.scalar.value;
    return memchr(s, '\0', n->data.scalar.length) ? NULL : s;
}

static dk_status config_yaml_error(const yaml_parser_t *p, const char *path, char *err,
                                   size_t errlen)
{
    const char *problem = p->problem ? p->problem : "cannot parse the file";
    switch (p->error) {
    case YAML_MEMORY_ERROR:
        config_err(err, errlen, "config: %s: out of memory while parsing", path);
        return DK_E_INTERNAL;
    case YAML_READER_ERROR:
        config_err(err, errlen, "config: %s: YAML error at byte %zu: %s", path, p->problem_offset,
                   problem);
        break;
    default:
        if (p->context)
            config_err(err, errlen,
                       "config: %s line %zu column %zu: YAML syntax error: %s (%s at line %zu)",
                       path, p->problem_mark.line + 1, p->problem_mark.column + 1, problem,
                       p->context, p->context_mark.line + 1);
        else
            config_err(err, errlen, "config: %s line %zu column %zu: YAML syntax error: %s", path,
                       p->problem_mark.line + 1, p->problem_mark.column + 1, problem);
        break;
    }
    return DK_E_BAD_REQUEST;
}

/* Joins the scalar items of a sequence with commas, for STRING keys. */
static dk_status config_yaml_join(config_file *f, const char *key, yaml_node_t *seq, char **ret)
{
    size_t len = 0, cap = 64;
    char *buf = dk_malloc(cap);
    buf[0] = '\0';
    for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
         it++) {
        yaml_node_t *item = yaml_document_get_node(f->doc, *it);
        const char *s = item && item->type == YAML_SCALAR_NODE ? config_yaml_text(item) : NULL;
        if (!s) {
            config_err(f->err, f->errlen,
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

static dk_status config_yaml_walk(config_file *f, yaml_node_t *map, const char *prefix, int depth)
{
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top;
         pair++) {
        yaml_node_t *k = yaml_document_get_node(f->doc, pair->key);
        yaml_node_t *v = yaml_document_get_node(f->doc, pair->value);
        size_t line = k ? k->start_mark.line + 1 : map->start_mark.line + 1;
        const char *name = k && k->type == YAML_SCALAR_NODE ? config_yaml_text(k) : NULL;
        if (!name || !v) {
            config_err(f->err, f->errlen, "config: %s line %zu: keys must be plain names", f->path,
                       line);
            return DK_E_BAD_REQUEST;
        }
        char key[CFG_MAX_KEY];
        int w = snprintf(key, sizeof key, "%s%s%s", prefix, *prefix ? "." : "", name);
        if (w < 0 || (size_t)w >= sizeof key) {
            config_err(f->err, f->errlen, "config: unknown key \"%.60s...\" in %s line %zu", key,
                       f->path, line);
            return DK_E_BAD_REQUEST;
        }
        if (v->type == YAML_MAPPING_NODE) {
            if (depth >= CFG_MAX_DEPTH) {
                config_err(f->err, f->errlen, "config: unknown key \"%s\" in %s line %zu", key,
                           f->path, line);
                return DK_E_BAD_REQUEST;
            }
            dk_status st = config_yaml_walk(f, v, key, depth + 1);
            if (st != DK_OK)
                return st;
            continue;
        }
        size_t i = config_index(key);
        if (i == CFG_NOT_FOUND) {
            config_err(f->err, f->errlen, "config: unknown key \"%s\" in %s line %zu", key, f->path,
                       line);
            return DK_E_BAD_REQUEST;
        }
        if (f->seen[i]) {
            config_err(f->err, f->errlen, "config: key \"%s\" is set twice in %s (line %zu)", key,
                       f->path, line);
            return DK_E_BAD_REQUEST;
        }
        f->seen[i] = true;
        config_origin origin = {CFG_SRC_FILE, f->path, v->start_mark.line + 1};
        dk_status st;
        if (v->type == YAML_SEQUENCE_NODE) {
            if (dk_config_rows[i].type != DK_CFG_STRING || dk_config_rows[i].choices) {
                config_err(f->err, f->errlen,
                           "config: %s (from file %s line %zu): must be a single value, not a list",
                           key, f->path, origin.line);
                return DK_E_BAD_REQUEST;
            }
            DK_AUTOFREE char *joined = NULL;
            st = config_yaml_join(f, key, v, &joined);
            if (st == DK_OK)
                st = config_assign(f->c, i, joined, &origin, f->err, f->errlen);
        } else if (config_yaml_is_null(v)) {
            continue; /* `key:` with no value keeps the default */
        } else {
            const char *text = config_yaml_text(v);
            if (!text) {
                config_err(f->err, f->errlen,
                           "config: %s (from file %s line %zu): holds a NUL byte", key, f->path,
                           origin.line);
                return DK_E_BAD_REQUEST;
            }
            st = config_assign(f->c, i, text, &origin, f->err, f->errlen);
        }
        if (st != DK_OK)
            return st;
    }
    return DK_OK;
}

static dk_status config_load_file(dk_config *c, const char *path, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        config_err(err, errlen, "config: cannot read config file %s: %s", path, strerror(errno));
        return DK_E_BAD_REQUEST;
    }
    struct stat sb;
    if (fstat(fileno(fp), &sb) == 0 && S_ISDIR(sb.st_mode)) {
        fclose(fp);
        config_err(err, errlen, "config: cannot read config file %s: it is a directory", path);
        return DK_E_BAD_REQUEST;
    }
    yaml_parser_t parser;
    yaml_document_t doc, extra;
    bool have_doc = false;
    DK_AUTOFREE bool *seen = dk_calloc(dk_config_nrows, sizeof *seen);
    dk_status st = DK_OK;
    if (!yaml_parser_initialize(&parser)) {
        fclose(fp);
        config_err(err, errlen, "config: %s: cannot start the YAML parser", path);
        return DK_E_INTERNAL;
    }
    yaml_parser_set_input_file(&parser, fp);
    if (!yaml_parser_load(&parser, &doc)) {
        st = config_yaml_error(&parser, path, err, errlen);
        goto out;
    }
    have_doc = true;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root && root->type == YAML_MAPPING_NODE) {
        config_file f = {c, path, &doc, seen, err, errlen};
        st = config_yaml_walk(&f, root, "", 0);
    } else if (root && !config_yaml_is_null(root)) {
        config_err(err, errlen, "config: %s line %zu: the top level must be a mapping of keys",
                   path, root->start_mark.line + 1);
        st = DK_E_BAD_REQUEST;
    }
    if (st != DK_OK)
        goto out;
    /* A second document would be silently ignored: refuse it. */
    if (!yaml_parser_load(&parser, &extra)) {
        st = config_yaml_error(&parser, path, err, errlen);
        goto out;
    }
    if (yaml_document_get_root_node(&extra)) {
        config_err(err, errlen, "config: %s line %zu: only one YAML document is allowed", path,
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

static dk_status config_load_env(dk_config *c, char *err, size_t errlen)
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
        config_origin origin = {CFG_SRC_ENV, used, 0};
        dk_status st = config_assign(c, i, v, &origin, err, errlen);
        if (st != DK_OK)
            return st;
    }
    return DK_OK;
}

typedef struct {
    size_t row;
    const char *value;
    char *flag; /* "--key" as written, for messages */
} config_flag;

static dk_status config_parse_argv(int argc, char **argv, config_flag *flags, size_t *ret_n,
                                   const char **ret_config, char *err, size_t errlen)
{
    size_t n = 0;
    for (int a = 0; a < argc; a++) {
        const char *arg = argv[a];
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            /* Only the part before '=': the value may be a secret. */
            DK_AUTOFREE char *head = dk_strndup(arg, strcspn(arg, "="));
            char shown[128];
            config_quote(head, shown, sizeof shown);
            config_err(err, errlen, "config: unexpected argument %s%s (flags are --key=value)",
                       shown, arg[strlen(head)] ? " with a value" : "");
            *ret_n = n;
            return DK_E_BAD_REQUEST;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const char *value = eq ? eq + 1 : NULL;
        bool is_config = nlen == 6 && memcmp(name, "config", 6) == 0;
        size_t row = is_config ? CFG_NOT_FOUND : config_index_flag(name, nlen);
        int shown_len = (int)(nlen > 100 ? 100 : nlen);
        if (!is_config && row == CFG_NOT_FOUND) {
            config_err(err, errlen, "config: unknown flag --%.*s (see docket --help)", shown_len,
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
                config_err(err, errlen, "config: flag --%.*s needs a value", shown_len, name);
                *ret_n = n;
                return DK_E_BAD_REQUEST;
            }
        }
        if (is_config) {
            if (!*value) {
                config_err(err, errlen, "config: flag --config needs a file path");
                *ret_n = n;
                return DK_E_BAD_REQUEST;
            }
            *ret_config = value;
            continue;
        }
        flags[n].row = row;
        flags[n].value = value;
        flags[n].flag = config_strdup_printf("--%.*s", (int)nlen, name);
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
    config_flag *flags = dk_calloc(argc > 0 ? (size_t)argc : 1, sizeof *flags);
    size_t nflags = 0;
    const char *path = NULL;
    dk_status st = DK_OK;

    for (size_t i = 0; i < dk_config_nrows && st == DK_OK; i++) {
        config_origin origin = {CFG_SRC_DEFAULT, NULL, 0};
        if (config_assign(c, i, dk_config_rows[i].def, &origin, err, errlen) != DK_OK)
            st = DK_E_INTERNAL; /* a bad row in config_table.c */
    }
    if (st == DK_OK)
        st = config_parse_argv(argc, argv, flags, &nflags, &path, err, errlen);
    if (st == DK_OK) {
        struct stat sb;
        if (path)
            st = config_load_file(c, path, err, errlen);
        else if (default_path && stat(default_path, &sb) == 0)
            st = config_load_file(c, default_path, err, errlen);
    }
    if (st == DK_OK)
        st = config_load_env(c, err, errlen);
    for (size_t i = 0; i < nflags && st == DK_OK; i++) {
        config_origin origin = {CFG_SRC_FLAG, flags[i].flag, 0};
        st = config_assign(c, flags[i].row, flags[i].value, &origin, err, errlen);
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
    return c->values[config_must_index(key, "dk_config_str")].text;
}

int64_t dk_config_int(const dk_config *c, const char *key)
{
    size_t i = config_must_index(key, "dk_config_int");
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
    size_t i = config_must_index(key, "dk_config_bool");
    if (dk_config_rows[i].type != DK_CFG_BOOL) {
        fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"dk_config_bool: %s is not a boolean\"}\n",
                key);
        abort();
    }
    return c->values[i].num != 0;
}

const char *dk_config_source(const dk_config *c, const char *key)
{
    const config_value *v = &c->values[config_must_index(key, "dk_config_source")];
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
    return c->values[config_must_index(key, "dk_config_is_set")].src != CFG_SRC_DEFAULT;
}

void dk_config_set_default(dk_config *c, const char *key, const char *value)
{
    size_t i = config_must_index(key, "dk_config_set_default");
    if (c->values[i].src != CFG_SRC_DEFAULT)
        return;
    char err[512];
    config_origin origin = {CFG_SRC_DEFAULT, NULL, 0};
    if (config_assign(c, i, value, &origin, err, sizeof err) != DK_OK) {
        fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"dk_config_set_default: %s\"}\n", err);
        abort();
    }
}
