/* sql.h — conveniences over the db port for the common case: one statement on a pooled
 * connection (acquire, query, release), integer parameters as text, and a transaction scope.
 * Thread-safe as the port is. Errors are the port's. */
#ifndef DK_SQL_H
#define DK_SQL_H

#include <stdint.h>

#include "ports/db.h"

/* Runs one statement on a connection of its own. */
dk_status dk_sql(const dk_database *db, dk_arena *a, const char *sql, int nparams,
                 const char *const *params, dk_db_rows **ret_rows) DK_MUSTCHECK;
/* Decimal text of v in the arena, for use as a parameter. */
const char *dk_sql_int(dk_arena *a, int64_t v);
/* PostgreSQL: v[0..n) (NULL elements allowed) as the text of a one-dimensional array in the
 * arena, every element quoted ({"a",NULL,"say \\"hi\\""}): a parameter cast to TEXT[] (or
 * BIGINT[], ...) and read with unnest, so that one prepared statement takes any number of rows. */
const char *dk_sql_pg_array(dk_arena *a, const char *const *v, int n);
/* Parses an integer column (0 when NULL or malformed). */
int64_t dk_sql_get_int(const dk_db_rows *r, int row, int col);

/* A transaction on one connection: begin, then queries through tx.conn, then end. */
typedef struct dk_tx {
    const dk_database *db;
    dk_db_conn *conn;
} dk_tx;
dk_status dk_tx_begin(const dk_database *db, dk_tx *tx) DK_MUSTCHECK;
dk_status dk_tx_query(dk_tx *tx, dk_arena *a, const char *sql, int nparams,
                      const char *const *params, dk_db_rows **ret_rows) DK_MUSTCHECK;
/* Runs the transaction's last statement and commits it with it (one round trip on
 * PostgreSQL); on DK_OK the transaction is over (dk_tx_end then only returns its st). On
 * failure the transaction is still open: dk_tx_end rolls it back. */
dk_status dk_tx_query_commit(dk_tx *tx, dk_arena *a, const char *sql, int nparams,
                             const char *const *params, dk_db_rows **ret_rows) DK_MUSTCHECK;
/* Commits when st is DK_OK, else rolls back; releases the connection; returns the final status
 * (a failed commit turns DK_OK into the commit's error). */
dk_status dk_tx_end(dk_tx *tx, dk_status st) DK_MUSTCHECK;
/* Rolls back and releases (for paths that already know their answer). */
void dk_tx_abort(dk_tx *tx);

#endif
