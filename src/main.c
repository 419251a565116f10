/* docket — the one binary. `docket all` runs every service in one process; `docket migrate`
 * applies the database migrations; `docket config` prints the effective configuration. */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/app.h"
#include "core/arena.h"
#include "core/client_addr.h"
#include "core/config.h"
#include "core/cpus.h"
#include "core/crypto.h"
#include "core/http.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/session_guard.h"
#include "core/sql.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "core/trace.h"
#include "adapters/blob.h"
#include "adapters/db.h"
#include "adapters/events.h"
#include "adapters/http_client.h"
#include "adapters/kv.h"
#include "adapters/mailer.h"
#include "adapters/users_http.h"
#include "services/console/console.h"
#include "services/gateway/gateway.h"
#include "services/service.h"
#include "core/banned.h"

#define DK_EXIT_USAGE 2
#define DK_VERSION    "0.1.0"

/* The services in start order (a service starts after those it depends on). */
static const dk_service *const dk_services[] = {&dk_users_service, &dk_auth_service,
                                                &dk_tasks_service, &dk_notifications_service};
#define DK_NSERVICES (sizeof dk_services / sizeof dk_services[0])

static void dk_usage(FILE *out)
{
    fprintf(out,
            "Usage: docket COMMAND [--config PATH] [--KEY=VALUE ...]\n"
            "\n"
            "Commands:\n"
            "  all          run every service in one process (gateway on port 3000)\n"
            "  gateway      run the API gateway alone (split mode, port 3000); upstreams from\n"
            "               gateway.auth_url, gateway.users_url, gateway.tasks_url, …\n"
            "  auth, users, tasks, notifications\n"
            "               run one service alone (split mode; ports 3001, 3002, 3003, 3004)\n"
            "  migrate      apply the database migrations of every service, then exit\n"
            "  backup PATH  copy the embedded SQLite database to a new file (online, safe while\n"
            "               docket runs); PostgreSQL is backed up with pg_dump\n"
            "  restore PATH replace the embedded database with a backup (stop docket first)\n"
            "  config       print the effective configuration (secrets redacted), then exit\n"
            "  config-docs  print docs/configuration.md (generated from the config table)\n"
            "  routes       list the public HTTP routes of every service\n"
            "  version      print the version\n"
            "  help [COMMAND]\n"
            "               this text, or what COMMAND does and the keys it reads\n"
            "\n"
            "Every configuration key can be given as a flag (--server.port=8080), in the YAML\n"
            "file (--config PATH, or /app/config/config.yaml when present) or in the\n"
            "environment (DOCKET_SERVER_PORT=8080). Precedence: flag > environment > file >\n"
            "default.\n\n");
    dk_config_print_help(out);
}

/* Per-command help: what it does, its port, the configuration sections it reads. */
typedef struct dk_command_help {
    const char *name;
    const char *usage;
    const char *text;
    const char *const sections[16];
} dk_command_help;

static const dk_command_help dk_command_helps[] = {
    {"all",
     "docket all [--KEY=VALUE ...]",
     "Runs the gateway and every service (auth, users, tasks, notifications) in one process, on\n"
     "port 3000 unless server.port says otherwise. With nothing configured it uses SQLite and\n"
     "local files in storage.data_dir (./data), an in-process cache and queue, and a JWT secret\n"
     "generated there; it applies the database migrations itself.",
     {"server", "storage", "database", "redis", "auth", "rate_limiting", "log", "gateway", "events",
      "notification", "s3", "smtp", "otel", NULL}},
    {"gateway",
     "docket gateway [--KEY=VALUE ...]",
     "Runs the API gateway alone (split mode, port 3000): routes /api/v1/<service> to the\n"
     "upstreams in gateway.auth_url, gateway.users_url, gateway.tasks_url and\n"
     "gateway.notifications_url; verifies access tokens and revocations (needs redis.url and the\n"
     "same auth.jwt_secret as the services).",
     {"server", "redis", "auth", "log", "gateway", "otel", NULL}},
    {"auth",
     "docket auth [--KEY=VALUE ...]",
     "Runs the auth service alone (split mode, port 3001): registration, login, refresh,\n"
     "logout, sessions, password change. Needs database.url (PostgreSQL, migrated with\n"
     "`docket migrate`), redis.url and auth.jwt_secret.",
     {"server", "database", "redis", "auth", "rate_limiting", "log", "gateway", "smtp", "otel",
      NULL}},
    {"users",
     "docket users [--KEY=VALUE ...]",
     "Runs the users service alone (split mode, port 3002): profiles. Needs database.url,\n"
     "redis.url and auth.jwt_secret.",
     {"server", "database", "redis", "auth", "log", "gateway", "s3", "otel", NULL}},
    {"tasks",
     "docket tasks [--KEY=VALUE ...]",
     "Runs the tasks service alone (split mode, port 3003): tasks, search. Needs database.url,\n"
     "redis.url, auth.jwt_secret, and gateway.users_url to look users up.",
     {"server", "database", "redis", "auth", "log", "gateway", "events", "otel", NULL}},
    {"notifications",
     "docket notifications [--KEY=VALUE ...]",
     "Runs the notifications service alone (split mode, port 3004): in-app notifications, the\n"
     "event stream, e-mail and webhooks. Needs database.url, redis.url, auth.jwt_secret and\n"
     "gateway.users_url.",
     {"server", "database", "redis", "auth", "log", "gateway", "events", "notification", "smtp",
      "otel", NULL}},
    {"migrate",
     "docket migrate [--KEY=VALUE ...]",
     "Applies the database migrations of every service, then exits (0 when the schema is\n"
     "current). Run it before starting split services on PostgreSQL; `docket all` on SQLite\n"
     "migrates by itself.",
     {"database", "storage", "log", NULL}},
    {"backup",
     "docket backup PATH [--KEY=VALUE ...]",
     "Copies the embedded SQLite database to a new file PATH, online (safe while docket runs).\n"
     "PostgreSQL is backed up with pg_dump (docs/operations.md).",
     {"database", "storage", NULL}},
    {"restore",
     "docket restore PATH [--KEY=VALUE ...]",
     "Replaces the embedded SQLite database with the backup PATH (stop docket first), then\n"
     "applies newer migrations.",
     {"database", "storage", NULL}},
    {"config",
     "docket config [--KEY=VALUE ...]",
     "Prints the effective configuration, each key with where its value came from (default,\n"
     "file, environment, flag); secrets are redacted.",
     {NULL}},
};

static const dk_command_help *dk_command_help_find(const char *name)
{
    for (size_t i = 0; i < sizeof dk_command_helps / sizeof dk_command_helps[0]; i++)
        if (strcmp(dk_command_helps[i].name, name) == 0)
            return &dk_command_helps[i];
    return NULL;
}

static void dk_command_usage(FILE *out, const dk_command_help *h)
{
    fprintf(out, "Usage: %s\n\n%s\n\n", h->usage, h->text);
    if (!h->sections[0]) {
        fputs("Every key is listed by `docket help`.\n", out);
        return;
    }
    fputs("The keys it reads (`docket help` lists every key):\n", out);
    dk_config_print_help_for(out, h->sections);
}

/* The database URL: database.url, or SQLite in the data directory. */
static char *dk_database_url(const dk_config *c)
{
    const char *url = dk_config_str(c, "database.url");
    if (url && *url)
        return dk_strdup(url);
    const char *dir = dk_config_str(c, "storage.data_dir");
    size_t n = strlen(dir) + 32;
    char *out = dk_malloc(n);
    snprintf(out, n, "sqlite:%s/docket.db", dir);
    return out;
}

static int dk_mkdir_p(const char *path)
{
    char buf[4096];
    if (dk_strlcpy(buf, path, sizeof buf) >= sizeof buf - 1)
        return -1;
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0700) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    if (mkdir(buf, 0700) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* JWT secret: auth.jwt_secret, or one generated once and kept in <data_dir>/jwt_secret. */
static int dk_jwt_secret(const dk_config *c, char *out, size_t cap)
{
    const char *s = dk_config_str(c, "auth.jwt_secret");
    if (s && *s) {
        if (strlen(s) < 32) {
            fprintf(stderr, "config: auth.jwt_secret must be at least 32 characters\n");
            return DK_EXIT_USAGE;
        }
        dk_strlcpy(out, s, cap);
        return 0;
    }
    const char *dir = dk_config_str(c, "storage.data_dir");
    char path[4096];
    snprintf(path, sizeof path, "%s/jwt_secret", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, out, cap - 1);
        close(fd);
        if (n < 32) {
            fprintf(stderr, "error: %s is shorter than 32 bytes; remove it to regenerate\n", path);
            return -1;
        }
        out[n] = '\0';
        while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
            out[--n] = '\0';
        return 0;
    }
    if (dk_mkdir_p(dir) != 0) {
        fprintf(stderr, "error: cannot create the data directory %s: %s\n", dir, strerror(errno));
        return -1;
    }
    dk_arena *a = dk_arena_new();
    char *secret = dk_random_token(a, 48);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    bool ok = fd >= 0 && write(fd, secret, strlen(secret)) == (ssize_t)strlen(secret);
    if (fd >= 0)
        close(fd);
    if (ok)
        dk_strlcpy(out, secret, cap);
    dk_arena_free(a);
    if (!ok) {
        fprintf(stderr, "error: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    dk_log_info("generated a JWT secret in %s", path);
    return 0;
}

static dk_status dk_ready_db(void *ctx, char *reason, size_t cap)
{
    dk_app *app = ctx;
    dk_status st = app->db.ops->ping(app->db.db, 1000);
    if (st != DK_OK)
        snprintf(reason, cap, "database unreachable (%s)", dk_status_title(st));
    return st;
}

static dk_status dk_ready_kv(void *ctx, char *reason, size_t cap)
{
    dk_app *app = ctx;
    dk_status st = app->store.ops->ping(app->store.kv, 1000);
    if (st != DK_OK)
        snprintf(reason, cap, "cache unreachable (%s)", dk_status_title(st));
    return st;
}

static void dk_collect_pool(void *ctx, dk_metrics_out *out)
{
    dk_app *app = ctx;
    int idle = 0, busy = 0;
    app->db.ops->stats(app->db.db, &idle, &busy);
    dk_metrics_family(out, "docket_db_pool_connections", "gauge",
                      "Database connections in the pool by state.");
    dk_metrics_sample(out, "docket_db_pool_connections", "state=\"idle\"", idle);
    dk_metrics_sample(out, "docket_db_pool_connections", "state=\"busy\"", busy);
}

/* Password hashing runs on this many offload threads (one per core by default). */
static int dk_hash_workers(const dk_config *c)
{
    int w = (int)dk_config_int(c, "auth.hash_workers");
    return w > 0 ? w : dk_cpu_count();
}

static int dk_server_threads(const dk_config *c)
{
    int t = (int)dk_config_int(c, "server.threads");
    return t > 0 ? t : dk_cpu_count() * 4;
}

/* The services a command runs in this process: all of them, or one (split mode). */
typedef struct dk_plan {
    const char *process; /* "all", "gateway", or a service name */
    bool gateway;        /* forwards to upstream processes instead of running services */
    size_t n;
    const dk_service *local[DK_NSERVICES];
} dk_plan;

static bool dk_plan_for(const char *cmd, dk_plan *plan)
{
    memset(plan, 0, sizeof *plan);
    plan->process = cmd;
    if (strcmp(cmd, "all") == 0 || strcmp(cmd, "migrate") == 0) {
        for (size_t i = 0; i < DK_NSERVICES; i++)
            plan->local[plan->n++] = dk_services[i];
        return true;
    }
    if (strcmp(cmd, "gateway") == 0) {
        plan->gateway = true;
        return true;
    }
    for (size_t i = 0; i < DK_NSERVICES; i++) {
        if (strcmp(cmd, dk_services[i]->name) == 0) {
            plan->local[plan->n++] = dk_services[i];
            return true;
        }
    }
    return false;
}

static bool dk_plan_has(const dk_plan *plan, const dk_service *svc)
{
    for (size_t i = 0; i < plan->n; i++)
        if (plan->local[i] == svc)
            return true;
    return false;
}

static int dk_open_database(dk_app *app, const dk_config *c, int pool, const dk_plan *plan)
{
    char *url = dk_database_url(c);
    app->db.ops = dk_db_ops_for_url(url);
    if (!app->db.ops) {
        fprintf(stderr,
                "config: database.url: unsupported scheme (use postgres://… or sqlite:PATH)\n");
        dk_free(url);
        return DK_EXIT_USAGE;
    }
    if (app->db.ops->engine == DK_DB_SQLITE && !(dk_config_is_set(c, "database.url"))) {
        if (dk_mkdir_p(dk_config_str(c, "storage.data_dir")) != 0) {
            fprintf(stderr, "error: cannot create the data directory %s: %s\n",
                    dk_config_str(c, "storage.data_dir"), strerror(errno));
            dk_free(url);
            return -1;
        }
    }
    /* a process sees only the schemas of the services it runs */
    char search_path[128] = "";
    for (size_t i = 0; i < plan->n; i++) {
        size_t n = strlen(search_path);
        snprintf(search_path + n, sizeof search_path - n, "%s,", plan->local[i]->name);
    }
    size_t n = strlen(search_path);
    snprintf(search_path + n, sizeof search_path - n, "public");
    dk_db_options o = {
        .url = url,
        .pool_size = pool,
        .acquire_timeout_ms = (int)dk_config_int(c, "database.acquire_timeout"),
        .connect_timeout_ms = (int)dk_config_int(c, "database.connect_timeout"),
        .statement_timeout_ms = (int)dk_config_int(c, "database.statement_timeout"),
        .search_path = search_path,
    };
    dk_status st = app->db.ops->open(&o, &app->db.db);
    dk_free(url);
    if (st == DK_E_VALIDATION) {
        fprintf(stderr, "config: database.url: not a valid %s URL\n", app->db.ops->name);
        return DK_EXIT_USAGE;
    }
    if (st != DK_OK) {
        fprintf(stderr, "error: cannot open the database (%s)\n", dk_status_title(st));
        return 1;
    }
    return 0;
}

/* Why a database call failed, for the user: the server's or the network's own words when a
 * connection could not be made (host, port, refused, authentication, missing database). */
static void dk_db_explain(const dk_app *app, dk_status st, char *buf, size_t cap)
{
    char why[256];
    if (st == DK_E_UNAVAILABLE && app->db.ops->connect_error &&
        app->db.ops->connect_error(app->db.db, why, sizeof why)) {
        size_t n = strlen(why);
        while (n > 0 && (why[n - 1] == '\n' || why[n - 1] == ' '))
            why[--n] = '\0';
        for (char *p = why; *p; p++)
            if (*p == '\n' || *p == '\t')
                *p = ' ';
        snprintf(buf, cap, "cannot reach the database: %s", why);
        return;
    }
    snprintf(buf, cap, "%s", dk_status_title(st));
}

static int dk_migrate_plan(dk_app *app, const dk_plan *plan)
{
    for (size_t i = 0; i < plan->n; i++) {
        const dk_service *svc = plan->local[i];
        int applied = 0;
        dk_status st =
            dk_migrate_apply(&app->db, svc->name, svc->migrations, svc->nmigrations, &applied);
        if (st != DK_OK) {
            char why[320];
            dk_db_explain(app, st, why, sizeof why);
            dk_log_error("migrations of %s failed: %s", svc->name, why);
            fprintf(stderr, "error: migrations of %s failed: %s\n", svc->name, why);
            return -1;
        }
        dk_log_info("migrations of %s: %d applied, %zu known", svc->name, applied,
                    svc->nmigrations);
    }
    return 0;
}

/* On PostgreSQL the schema is `docket migrate`'s job: refuse to serve an old schema. */
static int dk_check_migrated(dk_app *app, const dk_plan *plan)
{
    dk_arena *a = dk_arena_new();
    int rc = 0;
    for (size_t i = 0; i < plan->n && rc == 0; i++) {
        const dk_service *svc = plan->local[i];
        const char *p[] = {svc->name};
        dk_db_rows *rows = NULL;
        dk_status st = dk_sql(&app->db, a,
                              "SELECT COALESCE(MAX(version), 0) FROM public.docket_migrations "
                              "WHERE service = $1",
                              1, p, &rows);
        int64_t have = st == DK_OK && rows->nrows == 1 ? dk_sql_get_int(rows, 0, 0) : -1;
        int64_t want = svc->migrations[svc->nmigrations - 1].version;
        if (st == DK_E_UNAVAILABLE) {
            char why[320];
            dk_db_explain(app, st, why, sizeof why);
            fprintf(stderr, "error: %s\n", why);
            rc = -1;
        } else if (have < want) {
            dk_log_error("the database schema of %s is at version %lld, this binary needs %lld: "
                         "run `docket migrate` first",
                         svc->name, (long long)(have < 0 ? 0 : have), (long long)want);
            rc = -1;
        }
    }
    dk_arena_free(a);
    return rc;
}

static int dk_open_store(dk_app *app, const dk_config *c, int pool)
{
    const char *url = dk_config_str(c, "redis.url");
    app->store.ops = (url && *url) ? &dk_kv_redis_ops : &dk_kv_memory_ops;
    int rpool = (int)dk_config_int(c, "redis.pool_size");
    dk_kv_options o = {
        .url = url,
        .tls_ca_file = dk_config_str(c, "redis.tls_ca_file"),
        .pool_size = rpool > 0 ? rpool : pool,
        .timeout_ms = (int)dk_config_int(c, "redis.timeout"),
        .key_prefix = "docket:",
    };
    dk_status st = app->store.ops->open(&o, &app->store.kv);
    if (st == DK_E_VALIDATION || st == DK_E_BAD_REQUEST) {
        fprintf(stderr, "config: redis.url: not a valid Redis URL "
                        "(redis://[user:password@]host:port[/db], or rediss://… for TLS)\n");
        return DK_EXIT_USAGE;
    }
    if (st != DK_OK) {
        fprintf(stderr, "error: cannot open the cache (%s)\n", dk_status_title(st));
        return 1;
    }
    return 0;
}

/* Object storage for the users service (avatars): S3 when s3.endpoint and s3.bucket are set,
 * else <storage.data_dir>/objects. A store that refuses our credentials stops the start (a
 * configuration error, said plainly); one that does not answer yet is only a warning — avatar
 * requests answer 503 until it does. */
static int dk_open_blobs(dk_app *app, const dk_config *c, const dk_plan *plan)
{
    if (!dk_plan_has(plan, &dk_users_service))
        return 0;
    const char *endpoint = dk_config_str(c, "s3.endpoint");
    const char *bucket = dk_config_str(c, "s3.bucket");
    bool s3 = (endpoint && *endpoint) || (bucket && *bucket);
    if (s3 && !(endpoint && *endpoint && bucket && *bucket)) {
        fprintf(stderr, "config: s3.endpoint and s3.bucket go together: set both (S3) or "
                        "neither (objects in the data directory)\n");
        return -1;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/objects", dk_config_str(c, "storage.data_dir"));
    dk_blob_options o = {
        .dir = dir,
        .endpoint = endpoint,
        .bucket = bucket,
        .region = dk_config_str(c, "s3.region"),
        .url_style = dk_config_str(c, "s3.url_style"),
        .access_key_id = dk_config_str(c, "s3.access_key_id"),
        .secret_access_key = dk_config_str(c, "s3.secret_access_key"),
        .session_token = dk_config_str(c, "s3.session_token"),
        .connect_timeout_ms = (int)dk_config_int(c, "s3.connect_timeout"),
        .timeout_ms = (int)dk_config_int(c, "s3.timeout"),
        .max_attempts = (int)dk_config_int(c, "s3.max_attempts"),
        .backoff_ms = (int)dk_config_int(c, "s3.retry_backoff"),
    };
    app->blobs.ops = s3 ? &dk_blob_s3_ops : &dk_blob_fs_ops;
    dk_blob_err err = {""};
    if (app->blobs.ops->open(&o, &app->blobs.blob, &err) != DK_OK) {
        fprintf(stderr, "error: object storage (%s): %s\n", app->blobs.ops->name, err.text);
        app->blobs.blob = NULL;
        return -1;
    }
    dk_status st = app->blobs.ops->ping(app->blobs.blob, &err);
    if (st == DK_E_FORBIDDEN) {
        fprintf(stderr, "error: object storage (%s): %s\n", app->blobs.ops->name, err.text);
        return -1;
    }
    if (st != DK_OK)
        dk_log_warn("object storage (%s) not usable yet: %s", app->blobs.ops->name, err.text);
    else
        dk_log_info("object storage: %s", s3 ? "s3" : dir);
    return 0;
}

/* Events: in-process when everything runs here; Redis Streams between split processes. */
static int dk_open_bus(dk_app *app, const dk_config *c, const dk_plan *plan)
{
    const char *url = dk_config_str(c, "redis.url");
    bool split = strcmp(plan->process, "all") != 0;
    app->bus.ops = (split && url && *url) ? &dk_events_redis_ops : &dk_events_inproc_ops;
    char consumer[128], host[64] = "docket";
    (void)gethostname(host, sizeof host - 1);
    snprintf(consumer, sizeof consumer, "%s-%ld", host, (long)getpid());
    dk_events_options eo = {.url = url,
                            .tls_ca_file = dk_config_str(c, "redis.tls_ca_file"),
                            .group = plan->process,
                            .consumer = consumer,
                            .timeout_ms = (int)dk_config_int(c, "redis.timeout")};
    if (app->bus.ops->open(&eo, &app->bus.ev) != DK_OK) {
        fprintf(stderr, "error: cannot open the event bus\n");
        app->bus.ev = NULL;
        return -1;
    }
    return 0;
}

/* The account deletion guard over HTTP when tasks runs elsewhere (asked by users). */
static int dk_remote_guard(dk_app *app, const dk_config *c, const dk_plan *plan,
                           dk_users_http **ret_guard)
{
    const char *urls = dk_config_str(c, "gateway.tasks_url");
    if (dk_plan_has(plan, &dk_tasks_service) || !dk_plan_has(plan, &dk_users_service) || !urls ||
        !*urls)
        return 0;
    if (dk_users_http_new(urls, app->tokens, plan->process,
                          (int)dk_config_int(c, "gateway.connect_timeout"),
                          (int)dk_config_int(c, "gateway.timeout"), ret_guard) != DK_OK) {
        fprintf(stderr, "config: gateway.tasks_url: not a usable list of base URLs\n");
        return -1;
    }
    dk_app_register_port(app, DK_ACCOUNT_GUARD, &dk_account_guard_http_ops, *ret_guard);
    return 0;
}

/* Services of other processes: the users directory over HTTP when users runs elsewhere. */
static int dk_remote_ports(dk_app *app, const dk_config *c, const dk_plan *plan,
                           dk_users_http **ret_users, dk_users_http **ret_guard)
{
    if (dk_remote_guard(app, c, plan, ret_guard) != 0)
        return -1;
    if (dk_plan_has(plan, &dk_users_service))
        return 0;
    const char *urls = dk_config_str(c, "gateway.users_url");
    if (!urls || !*urls)
        return 0; /* a service that needs it says so when it starts */
    dk_status st = dk_users_http_new(urls, app->tokens, plan->process,
                                     (int)dk_config_int(c, "gateway.connect_timeout"),
                                     (int)dk_config_int(c, "gateway.timeout"), ret_users);
    if (st != DK_OK) {
        fprintf(stderr, "config: gateway.users_url: not a usable list of base URLs\n");
        return -1;
    }
    dk_app_register_port(app, DK_USERS_DIRECTORY, &dk_users_directory_http_ops, *ret_users);
    return 0;
}

/* The mailer of this process: SMTP when smtp.url is set, else .eml files in <data_dir>/mail. */
static int dk_open_mailer(dk_app *app, const dk_config *c, dk_mailer *m)
{
    const char *url = dk_config_str(c, "smtp.url");
    dk_status st;
    if (url && *url) {
        m->ops = &dk_mailer_smtp_ops;
        st = dk_mailer_smtp_new(url, dk_config_int(c, "notification.webhook_timeout"), &m->h);
        if (st != DK_OK) {
            fprintf(stderr, "config: smtp.url must be smtp://[user:password@]host[:port] or "
                            "smtps://...\n");
            m->ops = NULL;
            return -1;
        }
    } else {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/mail", dk_config_str(c, "storage.data_dir"));
        m->ops = &dk_mailer_file_ops;
        st = dk_mailer_file_new(dir, &m->h);
        if (st != DK_OK) {
            fprintf(stderr, "error: cannot create the mail directory %s: %s\n", dir,
                    strerror(errno));
            m->ops = NULL;
            return -1;
        }
    }
    dk_app_register_port(app, DK_MAILER, m->ops, m->h);
    return 0;
}

static int dk_default_port(const dk_plan *plan)
{
    if (plan->gateway || strcmp(plan->process, "all") == 0)
        return 3000;
    return plan->local[0]->default_port;
}

/* OTLP trace export (core/trace.h) from the otel.* rows; non-zero on a bad setting. */
static int dk_start_tracing(const dk_config *c, const char *process)
{
    char name[64];
    snprintf(name, sizeof name, "docket-%s", process);
    const char *sn = dk_config_str(c, "otel.service_name");
    char *end = NULL;
    const char *ratio_text = dk_config_str(c, "otel.traces_sampler_arg");
    double ratio = strtod(ratio_text, &end);
    if (!end || end == ratio_text || *end) {
        fprintf(stderr, "config: otel.traces_sampler_arg: expected a number between 0 and 1\n");
        return DK_EXIT_USAGE;
    }
    bool own_name = !sn || !*sn;
    const char *attrs = dk_config_str(c, "otel.resource_attributes");
    if (own_name && attrs && strstr(attrs, "service.name="))
        sn = NULL; /* the resource attributes name it */
    else if (own_name)
        sn = name;
    dk_trace_options o = {
        .endpoint = dk_config_str(c, "otel.endpoint"),
        .service_name = sn,
        .resource_attributes = attrs,
        .headers = dk_config_str(c, "otel.headers"),
        .protocol = dk_config_str(c, "otel.protocol"),
        .sampler = dk_config_str(c, "otel.traces_sampler"),
        .sampler_ratio = ratio,
        .max_queue = (int)dk_config_int(c, "otel.max_queue_size"),
        .batch_size = (int)dk_config_int(c, "otel.max_export_batch_size"),
        .schedule_delay_ms = dk_config_int(c, "otel.schedule_delay"),
        .export_timeout_ms = dk_config_int(c, "otel.export_timeout"),
    };
    char err[256] = "";
    if (dk_trace_start(&o, err, sizeof err) != DK_OK) {
        fprintf(stderr, "config: %s\n", err);
        return DK_EXIT_USAGE;
    }
    if (dk_trace_enabled())
        dk_log_info("exporting traces to %s as %s", o.endpoint, sn ? sn : "(resource attributes)");
    return 0;
}

static int dk_run(dk_config *c, const dk_plan *plan)
{
    int rc = 1;
    dk_app app = {0};
    app.config = c;
    app.process = plan->process;
    int threads = dk_server_threads(c);
    int pool = (int)dk_config_int(c, "database.pool_size");
    if (pool <= 0)
        pool = threads + 2;
    void *states[DK_NSERVICES] = {0};
    size_t started = 0, running = 0;
    dk_http_server *srv = NULL;
    dk_gateway *gw = NULL;
    dk_console *console = NULL;
    dk_users_http *users_http = NULL, *guard_http = NULL;
    dk_proxy_list proxies = {0};
    dk_mailer mailer = {0};
    char secret[512];
    bool all = strcmp(plan->process, "all") == 0;

    /* SIGTERM/SIGINT are taken by sigwait below: block them before any thread starts */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* Split processes share revocations, rate-limit counters and events only through Redis:
     * without it a logout would never reach the gateway. */
    const char *redis_url = dk_config_str(c, "redis.url");
    if (!all && !(redis_url && *redis_url)) {
        fprintf(stderr,
                "config: redis.url (REDIS_URL) is required by `docket %s`: split processes "
                "share revocations, rate limits and events through Redis\n",
                plan->process);
        return DK_EXIT_USAGE;
    }

    if (dk_start_tracing(c, plan->process) != 0)
        return DK_EXIT_USAGE;
    if (dk_proxy_list_parse(dk_config_str(c, "server.trusted_proxies"), &proxies) != DK_OK) {
        fprintf(stderr, "config: server.trusted_proxies: not a list of addresses or CIDRs\n");
        rc = DK_EXIT_USAGE;
        goto out;
    }
    if (plan->n > 0) {
        int orc = dk_open_database(&app, c, pool, plan);
        if (orc != 0) {
            rc = orc;
            goto out;
        }
        if (app.db.ops->engine == DK_DB_SQLITE ? dk_migrate_plan(&app, plan)
                                               : dk_check_migrated(&app, plan))
            goto out;
    }
    int src = dk_open_store(&app, c, pool);
    if (src != 0) {
        rc = src;
        goto out;
    }
    if (dk_session_guard_start(&app.store) != DK_OK) {
        dk_log_error("could not start the session check cache");
        goto out;
    }
    int jrc = dk_jwt_secret(c, secret, sizeof secret);
    if (jrc != 0) {
        rc = jrc == DK_EXIT_USAGE ? DK_EXIT_USAGE : 1;
        goto out;
    }
    app.tokens = dk_tokens_new((const unsigned char *)secret, strlen(secret),
                               dk_config_int(c, "auth.jwt_expiry"));
    dk_hmac_sha256(secret, strlen(secret), "docket-cursor-v1", 16, app.cursor_key);
    dk_hmac_sha256(secret, strlen(secret), "docket-mfa-v1", 13, app.mfa_fallback_key);
    memset(secret, 0, sizeof secret);
    app.refresh_ttl_ms = dk_config_int(c, "auth.refresh_expiry");
    app.rate_limit_enabled = dk_config_bool(c, "rate_limiting.enabled");
    app.rate_limit_window_ms = dk_config_int(c, "rate_limiting.window_ms");
    app.rate_limit_max = dk_config_int(c, "rate_limiting.max_requests");
    if (dk_open_bus(&app, c, plan) != 0)
        goto out;
    if (dk_remote_ports(&app, c, plan, &users_http, &guard_http) != 0)
        goto out;
    if (dk_open_blobs(&app, c, plan) != 0)
        goto out;
    if ((dk_plan_has(plan, &dk_auth_service) || dk_plan_has(plan, &dk_notifications_service)) &&
        dk_open_mailer(&app, c, &mailer) != 0)
        goto out;

    for (; started < plan->n; started++) {
        dk_status st = plan->local[started]->init(&app, &states[started]);
        if (st != DK_OK) {
            dk_log_error("service %s failed to start: %s", plan->local[started]->name,
                         dk_status_title(st));
            goto out;
        }
    }
    if (app.bus.ops->start(app.bus.ev) != DK_OK) {
        dk_log_error("the event bus failed to start");
        goto out;
    }
    for (size_t i = 0; i < started; i++)
        if (plan->local[i]->start)
            plan->local[i]->start(states[i]);
    running = started;
    if (plan->gateway &&
        dk_gateway_new(&app, dk_services, DK_NSERVICES, &dk_http_client_curl_ops, &gw) != DK_OK)
        goto out;

    int port = (int)dk_config_int(c, "server.port");
    bool edge = all || plan->gateway; /* the public listener */
    dk_http_options ho = {
        .host = dk_config_str(c, "server.host"),
        .port = port > 0 ? port : dk_default_port(plan),
        .threads = threads,
        .body_limit = (size_t)dk_config_int(c, "server.body_limit"),
        .drain_timeout_ms = (int)dk_config_int(c, "server.drain_timeout"),
        .process_name = plan->process,
        .cors_origins = edge ? dk_config_str(c, "gateway.cors_origins") : NULL,
        .edge_rate_limit_rps = edge ? dk_config_int(c, "gateway.rate_limit_rps") : 0,
        .trust_forwarded_for = dk_config_bool(c, "server.trust_forwarded_for"),
        .reuse_port = dk_config_bool(c, "server.reuse_port"),
        .access_log = dk_config_bool(c, "log.access"),
        .header_timeout_ms = (int)dk_config_int(c, "server.header_timeout"),
        .max_connections = (int)dk_config_int(c, "server.max_connections"),
        .max_connections_per_ip = edge ? (int)dk_config_int(c, "server.max_connections_per_ip") : 0,
        .trusted_proxies = proxies.n > 0 ? &proxies : NULL,
        .forwarded_header = strcmp(dk_config_str(c, "server.forwarded_header"), "forwarded") == 0
                                ? DK_FWD_FORWARDED
                                : DK_FWD_X_FORWARDED_FOR,
        .offload_workers = dk_plan_has(plan, &dk_auth_service) ? dk_hash_workers(c) : 0,
        .offload_queue = (int)dk_config_int(c, "auth.hash_queue"),
    };
    srv = dk_http_new(&ho, &app);
    for (size_t i = 0; i < plan->n; i++) {
        const dk_service *svc = plan->local[i];
        dk_http_mount(srv, svc->name, svc->prefix, svc->routes, svc->nroutes, states[i]);
        if (!all && svc->ninternal_routes > 0)
            dk_http_mount(srv, svc->name, svc->internal_prefix, svc->internal_routes,
                          svc->ninternal_routes, states[i]);
    }
    if (gw)
        dk_gateway_mount(gw, srv);
    if (edge) { /* the web console at / */
        console = dk_console_new();
        dk_console_mount(console, srv);
    }
    if (app.db.ops) {
        dk_http_add_ready_check(srv, "database", dk_ready_db, &app);
        dk_metrics_add_collector(dk_collect_pool, &app);
    }
    dk_http_add_ready_check(srv, "cache", dk_ready_kv, &app);
    if (dk_http_start(srv) != DK_OK) {
        fprintf(stderr, "error: %s\n", dk_http_start_error(srv));
        goto out;
    }
    dk_log_info("docket %s listening on http://%s:%d (database: %s, cache: %s, %d threads)",
                plan->process, ho.host, dk_http_port(srv), app.db.ops ? app.db.ops->name : "none",
                app.store.ops->name, threads);
    if (edge) {
        const char *h = ho.host;
        bool any = !strcmp(h, "0.0.0.0") || !strcmp(h, "::") || !*h;
        dk_log_info("open http://%s:%d/ for the web console; try: curl http://%s:%d/health (the "
                    "API is described at /openapi.yaml)",
                    any ? "localhost" : h, dk_http_port(srv), any ? "localhost" : h,
                    dk_http_port(srv));
    }

    int sig = 0;
    sigwait(&sigs, &sig);
    dk_log_info("received %s: draining in-flight requests", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    dk_http_drain(srv);
    /* forwarded calls still running after the drain are failed now, which resumes their
     * connections before the server stops */
    dk_gateway_free(gw);
    gw = NULL;
    dk_http_stop(srv);
    rc = 0;
    dk_log_info("stopped");
out:
    dk_gateway_free(gw);
    dk_http_free(srv);
    dk_console_free(console); /* its bytes were the server's responses */
    dk_proxy_list_release(&proxies);
    dk_metrics_clear_collectors();
    while (running > 0) {
        running--;
        if (plan->local[running]->stop)
            plan->local[running]->stop(states[running]);
    }
    /* the bus next: its consumer thread may still call into the services */
    if (app.bus.ev)
        app.bus.ops->close(app.bus.ev);
    while (started > 0) {
        started--;
        plan->local[started]->shutdown(states[started]);
    }
    dk_users_http_free(users_http);
    if (app.blobs.blob)
        app.blobs.ops->close(app.blobs.blob);
    if (mailer.ops)
        mailer.ops->free(mailer.h);
    dk_users_http_free(guard_http);
    dk_tokens_free(app.tokens);
    dk_session_guard_stop();
    if (app.store.kv)
        app.store.ops->close(app.store.kv);
    if (app.db.db)
        app.db.ops->close(app.db.db);
    dk_trace_stop(); /* exports the spans still queued (bounded by otel.export_timeout) */
    return rc;
}

static int dk_run_migrate(dk_config *c, const dk_plan *plan)
{
    dk_app app = {0};
    app.config = c;
    int orc = dk_open_database(&app, c, 1, plan);
    if (orc != 0)
        return orc;
    int rc = dk_migrate_plan(&app, plan) == 0 ? 0 : 1;
    app.db.ops->close(app.db.db);
    return rc;
}

/* docket backup PATH | docket restore PATH — the embedded (SQLite) database. */
static int dk_run_backup(dk_config *c, bool restore, const char *path)
{
    dk_plan plan;
    (void)dk_plan_for("all", &plan);
    dk_app app = {0};
    app.config = c;
    int orc = dk_open_database(&app, c, 1, &plan);
    if (orc != 0)
        return orc;
    int rc = 1;
    dk_db_conn *conn = NULL;
    dk_status st = app.db.ops->acquire(app.db.db, &conn);
    if (st == DK_OK) {
        double t0 = dk_mono_s();
        st = restore ? app.db.ops->restore(conn, path) : app.db.ops->backup(conn, path);
        if (st == DK_OK) {
            dk_log_info("%s %s in %.3f s", restore ? "restored from" : "backed up to", path,
                        dk_mono_s() - t0);
            rc = 0;
        } else if (st == DK_E_BAD_REQUEST) {
            fprintf(stderr,
                    "docket %s: the database is PostgreSQL; use pg_dump/pg_restore "
                    "(docs/operations.md)\n",
                    restore ? "restore" : "backup");
            rc = DK_EXIT_USAGE;
        } else {
            fprintf(stderr, "docket %s: %s: %s\n", restore ? "restore" : "backup", path,
                    app.db.ops->last_error(conn));
        }
        app.db.ops->release(app.db.db, conn);
    } else {
        fprintf(stderr, "docket: cannot open the database (%s)\n", dk_status_title(st));
    }
    if (rc == 0 && restore) {
        /* a backup from an older version gets the newer migrations now */
        rc = dk_migrate_plan(&app, &plan) == 0 ? 0 : 1;
    }
    app.db.ops->close(app.db.db);
    return rc;
}

/* Memory: Argon2id takes auth.argon2_memory_kib (19 MiB) per hash. Large blocks are mmap'd
 * and unmapped when freed (a fixed threshold stops glibc from raising it and keeping such
 * blocks on the heap), and two malloc arenas serve every thread, so RSS stays close to what
 * is in use. */
static void dk_tune_malloc(void)
{
    (void)mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    (void)mallopt(M_TRIM_THRESHOLD, 512 * 1024);
    (void)mallopt(M_ARENA_MAX, 2);
}

int main(int argc, char **argv)
{
    dk_tune_malloc();
    if (argc < 2) {
        dk_usage(stderr);
        return DK_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        if (argc > 2) {
            const dk_command_help *h = dk_command_help_find(argv[2]);
            if (!h) {
                fprintf(stderr, "docket help: unknown command '%s' (see `docket help`)\n", argv[2]);
                return DK_EXIT_USAGE;
            }
            dk_command_usage(stdout, h);
            return 0;
        }
        dk_usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("docket %s\n", DK_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "config-docs")) {
        dk_config_print_markdown(stdout);
        return 0;
    }
    if (!strcmp(cmd, "routes")) {
        /* the public route tables, as the gateway and the OpenAPI coverage test read them */
        printf("GET /health\nGET /ready\nGET /metrics\nGET /openapi.yaml\nGET /openapi.json\n");
        for (size_t i = 0; i < DK_NSERVICES; i++) {
            const dk_service *svc = dk_services[i];
            for (size_t r = 0; r < svc->nroutes; r++)
                printf("%s %s%s\n", svc->routes[r].method, svc->prefix,
                       strcmp(svc->routes[r].pattern, "/") == 0 ? "" : svc->routes[r].pattern);
        }
        return 0;
    }
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            const dk_command_help *h = dk_command_help_find(cmd);
            if (h)
                dk_command_usage(stdout, h);
            else
                dk_usage(stdout);
            return h || !strcmp(cmd, "help") ? 0 : DK_EXIT_USAGE;
        }
    }
    dk_plan plan;
    bool backup = !strcmp(cmd, "backup") || !strcmp(cmd, "restore");
    bool known = dk_plan_for(cmd, &plan) || !strcmp(cmd, "config") || backup;
    if (!known) {
        fprintf(stderr, "docket: unknown command '%s' (see `docket help`)\n", cmd);
        return DK_EXIT_USAGE;
    }
    const char *path = NULL;
    int first_flag = 2;
    if (backup) {
        if (argc < 3 || strncmp(argv[2], "--", 2) == 0 || !argv[2][0]) {
            fprintf(stderr, "docket %s: which file? usage: docket %s PATH [--KEY=VALUE ...]\n", cmd,
                    cmd);
            return DK_EXIT_USAGE;
        }
        path = argv[2];
        first_flag = 3;
    }
    char err[512] = "";
    dk_config *c = NULL;
    if (dk_config_load(argc - first_flag, argv + first_flag, &c, err, sizeof err) != DK_OK) {
        fprintf(stderr, "%s\n", err);
        return DK_EXIT_USAGE;
    }
    dk_log_level level = DK_LOG_INFO;
    (void)dk_log_level_parse(dk_config_str(c, "log.level"), &level);
    dk_log_init(cmd, level);
    int rc;
    if (!strcmp(cmd, "config")) {
        dk_config_print_effective(c, stdout);
        rc = 0;
    } else if (backup) {
        rc = dk_run_backup(c, !strcmp(cmd, "restore"), path);
    } else if (!strcmp(cmd, "migrate")) {
        rc = dk_run_migrate(c, &plan);
    } else {
        rc = dk_run(c, &plan);
    }
    dk_config_free(c);
    return rc;
}
