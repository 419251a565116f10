/* db.h — the SQL port: a pool of connections to SQLite or PostgreSQL behind one interface.
 * Services write parameterised SQL with $1…$n placeholders (both engines accept them); params
 * and results are text (NULL pointer = SQL NULL), results are fully materialised. A dk_db is
 * thread-safe; a dk_db_conn belongs to one thread between acquire and release. Errors:
 * DK_E_UNAVAILABLE (server unreachable or pool exhausted within the timeout — fail fast),
 * DK_E_CONFLICT (unique violation), DK_E_INTERNAL (anything else; the message is logged). */
#ifndef DK_PORTS_DB_H
#define DK_PORTS_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct dk_arena dk_arena;
typedef struct dk_db dk_db;
typedef struct dk_db_conn dk_db_conn;

typedef enum { DK_DB_SQLITE, DK_DB_POSTGRES } dk_db_engine;

/* A materialised result. Values are NUL-terminated text; booleans come back as "1"/"0" on
 * SQLite and "t"/"f" on PostgreSQL (use dk_db_bool). Owned by the arena given to the query. */
typedef struct dk_db_rows {
    int nrows;
    int ncols;
    const char **values; /* nrows * ncols, row-major; NULL for SQL NULL */
    int64_t affected;    /* rows changed by INSERT/UPDATE/DELETE */
} dk_db_rows;

typedef struct dk_db_options {
    const char *url;        /* sqlite:PATH | postgres://… | postgresql://… */
    int pool_size;          /* connections kept (PostgreSQL) / opened (SQLite) */
    int acquire_timeout_ms; /* waiting for a free connection */
    int connect_timeout_ms; /* PostgreSQL connect timeout */
    int statement_timeout_ms;
    const char *search_path; /* PostgreSQL schemas, e.g. "auth,users,public"; NULL = default */
} dk_db_options;

struct dk_db_ops {
    const char *name;
    dk_db_engine engine;
    /* DK_E_VALIDATION when the URL is not one this engine understands. */
    dk_status (*open)(const dk_db_options *opt, dk_db **ret_db) DK_MUSTCHECK;
    void (*close)(dk_db *db); /* accepts NULL; waits for nothing: release every conn first */
    dk_status (*acquire)(dk_db *db, dk_db_conn **ret_conn) DK_MUSTCHECK;
    /* Returns the connection to the pool. A connection that saw a connection-level failure
     * is discarded and re-opened on a later acquire (so the pool recovers by itself). An open
     * transaction is rolled back. */
    void (*release)(dk_db *db, dk_db_conn *conn);
    /* Runs one statement. ret_rows may be NULL when the caller needs no rows. Statements are
     * prepared once per connection and cached by their SQL text. */
    dk_status (*query)(dk_db_conn *conn, dk_arena *arena, const char *sql, int nparams,
                       const char *const *params, dk_db_rows **ret_rows) DK_MUSTCHECK;
    /* Runs a script of several statements without parameters (migrations). */
    dk_status (*exec_script)(dk_db_conn *conn, const char *sql) DK_MUSTCHECK;
    dk_status (*begin)(dk_db_conn *conn) DK_MUSTCHECK; /* BEGIN (IMMEDIATE on SQLite) */
    dk_status (*commit)(dk_db_conn *conn) DK_MUSTCHECK;
    /* Runs the transaction's last statement and commits (PostgreSQL: in one round trip). When
     * the statement fails, nothing is committed and the transaction stays open (roll it back);
     * DK_OK only when both succeeded. Optional: NULL = query, then commit. */
    dk_status (*query_commit)(dk_db_conn *conn, dk_arena *arena, const char *sql, int nparams,
                              const char *const *params, dk_db_rows **ret_rows) DK_MUSTCHECK;
    dk_status (*rollback)(dk_db_conn *conn); /* safe to call when no transaction is open */
    /* Checks the server answers within timeout_ms (readiness). */
    dk_status (*ping)(dk_db *db, int timeout_ms) DK_MUSTCHECK;
    /* Pool gauges for docket_db_pool_connections{state}. */
    void (*stats)(dk_db *db, int *ret_idle, int *ret_busy);
    /* Last error text of this connection, for logs (never contains parameters). */
    const char *(*last_error)(dk_db_conn *conn);
    /* Why the last attempt to connect failed (the server's or the network's words: host, port,
     * refused, authentication, missing database), copied into buf; false when none failed.
     * Optional (NULL for engines without connections). Never contains the password. */
    bool (*connect_error)(dk_db *db, char *buf, size_t cap);
    /* Online copy of the whole database into a new file dest_path (SQLite backup API), safe
     * while the database is in use; DK_E_CONFLICT when dest_path exists. Engines backed up
     * with their own tools (PostgreSQL: pg_dump) answer DK_E_BAD_REQUEST. */
    dk_status (*backup)(dk_db_conn *conn, const char *dest_path) DK_MUSTCHECK;
    /* Replaces the database's contents with a backup made by `backup` (checked for integrity
     * first: DK_E_VALIDATION when it is not a sound Docket database). Nothing else may use
     * the database meanwhile. */
    dk_status (*restore)(dk_db_conn *conn, const char *src_path) DK_MUSTCHECK;
};

/* The handle services hold: the ops table plus the opened pool. */
typedef struct dk_database {
    const struct dk_db_ops *ops;
    dk_db *db;
} dk_database;

static inline const char *dk_db_value(const dk_db_rows *r, int row, int col)
{
    return r->values[(size_t)row * (size_t)r->ncols + (size_t)col];
}
static inline bool dk_db_bool(const char *v)
{
    return v && (v[0] == 't' || v[0] == '1');
}

#endif
