/* sqlite_vfs.c — "docket-wal": the default VFS, with a WAL file's appends gathered into one write
 * per commit (sqlite_vfs.h for the contract).
 *
 * SQLite appends a WAL frame as two writes, the 24-byte frame header, then the page right after
 * it; the last frame of a transaction (the commit frame) carries the database size after the
 * commit in bytes 4–7 of its header, the others zero. A WAL file opened here keeps the appends
 * that follow each other in a buffer and writes it with one xWrite of the default VFS when:
 * - the page following a commit frame's header has been appended (the end of a COMMIT: the
 *   write error, if any, is this xWrite's answer, so the COMMIT fails as it would have);
 * - a write that is not an append (below the end of the frames appended since the WAL header
 *   was last written: SQLite rewriting a frame of the open transaction in place, or its
 *   checksums) or does not follow the buffer: the buffer first, then that write, passed on at
 *   once, in the order SQLite made them;
 * - the buffer would pass DK_VFS_BUF_MAX (a transaction larger than that spills in pieces);
 * - any other call on the file (read, sync, truncate, size, file control, close), before it.
 * So the file holds, at every call SQLite could observe it through, what it would have held
 * without the buffer; only frames of a transaction that has not reached its commit frame may sit
 * in memory, and those a crash discards anyway (nothing points at them yet). */
#include "adapters/sqlite_vfs.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include "core/alloc.h"
#include "core/banned.h"

#define DK_VFS_FRAME_HDR 24
#define DK_VFS_BUF_MIN   (64 * 1024)
#define DK_VFS_BUF_MAX   (1024 * 1024)
/* The unix VFS writes at most 128 KiB - 1 bytes per xWrite (it masks the length with 0x1ffff and
 * calls a shorter write a full disk): the buffer goes out in pieces of at most this. */
#define DK_VFS_WRITE_MAX (124 * 1024)

/* A WAL file: ours in front, the default VFS's object right after it. */
struct vfs_wal {
    sqlite3_file base;
    sqlite3_file *real;
    unsigned char *buf;
    size_t len, cap;
    sqlite3_int64 off;             /* the file offset of buf[0] */
    sqlite3_int64 commit_page_off; /* where a commit frame's page goes, -1 if none pending */
    sqlite3_int64 end; /* the end of this file's appends since the WAL header was written */
};

static sqlite3_vfs vfs_shim;
static sqlite3_vfs *vfs_real;
static pthread_once_t vfs_once = PTHREAD_ONCE_INIT;
static int vfs_register_rc;
static _Atomic uint64_t vfs_wal_writes, vfs_file_writes;

static size_t vfs_wal_size(void)
{
    return (sizeof(struct vfs_wal) + 15) & ~(size_t)15;
}

static int vfs_flush(struct vfs_wal *w)
{
    w->commit_page_off = -1;
    if (w->len == 0)
        return SQLITE_OK;
    int rc = SQLITE_OK;
    for (size_t done = 0; done < w->len && rc == SQLITE_OK;) {
        size_t n = w->len - done < DK_VFS_WRITE_MAX ? w->len - done : DK_VFS_WRITE_MAX;
        rc =
            w->real->pMethods->xWrite(w->real, w->buf + done, (int)n, w->off + (sqlite3_int64)done);
        atomic_fetch_add_explicit(&vfs_file_writes, 1, memory_order_relaxed);
        done += n;
    }
    w->len = 0; /* written or failed: either way no longer ours to write */
    return rc;
}

static int vfs_wal_write(sqlite3_file *f, const void *data, int n, sqlite3_int64 off)
{
    struct vfs_wal *w = (struct vfs_wal *)f;
    atomic_fetch_add_explicit(&vfs_wal_writes, 1, memory_order_relaxed);
    int rc;
    if (off == 0)
        w->end = 0; /* the WAL header: the WAL starts over, every frame after it is new */
    if (off < w->end) {
        /* a rewrite in place (a frame of the open transaction, its checksums), or an append
         * after a rolled-back one: what is gathered first, then this write, as SQLite made them */
        rc = vfs_flush(w);
        if (rc != SQLITE_OK)
            return rc;
        atomic_fetch_add_explicit(&vfs_file_writes, 1, memory_order_relaxed);
        return w->real->pMethods->xWrite(w->real, data, n, off);
    }
    if (w->len > 0 && off != w->off + (sqlite3_int64)w->len) {
        rc = vfs_flush(w); /* not next to the buffer: what is gathered goes first */
        if (rc != SQLITE_OK)
            return rc;
    }
    w->end = off + n;
    if (w->len + (size_t)n > w->cap && w->cap < DK_VFS_BUF_MAX) {
        size_t cap = w->cap ? w->cap : DK_VFS_BUF_MIN;
        while (cap < w->len + (size_t)n && cap < DK_VFS_BUF_MAX)
            cap *= 2;
        unsigned char *b = dk_realloc(w->buf, cap);
        if (b) {
            w->buf = b;
            w->cap = cap;
        }
    }
    if (w->len > 0 && w->len + (size_t)n > w->cap) {
        /* it would not fit: what is gathered goes first (the page of a commit frame whose
         * header was gathered is still awaited) */
        sqlite3_int64 awaited = w->commit_page_off;
        rc = vfs_flush(w);
        if (rc != SQLITE_OK)
            return rc;
        w->commit_page_off = awaited;
    }
    if (w->len + (size_t)n > w->cap) {
        /* larger than a buffer can hold: passed on as it is (the buffer is empty here) */
        atomic_fetch_add_explicit(&vfs_file_writes, 1, memory_order_relaxed);
        w->commit_page_off = -1;
        return w->real->pMethods->xWrite(w->real, data, n, off);
    }
    if (w->len == 0)
        w->off = off;
    memcpy(w->buf + w->len, data, (size_t)n);
    w->len += (size_t)n;
    if (n == DK_VFS_FRAME_HDR) {
        /* a frame header: bytes 4-7 are the database size after a commit, 0 otherwise */
        const unsigned char *h = data;
        bool commit = (h[4] | h[5] | h[6] | h[7]) != 0;
        w->commit_page_off = commit ? off + DK_VFS_FRAME_HDR : -1;
        return SQLITE_OK;
    }
    if (w->commit_page_off == off)
        return vfs_flush(w); /* the commit frame is complete: the COMMIT's writes reach the file */
    return SQLITE_OK;
}

static int vfs_wal_close(sqlite3_file *f)
{
    struct vfs_wal *w = (struct vfs_wal *)f;
    int rc = vfs_flush(w);
    int rc2 = w->real->pMethods->xClose(w->real);
    dk_free(w->buf);
    w->buf = NULL;
    w->cap = 0;
    return rc != SQLITE_OK ? rc : rc2;
}

static int vfs_wal_read(sqlite3_file *f, void *data, int n, sqlite3_int64 off)
{
    struct vfs_wal *w = (struct vfs_wal *)f;
    int rc = vfs_flush(w);
    return rc != SQLITE_OK ? rc : w->real->pMethods->xRead(w->real, data, n, off);
}

static int vfs_wal_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    struct vfs_wal *w = (struct vfs_wal *)f;
    int rc = vfs_flush(w);
    return rc != SQLITE_OK ? rc : w->real->pMethods->xTruncate(w->real, size);
}

static int vfs_wal_sync(sqlite3_file *f, int flags)
{
    struct vfs_wal *w = (struct vfs_wal *)f;
    int rc = vfs_flush(w);
    return rc != SQLITE_OK ? rc : w->real->pMethods->xSync(w->real, flags);
}

static int vfs_wal_file_size(sqlite3_file *f, sqlite3_int64 *ret)
{
    struct vfs_wal *w = (struct vfs_wal *)f;
    int rc = vfs_flush(w);
    return rc != SQLITE_OK ? rc : w->real->pMethods->xFileSize(w->real, ret);
}

static int vfs_wal_lock(sqlite3_file *f, int level)
{
    struct vfs_wal *w = (struct vfs_wal *)f;
    return w->real->pMethods->xLock(w->real, level);
}

static int vfs_wal_unlock(sqlite3_file *f, int level)
{
    struct vfs_wal *w = (struct vfs_wal *)f;
    return w->real->pMethods->xUnlock(w->real, level);
}

static int vfs_wal_check_reserved(sqlite3_file *f, int *ret)
{
    struct vfs_wal *w = (struct vfs_wal *)f;
    return w->real->pMethods->xCheckReservedLock(w->real, ret);
}

static int vfs_wal_file_control(sqlite3_file *f, int op, void *arg)
{
    struct vfs_wal *w = (struct vfs_wal *)f;
    int rc = vfs_flush(w);
    if (rc != SQLITE_OK)
        return rc;
    if (op == SQLITE_FCNTL_VFSNAME) {
        /* as SQLite's own shims do: ours, then the one below */
        char *below = NULL;
        rc = w->real->pMethods->xFileControl(w->real, op, &below);
        *(char **)arg = sqlite3_mprintf("%s/%s", DK_SQLITE_VFS_NAME, below ? below : "?");
        sqlite3_free(below);
        return SQLITE_OK;
    }
    return w->real->pMethods->xFileControl(w->real, op, arg);
}

static int vfs_wal_sector_size(sqlite3_file *f)
{
    struct vfs_wal *w = (struct vfs_wal *)f;
    return w->real->pMethods->xSectorSize(w->real);
}

static int vfs_wal_device_characteristics(sqlite3_file *f)
{
    struct vfs_wal *w = (struct vfs_wal *)f;
    return w->real->pMethods->xDeviceCharacteristics(w->real);
}

/* A WAL file has no shared memory or memory map of its own; SQLite does not ask for them. */
static int vfs_wal_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **ret)
{
    struct vfs_wal *w = (struct vfs_wal *)f;
    return w->real->pMethods->xShmMap(w->real, pg, pgsz, extend, ret);
}

static int vfs_wal_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    struct vfs_wal *w = (struct vfs_wal *)f;
    return w->real->pMethods->xShmLock(w->real, offset, n, flags);
}

static void vfs_wal_shm_barrier(sqlite3_file *f)
{
    struct vfs_wal *w = (struct vfs_wal *)f;
    w->real->pMethods->xShmBarrier(w->real);
}

static int vfs_wal_shm_unmap(sqlite3_file *f, int del)
{
    struct vfs_wal *w = (struct vfs_wal *)f;
    return w->real->pMethods->xShmUnmap(w->real, del);
}

static int vfs_wal_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **ret)
{
    struct vfs_wal *w = (struct vfs_wal *)f;
    int rc = vfs_flush(w);
    if (rc != SQLITE_OK)
        return rc;
    return w->real->pMethods->xFetch(w->real, off, n, ret);
}

static int vfs_wal_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    struct vfs_wal *w = (struct vfs_wal *)f;
    return w->real->pMethods->xUnfetch(w->real, off, p);
}

static const sqlite3_io_methods vfs_wal_methods = {
    .iVersion = 3,
    .xClose = vfs_wal_close,
    .xRead = vfs_wal_read,
    .xWrite = vfs_wal_write,
    .xTruncate = vfs_wal_truncate,
    .xSync = vfs_wal_sync,
    .xFileSize = vfs_wal_file_size,
    .xLock = vfs_wal_lock,
    .xUnlock = vfs_wal_unlock,
    .xCheckReservedLock = vfs_wal_check_reserved,
    .xFileControl = vfs_wal_file_control,
    .xSectorSize = vfs_wal_sector_size,
    .xDeviceCharacteristics = vfs_wal_device_characteristics,
    .xShmMap = vfs_wal_shm_map,
    .xShmLock = vfs_wal_shm_lock,
    .xShmBarrier = vfs_wal_shm_barrier,
    .xShmUnmap = vfs_wal_shm_unmap,
    .xFetch = vfs_wal_fetch,
    .xUnfetch = vfs_wal_unfetch,
};

static int vfs_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags,
                    int *ret_flags)
{
    (void)vfs;
    if (!(flags & SQLITE_OPEN_WAL) || vfs_real->szOsFile <= 0)
        /* not a WAL file: the default VFS's object itself, in the room we were given */
        return vfs_real->xOpen(vfs_real, name, f, flags, ret_flags);
    struct vfs_wal *w = (struct vfs_wal *)f;
    memset(w, 0, sizeof *w);
    w->real = (sqlite3_file *)((unsigned char *)f + vfs_wal_size());
    w->commit_page_off = -1;
    int rc = vfs_real->xOpen(vfs_real, name, w->real, flags, ret_flags);
    if (rc != SQLITE_OK) {
        if (w->real->pMethods)
            (void)w->real->pMethods->xClose(w->real);
        w->base.pMethods = NULL; /* nothing for SQLite to close */
        return rc;
    }
    w->base.pMethods = &vfs_wal_methods;
    return SQLITE_OK;
}

/* The rest is the default VFS's, called as itself. */
static int vfs_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    (void)vfs;
    return vfs_real->xDelete(vfs_real, name, sync_dir);
}

static int vfs_access(sqlite3_vfs *vfs, const char *name, int flags, int *ret)
{
    (void)vfs;
    return vfs_real->xAccess(vfs_real, name, flags, ret);
}

static int vfs_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    (void)vfs;
    return vfs_real->xFullPathname(vfs_real, name, n, out);
}

static void *vfs_dl_open(sqlite3_vfs *vfs, const char *name)
{
    (void)vfs;
    return vfs_real->xDlOpen(vfs_real, name);
}

static void vfs_dl_error(sqlite3_vfs *vfs, int n, char *msg)
{
    (void)vfs;
    vfs_real->xDlError(vfs_real, n, msg);
}

static void (*vfs_dl_sym(sqlite3_vfs *vfs, void *h, const char *sym))(void)
{
    (void)vfs;
    return vfs_real->xDlSym(vfs_real, h, sym);
}

static void vfs_dl_close(sqlite3_vfs *vfs, void *h)
{
    (void)vfs;
    vfs_real->xDlClose(vfs_real, h);
}

static int vfs_randomness(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    return vfs_real->xRandomness(vfs_real, n, out);
}

static int vfs_sleep(sqlite3_vfs *vfs, int us)
{
    (void)vfs;
    return vfs_real->xSleep(vfs_real, us);
}

static int vfs_current_time(sqlite3_vfs *vfs, double *ret)
{
    (void)vfs;
    return vfs_real->xCurrentTime(vfs_real, ret);
}

static int vfs_get_last_error(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    return vfs_real->xGetLastError ? vfs_real->xGetLastError(vfs_real, n, out) : 0;
}

static int vfs_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *ret)
{
    (void)vfs;
    return vfs_real->xCurrentTimeInt64(vfs_real, ret);
}

static int vfs_set_system_call(sqlite3_vfs *vfs, const char *name, sqlite3_syscall_ptr p)
{
    (void)vfs;
    return vfs_real->xSetSystemCall(vfs_real, name, p);
}

static sqlite3_syscall_ptr vfs_get_system_call(sqlite3_vfs *vfs, const char *name)
{
    (void)vfs;
    return vfs_real->xGetSystemCall(vfs_real, name);
}

static const char *vfs_next_system_call(sqlite3_vfs *vfs, const char *name)
{
    (void)vfs;
    return vfs_real->xNextSystemCall(vfs_real, name);
}

static void vfs_register_once(void)
{
    vfs_real = sqlite3_vfs_find(NULL);
    if (!vfs_real || vfs_real->iVersion < 3) {
        vfs_register_rc = SQLITE_ERROR;
        return;
    }
    int room = (int)vfs_wal_size() + vfs_real->szOsFile;
    vfs_shim = (sqlite3_vfs){
        .iVersion = 3,
        .szOsFile = room,
        .mxPathname = vfs_real->mxPathname,
        .zName = DK_SQLITE_VFS_NAME,
        .xOpen = vfs_open,
        .xDelete = vfs_delete,
        .xAccess = vfs_access,
        .xFullPathname = vfs_full_pathname,
        .xDlOpen = vfs_dl_open,
        .xDlError = vfs_dl_error,
        .xDlSym = vfs_dl_sym,
        .xDlClose = vfs_dl_close,
        .xRandomness = vfs_randomness,
        .xSleep = vfs_sleep,
        .xCurrentTime = vfs_current_time,
        .xGetLastError = vfs_get_last_error,
        .xCurrentTimeInt64 = vfs_current_time_int64,
        .xSetSystemCall = vfs_set_system_call,
        .xGetSystemCall = vfs_get_system_call,
        .xNextSystemCall = vfs_next_system_call,
    };
    vfs_register_rc = sqlite3_vfs_register(&vfs_shim, 0);
}

int dk_sqlite_vfs_register(void)
{
    pthread_once(&vfs_once, vfs_register_once);
    return vfs_register_rc;
}

void dk_sqlite_vfs_stats(struct dk_sqlite_vfs_stats *ret)
{
    ret->wal_writes = atomic_load_explicit(&vfs_wal_writes, memory_order_relaxed);
    ret->file_writes = atomic_load_explicit(&vfs_file_writes, memory_order_relaxed);
}
