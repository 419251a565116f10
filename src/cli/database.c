/* database.c — the database as the command line sees it: which URL (database.url, else SQLite
 * in the data directory), opening it for a process's plan (its search path names the schemas of
 * the services it runs), applying or checking migrations, and the `migrate`, `backup` and
 * `restore` commands. Errors are said on stderr for the operator; the caller exits. */
#include "cli/database.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/log.h"
#include "core/sql.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "adapters/db.h"
#include "core/banned.h"

/* The database URL: database.url, or SQLite in the data directory. */
static char *dk_database_url(const dk_config *c)
{
    const char *url = dk_config_str(c, "database.url");
    if (url && *url)
        return dk_strdup(url);
    const char *dir = dk_config_str(c, "storage.data_dir");
    size_t n = strlen(dir) + 32;
    char *out = dk_malloc(n);
    snprintf(out, n, "sqlite:%s/docket.db", dir);
    return out;
}

int dk_cli_dir_make(const char *path)
{
    char buf[4096];
    if (dk_strlcpy(buf, path, sizeof buf) >= sizeof buf - 1)
        return -1;
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0700) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    if (mkdir(buf, 0700) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

int dk_cli_database_open(dk_app *app, const dk_config *c, int pool, const dk_plan *plan)
{
    char *url = dk_database_url(c);
    app->db.ops = dk_db_ops_for_url(url);
    if (!app->db.ops) {
        fprintf(stderr,
                "config: database.url: unsupported scheme (use postgres://… or sqlite:PATH)\n");
        dk_free(url);
        return DK_EXIT_USAGE;
    }
    if (app->db.ops->engine == DK_DB_SQLITE && !(dk_config_is_set(c, "database.url"))) {
        if (dk_cli_dir_make(dk_config_str(c, "storage.data_dir")) != 0) {
            fprintf(stderr, "error: cannot create the data directory %s: %s\n",
                    dk_config_str(c, "storage.data_dir"), strerror(errno));
            dk_free(url);
            return -1;
        }
    }
    /* a process sees only the schemas of the services it runs */
    char search_path[128] = "";
    for (size_t i = 0; i < plan->n; i++) {
        size_t n = strlen(search_path);
        snprintf(search_path + n, sizeof search_path - n, "%s,", plan->local[i]->name);
    }
    size_t n = strlen(search_path);
    snprintf(search_path + n, sizeof search_path - n, "public");
    dk_db_options o = {
        .url = url,
        .pool_size = pool,
        .acquire_timeout_ms = (int)dk_config_int(c, "database.acquire_timeout"),
        .connect_timeout_ms = (int)dk_config_int(c, "database.connect_timeout"),
        .statement_timeout_ms = (int)dk_config_int(c, "database.statement_timeout"),
        .search_path = search_path,
    };
    dk_status st = app->db.ops->open(&o, &app->db.db);
    dk_free(url);
    if (st == DK_E_VALIDATION) {
        fprintf(stderr, "config: database.url: not a valid %s URL\n", app->db.ops->name);
        return DK_EXIT_USAGE;
    }
    if (st != DK_OK) {
        fprintf(stderr, "error: cannot open the database (%s)\n", dk_status_title(st));
        return 1;
    }
    return 0;
}

/* Why a database call failed, for the user: the server's or the network's own words when a
 * connection could not be made (host, port, refused, authentication, missing database). */
static void dk_db_explain(const dk_app *app, dk_status st, char *buf, size_t cap)
{
    char why[256];
    if (st == DK_E_UNAVAILABLE && app->db.ops->connect_error &&
        app->db.ops->connect_error(app->db.db, why, sizeof why)) {
        size_t n = strlen(why);
        while (n > 0 && (why[n - 1] == '\n' || why[n - 1] == ' '))
            why[--n] = '\0';
        for (char *p = why; *p; p++)
            if (*p == '\n' || *p == '\t')
                *p = ' ';
        snprintf(buf, cap, "cannot reach the database: %s", why);
        return;
    }
    snprintf(buf, cap, "%s", dk_status_title(st));
}

int dk_cli_database_migrate(dk_app *app, const dk_plan *plan)
{
    for (size_t i = 0; i < plan->n; i++) {
        const dk_service *svc = plan->local[i];
        int applied = 0;
        dk_status st =
            dk_migrate_apply(&app->db, svc->name, svc->migrations, svc->nmigrations, &applied);
        if (st != DK_OK) {
            char why[320];
            dk_db_explain(app, st, why, sizeof why);
            dk_log_error("migrations of %s failed: %s", svc->name, why);
            fprintf(stderr, "error: migrations of %s failed: %s\n", svc->name, why);
            return -1;
        }
        dk_log_info("migrations of %s: %d applied, %zu known", svc->name, applied,
                    svc->nmigrations);
    }
    return 0;
}

/* On PostgreSQL the schema is `docket migrate`'s job: refuse to serve an old schema. */
int dk_cli_database_check(dk_app *app, const dk_plan *plan)
{
    dk_arena *a = dk_arena_new();
    int rc = 0;
    for (size_t i = 0; i < plan->n && rc == 0; i++) {
        const dk_service *svc = plan->local[i];
        const char *p[] = {svc->name};
        dk_db_rows *rows = NULL;
        dk_status st = dk_sql(&app->db, a,
                              "SELECT COALESCE(MAX(version), 0) FROM public.docket_migrations "
                              "WHERE service = $1",
                              1, p, &rows);
        int64_t have = st == DK_OK && rows->nrows == 1 ? dk_sql_get_int(rows, 0, 0) : -1;
        int64_t want = svc->migrations[svc->nmigrations - 1].version;
        if (st == DK_E_UNAVAILABLE) {
            char why[320];
            dk_db_explain(app, st, why, sizeof why);
            fprintf(stderr, "error: %s\n", why);
            rc = -1;
        } else if (have < want) {
            dk_log_error("the database schema of %s is at version %lld, this binary needs %lld: "
                         "run `docket migrate` first",
                         svc->name, (long long)(have < 0 ? 0 : have), (long long)want);
            rc = -1;
        }
    }
    dk_arena_free(a);
    return rc;
}

int dk_cli_migrate_run(dk_config *c, const dk_plan *plan)
{
    dk_app app = {0};
    app.config = c;
    int orc = dk_cli_database_open(&app, c, 1, plan);
    if (orc != 0)
        return orc;
    int rc = dk_cli_database_migrate(&app, plan) == 0 ? 0 : 1;
    app.db.ops->close(app.db.db);
    return rc;
}

/* docket backup PATH | docket restore PATH — the embedded (SQLite) database. */
int dk_cli_backup_run(dk_config *c, const dk_plan *all, bool restore, const char *path)
{
    dk_app app = {0};
    app.config = c;
    int orc = dk_cli_database_open(&app, c, 1, all);
    if (orc != 0)
        return orc;
    int rc = 1;
    dk_db_conn *conn = NULL;
    dk_status st = app.db.ops->acquire(app.db.db, &conn);
    if (st == DK_OK) {
        double t0 = dk_mono_s();
        st = restore ? app.db.ops->restore(conn, path) : app.db.ops->backup(conn, path);
        if (st == DK_OK) {
            dk_log_info("%s %s in %.3f s", restore ? "restored from" : "backed up to", path,
                        dk_mono_s() - t0);
            rc = 0;
        } else if (st == DK_E_BAD_REQUEST) {
            fprintf(stderr,
                    "docket %s: the database is PostgreSQL; use pg_dump/pg_restore "
                    "(docs/operations.md)\n",
                    restore ? "restore" : "backup");
            rc = DK_EXIT_USAGE;
        } else {
            fprintf(stderr, "docket %s: %s: %s\n", restore ? "restore" : "backup", path,
                    app.db.ops->last_error(conn));
        }
        app.db.ops->release(app.db.db, conn);
    } else {
        fprintf(stderr, "docket: cannot open the database (%s)\n", dk_status_title(st));
    }
    if (rc == 0 && restore) {
        /* a backup from an older version gets the newer migrations now */
        rc = dk_cli_database_migrate(&app, all) == 0 ? 0 : 1;
    }
    app.db.ops->close(app.db.db);
    return rc;
}
