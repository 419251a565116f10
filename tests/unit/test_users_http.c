/* test_users_http.c — the users.directory HTTP client against a real HTTP server started here
 * (libmicrohttpd on an ephemeral 127.0.0.1 port) that serves the users service's internal API
 * from an in-memory table and checks the service token: success, 404, 409, a refused token,
 * 5xx and other statuses, malformed and oversized bodies, a dead URL, failover to a live URL,
 * round-robin, a server slower than the timeout, a connect timeout, the request id, percent-
 * encoding of the e-mail, and many threads sharing one client. */
#include "testutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "adapters/users_http.h"
#include "core/arena.h"
#include "core/ids.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/token.h"
#include "core/banned.h"

static const struct dk_users_directory_ops *ops = &dk_users_directory_http_ops;

#define SECRET       "0123456789abcdef0123456789abcdef"
#define OTHER_SECRET "fedcba9876543210fedcba9876543210"
#define MAX_USERS    64

/* --- the fake users service ------------------------------------------------------------------- */

struct stored_user {
    char id[DK_UUID_LEN];
    char email[256];
    char name[256];
    int64_t created_at;
};

struct server {
    struct MHD_Daemon *d;
    int port;
    dk_tokens *tokens;
    pthread_mutex_t lock;
    struct stored_user users[MAX_USERS];
    int nusers;
    /* behaviour switches */
    atomic_int delay_ms;     /* sleep before answering */
    atomic_int force_status; /* answer every request with this status (and a small body) */
    _Atomic(const char *) force_body;
    atomic_bool huge_body; /* answer with a 100 KiB body */
    /* what the last request looked like */
    atomic_int hits;
    atomic_int refused;
    char last_uri[512];
    char last_request_id[160];
    char last_sub[96];
    char last_role[32];
    char last_method[16];
};

struct conn_body {
    char *p;
    size_t len;
};

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status, const char *type,
                               const char *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (type)
        MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result respond_problem(struct MHD_Connection *conn, unsigned status,
                                       const char *title)
{
    char body[256];
    int n = snprintf(body, sizeof body, "{\"title\":\"%s\",\"status\":%u}", title, status);
    return respond(conn, status, "application/problem+json", body, (size_t)n);
}

static enum MHD_Result respond_user(struct MHD_Connection *conn, unsigned status,
                                    const struct stored_user *s)
{
    dk_user u = {.id = s->id,
                 .email = s->email,
                 .name = s->name,
                 .role = "member",
                 .avatar_url = NULL,
                 .created_at = s->created_at,
                 .updated_at = s->created_at + 1};
    json_t *j = dk_user_json(&u);
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    enum MHD_Result ret = respond(conn, status, "application/json", text, strlen(text));
    free(text);
    return ret;
}

static int find_by(struct server *s, const char *field, const char *v)
{
    for (int i = 0; i < s->nusers; i++) {
        const char *have = strcmp(field, "id") == 0 ? s->users[i].id : s->users[i].email;
        if (strcmp(have, v) == 0)
            return i;
    }
    return -1;
}

/* Records the raw request line's target, before MHD decodes it. */
static void *log_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)conn;
    struct server *s = cls;
    pthread_mutex_lock(&s->lock);
    snprintf(s->last_uri, sizeof s->last_uri, "%s", uri);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void request_done(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)conn, (void)toe;
    struct conn_body *b = *con_cls;
    if (b) {
        free(b->p);
        free(b);
        *con_cls = NULL;
    }
}

static enum MHD_Result handle(struct server *s, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *body, size_t body_len)
{
    atomic_fetch_add(&s->hits, 1);
    const char *rid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
    const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    pthread_mutex_lock(&s->lock);
    snprintf(s->last_request_id, sizeof s->last_request_id, "%s", rid ? rid : "");
    snprintf(s->last_method, sizeof s->last_method, "%s", method);
    pthread_mutex_unlock(&s->lock);

    int delay = atomic_load(&s->delay_ms);
    if (delay)
        sleep_ms(delay);

    /* the bearer token must verify and name a service */
    dk_arena *a = dk_arena_new();
    dk_identity id = {0};
    bool ok = auth && strncmp(auth, "Bearer ", 7) == 0 &&
              dk_tokens_verify(s->tokens, a, auth + 7, &id) == DK_OK &&
              strcmp(id.role, "service") == 0 && strncmp(id.user_id, "service:", 8) == 0;
    if (ok) {
        pthread_mutex_lock(&s->lock);
        snprintf(s->last_sub, sizeof s->last_sub, "%s", id.user_id);
        snprintf(s->last_role, sizeof s->last_role, "%s", id.role);
        pthread_mutex_unlock(&s->lock);
    }
    dk_arena_free(a);
    if (!ok) {
        atomic_fetch_add(&s->refused, 1);
        return respond_problem(conn, 401, "Unauthorized");
    }

    int force = atomic_load(&s->force_status);
    if (force) {
        const char *b = atomic_load(&s->force_body);
        if (!b)
            b = "{}";
        return respond(conn, (unsigned)force, "application/json", b, strlen(b));
    }
    if (atomic_load(&s->huge_body)) {
        size_t n = 100 * 1024;
        char *big = malloc(n);
        memset(big, ' ', n);
        big[0] = '{';
        big[n - 1] = '}';
        enum MHD_Result ret = respond(conn, 200, "application/json", big, n);
        free(big);
        return ret;
    }

    static const char prefix[] = "/internal/v1/users";
    if (strncmp(url, prefix, sizeof prefix - 1) != 0)
        return respond_problem(conn, 404, "no such route");
    const char *rest = url + sizeof prefix - 1;
    enum MHD_Result ret;
    pthread_mutex_lock(&s->lock);
    if (strcmp(method, "POST") == 0 && *rest == '\0') {
        json_error_t err;
        json_t *j = json_loadb(body, body_len, 0, &err);
        const char *email = json_string_value(json_object_get(j, "email"));
        const char *name = json_string_value(json_object_get(j, "name"));
        if (!email || !name || s->nusers >= MAX_USERS) {
            ret = respond_problem(conn, 422, "bad body");
        } else if (find_by(s, "email", email) >= 0) {
            ret = respond_problem(conn, 409, "Conflict");
        } else {
            struct stored_user *u = &s->users[s->nusers++];
            dk_uuid7(u->id);
            snprintf(u->email, sizeof u->email, "%s", email);
            snprintf(u->name, sizeof u->name, "%s", name);
            u->created_at = dk_now_ms();
            ret = respond_user(conn, 201, u);
        }
        json_decref(j);
    } else if (strcmp(method, "GET") == 0 && strcmp(rest, "/by-email") == 0) {
        const char *email = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "email");
        int i = email ? find_by(s, "email", email) : -1;
        ret = i >= 0 ? respond_user(conn, 200, &s->users[i]) : respond_problem(conn, 404, "nf");
    } else if (strcmp(method, "GET") == 0 && rest[0] == '/') {
        int i = find_by(s, "id", rest + 1);
        ret = i >= 0 ? respond_user(conn, 200, &s->users[i]) : respond_problem(conn, 404, "nf");
    } else if (strcmp(method, "DELETE") == 0 && rest[0] == '/') {
        int i = find_by(s, "id", rest + 1);
        if (i >= 0) {
            s->users[i] = s->users[--s->nusers];
            ret = respond(conn, 204, NULL, "", 0);
        } else {
            ret = respond_problem(conn, 404, "nf");
        }
    } else {
        ret = respond_problem(conn, 405, "Method Not Allowed");
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls)
{
    (void)version;
    struct conn_body *b = *con_cls;
    if (!b) {
        *con_cls = calloc(1, sizeof(struct conn_body));
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        b->p = realloc(b->p, b->len + *upload_data_size + 1);
        memcpy(b->p + b->len, upload_data, *upload_data_size);
        b->len += *upload_data_size;
        b->p[b->len] = '\0';
        *upload_data_size = 0;
        return MHD_YES;
    }
    return handle(cls, conn, url, method, b->p ? b->p : "", b->len);
}

static struct server *server_start(void)
{
    struct server *s = calloc(1, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    s->tokens = dk_tokens_new((const unsigned char *)SECRET, strlen(SECRET), 60000);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0,
                            NULL, NULL, access_handler, s, MHD_OPTION_SOCK_ADDR, &sa,
                            MHD_OPTION_URI_LOG_CALLBACK, log_uri, s, MHD_OPTION_NOTIFY_COMPLETED,
                            request_done, NULL, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                            MHD_OPTION_END);
    assert_non_null(s->d);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    assert_non_null(info);
    s->port = info->port;
    assert_true(s->port > 0);
    return s;
}

static void server_stop(struct server *s)
{
    if (!s)
        return;
    MHD_stop_daemon(s->d);
    dk_tokens_free(s->tokens);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* --- helpers --------------------------------------------------------------------------------- */

/* A copy, taken under the server's lock, of one of its last_* strings (test thread only). */
static const char *srv_last(struct server *s, const char *field)
{
    static char copies[4][512];
    static int next;
    char *out = copies[next++ % 4];
    pthread_mutex_lock(&s->lock);
    snprintf(out, sizeof copies[0], "%s", field);
    pthread_mutex_unlock(&s->lock);
    return out;
}

static int srv_users(struct server *s)
{
    pthread_mutex_lock(&s->lock);
    int n = s->nusers;
    pthread_mutex_unlock(&s->lock);
    return n;
}

struct fixture {
    struct server *srv;
    dk_tokens *tokens;
    dk_users_http *h;
    dk_arena *a;
};

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t len = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static char *url_of(int port)
{
    char *u = malloc(64);
    snprintf(u, 64, "http://127.0.0.1:%d", port);
    return u;
}

static dk_users_http *client(const char *bases, const dk_tokens *t, int connect_ms, int timeout_ms)
{
    dk_users_http *h = NULL;
    assert_int_equal(dk_users_http_new(bases, t, "tests", connect_ms, timeout_ms, &h), DK_OK);
    assert_non_null(h);
    return h;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    f->srv = server_start();
    f->tokens = dk_tokens_new((const unsigned char *)SECRET, strlen(SECRET), 60000);
    char *base = url_of(f->srv->port);
    f->h = client(base, f->tokens, 500, 2000);
    free(base);
    f->a = dk_arena_new();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    dk_log_set_context(NULL, NULL);
    dk_users_http_free(f->h);
    dk_tokens_free(f->tokens);
    server_stop(f->srv);
    dk_arena_free(f->a);
    free(f);
    return 0;
}

/* --- tests ----------------------------------------------------------------------------------- */

static void test_create_get_find_remove(void **state)
{
    struct fixture *f = *state;
    dk_user u;
    int64_t before = dk_now_ms();
    assert_int_equal(ops->create(f->h, f->a, "ada@example.com", "Ada Lovelace", &u), DK_OK);
    assert_true(dk_uuid_valid(u.id));
    assert_string_equal(u.email, "ada@example.com");
    assert_string_equal(u.name, "Ada Lovelace");
    assert_string_equal(u.role, "member");
    assert_null(u.avatar_url);
    assert_true(u.created_at >= before && u.created_at <= dk_now_ms());
    assert_int_equal(u.updated_at, u.created_at + 1);
    assert_string_equal(srv_last(f->srv, f->srv->last_method), "POST");

    dk_user g;
    assert_int_equal(ops->get(f->h, f->a, u.id, &g), DK_OK);
    assert_string_equal(g.id, u.id);
    assert_string_equal(g.email, "ada@example.com");
    assert_int_equal(g.created_at, u.created_at);

    dk_user e;
    assert_int_equal(ops->find_by_email(f->h, f->a, "ada@example.com", &e), DK_OK);
    assert_string_equal(e.id, u.id);

    assert_int_equal(ops->remove(f->h, u.id), DK_OK);
    assert_string_equal(srv_last(f->srv, f->srv->last_method), "DELETE");
    assert_int_equal(ops->get(f->h, f->a, u.id, &g), DK_E_NOT_FOUND);
    assert_int_equal(ops->find_by_email(f->h, f->a, "ada@example.com", &e), DK_E_NOT_FOUND);
    assert_int_equal(ops->remove(f->h, u.id), DK_E_NOT_FOUND);
    assert_int_equal(ops->get(f->h, f->a, "", &g), DK_E_NOT_FOUND);
    assert_int_equal(atomic_load(&f->srv->refused), 0);
}

static void test_conflict(void **state)
{
    struct fixture *f = *state;
    dk_user u;
    assert_int_equal(ops->create(f->h, f->a, "bob@example.com", "Bob", &u), DK_OK);
    dk_user v = {.id = "unchanged"};
    assert_int_equal(ops->create(f->h, f->a, "bob@example.com", "Bob Again", &v), DK_E_CONFLICT);
    assert_string_equal(v.id, "unchanged"); /* out-param untouched on failure */
}

static void test_token_identity_and_request_id(void **state)
{
    struct fixture *f = *state;
    dk_user u;
    dk_log_set_context("req-abc.123:x", NULL);
    assert_int_equal(ops->find_by_email(f->h, f->a, "nobody@example.com", &u), DK_E_NOT_FOUND);
    assert_string_equal(srv_last(f->srv, f->srv->last_request_id), "req-abc.123:x");
    assert_string_equal(srv_last(f->srv, f->srv->last_sub), "service:tests");
    assert_string_equal(srv_last(f->srv, f->srv->last_role), "service");

    /* outside a request (or with an id unfit for a header) a fresh one is sent */
    dk_log_set_context("bad id\r\nX-Evil: 1", NULL);
    assert_int_equal(ops->find_by_email(f->h, f->a, "nobody@example.com", &u), DK_E_NOT_FOUND);
    assert_true(dk_uuid_valid(srv_last(f->srv, f->srv->last_request_id)));
    dk_log_set_context(NULL, NULL);
    assert_int_equal(ops->find_by_email(f->h, f->a, "nobody@example.com", &u), DK_E_NOT_FOUND);
    assert_true(dk_uuid_valid(srv_last(f->srv, f->srv->last_request_id)));
}

static void test_bad_token_refused(void **state)
{
    struct fixture *f = *state;
    dk_tokens *other =
        dk_tokens_new((const unsigned char *)OTHER_SECRET, strlen(OTHER_SECRET), 60000);
    char *base = url_of(f->srv->port);
    dk_users_http *h = client(base, other, 500, 2000);
    free(base);
    dk_user u;
    assert_int_equal(ops->create(h, f->a, "eve@example.com", "Eve", &u), DK_E_INTERNAL);
    assert_int_equal(ops->get(h, f->a, "x", &u), DK_E_INTERNAL);
    assert_int_equal(ops->remove(h, "x"), DK_E_INTERNAL);
    assert_int_equal(atomic_load(&f->srv->refused), 3);
    assert_int_equal(srv_users(f->srv), 0);
    dk_users_http_free(h);
    dk_tokens_free(other);
}

static void test_email_encoding(void **state)
{
    struct fixture *f = *state;
    const char *email = "a+b c@x.io";
    dk_user u, e;
    assert_int_equal(ops->create(f->h, f->a, email, "Plus Space", &u), DK_OK);
    assert_string_equal(u.email, email);
    assert_int_equal(ops->find_by_email(f->h, f->a, email, &e), DK_OK);
    assert_string_equal(e.id, u.id);
    assert_string_equal(srv_last(f->srv, f->srv->last_uri),
                        "/internal/v1/users/by-email?email=a%2Bb%20c%40x.io");
    /* '+' must not turn into a space: "a b c@x.io" is somebody else */
    assert_int_equal(ops->find_by_email(f->h, f->a, "a b c@x.io", &e), DK_E_NOT_FOUND);
    /* reserved characters that would cut the query short */
    const char *tricky = "x&email=y#z%25?@q.io";
    assert_int_equal(ops->create(f->h, f->a, tricky, "Tricky", &u), DK_OK);
    assert_int_equal(ops->find_by_email(f->h, f->a, tricky, &e), DK_OK);
    assert_string_equal(e.email, tricky);
    /* an id is a path segment: encoded too */
    assert_int_equal(ops->get(f->h, f->a, "../by-email", &e), DK_E_NOT_FOUND);
    assert_string_equal(srv_last(f->srv, f->srv->last_uri), "/internal/v1/users/..%2Fby-email");
}

static void test_statuses(void **state)
{
    struct fixture *f = *state;
    dk_user u;
    static const struct {
        int http;
        dk_status want;
    } cases[] = {
        {500, DK_E_UNAVAILABLE}, {502, DK_E_UNAVAILABLE}, {503, DK_E_UNAVAILABLE},
        {504, DK_E_UNAVAILABLE}, {400, DK_E_INTERNAL},    {403, DK_E_INTERNAL},
        {422, DK_E_INTERNAL},    {302, DK_E_INTERNAL},    {404, DK_E_NOT_FOUND},
        {409, DK_E_CONFLICT},    {202, DK_E_INTERNAL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        f->srv->force_status = cases[i].http;
        dk_status st = ops->get(f->h, f->a, "id", &u);
        if (st != cases[i].want)
            fail_msg("HTTP %d gave status %d", cases[i].http, (int)st);
        assert_int_equal(ops->remove(f->h, "id"), cases[i].want);
    }
    /* a 200 whose body is not a user */
    static const char *bodies[] = {
        "not json",
        "[]",
        "{\"id\":\"1\"}",
        "{\"id\":1,\"email\":\"e\",\"name\":\"n\",\"role\":\"r\",\"avatar_url\":null,"
        "\"created_at\":\"2026-01-01T00:00:00Z\",\"updated_at\":\"2026-01-01T00:00:00Z\"}",
        "{\"id\":\"1\",\"email\":\"e\",\"name\":\"n\",\"role\":\"r\",\"avatar_url\":5,"
        "\"created_at\":\"2026-01-01T00:00:00Z\",\"updated_at\":\"2026-01-01T00:00:00Z\"}",
        "{\"id\":\"1\",\"email\":\"e\",\"name\":\"n\",\"role\":\"r\",\"avatar_url\":null,"
        "\"created_at\":\"2026-01-01T00:00:00Z\",\"updated_at\":\"2026-01-01T00:00:00Z\","
        "\"email_verified\":\"yes\"}",
        "{\"id\":\"1\",\"email\":\"e\",\"name\":\"n\",\"role\":\"r\",\"avatar_url\":null,"
        "\"created_at\":\"yesterday\",\"updated_at\":\"2026-01-01T00:00:00Z\"}",
    };
    f->srv->force_status = 200;
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        f->srv->force_body = bodies[i];
        if (ops->get(f->h, f->a, "1", &u) != DK_E_INTERNAL)
            fail_msg("body %zu accepted", i);
    }
    /* ... and one that is, with an avatar and an offset timestamp */
    f->srv->force_body =
        "{\"id\":\"1\",\"email\":\"e@x\",\"name\":\"n\",\"role\":\"admin\","
        "\"avatar_url\":\"/api/v1/users/1/avatar\",\"created_at\":"
        "\"2026-01-01T01:00:00.250+01:00\",\"updated_at\":\"2026-01-02T00:00:00Z\","
        "\"email_verified\":true,\"mfa_enabled\":false}";
    assert_int_equal(ops->get(f->h, f->a, "1", &u), DK_OK);
    assert_true(u.email_verified);
    assert_false(u.mfa_enabled);
    assert_string_equal(u.role, "admin");
    assert_string_equal(u.avatar_url, "/api/v1/users/1/avatar");
    int64_t want;
    assert_true(dk_time_parse("2026-01-01T00:00:00.250Z", &want));
    assert_int_equal(u.created_at, want);
    /* create answers 201; a 200 is tolerated, not required */
    assert_int_equal(ops->create(f->h, f->a, "e@x", "n", &u), DK_OK);
    f->srv->force_status = 0;
    f->srv->force_body = NULL;
}

static void test_body_cap(void **state)
{
    struct fixture *f = *state;
    f->srv->huge_body = true;
    dk_user u;
    assert_int_equal(ops->get(f->h, f->a, "1", &u), DK_E_INTERNAL);
    f->srv->huge_body = false;
    /* the handle that aborted is still good for the next call */
    assert_int_equal(ops->get(f->h, f->a, "1", &u), DK_E_NOT_FOUND);
}

static void test_dead_url_fails_fast(void **state)
{
    struct fixture *f = *state;
    char *dead = url_of(free_port());
    dk_users_http *h = client(dead, f->tokens, 1000, 2000);
    dk_user u;
    int64_t start = dk_mono_ms();
    assert_int_equal(ops->get(h, f->a, "1", &u), DK_E_UNAVAILABLE);
    assert_int_equal(ops->create(h, f->a, "x@y.z", "X", &u), DK_E_UNAVAILABLE);
    assert_int_equal(ops->remove(h, "1"), DK_E_UNAVAILABLE);
    assert_true(dk_mono_ms() - start < 500);
    dk_users_http_free(h);
    free(dead);
}

static void test_failover_to_live_url(void **state)
{
    struct fixture *f = *state;
    char *dead = url_of(free_port());
    char *live = url_of(f->srv->port);
    char bases[160];
    snprintf(bases, sizeof bases, " %s/ , %s/", dead, live); /* spaces, trailing slashes */
    dk_users_http *h = client(bases, f->tokens, 1000, 2000);
    dk_user u;
    assert_int_equal(ops->create(h, f->a, "fo@example.com", "Failover", &u), DK_OK);
    for (int i = 0; i < 6; i++) {
        dk_user g;
        assert_int_equal(ops->get(h, f->a, u.id, &g), DK_OK);
    }
    assert_int_equal(atomic_load(&f->srv->hits), 7);
    assert_int_equal(srv_users(f->srv), 1); /* created once, never twice */
    dk_users_http_free(h);
    free(dead);
    free(live);
}

static void test_round_robin(void **state)
{
    struct fixture *f = *state;
    struct server *second = server_start();
    char *a = url_of(f->srv->port), *b = url_of(second->port);
    char bases[160];
    snprintf(bases, sizeof bases, "%s,%s", a, b);
    dk_users_http *h = client(bases, f->tokens, 1000, 2000);
    dk_user u;
    for (int i = 0; i < 10; i++)
        assert_int_equal(ops->get(h, f->a, "nope", &u), DK_E_NOT_FOUND);
    assert_int_equal(atomic_load(&f->srv->hits), 5);
    assert_int_equal(atomic_load(&second->hits), 5);
    dk_users_http_free(h);
    server_stop(second);
    free(a);
    free(b);
}

static void test_slow_server_times_out(void **state)
{
    struct fixture *f = *state;
    char *base = url_of(f->srv->port);
    dk_users_http *h = client(base, f->tokens, 500, 300);
    free(base);
    f->srv->delay_ms = 1000;
    dk_user u;
    int64_t start = dk_mono_ms();
    assert_int_equal(ops->get(h, f->a, "1", &u), DK_E_UNAVAILABLE);
    int64_t took = dk_mono_ms() - start;
    assert_true(took >= 250 && took < 800);
    /* a slow answer is not a connect failure: a POST is never sent twice */
    start = dk_mono_ms();
    assert_int_equal(ops->create(h, f->a, "slow@example.com", "Slow", &u), DK_E_UNAVAILABLE);
    assert_true(dk_mono_ms() - start < 800);
    f->srv->delay_ms = 0;
    sleep_ms(1000); /* the server finishes the late requests */
    assert_int_equal(atomic_load(&f->srv->hits), 2);
    assert_int_equal(ops->get(h, f->a, "1", &u), DK_E_NOT_FOUND);
    dk_users_http_free(h);
}

/* A listener whose accept queue is full: the kernel drops further SYNs, so a connect hangs
 * until the connect timeout. Returns the listening fd and fills *ret_fill with the socket
 * that occupies the queue. */
static int black_hole(int *ret_port, int *ret_fill)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 0), 0);
    socklen_t len = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    int fill = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(fill, (struct sockaddr *)&sa, sizeof sa), 0);
    *ret_port = ntohs(sa.sin_port);
    *ret_fill = fill;
    return fd;
}

static void test_connect_timeout_fails_over(void **state)
{
    struct fixture *f = *state;
    int port, fill;
    int fd = black_hole(&port, &fill);
    char *hole = url_of(port), *live = url_of(f->srv->port);
    dk_users_http *alone = client(hole, f->tokens, 200, 2000);
    dk_user u;
    int64_t start = dk_mono_ms();
    assert_int_equal(ops->get(alone, f->a, "1", &u), DK_E_UNAVAILABLE);
    int64_t took = dk_mono_ms() - start;
    assert_true(took >= 150 && took < 800);
    dk_users_http_free(alone);

    char bases[160];
    snprintf(bases, sizeof bases, "%s,%s", hole, live);
    dk_users_http *h = client(bases, f->tokens, 200, 2000);
    assert_int_equal(ops->create(h, f->a, "ct@example.com", "CT", &u), DK_OK);
    /* the hole is now skipped for a while: no call pays the connect timeout again */
    start = dk_mono_ms();
    for (int i = 0; i < 4; i++)
        assert_int_equal(ops->get(h, f->a, u.id, &u), DK_OK);
    assert_true(dk_mono_ms() - start < 150);
    dk_users_http_free(h);
    close(fill);
    close(fd);
    free(hole);
    free(live);
}

struct worker {
    dk_users_http *h;
    const char *id;
    int ok;
};

static void *worker_run(void *p)
{
    struct worker *w = p;
    dk_arena *a = dk_arena_new();
    for (int i = 0; i < 50; i++) {
        dk_user u;
        if (ops->get(w->h, a, w->id, &u) == DK_OK && strcmp(u.id, w->id) == 0)
            w->ok++;
        dk_arena_reset(a);
    }
    dk_arena_free(a);
    return NULL;
}

static void test_threads_share_a_client(void **state)
{
    struct fixture *f = *state;
    dk_user u;
    assert_int_equal(ops->create(f->h, f->a, "many@example.com", "Many", &u), DK_OK);
    struct worker w[6];
    pthread_t t[6];
    for (int i = 0; i < 6; i++) {
        w[i] = (struct worker){.h = f->h, .id = u.id};
        assert_int_equal(pthread_create(&t[i], NULL, worker_run, &w[i]), 0);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].ok, 50);
    }
}

static void test_new_validates(void **state)
{
    struct fixture *f = *state;
    const char *bad[] = {NULL,
                         "",
                         "127.0.0.1:3002",
                         "ftp://host",
                         "http://",
                         "http:///path",
                         "http://a,,http://b",
                         "http://a,",
                         "http://a b",
                         "http://a?x=1",
                         "http://a#f",
                         "http://a,http://b,http://c,http://d,http://e,http://f,http://g,"
                         "http://h,http://i,http://j,http://k,http://l,http://m,http://n,"
                         "http://o,http://p,http://q"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dk_users_http *h = (dk_users_http *)1;
        dk_status st = dk_users_http_new(bad[i], f->tokens, "tests", 100, 100, &h);
        if (st != DK_E_VALIDATION)
            fail_msg("bases %zu (%s) gave %d", i, bad[i] ? bad[i] : "NULL", (int)st);
        assert_ptr_equal(h, (dk_users_http *)1);
    }
    dk_users_http *h = (dk_users_http *)1;
    assert_int_equal(dk_users_http_new("http://a", f->tokens, "bad caller", 0, 0, &h),
                     DK_E_VALIDATION);
    assert_int_equal(dk_users_http_new("http://a", f->tokens, "", 0, 0, &h), DK_E_VALIDATION);
    assert_int_equal(dk_users_http_new("http://a", NULL, "x", 0, 0, &h), DK_E_VALIDATION);
    assert_ptr_equal(h, (dk_users_http *)1);
    assert_int_equal(dk_users_http_new("HTTPS://a:1/base/, http://b", f->tokens, "x", 0, 0, &h),
                     DK_OK);
    dk_users_http_free(h);
    dk_users_http_free(NULL);
}

int main(void)
{
    /* The client must survive writes to closed sockets with SIGPIPE at its default. */
    signal(SIGPIPE, SIG_DFL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_get_find_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conflict, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_identity_and_request_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_token_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_email_encoding, setup, teardown),
        cmocka_unit_test_setup_teardown(test_statuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_url_fails_fast, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failover_to_live_url, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_robin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_server_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_timeout_fails_over, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads_share_a_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_validates, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
