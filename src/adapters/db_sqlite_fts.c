/* db_sqlite_fts.c — the FTS5 auxiliary function docket_hits(), registered on every SQLite
 * connection the adapter opens (db_sqlite.c calls dk_sqlite_fts_register after configuring it).
 *
 * docket_hits(fts_table, w0, w1, ...) is the weighted number of times the phrases of the MATCH
 * expression occur in the current row: every instance (xInst) in column i adds wi (a missing
 * weight is 0). It reads the row's own position lists only, never the table's statistics
 * (bm25() does: its value for a row moves when other rows are written), so a keyset cursor on
 * (docket_hits(...), id) stays valid between two pages however the table changes. The result
 * is an integer, so a cursor carries it exactly. */
#include "adapters/db_sqlite_fts.h"

#include <sqlite3.h>
#include <string.h>

#include "core/banned.h"

#define FTS_MAX_COLUMNS 16

static void db_sqlite_fts_hits(const Fts5ExtensionApi *api, Fts5Context *fts, sqlite3_context *ctx,
                               int nval, sqlite3_value **val)
{
    sqlite3_int64 w[FTS_MAX_COLUMNS];
    memset(w, 0, sizeof w);
    for (int i = 0; i < nval && i < FTS_MAX_COLUMNS; i++)
        w[i] = sqlite3_value_int64(val[i]);
    int ninst = 0;
    int rc = api->xInstCount(fts, &ninst);
    if (rc != SQLITE_OK) {
        sqlite3_result_error_code(ctx, rc);
        return;
    }
    sqlite3_int64 sum = 0;
    for (int i = 0; i < ninst; i++) {
        int phrase = 0, col = 0, off = 0;
        rc = api->xInst(fts, i, &phrase, &col, &off);
        if (rc != SQLITE_OK) {
            sqlite3_result_error_code(ctx, rc);
            return;
        }
        if (col >= 0 && col < FTS_MAX_COLUMNS)
            sum += w[col];
    }
    sqlite3_result_int64(ctx, sum);
}

int dk_sqlite_fts_register(sqlite3 *db)
{
    fts5_api *api = NULL;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "SELECT fts5(?1)", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_bind_pointer(st, 1, (void *)&api, "fts5_api_ptr", NULL);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return rc == SQLITE_DONE ? SQLITE_ERROR : rc;
    if (!api || api->iVersion < 2)
        return SQLITE_ERROR; /* no FTS5 in this SQLite */
    return api->xCreateFunction(api, "docket_hits", NULL, db_sqlite_fts_hits, NULL);
}
