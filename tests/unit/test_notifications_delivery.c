/* test_notifications_delivery.c — the delivery worker against a real database (a SQLite file,
 * and PostgreSQL when DOCKET_TEST_PG_URL is set) with the notifications service's own
 * migration, a real HTTP receiver (libmicrohttpd on 127.0.0.1) and a small SMTP receiver
 * speaking 220/EHLO/MAIL/RCPT/DATA/QUIT on a thread here. Checked: the webhook's body,
 * signature and headers; retries with backoff; dead-lettering after max_attempts; "URL
 * changed"; private addresses; no redirects; timeouts and refused connections; leases (rows not
 * due, rows leased by another replica, two replicas never delivering a row twice); kick; a
 * prompt stop that gives the row in flight back; e-mail content, RFC 2047 subjects and header
 * sanitising; unknown users; e-mail switched off; SMTP failures; the metrics. */
#include "testutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "core/arena.h"
#include "core/ids.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/migrate.h"
#include "core/sql.h"
#include "core/timeutil.h"
#include "ports/users_directory.h"
#include "ports/mailer.h"
#include "services/notifications/notifications_delivery.h"
#include "services/notifications/notifications_repo.h"
#include "services/users/users_repo.h"
#include "adapters/db.h"
#include "adapters/http_client.h"
#include "adapters/mailer.h"
#include "adapters/resolver.h"
#include "core/banned.h"

#define SECRET   "whsec_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define MAX_HITS 128

static const char *pg_url; /* NULL: PostgreSQL tests are skipped */
static char pg_schema[64]; /* this run's schema */
static bool on_pg;         /* the group being run */

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* --- the database ---------------------------------------------------------------------------- */

typedef struct fixture {
    dk_database db;
    dk_arena *a;
    char *dir;
    dk_mailer mailer; /* SMTP, when a test sends e-mail */
    /* webhooks: the libcurl client and getaddrinfo, the adapters main.c wires */
    dk_http_client *http;
    dk_resolver *resolver;
} fixture;

static void fx_exec(fixture *f, const char *sql, int n, const char *const *p)
{
    dk_status st = dk_sql(&f->db, f->a, sql, n, p, NULL);
    if (st != DK_OK)
        fail_msg("%s -> %d", sql, st);
}

static void fx_open(fixture *f)
{
    memset(f, 0, sizeof *f);
    f->a = dk_arena_new();
    dk_db_options o = {.pool_size = 4,
                       .acquire_timeout_ms = 5000,
                       .connect_timeout_ms = 3000,
                       .statement_timeout_ms = 10000};
    if (on_pg) {
        o.url = pg_url;
        o.search_path = pg_schema;
        f->db.ops = &dk_db_postgres_ops;
    } else {
        f->dir = dk_test_tmpdir("nt-delivery");
        o.url = dk_arena_printf(f->a, "sqlite:%s/docket.db", f->dir);
        f->db.ops = &dk_db_sqlite_ops;
    }
    assert_int_equal(f->db.ops->open(&o, &f->db.db), DK_OK);
    dk_http_client_options ho = {.max_connections = 8};
    assert_int_equal(dk_http_client_curl_ops.open(&ho, &f->http), DK_OK);
    assert_int_equal(dk_resolver_getaddrinfo_new(32, &f->resolver), DK_OK);
    if (on_pg) {
        /* tables made once per run by the group setup; start each test empty */
        fx_exec(f, "DELETE FROM notifications_deliveries", 0, NULL);
        fx_exec(f, "DELETE FROM notifications_prefs", 0, NULL);
    } else {
        assert_int_equal(dk_migrate_apply(&f->db, "notifications", dk_notifications_migrations,
                                          DK_NOTIFICATIONS_NMIGRATIONS, NULL),
                         DK_OK);
        assert_int_equal(
            dk_migrate_apply(&f->db, "users", dk_users_migrations, DK_USERS_NMIGRATIONS, NULL),
            DK_OK);
    }
}

static void fx_close(fixture *f)
{
    if (f->mailer.ops)
        f->mailer.ops->free(f->mailer.h);
    dk_http_client_curl_ops.close(f->http);
    dk_resolver_getaddrinfo_ops.free(f->resolver);
    f->db.ops->close(f->db.db);
    dk_arena_free(f->a);
    free(f->dir);
}

static void put_prefs(fixture *f, const char *user, const char *url, const char *secret)
{
    const char *p[] = {user, url, secret, dk_sql_int(f->a, dk_now_ms())};
    fx_exec(f, "DELETE FROM notifications_prefs WHERE user_id = $1", 1, p);
    fx_exec(f,
            "INSERT INTO notifications_prefs (user_id, email_enabled, webhook_url, "
            "webhook_secret, updated_at) VALUES ($1, TRUE, $2, $3, $4)",
            4, p);
}

/* The JSON body the repository stores: {"id","type","created_at","notification":{...}}. */
static char *make_body(dk_arena *a, const char *id, const char *type, const char *message)
{
    json_t *n =
        json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:n}", "id", "0190f0f0-0000-7000-8000-00000000n1",
                  "type", type, "task_id", "0190f0f0-0000-7000-8000-0000000task1", "actor_id",
                  "0190f0f0-0000-7000-8000-00000000act1", "message", message, "created_at",
                  "2026-02-13T09:05:00.000Z", "read_at");
    json_t *b = json_pack("{s:s,s:s,s:s,s:o}", "id", id, "type", type, "created_at",
                          "2026-02-13T09:05:00.000Z", "notification", n);
    char *text = json_dumps(b, JSON_COMPACT);
    char *out = dk_arena_strdup(a, text);
    free(text);
    json_decref(b);
    return out;
}

/* Queues a delivery due at next_at; returns its id (in f's arena). */
static const char *add_delivery_at(fixture *f, const char *user, const char *channel,
                                   const char *target, const char *message, int64_t next_at)
{
    char id[DK_UUID_LEN];
    dk_uuid7(id);
    const char *body = make_body(f->a, id, "task.assigned", message);
    int64_t now = dk_now_ms();
    const char *p[] = {dk_arena_strdup(f->a, id),
                       "0190f0f0-0000-7000-8000-00000000n1",
                       user,
                       channel,
                       target,
                       body,
                       dk_sql_int(f->a, next_at),
                       dk_sql_int(f->a, now)};
    fx_exec(f,
            "INSERT INTO notifications_deliveries (id, notification_id, user_id, channel, target, "
            "body, state, attempts, next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, "
            "$4, $5, $6, 'pending', 0, $7, $8, $8)",
            8, p);
    return p[0];
}

static const char *add_delivery(fixture *f, const char *user, const char *channel,
                                const char *target, const char *message)
{
    return add_delivery_at(f, user, channel, target, message, dk_now_ms());
}

typedef struct row_state {
    char state[16];
    int64_t attempts;
    int64_t next_attempt_at;
    char last_error[256];
    char body[4096];
} row_state;

static row_state get_row(fixture *f, const char *id)
{
    row_state rs;
    memset(&rs, 0, sizeof rs);
    dk_arena *a = dk_arena_new();
    dk_db_rows *r = NULL;
    const char *p[] = {id};
    assert_int_equal(dk_sql(&f->db, a,
                            "SELECT state, attempts, next_attempt_at, last_error, body FROM "
                            "notifications_deliveries WHERE id = $1",
                            1, p, &r),
                     DK_OK);
    assert_int_equal(r->nrows, 1);
    snprintf(rs.state, sizeof rs.state, "%s", dk_db_value(r, 0, 0));
    rs.attempts = dk_sql_get_int(r, 0, 1);
    rs.next_attempt_at = dk_sql_get_int(r, 0, 2);
    snprintf(rs.last_error, sizeof rs.last_error, "%s",
             dk_db_value(r, 0, 3) ? dk_db_value(r, 0, 3) : "");
    snprintf(rs.body, sizeof rs.body, "%s", dk_db_value(r, 0, 4));
    dk_arena_free(a);
    return rs;
}

/* Waits (polling) until the row leaves 'pending' or timeout_ms passes. */
static row_state wait_final(fixture *f, const char *id, int timeout_ms)
{
    int64_t end = dk_mono_ms() + timeout_ms;
    row_state rs = get_row(f, id);
    while (strcmp(rs.state, "pending") == 0 && dk_mono_ms() < end) {
        sleep_ms(10);
        rs = get_row(f, id);
    }
    return rs;
}

static int64_t count_state(fixture *f, const char *state)
{
    dk_arena *a = dk_arena_new();
    dk_db_rows *r = NULL;
    const char *p[] = {state};
    assert_int_equal(dk_sql(&f->db, a,
                            "SELECT COUNT(*) FROM notifications_deliveries WHERE state = $1", 1, p,
                            &r),
                     DK_OK);
    int64_t n = dk_sql_get_int(r, 0, 0);
    dk_arena_free(a);
    return n;
}

/* --- the HTTP receiver ------------------------------------------------------------------------ */

typedef struct hit {
    char method[16], path[256], token[64], ctype[128], event[64], sig[128], delivery[64], ua[64],
        expect[64];
    char *body;
    int64_t at_ms;
} hit;

typedef struct receiver {
    struct MHD_Daemon *d;
    int port;
    pthread_mutex_t lock;
    hit hits[MAX_HITS];
    int nhits;
    int script[16]; /* statuses for the first hits; then default_status */
    int nscript;
    atomic_int default_status;
    atomic_int delay_ms;
    atomic_bool closing;
} receiver;

struct conn_body {
    char *p;
    size_t len;
};

static void copy_header(struct MHD_Connection *c, const char *name, char *out, size_t cap)
{
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
    snprintf(out, cap, "%s", v ? v : "");
}

static enum MHD_Result rx_handle(receiver *rx, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *body)
{
    pthread_mutex_lock(&rx->lock);
    int idx = rx->nhits;
    if (rx->nhits < MAX_HITS) {
        hit *h = &rx->hits[rx->nhits++];
        snprintf(h->method, sizeof h->method, "%s", method);
        snprintf(h->path, sizeof h->path, "%s", url);
        const char *tok = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "token");
        snprintf(h->token, sizeof h->token, "%s", tok ? tok : "");
        copy_header(c, "Content-Type", h->ctype, sizeof h->ctype);
        copy_header(c, "X-Docket-Event", h->event, sizeof h->event);
        copy_header(c, "X-Docket-Signature", h->sig, sizeof h->sig);
        copy_header(c, "X-Docket-Delivery", h->delivery, sizeof h->delivery);
        copy_header(c, "User-Agent", h->ua, sizeof h->ua);
        copy_header(c, "Expect", h->expect, sizeof h->expect);
        h->body = strdup(body);
        h->at_ms = dk_mono_ms();
    }
    int status = idx < rx->nscript ? rx->script[idx] : atomic_load(&rx->default_status);
    pthread_mutex_unlock(&rx->lock);
    for (int waited = 0; waited < atomic_load(&rx->delay_ms) && !atomic_load(&rx->closing);
         waited += 10)
        sleep_ms(10);
    struct MHD_Response *r =
        MHD_create_response_from_buffer(2, (void *)"ok", MHD_RESPMEM_PERSISTENT);
    if (status >= 300 && status < 400)
        MHD_add_response_header(r, "Location", "/elsewhere");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result rx_access(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls)
{
    (void)version;
    struct conn_body *b = *con_cls;
    if (!b) {
        *con_cls = calloc(1, sizeof(struct conn_body));
        return MHD_YES;
    }
    if (*upload_size > 0) {
        b->p = realloc(b->p, b->len + *upload_size + 1);
        memcpy(b->p + b->len, upload, *upload_size);
        b->len += *upload_size;
        b->p[b->len] = '\0';
        *upload_size = 0;
        return MHD_YES;
    }
    return rx_handle(cls, c, url, method, b->p ? b->p : "");
}

static void rx_done(void *cls, struct MHD_Connection *c, void **con_cls,
                    enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)c, (void)toe;
    struct conn_body *b = *con_cls;
    if (b) {
        free(b->p);
        free(b);
        *con_cls = NULL;
    }
}

static receiver *rx_start(void)
{
    receiver *rx = calloc(1, sizeof *rx);
    pthread_mutex_init(&rx->lock, NULL);
    atomic_store(&rx->default_status, 200);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    rx->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0,
                             NULL, NULL, rx_access, rx, MHD_OPTION_SOCK_ADDR, &sa,
                             MHD_OPTION_NOTIFY_COMPLETED, rx_done, NULL,
                             MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    assert_non_null(rx->d);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(rx->d, MHD_DAEMON_INFO_BIND_PORT);
    assert_non_null(info);
    rx->port = info->port;
    return rx;
}

static void rx_stop(receiver *rx)
{
    atomic_store(&rx->closing, true);
    MHD_stop_daemon(rx->d);
    for (int i = 0; i < rx->nhits; i++)
        free(rx->hits[i].body);
    pthread_mutex_destroy(&rx->lock);
    free(rx);
}

static int rx_count(receiver *rx)
{
    pthread_mutex_lock(&rx->lock);
    int n = rx->nhits;
    pthread_mutex_unlock(&rx->lock);
    return n;
}

static bool rx_wait_hits(receiver *rx, int n, int timeout_ms)
{
    int64_t end = dk_mono_ms() + timeout_ms;
    while (rx_count(rx) < n && dk_mono_ms() < end)
        sleep_ms(5);
    return rx_count(rx) >= n;
}

static const char *rx_url(dk_arena *a, receiver *rx, const char *path)
{
    return dk_arena_printf(a, "http://127.0.0.1:%d%s", rx->port, path);
}

/* --- the SMTP receiver ------------------------------------------------------------------------ */

typedef struct smtp_rx {
    int fd;
    int port;
    pthread_t thread;
    atomic_bool stop;
    atomic_int rcpt_code; /* reply to RCPT TO (250, or 451/550 to fail) */
    pthread_mutex_t lock;
    int nmessages;
    int nsessions;
    char mail_from[4096], rcpt[4096];
    char *data; /* the last message, dot-unstuffed */
} smtp_rx;

static void smtp_send(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/* Reads one CRLF-terminated line (without it) into line; false on EOF or stop. */
static bool smtp_line(smtp_rx *s, int fd, char *buf, size_t *blen, char *line, size_t cap)
{
    for (;;) {
        char *crlf = memmem(buf, *blen, "\r\n", 2);
        if (crlf) {
            size_t n = (size_t)(crlf - buf);
            size_t k = n < cap - 1 ? n : cap - 1;
            memcpy(line, buf, k);
            line[k] = '\0';
            memmove(buf, crlf + 2, *blen - n - 2);
            *blen -= n + 2;
            return true;
        }
        if (*blen >= 65536)
            return false;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, 50);
        if (atomic_load(&s->stop))
            return false;
        if (pr <= 0)
            continue;
        ssize_t r = recv(fd, buf + *blen, 65536 - *blen, 0);
        if (r <= 0)
            return false;
        *blen += (size_t)r;
    }
}

static void smtp_session(smtp_rx *s, int fd)
{
    char *buf = malloc(65536);
    size_t blen = 0;
    char line[4096];
    smtp_send(fd, "220 test.invalid ESMTP\r\n");
    while (smtp_line(s, fd, buf, &blen, line, sizeof line)) {
        if (strncasecmp(line, "EHLO", 4) == 0 || strncasecmp(line, "HELO", 4) == 0) {
            smtp_send(fd, "250 test.invalid\r\n");
        } else if (strncasecmp(line, "MAIL FROM:", 10) == 0) {
            pthread_mutex_lock(&s->lock);
            snprintf(s->mail_from, sizeof s->mail_from, "%s", line + 10);
            pthread_mutex_unlock(&s->lock);
            smtp_send(fd, "250 ok\r\n");
        } else if (strncasecmp(line, "RCPT TO:", 8) == 0) {
            pthread_mutex_lock(&s->lock);
            snprintf(s->rcpt, sizeof s->rcpt, "%s", line + 8);
            pthread_mutex_unlock(&s->lock);
            int code = atomic_load(&s->rcpt_code);
            char reply[64];
            snprintf(reply, sizeof reply, "%d %s\r\n", code, code == 250 ? "ok" : "try later");
            smtp_send(fd, reply);
        } else if (strcasecmp(line, "DATA") == 0) {
            smtp_send(fd, "354 go ahead\r\n");
            size_t cap = 65536, len = 0;
            char *data = malloc(cap);
            data[0] = '\0';
            bool ended = false;
            while (smtp_line(s, fd, buf, &blen, line, sizeof line)) {
                if (strcmp(line, ".") == 0) {
                    ended = true;
                    break;
                }
                const char *l = line[0] == '.' ? line + 1 : line; /* dot-unstuffing */
                size_t n = strlen(l);
                if (len + n + 3 < cap) {
                    memcpy(data + len, l, n);
                    memcpy(data + len + n, "\r\n", 3);
                    len += n + 2;
                }
            }
            if (!ended) {
                free(data);
                break;
            }
            pthread_mutex_lock(&s->lock);
            free(s->data);
            s->data = data;
            s->nmessages++;
            pthread_mutex_unlock(&s->lock);
            smtp_send(fd, "250 queued\r\n");
        } else if (strcasecmp(line, "QUIT") == 0) {
            smtp_send(fd, "221 bye\r\n");
            break;
        } else if (strcasecmp(line, "RSET") == 0 || strcasecmp(line, "NOOP") == 0) {
            smtp_send(fd, "250 ok\r\n");
        } else {
            smtp_send(fd, "502 not implemented\r\n");
        }
    }
    free(buf);
}

static void *smtp_main(void *arg)
{
    smtp_rx *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            continue;
        pthread_mutex_lock(&s->lock);
        s->nsessions++;
        pthread_mutex_unlock(&s->lock);
        smtp_session(s, c);
        close(c);
    }
    return NULL;
}

static smtp_rx *smtp_start(void)
{
    smtp_rx *s = calloc(1, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    atomic_store(&s->rcpt_code, 250);
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(s->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(s->fd, 8), 0);
    assert_int_equal(getsockname(s->fd, (struct sockaddr *)&sa, &sl), 0);
    s->port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&s->thread, NULL, smtp_main, s), 0);
    return s;
}

static void smtp_stop(smtp_rx *s)
{
    atomic_store(&s->stop, true);
    pthread_join(s->thread, NULL);
    close(s->fd);
    free(s->data);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static int smtp_count(smtp_rx *s)
{
    pthread_mutex_lock(&s->lock);
    int n = s->nmessages;
    pthread_mutex_unlock(&s->lock);
    return n;
}

/* --- the users directory: the users service's own repository ---------------------------------- */

static dk_status dir_get(void *h, dk_arena *a, const char *id, dk_user *ret)
{
    return users_repo_get(h, a, id, ret);
}

static const struct dk_users_directory_ops directory = {.get = dir_get};

/* --- the worker ------------------------------------------------------------------------------- */

static notifications_delivery_options opts(fixture *f)
{
    notifications_delivery_options o = {
        .db = &f->db,
        .mail_from = "docket@example.com",
        .net = {&dk_http_client_curl_ops, &dk_resolver_getaddrinfo_ops, f->resolver},
        .http = f->http,
        .allow_private = true, /* the receivers listen on 127.0.0.1 */
        .max_attempts = 3,
        .backoff_ms = 60,
        .max_backoff_ms = 1000,
        .timeout_ms = 2000,
        .interval_ms = 20,
    };
    return o;
}

static notifications_delivery *start(const notifications_delivery_options *o)
{
    notifications_delivery *d = NULL;
    assert_int_equal(notifications_delivery_start(o, &d), DK_OK);
    assert_non_null(d);
    return d;
}

static void stop(notifications_delivery *d)
{
    dk_metrics_clear_collectors(); /* the collector reads d */
    notifications_delivery_stop(d);
}

/* The value of one docket_notification_deliveries_total series (-1 when absent). */
static double metric(const char *channel, const char *result)
{
    dk_arena *a = dk_arena_new();
    char *text = dk_metrics_render(a, NULL);
    char needle[160];
    snprintf(needle, sizeof needle,
             "docket_notification_deliveries_total{channel=\"%s\",result=\"%s\"} ", channel,
             result);
    const char *p = strstr(text, needle);
    double v = p ? strtod(p + strlen(needle), NULL) : -1;
    dk_arena_free(a);
    return v;
}

/* The counter once it reaches want (the worker counts a delivery just after it records it, so
 * a test that saw the row may look a moment too early), or its value after 3 s. */
static double metric_reaches(const char *channel, const char *result, double want)
{
    int64_t end = dk_mono_ms() + 3000;
    double v = metric(channel, result);
    while (v != want && dk_mono_ms() < end) {
        sleep_ms(5);
        v = metric(channel, result);
    }
    return v;
}

static void expected_signature(const char *secret, const char *body, char out[80])
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)body, strlen(body), mac,
         &len);
    assert_int_equal(len, 32);
    int n = snprintf(out, 80, "sha256=");
    for (unsigned i = 0; i < len; i++)
        n += snprintf(out + n, (size_t)(80 - n), "%02x", mac[i]);
}

/* --- webhook tests ---------------------------------------------------------------------------- */

static void test_webhook_signed(void **state)
{
    (void)state;
    fixture f;
    fx_open(&f);
    receiver *rx = rx_start();
    const char *url = rx_url(f.a, rx, "/hook?token=abc");
    put_prefs(&f, "u1", url, SECRET);
    const char *id = add_delivery(&f, "u1", "webhook", url, "You were assigned \"Write\"");
    notifications_delivery_options o = opts(&f);
    notifications_delivery *d = start(&o);
    row_state rs = wait_final(&f, id, 5000);
    assert_string_equal(rs.state, "sent");
    assert_int_equal(rs.attempts, 1);
    assert_int_equal(rx_count(rx), 1);
    hit *h = &rx->hits[0];
    assert_string_equal(h->method, "POST");
    assert_string_equal(h->path, "/hook");
    assert_string_equal(h->token, "abc");
    assert_string_equal(h->ctype, "application/json");
    assert_string_equal(h->event, "task.assigned");
    assert_string_equal(h->delivery, id);
    assert_string_equal(h->ua, "Docket-Webhook/1");
    assert_string_equal(h->expect, "");
    assert_string_equal(h->body, rs.body); /* the stored body, byte for byte */
    char sig[80];
    expected_signature(SECRET, rs.body, sig);
    assert_string_equal(h->sig, sig);
    /* and not keyed with something else (the hex part alone, say) */
    char other[80];
    expected_signature(&SECRET[6], rs.body, other);
    assert_string_not_equal(h->sig, other);
    assert_true(metric_reaches("webhook", "sent", 1) == 1);
    assert_true(metric("webhook", "retry") == 0);
    assert_true(metric("email", "dead") == 0);
    stop(d);
    rx_stop(rx);
    fx_close(&f);
}

static void test_webhook_retry_then_sent(void **state)
{
    (void)state;
    fixture f;
    fx_open(&f);
    receiver *rx = rx_start();
    rx->script[0] = 503, rx->script[1] = 500, rx->nscript = 2;
    const char *url = rx_url(f.a, rx, "/hook");
    put_prefs(&f, "u1", url, SECRET);
    const char *id = add_delivery(&f, "u1", "webhook", url, "m");
    notifications_delivery_options o = opts(&f);
    o.max_attempts = 5;
    o.backoff_ms = 150;
    notifications_delivery *d = start(&o);
    /* after the first failure: pending, attempts 1, the error recorded, next try ~150 ms on */
    assert_true(rx_wait_hits(rx, 1, 5000));
    int64_t end = dk_mono_ms() + 2000;
    row_state rs = get_row(&f, id);
    while (rs.attempts < 1 && dk_mono_ms() < end) {
        sleep_ms(5);
        rs = get_row(&f, id);
    }
    assert_string_equal(rs.state, "pending");
    assert_int_equal(rs.attempts, 1);
    assert_string_equal(rs.last_error, "HTTP 503");
    int64_t delay = rs.next_attempt_at - dk_now_ms();
    assert_true(delay <= 165 + 5 && delay > 0);

    rs = wait_final(&f, id, 5000);
    assert_string_equal(rs.state, "sent");
    assert_int_equal(rs.attempts, 3);
    assert_int_equal(rx_count(rx), 3);
    /* backoff: ~150 ms, then ~300 ms (+-10 % jitter) */
    int64_t gap1 = rx->hits[1].at_ms - rx->hits[0].at_ms;
    int64_t gap2 = rx->hits[2].at_ms - rx->hits[1].at_ms;
    if (gap1 < 130 || gap2 < 265 || gap2 < gap1 + 60)
        fail_msg("gaps %lld ms, %lld ms do not follow the backoff", (long long)gap1,
                 (long long)gap2);
    for (int i = 0; i < 3; i++) /* the same delivery id each time: receivers de-duplicate */
        assert_string_equal(rx->hits[i].delivery, id);
    assert_true(metric_reaches("webhook", "retry", 2) == 2);
    assert_true(metric_reaches("webhook", "sent", 1) == 1);
    stop(d);
    rx_stop(rx);
    fx_close(&f);
}

static void test_webhook_dead_after_max_attempts(void **state)
{
    (void)state;
    fixture f;
    fx_open(&f);
    receiver *rx = rx_start();
    atomic_store(&rx->default_status, 500);
    const char *url = rx_url(f.a, rx, "/hook");
    put_prefs(&f, "u1", url, SECRET);
    const char *id = add_delivery(&f, "u1", "webhook", url, "m");
    notifications_delivery_options o = opts(&f);
    o.max_attempts = 3;
    o.backoff_ms = 40;
    o.max_backoff_ms = 50; /* capped: the second gap is not 80 ms */
    notifications_delivery *d = start(&o);
    row_state rs = wait_final(&f, id, 5000);
    assert_string_equal(rs.state, "dead");
    assert_int_equal(rs.attempts, 3);
    assert_string_equal(rs.last_error, "HTTP 500");
    sleep_ms(300); /* nothing more is tried */
    assert_int_equal(rx_count(rx), 3);
    int64_t gap2 = rx->hits[2].at_ms - rx->hits[1].at_ms;
    assert_true(gap2 >= 44 && gap2 < 400);
    assert_true(metric_reaches("webhook", "retry", 2) == 2);
    assert_true(metric_reaches("webhook", "dead", 1) == 1);
    assert_true(metric("webhook", "sent") == 0);
    stop(d);
    rx_stop(rx);
    fx_close(&f);
}

static void test_webhook_url_changed(void **state)
{
    (void)state;
    fixture f;
    fx_open(&f);
    receiver *rx = rx_start();
    const char *old_url = rx_url(f.a, rx, "/old");
    put_prefs(&f, "u1", rx_url(f.a, rx, "/new"), SECRET);
    const char *changed = add_delivery(&f, "u1", "webhook", old_url, "m");
    /* a user without preferences any more (the URL was removed) */
    const char *gone = add_delivery(&f, "u2", "webhook", old_url, "m");
    notifications_delivery_options o = opts(&f);
    notifications_delivery *d = start(&o);
    row_state rs = wait_final(&f, changed, 5000);
    assert_string_equal(rs.state, "dead");
    assert_string_equal(rs.last_error, "webhook URL changed");
    assert_int_equal(rs.attempts, 0);
    rs = wait_final(&f, gone, 5000);
    assert_string_equal(rs.state, "dead");
    assert_string_equal(rs.last_error, "webhook URL changed");
    assert_int_equal(rx_count(rx), 0);
    assert_true(metric_reaches("webhook", "dead", 2) == 2);
    stop(d);
    rx_stop(rx);
    fx_close(&f);
}

static void test_webhook_private_address_refused(void **state)
{
    (void)state;
    fixture f;
    fx_open(&f);
    receiver *rx = rx_start();
    const char *lit = rx_url(f.a, rx, "/hook");
    const char *named = dk_arena_printf(f.a, "http://localhost:%d/hook", rx->port);
    put_prefs(&f, "u1", lit, SECRET);
    put_prefs(&f, "u2", named, SECRET);
    const char *a = add_delivery(&f, "u1", "webhook", lit, "m");
    const char *b = add_delivery(&f, "u2", "webhook", named, "m");
    notifications_delivery_options o = opts(&f);
    o.allow_private = false;
    notifications_delivery *d = start(&o);
    row_state rs = wait_final(&f, a, 5000);
    assert_string_equal(rs.state, "dead");
    assert_string_equal(rs.last_error, "address not allowed");
    rs = wait_final(&f, b, 5000);
    assert_string_equal(rs.state, "dead");
    assert_string_equal(rs.last_error, "address not allowed");
    assert_int_equal(rx_count(rx), 0);
    stop(d);

    /* allowed, the same name is delivered (through the pinned address) */
    const char *c = add_delivery(&f, "u2", "webhook", named, "m");
    o.allow_private = true;
    d = start(&o);
    rs = wait_final(&f, c, 5000);
    assert_string_equal(rs.state, "sent");
    assert_int_equal(rx_count(rx), 1);
    stop(d);
    rx_stop(rx);
    fx_close(&f);
}

static void test_webhook_no_redirects(void **state)
{
    (void)state;
    fixture f;
    fx_open(&f);
    receiver *rx = rx_start();
    atomic_store(&rx->default_status, 302);
    const char *url = rx_url(f.a, rx, "/hook");
    put_prefs(&f, "u1", url, SECRET);
    const char *id = add_delivery(&f, "u1", "webhook", url, "m");
    notifications_delivery_options o = opts(&f);
    o.max_attempts = 1;
    notifications_delivery *d = start(&o);
    row_state rs = wait_final(&f, id, 5000);
    assert_string_equal(rs.state, "dead");
    assert_int_equal(rs.attempts, 1);
    assert_string_equal(rs.last_error, "HTTP 302");
    sleep_ms(100);
    assert_int_equal(rx_count(rx), 1);
    assert_string_equal(rx->hits[0].path, "/hook"); /* /elsewhere never asked */
    stop(d);
    rx_stop(rx);
    fx_close(&f);
}

static void test_webhook_timeout_and_refused(void **state)
{
    (void)state;
    fixture f;
    fx_open(&f);
    receiver *rx = rx_start();
    atomic_store(&rx->delay_ms, 3000);
    const char *slow = rx_url(f.a, rx, "/slow");
    /* a port nobody listens on: bind one, then close it */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&sa, &sl), 0);
    close(s);
    const char *closed = dk_arena_printf(f.a, "http://127.0.0.1:%d/x", ntohs(sa.sin_port));
    put_prefs(&f, "u1", slow, SECRET);
    put_prefs(&f, "u2", closed, SECRET);
    const char *a = add_delivery(&f, "u1", "webhook", slow, "m");
    const char *b = add_delivery(&f, "u2", "webhook", closed, "m");
    notifications_delivery_options o = opts(&f);
    o.max_attempts = 1;
    o.timeout_ms = 300;
    int64_t t0 = dk_mono_ms();
    notifications_delivery *d = start(&o);
    row_state rs = wait_final(&f, a, 5000);
    assert_true(dk_mono_ms() - t0 < 2500);
    assert_string_equal(rs.state, "dead");
    assert_string_equal(rs.last_error, "curl: Timeout was reached");
    rs = wait_final(&f, b, 5000);
    assert_string_equal(rs.state, "dead");
    assert_string_equal(rs.last_error, "curl: Couldn't connect to server");
    stop(d);
    rx_stop(rx);
    fx_close(&f);
}

static void test_leases(void **state)
{
    (void)state;
    fixture f;
    fx_open(&f);
    receiver *rx = rx_start();
    const char *url = rx_url(f.a, rx, "/hook");
    put_prefs(&f, "u1", url, SECRET);
    int64_t now = dk_now_ms();
    /* leased by a replica that is still working on it, and one not due yet */
    const char *leased = add_delivery_at(&f, "u1", "webhook", url, "m", now + 60000);
    const char *later = add_delivery_at(&f, "u1", "webhook", url, "m", now + 400);
    /* a lease that expired: its replica crashed mid-delivery */
    const char *orphan = add_delivery_at(&f, "u1", "webhook", url, "m", now - 90000);
    notifications_delivery_options o = opts(&f);
    notifications_delivery *d = start(&o);
    row_state rs = wait_final(&f, orphan, 5000);
    assert_string_equal(rs.state, "sent");
    assert_string_equal(get_row(&f, later).state, "pending");
    rs = wait_final(&f, later, 5000);
    assert_string_equal(rs.state, "sent");
    assert_true(dk_now_ms() >= now + 400);
    sleep_ms(200);
    rs = get_row(&f, leased);
    assert_string_equal(rs.state, "pending");
    assert_int_equal(rs.next_attempt_at, now + 60000);
    assert_int_equal(rx_count(rx), 2);
    stop(d);
    rx_stop(rx);
    fx_close(&f);
}

static void test_two_replicas_deliver_once(void **state)
{
    (void)state;
    fixture f;
    fx_open(&f);
    receiver *rx = rx_start();
    atomic_store(&rx->delay_ms, 20);
    const char *url = rx_url(f.a, rx, "/hook");
    put_prefs(&f, "u1", url, SECRET);
    enum { N = 30 };
    const char *ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = add_delivery(&f, "u1", "webhook", url, "m");
    notifications_delivery_options o = opts(&f);
    o.workers = 3;
    notifications_delivery *d1 = start(&o);
    notifications_delivery *d2 = start(&o);
    for (int i = 0; i < N; i++)
        assert_string_equal(wait_final(&f, ids[i], 10000).state, "sent");
    sleep_ms(100);
    assert_int_equal(rx_count(rx), N);
    for (int i = 0; i < N; i++)
        for (int k = i + 1; k < N; k++)
            assert_string_not_equal(rx->hits[i].delivery, rx->hits[k].delivery);
    assert_int_equal(count_state(&f, "sent"), N);
    dk_metrics_clear_collectors();
    notifications_delivery_stop(d1);
    notifications_delivery_stop(d2);
    rx_stop(rx);
    fx_close(&f);
}

static void test_kick_and_prompt_stop(void **state)
{
    (void)state;
    fixture f;
    fx_open(&f);
    receiver *rx = rx_start();
    const char *url = rx_url(f.a, rx, "/hook");
    put_prefs(&f, "u1", url, SECRET);
    notifications_delivery_options o = opts(&f);
    o.interval_ms = 60000; /* only a kick makes it look again */
    notifications_delivery *d = start(&o);
    sleep_ms(200); /* the first look has happened */
    const char *id = add_delivery(&f, "u1", "webhook", url, "m");
    sleep_ms(300);
    assert_string_equal(get_row(&f, id).state, "pending");
    int64_t t0 = dk_mono_ms();
    notifications_delivery_kick(d);
    assert_string_equal(wait_final(&f, id, 3000).state, "sent");
    assert_true(dk_mono_ms() - t0 < 1000);
    t0 = dk_mono_ms();
    stop(d);
    assert_true(dk_mono_ms() - t0 < 500);
    notifications_delivery_kick(NULL);
    notifications_delivery_stop(NULL);
    rx_stop(rx);
    fx_close(&f);
}

static void test_stop_gives_back_call_in_flight(void **state)
{
    (void)state;
    fixture f;
    fx_open(&f);
    receiver *rx = rx_start();
    atomic_store(&rx->delay_ms, 8000);
    const char *url = rx_url(f.a, rx, "/hook");
    put_prefs(&f, "u1", url, SECRET);
    const char *id = add_delivery(&f, "u1", "webhook", url, "m");
    notifications_delivery_options o = opts(&f);
    o.timeout_ms = 10000;
    notifications_delivery *d = start(&o);
    assert_true(rx_wait_hits(rx, 1, 5000));
    row_state rs = get_row(&f, id);
    assert_true(rs.next_attempt_at > dk_now_ms() + 10000); /* leased */
    int64_t t0 = dk_mono_ms();
    stop(d);
    int64_t took = dk_mono_ms() - t0;
    if (took > 2500)
        fail_msg("stop took %lld ms", (long long)took);
    rs = get_row(&f, id);
    assert_string_equal(rs.state, "pending");
    assert_int_equal(rs.attempts, 0);               /* not counted as an attempt */
    assert_true(rs.next_attempt_at <= dk_now_ms()); /* free for the next replica at once */
    rx_stop(rx);
    fx_close(&f);
}

static void test_bad_options(void **state)
{
    (void)state;
    fixture f;
    fx_open(&f);
    notifications_delivery *d = NULL;
    notifications_delivery_options o = opts(&f);
    o.max_attempts = 0;
    assert_int_equal(notifications_delivery_start(&o, &d), DK_E_VALIDATION);
    o = opts(&f);
    o.db = NULL;
    assert_int_equal(notifications_delivery_start(&o, &d), DK_E_VALIDATION);
    o = opts(&f);
    o.http = NULL; /* webhooks need the client and the resolver */
    assert_int_equal(notifications_delivery_start(&o, &d), DK_E_VALIDATION);
    o = opts(&f);
    o.net.resolver = NULL;
    assert_int_equal(notifications_delivery_start(&o, &d), DK_E_VALIDATION);
    o = opts(&f);
    void *mh = NULL;
    assert_int_equal(dk_mailer_smtp_new("http://mail.example.com", 1000, &mh), DK_E_VALIDATION);
    assert_int_equal(dk_mailer_smtp_new("smtp://127.0.0.1:25", 1000, &mh), DK_OK);
    dk_mailer m = {&dk_mailer_smtp_ops, mh};
    o.mailer = &m;
    o.users = &directory;
    o.mail_from = "docket@example.com\r\nBcc: x@example.com";
    assert_int_equal(notifications_delivery_start(&o, &d), DK_E_VALIDATION);
    o.mail_from = "not an address";
    assert_int_equal(notifications_delivery_start(&o, &d), DK_E_VALIDATION);
    o.mail_from = "docket@example.com";
    o.users = NULL;
    assert_int_equal(notifications_delivery_start(&o, &d), DK_E_VALIDATION);
    assert_null(d);
    dk_mailer_smtp_ops.free(mh);
    fx_close(&f);
}

/* --- e-mail tests ----------------------------------------------------------------------------- */

static const char *make_user(fixture *f, const char *email)
{
    dk_user u;
    assert_int_equal(users_repo_create(&f->db, f->a, email, "Ann", &u), DK_OK);
    assert_int_equal(users_repo_mark_verified(&f->db, f->a, u.id, email, &u), DK_OK);
    return u.id;
}

static notifications_delivery_options email_opts(fixture *f, smtp_rx *s)
{
    notifications_delivery_options o = opts(f);
    if (f->mailer.ops)
        f->mailer.ops->free(f->mailer.h);
    f->mailer.ops = &dk_mailer_smtp_ops;
    assert_int_equal(dk_mailer_smtp_new(dk_arena_printf(f->a, "smtp://127.0.0.1:%d", s->port),
                                        o.timeout_ms, &f->mailer.h),
                     DK_OK);
    o.mailer = &f->mailer;
    o.mail_from = "Docket <docket@example.com>";
    o.users = &directory;
    o.users_handle = &f->db;
    return o;
}

/* The header block of a message (up to the blank line), unfolded into one line per header. */
static bool has_header_line(const char *msg, const char *line)
{
    const char *end = strstr(msg, "\r\n\r\n");
    size_t n = strlen(line);
    for (const char *p = msg; p && p < end; p = strstr(p, "\r\n"), p = p ? p + 2 : NULL)
        if (strncmp(p, line, n) == 0 && (p[n] == '\r'))
            return true;
    return false;
}

static void test_email_sent(void **state)
{
    (void)state;
    fixture f;
    fx_open(&f);
    smtp_rx *s = smtp_start();
    const char *uid = make_user(&f, "ann@example.com");
    const char *id = add_delivery(&f, uid, "email", "", "You were assigned \"Quarterly report\"");
    notifications_delivery_options o = email_opts(&f, s);
    notifications_delivery *d = start(&o);
    row_state rs = wait_final(&f, id, 5000);
    assert_string_equal(rs.state, "sent");
    assert_int_equal(rs.attempts, 1);
    assert_int_equal(smtp_count(s), 1);
    assert_string_equal(s->mail_from, "<docket@example.com>");
    assert_string_equal(s->rcpt, "<ann@example.com>");
    const char *m = s->data;
    assert_true(has_header_line(m, "From: Docket <docket@example.com>"));
    assert_true(has_header_line(m, "To: ann@example.com"));
    assert_true(has_header_line(m, "Subject: [Docket] You were assigned \"Quarterly report\""));
    assert_true(has_header_line(m, "Content-Type: text/plain; charset=utf-8"));
    assert_true(has_header_line(m, "MIME-Version: 1.0"));
    char msgid[160];
    snprintf(msgid, sizeof msgid, "Message-ID: <%s@example.com>", id);
    assert_true(has_header_line(m, msgid));
    const char *date = strstr(m, "Date: ");
    assert_non_null(date);
    int day, year, hh, mm, ss;
    char wd[4], mon[4];
    assert_int_equal(
        sscanf(date, "Date: %3s, %d %3s %d %d:%d:%d +0000", wd, &day, mon, &year, &hh, &mm, &ss),
        7);
    assert_true(year >= 2024);
    const char *body = strstr(m, "\r\n\r\n");
    assert_non_null(body);
    assert_non_null(strstr(body, "You were assigned \"Quarterly report\"\r\n"));
    assert_non_null(strstr(body, "Type: task.assigned\r\n"));
    assert_non_null(strstr(body, "Task: 0190f0f0-0000-7000-8000-0000000task1\r\n"));
    assert_true(metric_reaches("email", "sent", 1) == 1);
    assert_true(metric("webhook", "sent") == 0);
    stop(d);
    smtp_stop(s);
    fx_close(&f);
}

static void test_email_header_injection_and_utf8(void **state)
{
    (void)state;
    fixture f;
    fx_open(&f);
    smtp_rx *s = smtp_start();
    const char *uid = make_user(&f, "bob@example.com");
    const char *evil = add_delivery(&f, uid, "email", "",
                                    "You were assigned \"x\r\nBcc: victim@example.com\r\n\r\n"
                                    "body\r\n.\r\nMAIL FROM:<a@b>\"");
    notifications_delivery_options o = email_opts(&f, s);
    notifications_delivery *d = start(&o);
    assert_string_equal(wait_final(&f, evil, 5000).state, "sent");
    assert_int_equal(smtp_count(s), 1);
    const char *m = s->data;
    /* no header but ours, the title stays inside the Subject line */
    assert_null(strstr(m, "\r\nBcc:"));
    assert_false(strncmp(m, "Bcc:", 4) == 0);
    assert_true(has_header_line(m, "Subject: [Docket] You were assigned \"x  Bcc: "
                                   "victim@example.com    body  .  MAIL FROM:<a@b>\""));
    assert_null(strstr(m, "\r\n.\r\n"));
    assert_string_equal(s->rcpt, "<bob@example.com>");

    /* non-ASCII: RFC 2047 encoded-words that decode to the message */
    const char *msg = "Vous \xc3\xaates assign\xc3\xa9 \xc2\xab\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa"
                      "\x9e\xc2\xbb \xe2\x80\x94 une t\xc3\xa2"
                      "che tr\xc3\xa8s longue pour "
                      "plier l'en-t\xc3\xaate";
    const char *utf = add_delivery(&f, uid, "email", "", msg);
    notifications_delivery_kick(d); /* as the service does when it queues a delivery */
    assert_string_equal(wait_final(&f, utf, 5000).state, "sent");
    m = s->data;
    const char *subj = strstr(m, "Subject: [Docket] =?UTF-8?B?");
    assert_non_null(subj);
    char decoded[512] = "";
    size_t dlen = 0;
    const char *p = subj;
    while ((p = strstr(p, "=?UTF-8?B?"))) {
        p += 10;
        const char *q = strstr(p, "?=");
        assert_non_null(q);
        assert_true(q - p <= 60); /* each encoded-word within 75 characters */
        unsigned char out[128];
        int n = EVP_DecodeBlock(out, (const unsigned char *)p, (int)(q - p));
        assert_true(n > 0);
        int pad = (q[-1] == '=') + (q[-2] == '=');
        memcpy(decoded + dlen, out, (size_t)(n - pad));
        dlen += (size_t)(n - pad);
        p = q + 2;
        if (strncmp(p, "\r\n ", 3) != 0)
            break; /* the last word of the folded header */
    }
    decoded[dlen] = '\0';
    assert_string_equal(decoded, msg);
    /* the body carries the text as UTF-8 */
    assert_non_null(strstr(strstr(m, "\r\n\r\n"), msg));
    stop(d);
    smtp_stop(s);
    fx_close(&f);
}

static void test_email_unknown_user_and_off(void **state)
{
    (void)state;
    fixture f;
    fx_open(&f);
    smtp_rx *s = smtp_start();
    const char *id = add_delivery(&f, "0190f0f0-0000-7000-8000-000000nobody", "email", "", "m");
    notifications_delivery_options o = email_opts(&f, s);
    notifications_delivery *d = start(&o);
    row_state rs = wait_final(&f, id, 5000);
    assert_string_equal(rs.state, "dead");
    assert_string_equal(rs.last_error, "user not found");
    assert_true(metric_reaches("email", "dead", 1) == 1);

    /* an address not verified yet gets nothing */
    dk_user unverified;
    assert_int_equal(users_repo_create(&f.db, f.a, "unverified@example.com", "Una", &unverified),
                     DK_OK);
    id = add_delivery(&f, unverified.id, "email", "", "m");
    notifications_delivery_kick(d);
    rs = wait_final(&f, id, 5000);
    assert_string_equal(rs.state, "dead");
    assert_string_equal(rs.last_error, "e-mail address not verified");
    assert_int_equal(smtp_count(s), 0);
    stop(d);

    /* e-mail switched off: rows still queued die */
    const char *uid = make_user(&f, "cy@example.com");
    id = add_delivery(&f, uid, "email", "", "m");
    o = opts(&f);
    o.mailer = NULL;
    d = start(&o);
    rs = wait_final(&f, id, 5000);
    assert_string_equal(rs.state, "dead");
    assert_string_equal(rs.last_error, "e-mail is not configured");
    assert_int_equal(smtp_count(s), 0);
    stop(d);
    smtp_stop(s);
    fx_close(&f);
}

static void test_email_retries(void **state)
{
    (void)state;
    fixture f;
    fx_open(&f);
    smtp_rx *s = smtp_start();
    atomic_store(&s->rcpt_code, 451);
    const char *uid = make_user(&f, "dee@example.com");
    const char *id = add_delivery(&f, uid, "email", "", "m");
    notifications_delivery_options o = email_opts(&f, s);
    o.max_attempts = 2;
    o.backoff_ms = 50;
    notifications_delivery *d = start(&o);
    row_state rs = wait_final(&f, id, 5000);
    assert_string_equal(rs.state, "dead");
    assert_int_equal(rs.attempts, 2);
    assert_non_null(strstr(rs.last_error, "SMTP 451"));
    assert_int_equal(smtp_count(s), 0);
    assert_true(metric_reaches("email", "retry", 1) == 1);
    assert_true(metric_reaches("email", "dead", 1) == 1);
    stop(d);

    /* the server recovers: a new row goes through */
    atomic_store(&s->rcpt_code, 250);
    id = add_delivery(&f, uid, "email", "", "m");
    d = start(&o);
    assert_string_equal(wait_final(&f, id, 5000).state, "sent");
    assert_int_equal(smtp_count(s), 1);
    stop(d);
    smtp_stop(s);
    fx_close(&f);
}

/* --- groups ----------------------------------------------------------------------------------- */

static int sqlite_setup(void **state)
{
    (void)state;
    on_pg = false;
    return 0;
}

static int pg_setup(void **state)
{
    (void)state;
    on_pg = true;
    unsigned long v = (unsigned long)getpid() * 7919ul + (unsigned long)time(NULL);
    size_t n = (size_t)snprintf(pg_schema, sizeof pg_schema, "ntdeliv_");
    for (int i = 0; i < 8; i++, v /= 26)
        pg_schema[n++] = (char)('a' + v % 26);
    pg_schema[n] = '\0';
    dk_database db = {.ops = &dk_db_postgres_ops};
    dk_db_options o = {
        .url = pg_url, .pool_size = 1, .acquire_timeout_ms = 5000, .connect_timeout_ms = 3000};
    if (db.ops->open(&o, &db.db) != DK_OK)
        return -1;
    /* the service's migration, into this run's schema (the name doubles as the schema) */
    dk_status st = dk_migrate_apply(&db, pg_schema, dk_notifications_migrations,
                                    DK_NOTIFICATIONS_NMIGRATIONS, NULL);
    db.ops->close(db.db);
    return st == DK_OK ? 0 : -1;
}

static int pg_teardown(void **state)
{
    (void)state;
    dk_database db = {.ops = &dk_db_postgres_ops};
    dk_db_options o = {
        .url = pg_url, .pool_size = 1, .acquire_timeout_ms = 5000, .connect_timeout_ms = 3000};
    if (db.ops->open(&o, &db.db) != DK_OK)
        return -1;
    dk_arena *a = dk_arena_new();
    const char *p[] = {pg_schema};
    dk_status st =
        dk_sql(&db, a, dk_arena_printf(a, "DROP SCHEMA %s CASCADE", pg_schema), 0, NULL, NULL);
    if (st == DK_OK)
        st = dk_sql(&db, a, "DELETE FROM public.docket_migrations WHERE service = $1", 1, p, NULL);
    dk_arena_free(a);
    db.ops->close(db.db);
    return st == DK_OK ? 0 : -1;
}

int main(void)
{
    dk_log_init("test", DK_LOG_ERROR);
    const struct CMUnitTest sqlite_tests[] = {
        cmocka_unit_test(test_webhook_signed),
        cmocka_unit_test(test_webhook_retry_then_sent),
        cmocka_unit_test(test_webhook_dead_after_max_attempts),
        cmocka_unit_test(test_webhook_url_changed),
        cmocka_unit_test(test_webhook_private_address_refused),
        cmocka_unit_test(test_webhook_no_redirects),
        cmocka_unit_test(test_webhook_timeout_and_refused),
        cmocka_unit_test(test_leases),
        cmocka_unit_test(test_two_replicas_deliver_once),
        cmocka_unit_test(test_kick_and_prompt_stop),
        cmocka_unit_test(test_stop_gives_back_call_in_flight),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_email_sent),
        cmocka_unit_test(test_email_header_injection_and_utf8),
        cmocka_unit_test(test_email_unknown_user_and_off),
        cmocka_unit_test(test_email_retries),
    };
    /* PostgreSQL: the claim's other dialect (FOR UPDATE SKIP LOCKED) and the finishing SQL */
    const struct CMUnitTest pg_tests[] = {
        cmocka_unit_test(test_webhook_signed),
        cmocka_unit_test(test_webhook_retry_then_sent),
        cmocka_unit_test(test_webhook_dead_after_max_attempts),
        cmocka_unit_test(test_webhook_url_changed),
        cmocka_unit_test(test_leases),
        cmocka_unit_test(test_two_replicas_deliver_once),
        cmocka_unit_test(test_stop_gives_back_call_in_flight),
    };
    int failed = cmocka_run_group_tests_name("sqlite", sqlite_tests, sqlite_setup, NULL);
    pg_url = dk_test_env("DOCKET_TEST_PG_URL");
    if (pg_url)
        failed += cmocka_run_group_tests_name("postgres", pg_tests, pg_setup, pg_teardown);
    else
        printf("DOCKET_TEST_PG_URL is not set: the PostgreSQL group is skipped\n");
    return failed;
}
