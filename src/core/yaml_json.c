#include "core/yaml_json.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "core/banned.h"

#define DK_YAML_JSON_MAX_DEPTH 64
#define DK_YAML_JSON_MAX_NODES 1000000

typedef struct yaml_json_walk {
    yaml_document_t *doc;
    long budget;
    char *err;
    size_t errcap;
} yaml_json_walk;

static bool yaml_json_is(const char *s, const char *const *words)
{
    for (; *words; words++)
        if (strcmp(s, *words) == 0)
            return true;
    return false;
}

/* YAML 1.2 core schema: ints [-+]?[0-9]+, 0o[0-7]+, 0x[0-9a-fA-F]+; floats
 * [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?, .inf, .nan. */
static json_t *yaml_json_plain(const char *s, size_t n)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    static const char *const trues[] = {"true", "True", "TRUE", NULL};
    static const char *const falses[] = {"false", "False", "FALSE", NULL};
    if (strlen(s) != n) /* an escaped NUL cannot be in a plain scalar, but be exact */
        return json_stringn(s, n);
    if (yaml_json_is(s, nulls))
        return json_null();
    if (yaml_json_is(s, trues))
        return json_true();
    if (yaml_json_is(s, falses))
        return json_false();
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    if (*p >= '0' && *p <= '9') {
        int base = 10;
        const char *digits = p;
        if (p == s && p[0] == '0' && (p[1] == 'o' || p[1] == 'x') && p[2]) {
            base = p[1] == 'o' ? 8 : 16;
            digits = p + 2;
        }
        char *end = NULL;
        errno = 0;
        long long v = strtoll(base == 10 ? s : digits, &end, base);
        if (*end == '\0' && errno == 0 && end != digits)
            return json_integer(v);
        /* a float? digits [. digits] [e[+-]digits] */
        const char *q = p;
        while (*q >= '0' && *q <= '9')
            q++;
        bool ok = true;
        if (*q == '.') {
            q++;
            while (*q >= '0' && *q <= '9')
                q++;
        }
        if (*q == 'e' || *q == 'E') {
            q++;
            if (*q == '+' || *q == '-')
                q++;
            if (!(*q >= '0' && *q <= '9'))
                ok = false;
            while (*q >= '0' && *q <= '9')
                q++;
        }
        if (ok && *q == '\0' && base == 10) {
            errno = 0;
            double d = strtod(s, &end);
            if (*end == '\0' && isfinite(d))
                return json_real(d);
        }
    } else if (*p == '.' && p[1] >= '0' && p[1] <= '9') {
        char *end = NULL;
        double d = strtod(s, &end);
        if (*end == '\0' && isfinite(d))
            return json_real(d);
    }
    /* .inf and .nan have no JSON form: they stay strings */
    return json_stringn(s, n);
}

static json_t *yaml_json_node(yaml_json_walk *c, yaml_node_t *node, int depth)
{
    if (!node) {
        snprintf(c->err, c->errcap, "a node is missing");
        return NULL;
    }
    if (depth > DK_YAML_JSON_MAX_DEPTH || --c->budget < 0) {
        snprintf(c->err, c->errcap, "the document is nested too deeply or too large");
        return NULL;
    }
    switch (node->type) {
    case YAML_SCALAR_NODE: {
        const char *s = (const char *)node->data.scalar.value;
        size_t n = node->data.scalar.length;
        json_t *v = node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE ? yaml_json_plain(s, n)
                                                                       : json_stringn(s, n);
        if (!v)
            snprintf(c->err, c->errcap, "a scalar at line %lu is not valid UTF-8",
                     (unsigned long)node->start_mark.line + 1);
        return v;
    }
    case YAML_SEQUENCE_NODE: {
        json_t *arr = json_array();
        for (yaml_node_item_t *it = node->data.sequence.items.start;
             it < node->data.sequence.items.top; it++) {
            json_t *v = yaml_json_node(c, yaml_document_get_node(c->doc, *it), depth + 1);
            if (!v) {
                json_decref(arr);
                return NULL;
            }
            json_array_append_new(arr, v);
        }
        return arr;
    }
    case YAML_MAPPING_NODE: {
        json_t *obj = json_object();
        for (yaml_node_pair_t *pr = node->data.mapping.pairs.start;
             pr < node->data.mapping.pairs.top; pr++) {
            yaml_node_t *k = yaml_document_get_node(c->doc, pr->key);
            if (!k || k->type != YAML_SCALAR_NODE) {
                snprintf(c->err, c->errcap, "a mapping key at line %lu is not a scalar",
                         k ? (unsigned long)k->start_mark.line + 1 : 0UL);
                json_decref(obj);
                return NULL;
            }
            json_t *v = yaml_json_node(c, yaml_document_get_node(c->doc, pr->value), depth + 1);
            const char *key = (const char *)k->data.scalar.value;
            if (!v || strlen(key) != k->data.scalar.length || json_object_set_new(obj, key, v)) {
                if (v) {
                    json_decref(v);
                    snprintf(c->err, c->errcap, "the key at line %lu cannot be a JSON key",
                             (unsigned long)k->start_mark.line + 1);
                }
                json_decref(obj);
                return NULL;
            }
        }
        return obj;
    }
    default:
        snprintf(c->err, c->errcap, "an empty node");
        return NULL;
    }
}

json_t *dk_yaml_to_json(const char *text, size_t len, char *err, size_t errcap)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    json_t *out = NULL;
    if (!yaml_parser_load(&parser, &doc)) {
        snprintf(err, errcap, "YAML error at line %lu: %s",
                 (unsigned long)parser.problem_mark.line + 1,
                 parser.problem ? parser.problem : "unknown");
        yaml_parser_delete(&parser);
        return NULL;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        snprintf(err, errcap, "an empty document");
    } else {
        yaml_json_walk c = {
            .doc = &doc, .budget = DK_YAML_JSON_MAX_NODES, .err = err, .errcap = errcap};
        out = yaml_json_node(&c, root, 0);
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return out;
}
