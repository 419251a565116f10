/* sqlite_vfs.h — "docket-wal", a SQLite VFS: the platform's default VFS (unix), except that the
 * frames a connection appends to its WAL file are gathered in memory and written with one
 * write() per commit instead of two per frame (a frame's 24-byte header and its page).
 * Every other file (database, journals) is the default VFS's own object, untouched.
 * Durability is the default VFS's: the gathered appends reach the file before the xWrite of the
 * commit frame's page returns (so before SQLite publishes the commit in the WAL index, and
 * before COMMIT returns), and before any read, sync, truncate, size query, file control or close
 * of that WAL file; a failed write is returned by that call, so SQLite fails the COMMIT as it
 * would have. fsync calls are passed on unchanged. (docs/design/sqlite-writes.md, "Gathered WAL
 * writes".) Registration is process-wide, idempotent and thread-safe; the VFS is used only by
 * connections opened with its name. Errors: SQLite result codes. */
#ifndef DK_ADAPTERS_SQLITE_VFS_H
#define DK_ADAPTERS_SQLITE_VFS_H

#include <sqlite3.h>
#include <stdint.h>

#define DK_SQLITE_VFS_NAME "docket-wal"

/* Registers the VFS (not as the default). SQLITE_OK, or SQLite's error (no default VFS). */
__attribute__((warn_unused_result)) int dk_sqlite_vfs_register(void);

/* Process-wide counters (tests, measurements): WAL writes SQLite asked for, gathered into
 * buffers, and the writes that reached the file for them. */
struct dk_sqlite_vfs_stats {
    uint64_t wal_writes;  /* xWrite calls on WAL files */
    uint64_t file_writes; /* writes made to WAL files (gathered flushes and passed-on writes) */
};
void dk_sqlite_vfs_stats(struct dk_sqlite_vfs_stats *ret);

#endif
