/* test_db_sqlite.c — the SQLite adapter of the db port, against real database files. */
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/arena.h"
#include "ports/db.h"
#include "adapters/db.h"
#include "adapters/sqlite_vfs.h"

static const struct dk_db_ops *ops = &dk_db_sqlite_ops;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static dk_db *open_db(const char *url, int pool, int acquire_ms)
{
    dk_db_options o = {.url = url, .pool_size = pool, .acquire_timeout_ms = acquire_ms};
    dk_db *db = NULL;
    assert_int_equal(ops->open(&o, &db), DK_OK);
    assert_non_null(db);
    return db;
}

/* "sqlite:<fresh dir>/<sub>/test.db"; the caller frees it. */
static char *file_url(const char *test, const char *sub)
{
    char *dir = dk_test_tmpdir(test);
    size_t n = strlen(dir) + strlen(sub) + 32;
    char *url = malloc(n);
    snprintf(url, n, "sqlite:%s/%s/test.db", dir, sub);
    free(dir);
    return url;
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

static void test_url_selection(void **state)
{
    (void)state;
    assert_ptr_equal(dk_db_ops_for_url("sqlite:/tmp/x.db"), &dk_db_sqlite_ops);
    assert_ptr_equal(dk_db_ops_for_url("sqlite::memory:"), &dk_db_sqlite_ops);
    assert_ptr_equal(dk_db_ops_for_url("sqlite:///tmp/x.db"), &dk_db_sqlite_ops);
    assert_ptr_equal(dk_db_ops_for_url("postgres://u@h/d"), &dk_db_postgres_ops);
    assert_ptr_equal(dk_db_ops_for_url("postgresql://u@h/d"), &dk_db_postgres_ops);
    assert_null(dk_db_ops_for_url("mysql://h/d"));
    assert_null(dk_db_ops_for_url(""));
    assert_null(dk_db_ops_for_url(NULL));
    assert_int_equal(ops->engine, DK_DB_SQLITE);

    dk_db *db = NULL;
    dk_db_options bad = {.url = "sqlite:"};
    assert_int_not_equal(ops->open(&bad, &db), DK_OK);
    dk_db_options pg = {.url = "postgres://h/d"};
    assert_int_not_equal(ops->open(&pg, &db), DK_OK);
    assert_null(db);
    ops->close(NULL);
}

static void test_open_file_creates_dirs_and_sets_pragmas(void **state)
{
    (void)state;
    char *url = file_url("db-sqlite-open", "a/b/c");
    /* the sqlite:// form too */
    char url2[4096];
    snprintf(url2, sizeof url2, "sqlite://%s", url + strlen("sqlite:"));
    dk_db *db = open_db(url2, 2, 1000);
    struct stat st;
    assert_int_equal(stat(url + strlen("sqlite:"), &st), 0);

    dk_arena *a = dk_arena_new();
    dk_db_conn *c = NULL;
    assert_int_equal(ops->acquire(db, &c), DK_OK);
    assert_string_equal(scalar(c, a, "PRAGMA journal_mode"), "wal");
    assert_string_equal(scalar(c, a, "PRAGMA synchronous"), "1"); /* NORMAL */
    assert_string_equal(scalar(c, a, "PRAGMA foreign_keys"), "1");
    assert_string_equal(scalar(c, a, "PRAGMA busy_timeout"), "1000");
    ops->release(db, c);
    ops->close(db);

    /* the plain sqlite:PATH form reopens the same file */
    db = open_db(url, 1, 0);
    assert_int_equal(ops->acquire(db, &c), DK_OK);
    assert_string_equal(scalar(c, a, "PRAGMA busy_timeout"), "5000"); /* the default */
    ops->release(db, c);
    ops->close(db);
    dk_arena_free(a);
    free(url);
}

static void test_params_and_values(void **state)
{
    (void)state;
    dk_db *db = open_db("sqlite::memory:", 1, 1000);
    dk_arena *a = dk_arena_new();
    dk_db_conn *c = NULL;
    assert_int_equal(ops->acquire(db, &c), DK_OK);

    const char *p[] = {"ab", NULL, "x"};
    dk_db_rows *r = q(c, a, "SELECT $1 || $1, $2 IS NULL, $2, $3, $1", 3, p);
    assert_int_equal(r->nrows, 1);
    assert_int_equal(r->ncols, 5);
    assert_string_equal(dk_db_value(r, 0, 0), "abab");
    assert_string_equal(dk_db_value(r, 0, 1), "1");
    assert_null(dk_db_value(r, 0, 2));
    assert_string_equal(dk_db_value(r, 0, 3), "x");
    assert_string_equal(dk_db_value(r, 0, 4), "ab");
    assert_int_equal(r->affected, 0);

    /* numbers come back as text; text params take part in arithmetic */
    const char *n[] = {"41"};
    r = q(c, a, "SELECT $1 + 1, 1.5, NULL, 'a''b', 1 = 1", 1, n);
    assert_string_equal(dk_db_value(r, 0, 0), "42");
    assert_string_equal(dk_db_value(r, 0, 1), "1.5");
    assert_null(dk_db_value(r, 0, 2));
    assert_string_equal(dk_db_value(r, 0, 3), "a'b");
    assert_true(dk_db_bool(dk_db_value(r, 0, 4)));

    /* the parameter list must match the statement, as on PostgreSQL */
    dk_db_rows *none = NULL;
    assert_int_equal(ops->query(c, a, "SELECT $1", 0, NULL, &none), DK_E_INTERNAL);
    assert_int_equal(ops->query(c, a, "SELECT $1", 3, p, &none), DK_E_INTERNAL);
    assert_int_equal(ops->query(c, a, "SELECT $2", 2, p, &none), DK_E_INTERNAL);
    assert_int_equal(ops->query(c, a, "SELECT $1::text", 1, p, &none), DK_E_INTERNAL);
    assert_non_null(strstr(ops->last_error(c), "CAST"));
    assert_int_equal(ops->query(c, a, "SELECT ?", 1, p, &none), DK_E_INTERNAL);
    assert_int_equal(ops->query(c, a, "SELECT 1; SELECT 2", 0, NULL, &none), DK_E_INTERNAL);
    assert_int_equal(ops->query(c, a, "  ", 0, NULL, &none), DK_E_INTERNAL);
    assert_int_equal(ops->query(c, a, "SELEC 1", 0, NULL, &none), DK_E_INTERNAL);
    assert_non_null(strstr(ops->last_error(c), "syntax error"));
    assert_null(none);
    /* a trailing semicolon is fine; no rows wanted is fine */
    assert_int_equal(ops->query(c, NULL, "SELECT 1;", 0, NULL, NULL), DK_OK);

    ops->release(db, c);
    ops->close(db);
    dk_arena_free(a);
}

static void test_rows_nulls_and_affected(void **state)
{
    (void)state;
    dk_db *db = open_db("sqlite::memory:", 1, 1000);
    dk_arena *a = dk_arena_new();
    dk_db_conn *c = NULL;
    assert_int_equal(ops->acquire(db, &c), DK_OK);
    ok(c, "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, note TEXT);");

    dk_db_rows *r = q(c, a, "CREATE INDEX t_note ON t (note)", 0, NULL);
    assert_int_equal(r->affected, 0);
    const char *names[] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        const char *p[] = {names[i], i == 1 ? NULL : "n"};
        r = q(c, a, "INSERT INTO t (name, note) VALUES ($1, $2)", 2, p);
        assert_int_equal(r->affected, 1);
        assert_int_equal(r->nrows, 0);
        assert_int_equal(r->ncols, 0);
    }
    const char *d[] = {"d"};
    r = q(c, a, "INSERT INTO t (name) VALUES ($1) RETURNING id, name, note", 1, d);
    assert_int_equal(r->affected, 1);
    assert_int_equal(r->nrows, 1);
    assert_string_equal(dk_db_value(r, 0, 0), "4");
    assert_string_equal(dk_db_value(r, 0, 1), "d");
    assert_null(dk_db_value(r, 0, 2));

    r = q(c, a, "SELECT id, name, note FROM t ORDER BY id", 0, NULL);
    assert_int_equal(r->nrows, 4);
    assert_int_equal(r->ncols, 3);
    assert_int_equal(r->affected, 0);
    assert_string_equal(dk_db_value(r, 1, 1), "b");
    assert_null(dk_db_value(r, 1, 2));
    assert_string_equal(dk_db_value(r, 2, 2), "n");
    assert_string_equal(dk_db_value(r, 3, 0), "4");

    r = q(c, a, "SELECT id FROM t WHERE name = 'nobody'", 0, NULL);
    assert_int_equal(r->nrows, 0);
    assert_int_equal(r->ncols, 1);

    const char *u[] = {"m"};
    r = q(c, a, "UPDATE t SET note = $1 WHERE note IS NOT NULL", 1, u);
    assert_int_equal(r->affected, 2);
    r = q(c, a, "UPDATE t SET note = 'z' WHERE id > 100", 0, NULL);
    assert_int_equal(r->affected, 0);
    r = q(c, a, "DELETE FROM t WHERE note IS NULL", 0, NULL);
    assert_int_equal(r->affected, 2);
    r = q(c, a, "SELECT count(*) FROM t", 0, NULL);
    assert_string_equal(dk_db_value(r, 0, 0), "2");
    assert_int_equal(r->affected, 0);

    ops->release(db, c);
    ops->close(db);
    dk_arena_free(a);
}

static void test_constraint_errors(void **state)
{
    (void)state;
    dk_db *db = open_db("sqlite::memory:", 1, 1000);
    dk_arena *a = dk_arena_new();
    dk_db_conn *c = NULL;
    assert_int_equal(ops->acquire(db, &c), DK_OK);
    ok(c, "CREATE TABLE p (id INTEGER PRIMARY KEY, email TEXT UNIQUE NOT NULL);"
          "CREATE TABLE k (code TEXT PRIMARY KEY);"
          "CREATE TABLE ch (id INTEGER PRIMARY KEY, p_id INTEGER NOT NULL REFERENCES p(id));");
    const char *p1[] = {"1", "a@x"};
    assert_int_equal(ops->query(c, a, "INSERT INTO p VALUES ($1, $2)", 2, p1, NULL), DK_OK);
    const char *p2[] = {"2", "a@x"};
    assert_int_equal(ops->query(c, a, "INSERT INTO p VALUES ($1, $2)", 2, p2, NULL), DK_E_CONFLICT);
    assert_non_null(strstr(ops->last_error(c), "UNIQUE"));
    const char *p3[] = {"1", "b@x"};
    assert_int_equal(ops->query(c, a, "INSERT INTO p VALUES ($1, $2)", 2, p3, NULL), DK_E_CONFLICT);
    const char *k[] = {"k1"};
    assert_int_equal(ops->query(c, a, "INSERT INTO k VALUES ($1)", 1, k, NULL), DK_OK);
    assert_int_equal(ops->query(c, a, "INSERT INTO k VALUES ($1)", 1, k, NULL), DK_E_CONFLICT);

    /* other constraints are not conflicts; foreign keys are enforced */
    const char *nul[] = {"3", NULL};
    assert_int_equal(ops->query(c, a, "INSERT INTO p VALUES ($1, $2)", 2, nul, NULL),
                     DK_E_INTERNAL);
    const char *fk[] = {"99"};
    assert_int_equal(ops->query(c, a, "INSERT INTO ch (p_id) VALUES ($1)", 1, fk, NULL),
                     DK_E_INTERNAL);
    assert_non_null(strstr(ops->last_error(c), "FOREIGN KEY"));
    assert_int_equal(ops->query(c, a, "SELECT * FROM missing", 0, NULL, NULL), DK_E_INTERNAL);
    assert_non_null(strstr(ops->last_error(c), "no such table"));

    ops->release(db, c);
    ops->close(db);
    dk_arena_free(a);
}

static void test_transactions(void **state)
{
    (void)state;
    char *url = file_url("db-sqlite-tx", "d");
    dk_db *db = open_db(url, 1, 1000);
    dk_arena *a = dk_arena_new();
    dk_db_conn *c = NULL;
    assert_int_equal(ops->acquire(db, &c), DK_OK);
    ok(c, "CREATE TABLE t (v TEXT)");
    assert_int_equal(ops->rollback(c), DK_OK); /* nothing open: fine */

    assert_int_equal(ops->begin(c), DK_OK);
    assert_int_equal(ops->begin(c), DK_E_INTERNAL); /* no nesting */
    assert_int_equal(ops->query(c, a, "INSERT INTO t VALUES ('rolled back')", 0, NULL, NULL),
                     DK_OK);
    assert_int_equal(ops->rollback(c), DK_OK);
    assert_string_equal(scalar(c, a, "SELECT count(*) FROM t"), "0");

    assert_int_equal(ops->begin(c), DK_OK);
    assert_int_equal(ops->query(c, a, "INSERT INTO t VALUES ('kept')", 0, NULL, NULL), DK_OK);
    assert_int_equal(ops->commit(c), DK_OK);
    assert_string_equal(scalar(c, a, "SELECT v FROM t"), "kept");
    assert_int_not_equal(ops->commit(c), DK_OK); /* nothing open */

    /* release rolls back what the holder left open */
    assert_int_equal(ops->begin(c), DK_OK);
    assert_int_equal(ops->query(c, a, "INSERT INTO t VALUES ('abandoned')", 0, NULL, NULL), DK_OK);
    ops->release(db, c);
    assert_int_equal(ops->acquire(db, &c), DK_OK);
    assert_string_equal(scalar(c, a, "SELECT count(*) FROM t"), "1");

    /* a failed statement inside a transaction leaves it open for rollback */
    assert_int_equal(ops->begin(c), DK_OK);
    assert_int_equal(ops->query(c, a, "INSERT INTO t VALUES ('x')", 0, NULL, NULL), DK_OK);
    assert_int_equal(ops->query(c, a, "INSERT INTO nope VALUES (1)", 0, NULL, NULL), DK_E_INTERNAL);
    assert_int_equal(ops->rollback(c), DK_OK);
    assert_string_equal(scalar(c, a, "SELECT count(*) FROM t"), "1");

    ops->release(db, c);
    ops->close(db);
    dk_arena_free(a);
    free(url);
}

static void test_statement_cache(void **state)
{
    (void)state;
    dk_db *db = open_db("sqlite::memory:", 1, 1000);
    dk_arena *a = dk_arena_new();
    dk_db_conn *c = NULL;
    assert_int_equal(ops->acquire(db, &c), DK_OK);

    for (int i = 0; i < 500; i++) {
        char v[16], want[16];
        snprintf(v, sizeof v, "%d", i);
        snprintf(want, sizeof want, "%d", i + 1);
        const char *p[] = {v};
        dk_db_rows *r = q(c, a, "SELECT $1 + 1", 1, p);
        assert_string_equal(dk_db_value(r, 0, 0), want);
        dk_arena_reset(a);
    }
    /* SQLite lists a connection's prepared statements: one statement, run 500 times */
    dk_db_rows *r = q(c, a, "SELECT run FROM sqlite_stmt WHERE sql = 'SELECT $1 + 1'", 0, NULL);
    assert_int_equal(r->nrows, 1);
    assert_string_equal(dk_db_value(r, 0, 0), "500");

    /* many distinct statements: the cache stays bounded and evicts the oldest */
    for (int i = 0; i < 200; i++) {
        char sql[64], want[16];
        snprintf(sql, sizeof sql, "SELECT %d", i);
        snprintf(want, sizeof want, "%d", i);
        assert_string_equal(scalar(c, a, sql), want);
    }
    int cached = (int)strtol(scalar(c, a, "SELECT count(*) FROM sqlite_stmt"), NULL, 10);
    assert_true(cached >= 2 && cached <= 64);
    r = q(c, a, "SELECT count(*) FROM sqlite_stmt WHERE sql = 'SELECT 0'", 0, NULL);
    assert_string_equal(dk_db_value(r, 0, 0), "0");
    const char *p[] = {"1"};
    r = q(c, a, "SELECT $1 + 1", 1, p); /* re-prepared after eviction */
    assert_string_equal(dk_db_value(r, 0, 0), "2");

    /* a cached statement survives a schema change under it */
    ok(c, "CREATE TABLE s (a INT); INSERT INTO s VALUES (1);");
    r = q(c, a, "SELECT * FROM s", 0, NULL);
    assert_int_equal(r->ncols, 1);
    ok(c, "ALTER TABLE s ADD COLUMN b INT DEFAULT 7");
    r = q(c, a, "SELECT * FROM s", 0, NULL);
    assert_int_equal(r->ncols, 2);
    assert_string_equal(dk_db_value(r, 0, 1), "7");

    ops->release(db, c);
    ops->close(db);
    dk_arena_free(a);
}

struct releaser {
    dk_db *db;
    dk_db_conn *conn;
    int delay_ms;
};

static void *release_later(void *arg)
{
    struct releaser *r = arg;
    usleep((useconds_t)r->delay_ms * 1000);
    ops->release(r->db, r->conn);
    return NULL;
}

static void test_pool_exhaustion(void **state)
{
    (void)state;
    dk_db *db = open_db("sqlite::memory:", 2, 200);
    int idle = -1, busy = -1;
    ops->stats(db, &idle, &busy);
    assert_int_equal(idle, 2);
    assert_int_equal(busy, 0);

    dk_db_conn *c1 = NULL, *c2 = NULL, *c3 = NULL;
    assert_int_equal(ops->acquire(db, &c1), DK_OK);
    assert_int_equal(ops->acquire(db, &c2), DK_OK);
    assert_ptr_not_equal(c1, c2);
    ops->stats(db, &idle, &busy);
    assert_int_equal(idle, 0);
    assert_int_equal(busy, 2);

    int64_t t0 = now_ms();
    assert_int_equal(ops->acquire(db, &c3), DK_E_UNAVAILABLE);
    int64_t waited = now_ms() - t0;
    assert_true(waited >= 190 && waited < 2000);
    assert_null(c3);
    assert_int_equal(ops->ping(db, 50), DK_E_UNAVAILABLE); /* no connection free in time */

    /* a waiting acquire is woken by a release from another thread */
    struct releaser rel = {.db = db, .conn = c2, .delay_ms = 50};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, release_later, &rel), 0);
    t0 = now_ms();
    assert_int_equal(ops->acquire(db, &c3), DK_OK);
    assert_true(now_ms() - t0 < 190);
    assert_ptr_equal(c3, c2);
    pthread_join(th, NULL);

    ops->release(db, c1);
    ops->release(db, c3);
    ops->stats(db, &idle, &busy);
    assert_int_equal(idle, 2);
    assert_int_equal(busy, 0);
    assert_int_equal(ops->ping(db, 1000), DK_OK);
    ops->close(db);
}

static void test_locked_database_is_unavailable(void **state)
{
    (void)state;
    char *url = file_url("db-sqlite-busy", "d");
    dk_db *db1 = open_db(url, 1, 5000);
    dk_db *db2 = open_db(url, 1, 200); /* busy timeout 200 ms */
    dk_arena *a = dk_arena_new();
    dk_db_conn *c1 = NULL, *c2 = NULL;
    assert_int_equal(ops->acquire(db1, &c1), DK_OK);
    assert_int_equal(ops->acquire(db2, &c2), DK_OK);
    ok(c1, "CREATE TABLE t (v TEXT)");

    assert_int_equal(ops->begin(c1), DK_OK);
    assert_int_equal(ops->query(c1, a, "INSERT INTO t VALUES ('1')", 0, NULL, NULL), DK_OK);
    int64_t t0 = now_ms();
    assert_int_equal(ops->begin(c2), DK_E_UNAVAILABLE);
    int64_t waited = now_ms() - t0;
    assert_true(waited >= 150 && waited < 3000);
    assert_int_equal(ops->query(c2, a, "INSERT INTO t VALUES ('2')", 0, NULL, NULL),
                     DK_E_UNAVAILABLE);
    /* WAL: readers are not blocked by the writer */
    assert_string_equal(scalar(c2, a, "SELECT count(*) FROM t"), "0");
    assert_int_equal(ops->commit(c1), DK_OK);

    assert_int_equal(ops->begin(c2), DK_OK);
    assert_int_equal(ops->query(c2, a, "INSERT INTO t VALUES ('2')", 0, NULL, NULL), DK_OK);
    assert_int_equal(ops->commit(c2), DK_OK);
    assert_string_equal(scalar(c1, a, "SELECT count(*) FROM t"), "2");

    ops->release(db1, c1);
    ops->release(db2, c2);
    ops->close(db1);
    ops->close(db2);
    dk_arena_free(a);
    free(url);
}

static void test_memory_database_is_shared_by_the_pool(void **state)
{
    (void)state;
    dk_db *db = open_db("sqlite::memory:", 2, 1000);
    dk_db *other = open_db("sqlite::memory:", 1, 1000);
    dk_arena *a = dk_arena_new();
    dk_db_conn *c1 = NULL, *c2 = NULL, *c3 = NULL;
    assert_int_equal(ops->acquire(db, &c1), DK_OK);
    assert_int_equal(ops->acquire(db, &c2), DK_OK);
    ok(c1, "CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('shared');");
    assert_string_equal(scalar(c2, a, "SELECT v FROM t"), "shared");
    assert_int_equal(ops->acquire(other, &c3), DK_OK);
    assert_int_equal(ops->query(c3, a, "SELECT v FROM t", 0, NULL, NULL), DK_E_INTERNAL);
    ops->release(other, c3);
    ops->release(db, c1);
    ops->release(db, c2);
    ops->close(other);
    ops->close(db);
    dk_arena_free(a);
}

static void test_exec_script(void **state)
{
    (void)state;
    dk_db *db = open_db("sqlite::memory:", 1, 1000);
    dk_arena *a = dk_arena_new();
    dk_db_conn *c = NULL;
    assert_int_equal(ops->acquire(db, &c), DK_OK);
    ok(c, "CREATE TABLE a (x INT);\n-- a comment\nINSERT INTO a VALUES (1);\n"
          "INSERT INTO a VALUES (2);\nCREATE TABLE b (y TEXT UNIQUE);");
    assert_string_equal(scalar(c, a, "SELECT sum(x) FROM a"), "3");
    assert_int_equal(ops->exec_script(c, "INSERT INTO b VALUES ('u'); INSERT INTO b VALUES ('u');"),
                     DK_E_CONFLICT);
    assert_int_equal(ops->exec_script(c, "CREATE TABLE oops (;"), DK_E_INTERNAL);
    assert_true(strlen(ops->last_error(c)) > 0);
    ops->release(db, c);
    ops->close(db);
    dk_arena_free(a);
}

#define THREADS 4
#define ROUNDS  150

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
            s = ops->query(c, a, "INSERT INTO t (worker, n) VALUES ($1, $2)", 2, p, NULL);
        if (s == DK_OK)
            s = ops->query(c, a, "SELECT count(*) FROM t WHERE worker = $1", 1, p, &r);
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

static void run_concurrently(const char *url, int pool)
{
    dk_db *db = open_db(url, pool, 5000);
    dk_arena *a = dk_arena_new();
    dk_db_conn *c = NULL;
    assert_int_equal(ops->acquire(db, &c), DK_OK);
    ok(c, "CREATE TABLE t (worker INT, n INT, PRIMARY KEY (worker, n))");
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
    assert_int_equal(ops->acquire(db, &c), DK_OK);
    char want[16];
    snprintf(want, sizeof want, "%d", THREADS * ROUNDS);
    assert_string_equal(scalar(c, a, "SELECT count(*) FROM t"), want);
    ops->release(db, c);
    int idle = 0, busy = 0;
    ops->stats(db, &idle, &busy);
    assert_int_equal(busy, 0);
    assert_int_equal(idle, pool);
    ops->close(db);
    dk_arena_free(a);
}

static void test_concurrent_threads_file(void **state)
{
    (void)state;
    char *url = file_url("db-sqlite-threads", "d");
    run_concurrently(url, 3); /* fewer connections than threads: acquire waits too */
    free(url);
}

static void test_concurrent_threads_memory(void **state)
{
    (void)state;
    run_concurrently("sqlite::memory:", 4);
}

/* ---- the write queue ------------------------------------------------------------------------ */

/* One writer thread: begin, insert `who` (and run `then`, when set), then commit — or roll back
 * when a statement failed. Records what begin, the statements and commit answered. */
struct writer_job {
    dk_db *db;
    const char *who;
    const char *then; /* a second statement, or NULL */
    dk_status stmt;   /* of the second statement */
    dk_status end;    /* commit's answer, or rollback's when a statement failed */
    bool committed;   /* commit was tried */
    pthread_t th;
};

static void *writer_job_run(void *arg)
{
    struct writer_job *j = arg;
    dk_arena *a = dk_arena_new();
    dk_db_conn *c = NULL;
    j->end = ops->acquire(j->db, &c);
    if (j->end == DK_OK) {
        j->end = ops->begin(c);
        if (j->end == DK_OK) {
            const char *p[] = {j->who};
            dk_status s = ops->query(c, a, "INSERT INTO t (who) VALUES ($1)", 1, p, NULL);
            j->stmt = s == DK_OK && j->then ? ops->query(c, a, j->then, 0, NULL, NULL) : s;
            if (j->stmt == DK_OK) {
                j->committed = true;
                j->end = ops->commit(c);
            } else {
                j->end = ops->rollback(c);
            }
        }
        ops->release(j->db, c);
    }
    dk_arena_free(a);
    return NULL;
}

/* Starts the job and returns once it waits in the write queue (the queue holds `queued`). */
static void writer_job_start_queued(struct writer_job *j, int queued)
{
    assert_int_equal(pthread_create(&j->th, NULL, writer_job_run, j), 0);
    int64_t deadline = now_ms() + 10000;
    for (;;) {
        struct dk_db_sqlite_write_stats st;
        dk_db_sqlite_write_stats(j->db, &st);
        if (st.queued >= queued)
            break;
        assert_true(now_ms() < deadline);
        usleep(1000);
    }
}

/* Opens a file database with table t, its writer held by the returned connection inside an
 * open transaction that inserted 'main'. Groups may grow without a time limit. */
static dk_db *open_held(const char *test, dk_db_conn **ret_c, dk_arena *a, char **ret_url)
{
    char *url = file_url(test, "d");
    dk_db *db = open_db(url, 8, 5000);
    dk_db_sqlite_set_group_limits(db, 64, 600000);
    dk_db_conn *c = NULL;
    assert_int_equal(ops->acquire(db, &c), DK_OK);
    ok(c, "CREATE TABLE t (seq INTEGER PRIMARY KEY, who TEXT NOT NULL UNIQUE)");
    assert_int_equal(ops->begin(c), DK_OK);
    const char *p[] = {"main"};
    assert_int_equal(ops->query(c, a, "INSERT INTO t (who) VALUES ($1)", 1, p, NULL), DK_OK);
    *ret_c = c;
    *ret_url = url;
    return db;
}

static char *rows_in_order(dk_db_conn *c, dk_arena *a)
{
    return (char *)scalar(c, a,
                          "SELECT coalesce(group_concat(who, ','), '') FROM "
                          "(SELECT who FROM t ORDER BY seq)");
}

static void test_write_queue_fifo_in_one_group(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    dk_db_conn *c = NULL;
    char *url = NULL;
    dk_db *db = open_held("db-sqlite-wq-fifo", &c, a, &url);
    struct dk_db_sqlite_write_stats before;
    dk_db_sqlite_write_stats(db, &before);

    static const char *names[] = {"w1", "w2", "w3", "w4", "w5"};
    struct writer_job j[5];
    for (int i = 0; i < 5; i++) {
        j[i] = (struct writer_job){.db = db, .who = names[i]};
        writer_job_start_queued(&j[i], i + 1);
    }
    /* The writers queue behind the open transaction: nothing of theirs is visible yet. */
    dk_db_conn *r = NULL;
    assert_int_equal(ops->acquire(db, &r), DK_OK);
    assert_string_equal(rows_in_order(r, a), "");
    assert_int_equal(ops->commit(c), DK_OK);
    for (int i = 0; i < 5; i++) {
        pthread_join(j[i].th, NULL);
        assert_true(j[i].committed);
        assert_int_equal(j[i].end, DK_OK);
    }
    /* In the order they queued, committed together by one COMMIT (the last one's). */
    assert_string_equal(rows_in_order(r, a), "main,w1,w2,w3,w4,w5");
    struct dk_db_sqlite_write_stats after;
    dk_db_sqlite_write_stats(db, &after);
    assert_int_equal(after.groups - before.groups, 1);
    assert_int_equal(after.transactions - before.transactions, 6);
    assert_int_equal(after.queued, 0);
    ops->release(db, r);
    ops->release(db, c);
    ops->close(db);
    dk_arena_free(a);
    free(url);
}

static void test_write_group_failures_stay_private(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    dk_db_conn *c = NULL;
    char *url = NULL;
    dk_db *db = open_held("db-sqlite-wq-fail", &c, a, &url);
    struct dk_db_sqlite_write_stats before;
    dk_db_sqlite_write_stats(db, &before);

    struct writer_job j[] = {
        {.db = db, .who = "a"},
        {.db = db, .who = "b", .then = "INSERT INTO nope VALUES (1)"},      /* an error */
        {.db = db, .who = "c", .then = "INSERT INTO t (who) VALUES ('a')"}, /* a conflict */
        {.db = db, .who = "d"},
        {.db = db, .who = "a"}, /* its own insert conflicts with a's, in the same group */
    };
    for (int i = 0; i < 5; i++)
        writer_job_start_queued(&j[i], i + 1);
    assert_int_equal(ops->commit(c), DK_OK);
    for (int i = 0; i < 5; i++)
        pthread_join(j[i].th, NULL);
    assert_int_equal(j[0].end, DK_OK);
    assert_int_equal(j[1].stmt, DK_E_INTERNAL);
    assert_int_equal(j[1].end, DK_OK); /* rolled back */
    assert_int_equal(j[2].stmt, DK_E_CONFLICT);
    assert_int_equal(j[3].end, DK_OK);
    assert_int_equal(j[4].stmt, DK_E_CONFLICT);
    assert_false(j[4].committed);

    dk_db_conn *r = NULL;
    assert_int_equal(ops->acquire(db, &r), DK_OK);
    assert_string_equal(rows_in_order(r, a), "main,a,d");
    struct dk_db_sqlite_write_stats after;
    dk_db_sqlite_write_stats(db, &after);
    assert_int_equal(after.groups - before.groups, 1);
    assert_int_equal(after.transactions - before.transactions, 3);
    ops->release(db, r);
    ops->release(db, c);
    ops->close(db);
    dk_arena_free(a);
    free(url);
}

/* SQLite rolls a whole transaction back on some errors (disk full, I/O): simulated here by a
 * member that ends the group's transaction itself. No member may be told its work committed. */
static void test_write_group_lost_is_told_to_every_member(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    dk_db_conn *c = NULL;
    char *url = NULL;
    dk_db *db = open_held("db-sqlite-wq-lost", &c, a, &url);
    struct writer_job j[] = {
        {.db = db, .who = "a"},
        {.db = db, .who = "breaker", .then = "ROLLBACK"},
        {.db = db, .who = "after"}, /* queued behind: starts a group of its own */
    };
    for (int i = 0; i < 3; i++)
        writer_job_start_queued(&j[i], i + 1);
    assert_int_equal(ops->commit(c), DK_E_UNAVAILABLE);
    for (int i = 0; i < 3; i++)
        pthread_join(j[i].th, NULL);
    assert_int_equal(j[0].end, DK_E_UNAVAILABLE);
    assert_true(strlen(ops->last_error(c)) > 0);
    assert_int_not_equal(j[1].end, DK_OK);
    assert_int_equal(j[2].end, DK_OK);
    dk_db_conn *r = NULL;
    assert_int_equal(ops->acquire(db, &r), DK_OK);
    assert_string_equal(rows_in_order(r, a), "after");
    ops->release(db, r);
    ops->release(db, c);
    ops->close(db);
    dk_arena_free(a);
    free(url);
}

static void test_write_queue_same_thread_and_timeout(void **state)
{
    (void)state;
    char *url = file_url("db-sqlite-wq-self", "d");
    dk_db *db = open_db(url, 3, 300);
    dk_arena *a = dk_arena_new();
    dk_db_conn *c1 = NULL, *c2 = NULL;
    assert_int_equal(ops->acquire(db, &c1), DK_OK);
    assert_int_equal(ops->acquire(db, &c2), DK_OK);
    ok(c1, "CREATE TABLE t (seq INTEGER PRIMARY KEY, who TEXT NOT NULL UNIQUE)");
    assert_int_equal(ops->begin(c1), DK_OK);
    assert_int_equal(ops->query(c1, a, "INSERT INTO t (who) VALUES ('1')", 0, NULL, NULL), DK_OK);
    /* A second write from the thread that holds the writer would wait for itself: it fails at
     * once instead. Reads on another connection do not wait at all (WAL). */
    int64_t t0 = now_ms();
    assert_int_equal(ops->begin(c2), DK_E_UNAVAILABLE);
    assert_int_equal(ops->query(c2, a, "INSERT INTO t (who) VALUES ('2')", 0, NULL, NULL),
                     DK_E_UNAVAILABLE);
    assert_true(now_ms() - t0 < 250);
    assert_true(strlen(ops->last_error(c2)) > 0);
    assert_string_equal(scalar(c2, a, "SELECT count(*) FROM t"), "0");

    /* Another thread waits its turn until the acquire timeout, then gives up (and leaves the
     * queue: the next commit does not hand it the turn). */
    struct writer_job j = {.db = db, .who = "late"};
    t0 = now_ms();
    writer_job_start_queued(&j, 1);
    pthread_join(j.th, NULL);
    int64_t waited = now_ms() - t0;
    assert_int_equal(j.end, DK_E_UNAVAILABLE);
    assert_true(waited >= 250);
    struct dk_db_sqlite_write_stats st;
    dk_db_sqlite_write_stats(db, &st);
    assert_int_equal(st.queued, 0);
    assert_int_equal(ops->commit(c1), DK_OK);

    /* An autocommit write outside a transaction goes through the queue as one of its own. */
    assert_int_equal(ops->query(c2, a, "INSERT INTO t (who) VALUES ('2')", 0, NULL, NULL), DK_OK);
    dk_db_rows *rows = NULL;
    assert_int_equal(
        ops->query(c2, a, "UPDATE t SET who = who || '!' RETURNING who", 0, NULL, &rows), DK_OK);
    assert_int_equal(rows->nrows, 2);
    assert_int_equal(rows->affected, 2);
    assert_string_equal(scalar(c1, a, "SELECT group_concat(who, ',') FROM t"), "1!,2!");
    ops->release(db, c1);
    ops->release(db, c2);
    ops->close(db);
    dk_arena_free(a);
    free(url);
}

#define MANY_THREADS 16
#define MANY_ROUNDS  60

struct many_worker {
    dk_db *db;
    int id;
    int committed;  /* commits answered DK_OK */
    int unexpected; /* answers other than the expected ones */
};

/* Each round: every 7th a transaction that is rolled back, every 5th an autocommit insert,
 * else a read-then-write transaction (its own count, then an insert). */
static void *many_work(void *arg)
{
    struct many_worker *w = arg;
    dk_arena *a = dk_arena_new();
    char id[16];
    snprintf(id, sizeof id, "%d", w->id);
    for (int i = 0; i < MANY_ROUNDS; i++) {
        dk_db_conn *c = NULL;
        if (ops->acquire(w->db, &c) != DK_OK) {
            w->unexpected++;
            continue;
        }
        char n[16];
        snprintf(n, sizeof n, "%d", i);
        const char *p[] = {id, n};
        const char *ins = "INSERT INTO m (worker, n) VALUES ($1, $2)";
        if (i % 7 == 3) {
            dk_status s = ops->begin(c);
            if (s == DK_OK)
                s = ops->query(c, a, ins, 2, p, NULL);
            if (s != DK_OK || ops->rollback(c) != DK_OK)
                w->unexpected++;
        } else if (i % 5 == 0) {
            if (ops->query(c, a, ins, 2, p, NULL) == DK_OK)
                w->committed++;
            else
                w->unexpected++;
        } else {
            dk_db_rows *r = NULL;
            dk_status s = ops->begin(c);
            if (s == DK_OK)
                s = ops->query(c, a, "SELECT count(*) FROM m WHERE worker = $1", 1, p, &r);
            if (s == DK_OK && strtol(dk_db_value(r, 0, 0), NULL, 10) != w->committed)
                s = DK_E_INTERNAL; /* the transaction must see every earlier commit */
            if (s == DK_OK)
                s = ops->query(c, a, ins, 2, p, NULL);
            if (s == DK_OK)
                s = ops->commit(c);
            else
                (void)ops->rollback(c);
            if (s == DK_OK)
                w->committed++;
            else
                w->unexpected++;
        }
        ops->release(w->db, c);
        dk_arena_reset(a);
    }
    dk_arena_free(a);
    return NULL;
}

static void test_write_queue_many_threads(void **state)
{
    (void)state;
    char *url = file_url("db-sqlite-wq-many", "d");
    dk_db *db = open_db(url, 6, 20000); /* fewer connections than threads */
    dk_arena *a = dk_arena_new();
    dk_db_conn *c = NULL;
    assert_int_equal(ops->acquire(db, &c), DK_OK);
    ok(c, "CREATE TABLE m (worker INT, n INT, PRIMARY KEY (worker, n))");
    ops->release(db, c);
    struct dk_db_sqlite_write_stats before;
    dk_db_sqlite_write_stats(db, &before);

    pthread_t th[MANY_THREADS];
    struct many_worker w[MANY_THREADS];
    int committed = 0;
    for (int i = 0; i < MANY_THREADS; i++) {
        w[i] = (struct many_worker){.db = db, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, many_work, &w[i]), 0);
    }
    for (int i = 0; i < MANY_THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].unexpected, 0);
        committed += w[i].committed;
    }
    assert_int_equal(ops->acquire(db, &c), DK_OK);
    char want[16];
    snprintf(want, sizeof want, "%d", committed);
    assert_string_equal(scalar(c, a, "SELECT count(*) FROM m"), want);
    assert_string_equal(scalar(c, a, "SELECT count(*) FROM m WHERE n % 7 = 3"), "0");
    ops->release(db, c);
    struct dk_db_sqlite_write_stats after;
    dk_db_sqlite_write_stats(db, &after);
    assert_int_equal(after.transactions - before.transactions, (uint64_t)committed);
    assert_true(after.groups - before.groups < (uint64_t)committed); /* some groups formed */
    assert_int_equal(after.queued, 0);
    ops->close(db); /* nothing is left queued: the callers ran and committed their own work */
    dk_arena_free(a);
    free(url);
}

/* The WAL is copied into the database file by the checkpointer thread, not by the writer's
 * commits (which have no auto-checkpoint of their own any more). */
static void test_checkpointer_copies_the_wal(void **state)
{
    (void)state;
    char *url = file_url("db-sqlite-ckpt", "d");
    dk_db *db = open_db(url, 2, 5000);
    dk_arena *a = dk_arena_new();
    dk_db_conn *c = NULL;
    assert_int_equal(ops->acquire(db, &c), DK_OK);
    ok(c, "CREATE TABLE big (v BLOB)");
    for (int i = 0; i < 40; i++) /* 40 commits of 30 pages: 1,200 WAL frames */
        assert_int_equal(
            ops->query(c, a, "INSERT INTO big VALUES (randomblob(120000))", 0, NULL, NULL), DK_OK);
    const char *path = url + strlen("sqlite:");
    struct stat sb;
    int64_t deadline = now_ms() + 10000;
    for (;;) {
        assert_int_equal(stat(path, &sb), 0);
        if (sb.st_size >= 4 * 1000 * 1000)
            break;
        assert_true(now_ms() < deadline);
        usleep(10000);
    }
    assert_string_equal(scalar(c, a, "SELECT count(*) FROM big"), "40");
    ops->release(db, c);
    ops->close(db);
    dk_arena_free(a);
    free(url);
}

/* The pool's connections write their WAL through the docket-wal VFS (sqlite_vfs.h): a
 * transaction's frames reach the file in one write, and another connection reads them at once. */
static void test_wal_writes_are_gathered(void **state)
{
    (void)state;
    char *url = file_url("db-sqlite-vfs", "d");
    dk_db *db = open_db(url, 2, 5000);
    dk_arena *a = dk_arena_new();
    dk_db_conn *c = NULL, *r = NULL;
    assert_int_equal(ops->acquire(db, &c), DK_OK);
    assert_int_equal(ops->acquire(db, &r), DK_OK);
    ok(c, "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
    struct dk_sqlite_vfs_stats before, after;
    dk_sqlite_vfs_stats(&before);
    assert_int_equal(ops->begin(c), DK_OK);
    for (int i = 0; i < 20; i++)
        assert_int_equal(
            ops->query(c, a, "INSERT INTO t (v) VALUES (randomblob(3000))", 0, NULL, NULL), DK_OK);
    assert_int_equal(ops->commit(c), DK_OK);
    dk_sqlite_vfs_stats(&after);
    assert_true(after.wal_writes - before.wal_writes >= 40); /* 20 pages or more, two each */
    assert_true(after.file_writes - before.file_writes <= 2);
    assert_string_equal(scalar(r, a, "SELECT count(*) FROM t"), "20");
    ops->release(db, r);
    ops->release(db, c);
    ops->close(db);
    dk_arena_free(a);
    free(url);
}

/* Each transaction that writes an FTS5 table adds a segment to its index; FTS5's automerge
 * keeps a few per level. Once the writer has been idle a while, the checkpointer merges them
 * into one (searches read every segment of each term), and what the index finds is unchanged. */
static void test_checkpointer_compacts_fts_when_idle(void **state)
{
    (void)state;
    char *url = file_url("db-sqlite-fts-compact", "d");
    dk_db *db = open_db(url, 2, 5000);
    dk_arena *a = dk_arena_new();
    dk_db_conn *c = NULL;
    assert_int_equal(ops->acquire(db, &c), DK_OK);
    ok(c, "CREATE VIRTUAL TABLE docs USING fts5(body)");
    const char *words[] = {"alpha", "beta", "gamma", "delta", "epsilon"};
    for (int i = 0; i < 60; i++) { /* 60 transactions: 60 segments before automerge */
        const char *p[] = {dk_arena_printf(a, "%s %s row%d", words[i % 5], words[(i + 1) % 5], i)};
        assert_int_equal(ops->query(c, a, "INSERT INTO docs (body) VALUES ($1)", 1, p, NULL),
                         DK_OK);
    }
    const char *segments = "SELECT count(DISTINCT segid) FROM docs_idx";
    assert_true(atoi(scalar(c, a, segments)) >= 4);
    int64_t deadline = now_ms() + 20000;
    while (strcmp(scalar(c, a, segments), "1") != 0) {
        assert_true(now_ms() < deadline);
        usleep(20000);
    }
    struct dk_db_sqlite_write_stats st;
    dk_db_sqlite_write_stats(db, &st);
    assert_true(st.fts_merge_steps > 0);
    assert_string_equal(scalar(c, a, "SELECT count(*) FROM docs WHERE docs MATCH 'beta'"), "24");
    assert_string_equal(scalar(c, a, "SELECT body FROM docs WHERE docs MATCH 'row17'"),
                        "gamma delta row17");
    ops->release(db, c);
    ops->close(db);
    dk_arena_free(a);
    free(url);
}

struct wal_writer {
    dk_db *db;
    int id;
    int failures;
};

static void *wal_write(void *arg)
{
    struct wal_writer *w = arg;
    dk_arena *a = dk_arena_new();
    char id[16];
    snprintf(id, sizeof id, "%d", w->id);
    const char *p[] = {id};
    for (int i = 0; i < 200; i++) {
        dk_db_conn *c = NULL;
        if (ops->acquire(w->db, &c) != DK_OK) {
            w->failures++;
            continue;
        }
        if (ops->query(c, a, "UPDATE big SET v = randomblob(100000) WHERE id = $1", 1, p, NULL) !=
            DK_OK)
            w->failures++;
        ops->release(w->db, c);
        dk_arena_reset(a);
    }
    dk_arena_free(a);
    return NULL;
}

/* Writers that never pause still let the WAL start over: the checkpointer's second pass runs
 * between two groups, so the WAL file stays far below what was written through it (800 commits
 * of 25 pages: about 80 MB). */
static void test_checkpointer_keeps_the_wal_bounded(void **state)
{
    (void)state;
    char *url = file_url("db-sqlite-ckpt-bound", "d");
    dk_db *db = open_db(url, 4, 20000);
    dk_arena *a = dk_arena_new();
    dk_db_conn *c = NULL;
    assert_int_equal(ops->acquire(db, &c), DK_OK);
    ok(c, "CREATE TABLE big (id INTEGER PRIMARY KEY, v BLOB);"
          "INSERT INTO big (id) VALUES (0), (1), (2), (3);");
    ops->release(db, c);
    pthread_t th[4];
    struct wal_writer w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct wal_writer){.db = db, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, wal_write, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    char wal[1024];
    snprintf(wal, sizeof wal, "%s-wal", url + strlen("sqlite:"));
    struct stat sb;
    assert_int_equal(stat(wal, &sb), 0);
    assert_true(sb.st_size < 32 * 1000 * 1000);
    ops->close(db);
    dk_arena_free(a);
    free(url);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_selection),
        cmocka_unit_test(test_open_file_creates_dirs_and_sets_pragmas),
        cmocka_unit_test(test_params_and_values),
        cmocka_unit_test(test_rows_nulls_and_affected),
        cmocka_unit_test(test_constraint_errors),
        cmocka_unit_test(test_transactions),
        cmocka_unit_test(test_statement_cache),
        cmocka_unit_test(test_pool_exhaustion),
        cmocka_unit_test(test_locked_database_is_unavailable),
        cmocka_unit_test(test_memory_database_is_shared_by_the_pool),
        cmocka_unit_test(test_exec_script),
        cmocka_unit_test(test_concurrent_threads_file),
        cmocka_unit_test(test_concurrent_threads_memory),
        cmocka_unit_test(test_write_queue_fifo_in_one_group),
        cmocka_unit_test(test_write_group_failures_stay_private),
        cmocka_unit_test(test_write_group_lost_is_told_to_every_member),
        cmocka_unit_test(test_write_queue_same_thread_and_timeout),
        cmocka_unit_test(test_write_queue_many_threads),
        cmocka_unit_test(test_wal_writes_are_gathered),
        cmocka_unit_test(test_checkpointer_copies_the_wal),
        cmocka_unit_test(test_checkpointer_compacts_fts_when_idle),
        cmocka_unit_test(test_checkpointer_keeps_the_wal_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
