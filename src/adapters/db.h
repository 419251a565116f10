/* adapters/db.h — the SQL adapters: SQLite (db_sqlite.c) and PostgreSQL (db_postgres.c); dk_db_ops_for_url picks one by the database URL (db.c).
 * The port (the interface) is ports/db.h; only the composition root (main.c) and the
 * adapters' own tests name these instances. */
#ifndef DK_ADAPTERS_DB_H
#define DK_ADAPTERS_DB_H

#include "ports/db.h"

extern const struct dk_db_ops dk_db_sqlite_ops;
extern const struct dk_db_ops dk_db_postgres_ops;

/* Picks the adapter for a URL (sqlite: or postgres[ql]://); NULL when the scheme is unknown. */
const struct dk_db_ops *dk_db_ops_for_url(const char *url);

#endif
