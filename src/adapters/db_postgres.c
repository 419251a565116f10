/* db_postgres.c — the SQL port on PostgreSQL through libpq (dk_db_postgres_ops).
 * Connections are opened lazily, up to pool_size, with the non-blocking libpq API so that every
 * wait is bounded: connects by connect_timeout_ms, statements by statement_timeout_ms (set on the
 * server) plus a client-side guard of PG_GUARD_SLACK_MS for a server that stopped answering.
 * TCP keepalives and tcp_user_timeout are added unless the URL sets them. Zero options mean
 * defaults: pool_size 4, acquire 5000 ms, connect 5000 ms, statement 30000 ms. A connection that
 * saw a connection-level failure (SQLSTATE class 08, 57P0x, a lost socket, a guard timeout) is
 * marked broken, answers DK_E_UNAVAILABLE, and is closed by release; the next acquire reconnects.
 * Statements are prepared per connection (names s1, s2, …) in a 128-entry LRU cache. */
#include "ports/db.h"

#include <errno.h>
#include <limits.h>
#include <libpq-fe.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/timeutil.h"
#include "core/trace.h"
#include "adapters/db.h"
#include "core/banned.h"

#define PG_CACHE_MAX            128
#define PG_DEFAULT_POOL         4
#define PG_DEFAULT_ACQUIRE_MS   5000
#define PG_DEFAULT_CONNECT_MS   5000
#define PG_DEFAULT_STATEMENT_MS 30000
#define PG_GUARD_SLACK_MS       2000
#define PG_ERR_MAX              512
#define PG_RECHECK_MS           1000 /* a connection idle longer is checked before use */
#define PG_MAX_KEYWORDS         12

struct pg_stmt {
    char *sql; /* NULL = free slot */
    uint64_t hash;
    uint64_t last_used;
    char name[16];
};

struct dk_db_conn {
    struct dk_db *db;
    PGconn *pg; /* NULL until connected */
    bool in_use;
    bool broken;         /* saw a connection-level failure: release closes it */
    bool begin_pending;  /* BEGIN asked for, not sent yet: it goes with the next statement */
    int64_t released_ms; /* when it was last given back healthy (pg_now_ms) */
    uint64_t tick;
    unsigned next_name;
    struct pg_stmt cache[PG_CACHE_MAX];
    char err[PG_ERR_MAX];
};

struct dk_db {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int size;
    struct dk_db_conn *conns;
    int acquire_timeout_ms;
    int connect_timeout_ms;
    int statement_timeout_ms;
    char *search_path;
    char *statement_timeout_text;
    /* PQconnectStartParams arrays: our defaults first, then dbname=URL, whose settings win. */
    const char *kw[PG_MAX_KEYWORDS];
    const char *val[PG_MAX_KEYWORDS];
    char *owned[PG_MAX_KEYWORDS]; /* the values we allocated */
    char connect_err[512];        /* why the last connection attempt failed (under mu) */
};

/* ---- small helpers ---------------------------------------------------------------------- */

static int64_t pg_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t pg_hash(const char *s)
{
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static int64_t pg_min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* Copies msg into the connection's error buffer, without the trailing newline libpq adds. */
static void pg_set_err(struct dk_db_conn *c, const char *prefix, const char *msg)
{
    if (!msg || !*msg)
        msg = "unknown error";
    int n = snprintf(c->err, sizeof c->err, "%s%s", prefix ? prefix : "", msg);
    if (n > 0) {
        size_t len = strlen(c->err);
        while (len > 0 && (c->err[len - 1] == '\n' || c->err[len - 1] == ' '))
            c->err[--len] = '\0';
    }
}

/* Waits for events on fd until deadline: the poll revents, 0 on timeout, -1 on error. */
static int pg_wait(int fd, short events, int64_t deadline)
{
    if (fd < 0)
        return -1;
    for (;;) {
        int64_t left = deadline - pg_now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (r > 0)
            return p.revents ? p.revents : events;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

/* Over TLS, OpenSSL may hold decrypted bytes the socket no longer signals: read those first. */
static bool pg_ssl_pending(PGconn *pg)
{
    if (!PQsslInUse(pg))
        return false;
    SSL *ssl = PQsslStruct(pg, "OpenSSL");
    return ssl && SSL_pending(ssl) > 0;
}

static void pg_notice_discard(void *arg, const PGresult *res)
{
    (void)arg;
    (void)res;
}

/* Marks the connection broken with a message; always DK_E_UNAVAILABLE. */
static dk_status pg_broken(struct dk_db_conn *c, const char *prefix, const char *msg)
{
    c->broken = true;
    pg_set_err(c, prefix, msg);
    return DK_E_UNAVAILABLE;
}

static bool pg_sqlstate_is_connection_failure(const char *state)
{
    if (!state)
        return false;
    if (state[0] == '0' && state[1] == '8')
        return strcmp(state, "08P01") != 0; /* a protocol violation leaves the session usable */
    return strncmp(state, "57P0", 4) == 0;  /* admin/crash shutdown, cannot connect, … */
}

/* Classifies a result: records the error text and returns the port's status. */
static dk_status pg_result_status(struct dk_db_conn *c, const PGresult *r, bool allow_empty)
{
    ExecStatusType es = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (es == PGRES_COMMAND_OK || es == PGRES_TUPLES_OK || (allow_empty && es == PGRES_EMPTY_QUERY))
        return DK_OK;
    if (es == PGRES_EMPTY_QUERY) {
        pg_set_err(c, NULL, "empty statement");
        return DK_E_INTERNAL;
    }
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!msg)
        msg = PQerrorMessage(c->pg);
    char prefix[16] = "";
    if (state)
        snprintf(prefix, sizeof prefix, "%s: ", state);
    pg_set_err(c, prefix, msg);
    if (state && state[0] == '2' && state[1] == '2') {
        /* Data exceptions quote the offending input ('invalid input syntax for type integer:
         * "abc"'): keep the message, drop the value, which may be a parameter. */
        char *quote = strstr(c->err, ": \"");
        if (quote)
            *quote = '\0';
    }
    if (PQstatus(c->pg) != CONNECTION_OK || pg_sqlstate_is_connection_failure(state)) {
        c->broken = true;
        return DK_E_UNAVAILABLE;
    }
    if (state && strcmp(state, "23505") == 0)
        return DK_E_CONFLICT;
    if (state && strcmp(state, "57014") == 0)
        return DK_E_UNAVAILABLE; /* statement timeout: the session stays usable */
    return DK_E_INTERNAL;
}

/* Flushes what was sent and collects the results, within deadline. The result kept is the first
 * error, or else the last result. A lost connection or a timeout marks c broken. */
static dk_status pg_flush(struct dk_db_conn *c, int64_t deadline)
{
    PGconn *pg = c->pg;
    for (;;) {
        int f = PQflush(pg);
        if (f == 0)
            break;
        if (f < 0)
            return pg_broken(c, "send failed: ", PQerrorMessage(pg));
        int w = pg_wait(PQsocket(pg), POLLIN | POLLOUT, deadline);
        if (w == 0)
            return pg_broken(c, NULL, "timed out sending to the server");
        if (w < 0)
            return pg_broken(c, "poll failed: ", strerror(errno));
        if ((w & POLLIN) && !PQconsumeInput(pg))
            return pg_broken(c, "receive failed: ", PQerrorMessage(pg));
    }
    return DK_OK;
}

/* Waits until the next result can be taken without blocking. */
static dk_status pg_wait_result(struct dk_db_conn *c, int64_t deadline)
{
    PGconn *pg = c->pg;
    while (PQisBusy(pg)) {
        int w = pg_ssl_pending(pg) ? POLLIN : pg_wait(PQsocket(pg), POLLIN, deadline);
        if (w <= 0)
            return pg_broken(c, NULL,
                             w == 0 ? "timed out waiting for the server"
                                    : "connection lost while waiting for the server");
        if (!PQconsumeInput(pg))
            return pg_broken(c, "connection lost: ", PQerrorMessage(pg));
    }
    return DK_OK;
}

static dk_status pg_collect(struct dk_db_conn *c, int64_t deadline, PGresult **ret_res)
{
    PGconn *pg = c->pg;
    dk_status fs = pg_flush(c, deadline);
    if (fs != DK_OK)
        return fs;
    PGresult *keep = NULL;
    for (;;) {
        while (PQisBusy(pg)) {
            int w = pg_ssl_pending(pg) ? POLLIN : pg_wait(PQsocket(pg), POLLIN, deadline);
            if (w <= 0) {
                PQclear(keep);
                return pg_broken(c, NULL,
                                 w == 0 ? "timed out waiting for the server"
                                        : "connection lost while waiting for the server");
            }
            if (!PQconsumeInput(pg)) {
                PQclear(keep);
                return pg_broken(c, "connection lost: ", PQerrorMessage(pg));
            }
        }
        PGresult *r = PQgetResult(pg);
        if (!r)
            break;
        ExecStatusType es = PQresultStatus(r);
        bool keep_is_error = keep && PQresultStatus(keep) == PGRES_FATAL_ERROR;
        if (keep_is_error || es == PGRES_COPY_IN || es == PGRES_COPY_OUT || es == PGRES_COPY_BOTH) {
            PQclear(r);
            if (!keep_is_error) { /* COPY is not supported through the port */
                PQclear(keep);
                return pg_broken(c, NULL, "COPY is not supported");
            }
            continue;
        }
        PQclear(keep);
        keep = r;
    }
    if (!keep) {
        if (PQstatus(pg) != CONNECTION_OK)
            return pg_broken(c, "connection lost: ", PQerrorMessage(pg));
        pg_set_err(c, NULL, "no result");
        return DK_E_INTERNAL;
    }
    *ret_res = keep;
    return DK_OK;
}

/* After a PQsend* call returned 0. */
static dk_status pg_send_failed(struct dk_db_conn *c)
{
    if (PQstatus(c->pg) != CONNECTION_OK)
        return pg_broken(c, "connection lost: ", PQerrorMessage(c->pg));
    pg_set_err(c, NULL, PQerrorMessage(c->pg));
    return DK_E_INTERNAL;
}

/* Runs a simple-protocol statement (or script); *ret_res may be NULL to discard the result. */
static dk_status pg_exec_simple(struct dk_db_conn *c, const char *sql, int64_t deadline,
                                PGresult **ret_res)
{
    if (!PQsendQuery(c->pg, sql))
        return pg_send_failed(c);
    PGresult *r = NULL;
    dk_status s = pg_collect(c, deadline, &r);
    if (s != DK_OK)
        return s;
    s = pg_result_status(c, r, true);
    if (s == DK_OK && ret_res)
        *ret_res = r;
    else
        PQclear(r);
    return s;
}

static int64_t pg_guard_deadline(const struct dk_db *db)
{
    return pg_now_ms() + db->statement_timeout_ms + PG_GUARD_SLACK_MS;
}

/* ---- connections ------------------------------------------------------------------------ */

static void pg_conn_drop(struct dk_db_conn *c)
{
    for (int i = 0; i < PG_CACHE_MAX; i++) {
        dk_free(c->cache[i].sql);
        memset(&c->cache[i], 0, sizeof c->cache[i]);
    }
    if (c->pg)
        PQfinish(c->pg);
    c->pg = NULL;
    c->broken = false;
    c->begin_pending = false;
    c->tick = 0;
    c->next_name = 0;
}

/* Session settings run once per new connection. plan_cache_mode: a prepared statement is
 * planned once, for any parameters (a generic plan), where PostgreSQL's default may plan it
 * anew on every execution when it guesses a generic plan costlier: it did so for every task
 * list (a UNION of the caller's arms: ~350 µs of planning per request, three times the
 * execution). Docket's statements are written so that one plan fits every parameter: each arm
 * is an equality on its owner, assignee or project followed by an index range scan
 * (docs/design/data.md, "Plans"). */
static dk_status pg_conn_setup(struct dk_db_conn *c, int64_t deadline)
{
    const struct dk_db *db = c->db;
    const char *params[2] = {db->statement_timeout_text, db->search_path};
    const char *sql = db->search_path
                          ? "SELECT set_config('statement_timeout', $1, false), "
                            "set_config('plan_cache_mode', 'force_generic_plan', false), "
                            "set_config('search_path', $2, false)"
                          : "SELECT set_config('statement_timeout', $1, false), "
                            "set_config('plan_cache_mode', 'force_generic_plan', false)";
    if (!PQsendQueryParams(c->pg, sql, db->search_path ? 2 : 1, NULL, params, NULL, NULL, 0))
        return pg_send_failed(c);
    PGresult *r = NULL;
    dk_status s = pg_collect(c, deadline, &r);
    if (s != DK_OK)
        return s;
    s = pg_result_status(c, r, false);
    PQclear(r);
    return s;
}

/* Opens c->pg within deadline (monotonic ms). Never blocks past it, except for DNS. */
static dk_status pg_conn_open(struct dk_db_conn *c, int64_t deadline)
{
    struct dk_db *db = c->db;
    pg_conn_drop(c);
    c->err[0] = '\0';
    PGconn *pg = PQconnectStartParams(db->kw, db->val, 1);
    if (!pg)
        return pg_broken(c, NULL, "out of memory");
    c->pg = pg;
    PQsetNoticeReceiver(pg, pg_notice_discard, NULL);
    if (PQstatus(pg) == CONNECTION_BAD) {
        dk_status s = pg_broken(c, "connect failed: ", PQerrorMessage(pg));
        pg_conn_drop(c);
        return s;
    }
    PostgresPollingStatusType ps = PGRES_POLLING_WRITING;
    while (ps != PGRES_POLLING_OK) {
        const char *why = NULL;
        if (ps == PGRES_POLLING_FAILED) {
            why = PQerrorMessage(pg);
        } else {
            int w = pg_wait(PQsocket(pg), ps == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline);
            if (w == 0)
                why = "timed out";
            else if (w < 0)
                why = "lost the socket";
        }
        if (why) {
            dk_status s = pg_broken(c, "connect failed: ", why);
            pg_conn_drop(c);
            return s;
        }
        ps = PQconnectPoll(pg);
    }
    dk_status s = DK_OK;
    if (PQsetnonblocking(pg, 1) != 0)
        s = pg_broken(c, "connect failed: ", PQerrorMessage(pg));
    if (s == DK_OK)
        s = pg_conn_setup(c, deadline);
    if (s != DK_OK) {
        bool lost = c->broken;
        pg_conn_drop(c);
        return lost ? DK_E_UNAVAILABLE : s;
    }
    return DK_OK;
}

/* Reads whatever an idle connection has received (a termination notice, end of file) so that
 * a connection the server closed while it sat in the pool is noticed before it is handed out. */
static bool pg_conn_alive(struct dk_db_conn *c)
{
    PGconn *pg = c->pg;
    if (!pg || c->broken || PQstatus(pg) != CONNECTION_OK)
        return false;
    for (int i = 0; i < 4; i++) {
        struct pollfd p = {.fd = PQsocket(pg), .events = POLLIN};
        if (p.fd < 0)
            return false;
        if (poll(&p, 1, 0) <= 0)
            break;
        if (!PQconsumeInput(pg) || PQstatus(pg) != CONNECTION_OK)
            return false;
        PGnotify *n;
        while ((n = PQnotifies(pg)) != NULL)
            PQfreemem(n);
    }
    return PQtransactionStatus(pg) == PQTRANS_IDLE;
}

/* ---- the statement cache ---------------------------------------------------------------- */

static struct pg_stmt *pg_cache_find(struct dk_db_conn *c, const char *sql, uint64_t h)
{
    for (int i = 0; i < PG_CACHE_MAX; i++) {
        struct pg_stmt *e = &c->cache[i];
        if (e->sql && e->hash == h && strcmp(e->sql, sql) == 0) {
            e->last_used = ++c->tick;
            return e;
        }
    }
    return NULL;
}

/* Forgets a cached statement, deallocating it on the server unless the transaction is in an
 * aborted state (where DEALLOCATE would fail; a leftover server-side statement is harmless). */
static dk_status pg_cache_evict(struct dk_db_conn *c, struct pg_stmt *e, int64_t deadline)
{
    if (PQtransactionStatus(c->pg) != PQTRANS_INERROR) {
        char sql[40];
        snprintf(sql, sizeof sql, "DEALLOCATE %s", e->name);
        (void)pg_exec_simple(c, sql, deadline, NULL); /* only a lost connection matters */
    }
    dk_free(e->sql);
    memset(e, 0, sizeof *e);
    return c->broken ? DK_E_UNAVAILABLE : DK_OK;
}

static dk_status pg_prepare(struct dk_db_conn *c, const char *sql, uint64_t h, int64_t deadline,
                            struct pg_stmt **ret)
{
    struct pg_stmt *slot = NULL;
    for (int i = 0; i < PG_CACHE_MAX; i++) {
        struct pg_stmt *e = &c->cache[i];
        if (!slot || (slot->sql && (!e->sql || e->last_used < slot->last_used)))
            slot = e;
    }
    if (slot->sql) {
        dk_status s = pg_cache_evict(c, slot, deadline);
        if (s != DK_OK)
            return s;
    }
    char name[16];
    snprintf(name, sizeof name, "s%u", ++c->next_name);
    if (!PQsendPrepare(c->pg, name, sql, 0, NULL))
        return pg_send_failed(c);
    PGresult *r = NULL;
    dk_status s = pg_collect(c, deadline, &r);
    if (s != DK_OK)
        return s;
    s = pg_result_status(c, r, false);
    PQclear(r);
    if (s != DK_OK)
        return s;
    slot->sql = dk_strdup(sql);
    slot->hash = h;
    slot->last_used = ++c->tick;
    memcpy(slot->name, name, sizeof name);
    *ret = slot;
    return DK_OK;
}

/* ---- the ops ---------------------------------------------------------------------------- */

static dk_status pg_usable(struct dk_db_conn *c)
{
    if (!c->pg || c->broken) {
        if (!c->err[0])
            pg_set_err(c, NULL, "connection is broken: release it");
        return DK_E_UNAVAILABLE;
    }
    return DK_OK;
}

static void pg_materialise(const PGresult *r, dk_arena *arena, dk_db_rows **ret_rows)
{
    dk_db_rows *rows = dk_arena_alloc(arena, sizeof *rows);
    rows->nrows = PQntuples(r);
    rows->ncols = PQnfields(r);
    size_t n = (size_t)rows->nrows * (size_t)rows->ncols;
    const char **vals = dk_arena_alloc(arena, (n ? n : 1) * sizeof *vals);
    for (int i = 0; i < rows->nrows; i++) {
        for (int j = 0; j < rows->ncols; j++) {
            size_t k = (size_t)i * (size_t)rows->ncols + (size_t)j;
            if (PQgetisnull(r, i, j))
                vals[k] = NULL;
            else
                vals[k] =
                    dk_arena_strndup(arena, PQgetvalue(r, i, j), (size_t)PQgetlength(r, i, j));
        }
    }
    rows->values = vals;
    const char *cmd = PQcmdStatus((PGresult *)r);
    if (strncmp(cmd, "INSERT", 6) == 0 || strncmp(cmd, "UPDATE", 6) == 0 ||
        strncmp(cmd, "DELETE", 6) == 0 || strncmp(cmd, "MERGE", 5) == 0)
        rows->affected = strtoll(PQcmdTuples((PGresult *)r), NULL, 10);
    *ret_rows = rows;
}

/* Sends a BEGIN still pending on its own (before a statement that cannot go with it). */
static dk_status pg_begin_now(struct dk_db_conn *c, int64_t deadline)
{
    if (!c->begin_pending)
        return DK_OK;
    c->begin_pending = false;
    return pg_exec_simple(c, "BEGIN", deadline, NULL);
}

/* The result of a COMMIT (taken over: cleared here). A COMMIT of a transaction that failed
 * earlier rolls back and says so without an error. */
static dk_status pg_commit_result(struct dk_db_conn *c, PGresult *r)
{
    dk_status s = pg_result_status(c, r, false);
    bool rolled_back = s == DK_OK && strcmp(PQcmdStatus(r), "ROLLBACK") == 0;
    PQclear(r);
    if (rolled_back) {
        pg_set_err(c, NULL, "the transaction had failed and was rolled back");
        return DK_E_INTERNAL;
    }
    return s;
}

/* Takes the results of one query sent in pipeline mode: the first PGresult (an error if there
 * was one), the rest dropped, up to the NULL that ends the query's results. */
static dk_status pg_pipeline_take(struct dk_db_conn *c, int64_t deadline, PGresult **ret_res)
{
    *ret_res = NULL;
    for (;;) {
        dk_status s = pg_wait_result(c, deadline);
        if (s != DK_OK)
            return s;
        PGresult *r = PQgetResult(c->pg);
        if (!r)
            return DK_OK;
        if (!*ret_res)
            *ret_res = r;
        else
            PQclear(r);
    }
}

/* A statement with what its transaction needs around it, in one round trip (libpq pipeline
 * mode: everything is sent, then one Sync): BEGIN before it when the transaction has not
 * started yet (begin), COMMIT after it when it is the transaction's last (commit). A failed
 * BEGIN aborts the statement, and its error is the one returned in *ret_res; a failed
 * statement aborts the COMMIT and leaves the transaction open in the failed state, as it does
 * when they are sent apart. *ret_res: the statement's result (for pg_result_status);
 * *ret_commit: the COMMIT's, when commit and the statement ran. */
static dk_status pg_pipeline(struct dk_db_conn *c, bool begin, const char *stmt, int nparams,
                             const char *const *params, bool commit, int64_t deadline,
                             PGresult **ret_res, PGresult **ret_commit)
{
    PGconn *pg = c->pg;
    if (!PQenterPipelineMode(pg))
        return pg_send_failed(c);
    if ((begin && !PQsendQueryParams(pg, "BEGIN", 0, NULL, NULL, NULL, NULL, 0)) ||
        !PQsendQueryPrepared(pg, stmt, nparams, params, NULL, NULL, 0) ||
        (commit && !PQsendQueryParams(pg, "COMMIT", 0, NULL, NULL, NULL, NULL, 0)) ||
        !PQpipelineSync(pg)) {
        dk_status s = pg_send_failed(c);
        c->broken = true; /* a half-sent pipeline: the session's state is unknown */
        return s;
    }
    PGresult *b = NULL, *res = NULL, *com = NULL, *sync = NULL;
    dk_status s = pg_flush(c, deadline);
    if (s == DK_OK && begin)
        s = pg_pipeline_take(c, deadline, &b);
    if (s == DK_OK)
        s = pg_pipeline_take(c, deadline, &res);
    if (s == DK_OK && commit)
        s = pg_pipeline_take(c, deadline, &com);
    if (s == DK_OK)
        s = pg_wait_result(c, deadline);
    if (s == DK_OK) {
        sync = PQgetResult(pg);
        if (!sync || PQresultStatus(sync) != PGRES_PIPELINE_SYNC || !PQexitPipelineMode(pg))
            s = pg_broken(c, "pipeline: ", PQerrorMessage(pg));
    }
    PQclear(sync);
    if (s == DK_OK && begin && (!b || PQresultStatus(b) != PGRES_COMMAND_OK)) {
        PQclear(res); /* PGRES_PIPELINE_ABORTED: the statement did not run */
        PQclear(com);
        *ret_res = b;
        return DK_OK;
    }
    PQclear(b);
    if (s == DK_OK && !res)
        s = pg_broken(c, NULL, "pipeline: no result");
    if (s != DK_OK) {
        PQclear(res);
        PQclear(com);
        return s;
    }
    *ret_res = res;
    if (commit && PQresultStatus(res) != PGRES_FATAL_ERROR)
        *ret_commit = com;
    else
        PQclear(com);
    return DK_OK;
}

/* Runs a statement; commit: it is the transaction's last, and the transaction commits with it
 * (the statement's failure leaves the transaction open in the failed state). */
static dk_status pg_query_run(dk_db_conn *c, dk_arena *arena, const char *sql, int nparams,
                              const char *const *params, dk_db_rows **ret_rows, bool commit)
{
    dk_status s = pg_usable(c);
    if (s != DK_OK)
        return s;
    if (nparams < 0 || (nparams > 0 && !params) || (ret_rows && !arena)) {
        pg_set_err(c, NULL, "invalid query arguments");
        return DK_E_INTERNAL;
    }
    int64_t deadline = pg_guard_deadline(c->db);
    uint64_t h = pg_hash(sql);
    for (int attempt = 0;; attempt++) {
        struct pg_stmt *e = pg_cache_find(c, sql, h);
        bool cached = e != NULL;
        if (!e) {
            /* a statement new to this connection is parsed inside the transaction, as it
             * always was (a parse error fails the transaction): BEGIN goes first, alone */
            s = pg_begin_now(c, deadline);
            if (s == DK_OK)
                s = pg_prepare(c, sql, h, deadline, &e);
            if (s != DK_OK)
                return s;
        }
        PGresult *r = NULL, *com = NULL;
        if (commit && c->begin_pending) {
            c->begin_pending = false; /* the transaction's only statement: it commits alone */
            commit = false;
        }
        if (c->begin_pending || commit) {
            bool begin = c->begin_pending;
            c->begin_pending = false;
            s = pg_pipeline(c, begin, e->name, nparams, params, commit, deadline, &r, &com);
        } else {
            if (!PQsendQueryPrepared(c->pg, e->name, nparams, params, NULL, NULL, 0))
                return pg_send_failed(c);
            s = pg_collect(c, deadline, &r);
        }
        if (s != DK_OK)
            return s;
        s = pg_result_status(c, r, false);
        if (s == DK_OK && commit) {
            s = pg_commit_result(c, com);
            com = NULL;
        }
        PQclear(com);
        if (s == DK_OK) {
            if (ret_rows)
                pg_materialise(r, arena, ret_rows);
            PQclear(r);
            return DK_OK;
        }
        if (commit && PQresultStatus(r) != PGRES_FATAL_ERROR) {
            PQclear(r); /* the statement ran, its COMMIT failed */
            return s;
        }
        /* A cached plan whose result type changed under it (a migration altered the table):
         * forget it, and outside a transaction prepare it again once. */
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        bool stale = cached && state && strcmp(state, "0A000") == 0;
        PQclear(r);
        if (!stale)
            return s;
        dk_status es = pg_cache_evict(c, e, deadline);
        if (es != DK_OK)
            return es;
        if (attempt > 0 || PQtransactionStatus(c->pg) != PQTRANS_IDLE)
            return s;
    }
}

static dk_status pg_exec_script(dk_db_conn *c, const char *sql)
{
    dk_status s = pg_usable(c);
    if (s == DK_OK)
        s = pg_begin_now(c, pg_guard_deadline(c->db));
    if (s != DK_OK)
        return s;
    return pg_exec_simple(c, sql, pg_guard_deadline(c->db), NULL);
}

/* BEGIN is not sent on its own: it goes in one round trip with the transaction's first
 * statement (pg_begin_with). A transaction that runs no statement sends nothing at all. */
static dk_status pg_begin(dk_db_conn *c)
{
    dk_status s = pg_usable(c);
    if (s != DK_OK)
        return s;
    if (c->begin_pending || PQtransactionStatus(c->pg) != PQTRANS_IDLE)
        return pg_exec_simple(c, "BEGIN", pg_guard_deadline(c->db), NULL); /* as it always did */
    c->begin_pending = true;
    return DK_OK;
}

static dk_status pg_commit(dk_db_conn *c)
{
    dk_status s = pg_usable(c);
    if (s != DK_OK)
        return s;
    if (c->begin_pending) { /* nothing ran: nothing to commit */
        c->begin_pending = false;
        return DK_OK;
    }
    PGresult *r = NULL;
    s = pg_exec_simple(c, "COMMIT", pg_guard_deadline(c->db), &r);
    if (s != DK_OK)
        return s;
    return pg_commit_result(c, r);
}

/* Each statement is a client span under the caller's trace: named by its verb and table, never
 * its parameters (core/trace.h). commit: COMMIT goes in the same pipeline (pg_query_commit). */
static dk_status pg_query_traced(dk_db_conn *c, dk_arena *arena, const char *sql, int nparams,
                                 const char *const *params, dk_db_rows **ret_rows, bool commit)
{
    dk_span *sp = dk_span_sql("postgresql", sql);
    dk_status st = pg_query_run(c, arena, sql, nparams, params, ret_rows, commit);
    if (st != DK_OK)
        dk_span_error(sp, dk_status_title(st));
    dk_span_end(sp);
    return st;
}

static dk_status pg_query_commit(dk_db_conn *c, dk_arena *arena, const char *sql, int nparams,
                                 const char *const *params, dk_db_rows **ret_rows)
{
    return pg_query_traced(c, arena, sql, nparams, params, ret_rows, true);
}

static dk_status pg_rollback(dk_db_conn *c)
{
    c->begin_pending = false;
    dk_status s = pg_usable(c);
    if (s != DK_OK)
        return s;
    if (PQtransactionStatus(c->pg) == PQTRANS_IDLE)
        return DK_OK;
    return pg_exec_simple(c, "ROLLBACK", pg_guard_deadline(c->db), NULL);
}

static const char *pg_last_error(dk_db_conn *c)
{
    return c->err;
}

static bool pg_connect_error(dk_db *db, char *buf, size_t cap)
{
    pthread_mutex_lock(&db->mu);
    bool any = db->connect_err[0] != '\0';
    if (any)
        snprintf(buf, cap, "%s", db->connect_err);
    pthread_mutex_unlock(&db->mu);
    return any;
}

static void pg_close(dk_db *db)
{
    if (!db)
        return;
    for (int i = 0; db->conns && i < db->size; i++)
        pg_conn_drop(&db->conns[i]);
    dk_free(db->conns);
    for (int i = 0; i < PG_MAX_KEYWORDS; i++)
        dk_free(db->owned[i]);
    dk_free(db->search_path);
    dk_free(db->statement_timeout_text);
    pthread_cond_destroy(&db->cv);
    pthread_mutex_destroy(&db->mu);
    dk_free(db);
}

/* Appends a connection keyword; value is copied. */
static void pg_add_keyword(dk_db *db, int *n, const char *kw, const char *value)
{
    db->kw[*n] = kw;
    db->owned[*n] = dk_strdup(value);
    db->val[*n] = db->owned[*n];
    (*n)++;
}

static dk_status pg_open(const dk_db_options *opt, dk_db **ret_db)
{
    const char *url = opt ? opt->url : NULL;
    if (!url || (strncmp(url, "postgres://", 11) != 0 && strncmp(url, "postgresql://", 13) != 0))
        return DK_E_VALIDATION;
    char *perr = NULL;
    PQconninfoOption *parsed = PQconninfoParse(url, &perr);
    if (!parsed) {
        PQfreemem(perr);
        return DK_E_VALIDATION;
    }
    PQconninfoFree(parsed);

    dk_db *db = DK_NEW(dk_db);
    pthread_mutex_init(&db->mu, NULL);
    dk_cond_init_monotonic(&db->cv);
    db->size = opt->pool_size > 0 ? opt->pool_size : PG_DEFAULT_POOL;
    db->acquire_timeout_ms =
        opt->acquire_timeout_ms > 0 ? opt->acquire_timeout_ms : PG_DEFAULT_ACQUIRE_MS;
    db->connect_timeout_ms =
        opt->connect_timeout_ms > 0 ? opt->connect_timeout_ms : PG_DEFAULT_CONNECT_MS;
    db->statement_timeout_ms =
        opt->statement_timeout_ms > 0 ? opt->statement_timeout_ms : PG_DEFAULT_STATEMENT_MS;
    db->search_path = opt->search_path && *opt->search_path ? dk_strdup(opt->search_path) : NULL;
    char buf[32];
    snprintf(buf, sizeof buf, "%d", db->statement_timeout_ms);
    db->statement_timeout_text = dk_strdup(buf);

    /* Defaults before dbname: settings in the URL override them. We time connects ourselves
     * (non-blocking), but connect_timeout keeps libpq's own waits bounded too. */
    int n = 0;
    snprintf(buf, sizeof buf, "%d", (db->connect_timeout_ms + 999) / 1000);
    pg_add_keyword(db, &n, "connect_timeout", buf);
    pg_add_keyword(db, &n, "keepalives", "1");
    pg_add_keyword(db, &n, "keepalives_idle", "5");
    pg_add_keyword(db, &n, "keepalives_interval", "2");
    pg_add_keyword(db, &n, "keepalives_count", "2");
    snprintf(buf, sizeof buf, "%d", db->connect_timeout_ms > 5000 ? db->connect_timeout_ms : 5000);
    pg_add_keyword(db, &n, "tcp_user_timeout", buf);
    pg_add_keyword(db, &n, "fallback_application_name", "docket");
    pg_add_keyword(db, &n, "dbname", url);
    db->kw[n] = NULL;
    db->val[n] = NULL;

    db->conns = dk_calloc((size_t)db->size, sizeof *db->conns);
    for (int i = 0; i < db->size; i++)
        db->conns[i].db = db;
    *ret_db = db;
    return DK_OK;
}

/* Hands a slot back to the pool (after closing its connection if it is broken). */
static void pg_slot_put(dk_db *db, struct dk_db_conn *c)
{
    if (c->broken)
        pg_conn_drop(c);
    pthread_mutex_lock(&db->mu);
    c->in_use = false;
    pthread_cond_signal(&db->cv);
    pthread_mutex_unlock(&db->mu);
}

/* Takes a free slot, preferring one with an open connection; waits until deadline. */
static struct dk_db_conn *pg_slot_take(dk_db *db, int64_t deadline)
{
    struct timespec ts = {.tv_sec = deadline / 1000, .tv_nsec = (deadline % 1000) * 1000000};
    struct dk_db_conn *c = NULL;
    pthread_mutex_lock(&db->mu);
    for (;;) {
        for (int i = 0; i < db->size; i++) {
            struct dk_db_conn *e = &db->conns[i];
            if (e->in_use)
                continue;
            if (!c || (!c->pg && e->pg))
                c = e;
        }
        if (c || pg_now_ms() >= deadline)
            break;
        int rc = pthread_cond_timedwait(&db->cv, &db->mu, &ts);
        if (rc == ETIMEDOUT && pg_now_ms() >= deadline) {
            for (int i = 0; i < db->size && !c; i++) {
                if (!db->conns[i].in_use)
                    c = &db->conns[i];
            }
            break;
        }
    }
    if (c)
        c->in_use = true;
    pthread_mutex_unlock(&db->mu);
    return c;
}

static dk_status pg_acquire(dk_db *db, dk_db_conn **ret_conn)
{
    struct dk_db_conn *c = pg_slot_take(db, pg_now_ms() + db->acquire_timeout_ms);
    if (!c)
        return DK_E_UNAVAILABLE;
    c->err[0] = '\0';
    /* A connection given back healthy moments ago is used without looking at its socket (a
     * poll per request, like pgbouncer's server_check_delay): a server that dropped it within
     * that second fails one query, as one that drops it mid-query does. */
    bool recent = c->pg && !c->broken && pg_now_ms() - c->released_ms < PG_RECHECK_MS &&
                  PQstatus(c->pg) == CONNECTION_OK && PQtransactionStatus(c->pg) == PQTRANS_IDLE;
    if (!recent && !pg_conn_alive(c)) {
        dk_status s = pg_conn_open(c, pg_now_ms() + db->connect_timeout_ms);
        if (s != DK_OK) {
            pthread_mutex_lock(&db->mu);
            snprintf(db->connect_err, sizeof db->connect_err, "%s", c->err);
            pthread_mutex_unlock(&db->mu);
            c->broken = true;
            pg_slot_put(db, c);
            return s;
        }
    }
    *ret_conn = c;
    return DK_OK;
}

static void pg_release(dk_db *db, dk_db_conn *c)
{
    if (!c)
        return;
    c->begin_pending = false;
    if (c->pg && !c->broken) {
        PGTransactionStatusType ts = PQtransactionStatus(c->pg);
        if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) {
            if (pg_rollback(c) != DK_OK)
                c->broken = true;
        } else if (ts != PQTRANS_IDLE) {
            c->broken = true;
        }
        if (!c->broken)
            c->released_ms = pg_now_ms();
    }
    pg_slot_put(db, c);
}

/* SELECT 1 on c within deadline. */
static dk_status pg_select1(struct dk_db_conn *c, int64_t deadline)
{
    return pg_exec_simple(c, "SELECT 1", deadline, NULL);
}

static dk_status pg_ping(dk_db *db, int timeout_ms)
{
    int64_t deadline = pg_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    /* An idle pooled connection answers cheaply; when there is none (or it fails), a fresh
     * connection tells whether the server is reachable. Both are bounded by the deadline. */
    struct dk_db_conn *c = NULL;
    pthread_mutex_lock(&db->mu);
    for (int i = 0; i < db->size && !c; i++) {
        if (!db->conns[i].in_use && db->conns[i].pg)
            c = &db->conns[i];
    }
    if (c)
        c->in_use = true;
    pthread_mutex_unlock(&db->mu);
    if (c) {
        dk_status s = pg_conn_alive(c) ? pg_select1(c, deadline) : DK_E_UNAVAILABLE;
        if (s != DK_OK)
            c->broken = true;
        pg_slot_put(db, c);
        if (s == DK_OK)
            return DK_OK;
    }
    struct dk_db_conn *fresh = DK_NEW(struct dk_db_conn);
    fresh->db = db;
    dk_status s = pg_conn_open(fresh, pg_min64(deadline, pg_now_ms() + db->connect_timeout_ms));
    if (s == DK_OK)
        s = pg_select1(fresh, deadline);
    pg_conn_drop(fresh);
    dk_free(fresh);
    return s == DK_OK ? DK_OK : DK_E_UNAVAILABLE;
}

static void pg_stats(dk_db *db, int *ret_idle, int *ret_busy)
{
    int idle = 0, busy = 0;
    pthread_mutex_lock(&db->mu);
    for (int i = 0; i < db->size; i++) {
        if (db->conns[i].in_use)
            busy++;
        else if (db->conns[i].pg)
            idle++;
    }
    pthread_mutex_unlock(&db->mu);
    if (ret_idle)
        *ret_idle = idle;
    if (ret_busy)
        *ret_busy = busy;
}

static dk_status pg_backup(dk_db_conn *c, const char *dest_path)
{
    (void)c;
    (void)dest_path;
    return DK_E_BAD_REQUEST; /* pg_dump / pg_restore: see docs/operations.md */
}

static dk_status pg_restore(dk_db_conn *c, const char *src_path)
{
    (void)c;
    (void)src_path;
    return DK_E_BAD_REQUEST;
}

static dk_status pg_query(dk_db_conn *c, dk_arena *arena, const char *sql, int nparams,
                          const char *const *params, dk_db_rows **ret_rows)
{
    return pg_query_traced(c, arena, sql, nparams, params, ret_rows, false);
}

const struct dk_db_ops dk_db_postgres_ops = {
    .name = "postgres",
    .engine = DK_DB_POSTGRES,
    .open = pg_open,
    .close = pg_close,
    .acquire = pg_acquire,
    .release = pg_release,
    .query = pg_query,
    .exec_script = pg_exec_script,
    .begin = pg_begin,
    .commit = pg_commit,
    .query_commit = pg_query_commit,
    .rollback = pg_rollback,
    .ping = pg_ping,
    .stats = pg_stats,
    .last_error = pg_last_error,
    .connect_error = pg_connect_error,
    .backup = pg_backup,
    .restore = pg_restore,
};
