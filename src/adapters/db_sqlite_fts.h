/* db_sqlite_fts.h — FTS5 functions Docket's statements use on SQLite, registered per
 * connection by the SQLite adapter (see db_sqlite_fts.c for what each computes).
 * Not thread-safe per connection (like every use of one sqlite3 handle). */
#ifndef DK_ADAPTERS_DB_SQLITE_FTS_H
#define DK_ADAPTERS_DB_SQLITE_FTS_H

#include <sqlite3.h>

/* Registers docket_hits() on db. Returns an SQLite result code (SQLITE_OK = 0). */
__attribute__((warn_unused_result)) int dk_sqlite_fts_register(sqlite3 *db);

#endif
