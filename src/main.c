/* docket — the one binary. `docket all` runs every service in one process; `docket migrate`
 * applies the database migrations; `docket config` prints the effective configuration. */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdatomic.h>
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
#include "adapters/resolver.h"
#include "adapters/users_http.h"
#include "cli/database.h"
#include "cli/help.h"
#include "cli/plan.h"
#include "services/console/console.h"
#include "services/gateway/gateway.h"
#include "services/service.h"
#include "core/banned.h"

#define DK_VERSION "0.1.0"

/* The services in start order (a service starts after those it depends on). */
static const dk_service *const dk_services[] = {&dk_users_service, &dk_auth_service,
                                                &dk_tasks_service, &dk_notifications_service};
#define DK_NSERVICES (sizeof dk_services / sizeof dk_services[0])
_Static_assert(DK_NSERVICES <= DK_PLAN_SERVICES, "dk_plan has room for every service");

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
    if (dk_cli_dir_make(dir) != 0) {
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

/* /ready answers all its probers (every gateway, the orchestrator) from at most one check of
 * each dependency a second: one that answered within DK_READY_REUSE_MS is taken as up; a
 * failure is never reused. Each gateway probes each upstream once a second, so without this
 * every gateway added a SELECT 1 and a Redis PING per service per second. */
#define DK_READY_REUSE_MS 1000
static _Atomic int64_t dk_ready_db_ok_until, dk_ready_kv_ok_until;

static dk_status dk_ready_db(void *ctx, char *reason, size_t cap)
{
    dk_app *app = ctx;
    int64_t now = dk_mono_ms();
    if (now < atomic_load(&dk_ready_db_ok_until))
        return DK_OK;
    dk_status st = app->db.ops->ping(app->db.db, 1000);
    if (st != DK_OK)
        snprintf(reason, cap, "database unreachable (%s)", dk_status_title(st));
    else
        atomic_store(&dk_ready_db_ok_until, now + DK_READY_REUSE_MS);
    return st;
}

static dk_status dk_ready_kv(void *ctx, char *reason, size_t cap)
{
    dk_app *app = ctx;
    int64_t now = dk_mono_ms();
    if (now < atomic_load(&dk_ready_kv_ok_until))
        return DK_OK;
    dk_status st = app->store.ops->ping(app->store.kv, 1000);
    if (st != DK_OK)
        snprintf(reason, cap, "cache unreachable (%s)", dk_status_title(st));
    else
        atomic_store(&dk_ready_kv_ok_until, now + DK_READY_REUSE_MS);
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

/* The plan of a command: all the services, or one (split mode). */
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

/* Webhooks (notifications): their own HTTP client (calls to addresses users chose are kept
 * apart from the gateway's pool) and the name resolver, at most DK_RESOLVER_LOOKUPS at once. */
#define DK_RESOLVER_LOOKUPS 32
static int dk_open_webhook_ports(dk_app *app, const dk_plan *plan, dk_http_client **ret_http,
                                 dk_resolver **ret_resolver)
{
    if (!dk_plan_has(plan, &dk_notifications_service))
        return 0;
    dk_http_client_options o = {.max_connections = 8};
    if (dk_http_client_curl_ops.open(&o, ret_http) != DK_OK ||
        dk_resolver_getaddrinfo_new(DK_RESOLVER_LOOKUPS, ret_resolver) != DK_OK) {
        fprintf(stderr, "error: cannot start the webhook client\n");
        return -1;
    }
    dk_app_register_port(app, DK_HTTP_CLIENT, &dk_http_client_curl_ops, *ret_http);
    dk_app_register_port(app, DK_RESOLVER, &dk_resolver_getaddrinfo_ops, *ret_resolver);
    return 0;
}

static int dk_default_port(const dk_plan *plan)
{
    if (plan->gateway || strcmp(plan->process, "all") == 0)
        return 3000;
    return plan->local[0]->default_port;
}

/* OTLP trace export (core/trace.h) from the otel.* rows; non-zero on a bad setting. With an
 * endpoint the exporter posts through an HTTP client of its own (one kept-alive connection to
 * the collector), opened here and closed by the caller after dk_trace_stop: the spans of the
 * whole run, shutdown included, go out through it. */
static int dk_start_tracing(const dk_config *c, const char *process, dk_http_client **ret_http)
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
    if (o.endpoint && *o.endpoint) {
        dk_http_client_options ho = {.max_connections = 1};
        if (dk_http_client_curl_ops.open(&ho, ret_http) != DK_OK) {
            fprintf(stderr, "error: cannot start the trace exporter's HTTP client\n");
            return 1;
        }
        o.http_ops = &dk_http_client_curl_ops;
        o.http = *ret_http;
    }
    char err[256] = "";
    if (dk_trace_start(&o, err, sizeof err) != DK_OK) {
        fprintf(stderr, "config: %s\n", err);
        if (*ret_http)
            dk_http_client_curl_ops.close(*ret_http);
        *ret_http = NULL;
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
        pool = threads + 6; /* + relays, schedulers, the four runners of grouped writes */
    void *states[DK_NSERVICES] = {0};
    size_t started = 0, running = 0;
    dk_http_server *srv = NULL;
    dk_gateway *gw = NULL;
    dk_console *console = NULL;
    dk_users_http *users_http = NULL, *guard_http = NULL;
    dk_proxy_list proxies = {0};
    dk_mailer mailer = {0};
    dk_http_client *webhook_http = NULL, *trace_http = NULL;
    dk_resolver *resolver = NULL;
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

    int trc = dk_start_tracing(c, plan->process, &trace_http);
    if (trc != 0)
        return trc;
    if (dk_proxy_list_parse(dk_config_str(c, "server.trusted_proxies"), &proxies) != DK_OK) {
        fprintf(stderr, "config: server.trusted_proxies: not a list of addresses or CIDRs\n");
        rc = DK_EXIT_USAGE;
        goto out;
    }
    if (plan->n > 0) {
        int orc = dk_cli_database_open(&app, c, pool, plan);
        if (orc != 0) {
            rc = orc;
            goto out;
        }
        if (app.db.ops->engine == DK_DB_SQLITE ? dk_cli_database_migrate(&app, plan)
                                               : dk_cli_database_check(&app, plan))
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
    if (dk_open_webhook_ports(&app, plan, &webhook_http, &resolver) != 0)
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
    for (size_t i = 0; i < running; i++)
        if (plan->local[i]->drained)
            plan->local[i]->drained(states[i]);
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
    if (webhook_http)
        dk_http_client_curl_ops.close(webhook_http);
    dk_resolver_getaddrinfo_ops.free(resolver);
    dk_users_http_free(guard_http);
    dk_tokens_free(app.tokens);
    dk_session_guard_stop();
    if (app.store.kv)
        app.store.ops->close(app.store.kv);
    if (app.db.db)
        app.db.ops->close(app.db.db);
    dk_trace_stop(); /* exports the spans still queued (bounded by otel.export_timeout) */
    if (trace_http)
        dk_http_client_curl_ops.close(trace_http);
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
        dk_cli_usage_print(stderr);
        return DK_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        if (argc > 2) {
            const dk_cli_command_help *h = dk_cli_command_help_find(argv[2]);
            if (!h) {
                fprintf(stderr, "docket help: unknown command '%s' (see `docket help`)\n", argv[2]);
                return DK_EXIT_USAGE;
            }
            dk_cli_command_help_print(stdout, h);
            return 0;
        }
        dk_cli_usage_print(stdout);
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
            const dk_cli_command_help *h = dk_cli_command_help_find(cmd);
            if (h)
                dk_cli_command_help_print(stdout, h);
            else
                dk_cli_usage_print(stdout);
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
        dk_plan all;
        (void)dk_plan_for("all", &all);
        rc = dk_cli_backup_run(c, &all, !strcmp(cmd, "restore"), path);
    } else if (!strcmp(cmd, "migrate")) {
        rc = dk_cli_migrate_run(c, &plan);
    } else {
        rc = dk_run(c, &plan);
    }
    dk_config_free(c);
    return rc;
}
