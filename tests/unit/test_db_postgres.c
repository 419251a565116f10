/* test_db_postgres.c — the PostgreSQL adapter of the db port, against a real server
 * (DOCKET_TEST_PG_URL, set by scripts/with-test-servers.sh; skipped when unset). Each run works
 * in its own schema. A small TCP proxy in this file stands in for the network: frozen, it is a
 * server that accepts connections but never answers. */
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/sql.h"
#include "ports/db.h"
#include "adapters/db.h"

static const struct dk_db_ops *ops = &dk_db_postgres_ops;
static const char *pg_url;
static char schema[64]; /* this run's schema, also the pools' search_path */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static dk_db *open_url(const char *url, int pool, int acquire_ms, int connect_ms, int stmt_ms)
{
    dk_db_options o = {.url = url,
                       .pool_size = pool,
                       .acquire_timeout_ms = acquire_ms,
                       .connect_timeout_ms = connect_ms,
                       .statement_timeout_ms = stmt_ms,
                       .search_path = schema};
    dk_db *db = NULL;
    assert_int_equal(ops->open(&o, &db), DK_OK);
    assert_non_null(db);
    return db;
}

static dk_db *open_db(int pool, int acquire_ms)
{
    return open_url(pg_url, pool, acquire_ms, 3000, 5000);
}

static dk_db_conn *acquire(dk_db *db)
{
    dk_db_conn *c = NULL;
    assert_int_equal(ops->acquire(db, &c), DK_OK);
    assert_non_null(c);
    return c;
}

static dk_db_rows *q(dk_db_conn *c, dk_arena *a, const char *sql, int n, const char *const *p)
{
    dk_db_rows *r = NULL;
    dk_status s = ops->query(c, a, sql, n, p, &r);
    if (s != DK_OK)
        fail_msg("%s -> %d: %s", sql, s, ops->last_error(c));
    assert_non_null(r);
    return r;
}

static void ok(dk_db_conn *c, const char *sql)
{
    dk_status s = ops->exec_script(c, sql);
    if (s != DK_OK)
        fail_msg("%s -> %d: %s", sql, s, ops->last_error(c));
}

static const char *scalar(dk_db_conn *c, dk_arena *a, const char *sql)
{
    dk_db_rows *r = q(c, a, sql, 0, NULL);
    assert_int_equal(r->nrows, 1);
    return dk_db_value(r, 0, 0);
}

#define NEED_PG()                                                                                  \
    do {                                                                                           \
        if (!pg_url)                                                                               \
            skip();                                                                                \
    } while (0)

/* ---- a freezable TCP proxy to the test server ------------------------------------------- */

#define PROXY_PAIRS 16

struct proxy {
    int listen_fd;
    int port;
    int target_port;
    atomic_bool frozen;
    atomic_bool stop;
    pthread_t thread;
    int pair[PROXY_PAIRS][2]; /* client, server; -1 = free */
};

static int connect_local(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* A listening socket on a free loopback port. */
static int listen_local(int *ret_port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *ret_port = ntohs(sa.sin_port);
    return fd;
}

static void proxy_close_pair(struct proxy *p, int i)
{
    close(p->pair[i][0]);
    close(p->pair[i][1]);
    p->pair[i][0] = p->pair[i][1] = -1;
}

static bool forward(int from, int to)
{
    char buf[16384];
    ssize_t n = read(from, buf, sizeof buf);
    if (n <= 0)
        return false;
    for (ssize_t off = 0; off < n;) {
        ssize_t w = write(to, buf + off, (size_t)(n - off));
        if (w <= 0)
            return false;
        off += w;
    }
    return true;
}

static void *proxy_run(void *arg)
{
    struct proxy *p = arg;
    while (!atomic_load(&p->stop)) {
        if (atomic_load(&p->frozen)) {
            usleep(10000); /* nothing moves; the kernel still completes handshakes */
            continue;
        }
        struct pollfd fds[1 + 2 * PROXY_PAIRS];
        int idx[1 + 2 * PROXY_PAIRS];
        int n = 0;
        fds[n] = (struct pollfd){.fd = p->listen_fd, .events = POLLIN};
        idx[n++] = -1;
        for (int i = 0; i < PROXY_PAIRS; i++) {
            if (p->pair[i][0] < 0)
                continue;
            for (int side = 0; side < 2; side++) {
                fds[n] = (struct pollfd){.fd = p->pair[i][side], .events = POLLIN};
                idx[n++] = i * 2 + side;
            }
        }
        if (poll(fds, (nfds_t)n, 20) <= 0)
            continue;
        for (int k = 0; k < n; k++) {
            if (!fds[k].revents)
                continue;
            if (idx[k] < 0) {
                int cfd = accept(p->listen_fd, NULL, NULL);
                int sfd = cfd >= 0 ? connect_local(p->target_port) : -1;
                int slot = -1;
                for (int i = 0; i < PROXY_PAIRS && slot < 0; i++) {
                    if (p->pair[i][0] < 0)
                        slot = i;
                }
                if (cfd < 0 || sfd < 0 || slot < 0) {
                    if (cfd >= 0)
                        close(cfd);
                    if (sfd >= 0)
                        close(sfd);
                    continue;
                }
                p->pair[slot][0] = cfd;
                p->pair[slot][1] = sfd;
                continue;
            }
            int i = idx[k] / 2, side = idx[k] % 2;
            if (p->pair[i][0] < 0)
                continue;
            if (!forward(p->pair[i][side], p->pair[i][1 - side]))
                proxy_close_pair(p, i);
        }
    }
    for (int i = 0; i < PROXY_PAIRS; i++) {
        if (p->pair[i][0] >= 0)
            proxy_close_pair(p, i);
    }
    close(p->listen_fd);
    return NULL;
}

static void proxy_start(struct proxy *p, int target_port)
{
    memset(p, 0, sizeof *p);
    for (int i = 0; i < PROXY_PAIRS; i++)
        p->pair[i][0] = p->pair[i][1] = -1;
    p->target_port = target_port;
    p->listen_fd = listen_local(&p->port);
    atomic_init(&p->frozen, false);
    atomic_init(&p->stop, false);
    assert_int_equal(pthread_create(&p->thread, NULL, proxy_run, p), 0);
}

static void proxy_stop(struct proxy *p)
{
    atomic_store(&p->stop, true);
    pthread_join(p->thread, NULL);
}

/* The test server's port, user and database, as its own sessions see them. */
static dk_db_rows *server_identity(dk_arena *a)
{
    dk_db *db = open_db(1, 2000);
    dk_db_conn *c = acquire(db);
    dk_db_rows *r = q(c, a, "SELECT inet_server_port(), current_user, current_database()", 0, NULL);
    ops->release(db, c);
    ops->close(db);
    return r;
}

/* ---- setup ------------------------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    pg_url = dk_test_env("DOCKET_TEST_PG_URL");
    if (!pg_url)
        return 0;
    unsigned long v = (unsigned long)getpid() * 7919ul + (unsigned long)time(NULL);
    size_t n = (size_t)snprintf(schema, sizeof schema, "dbtest_");
    for (int i = 0; i < 8; i++, v /= 26)
        schema[n++] = (char)('a' + v % 26);
    schema[n] = '\0';
    dk_db *db = open_db(1, 2000);
    dk_db_conn *c = acquire(db);
    dk_arena *a = dk_arena_new();
    ok(c, dk_arena_printf(a, "CREATE SCHEMA %s", schema));
    ops->release(db, c);
    ops->close(db);
    dk_arena_free(a);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (!pg_url)
        return 0;
    dk_db *db = open_db(1, 2000);
    dk_db_conn *c = acquire(db);
    dk_arena *a = dk_arena_new();
    ok(c, dk_arena_printf(a, "DROP SCHEMA %s CASCADE", schema));
    ops->release(db, c);
    ops->close(db);
    dk_arena_free(a);
    return 0;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_open_rejects_bad_urls(void **state)
{
    (void)state;
    assert_int_equal(ops->engine, DK_DB_POSTGRES);
    dk_db *db = NULL;
    dk_db_options o = {.url = "sqlite:/tmp/x.db"};
    assert_int_equal(ops->open(&o, &db), DK_E_VALIDATION);
    o.url = "postgres://h/d?nosuchoption=1";
    assert_int_equal(ops->open(&o, &db), DK_E_VALIDATION);
    assert_null(db);
    ops->close(NULL);
}

static void test_params_rows_and_nulls(void **state)
{
    (void)state;
    NEED_PG();
    dk_db *db = open_db(1, 2000);
    dk_arena *a = dk_arena_new();
    dk_db_conn *c = acquire(db);

    const char *p[] = {"ab", NULL, "x"};
    dk_db_rows *r =
        q(c, a, "SELECT $1::text || $1, $2::text IS NULL, $2::text, $3::text, $1", 3, p);
    assert_int_equal(r->nrows, 1);
    assert_int_equal(r->ncols, 5);
    assert_string_equal(dk_db_value(r, 0, 0), "abab");
    assert_string_equal(dk_db_value(r, 0, 1), "t");
    assert_true(dk_db_bool(dk_db_value(r, 0, 1)));
    assert_null(dk_db_value(r, 0, 2));
    assert_string_equal(dk_db_value(r, 0, 3), "x");
    assert_string_equal(dk_db_value(r, 0, 4), "ab");
    assert_int_equal(r->affected, 0);

    ok(c, "CREATE TABLE t (id serial PRIMARY KEY, name text NOT NULL UNIQUE, note text, n int)");
    for (int i = 0; i < 3; i++) {
        char n[8];
        snprintf(n, sizeof n, "%d", i * 10);
        const char *ins[] = {i == 0 ? "a" : i == 1 ? "b" : "c", i == 1 ? NULL : "n", n};
        r = q(c, a, "INSERT INTO t (name, note, n) VALUES ($1, $2, $3)", 3, ins);
        assert_int_equal(r->affected, 1);
        assert_int_equal(r->nrows, 0);
    }
    const char *d[] = {"d"};
    r = q(c, a, "INSERT INTO t (name) VALUES ($1) RETURNING id, name, note", 1, d);
    assert_int_equal(r->affected, 1);
    assert_int_equal(r->nrows, 1);
    assert_string_equal(dk_db_value(r, 0, 0), "4");
    assert_null(dk_db_value(r, 0, 2));

    r = q(c, a, "SELECT id, name, note, n FROM t ORDER BY id", 0, NULL);
    assert_int_equal(r->nrows, 4);
    assert_int_equal(r->ncols, 4);
    assert_int_equal(r->affected, 0); /* a SELECT changes nothing */
    assert_string_equal(dk_db_value(r, 1, 1), "b");
    assert_null(dk_db_value(r, 1, 2));
    assert_string_equal(dk_db_value(r, 2, 3), "20");
    assert_null(dk_db_value(r, 3, 3));

    const char *u[] = {"m"};
    r = q(c, a, "UPDATE t SET note = $1 WHERE note IS NOT NULL", 1, u);
    assert_int_equal(r->affected, 2);
    r = q(c, a, "DELETE FROM t WHERE note IS NULL", 0, NULL);
    assert_int_equal(r->affected, 2);
    r = q(c, a, "SELECT name FROM t WHERE name = 'nobody'", 0, NULL);
    assert_int_equal(r->nrows, 0);
    assert_int_equal(r->ncols, 1);
    /* the table went to this run's schema, through the pool's search_path */
    const char *sp[] = {schema};
    r = q(c, a, "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 't'", 1, sp);
    assert_string_equal(dk_db_value(r, 0, 0), "1");
    assert_int_equal(ops->query(c, NULL, "SELECT 1", 0, NULL, NULL), DK_OK);

    /* errors: wrong parameter counts, syntax, several statements */
    dk_db_rows *none = NULL;
    assert_int_equal(ops->query(c, a, "SELECT $1::int", 0, NULL, &none), DK_E_INTERNAL);
    assert_int_equal(ops->query(c, a, "SELECT $1::int", 2, p, &none), DK_E_INTERNAL);
    assert_int_equal(ops->query(c, a, "SELEC 1", 0, NULL, &none), DK_E_INTERNAL);
    assert_non_null(strstr(ops->last_error(c), "42601"));
    assert_int_equal(ops->query(c, a, "SELECT 1; SELECT 2", 0, NULL, &none), DK_E_INTERNAL);
    assert_null(none);
    /* a value that fails to parse is not echoed into the log text */
    const char *secret[] = {"s3cr3t-value"};
    assert_int_equal(ops->query(c, a, "SELECT CAST($1 AS int)", 1, secret, &none), DK_E_INTERNAL);
    assert_non_null(strstr(ops->last_error(c), "22P02"));
    assert_null(strstr(ops->last_error(c), "s3cr3t"));
    /* the session stays usable after all of that */
    assert_string_equal(scalar(c, a, "SELECT 40 + 2"), "42");

    /* a result much larger than one read (or one TLS record) */
    r = q(c, a, "SELECT i, repeat(chr(97 + i % 26), 3000) FROM generate_series(0, 1999) i", 0,
          NULL);
    assert_int_equal(r->nrows, 2000);
    for (int i = 0; i < r->nrows; i++) {
        const char *v = dk_db_value(r, i, 1);
        assert_int_equal(strlen(v), 3000);
        assert_int_equal(v[2999], 'a' + i % 26);
    }

    ops->release(db, c);
    ops->close(db);
    dk_arena_free(a);
}

/* dk_sql_pg_array: whatever the elements hold, unnest gives them back one by one, NULLs as
 * NULLs and in order (the text of the array is one parameter). */
static void test_array_parameters_round_trip(void **state)
{
    (void)state;
    NEED_PG();
    dk_db *db = open_db(1, 2000);
    dk_arena *a = dk_arena_new();
    dk_db_conn *c = acquire(db);
    const char *v[] = {"plain",
                       "",
                       NULL,
                       "quote \" inside",
                       "back\\slash",
                       "{braces}, commas",
                       "NULL",
                       "  spaces  ",
                       "caf\xc3\xa9 \xe2\x9c\x93",
                       "new\nline",
                       "\\\""};
    int n = (int)(sizeof v / sizeof v[0]);
    const char *p[] = {dk_sql_pg_array(a, v, n)};
    dk_db_rows *r = q(c, a,
                      "SELECT e, n FROM unnest(CAST($1 AS TEXT[])) WITH ORDINALITY AS "
                      "u(e, n) ORDER BY n",
                      1, p);
    assert_int_equal(r->nrows, n);
    for (int i = 0; i < n; i++) {
        if (!v[i])
            assert_null(dk_db_value(r, i, 0));
        else
            assert_string_equal(dk_db_value(r, i, 0), v[i]);
    }
    const char *none[] = {dk_sql_pg_array(a, NULL, 0)};
    r = q(c, a, "SELECT count(*) FROM unnest(CAST($1 AS BIGINT[]))", 1, none);
    assert_string_equal(dk_db_value(r, 0, 0), "0");
    const char *nums[] = {"1", NULL, "-9223372036854775807"};
    const char *np[] = {dk_sql_pg_array(a, nums, 3)};
    r = q(c, a, "SELECT sum(x), count(x) FROM unnest(CAST($1 AS BIGINT[])) AS u(x)", 1, np);
    assert_string_equal(dk_db_value(r, 0, 0), "-9223372036854775806");
    assert_string_equal(dk_db_value(r, 0, 1), "2");
    ops->release(db, c);
    ops->close(db);
    dk_arena_free(a);
}

static void test_unique_violation_is_conflict(void **state)
{
    (void)state;
    NEED_PG();
    dk_db *db = open_db(1, 2000);
    dk_arena *a = dk_arena_new();
    dk_db_conn *c = acquire(db);
    ok(c, "CREATE TABLE u (id int PRIMARY KEY, email text UNIQUE NOT NULL);"
          "CREATE TABLE uc (id int PRIMARY KEY, u_id int NOT NULL REFERENCES u(id));");
    const char *p1[] = {"1", "a@x"};
    assert_int_equal(ops->query(c, a, "INSERT INTO u VALUES ($1, $2)", 2, p1, NULL), DK_OK);
    const char *p2[] = {"2", "a@x"};
    assert_int_equal(ops->query(c, a, "INSERT INTO u VALUES ($1, $2)", 2, p2, NULL), DK_E_CONFLICT);
    assert_non_null(strstr(ops->last_error(c), "23505"));
    assert_null(strstr(ops->last_error(c), "a@x")); /* the DETAIL with the key is not kept */
    const char *p3[] = {"1", "b@x"};
    assert_int_equal(ops->query(c, a, "INSERT INTO u VALUES ($1, $2)", 2, p3, NULL), DK_E_CONFLICT);
    const char *nul[] = {"3", NULL};
    assert_int_equal(ops->query(c, a, "INSERT INTO u VALUES ($1, $2)", 2, nul, NULL),
                     DK_E_INTERNAL);
    const char *fk[] = {"1", "99"};
    assert_int_equal(ops->query(c, a, "INSERT INTO uc VALUES ($1, $2)", 2, fk, NULL),
                     DK_E_INTERNAL);
    assert_non_null(strstr(ops->last_error(c), "23503"));
    assert_int_equal(ops->exec_script(c, "INSERT INTO u VALUES (5, 'z'); INSERT INTO u VALUES "
                                         "(6, 'z');"),
                     DK_E_CONFLICT);
    assert_string_equal(scalar(c, a, "SELECT count(*) FROM u"), "1"); /* the script was atomic */
    ops->release(db, c);
    ops->close(db);
    dk_arena_free(a);
}

static void test_transactions(void **state)
{
    (void)state;
    NEED_PG();
    dk_db *db = open_db(1, 2000);
    dk_arena *a = dk_arena_new();
    dk_db_conn *c = acquire(db);
    ok(c, "CREATE TABLE tx (v text)");
    assert_int_equal(ops->rollback(c), DK_OK); /* nothing open: fine */

    assert_int_equal(ops->begin(c), DK_OK);
    assert_int_equal(ops->query(c, a, "INSERT INTO tx VALUES ('rolled back')", 0, NULL, NULL),
                     DK_OK);
    assert_int_equal(ops->rollback(c), DK_OK);
    assert_string_equal(scalar(c, a, "SELECT count(*) FROM tx"), "0");

    assert_int_equal(ops->begin(c), DK_OK);
    assert_int_equal(ops->query(c, a, "INSERT INTO tx VALUES ('kept')", 0, NULL, NULL), DK_OK);
    assert_int_equal(ops->commit(c), DK_OK);
    assert_string_equal(scalar(c, a, "SELECT v FROM tx"), "kept");

    /* COMMIT after a failed statement must not report success */
    assert_int_equal(ops->begin(c), DK_OK);
    assert_int_equal(ops->query(c, a, "INSERT INTO tx VALUES ('lost')", 0, NULL, NULL), DK_OK);
    assert_int_equal(ops->query(c, a, "INSERT INTO nope VALUES (1)", 0, NULL, NULL), DK_E_INTERNAL);
    assert_int_equal(ops->query(c, a, "SELECT 1", 0, NULL, NULL), DK_E_INTERNAL); /* aborted */
    assert_int_equal(ops->commit(c), DK_E_INTERNAL);
    assert_string_equal(scalar(c, a, "SELECT count(*) FROM tx"), "1");

    /* BEGIN goes with the first statement (one round trip) when that statement is prepared
     * already: the transaction is as real, and a failure in it fails the transaction */
    const char *ins = "INSERT INTO tx VALUES ($1)";
    const char *v1[] = {"pipelined"};
    assert_int_equal(ops->query(c, a, "DELETE FROM tx WHERE v = $1", 1, v1, NULL), DK_OK);
    assert_int_equal(ops->query(c, a, ins, 1, v1, NULL), DK_OK); /* prepared now */
    assert_int_equal(ops->begin(c), DK_OK);
    assert_int_equal(ops->query(c, a, ins, 1, v1, NULL), DK_OK);
    assert_string_equal(scalar(c, a, "SELECT count(*) FROM tx WHERE v = 'pipelined'"), "2");
    assert_string_equal(scalar(c, a, "SELECT pg_current_xact_id_if_assigned() IS NOT NULL"), "t");
    assert_int_equal(ops->rollback(c), DK_OK);
    assert_string_equal(scalar(c, a, "SELECT count(*) FROM tx WHERE v = 'pipelined'"), "1");
    const char *num = "SELECT CAST($1 AS INTEGER)";
    const char *bad[] = {"x"}, *good[] = {"1"};
    assert_int_equal(ops->query(c, a, num, 1, good, NULL), DK_OK);
    assert_int_equal(ops->begin(c), DK_OK);
    assert_int_equal(ops->query(c, a, num, 1, bad, NULL), DK_E_INTERNAL); /* 22P02 */
    assert_int_equal(ops->query(c, a, ins, 1, v1, NULL), DK_E_INTERNAL);  /* aborted */
    assert_int_equal(ops->commit(c), DK_E_INTERNAL);
    assert_string_equal(scalar(c, a, "SELECT count(*) FROM tx WHERE v = 'pipelined'"), "1");
    /* a transaction that runs nothing sends nothing, and commits */
    assert_int_equal(ops->begin(c), DK_OK);
    assert_int_equal(ops->commit(c), DK_OK);
    assert_int_equal(ops->begin(c), DK_OK);
    assert_int_equal(ops->rollback(c), DK_OK);
    assert_string_equal(scalar(c, a, "SELECT pg_current_xact_id_if_assigned() IS NULL"), "t");
    assert_int_equal(ops->query(c, a, "DELETE FROM tx WHERE v = $1", 1, v1, NULL), DK_OK);

    /* the last statement and COMMIT in one round trip */
    assert_int_equal(ops->begin(c), DK_OK);
    assert_int_equal(ops->query(c, a, ins, 1, v1, NULL), DK_OK);
    dk_db_rows *rows = NULL;
    assert_int_equal(ops->query_commit(c, a, ins, 1, v1, &rows), DK_OK);
    assert_int_equal(rows->affected, 1);
    assert_string_equal(scalar(c, a, "SELECT pg_current_xact_id_if_assigned() IS NULL"), "t");
    assert_int_equal(ops->rollback(c), DK_OK); /* nothing open any more */
    assert_string_equal(scalar(c, a, "SELECT count(*) FROM tx WHERE v = 'pipelined'"), "2");
    assert_int_equal(ops->begin(c), DK_OK); /* the only statement: it commits alone */
    assert_int_equal(ops->query_commit(c, a, ins, 1, v1, NULL), DK_OK);
    assert_int_equal(ops->rollback(c), DK_OK);
    assert_string_equal(scalar(c, a, "SELECT count(*) FROM tx WHERE v = 'pipelined'"), "3");
    /* a failing last statement commits nothing and leaves the transaction to roll back */
    assert_int_equal(ops->begin(c), DK_OK);
    assert_int_equal(ops->query(c, a, ins, 1, v1, NULL), DK_OK);
    assert_int_equal(ops->query_commit(c, a, num, 1, bad, NULL), DK_E_INTERNAL);
    assert_int_equal(ops->query(c, a, "SELECT 1", 0, NULL, NULL), DK_E_INTERNAL); /* aborted */
    assert_int_equal(ops->rollback(c), DK_OK);
    assert_string_equal(scalar(c, a, "SELECT count(*) FROM tx WHERE v = 'pipelined'"), "3");
    /* ... and so does a transaction that had failed before it */
    assert_int_equal(ops->begin(c), DK_OK);
    assert_int_equal(ops->query(c, a, ins, 1, v1, NULL), DK_OK);
    assert_int_equal(ops->query(c, a, num, 1, bad, NULL), DK_E_INTERNAL);
    assert_int_equal(ops->query_commit(c, a, ins, 1, v1, NULL), DK_E_INTERNAL);
    assert_int_equal(ops->rollback(c), DK_OK);
    assert_string_equal(scalar(c, a, "SELECT count(*) FROM tx WHERE v = 'pipelined'"), "3");
    assert_int_equal(ops->query(c, a, "DELETE FROM tx WHERE v = $1", 1, v1, NULL), DK_OK);

    /* release rolls back what the holder left open, and the connection goes on */
    assert_int_equal(ops->begin(c), DK_OK);
    assert_int_equal(ops->query(c, a, "INSERT INTO tx VALUES ('abandoned')", 0, NULL, NULL), DK_OK);
    ops->release(db, c);
    c = acquire(db);
    assert_string_equal(scalar(c, a, "SELECT count(*) FROM tx"), "1");
    assert_string_equal(scalar(c, a, "SELECT pg_current_xact_id_if_assigned() IS NULL"), "t");

    ops->release(db, c);
    ops->close(db);
    dk_arena_free(a);
}

static void test_statement_cache(void **state)
{
    (void)state;
    NEED_PG();
    dk_db *db = open_db(1, 2000);
    dk_arena *a = dk_arena_new();
    dk_db_conn *c = acquire(db);
    for (int i = 0; i < 300; i++) {
        char v[16], want[16];
        snprintf(v, sizeof v, "%d", i);
        snprintf(want, sizeof want, "%d", i + 1);
        const char *p[] = {v};
        dk_db_rows *r = q(c, a, "SELECT $1::int + 1", 1, p);
        assert_string_equal(dk_db_value(r, 0, 0), want);
        dk_arena_reset(a);
    }
    /* the server lists the session's prepared statements: this one was prepared once */
    dk_db_rows *r = q(c, a,
                      "SELECT count(*) FROM pg_prepared_statements "
                      "WHERE statement = 'SELECT $1::int + 1'",
                      0, NULL);
    assert_string_equal(dk_db_value(r, 0, 0), "1");

    /* many distinct statements: the cache stays bounded, evicted ones are deallocated */
    for (int i = 0; i < 300; i++) {
        char sql[64], want[16];
        snprintf(sql, sizeof sql, "SELECT %d", i);
        snprintf(want, sizeof want, "%d", i);
        assert_string_equal(scalar(c, a, sql), want);
    }
    int n = (int)strtol(scalar(c, a, "SELECT count(*) FROM pg_prepared_statements"), NULL, 10);
    assert_true(n >= 2 && n <= 128);
    const char *p[] = {"1"};
    r = q(c, a, "SELECT $1::int + 1", 1, p);
    assert_string_equal(dk_db_value(r, 0, 0), "2");

    /* a cached plan whose table changed shape is prepared again */
    ok(c, "CREATE TABLE shape (a int); INSERT INTO shape VALUES (1);");
    r = q(c, a, "SELECT * FROM shape", 0, NULL);
    assert_int_equal(r->ncols, 1);
    ok(c, "ALTER TABLE shape ADD COLUMN b int DEFAULT 7");
    r = q(c, a, "SELECT * FROM shape", 0, NULL);
    assert_int_equal(r->ncols, 2);
    assert_string_equal(dk_db_value(r, 0, 1), "7");

    ops->release(db, c);
    ops->close(db);
    dk_arena_free(a);
}

static void test_statement_timeout(void **state)
{
    (void)state;
    NEED_PG();
    dk_db *db = open_url(pg_url, 1, 2000, 3000, 300);
    dk_arena *a = dk_arena_new();
    dk_db_conn *c = acquire(db);
    assert_string_equal(scalar(c, a, "SHOW statement_timeout"), "300ms");
    int64_t t0 = now_ms();
    assert_int_equal(ops->query(c, a, "SELECT pg_sleep(5)", 0, NULL, NULL), DK_E_UNAVAILABLE);
    int64_t took = now_ms() - t0;
    assert_true(took >= 250 && took < 2000);
    assert_non_null(strstr(ops->last_error(c), "57014"));
    assert_string_equal(scalar(c, a, "SELECT 1"), "1"); /* still usable */
    ops->release(db, c);
    ops->close(db);
    dk_arena_free(a);
}

struct releaser {
    dk_db *db;
    dk_db_conn *conn;
};

static void *release_later(void *arg)
{
    struct releaser *r = arg;
    usleep(50000);
    ops->release(r->db, r->conn);
    return NULL;
}

static void test_pool_is_lazy_and_bounded(void **state)
{
    (void)state;
    NEED_PG();
    dk_db *db = open_db(2, 200);
    int idle = -1, busy = -1;
    ops->stats(db, &idle, &busy);
    assert_int_equal(idle, 0); /* nothing connected yet */
    assert_int_equal(busy, 0);

    dk_db_conn *c1 = acquire(db), *c2 = acquire(db), *c3 = NULL;
    ops->stats(db, &idle, &busy);
    assert_int_equal(idle, 0);
    assert_int_equal(busy, 2);
    int64_t t0 = now_ms();
    assert_int_equal(ops->acquire(db, &c3), DK_E_UNAVAILABLE);
    int64_t waited = now_ms() - t0;
    assert_true(waited >= 190 && waited < 2000);
    assert_null(c3);
    /* readiness does not depend on a free pooled connection */
    assert_int_equal(ops->ping(db, 2000), DK_OK);

    struct releaser rel = {.db = db, .conn = c2};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, release_later, &rel), 0);
    t0 = now_ms();
    c3 = acquire(db);
    assert_true(now_ms() - t0 < 190);
    assert_ptr_equal(c3, c2);
    pthread_join(th, NULL);
    ops->release(db, c1);
    ops->release(db, c3);
    ops->stats(db, &idle, &busy);
    assert_int_equal(idle, 2);
    assert_int_equal(busy, 0);
    assert_int_equal(ops->ping(db, 2000), DK_OK);
    ops->close(db);
}

static void test_recovers_after_backends_are_terminated(void **state)
{
    (void)state;
    NEED_PG();
    /* this pool's sessions carry their own application_name: the tests running beside this one
     * on the same server keep theirs */
    dk_arena *a = dk_arena_new();
    const char *url = dk_arena_printf(a, "%s%capplication_name=%s", pg_url,
                                      strchr(pg_url, '?') ? '&' : '?', schema);
    dk_db *db = open_url(url, 3, 2000, 3000, 5000);
    dk_db *admin = open_db(1, 2000);
    /* warm all three pooled connections */
    dk_db_conn *c1 = acquire(db), *c2 = acquire(db), *c3 = acquire(db);
    assert_string_equal(scalar(c1, a, "SELECT 1"), "1");
    assert_string_equal(scalar(c2, a, "SELECT 1"), "1");
    assert_string_equal(scalar(c3, a, "SELECT 1"), "1");
    const char *pid1 = dk_arena_strdup(a, scalar(c1, a, "SELECT pg_backend_pid()"));
    ops->release(db, c2);
    ops->release(db, c3);

    /* every backend of the pool goes away, as in a server restart */
    dk_db_conn *ac = acquire(admin);
    const char *app[] = {schema};
    dk_db_rows *r =
        q(ac, a,
          "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) "
          "FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND application_name = $1",
          1, app);
    assert_string_equal(dk_db_value(r, 0, 0), "3");

    /* the held connection learns on its next query, fails fast, and is replaced */
    int64_t t0 = now_ms();
    assert_int_equal(ops->query(c1, a, "SELECT 1", 0, NULL, NULL), DK_E_UNAVAILABLE);
    assert_true(now_ms() - t0 < 2000);
    assert_true(strlen(ops->last_error(c1)) > 0);
    assert_int_equal(ops->query(c1, a, "SELECT 1", 0, NULL, NULL), DK_E_UNAVAILABLE);
    ops->release(db, c1);

    /* idle connections that died in the pool: the next query succeeds or fails once */
    for (int i = 0; i < 3; i++) {
        dk_db_conn *c = acquire(db);
        dk_status s = ops->query(c, a, "SELECT 1", 0, NULL, NULL);
        assert_true(s == DK_OK || s == DK_E_UNAVAILABLE);
        ops->release(db, c);
    }
    dk_db_conn *held[3];
    for (int i = 0; i < 3; i++) {
        held[i] = acquire(db);
        const char *pid = scalar(held[i], a, "SELECT pg_backend_pid()");
        assert_string_not_equal(pid, pid1);
    }
    for (int i = 0; i < 3; i++)
        ops->release(db, held[i]);
    assert_int_equal(ops->ping(db, 2000), DK_OK);

    ops->release(admin, ac);
    ops->close(admin);
    ops->close(db);
    dk_arena_free(a);
}

static void test_server_down_fails_fast(void **state)
{
    (void)state;
    NEED_PG();
    /* nothing listens: refused at once */
    int port = 0;
    int fd = listen_local(&port);
    close(fd);
    char url[128];
    snprintf(url, sizeof url, "postgres://postgres@127.0.0.1:%d/postgres", port);
    dk_db *db = open_url(url, 2, 1000, 2000, 1000);
    dk_db_conn *c = NULL;
    int64_t t0 = now_ms();
    assert_int_equal(ops->acquire(db, &c), DK_E_UNAVAILABLE);
    assert_int_equal(ops->ping(db, 1000), DK_E_UNAVAILABLE);
    assert_true(now_ms() - t0 < 1000);
    int idle = -1, busy = -1;
    ops->stats(db, &idle, &busy);
    assert_int_equal(idle + busy, 0);
    ops->close(db);

    /* accepts connections but never answers: bounded by connect_timeout_ms and the ping's */
    fd = listen_local(&port);
    snprintf(url, sizeof url, "postgres://postgres@127.0.0.1:%d/postgres", port);
    db = open_url(url, 2, 1000, 500, 1000);
    t0 = now_ms();
    assert_int_equal(ops->acquire(db, &c), DK_E_UNAVAILABLE);
    int64_t took = now_ms() - t0;
    assert_true(took >= 450 && took < 1500);
    t0 = now_ms();
    assert_int_equal(ops->ping(db, 300), DK_E_UNAVAILABLE);
    took = now_ms() - t0;
    assert_true(took >= 250 && took < 800);
    ops->close(db);
    close(fd);
}

static void test_server_that_stops_answering(void **state)
{
    (void)state;
    NEED_PG();
    dk_arena *a = dk_arena_new();
    dk_db_rows *id = server_identity(a);
    struct proxy px;
    proxy_start(&px, (int)strtol(dk_db_value(id, 0, 0), NULL, 10));
    const char *url = dk_arena_printf(a, "postgres://%s@127.0.0.1:%d/%s", dk_db_value(id, 0, 1),
                                      px.port, dk_db_value(id, 0, 2));

    dk_db *db = open_url(url, 2, 1000, 500, 300);
    dk_db_conn *c = acquire(db);
    assert_string_equal(scalar(c, a, "SELECT 1"), "1");
    atomic_store(&px.frozen, true);
    int64_t t0 = now_ms();
    /* statement_timeout cannot help (the server never sees the query): the client guard does */
    assert_int_equal(ops->query(c, a, "SELECT 2", 0, NULL, NULL), DK_E_UNAVAILABLE);
    int64_t took = now_ms() - t0;
    assert_true(took >= 250 && took < 5000);
    ops->release(db, c);
    t0 = now_ms();
    assert_int_equal(ops->acquire(db, &c), DK_E_UNAVAILABLE); /* new connects time out */
    assert_true(now_ms() - t0 < 1500);
    t0 = now_ms();
    assert_int_equal(ops->ping(db, 300), DK_E_UNAVAILABLE);
    assert_true(now_ms() - t0 < 800);

    atomic_store(&px.frozen, false); /* the network heals: the pool recovers by itself */
    c = acquire(db);
    assert_string_equal(scalar(c, a, "SELECT 3"), "3");
    ops->release(db, c);
    assert_int_equal(ops->ping(db, 2000), DK_OK);
    ops->close(db);
    proxy_stop(&px);
    dk_arena_free(a);
}

#define THREADS 4
#define ROUNDS  100

struct worker {
    dk_db *db;
    int id;
    int failures;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    dk_arena *a = dk_arena_new();
    char id[16];
    snprintf(id, sizeof id, "%d", w->id);
    for (int i = 0; i < ROUNDS; i++) {
        dk_db_conn *c = NULL;
        if (ops->acquire(w->db, &c) != DK_OK) {
            w->failures++;
            continue;
        }
        char n[16];
        snprintf(n, sizeof n, "%d", i);
        const char *p[] = {id, n};
        dk_db_rows *r = NULL;
        dk_status s = ops->begin(c);
        if (s == DK_OK)
            s = ops->query(c, a, "INSERT INTO conc (worker, n) VALUES ($1, $2)", 2, p, NULL);
        if (s == DK_OK)
            s = ops->query(c, a, "SELECT count(*) FROM conc WHERE worker = $1", 1, p, &r);
        if (s == DK_OK && strtol(dk_db_value(r, 0, 0), NULL, 10) != i + 1)
            s = DK_E_INTERNAL;
        if (s == DK_OK)
            s = ops->commit(c);
        if (s != DK_OK) {
            w->failures++;
            (void)ops->rollback(c);
        }
        ops->release(w->db, c);
        dk_arena_reset(a);
    }
    dk_arena_free(a);
    return NULL;
}

static void test_concurrent_threads(void **state)
{
    (void)state;
    NEED_PG();
    dk_db *db = open_db(3, 5000); /* fewer connections than threads */
    dk_arena *a = dk_arena_new();
    dk_db_conn *c = acquire(db);
    ok(c, "CREATE TABLE conc (worker int, n int, PRIMARY KEY (worker, n))");
    ops->release(db, c);
    pthread_t th[THREADS];
    struct worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){.db = db, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    c = acquire(db);
    char want[16];
    snprintf(want, sizeof want, "%d", THREADS * ROUNDS);
    assert_string_equal(scalar(c, a, "SELECT count(*) FROM conc"), want);
    ops->release(db, c);
    int idle = 0, busy = 0;
    ops->stats(db, &idle, &busy);
    assert_int_equal(busy, 0);
    assert_true(idle >= 1 && idle <= 3);
    ops->close(db);
    dk_arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_rejects_bad_urls),
        cmocka_unit_test(test_params_rows_and_nulls),
        cmocka_unit_test(test_unique_violation_is_conflict),
        cmocka_unit_test(test_array_parameters_round_trip),
        cmocka_unit_test(test_transactions),
        cmocka_unit_test(test_statement_cache),
        cmocka_unit_test(test_statement_timeout),
        cmocka_unit_test(test_pool_is_lazy_and_bounded),
        cmocka_unit_test(test_recovers_after_backends_are_terminated),
        cmocka_unit_test(test_server_down_fails_fast),
        cmocka_unit_test(test_server_that_stops_answering),
        cmocka_unit_test(test_concurrent_threads),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
