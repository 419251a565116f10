/* test_migrate.c — the migration runner on SQLite (always) and PostgreSQL (DOCKET_TEST_PG_URL,
 * skipped when unset; each run uses its own service names and removes them). */
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/migrate.h"
#include "ports/db.h"
#include "adapters/db.h"

static const dk_migration three[] = {
    {1, "create_items", "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);",
     "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);"},
    {2, "seed_items",
     "INSERT INTO items (name) VALUES ('first'); INSERT INTO items (name) VALUES "
     "('second');",
     "INSERT INTO items (name) VALUES ('first'); INSERT INTO items (name) VALUES ('second');"},
    {5, "add_note", "ALTER TABLE items ADD COLUMN note TEXT;",
     "ALTER TABLE items ADD COLUMN note text;"},
};

static dk_database open_database(const char *url, int pool)
{
    dk_database d = {.ops = dk_db_ops_for_url(url)};
    assert_non_null(d.ops);
    dk_db_options o = {.url = url, .pool_size = pool, .acquire_timeout_ms = 10000};
    assert_int_equal(d.ops->open(&o, &d.db), DK_OK);
    return d;
}

static char *sqlite_url(const char *test)
{
    char *dir = dk_test_tmpdir(test);
    size_t n = strlen(dir) + 32;
    char *url = malloc(n);
    snprintf(url, n, "sqlite:%s/docket.db", dir);
    free(dir);
    return url;
}

/* One value of a one-row query. */
static const char *scalar(const dk_database *d, dk_arena *a, const char *sql, int n,
                          const char *const *p)
{
    dk_db_conn *c = NULL;
    assert_int_equal(d->ops->acquire(d->db, &c), DK_OK);
    dk_db_rows *r = NULL;
    dk_status s = d->ops->query(c, a, sql, n, p, &r);
    if (s != DK_OK)
        fail_msg("%s -> %d: %s", sql, s, d->ops->last_error(c));
    d->ops->release(d->db, c);
    assert_int_equal(r->nrows, 1);
    return dk_db_value(r, 0, 0);
}

static void expect_applied(const dk_database *d, const char *service, const dk_migration *m,
                           size_t n, int want)
{
    int applied = -1;
    assert_int_equal(dk_migrate_apply(d, service, m, n, &applied), DK_OK);
    assert_int_equal(applied, want);
}

/* The checks shared by both engines; items_table is how a query names the service's table. */
static void check_apply_once(const dk_database *d, const char *service, const char *items_table,
                             const char *book)
{
    dk_arena *a = dk_arena_new();
    expect_applied(d, service, three, 2, 2);
    expect_applied(d, service, three, 2, 0); /* a second run applies nothing */
    char *sql = dk_arena_printf(a, "SELECT count(*) FROM %s", items_table);
    assert_string_equal(scalar(d, a, sql, 0, NULL), "2");
    expect_applied(d, service, three, 3, 1); /* only the new one */
    expect_applied(d, service, three, 3, 0);
    sql = dk_arena_printf(a, "SELECT count(note) FROM %s", items_table);
    assert_string_equal(scalar(d, a, sql, 0, NULL), "0");

    const char *svc[] = {service};
    sql = dk_arena_printf(a, "SELECT version, name FROM %s WHERE service = $1 ORDER BY version",
                          book);
    dk_db_conn *c = NULL;
    assert_int_equal(d->ops->acquire(d->db, &c), DK_OK);
    dk_db_rows *r = NULL;
    assert_int_equal(d->ops->query(c, a, sql, 1, svc, &r), DK_OK);
    d->ops->release(d->db, c);
    char got[256] = "";
    for (int i = 0; i < r->nrows; i++) {
        size_t len = strlen(got);
        snprintf(got + len, sizeof got - len, "%s%s:%s", i ? "," : "", dk_db_value(r, i, 0),
                 dk_db_value(r, i, 1));
    }
    assert_string_equal(got, "1:create_items,2:seed_items,5:add_note");
    sql = dk_arena_printf(a, "SELECT min(applied_at) FROM %s WHERE service = $1", book);
    const char *at = scalar(d, a, sql, 1, svc);
    assert_int_equal(strlen(at), 20); /* 2026-01-02T03:04:05Z */
    assert_int_equal(at[10], 'T');
    assert_int_equal(at[19], 'Z');
    dk_arena_free(a);
}

/* A failing migration is rolled back whole; the ones before it stay; a fix applies later. */
static void check_failure_rolls_back(const dk_database *d, const char *service,
                                     const char *table_prefix)
{
    dk_arena *a = dk_arena_new();
    char *good = dk_arena_printf(a, "CREATE TABLE %sgood (x INT);", table_prefix);
    char *bad = dk_arena_printf(a, "CREATE TABLE %shalf (x INT); INSERT INTO nowhere VALUES (1);",
                                table_prefix);
    char *fixed = dk_arena_printf(a, "CREATE TABLE %shalf (x INT);", table_prefix);
    dk_migration m[] = {{1, "good", good, good}, {2, "bad", bad, bad}};
    int applied = 42;
    assert_int_equal(dk_migrate_apply(d, service, m, 2, &applied), DK_E_INTERNAL);
    assert_int_equal(applied, 42); /* untouched on failure */

    dk_db_conn *c = NULL;
    assert_int_equal(d->ops->acquire(d->db, &c), DK_OK);
    char *sql = dk_arena_printf(a, "SELECT 1 FROM %shalf", table_prefix);
    assert_int_equal(d->ops->query(c, a, sql, 0, NULL, NULL), DK_E_INTERNAL); /* not created */
    sql = dk_arena_printf(a, "SELECT count(*) FROM %sgood", table_prefix);
    assert_int_equal(d->ops->query(c, a, sql, 0, NULL, NULL), DK_OK);
    d->ops->release(d->db, c);

    m[1].sqlite_sql = m[1].postgres_sql = fixed;
    expect_applied(d, service, m, 2, 1);
    expect_applied(d, service, m, 2, 0);
    dk_arena_free(a);
}

static void check_bad_input(const dk_database *d)
{
    int applied = 7;
    assert_int_equal(dk_migrate_apply(d, "Bad-Name", three, 1, &applied), DK_E_INTERNAL);
    assert_int_equal(dk_migrate_apply(d, "", three, 1, &applied), DK_E_INTERNAL);
    assert_int_equal(dk_migrate_apply(d, NULL, three, 1, &applied), DK_E_INTERNAL);
    assert_int_equal(dk_migrate_apply(d, "x; drop", three, 1, &applied), DK_E_INTERNAL);
    dk_migration unsorted[] = {three[1], three[0]};
    assert_int_equal(dk_migrate_apply(d, "ok", unsorted, 2, &applied), DK_E_INTERNAL);
    dk_migration dup[] = {three[0], three[0]};
    assert_int_equal(dk_migrate_apply(d, "ok", dup, 2, &applied), DK_E_INTERNAL);
    dk_migration zero[] = {{0, "zero", "SELECT 1", "SELECT 1"}};
    assert_int_equal(dk_migrate_apply(d, "ok", zero, 1, &applied), DK_E_INTERNAL);
    assert_int_equal(applied, 7);
    assert_int_equal(dk_migrate_apply(NULL, "ok", three, 1, &applied), DK_E_INTERNAL);
}

struct racer {
    const char *url;
    const char *service;
    int applied;
    dk_status status;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    dk_database d = {.ops = dk_db_ops_for_url(r->url)};
    dk_db_options o = {.url = r->url, .pool_size = 1, .acquire_timeout_ms = 10000};
    r->status = d.ops->open(&o, &d.db);
    if (r->status == DK_OK)
        r->status = dk_migrate_apply(&d, r->service, three, 3, &r->applied);
    d.ops->close(d.db);
    return NULL;
}

/* Several pools (as several processes would) migrate the same service at once. */
static void check_concurrent_runners(const char *url, const char *service)
{
    enum { N = 4 };
    pthread_t th[N];
    struct racer r[N];
    for (int i = 0; i < N; i++) {
        r[i] = (struct racer){.url = url, .service = service, .applied = -1};
        assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(r[i].status, DK_OK);
        total += r[i].applied;
    }
    assert_int_equal(total, 3);
}

/* ---- SQLite ----------------------------------------------------------------------------- */

static void test_sqlite_applies_once(void **state)
{
    (void)state;
    char *url = sqlite_url("migrate-once");
    dk_database d = open_database(url, 2);
    check_apply_once(&d, "shop", "items", "docket_migrations");
    /* another service has its own versions */
    dk_migration other[] = {{1, "other", "CREATE TABLE other_t (x INT);", NULL}};
    expect_applied(&d, "other_svc", other, 1, 1);
    expect_applied(&d, "shop", three, 3, 0);
    d.ops->close(d.db);

    /* a new process (pool) over the same file sees what was applied */
    d = open_database(url, 1);
    expect_applied(&d, "shop", three, 3, 0);
    expect_applied(&d, "other_svc", other, 1, 0);
    d.ops->close(d.db);
    free(url);
}

static void test_sqlite_failure_rolls_back(void **state)
{
    (void)state;
    char *url = sqlite_url("migrate-fail");
    dk_database d = open_database(url, 1);
    check_failure_rolls_back(&d, "shop", "shop_");
    d.ops->close(d.db);
    free(url);
}

static void test_sqlite_script_for_the_other_engine_only(void **state)
{
    (void)state;
    dk_database d = open_database("sqlite::memory:", 1);
    dk_arena *a = dk_arena_new();
    dk_migration m[] = {{1, "pg_only", NULL, "CREATE INDEX x ON y USING gin (z);"}};
    expect_applied(&d, "svc", m, 1, 1);
    assert_string_equal(
        scalar(&d, a, "SELECT name FROM docket_migrations WHERE version = 1", 0, NULL), "pg_only");
    expect_applied(&d, "svc", NULL, 0, 0);
    expect_applied(&d, "svc", m, 1, 0);
    d.ops->close(d.db);
    dk_arena_free(a);
}

static void test_sqlite_bad_input(void **state)
{
    (void)state;
    dk_database d = open_database("sqlite::memory:", 1);
    check_bad_input(&d);
    d.ops->close(d.db);
}

static void test_sqlite_concurrent_runners(void **state)
{
    (void)state;
    char *url = sqlite_url("migrate-race");
    check_concurrent_runners(url, "raced");
    dk_database d = open_database(url, 1);
    dk_arena *a = dk_arena_new();
    assert_string_equal(scalar(&d, a, "SELECT count(*) FROM items", 0, NULL), "2");
    d.ops->close(d.db);
    dk_arena_free(a);
    free(url);
}

/* ---- PostgreSQL ------------------------------------------------------------------------- */

static const char *pg_url;
static char suffix[16]; /* letters unique to this run */

static char *pg_service(dk_arena *a, const char *base)
{
    return dk_arena_printf(a, "%s_%s", base, suffix);
}

/* Drops what a test created: its schema and its bookkeeping rows. */
static void pg_forget(const char *service)
{
    dk_database d = open_database(pg_url, 1);
    dk_arena *a = dk_arena_new();
    dk_db_conn *c = NULL;
    assert_int_equal(d.ops->acquire(d.db, &c), DK_OK);
    assert_int_equal(
        d.ops->exec_script(c, dk_arena_printf(a, "DROP SCHEMA IF EXISTS %s CASCADE", service)),
        DK_OK);
    const char *p[] = {service};
    assert_int_equal(
        d.ops->query(c, a, "DELETE FROM public.docket_migrations WHERE service = $1", 1, p, NULL),
        DK_OK);
    d.ops->release(d.db, c);
    d.ops->close(d.db);
    dk_arena_free(a);
}

static int group_setup(void **state)
{
    (void)state;
    pg_url = dk_test_env("DOCKET_TEST_PG_URL");
    unsigned long v = (unsigned long)getpid() * 7919ul + (unsigned long)time(NULL);
    for (int i = 0; i < 8; i++, v /= 26)
        suffix[i] = (char)('a' + v % 26);
    suffix[8] = '\0';
    return 0;
}

static void test_pg_applies_once_in_the_service_schema(void **state)
{
    (void)state;
    if (!pg_url)
        skip();
    dk_arena *a = dk_arena_new();
    const char *svc = pg_service(a, "mig");
    dk_database d = open_database(pg_url, 2);
    check_apply_once(&d, svc, dk_arena_printf(a, "%s.items", svc), "public.docket_migrations");
    const char *p[] = {svc};
    assert_string_equal(scalar(&d, a,
                               "SELECT count(*) FROM information_schema.tables "
                               "WHERE table_schema = $1 AND table_name = 'items'",
                               1, p),
                        "1");
    assert_string_equal(scalar(&d, a,
                               "SELECT count(*) FROM information_schema.tables "
                               "WHERE table_schema = 'public' AND table_name = 'items'",
                               0, NULL),
                        "0");
    d.ops->close(d.db);
    pg_forget(svc);
    dk_arena_free(a);
}

static void test_pg_failure_rolls_back(void **state)
{
    (void)state;
    if (!pg_url)
        skip();
    dk_arena *a = dk_arena_new();
    const char *svc = pg_service(a, "migfail");
    dk_database d = open_database(pg_url, 1);
    check_failure_rolls_back(&d, svc, dk_arena_printf(a, "%s.", svc));
    d.ops->close(d.db);
    pg_forget(svc);
    dk_arena_free(a);
}

static void test_pg_bad_input(void **state)
{
    (void)state;
    if (!pg_url)
        skip();
    dk_database d = open_database(pg_url, 1);
    check_bad_input(&d);
    d.ops->close(d.db);
}

static void test_pg_concurrent_runners(void **state)
{
    (void)state;
    if (!pg_url)
        skip();
    dk_arena *a = dk_arena_new();
    const char *svc = pg_service(a, "migrace");
    check_concurrent_runners(pg_url, svc);
    dk_database d = open_database(pg_url, 1);
    assert_string_equal(
        scalar(&d, a, dk_arena_printf(a, "SELECT count(*) FROM %s.items", svc), 0, NULL), "2");
    d.ops->close(d.db);
    pg_forget(svc);
    dk_arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sqlite_applies_once),
        cmocka_unit_test(test_sqlite_failure_rolls_back),
        cmocka_unit_test(test_sqlite_script_for_the_other_engine_only),
        cmocka_unit_test(test_sqlite_bad_input),
        cmocka_unit_test(test_sqlite_concurrent_runners),
        cmocka_unit_test(test_pg_applies_once_in_the_service_schema),
        cmocka_unit_test(test_pg_failure_rolls_back),
        cmocka_unit_test(test_pg_bad_input),
        cmocka_unit_test(test_pg_concurrent_runners),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
