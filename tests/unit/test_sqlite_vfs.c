/* test_sqlite_vfs.c — the docket-wal VFS (gathered WAL appends), against real database files:
 * a commit is one write and is in the file when COMMIT returns (seen by a connection on the
 * default VFS, and after the process is killed), large transactions that spill, rewrite frames
 * in place and roll back leave the same database as the default VFS, and a failed write fails
 * the COMMIT. */
#include "testutil.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "adapters/sqlite_vfs.h"

/* "<fresh dir>/test.db"; the caller frees it. */
static char *db_path(const char *test)
{
    char *dir = dk_test_tmpdir(test);
    size_t n = strlen(dir) + 16;
    char *p = malloc(n);
    snprintf(p, n, "%s/test.db", dir);
    free(dir);
    return p;
}

static sqlite3 *open_with(const char *path, const char *vfs)
{
    sqlite3 *h = NULL;
    assert_int_equal(sqlite3_open_v2(path, &h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs),
                     SQLITE_OK);
    return h;
}

static void ok(sqlite3 *h, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(h, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg("%s -> %d: %s", sql, rc, msg ? msg : "?");
}

static int64_t int_of(sqlite3 *h, const char *sql)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void assert_sound(sqlite3 *h)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(h, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
}

static sqlite3 *open_shim(const char *path)
{
    assert_int_equal(dk_sqlite_vfs_register(), SQLITE_OK);
    sqlite3 *h = open_with(path, DK_SQLITE_VFS_NAME);
    ok(h, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0");
    return h;
}

static void test_commit_is_one_write_seen_at_once(void **state)
{
    (void)state;
    char *path = db_path("vfs_one_write");
    sqlite3 *h = open_shim(path);
    ok(h, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); CREATE INDEX t_v ON t(v)");
    sqlite3 *other = open_with(path, NULL); /* the default VFS, as another process would */

    struct dk_sqlite_vfs_stats a, b;
    dk_sqlite_vfs_stats(&a);
    ok(h, "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<40) "
          "INSERT INTO t(v) SELECT randomblob(900) FROM n; COMMIT");
    dk_sqlite_vfs_stats(&b);
    /* 40 rows of 900 bytes and their index: ten pages or more, two writes each asked for */
    assert_true(b.wal_writes - a.wal_writes >= 20);
    assert_int_equal(b.file_writes - a.file_writes, 1);
    assert_int_equal(int_of(other, "SELECT count(*) FROM t"), 40);

    /* the next commit appends after it, again in one write */
    dk_sqlite_vfs_stats(&a);
    ok(h, "UPDATE t SET v = randomblob(900) WHERE id <= 20");
    dk_sqlite_vfs_stats(&b);
    assert_true(b.wal_writes - a.wal_writes >= 10);
    assert_int_equal(b.file_writes - a.file_writes, 1);
    assert_int_equal(int_of(other, "SELECT count(*) FROM t WHERE length(v) = 900"), 40);

    /* after a checkpoint the WAL starts over at its header, still gathered */
    ok(h, "PRAGMA wal_checkpoint(PASSIVE)");
    dk_sqlite_vfs_stats(&a);
    ok(h, "INSERT INTO t(v) VALUES (randomblob(900))");
    dk_sqlite_vfs_stats(&b);
    assert_true(b.file_writes - a.file_writes <= 2); /* the WAL header is synced on its own */
    assert_int_equal(int_of(other, "SELECT count(*) FROM t"), 41);
    assert_sound(other);
    sqlite3_close(other);
    sqlite3_close(h);
    free(path);
}

/* A transaction larger than the page cache spills frames before its COMMIT, rewrites some in
 * place (pages it changes again) and their checksums at the COMMIT; a rolled-back one leaves
 * frames the next transaction writes over. The database must read the same on the default
 * VFS, before and after a checkpoint. */
static void test_spills_rewrites_and_rollbacks(void **state)
{
    (void)state;
    char *path = db_path("vfs_spills");
    sqlite3 *h = open_shim(path);
    ok(h, "PRAGMA cache_size=20; CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v BLOB);"
          "CREATE INDEX t_k ON t(k)");
    ok(h, "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<2000) "
          "INSERT INTO t(k, v) SELECT i, randomblob(300) FROM n;"
          "UPDATE t SET k = -k WHERE id % 7 = 0; UPDATE t SET v = zeroblob(300) WHERE id <= 500;"
          "COMMIT");
    ok(h, "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<2000) "
          "INSERT INTO t(k, v) SELECT i, randomblob(300) FROM n; ROLLBACK");
    ok(h, "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<300) "
          "INSERT INTO t(k, v) SELECT 100000 + i, randomblob(300) FROM n;"
          "UPDATE t SET k = k + 1 WHERE id > 2000; COMMIT");
    ok(h, "INSERT INTO t(k, v) VALUES (-1, x'00')");

    for (int pass = 0; pass < 2; pass++) {
        sqlite3 *other = open_with(path, NULL);
        assert_int_equal(int_of(other, "SELECT count(*) FROM t"), 2301);
        assert_int_equal(int_of(other, "SELECT count(*) FROM t WHERE k < 0"), 2000 / 7 + 1);
        assert_int_equal(int_of(other, "SELECT count(*) FROM t WHERE v = zeroblob(300)"), 500);
        assert_int_equal(int_of(other, "SELECT min(k) FROM t WHERE id > 2000 AND id <= 2300"),
                         100002);
        assert_sound(other);
        sqlite3_close(other);
        ok(h, "PRAGMA wal_checkpoint(TRUNCATE)");
    }
    sqlite3_close(h);
    free(path);
}

/* The child commits, then is killed without closing anything; its open transaction is lost,
 * every committed one is there. */
static void test_commits_survive_kill9(void **state)
{
    (void)state;
    char *path = db_path("vfs_kill9");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        sqlite3 *h = open_shim(path);
        ok(h, "PRAGMA cache_size=20; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
        for (int i = 0; i < 50; i++)
            ok(h, "INSERT INTO t(v) VALUES (randomblob(500))");
        ok(h, "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE "
              "i<1000) INSERT INTO t(v) SELECT randomblob(500) FROM n; COMMIT");
        ok(h, "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE "
              "i<1000) INSERT INTO t(v) SELECT randomblob(500) FROM n"); /* left open */
        raise(SIGKILL);
        _exit(3);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    sqlite3 *h = open_with(path, NULL);
    assert_int_equal(int_of(h, "SELECT count(*) FROM t"), 1050);
    assert_sound(h);
    sqlite3_close(h);
    free(path);
}

/* A write that fails (the file size limit, as a full disk would) fails the COMMIT, which then
 * holds none of its rows; the commits before it stay. */
static void test_failed_write_fails_the_commit(void **state)
{
    (void)state;
    char *path = db_path("vfs_write_fails");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        sqlite3 *h = open_shim(path);
        ok(h, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
        ok(h, "INSERT INTO t(v) VALUES (randomblob(100))");
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {.rlim_cur = 256 * 1024, .rlim_max = RLIM_INFINITY};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
            _exit(4);
        int rc = sqlite3_exec(h,
                              "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 "
                              "FROM n WHERE i<200) INSERT INTO t(v) SELECT randomblob(2000) "
                              "FROM n; COMMIT",
                              NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            _exit(5); /* the COMMIT said yes to what could not be written */
        (void)sqlite3_exec(h, "ROLLBACK", NULL, NULL, NULL);
        _exit(0); /* as after a crash: no close, no checkpoint */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    sqlite3 *h = open_with(path, NULL);
    assert_int_equal(int_of(h, "SELECT count(*) FROM t"), 1);
    assert_sound(h);
    sqlite3_close(h);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commit_is_one_write_seen_at_once),
        cmocka_unit_test(test_spills_rewrites_and_rollbacks),
        cmocka_unit_test(test_commits_survive_kill9),
        cmocka_unit_test(test_failed_write_fails_the_commit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
