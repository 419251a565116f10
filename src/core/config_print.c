/* config_print.c — the configuration table printed: --help (all or some sections), the
 * Markdown reference (docs/configuration.md, `docket config-docs`) and the effective values of a
 * loaded configuration (secrets masked). */
#include <ctype.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/config_internal.h"
#include "core/banned.h"

/* Prints s double-quoted with escapes, whole. */
static void config_fput_quoted(FILE *out, const char *s)
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

/* ---- printing -------------------------------------------------------------------------- */

static const char *config_type_name(const dk_config_row *r)
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

static const char *config_placeholder(const dk_config_row *r)
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
static void config_section_of(const char *key, char *buf, size_t n)
{
    size_t len = strcspn(key, ".");
    snprintf(buf, n, "%.*s", (int)len, key);
}

static const char *config_section_doc(const char *section)
{
    for (size_t i = 0; i < dk_config_nsections; i++)
        if (strcmp(dk_config_sections[i].name, section) == 0)
            return dk_config_sections[i].doc;
    return NULL;
}

/* Prints text without backticks, wrapped at width columns, each line indented. */
static void config_print_wrapped(FILE *out, const char *text, int indent, int width)
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

static bool config_section_wanted(const char *section, const char *const *sections)
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
        config_section_of(r->key, cur, sizeof cur);
        if (!config_section_wanted(cur, sections))
            continue;
        if (strcmp(cur, section) != 0) {
            snprintf(section, sizeof section, "%s", cur);
            const char *sdoc = config_section_doc(section);
            fprintf(out, "\n%s:%s%s\n", section, sdoc ? " " : "", sdoc ? sdoc : "");
        }
        char bounds[80], choices[256];
        config_fmt_bounds(r, bounds, sizeof bounds);
        config_fmt_choices(r, "|", choices, sizeof choices);
        fprintf(out, "  --%s=%s  (%s%sdefault ", r->key,
                r->choices ? choices : config_placeholder(r), bounds, *bounds ? "; " : "");
        if (r->type == DK_CFG_STRING)
            config_fput_quoted(out, r->def);
        else
            fputs(r->def, out);
        if (r->env)
            fprintf(out, "; env %s", r->env);
        if (r->flags & DK_CFG_SECRET)
            fputs("; secret", out);
        fputs(")\n", out);
        config_print_wrapped(out, r->doc, 6, 96);
    }
}

/* Prints text for a markdown table cell: '|' escaped, '<' outside code spans escaped. */
static void config_md_cell(FILE *out, const char *text)
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

static const char config_md_intro[] =
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
    fputs(config_md_intro, out);
    char section[CFG_MAX_KEY] = "", cur[CFG_MAX_KEY];
    for (size_t i = 0; i < dk_config_nrows; i++) {
        const dk_config_row *r = &dk_config_rows[i];
        config_section_of(r->key, cur, sizeof cur);
        if (strcmp(cur, section) != 0) {
            snprintf(section, sizeof section, "%s", cur);
            const char *sdoc = config_section_doc(section);
            fprintf(out, "\n### `%s`\n\n", section);
            if (sdoc) {
                config_md_cell(out, sdoc);
                fputs("\n\n", out);
            }
            fputs("| Key | Type | Default | Environment | Description |\n"
                  "|---|---|---|---|---|\n",
                  out);
        }
        char env[CFG_MAX_KEY + 8], bounds[80], choices[256];
        if (!dk_config_env_name(r->key, env, sizeof env))
            abort();
        config_fmt_bounds(r, bounds, sizeof bounds);
        config_fmt_choices(r, "`, `", choices, sizeof choices);
        fprintf(out, "| `%s` | ", r->key);
        if (r->choices)
            fprintf(out, "one of `%s`", choices);
        else
            fprintf(out, "%s%s%s", config_type_name(r), *bounds ? ", " : "", bounds);
        if (*r->def)
            fprintf(out, " | `%s` | `%s`", r->def, env);
        else
            fprintf(out, " | (empty) | `%s`", env);
        if (r->env)
            fprintf(out, ", `%s`", r->env);
        fputs(" | ", out);
        if (r->flags & DK_CFG_SECRET)
            fputs("**Secret.** ", out);
        config_md_cell(out, r->doc);
        fputs(" |\n", out);
    }
}

void dk_config_print_effective(const dk_config *c, FILE *out)
{
    for (size_t i = 0; i < dk_config_nrows; i++) {
        const dk_config_row *r = &dk_config_rows[i];
        const config_value *v = &c->values[i];
        fprintf(out, "%s = ", r->key);
        if ((r->flags & DK_CFG_SECRET) && *v->text)
            fputs("<redacted>", out);
        else if (r->type == DK_CFG_STRING)
            config_fput_quoted(out, v->text);
        else
            fputs(v->text, out);
        fprintf(out, " (%s)\n", dk_config_source(c, r->key));
    }
}
