/* config_internal.h — what the three rooms of the configuration share: the loader (config.c),
 * the value parsers and validation (config_values.c) and the printers (config_print.c).
 * Contract: core/config.h. No locks: a dk_config is built by one thread at start-up and only read
 * afterwards. */
#ifndef DK_CONFIG_INTERNAL_H
#define DK_CONFIG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/config.h"

#define CFG_MAX_KEY   128 /* longest dotted key a YAML file or flag may name */
#define CFG_MAX_DEPTH 8   /* deepest YAML mapping nesting */
#define CFG_NOT_FOUND SIZE_MAX

enum config_src { CFG_SRC_DEFAULT, CFG_SRC_FILE, CFG_SRC_ENV, CFG_SRC_FLAG };

typedef struct {
    char *text;          /* as given (trimmed for non-strings; canonical for booleans, choices) */
    int64_t num;         /* INT, DURATION (ms), SIZE (bytes); BOOL 0 or 1 */
    enum config_src src; /* the layer that set it */
    char *env_source;    /* "env NAME" when src == CFG_SRC_ENV */
} config_value;

struct dk_config {
    config_value *values; /* one per row of dk_config_rows */
};

/* Where a value came from, for error messages. */
typedef struct {
    enum config_src src;
    const char *name; /* file path, environment variable, or flag as written */
    size_t line;      /* file only, 1-based */
} config_origin;

/* config.c */
void config_err(char *err, size_t errlen, const char *fmt, ...) DK_PRINTF(3, 4);
char *config_strdup_printf(const char *fmt, ...) DK_PRINTF(1, 2);

/* config_values.c: parse, validate, format */
void config_quote(const char *s, char *buf, size_t n);
void config_fmt_bounds(const dk_config_row *r, char *buf, size_t n);
void config_fmt_choices(const dk_config_row *r, const char *sep, char *buf, size_t n);
dk_status config_assign(dk_config *c, size_t i, const char *value, const config_origin *o,
                        char *err, size_t errlen);

#endif
