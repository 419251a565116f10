/* adapters/db.h — the SQL adapters: SQLite (db_sqlite.c) and PostgreSQL (db_postgres.c); dk_db_ops_for_url picks one by the database URL (db.c).
 * The port (the interface) is ports/db.h; only the composition root (main.c) and the
 * adapters' own tests name these instances. */
#ifndef DK_ADAPTERS_DB_H
#define DK_ADAPTERS_DB_H

#include <stdint.h>

#include "ports/db.h"

extern const struct dk_db_ops dk_db_sqlite_ops;
extern const struct dk_db_ops dk_db_postgres_ops;

#define DK_DB_SQLITE_HIST 24

/* What the SQLite adapter's write queue has done (tests, measurements): groups committed (one
 * COMMIT each, counted when it carried a committed transaction), the committed transactions
 * they carried, and callers waiting for their turn now; and the FTS5 merge steps the
 * checkpointer ran while the writer was idle. */
struct dk_db_sqlite_write_stats {
    uint64_t groups;
    uint64_t transactions;
    int queued;
    uint64_t fts_merge_steps;
    /* Durations, counted in powers of two of microseconds (bucket i: [2^i, 2^(i+1)) µs, the
     * last one everything longer): how long a caller waited for its turn on the writer, how
     * long each group's COMMIT took, and how long the checkpointer held a turn (its second
     * pass, or a merge step). Where a write's tail comes from (docs/design/sqlite-writes.md). */
    uint64_t wait_us[DK_DB_SQLITE_HIST];
    uint64_t commit_us[DK_DB_SQLITE_HIST];
    uint64_t ckpt_turn_us[DK_DB_SQLITE_HIST];
};
void dk_db_sqlite_write_stats(dk_db *db, struct dk_db_sqlite_write_stats *ret);
/* How many transactions a group may carry and for how long it takes more (defaults 64, 2 ms);
 * for tests that need groups to form whatever the machine's speed. */
void dk_db_sqlite_set_group_limits(dk_db *db, int max_transactions, int max_ms);

/* Picks the adapter for a URL (sqlite: or postgres[ql]://); NULL when the scheme is unknown. */
const struct dk_db_ops *dk_db_ops_for_url(const char *url);

#endif
