/* config.h — Docket's configuration: one table of rows (config_table.c) drives parsing, the
 * environment and flag names, bounds, `docket --help`, docs/configuration.md and redaction.
 * dk_config_load builds a dk_config (defaults < YAML file < environment < flags); the caller
 * frees it with dk_config_free. Strings returned by the getters live as long as the dk_config.
 * Thread safety: a loaded dk_config is read-only and may be read from any thread; call
 * dk_config_set_default only before other threads read it. Errors: bad input → DK_E_BAD_REQUEST
 * with a one-line message; unknown keys passed to the getters are programming errors and abort. */
#ifndef DK_CONFIG_H
#define DK_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/status.h"

/* Read when no --config is given and the file exists. */
#define DK_CONFIG_DEFAULT_PATH "/app/config/config.yaml"

typedef enum {
    DK_CFG_STRING,
    DK_CFG_INT,
    DK_CFG_BOOL,
    DK_CFG_DURATION, /* value in milliseconds; written 500ms, 30s, 15m, 2h, 7d, 1h30m; bare = s */
    DK_CFG_SIZE,     /* value in bytes; written 512KiB, 1MiB, 2MB; bare = bytes */
} dk_cfg_type;

enum {
    DK_CFG_SECRET = 1u << 0, /* never printed: "<redacted>" in effective output and errors */
};

typedef struct dk_config_row {
    const char *key; /* "section.name": lower case, digits, '_' */
    dk_cfg_type type;
    const char *def;            /* built-in default, written as a user would */
    const char *env;            /* standard environment name (e.g. DATABASE_URL) or NULL */
    int64_t min, max;           /* bounds for INT/DURATION/SIZE, in the value's unit (ms, bytes) */
    unsigned flags;             /* DK_CFG_SECRET */
    const char *doc;            /* one line; `backticks` mark code */
    const char *const *choices; /* STRING only: NULL-terminated list of allowed values, or NULL */
} dk_config_row;

extern const dk_config_row dk_config_rows[];
extern const size_t dk_config_nrows;

/* One-line introductions of the sections (the part of a key before its first dot), in table
 * order; used by --help and the markdown page. */
typedef struct dk_config_section {
    const char *name;
    const char *doc;
} dk_config_section;
extern const dk_config_section dk_config_sections[];
extern const size_t dk_config_nsections;

typedef struct dk_config dk_config;

/* argv: the flags after the command, e.g. {"--config", "x.yaml", "--server.port=8080"}.
 * On error returns DK_E_BAD_REQUEST and writes a one-line message naming the key and the source
 * into err (err may be NULL). *ret is written only on success. */
dk_status dk_config_load(int argc, char **argv, dk_config **ret, char *err,
                         size_t errlen) DK_MUSTCHECK;
/* The same, with another file read when no --config is given (NULL = none); for tests. */
dk_status dk_config_load_from(int argc, char **argv, const char *default_path, dk_config **ret,
                              char *err, size_t errlen) DK_MUSTCHECK;
void dk_config_free(dk_config *c); /* accepts NULL */

/* Getters abort on an unknown key or (int/bool) a key of another type: programming errors. */
const char *dk_config_str(const dk_config *c, const char *key); /* any type: the text as given */
int64_t dk_config_int(const dk_config *c, const char *key); /* INT, DURATION (ms), SIZE (bytes) */
bool dk_config_bool(const dk_config *c, const char *key);
/* "default" | "file" | "env DOCKET_X" (the variable actually read) | "flag" */
const char *dk_config_source(const dk_config *c, const char *key);
bool dk_config_is_set(const dk_config *c, const char *key); /* set by file, env or flag */
/* For computed defaults (e.g. the port of the command): replaces the value only when no file,
 * environment variable or flag set it. Aborts when value does not parse (programming error). */
void dk_config_set_default(dk_config *c, const char *key, const char *value);

void dk_config_print_help(FILE *out); /* the table as text for `docket --help` */
/* The same, only the rows of the named sections (NULL-terminated list; NULL = every row). */
void dk_config_print_help_for(FILE *out, const char *const *sections);
void dk_config_print_markdown(FILE *out); /* the whole docs/configuration.md; deterministic */
/* One "key = value (source)" line per row; set secrets shown as <redacted>. */
void dk_config_print_effective(const dk_config *c, FILE *out);
bool dk_config_is_secret(const char *key); /* false for unknown keys */

/* The row of key, or NULL. */
const dk_config_row *dk_config_row_find(const char *key);
/* The DOCKET_<KEY> environment name of key: dots and dashes → '_', upper case. Returns false
 * when it does not fit in n bytes. */
bool dk_config_env_name(const char *key, char *buf, size_t n);
/* Checks value against row r (type, bounds, choices). On failure returns DK_E_BAD_REQUEST and
 * writes "config: KEY = VALUE (from FROM): must be ..." into err, VALUE redacted for secrets. */
dk_status dk_config_check(const dk_config_row *r, const char *value, const char *from, char *err,
                          size_t errlen) DK_MUSTCHECK;
/* The value parsers behind DURATION and SIZE (no bounds); false when s is not valid. */
bool dk_config_parse_duration(const char *s, int64_t *ret_ms) DK_MUSTCHECK;
bool dk_config_parse_size(const char *s, int64_t *ret_bytes) DK_MUSTCHECK;

#endif
