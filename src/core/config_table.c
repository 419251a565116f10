/* config_table.c — every configuration key of Docket, one row each (see core/config.h).
 * Rows of a section stay together; the order here is the order of --help and the docs. */
#include "core/config.h"

#include "core/banned.h"

#define MS_S  INT64_C(1000)
#define MS_M  (60 * MS_S)
#define MS_H  (60 * MS_M)
#define MS_D  (24 * MS_H)
#define B_KIB INT64_C(1024)
#define B_MIB (1024 * B_KIB)

#define ROW_STR(k, d, e, fl, text)                                                                 \
    {                                                                                              \
        .key = k, .type = DK_CFG_STRING, .def = d, .env = e, .flags = fl, .doc = text              \
    }
#define ROW_INT(k, d, lo, hi, text)                                                                \
    {                                                                                              \
        .key = k, .type = DK_CFG_INT, .def = d, .min = lo, .max = hi, .doc = text                  \
    }
#define ROW_BOOL(k, d, text)                                                                       \
    {                                                                                              \
        .key = k, .type = DK_CFG_BOOL, .def = d, .doc = text                                       \
    }
#define ROW_DUR(k, d, lo, hi, text)                                                                \
    {                                                                                              \
        .key = k, .type = DK_CFG_DURATION, .def = d, .min = lo, .max = hi, .doc = text             \
    }
#define ROW_SIZE(k, d, lo, hi, text)                                                               \
    {                                                                                              \
        .key = k, .type = DK_CFG_SIZE, .def = d, .min = lo, .max = hi, .doc = text                 \
    }

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const fwd_headers[] = {"x-forwarded-for", "forwarded", NULL};
static const char *const s3_url_styles[] = {"auto", "path", "virtual", NULL};

const dk_config_row dk_config_rows[] = {
    ROW_STR("server.host", "0.0.0.0", NULL, 0,
            "Address the HTTP server listens on (`0.0.0.0` = every IPv4 interface)."),
    ROW_INT("server.port", "0", 0, 65535,
            "TCP port; 0 = the command's default: 3000 `all` and `gateway`, 3001 `auth`, "
            "3002 `users`, 3003 `tasks`, 3004 `notifications`."),
    ROW_INT("server.threads", "0", 0, 256,
            "HTTP worker threads; 0 = 4 per usable CPU (handlers wait on the database). Usable "
            "CPUs: the CPUs the process may run on, capped by its cgroup CPU limit, rounded up."),
    ROW_SIZE("server.body_limit", "1MiB", B_KIB, 64 * B_MIB,
             "Largest request body accepted; a bigger one is answered 413."),
    ROW_DUR("server.drain_timeout", "10s", 0, 10 * MS_M,
            "On SIGTERM, how long in-flight requests may run before the process exits."),
    ROW_BOOL("server.trust_forwarded_for", "false",
             "Take the client IP from the last `X-Forwarded-For` entry (set it on services behind "
             "the Docket gateway or another trusted proxy, never on a public listener)."),
    ROW_STR("server.trusted_proxies", "", NULL, 0,
            "Peers (addresses or CIDRs, comma-separated, e.g. the ingress pods' "
            "`10.0.0.0/8`) whose forwarded header names the client; from the right, the first "
            "address outside these ranges is the client. Empty = none: the peer is the client."),
    {.key = "server.forwarded_header",
     .type = DK_CFG_STRING,
     .def = "x-forwarded-for",
     .doc = "The header the trusted proxies set: `x-forwarded-for`, or `forwarded` (RFC 7239). "
            "The other one is ignored.",
     .choices = fwd_headers},

    ROW_DUR("server.header_timeout", "10s", 100, 10 * MS_M,
            "A request head (request line and headers) must be complete this long after the "
            "connection opens or its request line arrives; a slower one is closed (slowloris)."),
    ROW_INT("server.max_connections", "10000", 16, 1000000,
            "Open connections a process serves; a request beyond them is answered 503 at once "
            "(the open-file limit is raised to fit)."),
    ROW_INT("server.max_connections_per_ip", "256", 0, 1000000,
            "Open connections one client address may hold at the public listener (`all`, "
            "`gateway`); more are refused. 0 = no limit: set it behind a proxy or load balancer "
            "that connects from few addresses. Services in split mode apply none."),
    ROW_BOOL("server.reuse_port", "false",
             "Let several processes listen on the same port (`SO_REUSEPORT`, for restarts without "
             "downtime); off, a taken port is an error."),

    ROW_STR("server.public_url", "http://localhost:3000", NULL, 0,
            "Public base URL of Docket (the gateway, as users reach it): links in e-mails "
            "(password reset, address verification) and the web console start with it."),

    ROW_STR("storage.data_dir", "./data", NULL, 0,
            "Directory for embedded data: the SQLite database, local objects and the generated JWT "
            "secret."),

    ROW_STR("database.url", "", "DATABASE_URL", DK_CFG_SECRET,
            "`postgres://user:password@host:5432/db` or `sqlite:PATH`; empty = "
            "`sqlite:<data_dir>/docket.db`."),
    ROW_INT("database.pool_size", "0", 0, 1024,
            "Database connections per process; 0 = one per server thread, plus six for "
            "background work (event relays, schedulers, grouped writes)."),
    ROW_DUR("database.acquire_timeout", "2s", 1, 10 * MS_M,
            "How long a request waits for a free pooled connection before it is answered 503."),
    ROW_DUR("database.connect_timeout", "2s", 1, 10 * MS_M,
            "Timeout for opening a database connection."),
    ROW_DUR("database.statement_timeout", "5s", 1, MS_H,
            "Longest one SQL statement may run before it is cancelled."),

    ROW_STR("redis.url", "", "REDIS_URL", DK_CFG_SECRET,
            "Redis for cache, counters, revocations and events: "
            "`redis://[user:password@]host:port[/db]`, or `rediss://…` for TLS; empty = "
            "in-process cache (`docket all` only: split processes refuse to start without it)."),
    ROW_STR("redis.tls_ca_file", "", "REDIS_TLS_CA_FILE", 0,
            "`rediss://`: PEM file of the CA certificates to trust (e.g. a private CA); empty = "
            "the system store, or the file named by `SSL_CERT_FILE`."),
    ROW_DUR("redis.timeout", "500ms", 1, 10 * MS_M, "Connect and command timeout for Redis."),
    ROW_INT("redis.pool_size", "0", 0, 1024,
            "Redis connections per process; 0 = one per server thread, plus two."),

    ROW_STR(
        "auth.jwt_secret", "", "JWT_SECRET", DK_CFG_SECRET,
        "HMAC key of the HS256 access tokens, the same for every service; empty = generated once "
        "and kept in the data directory."),
    ROW_DUR("auth.jwt_expiry", "15m", MS_S, MS_D, "Access-token lifetime (`expires_in`)."),
    ROW_DUR("auth.refresh_expiry", "7d", MS_M, 365 * MS_D,
            "Refresh-token lifetime (`refresh_expires_in`)."),
    ROW_INT("auth.max_sessions", "5", 1, 1000,
            "Active sessions per user; a login beyond it revokes the least recently used one."),
    ROW_INT("auth.argon2_memory_kib", "19456", 1024, 4194304, "Argon2id memory cost in KiB."),
    ROW_INT("auth.argon2_iterations", "2", 1, 100, "Argon2id time cost (passes over the memory)."),
    ROW_INT("auth.argon2_parallelism", "1", 1, 64, "Argon2id lanes (threads per hash)."),
    ROW_INT("auth.hash_workers", "0", 0, 256,
            "Threads that compute password hashes; 0 = one per usable CPU (see `server.threads`)."),
    ROW_INT("auth.hash_queue", "256", 0, 100000,
            "Logins that may wait for a hash worker; beyond it a login is answered 503."),

    ROW_DUR("auth.reset_token_ttl", "30m", MS_S, MS_D,
            "Lifetime of a password-reset token (the link in the e-mail)."),
    ROW_DUR("auth.verify_token_ttl", "24h", MS_S, 30 * MS_D,
            "Lifetime of an e-mail verification token."),
    ROW_DUR("auth.mail_interval", "1m", MS_S, MS_D,
            "At most one password-reset e-mail, and one verification e-mail, per address in this "
            "interval; requests in between are answered the same but send nothing."),
    ROW_STR("auth.mfa_key", "", NULL, DK_CFG_SECRET,
            "Secret from which the key that encrypts stored TOTP secrets is derived (HKDF-SHA256, "
            "AES-256-GCM), at least 32 characters; empty = derived from the JWT secret."),
    ROW_STR("auth.mfa_key_previous", "", NULL, DK_CFG_SECRET,
            "Former values of auth.mfa_key (or of the JWT secret), comma-separated: secrets "
            "encrypted with them are still read, and re-encrypted with the current key when used."),

    ROW_BOOL("rate_limiting.enabled", "true", "Rate-limit `/api/v1/auth/*` per client IP."),
    ROW_INT("rate_limiting.window_ms", "900000", 1000, 86400000,
            "Rate-limit window in milliseconds (900000 = 15 minutes)."),
    ROW_INT("rate_limiting.max_requests", "100", 1, 10000000,
            "Requests one client IP may make per window; beyond it 429."),

    {.key = "log.level",
     .type = DK_CFG_STRING,
     .def = "info",
     .doc = "Lowest level written to the JSON log on stdout.",
     .choices = log_levels},
    ROW_BOOL("log.access", "true",
             "One `info` line per request (method, route, status, duration, request id), like an "
             "access log; `false` logs only failed requests."),

    ROW_INT("gateway.rate_limit_rps", "100", 0, 10000000,
            "Requests per second the gateway admits per client IP; 0 = no limit."),
    ROW_STR("gateway.cors_origins", "", NULL, 0,
            "Origins allowed by CORS, comma-separated; empty = CORS off."),
    ROW_STR("gateway.auth_url", "", NULL, 0,
            "Split mode: base URLs of the auth service, comma-separated (e.g. "
            "`http://auth:3001`); the gateway balances over them."),
    ROW_STR("gateway.users_url", "", NULL, 0,
            "Split mode: base URLs of the users service, comma-separated (the gateway, and the "
            "auth and tasks services, which call it)."),
    ROW_STR("gateway.tasks_url", "", NULL, 0,
            "Split mode: base URLs of the tasks service, comma-separated (the gateway, and the "
            "users service, which asks it whether an account may be deleted)."),
    ROW_STR("gateway.notifications_url", "", NULL, 0,
            "Split mode: base URLs of the notifications service, comma-separated."),
    ROW_DUR("gateway.connect_timeout", "1s", 1, MS_M,
            "Timeout for connecting to an upstream service; then 503."),
    ROW_DUR("gateway.timeout", "10s", 1, 10 * MS_M,
            "Longest the gateway waits for an upstream response; then 504. On event-stream routes "
            "it bounds only the wait for the response headers."),
    ROW_INT("gateway.circuit_failures", "5", 1, 1000,
            "Consecutive failures after which an upstream is taken out of rotation."),
    ROW_DUR("gateway.circuit_cooldown", "5s", 100, 10 * MS_M,
            "How long an upstream stays out of rotation before it is tried again."),
    ROW_DUR("gateway.health_interval", "1s", 100, MS_M,
            "How often the gateway probes each upstream's `/ready`."),

    ROW_DUR("events.outbox_interval", "1s", 10, MS_M,
            "How often a service retries publishing outbox events the queue did not take (new "
            "events are published at once; an idle relay also looks every 30 s for events a "
            "process left behind when it died)."),

    ROW_INT("notification.due_soon_minutes", "60", 1, 525600,
            "A `task.due_soon` notification is sent this many minutes before `due_at`."),
    ROW_DUR("notification.scheduler_interval", "30s", MS_S, MS_D,
            "How often the scheduler looks for tasks coming due."),
    ROW_BOOL("notification.webhook_allow_private", "false",
             "Allow webhook URLs that resolve to loopback, private or link-local addresses."),
    ROW_INT("notification.webhook_max_attempts", "8", 1, 100,
            "Webhook and e-mail delivery attempts before a delivery is dead-lettered."),
    ROW_DUR("notification.webhook_backoff", "1s", 10, MS_H,
            "Delay before the first retry of a failed delivery; it doubles with each attempt."),
    ROW_DUR("notification.webhook_max_backoff", "1h", 10, MS_D,
            "Longest delay between two delivery attempts."),
    ROW_DUR("notification.webhook_timeout", "5s", 100, MS_M,
            "Timeout of one webhook call or SMTP conversation."),
    ROW_DUR("notification.delivery_interval", "1s", 10, MS_M,
            "Shortest wait of the delivery worker between two looks for due retries (new "
            "deliveries go at once; with nothing due it sleeps until the next retry is due, "
            "at most 30 s)."),
    ROW_DUR("notification.sse_heartbeat", "15s", 100, 10 * MS_M,
            "Interval of the heartbeat comments on `/api/v1/notifications/stream`."),
    ROW_INT("notification.sse_max_streams_per_user", "10", 1, 10000,
            "Open `/api/v1/notifications/stream` streams one user may hold in one process; "
            "opening one more ends their oldest."),

    ROW_STR("s3.endpoint", "", "S3_ENDPOINT", 0,
            "S3-compatible endpoint URL; empty = objects stored in the data directory."),
    ROW_STR("s3.bucket", "", "S3_BUCKET", 0, "Bucket that holds the objects (avatars)."),
    ROW_STR("s3.region", "us-east-1", "S3_REGION", 0, "Region used to sign S3 requests (SigV4)."),
    ROW_STR("s3.access_key_id", "", "AWS_ACCESS_KEY_ID", DK_CFG_SECRET, "S3 access key id."),
    ROW_STR("s3.secret_access_key", "", "AWS_SECRET_ACCESS_KEY", DK_CFG_SECRET,
            "S3 secret access key."),
    ROW_STR("s3.session_token", "", "AWS_SESSION_TOKEN", DK_CFG_SECRET,
            "Session token of temporary S3 credentials (sent as `x-amz-security-token`)."),
    {.key = "s3.url_style",
     .type = DK_CFG_STRING,
     .def = "auto",
     .doc = "`path` (`endpoint/bucket/key`), `virtual` (`bucket.endpoint-host/key`) or `auto` "
            "(virtual on `amazonaws.com`, path elsewhere).",
     .choices = s3_url_styles},
    ROW_DUR("s3.connect_timeout", "1s", 1, MS_M, "Timeout for connecting to the S3 endpoint."),
    ROW_DUR("s3.timeout", "5s", 1, 10 * MS_M, "Longest one S3 request may take."),
    ROW_INT("s3.max_attempts", "3", 1, 10,
            "Attempts of one S3 operation; 5xx, throttling and connection failures are retried."),
    ROW_DUR("s3.retry_backoff", "100ms", 1, MS_M,
            "Delay before the first S3 retry; it doubles with each attempt (with jitter)."),

    ROW_STR("smtp.url", "", "SMTP_URL", DK_CFG_SECRET,
            "SMTP server for e-mail, `smtp://[user:password@]host:port` or `smtps://…`; with "
            "credentials TLS is required (smtps, or STARTTLS). Empty = e-mails are written as "
            "`.eml` files to `<data_dir>/mail/`."),
    ROW_STR("smtp.from", "docket@localhost", "MAIL_FROM", 0,
            "Sender address of Docket's e-mails (notifications, password reset, verification)."),

    ROW_STR("otel.endpoint", "", "OTEL_EXPORTER_OTLP_ENDPOINT", 0,
            "OTLP/HTTP collector base URL; traces are exported when it is set."),
    ROW_STR("otel.service_name", "", "OTEL_SERVICE_NAME", 0,
            "`service.name` of exported spans; empty = `service.name` from "
            "`otel.resource_attributes`, else `docket-<command>` (`docket-tasks`, ...)."),
    ROW_STR("otel.resource_attributes", "", "OTEL_RESOURCE_ATTRIBUTES", 0,
            "Extra resource attributes of exported spans, `key=value` pairs separated by commas "
            "(values percent-encoded), e.g. `deployment.environment=prod`."),
    ROW_STR("otel.headers", "", "OTEL_EXPORTER_OTLP_HEADERS", DK_CFG_SECRET,
            "Headers sent with every export, `key=value` pairs separated by commas (values "
            "percent-encoded), e.g. `authorization=Bearer%20xyz`."),
    ROW_STR("otel.traces_sampler", "parentbased_always_on", "OTEL_TRACES_SAMPLER", 0,
            "Which requests are traced: `always_on`, `always_off`, `traceidratio` (a share, "
            "`otel.traces_sampler_arg`), or `parentbased_always_on`, `parentbased_always_off`, "
            "`parentbased_traceidratio` (an incoming `traceparent`'s sampled flag decides; the "
            "rule applies to new traces)."),
    ROW_STR("otel.traces_sampler_arg", "1.0", "OTEL_TRACES_SAMPLER_ARG", 0,
            "The share of new traces recorded by the `*traceidratio` samplers, 0 to 1."),
    ROW_INT("otel.max_queue_size", "2048", 16, 1000000,
            "Finished spans waiting for export; when the collector is slow or away, spans beyond "
            "it are dropped (`docket_otel_spans_dropped_total`), requests never wait."),
    ROW_INT("otel.max_export_batch_size", "512", 1, 100000, "Spans per export request."),
    ROW_DUR("otel.schedule_delay", "5s", 10, 10 * MS_M,
            "The longest a finished span waits before an export starts."),
    ROW_DUR("otel.export_timeout", "10s", 10, 10 * MS_M,
            "Timeout of one export request; its spans are dropped when it passes."),
    ROW_STR("otel.protocol", "http/protobuf", "OTEL_EXPORTER_OTLP_PROTOCOL", 0,
            "OTLP/HTTP encoding of exports: `http/protobuf` (smaller and cheaper to encode; "
            "figures in docs/design/measurements.md) or `http/json`."),
};

const size_t dk_config_nrows = sizeof dk_config_rows / sizeof dk_config_rows[0];

const dk_config_section dk_config_sections[] = {
    {"server", "The HTTP listener of every command."},
    {"storage", "Local files."},
    {"database", "SQL database: SQLite (embedded, the default) or PostgreSQL."},
    {"redis", "Optional Redis for cache, counters, token revocation and events."},
    {"auth", "Tokens, sessions and password hashing."},
    {"rate_limiting", "Rate limit of the auth routes (the seed's keys)."},
    {"log", "JSON-lines logging."},
    {"gateway", "The edge: CORS, rate limit, upstreams in split mode."},
    {"events", "Domain events: the transactional outbox and the queue."},
    {"notification", "Notification delivery and the due-soon scheduler."},
    {"s3", "Object storage over the S3 API; unset = local directory."},
    {"smtp", "Email delivery."},
    {"otel", "OpenTelemetry trace export."},
};

const size_t dk_config_nsections = sizeof dk_config_sections / sizeof dk_config_sections[0];
