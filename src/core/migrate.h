/* migrate.h — applies a service's versioned SQL migrations through the db port.
 * Bookkeeping lives in docket_migrations (public.docket_migrations on PostgreSQL). Each missing
 * version runs in its own transaction with its bookkeeping row; on PostgreSQL under a
 * transaction-scoped advisory lock, with search_path set to the service's schema (created
 * first), so concurrent runners never apply a version twice. Borrows one pooled connection;
 * thread-safe as the pool is. Errors: the failing step's status (DK_E_INTERNAL for bad input). */
#ifndef DK_MIGRATE_H
#define DK_MIGRATE_H

#include <stddef.h>

#include "core/status.h"
#include "ports/db.h"

/* One migration. Versions ascend strictly; a NULL script for the engine in use records the
 * version without running anything (for engine-specific steps). Never edit after release. */
typedef struct dk_migration {
    int version;
    const char *name;
    const char *sqlite_sql;
    const char *postgres_sql;
} dk_migration;

/* Applies the versions of m[0..n) not yet recorded for service ([a-z_]+). *ret_applied (may be
 * NULL) gets how many were applied by this call. */
dk_status dk_migrate_apply(const dk_database *db, const char *service, const dk_migration *m,
                           size_t n, int *ret_applied) DK_MUSTCHECK;

#endif
