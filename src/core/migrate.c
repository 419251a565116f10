#include "core/migrate.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/banned.h"

#define MIG_SERVICE_MAX 63 /* PostgreSQL identifier length */

#define MIG_COLUMNS                                                                                \
    "(service TEXT NOT NULL, version INT NOT NULL, name TEXT NOT NULL, applied_at TEXT NOT NULL, " \
    "PRIMARY KEY (service, version))"

struct migrate_ctx {
    const struct dk_db_ops *ops;
    dk_db_conn *conn;
    dk_arena *arena;
    bool pg;
    const char *service;
    const char *table; /* docket_migrations, schema-qualified on PostgreSQL */
};

static bool migrate_service_valid(const char *s)
{
    if (!s || !*s || strlen(s) > MIG_SERVICE_MAX)
        return false;
    for (; *s; s++) {
        if (!((*s >= 'a' && *s <= 'z') || *s == '_'))
            return false;
    }
    return true;
}

static bool migrate_list_valid(const dk_migration *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (m[i].version <= 0 || !m[i].name || (i > 0 && m[i].version <= m[i - 1].version))
            return false;
    }
    return true;
}

/* Opens a transaction; on PostgreSQL it also takes the migration lock, held until its end. */
static dk_status migrate_begin(struct migrate_ctx *x)
{
    dk_status s = x->ops->begin(x->conn);
    if (s != DK_OK || !x->pg)
        return s;
    s = x->ops->query(x->conn, x->arena, "SELECT pg_advisory_xact_lock(hashtext('docket_migrate'))",
                      0, NULL, NULL);
    if (s != DK_OK)
        (void)x->ops->rollback(x->conn);
    return s;
}

static dk_status migrate_commit_or_rollback(struct migrate_ctx *x, dk_status s)
{
    if (s == DK_OK)
        s = x->ops->commit(x->conn);
    if (s != DK_OK)
        (void)x->ops->rollback(x->conn);
    return s;
}

/* Creates the service's schema (PostgreSQL) and the bookkeeping table. */
static dk_status migrate_prepare(struct migrate_ctx *x)
{
    dk_status s = migrate_begin(x);
    if (s != DK_OK)
        return s;
    const char *sql = x->pg ? dk_arena_printf(x->arena,
                                              "CREATE SCHEMA IF NOT EXISTS %s; "
                                              "CREATE TABLE IF NOT EXISTS %s " MIG_COLUMNS ";",
                                              x->service, x->table)
                            : "CREATE TABLE IF NOT EXISTS docket_migrations " MIG_COLUMNS ";";
    return migrate_commit_or_rollback(x, x->ops->exec_script(x->conn, sql));
}

static dk_status migrate_is_applied(struct migrate_ctx *x, int version, bool *ret)
{
    char v[16];
    snprintf(v, sizeof v, "%d", version);
    const char *params[] = {x->service, v};
    dk_db_rows *rows = NULL;
    const char *sql =
        dk_arena_printf(x->arena, "SELECT 1 FROM %s WHERE service = $1 AND version = $2", x->table);
    dk_status s = x->ops->query(x->conn, x->arena, sql, 2, params, &rows);
    if (s == DK_OK)
        *ret = rows->nrows > 0;
    return s;
}

static void migrate_now(char *buf, size_t n)
{
    struct tm tm;
    time_t t = time(NULL);
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Applies one migration in its own transaction, unless another runner got there first. */
static dk_status migrate_apply_one(struct migrate_ctx *x, const dk_migration *m, bool *ret_done)
{
    dk_status s = migrate_begin(x);
    if (s != DK_OK)
        return s;
    bool applied = false;
    s = migrate_is_applied(x, m->version, &applied);
    if (s != DK_OK || applied)
        return migrate_commit_or_rollback(x, s);
    if (x->pg) {
        /* Unqualified names in the script land in the service's schema. */
        s = x->ops->exec_script(
            x->conn, dk_arena_printf(x->arena, "SET LOCAL search_path TO %s, public", x->service));
    }
    const char *script = x->pg ? m->postgres_sql : m->sqlite_sql;
    if (s == DK_OK && script)
        s = x->ops->exec_script(x->conn, script);
    if (s == DK_OK) {
        char v[16], now[32];
        snprintf(v, sizeof v, "%d", m->version);
        migrate_now(now, sizeof now);
        const char *params[] = {x->service, v, m->name, now};
        const char *sql = dk_arena_printf(
            x->arena, "INSERT INTO %s (service, version, name, applied_at) VALUES ($1, $2, $3, $4)",
            x->table);
        s = x->ops->query(x->conn, x->arena, sql, 4, params, NULL);
    }
    s = migrate_commit_or_rollback(x, s);
    if (s == DK_OK)
        *ret_done = true;
    return s;
}

dk_status dk_migrate_apply(const dk_database *db, const char *service, const dk_migration *m,
                           size_t n, int *ret_applied)
{
    if (!db || !db->ops || !db->db || !migrate_service_valid(service) || (n > 0 && !m) ||
        !migrate_list_valid(m, n))
        return DK_E_INTERNAL;

    struct migrate_ctx x = {
        .ops = db->ops,
        .pg = db->ops->engine == DK_DB_POSTGRES,
        .service = service,
    };
    x.table = x.pg ? "public.docket_migrations" : "docket_migrations";
    dk_status s = x.ops->acquire(db->db, &x.conn);
    if (s != DK_OK)
        return s;
    x.arena = dk_arena_new();

    int applied = 0;
    bool *done = dk_calloc(n ? n : 1, sizeof *done);
    /* Several processes may start at once: creating the bookkeeping table can collide (a
     * busy SQLite file, PostgreSQL's catalog race on CREATE … IF NOT EXISTS). Both are
     * transient; try again for a couple of seconds. */
    s = migrate_prepare(&x);
    for (int tries = 0; (s == DK_E_UNAVAILABLE || s == DK_E_CONFLICT) && tries < 40; tries++) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        s = migrate_prepare(&x);
    }

    /* One read finds what is already there; each missing version is re-checked under the lock. */
    if (s == DK_OK) {
        dk_db_rows *rows = NULL;
        const char *sql =
            dk_arena_printf(x.arena, "SELECT version FROM %s WHERE service = $1", x.table);
        s = x.ops->query(x.conn, x.arena, sql, 1, &service, &rows);
        for (int r = 0; s == DK_OK && r < rows->nrows; r++) {
            const char *v = dk_db_value(rows, r, 0);
            char want[16];
            for (size_t i = 0; i < n && v; i++) {
                snprintf(want, sizeof want, "%d", m[i].version);
                if (strcmp(v, want) == 0)
                    done[i] = true;
            }
        }
    }
    for (size_t i = 0; s == DK_OK && i < n; i++) {
        if (done[i])
            continue;
        bool ran = false;
        s = migrate_apply_one(&x, &m[i], &ran);
        /* a busy database (another runner holds the write lock): each version is its own
         * transaction, so running it again is safe */
        for (int tries = 0; s == DK_E_UNAVAILABLE && tries < 40; tries++) {
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
            s = migrate_apply_one(&x, &m[i], &ran);
        }
        if (s == DK_OK && ran)
            applied++;
    }

    dk_free(done);
    x.ops->release(db->db, x.conn);
    dk_arena_free(x.arena);
    if (s == DK_OK && ret_applied)
        *ret_applied = applied;
    return s;
}
