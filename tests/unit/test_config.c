/* test_config.c — the configuration table: layers, parsers, bounds, YAML, redaction, docs. */
#include "testutil.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/config.h"
#include "core/banned.h"

/* Every variable the table reads is cleared before each test, so the host's environment never
 * leaks in. */
static void clear_env(void)
{
    for (size_t i = 0; i < dk_config_nrows; i++) {
        char name[256];
        assert_true(dk_config_env_name(dk_config_rows[i].key, name, sizeof name));
        unsetenv(name);
        if (dk_config_rows[i].env)
            unsetenv(dk_config_rows[i].env);
    }
}

static int setup(void **state)
{
    clear_env();
    return 0;
}

static int teardown(void **state)
{
    clear_env();
    return 0;
}

/* Writes text to NAME in a fresh temporary directory; returns the path (free it). */
static char *write_yaml(const char *name, const char *text)
{
    char *dir = dk_test_tmpdir("config");
    size_t n = strlen(dir) + strlen(name) + 2;
    char *path = malloc(n);
    assert_non_null(path);
    snprintf(path, n, "%s/%s", dir, name);
    free(dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    return path;
}

/* Loads with argv (no default file); asserts success. */
static dk_config *load_ok(int argc, char **argv)
{
    dk_config *c = NULL;
    char err[512];
    dk_status st = dk_config_load_from(argc, argv, NULL, &c, err, sizeof err);
    if (st != DK_OK)
        fail_msg("load failed: %s", err);
    assert_non_null(c);
    return c;
}

/* Loads with argv and expects a DK_E_BAD_REQUEST; the message is left in err. */
static void load_fails(int argc, char **argv, char *err, size_t errlen)
{
    dk_config *c = NULL;
    dk_status st = dk_config_load_from(argc, argv, NULL, &c, err, errlen);
    assert_int_equal(st, DK_E_BAD_REQUEST);
    assert_null(c);
    assert_true(strncmp(err, "config: ", 8) == 0);
    assert_null(strchr(err, '\n'));
}

/* The message of loading a single env variable NAME=VALUE, which must fail. */
static void env_fails(const char *name, const char *value, char *err, size_t errlen)
{
    setenv(name, value, 1);
    load_fails(0, NULL, err, errlen);
    unsetenv(name);
}

/* Loads with one env variable set and returns the int value of key. */
static int64_t env_int(const char *name, const char *value, const char *key)
{
    setenv(name, value, 1);
    dk_config *c = load_ok(0, NULL);
    int64_t v = dk_config_int(c, key);
    dk_config_free(c);
    unsetenv(name);
    return v;
}

static char *print_to_string(void (*fn)(FILE *))
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    fn(f);
    assert_int_equal(fclose(f), 0);
    return buf;
}

static char *effective_to_string(const dk_config *c)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    dk_config_print_effective(c, f);
    assert_int_equal(fclose(f), 0);
    return buf;
}

/* ---- defaults and the table ------------------------------------------------------------ */

static void test_defaults(void **state)
{
    dk_config *c = load_ok(0, NULL);
    assert_string_equal(dk_config_str(c, "server.host"), "0.0.0.0");
    assert_int_equal(dk_config_int(c, "server.port"), 0);
    assert_int_equal(dk_config_int(c, "server.body_limit"), 1024 * 1024);
    assert_int_equal(dk_config_int(c, "server.drain_timeout"), 10000);
    assert_int_equal(dk_config_int(c, "auth.jwt_expiry"), 15 * 60 * 1000);
    assert_int_equal(dk_config_int(c, "auth.refresh_expiry"), INT64_C(7) * 86400 * 1000);
    assert_int_equal(dk_config_int(c, "auth.max_sessions"), 5);
    assert_int_equal(dk_config_int(c, "auth.argon2_memory_kib"), 19456);
    assert_int_equal(dk_config_int(c, "rate_limiting.window_ms"), 900000);
    assert_int_equal(dk_config_int(c, "rate_limiting.max_requests"), 100);
    assert_int_equal(dk_config_int(c, "redis.timeout"), 500);
    assert_true(dk_config_bool(c, "rate_limiting.enabled"));
    assert_false(dk_config_bool(c, "notification.webhook_allow_private"));
    assert_string_equal(dk_config_str(c, "log.level"), "info");
    assert_string_equal(dk_config_str(c, "database.url"), "");
    assert_string_equal(dk_config_str(c, "s3.region"), "us-east-1");
    assert_string_equal(dk_config_str(c, "smtp.from"), "docket@localhost");
    assert_string_equal(dk_config_str(c, "storage.data_dir"), "./data");
    for (size_t i = 0; i < dk_config_nrows; i++) {
        assert_string_equal(dk_config_source(c, dk_config_rows[i].key), "default");
        assert_false(dk_config_is_set(c, dk_config_rows[i].key));
    }
    dk_config_free(c);
    dk_config_free(NULL);
}

static void test_table_is_well_formed(void **state)
{
    char prev_section[64] = "";
    for (size_t i = 0; i < dk_config_nrows; i++) {
        const dk_config_row *r = &dk_config_rows[i];
        assert_true(strlen(r->key) < 100);
        assert_non_null(strchr(r->key, '.'));
        for (const char *p = r->key; *p; p++)
            assert_non_null(strchr("abcdefghijklmnopqrstuvwxyz0123456789_.", *p));
        assert_true(r->doc && *r->doc && !strchr(r->doc, '\n'));
        assert_non_null(r->def);
        /* every default passes its own row */
        char err[512];
        if (dk_config_check(r, r->def, "test", err, sizeof err) != DK_OK)
            fail_msg("%s", err);
        if (r->type == DK_CFG_INT || r->type == DK_CFG_DURATION || r->type == DK_CFG_SIZE)
            assert_true(r->min <= r->max);
        /* keys unique; env names unique across DOCKET_ names and aliases */
        char env_i[256];
        assert_true(dk_config_env_name(r->key, env_i, sizeof env_i));
        for (size_t j = i + 1; j < dk_config_nrows; j++) {
            const dk_config_row *o = &dk_config_rows[j];
            char env_j[256];
            assert_true(dk_config_env_name(o->key, env_j, sizeof env_j));
            assert_string_not_equal(r->key, o->key);
            assert_string_not_equal(env_i, env_j);
            if (r->env && o->env)
                assert_string_not_equal(r->env, o->env);
        }
        for (size_t j = 0; j < dk_config_nrows && r->env; j++) {
            char env_j[256];
            assert_true(dk_config_env_name(dk_config_rows[j].key, env_j, sizeof env_j));
            assert_string_not_equal(r->env, env_j);
        }
        /* rows of a section are contiguous and the section is introduced */
        char section[64];
        snprintf(section, sizeof section, "%.*s", (int)strcspn(r->key, "."), r->key);
        if (strcmp(section, prev_section) != 0) {
            for (size_t j = 0; j < i; j++)
                assert_true(strncmp(dk_config_rows[j].key, section, strlen(section)) != 0 ||
                            dk_config_rows[j].key[strlen(section)] != '.');
            bool found = false;
            for (size_t s = 0; s < dk_config_nsections; s++)
                found = found || strcmp(dk_config_sections[s].name, section) == 0;
            if (!found)
                fail_msg("section %s has no entry in dk_config_sections", section);
            snprintf(prev_section, sizeof prev_section, "%s", section);
        }
    }
    /* the rows the brief fixes */
    static const struct {
        const char *key, *env;
    } secrets[] = {{"database.url", "DATABASE_URL"},
                   {"redis.url", "REDIS_URL"},
                   {"auth.jwt_secret", "JWT_SECRET"},
                   {"s3.access_key_id", "AWS_ACCESS_KEY_ID"},
                   {"s3.secret_access_key", "AWS_SECRET_ACCESS_KEY"},
                   {"s3.session_token", "AWS_SESSION_TOKEN"},
                   {"smtp.url", "SMTP_URL"},
                   {"otel.headers", "OTEL_EXPORTER_OTLP_HEADERS"},
                   {"auth.mfa_key", NULL},
                   {"auth.mfa_key_previous", NULL}};
    size_t nsecret = 0;
    for (size_t i = 0; i < dk_config_nrows; i++)
        nsecret += (dk_config_rows[i].flags & DK_CFG_SECRET) != 0;
    assert_int_equal(nsecret, sizeof secrets / sizeof secrets[0]);
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++) {
        assert_true(dk_config_is_secret(secrets[i].key));
        if (secrets[i].env)
            assert_string_equal(dk_config_row_find(secrets[i].key)->env, secrets[i].env);
        else
            assert_null(dk_config_row_find(secrets[i].key)->env);
    }
    assert_false(dk_config_is_secret("server.port"));
    assert_false(dk_config_is_secret("no.such_key"));
    assert_null(dk_config_row_find("no.such_key"));
    assert_string_equal(dk_config_row_find("otel.endpoint")->env, "OTEL_EXPORTER_OTLP_ENDPOINT");
    assert_string_equal(dk_config_row_find("smtp.from")->env, "MAIL_FROM");
}

static void test_env_name(void **state)
{
    char buf[64];
    assert_true(dk_config_env_name("rate_limiting.max_requests", buf, sizeof buf));
    assert_string_equal(buf, "DOCKET_RATE_LIMITING_MAX_REQUESTS");
    assert_true(dk_config_env_name("a-b.c", buf, sizeof buf));
    assert_string_equal(buf, "DOCKET_A_B_C");
    assert_true(dk_config_env_name("server.port", buf, 19)); /* exactly fits */
    assert_string_equal(buf, "DOCKET_SERVER_PORT");
    assert_false(dk_config_env_name("server.port", buf, 18));
}

/* ---- precedence ------------------------------------------------------------------------ */

static void test_precedence(void **state)
{
    char *path = write_yaml("config.yaml", "server:\n  port: 1000\n  host: filehost\n"
                                           "auth:\n  max_sessions: 7\n");
    char *argv_file[] = {"--config", path};

    /* file over default */
    dk_config *c = load_ok(2, argv_file);
    assert_int_equal(dk_config_int(c, "server.port"), 1000);
    assert_string_equal(dk_config_source(c, "server.port"), "file");
    assert_true(dk_config_is_set(c, "server.port"));
    assert_string_equal(dk_config_str(c, "server.host"), "filehost");
    assert_string_equal(dk_config_source(c, "server.threads"), "default");
    dk_config_free(c);

    /* env over file */
    setenv("DOCKET_SERVER_PORT", "2000", 1);
    c = load_ok(2, argv_file);
    assert_int_equal(dk_config_int(c, "server.port"), 2000);
    assert_string_equal(dk_config_source(c, "server.port"), "env DOCKET_SERVER_PORT");
    assert_int_equal(dk_config_int(c, "auth.max_sessions"), 7);
    dk_config_free(c);

    /* flag over env, both flag spellings, flag before or after --config */
    char *argv_flag[] = {"--server.port=3000", "--config", path, "--auth.max_sessions", "9"};
    c = load_ok(5, argv_flag);
    assert_int_equal(dk_config_int(c, "server.port"), 3000);
    assert_string_equal(dk_config_source(c, "server.port"), "flag");
    assert_int_equal(dk_config_int(c, "auth.max_sessions"), 9);
    assert_string_equal(dk_config_source(c, "auth.max_sessions"), "flag");
    assert_string_equal(dk_config_str(c, "server.host"), "filehost");
    dk_config_free(c);

    /* the last of repeated flags wins; dashes stand for underscores */
    char *argv_rep[] = {"--server.port=1", "--server.port=2", "--rate-limiting.max-requests=5",
                        "--config=" /* replaced below */};
    size_t n = strlen(path) + 10;
    char *config_eq = malloc(n);
    snprintf(config_eq, n, "--config=%s", path);
    argv_rep[3] = config_eq;
    c = load_ok(4, argv_rep);
    assert_int_equal(dk_config_int(c, "server.port"), 2);
    assert_int_equal(dk_config_int(c, "rate_limiting.max_requests"), 5);
    assert_string_equal(dk_config_str(c, "server.host"), "filehost");
    dk_config_free(c);
    free(config_eq);

    /* an empty env value counts as unset */
    setenv("DOCKET_SERVER_PORT", "", 1);
    c = load_ok(2, argv_file);
    assert_int_equal(dk_config_int(c, "server.port"), 1000);
    assert_string_equal(dk_config_source(c, "server.port"), "file");
    dk_config_free(c);
    free(path);
}

static void test_default_path(void **state)
{
    char *path = write_yaml("config.yaml", "server:\n  port: 4321\n");
    dk_config *c = NULL;
    char err[512];
    /* read when no --config is given */
    assert_int_equal(dk_config_load_from(0, NULL, path, &c, err, sizeof err), DK_OK);
    assert_int_equal(dk_config_int(c, "server.port"), 4321);
    dk_config_free(c);
    /* --config replaces it */
    char *other = write_yaml("other.yaml", "server:\n  threads: 3\n");
    char *argv[] = {"--config", other};
    assert_int_equal(dk_config_load_from(2, argv, path, &c, err, sizeof err), DK_OK);
    assert_int_equal(dk_config_int(c, "server.port"), 0);
    assert_int_equal(dk_config_int(c, "server.threads"), 3);
    dk_config_free(c);
    /* an absent default file is fine */
    assert_int_equal(
        dk_config_load_from(0, NULL, "/nonexistent/docket/config.yaml", &c, err, sizeof err),
        DK_OK);
    dk_config_free(c);
    /* the real entry point works with no file at the default path */
    if (access(DK_CONFIG_DEFAULT_PATH, F_OK) != 0) {
        assert_int_equal(dk_config_load(0, NULL, &c, err, sizeof err), DK_OK);
        assert_string_equal(dk_config_source(c, "server.port"), "default");
        dk_config_free(c);
    }
    free(path);
    free(other);
}

static void test_env_alias(void **state)
{
    setenv("DATABASE_URL", "sqlite:/tmp/alias.db", 1);
    dk_config *c = load_ok(0, NULL);
    assert_string_equal(dk_config_str(c, "database.url"), "sqlite:/tmp/alias.db");
    assert_string_equal(dk_config_source(c, "database.url"), "env DATABASE_URL");
    dk_config_free(c);

    setenv("DOCKET_DATABASE_URL", "sqlite:/tmp/docket.db", 1);
    c = load_ok(0, NULL);
    assert_string_equal(dk_config_str(c, "database.url"), "sqlite:/tmp/docket.db");
    assert_string_equal(dk_config_source(c, "database.url"), "env DOCKET_DATABASE_URL");
    dk_config_free(c);

    /* an empty DOCKET_ name falls back to the alias */
    setenv("DOCKET_DATABASE_URL", "", 1);
    c = load_ok(0, NULL);
    assert_string_equal(dk_config_str(c, "database.url"), "sqlite:/tmp/alias.db");
    dk_config_free(c);

    /* the alias is above the file, below flags */
    char *path = write_yaml("c.yaml", "database:\n  url: sqlite:/tmp/file.db\n");
    char *argv[] = {"--config", path};
    c = load_ok(2, argv);
    assert_string_equal(dk_config_str(c, "database.url"), "sqlite:/tmp/alias.db");
    dk_config_free(c);
    char *argv2[] = {"--config", path, "--database.url", "sqlite:/tmp/flag.db"};
    c = load_ok(4, argv2);
    assert_string_equal(dk_config_str(c, "database.url"), "sqlite:/tmp/flag.db");
    dk_config_free(c);
    free(path);

    /* gateway upstreams come from DOCKET_ names only */
    setenv("DOCKET_GATEWAY_AUTH_URL", "http://a:3001,http://b:3001", 1);
    setenv("MAIL_FROM", "noreply@example.com", 1);
    setenv("OTEL_SERVICE_NAME", "docket-test", 1);
    c = load_ok(0, NULL);
    assert_string_equal(dk_config_str(c, "gateway.auth_url"), "http://a:3001,http://b:3001");
    assert_string_equal(dk_config_str(c, "smtp.from"), "noreply@example.com");
    assert_string_equal(dk_config_source(c, "smtp.from"), "env MAIL_FROM");
    assert_string_equal(dk_config_str(c, "otel.service_name"), "docket-test");
    dk_config_free(c);
}

static void test_set_default(void **state)
{
    dk_config *c = load_ok(0, NULL);
    dk_config_set_default(c, "server.port", "3001");
    assert_int_equal(dk_config_int(c, "server.port"), 3001);
    assert_string_equal(dk_config_str(c, "server.port"), "3001");
    assert_string_equal(dk_config_source(c, "server.port"), "default");
    assert_false(dk_config_is_set(c, "server.port"));
    dk_config_set_default(c, "server.port", "3002"); /* still a default: replaced again */
    assert_int_equal(dk_config_int(c, "server.port"), 3002);
    dk_config_set_default(c, "otel.service_name", "docket-auth");
    assert_string_equal(dk_config_str(c, "otel.service_name"), "docket-auth");
    dk_config_free(c);

    setenv("DOCKET_SERVER_PORT", "8080", 1);
    c = load_ok(0, NULL);
    dk_config_set_default(c, "server.port", "3001");
    assert_int_equal(dk_config_int(c, "server.port"), 8080);
    dk_config_free(c);
    unsetenv("DOCKET_SERVER_PORT");

    char *path = write_yaml("c.yaml", "server:\n  port: 9090\n");
    char *argv[] = {"--config", path};
    c = load_ok(2, argv);
    dk_config_set_default(c, "server.port", "3001");
    assert_int_equal(dk_config_int(c, "server.port"), 9090);
    dk_config_free(c);
    free(path);

    char *argv2[] = {"--server.port=7070"};
    c = load_ok(1, argv2);
    dk_config_set_default(c, "server.port", "3001");
    assert_int_equal(dk_config_int(c, "server.port"), 7070);
    dk_config_free(c);
}

/* ---- types and bounds ------------------------------------------------------------------ */

static void test_int(void **state)
{
    char err[512];
    env_fails("DOCKET_AUTH_MAX_SESSIONS", "abc", err, sizeof err);
    assert_string_equal(err, "config: auth.max_sessions = \"abc\" (from env "
                             "DOCKET_AUTH_MAX_SESSIONS): must be an integer between 1 and 1000");
    env_fails("DOCKET_AUTH_MAX_SESSIONS", "0", err, sizeof err);
    assert_non_null(strstr(err, "between 1 and 1000"));
    env_fails("DOCKET_AUTH_MAX_SESSIONS", "1001", err, sizeof err);
    env_fails("DOCKET_AUTH_MAX_SESSIONS", "5x", err, sizeof err);
    env_fails("DOCKET_AUTH_MAX_SESSIONS", "1.5", err, sizeof err);
    env_fails("DOCKET_AUTH_MAX_SESSIONS", "-", err, sizeof err);
    env_fails("DOCKET_AUTH_MAX_SESSIONS", "99999999999999999999999", err, sizeof err);
    env_fails("DOCKET_SERVER_PORT", "-1", err, sizeof err);
    env_fails("DOCKET_SERVER_PORT", "65536", err, sizeof err);
    assert_int_equal(env_int("DOCKET_AUTH_MAX_SESSIONS", "1", "auth.max_sessions"), 1);
    assert_int_equal(env_int("DOCKET_AUTH_MAX_SESSIONS", "1000", "auth.max_sessions"), 1000);
    assert_int_equal(env_int("DOCKET_AUTH_MAX_SESSIONS", " 42\n", "auth.max_sessions"), 42);
    assert_int_equal(env_int("DOCKET_AUTH_MAX_SESSIONS", "+7", "auth.max_sessions"), 7);
    assert_int_equal(env_int("DOCKET_SERVER_PORT", "65535", "server.port"), 65535);
    assert_int_equal(env_int("DOCKET_RATE_LIMITING_WINDOW_MS", "60000", "rate_limiting.window_ms"),
                     60000);
    env_fails("DOCKET_RATE_LIMITING_WINDOW_MS", "999", err, sizeof err);
    /* a long value is cut in the message */
    char big[300];
    memset(big, '7', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    env_fails("DOCKET_SERVER_PORT", big, err, sizeof err);
    assert_non_null(strstr(err, "...\""));
    assert_true(strlen(err) < 250);
    /* a control character is escaped, so the message stays one line */
    env_fails("DOCKET_SERVER_PORT", "80\n80", err, sizeof err);
    assert_non_null(strstr(err, "\"80\\x0a80\""));
}

static void test_bool(void **state)
{
    static const struct {
        const char *text;
        bool want;
    } cases[] = {{"true", true}, {"false", false}, {"yes", true}, {"no", false},  {"on", true},
                 {"off", false}, {"1", true},      {"0", false},  {"TRUE", true}, {"Off", false}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        setenv("DOCKET_RATE_LIMITING_ENABLED", cases[i].text, 1);
        dk_config *c = load_ok(0, NULL);
        assert_int_equal(dk_config_bool(c, "rate_limiting.enabled"), cases[i].want);
        assert_string_equal(dk_config_str(c, "rate_limiting.enabled"),
                            cases[i].want ? "true" : "false");
        dk_config_free(c);
    }
    unsetenv("DOCKET_RATE_LIMITING_ENABLED");
    char err[512];
    env_fails("DOCKET_RATE_LIMITING_ENABLED", "maybe", err, sizeof err);
    assert_string_equal(err, "config: rate_limiting.enabled = \"maybe\" (from env "
                             "DOCKET_RATE_LIMITING_ENABLED): must be true or false (or yes/no, "
                             "on/off, 1/0)");
    env_fails("DOCKET_RATE_LIMITING_ENABLED", "2", err, sizeof err);

    /* flags: bare means true; a following value is taken */
    char *a1[] = {"--notification.webhook_allow_private", "--rate_limiting.enabled", "false",
                  "--server.port", "5"};
    dk_config *c = load_ok(5, a1);
    assert_true(dk_config_bool(c, "notification.webhook_allow_private"));
    assert_false(dk_config_bool(c, "rate_limiting.enabled"));
    assert_int_equal(dk_config_int(c, "server.port"), 5);
    dk_config_free(c);
    char *a2[] = {"--notification.webhook_allow_private"};
    c = load_ok(1, a2);
    assert_true(dk_config_bool(c, "notification.webhook_allow_private"));
    assert_string_equal(dk_config_source(c, "notification.webhook_allow_private"), "flag");
    dk_config_free(c);
    char *a3[] = {"--rate_limiting.enabled=nope"};
    load_fails(1, a3, err, sizeof err);
    assert_non_null(strstr(err, "(from flag --rate_limiting.enabled)"));
}

static void test_duration(void **state)
{
    static const struct {
        const char *text;
        int64_t ms;
    } good[] = {{"900s", 900000}, {"15m", 900000},      {"7d", 604800000}, {"2h", 7200000},
                {"500ms", 500},   {"1h30m", 5400000},   {"30", 30000},     {"0", 0},
                {"0s", 0},        {"1d12h", 129600000}, {"10S", 10000},    {"1m1s1ms", 61001}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int64_t ms = -1;
        if (!dk_config_parse_duration(good[i].text, &ms))
            fail_msg("duration %s did not parse", good[i].text);
        assert_int_equal(ms, good[i].ms);
    }
    static const char *const bad[] = {"",
                                      "m",
                                      "15x",
                                      "1h30",
                                      "-5s",
                                      "1.5s",
                                      "s15",
                                      "5 s",
                                      " 5s",
                                      "5s ",
                                      "1y",
                                      "15mm",
                                      "99999999999999999999d",
                                      "9223372036854775807s"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t ms = -1;
        if (dk_config_parse_duration(bad[i], &ms))
            fail_msg("duration \"%s\" parsed as %lld", bad[i], (long long)ms);
    }

    /* bounds in the key's own unit, reported in human form */
    char err[512];
    env_fails("DOCKET_AUTH_JWT_EXPIRY", "999ms", err, sizeof err);
    assert_string_equal(err, "config: auth.jwt_expiry = \"999ms\" (from env "
                             "DOCKET_AUTH_JWT_EXPIRY): must be a duration between 1s and 1d (e.g. "
                             "500ms, 30s, 15m, 2h, 7d; a bare number means seconds)");
    env_fails("DOCKET_AUTH_JWT_EXPIRY", "25h", err, sizeof err);
    env_fails("DOCKET_AUTH_JWT_EXPIRY", "soon", err, sizeof err);
    env_fails("DOCKET_AUTH_REFRESH_EXPIRY", "59s", err, sizeof err);
    assert_non_null(strstr(err, "between 1m and 365d"));
    env_fails("DOCKET_AUTH_REFRESH_EXPIRY", "366d", err, sizeof err);
    assert_int_equal(env_int("DOCKET_AUTH_JWT_EXPIRY", "1s", "auth.jwt_expiry"), 1000);
    assert_int_equal(env_int("DOCKET_AUTH_JWT_EXPIRY", "1d", "auth.jwt_expiry"), 86400000);
    assert_int_equal(env_int("DOCKET_AUTH_JWT_EXPIRY", "3600", "auth.jwt_expiry"), 3600000);
    assert_int_equal(env_int("DOCKET_AUTH_REFRESH_EXPIRY", "365d", "auth.refresh_expiry"),
                     INT64_C(365) * 86400000);
    assert_int_equal(env_int("DOCKET_SERVER_DRAIN_TIMEOUT", "0", "server.drain_timeout"), 0);
}

static void test_size(void **state)
{
    static const struct {
        const char *text;
        int64_t bytes;
    } good[] = {{"1MiB", 1048576},
                {"512KiB", 524288},
                {"2MB", 2000000},
                {"1024", 1024},
                {"1kib", 1024},
                {"10B", 10},
                {"1GiB", 1073741824},
                {"3kb", 3000},
                {"1TiB", INT64_C(1) << 40},
                {"0", 0}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int64_t b = -1;
        if (!dk_config_parse_size(good[i].text, &b))
            fail_msg("size %s did not parse", good[i].text);
        assert_int_equal(b, good[i].bytes);
    }
    static const char *const bad[] = {"",
                                      "MiB",
                                      "1.5MiB",
                                      "1 MiB",
                                      "-1",
                                      "1MiBs",
                                      "1XB",
                                      "99999999999999999999",
                                      "9999999999TiB"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t b = -1;
        if (dk_config_parse_size(bad[i], &b))
            fail_msg("size \"%s\" parsed as %lld", bad[i], (long long)b);
    }
    char err[512];
    env_fails("DOCKET_SERVER_BODY_LIMIT", "512", err, sizeof err);
    assert_string_equal(err, "config: server.body_limit = \"512\" (from env "
                             "DOCKET_SERVER_BODY_LIMIT): must be a size between 1KiB and 64MiB "
                             "(e.g. 512KiB, 1MiB, 2MB; a bare number means bytes)");
    env_fails("DOCKET_SERVER_BODY_LIMIT", "65MiB", err, sizeof err);
    env_fails("DOCKET_SERVER_BODY_LIMIT", "big", err, sizeof err);
    assert_int_equal(env_int("DOCKET_SERVER_BODY_LIMIT", "64MiB", "server.body_limit"),
                     64 * 1048576);
    assert_int_equal(env_int("DOCKET_SERVER_BODY_LIMIT", "1KiB", "server.body_limit"), 1024);
    assert_int_equal(env_int("DOCKET_SERVER_BODY_LIMIT", "2MB", "server.body_limit"), 2000000);
}

static void test_choices(void **state)
{
    setenv("DOCKET_LOG_LEVEL", "WARN", 1);
    dk_config *c = load_ok(0, NULL);
    assert_string_equal(dk_config_str(c, "log.level"), "warn");
    dk_config_free(c);
    char err[512];
    env_fails("DOCKET_LOG_LEVEL", "verbose", err, sizeof err);
    assert_string_equal(err, "config: log.level = \"verbose\" (from env DOCKET_LOG_LEVEL): must "
                             "be one of debug, info, warn, error");
    char *argv[] = {"--log.level", "debug"};
    c = load_ok(2, argv);
    assert_string_equal(dk_config_str(c, "log.level"), "debug");
    dk_config_free(c);
}

/* ---- YAML ------------------------------------------------------------------------------ */

static void test_seed_configmap(void **state)
{
    /* data.config.yaml of the seed's auth-service-config ConfigMap, verbatim */
    char *path = write_yaml("config.yaml", "server:\n"
                                           "  port: 3001\n"
                                           "  host: \"0.0.0.0\"\n"
                                           "auth:\n"
                                           "  jwt_expiry: \"15m\"\n"
                                           "  refresh_expiry: \"7d\"\n"
                                           "  max_sessions: 5\n"
                                           "rate_limiting:\n"
                                           "  window_ms: 900000\n"
                                           "  max_requests: 100\n");
    char *argv[] = {"--config", path};
    dk_config *c = load_ok(2, argv);
    assert_int_equal(dk_config_int(c, "server.port"), 3001);
    assert_string_equal(dk_config_str(c, "server.host"), "0.0.0.0");
    assert_int_equal(dk_config_int(c, "auth.jwt_expiry"), 900000);
    assert_string_equal(dk_config_str(c, "auth.jwt_expiry"), "15m");
    assert_int_equal(dk_config_int(c, "auth.refresh_expiry"), INT64_C(604800000));
    assert_int_equal(dk_config_int(c, "auth.max_sessions"), 5);
    assert_int_equal(dk_config_int(c, "rate_limiting.window_ms"), 900000);
    assert_int_equal(dk_config_int(c, "rate_limiting.max_requests"), 100);
    static const char *const from_file[] = {"server.port",
                                            "server.host",
                                            "auth.jwt_expiry",
                                            "auth.refresh_expiry",
                                            "auth.max_sessions",
                                            "rate_limiting.window_ms",
                                            "rate_limiting.max_requests"};
    for (size_t i = 0; i < sizeof from_file / sizeof from_file[0]; i++)
        assert_string_equal(dk_config_source(c, from_file[i]), "file");
    assert_string_equal(dk_config_source(c, "log.level"), "default");
    dk_config_free(c);
    free(path);
}

static void test_yaml_forms(void **state)
{
    char *argv[] = {"--config", NULL};
    char *path = write_yaml("forms.yaml", "# comment\n"
                                          "server.threads: 8\n"
                                          "gateway:\n"
                                          "  cors_origins:\n"
                                          "    - https://a.example\n"
                                          "    - https://b.example\n"
                                          "  users_url: [\"http://u1:3002\", \"http://u2:3002\"]\n"
                                          "database:\n"
                                          "  url:\n"
                                          "redis: {timeout: 250ms, pool_size: 4}\n"
                                          "rate_limiting:\n"
                                          "  enabled: no\n"
                                          "smtp:\n"
                                          "  from: ''\n");
    argv[1] = path;
    dk_config *c = load_ok(2, argv);
    assert_int_equal(dk_config_int(c, "server.threads"), 8);
    assert_string_equal(dk_config_str(c, "gateway.cors_origins"),
                        "https://a.example,https://b.example");
    assert_string_equal(dk_config_str(c, "gateway.users_url"), "http://u1:3002,http://u2:3002");
    assert_string_equal(dk_config_str(c, "database.url"), "");
    assert_string_equal(dk_config_source(c, "database.url"), "default"); /* null keeps default */
    assert_int_equal(dk_config_int(c, "redis.timeout"), 250);
    assert_int_equal(dk_config_int(c, "redis.pool_size"), 4);
    assert_false(dk_config_bool(c, "rate_limiting.enabled"));
    assert_string_equal(dk_config_str(c, "smtp.from"), ""); /* quoted empty is a value */
    assert_string_equal(dk_config_source(c, "smtp.from"), "file");
    dk_config_free(c);
    free(path);

    /* an empty file and a file of comments are fine */
    path = write_yaml("empty.yaml", "");
    argv[1] = path;
    c = load_ok(2, argv);
    dk_config_free(c);
    free(path);
    path = write_yaml("comments.yaml", "# nothing here\n---\n");
    argv[1] = path;
    c = load_ok(2, argv);
    dk_config_free(c);
    free(path);
}

static void test_yaml_errors(void **state)
{
    static const struct {
        const char *text;
        const char *want[3]; /* substrings of the message */
    } cases[] = {
        {"server:\n  prot: 1\n", {"unknown key \"server.prot\"", "line 2", "bad.yaml"}},
        {"serve:\n  port: 1\n", {"unknown key \"serve.port\"", "line 2", NULL}},
        {"server: 3\n", {"unknown key \"server\"", "line 1", NULL}},
        {"server:\n  port: 1\n  port: 2\n", {"server.port", "set twice", "line 3"}},
        {"server.port: 1\nserver:\n  port: 2\n", {"server.port", "set twice", "line 3"}},
        {"server:\n  port: [1\n", {"YAML syntax error", "line 3", "bad.yaml"}},
        {"server:\n  port: 1\n host: x\n", {"YAML syntax error", "line 3", NULL}},
        {"a: b: c\n", {"YAML syntax error", "line 1", NULL}},
        {"server:\n\tport: 1\n", {"YAML syntax error", "line 2", NULL}},
        {"- 1\n- 2\n", {"top level must be a mapping", "line 1", NULL}},
        {"server:\n  port: [1, 2]\n", {"server.port", "not a list", "line 2"}},
        {"gateway:\n  cors_origins: [[a]]\n", {"gateway.cors_origins", "list items", NULL}},
        {"? [a]\n: 1\n", {"keys must be plain names", NULL, NULL}},
        {"server:\n  port: 1\n---\nserver:\n  port: 2\n", {"only one YAML document", NULL, NULL}},
        {"anchors:\n", {"unknown key \"anchors\"", "line 1", NULL}},
        {"auth:\n  max_sessions: 0\n",
         {"config: auth.max_sessions = \"0\" (from file ",
          "bad.yaml line 2): must be an integer "
          "between 1 and 1000",
          NULL}},
        {"server:\n  host: \"a\\0b\"\n", {"server.host", "NUL", NULL}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *path = write_yaml("bad.yaml", cases[i].text);
        char *argv[] = {"--config", path};
        char err[512];
        load_fails(2, argv, err, sizeof err);
        for (size_t j = 0; j < 3 && cases[i].want[j]; j++)
            if (!strstr(err, cases[i].want[j]))
                fail_msg("case %zu: \"%s\" not in: %s", i, cases[i].want[j], err);
        free(path);
    }

    /* a missing --config file */
    char *argv[] = {"--config", "/nonexistent/docket.yaml"};
    char err[512];
    load_fails(2, argv, err, sizeof err);
    assert_non_null(strstr(err, "/nonexistent/docket.yaml"));
    assert_non_null(strstr(err, "No such file"));
    char *dir = dk_test_tmpdir("config");
    argv[1] = dir;
    load_fails(2, argv, err, sizeof err);
    assert_non_null(strstr(err, "is a directory"));
    free(dir);
}

static void test_yaml_recursive_alias(void **state)
{
    /* an alias to its own ancestor would loop forever without the depth cap */
    char *path = write_yaml("alias.yaml", "server: &s\n  x: *s\n");
    char *argv[] = {"--config", path};
    char err[512];
    dk_config *c = NULL;
    dk_status st = dk_config_load_from(2, argv, NULL, &c, err, sizeof err);
    assert_int_equal(st, DK_E_BAD_REQUEST);
    assert_null(c);
    free(path);
}

/* ---- flags ----------------------------------------------------------------------------- */

static void test_flag_errors(void **state)
{
    char err[512];
    char *a1[] = {"--server.prot=1"};
    load_fails(1, a1, err, sizeof err);
    assert_string_equal(err, "config: unknown flag --server.prot (see docket --help)");
    char *a2[] = {"--server.port"};
    load_fails(1, a2, err, sizeof err);
    assert_string_equal(err, "config: flag --server.port needs a value");
    char *a3[] = {"server.port=1"};
    load_fails(1, a3, err, sizeof err);
    assert_non_null(strstr(err, "unexpected argument \"server.port\""));
    char *a4[] = {"--config"};
    load_fails(1, a4, err, sizeof err);
    char *a5[] = {"--config="};
    load_fails(1, a5, err, sizeof err);
    char *a6[] = {"--server.port=70000"};
    load_fails(1, a6, err, sizeof err);
    assert_string_equal(err, "config: server.port = \"70000\" (from flag --server.port): must be "
                             "an integer between 0 and 65535");
    char *a7[] = {"--"};
    load_fails(1, a7, err, sizeof err);
    /* err may be NULL */
    dk_config *c = NULL;
    assert_int_equal(dk_config_load_from(1, a1, NULL, &c, NULL, 0), DK_E_BAD_REQUEST);
    assert_null(c);
    /* a short message buffer is truncated, not overrun */
    char small[16];
    assert_int_equal(dk_config_load_from(1, a1, NULL, &c, small, sizeof small), DK_E_BAD_REQUEST);
    assert_int_equal(strlen(small), sizeof small - 1);
}

/* ---- secrets --------------------------------------------------------------------------- */

static void test_secrets_redacted(void **state)
{
    setenv("JWT_SECRET", "hunter2-jwt", 1);
    char *argv[] = {"--database.url=postgres://u:hunter2-db@h/db"};
    dk_config *c = load_ok(1, argv);
    assert_string_equal(dk_config_str(c, "auth.jwt_secret"), "hunter2-jwt"); /* code sees it */
    char *out = effective_to_string(c);
    assert_null(strstr(out, "hunter2"));
    assert_non_null(strstr(out, "auth.jwt_secret = <redacted> (env JWT_SECRET)\n"));
    assert_non_null(strstr(out, "database.url = <redacted> (flag)\n"));
    assert_non_null(strstr(out, "redis.url = \"\" (default)\n")); /* unset: shown empty */
    assert_non_null(strstr(out, "server.port = 0 (default)\n"));
    assert_non_null(strstr(out, "server.host = \"0.0.0.0\" (default)\n"));
    assert_non_null(strstr(out, "auth.jwt_expiry = 15m (default)\n"));
    size_t lines = 0;
    for (const char *p = out; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, dk_config_nrows);
    free(out);
    dk_config_free(c);

    /* errors never carry a secret value */
    static const dk_config_row secret_int = {.key = "test.secret_number",
                                             .type = DK_CFG_INT,
                                             .def = "1",
                                             .min = 1,
                                             .max = 9,
                                             .flags = DK_CFG_SECRET,
                                             .doc = "test"};
    char err[512];
    assert_int_equal(dk_config_check(&secret_int, "hunter2", "env X", err, sizeof err),
                     DK_E_BAD_REQUEST);
    assert_string_equal(err, "config: test.secret_number = <redacted> (from env X): must be an "
                             "integer between 1 and 9");
    assert_int_equal(dk_config_check(&secret_int, "3", "env X", err, sizeof err), DK_OK);
    /* nor does the message about a stray argument */
    char *a2[] = {"-database.url=postgres://u:hunter2@h/db"};
    load_fails(1, a2, err, sizeof err);
    assert_null(strstr(err, "hunter2"));
    char *a3[] = {"--databse.url=postgres://u:hunter2@h/db"};
    load_fails(1, a3, err, sizeof err);
    assert_null(strstr(err, "hunter2"));
    assert_non_null(strstr(err, "--databse.url"));
}

/* ---- help and docs --------------------------------------------------------------------- */

static void test_help(void **state)
{
    char *out = print_to_string(dk_config_print_help);
    assert_non_null(strstr(out, "--config PATH"));
    assert_non_null(strstr(out, "  --server.port=INT  (0..65535; default 0)\n"));
    assert_non_null(strstr(out, "  --auth.jwt_expiry=DURATION  (1s..1d; default 15m)\n"));
    assert_non_null(strstr(out, "  --server.body_limit=SIZE  (1KiB..64MiB; default 1MiB)\n"));
    assert_non_null(
        strstr(out, "  --database.url=STRING  (default \"\"; env DATABASE_URL; secret)\n"));
    assert_non_null(strstr(out, "  --log.level=debug|info|warn|error  (default \"info\")\n"));
    assert_null(strchr(out, '`'));
    for (size_t i = 0; i < dk_config_nrows; i++) {
        char flag[160];
        snprintf(flag, sizeof flag, "  --%s=", dk_config_rows[i].key);
        if (!strstr(out, flag))
            fail_msg("%s missing from help", dk_config_rows[i].key);
    }
    for (const char *line = out; *line;) {
        const char *end = strchr(line, '\n');
        assert_non_null(end);
        assert_true(end - line <= 100);
        line = end + 1;
    }
    free(out);
}

static void test_markdown(void **state)
{
    char *a = print_to_string(dk_config_print_markdown);
    char *b = print_to_string(dk_config_print_markdown);
    assert_string_equal(a, b); /* deterministic */
    assert_true(strncmp(a, "# Configuration\n", 16) == 0);
    assert_non_null(strstr(a, "```yaml\nserver:\n  port: 3001\n"));
    assert_non_null(strstr(a, "DOCKET_RATE_LIMITING_MAX_REQUESTS"));
    assert_non_null(strstr(a, "### `auth`"));
    assert_non_null(strstr(a, "| `auth.max_sessions` | integer, 1..1000 | `5` | "
                              "`DOCKET_AUTH_MAX_SESSIONS` | "));
    assert_non_null(strstr(a, "| `database.url` | string | (empty) | `DOCKET_DATABASE_URL`, "
                              "`DATABASE_URL` | **Secret.** "));
    assert_non_null(
        strstr(a, "| `log.level` | one of `debug`, `info`, `warn`, `error` | `info` |"));
    assert_non_null(strstr(a, "| `auth.jwt_expiry` | duration, 1s..1d | `15m` |"));
    for (size_t i = 0; i < dk_config_nrows; i++) {
        char cell[160];
        snprintf(cell, sizeof cell, "| `%s` |", dk_config_rows[i].key);
        if (!strstr(a, cell))
            fail_msg("%s missing from the markdown", dk_config_rows[i].key);
    }
    /* every table row has five cells (no stray '|' from a doc) */
    for (const char *line = a; *line;) {
        const char *end = strchr(line, '\n');
        assert_non_null(end);
        if (*line == '|') {
            int pipes = 0;
            for (const char *p = line; p < end; p++)
                pipes += *p == '|' && (p == line || p[-1] != '\\');
            assert_int_equal(pipes, 6);
        }
        line = end + 1;
    }
    assert_non_null(strstr(a, "\n")); /* ends with a newline */
    assert_int_equal(a[strlen(a) - 1], '\n');
    free(a);
    free(b);
}

/* ---- programming errors ---------------------------------------------------------------- */

static void expect_abort(void (*fn)(const dk_config *), const dk_config *c)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr))
            _exit(1);
        fn(c);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
}

static void get_unknown_str(const dk_config *c)
{
    (void)dk_config_str(c, "server.nope");
}

static void get_int_of_string(const dk_config *c)
{
    (void)dk_config_int(c, "server.host");
}

static void get_bool_of_int(const dk_config *c)
{
    (void)dk_config_bool(c, "server.port");
}

static void set_bad_default(const dk_config *c)
{
    dk_config_set_default((dk_config *)c, "server.port", "not-a-port");
}

static void test_programming_errors_abort(void **state)
{
    dk_config *c = load_ok(0, NULL);
    expect_abort(get_unknown_str, c);
    expect_abort(get_int_of_string, c);
    expect_abort(get_bool_of_int, c);
    expect_abort(set_bad_default, c);
    dk_config_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_table_is_well_formed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_precedence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_alias, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_default, setup, teardown),
        cmocka_unit_test_setup_teardown(test_int, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bool, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_choices, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seed_configmap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_yaml_forms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_yaml_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_yaml_recursive_alias, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flag_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secrets_redacted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_help, setup, teardown),
        cmocka_unit_test_setup_teardown(test_markdown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_programming_errors_abort, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
