/* db_sqlite.c — the SQL port on SQLite (dk_db_sqlite_ops).
 * URL: sqlite:PATH, sqlite://PATH, or sqlite::memory: (one in-memory database shared by every
 * connection of the pool, through SQLite's memdb VFS). All pool_size connections, plus one writer
 * connection, are opened by open(), each set up by db_sqlite_conn_setup (WAL, synchronous=NORMAL,
 * foreign_keys=ON, a busy timeout of acquire_timeout_ms). Zero options mean defaults: pool_size
 * 4, acquire_timeout_ms 5000.
 * Writes go through the one writer connection, taken in turn by the callers in FIFO order (the
 * "write queue", below): a transaction is a savepoint inside a group transaction that the last
 * caller of a group commits; each caller's commit returns only after the COMMIT carrying its
 * work (docs/design/sqlite-writes.md). Reads run on the pool's connections and never wait for it.
 * WAL checkpoints run on a thread of their own (the checkpointer, below), not in a COMMIT.
 * Statements are prepared once per connection and kept in a 64-entry LRU cache keyed by SQL text.
 * $1…$n parameters are bound as text; every $k from 1 to nparams must appear in the statement and
 * no other parameter may (as on PostgreSQL). */
#include "ports/db.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/trace.h"
#include "adapters/db.h"
#include "adapters/db_sqlite_fts.h"
#include "adapters/sqlite_vfs.h"
#include "core/banned.h"

#define DB_SQLITE_CACHE_MAX          64
#define DB_SQLITE_DEFAULT_POOL       4
#define DB_SQLITE_DEFAULT_TIMEOUT_MS 5000
#define DB_SQLITE_ERR_MAX            512
/* A group (one BEGIN IMMEDIATE … COMMIT on the writer) takes the transactions of callers queued
 * while it is open, up to this many, for at most this long since its first began. */
#define DB_SQLITE_GROUP_MAX    64
#define DB_SQLITE_GROUP_MAX_MS 2
/* WAL frames after which the checkpointer copies the WAL into the database (SQLite's own
 * auto-checkpoint threshold), counted since its last pass began; beside the writer. It takes a
 * turn of the writer for a second pass (what lets the WAL start over) only once the WAL holds
 * DB_SQLITE_CHECKPOINT_TURN_FRAMES: that pass holds every writer for its copy and two fsyncs. */
#define DB_SQLITE_CHECKPOINT_FRAMES      1000
#define DB_SQLITE_CHECKPOINT_TURN_FRAMES 4000
/* Before that turn, passes beside the writer copy what it appended meanwhile, up to this many,
 * until no more than DB_SQLITE_CHECKPOINT_TURN_LEFT frames are left for the turn. */
#define DB_SQLITE_CHECKPOINT_CATCH_UPS 3
#define DB_SQLITE_CHECKPOINT_TURN_LEFT 64
/* FTS5 indexes are compacted by the checkpointer once the writer has committed nothing for
 * DB_SQLITE_FTS_IDLE_MS, when an index has DB_SQLITE_FTS_MIN_SEGMENTS segments or more:
 * DB_SQLITE_FTS_MERGE_PAGES pages of merged data per step (one short transaction on a turn of
 * the writer between two groups), until it is one segment or a write comes. A compaction
 * rewrites the whole index, so one follows the last after at least DB_SQLITE_FTS_MS_PER_PAGE
 * per page of the index (about 1 % of a core at most: a page costs ~0.1 ms to merge). */
#define DB_SQLITE_FTS_IDLE_MS      500
#define DB_SQLITE_FTS_MIN_SEGMENTS 4
#define DB_SQLITE_FTS_MERGE_PAGES  32
#define DB_SQLITE_FTS_MERGE_STEPS  100000
#define DB_SQLITE_FTS_MS_PER_PAGE  10

struct db_sqlite_stmt {
    char *sql; /* NULL = free slot */
    uint64_t hash;
    uint64_t last_used;
    sqlite3_stmt *stmt;
};

struct dk_db_conn {
    struct dk_db *db;
    sqlite3 *h; /* NULL after a failure that closed it: acquire re-opens it */
    bool in_use;
    bool in_tx;    /* between begin and commit/rollback: its statements run on the writer */
    bool tx_first; /* … and opened the group's transaction: no savepoint of its own */
    uint64_t tick;
    struct db_sqlite_stmt cache[DB_SQLITE_CACHE_MAX];
    char err[DB_SQLITE_ERR_MAX];
};

/* A caller waiting for its turn on the writer (lives on its stack). */
struct db_sqlite_waiter {
    pthread_cond_t cv;
    pthread_t thread;
    bool granted;
    struct db_sqlite_waiter *next;
};

/* A caller whose transaction is in the open group, waiting for the group's COMMIT. */
struct db_sqlite_member {
    pthread_cond_t cv;
    struct dk_db_conn *conn; /* the caller's connection: the group's error text goes there */
    bool done;
    dk_status status;
    struct db_sqlite_member *next;
};

/* The write queue: one writer connection that callers hold in turn. Everything but conn is
 * guarded by mu; conn belongs to the caller that holds the turn (busy), whoever it is. */
struct db_sqlite_writer {
    pthread_mutex_t mu;
    struct dk_db_conn conn;
    bool busy;
    pthread_t owner; /* the holder's thread, while busy */
    struct db_sqlite_waiter *head, *tail;
    struct db_sqlite_member *members; /* the open group's committed savepoints */
    int nmembers;   /* transactions the open group saw, rolled back ones included */
    int ncommitted; /* … and those it carries */
    int64_t group_start_ms;
    int group_max,
        group_max_ms; /* DB_SQLITE_GROUP_MAX, DB_SQLITE_GROUP_MAX_MS unless a test sets them */
    /* The checkpointer asks for the next turn between two groups (ckpt_pending) and is woken
     * on ckpt_cv when it has it (ckpt_granted), before the queue. */
    bool ckpt_pending, ckpt_granted;
    int64_t ckpt_turn_start_us; /* when the checkpointer got its turn (stats) */
    pthread_t ckpt_thread;
    pthread_cond_t ckpt_cv;
    struct dk_db_sqlite_write_stats stats;
};

/* The checkpointer: a thread with a connection of its own that runs the WAL checkpoints (and
 * their fsyncs) the writer's commits would otherwise run inline, in some caller's COMMIT. */
struct db_sqlite_checkpointer {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    pthread_t thread;
    bool started, wanted, stop;
    int wal_frames;  /* the WAL's length at the last commit (the WAL hook's count) */
    int pass_frames; /* … when the last pass began (0 once the WAL started over) */
    /* the idle FTS5 merge: writes were committed since the last merge, the last at … */
    bool fts_dirty;
    int64_t last_write_ms;
    int64_t fts_not_before_ms; /* the next compaction, not before (the rate limit above) */
    uint64_t writes;           /* commits seen by the WAL hook: a merge stops when it moves */
    uint64_t fts_merge_steps;  /* merge transactions run (tests, measurements) */
    struct dk_db_conn conn;
};

struct dk_db {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *open_name; /* file path, or a memdb URI */
    int open_flags;
    int busy_timeout_ms;
    int acquire_timeout_ms;
    int size;
    struct dk_db_conn *conns;
    struct db_sqlite_writer w;
    struct db_sqlite_checkpointer ckpt;
};

/* ---- small helpers ---------------------------------------------------------------------- */

static int64_t db_sqlite_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t db_sqlite_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* "b:count …" for the non-empty buckets of hist (b = log2 of the bucket's lower bound, µs). */
static void db_sqlite_hist_format(const uint64_t *hist, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = 0;
    for (int b = 0; b < DK_DB_SQLITE_HIST && n < cap; b++)
        if (hist[b]) {
            int k = snprintf(out + n, cap - n, "%s%d:%" PRIu64, n ? " " : "", b, hist[b]);
            if (k < 0)
                break;
            n += (size_t)k;
        }
}

/* Counts a duration in its power-of-two bucket (dk_db_sqlite_write_stats). */
static void db_sqlite_hist_add(uint64_t *hist, int64_t us)
{
    int b = 0;
    while (b < DK_DB_SQLITE_HIST - 1 && us >= ((int64_t)2 << b))
        b++;
    hist[b]++;
}

static uint64_t db_sqlite_hash(const char *s)
{
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static void db_sqlite_set_err(struct dk_db_conn *c, const char *msg)
{
    snprintf(c->err, sizeof c->err, "%s", msg ? msg : "unknown error");
}

/* Maps an extended SQLite result code to the port's status. */
static dk_status db_sqlite_map(int xrc)
{
    switch (xrc) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
    case SQLITE_CONSTRAINT_ROWID:
        return DK_E_CONFLICT;
    default:
        break;
    }
    switch (xrc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_CANTOPEN:
        return DK_E_UNAVAILABLE;
    default:
        return DK_E_INTERNAL;
    }
}

/* Records the connection's current error and returns its status. */
static dk_status db_sqlite_fail(struct dk_db_conn *c)
{
    int xrc = sqlite3_extended_errcode(c->h);
    snprintf(c->err, sizeof c->err, "%s (sqlite %d)", sqlite3_errmsg(c->h), xrc);
    return db_sqlite_map(xrc);
}

/* mkdir -p for the directory part of path. */
static dk_status db_sqlite_make_parent_dirs(const char *path)
{
    DK_AUTOFREE char *dir = dk_strdup(path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return DK_OK;
    *slash = '\0';
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0755) != 0 && errno != EEXIST)
            return DK_E_UNAVAILABLE;
        *p = '/';
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return DK_E_UNAVAILABLE;
    return DK_OK;
}

/* ---- connections ------------------------------------------------------------------------ */

static void db_sqlite_conn_close(struct dk_db_conn *c)
{
    for (int i = 0; i < DB_SQLITE_CACHE_MAX; i++) {
        struct db_sqlite_stmt *e = &c->cache[i];
        if (!e->sql)
            continue;
        sqlite3_finalize(e->stmt);
        dk_free(e->sql);
        memset(e, 0, sizeof *e);
    }
    if (c->h)
        sqlite3_close_v2(c->h);
    c->h = NULL;
}

/* Sets up a freshly opened connection, the pool's and the writer's alike: the one place for
 * what every connection needs (pragmas; functions such as FTS5 auxiliaries go here too). On
 * failure, writes the reason into err and returns SQLite's result code. */
static int db_sqlite_conn_setup(sqlite3 *h, int busy_timeout_ms, char *err, size_t errcap)
{
    sqlite3_extended_result_codes(h, 1);
    /* The busy handler only waits for other processes (a `docket` command on the same file):
     * this process's writers queue for the writer connection instead. */
    sqlite3_busy_timeout(h, busy_timeout_ms);
    /* WAL needs a brief exclusive lock the first time: the busy timeout above covers it. The
     * memdb VFS has no WAL and keeps its own journal mode, which the pragma reports without
     * failing. synchronous=NORMAL in WAL mode: a commit is written to the WAL file (no fsync),
     * so it survives the process being killed; the fsync comes with each checkpoint, and a
     * power loss may take the last commits before it back (the file stays consistent). Each
     * connection's page cache is 1 MiB (SQLite's default is 2 MiB, times a connection per
     * server thread): the OS page cache holds the file anyway, and the bench showed no slower
     * reads with less memory resident (docs/design/measurements.md). */
    char *msg = NULL;
    int rc = sqlite3_exec(h,
                          "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                          "PRAGMA foreign_keys=ON; PRAGMA cache_size=-1024;",
                          NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        snprintf(err, errcap, "cannot configure database: %s", msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return sqlite3_extended_errcode(h);
    }
    return SQLITE_OK;
}

static dk_status db_sqlite_conn_open(struct dk_db *db, struct dk_db_conn *c)
{
    sqlite3 *h = NULL;
    /* Files go through the docket-wal VFS (sqlite_vfs.h: a commit's WAL frames in one write, as
     * durable as before); the in-memory database names its memdb VFS in its URI. */
    const char *vfs = NULL;
    if (!(db->open_flags & SQLITE_OPEN_URI) && dk_sqlite_vfs_register() == SQLITE_OK)
        vfs = DK_SQLITE_VFS_NAME;
    int rc = sqlite3_open_v2(db->open_name, &h, db->open_flags, vfs);
    if (rc != SQLITE_OK) {
        snprintf(c->err, sizeof c->err, "cannot open database: %s",
                 h ? sqlite3_errmsg(h) : sqlite3_errstr(rc));
        sqlite3_close_v2(h);
        return db_sqlite_map(rc);
    }
    c->h = h;
    rc = db_sqlite_conn_setup(h, db->busy_timeout_ms, c->err, sizeof c->err);
    if (rc != SQLITE_OK) {
        db_sqlite_conn_close(c);
        return db_sqlite_map(rc);
    }
    rc = dk_sqlite_fts_register(h); /* the FTS5 functions the statements use */
    if (rc != SQLITE_OK) {
        snprintf(c->err, sizeof c->err, "cannot register FTS5 functions: %s", sqlite3_errstr(rc));
        db_sqlite_conn_close(c);
        return db_sqlite_map(rc);
    }
    return DK_OK;
}

/* Finds or prepares the statement for sql in the connection's LRU cache. */
static dk_status db_sqlite_prepare_cached(struct dk_db_conn *c, const char *sql, sqlite3_stmt **ret)
{
    uint64_t h = db_sqlite_hash(sql);
    struct db_sqlite_stmt *victim = NULL;
    for (int i = 0; i < DB_SQLITE_CACHE_MAX; i++) {
        struct db_sqlite_stmt *e = &c->cache[i];
        if (e->sql && e->hash == h && strcmp(e->sql, sql) == 0) {
            e->last_used = ++c->tick;
            *ret = e->stmt;
            return DK_OK;
        }
        if (!victim || (victim->sql && (!e->sql || e->last_used < victim->last_used)))
            victim = e;
    }

    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v3(c->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, &tail);
    if (rc != SQLITE_OK)
        return db_sqlite_fail(c);
    if (!st) {
        db_sqlite_set_err(c, "empty statement");
        return DK_E_INTERNAL;
    }
    for (; tail && *tail; tail++) {
        if (*tail != ';' && *tail != ' ' && *tail != '\t' && *tail != '\n' && *tail != '\r') {
            sqlite3_finalize(st);
            db_sqlite_set_err(c, "several statements in one query (use exec_script)");
            return DK_E_INTERNAL;
        }
    }

    if (victim->sql) {
        sqlite3_finalize(victim->stmt);
        dk_free(victim->sql);
    }
    victim->sql = dk_strdup(sql);
    victim->hash = h;
    victim->stmt = st;
    victim->last_used = ++c->tick;
    *ret = st;
    return DK_OK;
}

/* Parses a parameter name "$k" (k without leading zeros) into k; 0 when it is not one. */
static long db_sqlite_param_number(const char *name)
{
    if (!name || name[0] != '$' || name[1] < '1' || name[1] > '9')
        return 0;
    char *end = NULL;
    errno = 0;
    long k = strtol(name + 1, &end, 10);
    if (errno || *end != '\0' || k <= 0)
        return 0;
    return k;
}

/* Binds params[k-1] to every "$k" of the statement. The statement's distinct parameter names
 * must be exactly $1…$nparams. */
static dk_status db_sqlite_bind(struct dk_db_conn *c, sqlite3_stmt *st, int nparams,
                                const char *const *params)
{
    int count = sqlite3_bind_parameter_count(st);
    for (int i = 1; i <= count; i++) {
        const char *name = sqlite3_bind_parameter_name(st, i);
        long k = db_sqlite_param_number(name);
        if (k == 0) {
            snprintf(c->err, sizeof c->err,
                     "unsupported parameter '%s': use $1…$n (and CAST($1 AS type), not $1::type)",
                     name ? name : "?");
            return DK_E_INTERNAL;
        }
        if (k > nparams) {
            snprintf(c->err, sizeof c->err, "statement uses $%ld but only %d parameters given", k,
                     nparams);
            return DK_E_INTERNAL;
        }
        const char *v = params[k - 1];
        int rc = v ? sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(st, i);
        if (rc != SQLITE_OK)
            return db_sqlite_fail(c);
    }
    /* count distinct names, all within 1..nparams: equal counts mean each $k appears. */
    if (count != nparams) {
        snprintf(c->err, sizeof c->err, "statement has %d parameters but %d given", count, nparams);
        return DK_E_INTERNAL;
    }
    return DK_OK;
}

/* ---- the ops ---------------------------------------------------------------------------- */

/* Runs st, a statement of c's cache (prepared when NULL). */
static dk_status db_sqlite_query_run_stmt(dk_db_conn *c, sqlite3_stmt *st, dk_arena *arena,
                                          const char *sql, int nparams, const char *const *params,
                                          dk_db_rows **ret_rows)
{
    if (!c->h) {
        db_sqlite_set_err(c, "connection is closed");
        return DK_E_UNAVAILABLE;
    }
    if (nparams < 0 || (nparams > 0 && !params) || (ret_rows && !arena)) {
        db_sqlite_set_err(c, "invalid query arguments");
        return DK_E_INTERNAL;
    }
    dk_status s = DK_OK;
    if (!st) {
        s = db_sqlite_prepare_cached(c, sql, &st);
        if (s != DK_OK)
            return s;
    }
    s = db_sqlite_bind(c, st, nparams, params);
    if (s != DK_OK) {
        sqlite3_clear_bindings(st);
        return s;
    }

    int ncols = 0; /* read after the first step: a stale statement is re-prepared by it */
    int64_t total_before = sqlite3_total_changes64(c->h);
    const char **vals = NULL; /* grows while stepping, then copied into the arena */
    size_t nvals = 0, cap = 0;
    int nrows = 0;
    for (;;) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) {
            ncols = sqlite3_column_count(st);
            break;
        }
        if (rc != SQLITE_ROW) {
            s = db_sqlite_fail(c);
            break;
        }
        ncols = sqlite3_column_count(st);
        nrows++;
        if (!ret_rows)
            continue;
        if (nvals + (size_t)ncols > cap) {
            cap = cap ? cap * 2 : 64;
            while (cap < nvals + (size_t)ncols)
                cap *= 2;
            vals = dk_realloc(vals, cap * sizeof *vals);
        }
        for (int j = 0; j < ncols; j++) {
            if (sqlite3_column_type(st, j) == SQLITE_NULL) {
                vals[nvals++] = NULL;
                continue;
            }
            const unsigned char *text = sqlite3_column_text(st, j);
            if (!text) {
                s = db_sqlite_fail(c); /* out of memory inside SQLite */
                break;
            }
            int len = sqlite3_column_bytes(st, j);
            vals[nvals++] = dk_arena_strndup(arena, (const char *)text, (size_t)len);
        }
        if (s != DK_OK)
            break;
    }
    int64_t affected = 0;
    if (s == DK_OK && sqlite3_total_changes64(c->h) != total_before)
        affected = sqlite3_changes64(c->h);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);

    if (s == DK_OK && ret_rows) {
        dk_db_rows *r = dk_arena_alloc(arena, sizeof *r);
        r->nrows = nrows;
        r->ncols = ncols;
        r->affected = affected;
        size_t n = nvals ? nvals : 1;
        const char **out = dk_arena_alloc(arena, n * sizeof *out);
        if (nvals)
            memcpy(out, vals, nvals * sizeof *out);
        r->values = out;
        *ret_rows = r;
    }
    dk_free(vals);
    return s;
}

static dk_status db_sqlite_query_run(dk_db_conn *c, dk_arena *arena, const char *sql, int nparams,
                                     const char *const *params, dk_db_rows **ret_rows)
{
    return db_sqlite_query_run_stmt(c, NULL, arena, sql, nparams, params, ret_rows);
}

static dk_status db_sqlite_simple(dk_db_conn *c, const char *sql)
{
    return db_sqlite_query_run(c, NULL, sql, 0, NULL, NULL);
}

/* Inside a transaction the script runs on the writer; outside one on the caller's connection
 * (DDL at start-up and in tests; the busy handler covers a group in progress). */
static dk_status db_sqlite_exec_script(dk_db_conn *c, const char *sql)
{
    if (c->in_tx) {
        struct dk_db_conn *wc = &c->db->w.conn;
        dk_status s = db_sqlite_exec_script(wc, sql);
        if (s != DK_OK)
            snprintf(c->err, sizeof c->err, "%s", wc->err);
        return s;
    }
    if (!c->h) {
        db_sqlite_set_err(c, "connection is closed");
        return DK_E_UNAVAILABLE;
    }
    char *msg = NULL;
    int rc = sqlite3_exec(c->h, sql, NULL, NULL, &msg);
    if (rc == SQLITE_OK)
        return DK_OK;
    int xrc = sqlite3_extended_errcode(c->h);
    snprintf(c->err, sizeof c->err, "%s (sqlite %d)", msg ? msg : sqlite3_errstr(rc), xrc);
    sqlite3_free(msg);
    return db_sqlite_map(xrc);
}

static void db_sqlite_writer_pass(struct db_sqlite_writer *w);

/* ---- the checkpointer ---------------------------------------------------------------------- */

/* Called by SQLite after each commit on the writer, by the committing caller: asks the
 * checkpointer for a checkpoint once the WAL is long enough, instead of running it here. */
static int db_sqlite_wal_hook(void *arg, sqlite3 *h, const char *dbname, int nframes)
{
    (void)h;
    (void)dbname;
    struct db_sqlite_checkpointer *k = arg;
    pthread_mutex_lock(&k->mu);
    k->writes++;
    k->last_write_ms = db_sqlite_now_ms();
    bool first = !k->fts_dirty; /* the thread may sleep without a deadline: wake it */
    k->fts_dirty = true;
    if (nframes < k->wal_frames)
        k->pass_frames = 0; /* the WAL started over */
    k->wal_frames = nframes;
    if (nframes >= k->pass_frames + DB_SQLITE_CHECKPOINT_FRAMES)
        k->wanted = true;
    if (first || k->wanted)
        pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
    return SQLITE_OK;
}

/* The second pass of a checkpoint, on a turn of the writer between two groups: copies the few
 * frames committed since the first pass, so that the WAL is wholly in the database file when
 * the next group begins — which lets that group's first write start the WAL over from its
 * beginning (SQLite restarts it only then). Without this pass the writer would keep appending
 * while the checkpointer copies, and the WAL would grow without end. */
/* The checkpointer takes a turn of the writer between two groups (before the queue), and gives
 * it back. */
static void db_sqlite_checkpointer_take_turn(struct dk_db *db)
{
    struct db_sqlite_writer *w = &db->w;
    pthread_mutex_lock(&w->mu);
    if (!w->busy) {
        w->busy = true;
        w->owner = pthread_self();
    } else {
        w->ckpt_thread = pthread_self();
        w->ckpt_pending = true;
        while (!w->ckpt_granted)
            pthread_cond_wait(&w->ckpt_cv, &w->mu);
        w->ckpt_granted = false;
    }
    w->ckpt_turn_start_us = db_sqlite_now_us();
    pthread_mutex_unlock(&w->mu);
}

static void db_sqlite_checkpointer_give_turn(struct dk_db *db)
{
    pthread_mutex_lock(&db->w.mu);
    db_sqlite_hist_add(db->w.stats.ckpt_turn_us, db_sqlite_now_us() - db->w.ckpt_turn_start_us);
    db_sqlite_writer_pass(&db->w);
    pthread_mutex_unlock(&db->w.mu);
}

static void db_sqlite_checkpointer_catch_up(struct dk_db *db)
{
    db_sqlite_checkpointer_take_turn(db);
    (void)sqlite3_wal_checkpoint_v2(db->ckpt.conn.h, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    db_sqlite_checkpointer_give_turn(db);
}

/* The FTS5 index's structure record (its segments and levels; rowid 10 of %_data), copied into
 * buf (at most cap bytes): a merge step that leaves it unchanged had nothing left to merge.
 * Returns its whole length, or -1 when it cannot be read. */
static int db_sqlite_fts_structure(sqlite3 *h, const char *table, unsigned char *buf, int cap)
{
    char *sql = sqlite3_mprintf("SELECT block FROM \"%w_data\" WHERE id = 10", table);
    sqlite3_stmt *st = NULL;
    int n = -1;
    if (sql && sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        n = sqlite3_column_bytes(st, 0);
        if (n > 0)
            memcpy(buf, sqlite3_column_blob(st, 0), (size_t)(n < cap ? n : cap));
    }
    sqlite3_finalize(st);
    sqlite3_free(sql);
    return n;
}

/* Reads one integer from SQL (-1 when it cannot). */
static int64_t db_sqlite_int_of(sqlite3 *h, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sql && sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* SQLite's varint (FTS5 writes its structure record with it); 0 when truncated. */
static int db_sqlite_varint(const unsigned char *p, int n, uint64_t *ret)
{
    uint64_t v = 0;
    for (int i = 0; i < n && i < 9; i++) {
        if (i == 8) {
            *ret = (v << 8) | p[i];
            return 9;
        }
        v = (v << 7) | (p[i] & 0x7f);
        if (!(p[i] & 0x80)) {
            *ret = v;
            return i + 1;
        }
    }
    return 0;
}

/* Compacts one FTS5 index while the writer stays idle: each step merges up to
 * DB_SQLITE_FTS_MERGE_PAGES pages of its segments ('merge' with a negative count: all
 * segments, whatever their level, towards one) in a transaction of its own, on a turn of the
 * writer. A search reads every segment of each of its terms, so a freshly written index
 * (FTS5 writes a segment per transaction; its automerge keeps a few per level) costs more
 * to search than a compacted one (docs/design/search.md). Returns false when a write came
 * (or the checkpointer stops) before it was done. */
static bool db_sqlite_fts_compact(struct dk_db *db, const char *table, uint64_t writes)
{
    struct db_sqlite_checkpointer *k = &db->ckpt;
    sqlite3 *h = k->conn.h;
    /* worth it? the structure record: a 4-byte cookie, then varints nLevel, nSegment, … */
    unsigned char head[64];
    int nh = db_sqlite_fts_structure(h, table, head, (int)sizeof head);
    if (nh > (int)sizeof head)
        nh = (int)sizeof head;
    uint64_t nlevel = 0, nseg = 0;
    int used = nh > 4 ? db_sqlite_varint(head + 4, nh - 4, &nlevel) : 0;
    if (!used || !db_sqlite_varint(head + 4 + used, nh - 4 - used, &nseg) ||
        nseg < DB_SQLITE_FTS_MIN_SEGMENTS)
        return true;
    char *count = sqlite3_mprintf("SELECT count(*) FROM \"%w_data\"", table);
    int64_t pages = db_sqlite_int_of(h, count);
    sqlite3_free(count);
    int64_t now = db_sqlite_now_ms();
    pthread_mutex_lock(&k->mu);
    bool early = now < k->fts_not_before_ms;
    if (!early && pages > 0)
        k->fts_not_before_ms = now + pages * DB_SQLITE_FTS_MS_PER_PAGE;
    pthread_mutex_unlock(&k->mu);
    if (early || pages <= 0)
        return !early; /* too early: not done, tried again later */
    char *merge = sqlite3_mprintf("INSERT INTO \"%w\"(\"%w\", rank) VALUES ('merge', -%d)", table,
                                  table, DB_SQLITE_FTS_MERGE_PAGES);
    if (!merge)
        return true;
    enum { CAP = 1 << 20 };
    unsigned char *before = dk_malloc(CAP), *after = dk_malloc(CAP);
    bool done = false, idle = true;
    for (int step = 0; step < DB_SQLITE_FTS_MERGE_STEPS && !done && idle; step++) {
        db_sqlite_checkpointer_take_turn(db);
        int nb = db_sqlite_fts_structure(h, table, before, CAP);
        int rc = nb < 0 ? SQLITE_ERROR : sqlite3_exec(h, merge, NULL, NULL, NULL);
        int na = rc == SQLITE_OK ? db_sqlite_fts_structure(h, table, after, CAP) : -1;
        db_sqlite_checkpointer_give_turn(db);
        done = rc != SQLITE_OK || na < 0 || na > CAP ||
               (na == nb && memcmp(before, after, (size_t)na) == 0);
        pthread_mutex_lock(&k->mu);
        if (rc == SQLITE_OK)
            k->fts_merge_steps++;
        idle = !k->stop && !k->wanted && k->writes == writes;
        pthread_mutex_unlock(&k->mu);
    }
    dk_free(before);
    dk_free(after);
    sqlite3_free(merge);
    return done;
}

/* Compacts every FTS5 index of the database (db_sqlite_fts_compact); false when a write (or a
 * checkpoint request, or stop) interrupted it. */
static bool db_sqlite_fts_compact_all(struct dk_db *db, uint64_t writes)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->ckpt.conn.h,
                           "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE "
                           "'CREATE VIRTUAL TABLE % USING fts5%'",
                           -1, &st, NULL) != SQLITE_OK)
        return true;
    enum { MAX_TABLES = 16 };
    char *names[MAX_TABLES];
    int n = 0;
    while (n < MAX_TABLES && sqlite3_step(st) == SQLITE_ROW)
        names[n++] = dk_strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    bool done = true;
    for (int i = 0; i < n; i++) {
        if (done)
            done = db_sqlite_fts_compact(db, names[i], writes);
        dk_free(names[i]);
    }
    return done;
}

static void *db_sqlite_checkpointer_run(void *arg)
{
    struct dk_db *db = arg;
    struct db_sqlite_checkpointer *k = &db->ckpt;
    pthread_mutex_lock(&k->mu);
    for (;;) {
        while (!k->wanted && !k->stop) {
            if (!k->fts_dirty) {
                pthread_cond_wait(&k->cv, &k->mu);
                continue;
            }
            int64_t due = k->last_write_ms + DB_SQLITE_FTS_IDLE_MS;
            if (due < k->fts_not_before_ms)
                due = k->fts_not_before_ms;
            int64_t wait = due - db_sqlite_now_ms();
            if (wait <= 0)
                break;
            struct timespec deadline = dk_mono_deadline((int)wait);
            pthread_cond_timedwait(&k->cv, &k->mu, &deadline);
        }
        if (k->stop)
            break;
        if (!k->wanted) {
            /* idle since the last write: compact the full-text indexes, then copy what that
             * wrote into the database file */
            k->fts_dirty = false;
            uint64_t writes = k->writes;
            pthread_mutex_unlock(&k->mu);
            bool done = db_sqlite_fts_compact_all(db, writes);
            (void)sqlite3_wal_checkpoint_v2(k->conn.h, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
            pthread_mutex_lock(&k->mu);
            if (!done)
                k->fts_dirty = true;
            continue;
        }
        k->wanted = false;
        k->pass_frames = k->wal_frames;
        pthread_mutex_unlock(&k->mu);
        /* PASSIVE, as SQLite's auto-checkpoint: copies what no reader still needs, never waits
         * for the writer and never makes it wait: the bulk of the copy and its fsyncs happen
         * here, beside the writer. Failures only delay the copy to the next request; the WAL
         * keeps every commit meanwhile. The second pass, on a turn of the writer, once the WAL
         * is long enough to be started over. */
        int log = 0, copied = 0;
        int rc =
            sqlite3_wal_checkpoint_v2(k->conn.h, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &copied);
        if (rc == SQLITE_OK && log >= DB_SQLITE_CHECKPOINT_TURN_FRAMES) {
            /* what the writer appended during the copy is copied beside it too, while that is
             * more than a few frames, so that the turn holds the writer for little more than
             * its two fsyncs */
            for (int i = 0; i < DB_SQLITE_CHECKPOINT_CATCH_UPS && rc == SQLITE_OK &&
                            log - copied > DB_SQLITE_CHECKPOINT_TURN_LEFT;
                 i++)
                rc = sqlite3_wal_checkpoint_v2(k->conn.h, NULL, SQLITE_CHECKPOINT_PASSIVE, &log,
                                               &copied);
        }
        if (rc != SQLITE_OK || log >= DB_SQLITE_CHECKPOINT_TURN_FRAMES)
            db_sqlite_checkpointer_catch_up(db);
        pthread_mutex_lock(&k->mu);
    }
    pthread_mutex_unlock(&k->mu);
    return NULL;
}

/* Starts the checkpointer for a file database; without it (memdb: no WAL; or no thread) the
 * writer keeps SQLite's inline auto-checkpoint. */
static void db_sqlite_checkpointer_start(struct dk_db *db)
{
    struct db_sqlite_checkpointer *k = &db->ckpt;
    k->conn.db = db;
    if (db->open_flags & SQLITE_OPEN_URI)
        return;
    if (db_sqlite_conn_open(db, &k->conn) != DK_OK)
        return;
    if (pthread_create(&k->thread, NULL, db_sqlite_checkpointer_run, db) != 0) {
        db_sqlite_conn_close(&k->conn);
        return;
    }
    k->started = true;
}

static void db_sqlite_checkpointer_stop(struct dk_db *db)
{
    struct db_sqlite_checkpointer *k = &db->ckpt;
    if (k->started) {
        pthread_mutex_lock(&k->mu);
        k->stop = true;
        pthread_cond_signal(&k->cv);
        pthread_mutex_unlock(&k->mu);
        pthread_join(k->thread, NULL);
        k->started = false;
    }
    db_sqlite_conn_close(&k->conn);
}

/* ---- the write queue -------------------------------------------------------------------------
 * One writer connection holds every write transaction of this process. Callers take turns on it
 * in FIFO order (db_sqlite_writer_take); the first of a group opens BEGIN IMMEDIATE, and each
 * caller's transaction is a savepoint inside it, so a failing one is rolled back to its
 * savepoint alone. A caller that released its savepoint hands the turn on while others queue
 * (db_sqlite_writer_done), up to DB_SQLITE_GROUP_MAX transactions or DB_SQLITE_GROUP_MAX_MS,
 * and waits; the caller that finds the queue empty (or the group full) commits it and wakes
 * the others with the COMMIT's result. So commit
 * returns DK_OK only once the COMMIT carrying the caller's work has returned: the durability of
 * a plain commit on this connection (see db_sqlite_conn_setup). If the group transaction is lost
 * before its COMMIT (SQLite rolls back the whole transaction on some errors: disk full, I/O),
 * every waiting member is told DK_E_UNAVAILABLE. There is no thread of its own: the callers run
 * their own transactions, so nothing is left queued once every connection is released. */

/* Opens the writer connection: a connection as any other (db_sqlite_conn_setup), whose savepoints
 * keep their undo pages in memory instead of spilling them to a temporary file, and whose
 * checkpoints the checkpointer runs. */
static dk_status db_sqlite_writer_open(struct dk_db *db)
{
    struct dk_db_conn *wc = &db->w.conn;
    dk_status s = db_sqlite_conn_open(db, wc);
    if (s == DK_OK && db_sqlite_exec_script(wc, "PRAGMA temp_store=MEMORY") != DK_OK) {
        s = DK_E_INTERNAL;
        db_sqlite_conn_close(wc);
    }
    if (s == DK_OK && db->ckpt.started)
        sqlite3_wal_hook(wc->h, db_sqlite_wal_hook, &db->ckpt);
    return s;
}

/* Hands the turn to the first waiter, or frees the writer. Under w->mu. */
static void db_sqlite_writer_pass(struct db_sqlite_writer *w)
{
    struct db_sqlite_waiter *next = w->head;
    if (!next) {
        w->busy = false;
        return;
    }
    w->head = next->next;
    if (!w->head)
        w->tail = NULL;
    w->owner = next->thread;
    next->granted = true;
    pthread_cond_signal(&next->cv);
}

/* Gives up the turn between two groups (no transaction open on the writer): to the
 * checkpointer first when it asked for one. Under w->mu. */
static void db_sqlite_writer_pass_between_groups(struct db_sqlite_writer *w)
{
    if (!w->ckpt_pending) {
        db_sqlite_writer_pass(w);
        return;
    }
    w->ckpt_pending = false;
    w->ckpt_granted = true;
    w->owner = w->ckpt_thread;
    pthread_cond_signal(&w->ckpt_cv);
}

/* Tells every member of the open group the group's outcome. Under w->mu. */
static void db_sqlite_writer_settle(struct db_sqlite_writer *w, dk_status st, const char *err)
{
    for (struct db_sqlite_member *m = w->members, *next = NULL; m; m = next) {
        next = m->next;
        m->status = st;
        if (st != DK_OK)
            snprintf(m->conn->err, sizeof m->conn->err, "%s", err);
        m->done = true;
        pthread_cond_signal(&m->cv);
    }
    w->members = NULL;
}

/* Waits (FIFO, until the acquire timeout) for the turn on the writer. */
static dk_status db_sqlite_writer_take(struct dk_db *db, struct dk_db_conn *c)
{
    struct db_sqlite_writer *w = &db->w;
    pthread_t self = pthread_self();
    pthread_mutex_lock(&w->mu);
    if (w->busy && pthread_equal(w->owner, self)) {
        /* Waiting would wait for ourselves: fail as the busy handler did, without the wait. */
        pthread_mutex_unlock(&w->mu);
        db_sqlite_set_err(c, "this thread holds a write transaction on another connection");
        return DK_E_UNAVAILABLE;
    }
    if (!w->busy) {
        w->busy = true;
        w->owner = self;
        w->stats.wait_us[0]++;
        pthread_mutex_unlock(&w->mu);
        return DK_OK;
    }
    int64_t queued_us = db_sqlite_now_us();
    struct db_sqlite_waiter me = {.thread = self};
    dk_cond_init_monotonic(&me.cv);
    if (w->tail)
        w->tail->next = &me;
    else
        w->head = &me;
    w->tail = &me;
    struct timespec deadline = dk_mono_deadline(db->acquire_timeout_ms);
    while (!me.granted) {
        if (pthread_cond_timedwait(&me.cv, &w->mu, &deadline) == ETIMEDOUT && !me.granted) {
            struct db_sqlite_waiter **pp = &w->head, *prev = NULL;
            while (*pp != &me) {
                prev = *pp;
                pp = &(*pp)->next;
            }
            *pp = me.next;
            if (w->tail == &me)
                w->tail = prev;
            break;
        }
    }
    db_sqlite_hist_add(w->stats.wait_us, db_sqlite_now_us() - queued_us);
    pthread_mutex_unlock(&w->mu);
    pthread_cond_destroy(&me.cv);
    if (!me.granted) {
        db_sqlite_set_err(c, "timed out waiting for the write queue");
        return DK_E_UNAVAILABLE;
    }
    return DK_OK;
}

/* The holder is done with its transaction: joined = its savepoint was released into the group.
 * Lets the group grow or commits it, then gives up the turn. Returns the outcome of the group
 * for a joined caller (DK_OK once committed), DK_OK otherwise. c receives the error text. */
static dk_status db_sqlite_writer_done(struct dk_db *db, struct dk_db_conn *c, bool joined)
{
    struct db_sqlite_writer *w = &db->w;
    struct dk_db_conn *wc = &w->conn;
    bool open = wc->h && !sqlite3_get_autocommit(wc->h);
    pthread_mutex_lock(&w->mu);
    if (!open && w->members) /* the group transaction is gone: nothing of it was committed */
        db_sqlite_writer_settle(
            w, DK_E_UNAVAILABLE,
            "the write group was rolled back by an error in another transaction");
    if (!open) {
        w->nmembers = 0;
        w->ncommitted = 0;
        db_sqlite_writer_pass_between_groups(w);
        pthread_mutex_unlock(&w->mu);
        if (joined)
            db_sqlite_set_err(c, "the write group was rolled back");
        return joined ? DK_E_UNAVAILABLE : DK_OK;
    }
    w->nmembers++;
    if (joined)
        w->ncommitted++;
    if (w->head && w->nmembers < w->group_max &&
        db_sqlite_now_ms() - w->group_start_ms < w->group_max_ms) {
        /* Others queue: let the next one add its transaction before the COMMIT. */
        db_sqlite_writer_pass(w);
        if (!joined) {
            pthread_mutex_unlock(&w->mu);
            return DK_OK;
        }
        struct db_sqlite_member me = {.conn = c, .next = w->members};
        pthread_cond_init(&me.cv, NULL);
        w->members = &me;
        while (!me.done)
            pthread_cond_wait(&me.cv, &w->mu);
        pthread_mutex_unlock(&w->mu);
        pthread_cond_destroy(&me.cv);
        return me.status;
    }
    int n = w->ncommitted;
    w->nmembers = 0;
    w->ncommitted = 0;
    pthread_mutex_unlock(&w->mu);

    int64_t commit_us = db_sqlite_now_us();
    dk_status st = db_sqlite_simple(wc, "COMMIT");
    commit_us = db_sqlite_now_us() - commit_us;
    if (st != DK_OK && wc->h && !sqlite3_get_autocommit(wc->h) &&
        db_sqlite_simple(wc, "ROLLBACK") != DK_OK)
        db_sqlite_conn_close(wc); /* re-opened by the next begin */

    pthread_mutex_lock(&w->mu);
    db_sqlite_writer_settle(w, st, wc->err);
    db_sqlite_hist_add(w->stats.commit_us, commit_us);
    if (st == DK_OK && n > 0) {
        w->stats.groups++;
        w->stats.transactions += (uint64_t)n;
    } else if (joined) {
        snprintf(c->err, sizeof c->err, "%s", wc->err);
    }
    db_sqlite_writer_pass_between_groups(w);
    pthread_mutex_unlock(&w->mu);
    return joined ? st : DK_OK;
}

/* Undoes the holder's work: its savepoint, or the whole transaction when it opened it (no one
 * else's work is in it yet). The group's transaction stays open unless SQLite lost it. */
static void db_sqlite_writer_undo(struct dk_db_conn *wc, bool first)
{
    if (!wc->h || sqlite3_get_autocommit(wc->h))
        return;
    if (!first && db_sqlite_simple(wc, "ROLLBACK TO dk_tx") == DK_OK &&
        db_sqlite_simple(wc, "RELEASE dk_tx") == DK_OK)
        return;
    /* The savepoint cannot be undone: the whole group goes (its members are told). */
    if (db_sqlite_simple(wc, "ROLLBACK") != DK_OK)
        db_sqlite_conn_close(wc);
}

static dk_status db_sqlite_begin(dk_db_conn *c)
{
    if (c->in_tx) {
        db_sqlite_set_err(c, "a transaction is open on this connection already");
        return DK_E_INTERNAL;
    }
    struct dk_db *db = c->db;
    dk_status s = db_sqlite_writer_take(db, c);
    if (s != DK_OK)
        return s;
    struct dk_db_conn *wc = &db->w.conn;
    wc->err[0] = '\0';
    if (!wc->h)
        s = db_sqlite_writer_open(db);
    c->tx_first = s == DK_OK && sqlite3_get_autocommit(wc->h);
    if (c->tx_first) {
        /* The first of a group: IMMEDIATE takes the write lock now (other processes wait for it
         * in their busy handler, as we wait for theirs here). The group's transaction is this
         * caller's alone until it is done, so it needs no savepoint: groups of one (no queue)
         * cost what a plain transaction does. */
        s = db_sqlite_simple(wc, "BEGIN IMMEDIATE");
        db->w.group_start_ms = db_sqlite_now_ms();
    } else if (s == DK_OK) {
        s = db_sqlite_simple(wc, "SAVEPOINT dk_tx");
    }
    if (s != DK_OK) {
        snprintf(c->err, sizeof c->err, "%s", wc->err);
        (void)db_sqlite_writer_done(db, c, false);
        return s;
    }
    c->in_tx = true;
    return DK_OK;
}

static dk_status db_sqlite_commit(dk_db_conn *c)
{
    if (!c->in_tx)
        return db_sqlite_simple(c, "COMMIT"); /* nothing open: SQLite's own error */
    struct dk_db *db = c->db;
    struct dk_db_conn *wc = &db->w.conn;
    c->in_tx = false;
    dk_status s = c->tx_first ? DK_OK : db_sqlite_simple(wc, "RELEASE dk_tx");
    if (s != DK_OK) {
        snprintf(c->err, sizeof c->err, "%s", wc->err);
        db_sqlite_writer_undo(wc, false);
        (void)db_sqlite_writer_done(db, c, false);
        return s;
    }
    return db_sqlite_writer_done(db, c, true);
}

static dk_status db_sqlite_rollback(dk_db_conn *c)
{
    if (c->in_tx) {
        c->in_tx = false;
        db_sqlite_writer_undo(&c->db->w.conn, c->tx_first);
        return db_sqlite_writer_done(c->db, c, false);
    }
    if (!c->h)
        return DK_E_UNAVAILABLE;
    if (sqlite3_get_autocommit(c->h))
        return DK_OK;
    return db_sqlite_simple(c, "ROLLBACK");
}

void dk_db_sqlite_set_group_limits(dk_db *db, int max_transactions, int max_ms)
{
    pthread_mutex_lock(&db->w.mu);
    db->w.group_max = max_transactions > 0 ? max_transactions : 1;
    db->w.group_max_ms = max_ms > 0 ? max_ms : 1;
    pthread_mutex_unlock(&db->w.mu);
}

void dk_db_sqlite_write_stats(dk_db *db, struct dk_db_sqlite_write_stats *ret)
{
    struct db_sqlite_writer *w = &db->w;
    pthread_mutex_lock(&w->mu);
    *ret = w->stats;
    ret->queued = 0;
    for (struct db_sqlite_waiter *q = w->head; q; q = q->next)
        ret->queued++;
    pthread_mutex_unlock(&w->mu);
    pthread_mutex_lock(&db->ckpt.mu);
    ret->fts_merge_steps = db->ckpt.fts_merge_steps;
    pthread_mutex_unlock(&db->ckpt.mu);
}

static const char *db_sqlite_last_error(dk_db_conn *c)
{
    return c->err;
}

static void db_sqlite_close(dk_db *db)
{
    if (!db)
        return;
    for (int i = 0; db->conns && i < db->size; i++)
        db_sqlite_conn_close(&db->conns[i]);
    db_sqlite_checkpointer_stop(db);
    if (db->w.stats.groups > 0) /* every connection released, the checkpointer stopped */
        dk_log_info("sqlite: the write queue committed %" PRIu64 " transactions in %" PRIu64
                    " groups; %" PRIu64 " FTS5 merge steps while idle",
                    db->w.stats.transactions, db->w.stats.groups, db->ckpt.fts_merge_steps);
    if (db->w.stats.groups > 0) {
        char wait[256], commit[256], turn[256];
        db_sqlite_hist_format(db->w.stats.wait_us, wait, sizeof wait);
        db_sqlite_hist_format(db->w.stats.commit_us, commit, sizeof commit);
        db_sqlite_hist_format(db->w.stats.ckpt_turn_us, turn, sizeof turn);
        dk_log_info("sqlite: durations (count per power of two of µs, from 1 µs): waits for "
                    "the writer %s; COMMITs %s; checkpointer turns %s",
                    wait, commit, turn);
    }
    db_sqlite_conn_close(&db->w.conn);
    pthread_mutex_destroy(&db->w.mu);
    pthread_cond_destroy(&db->w.ckpt_cv);
    pthread_cond_destroy(&db->ckpt.cv);
    pthread_mutex_destroy(&db->ckpt.mu);
    dk_free(db->conns);
    dk_free(db->open_name);
    pthread_cond_destroy(&db->cv);
    pthread_mutex_destroy(&db->mu);
    dk_free(db);
}

static dk_status db_sqlite_open(const dk_db_options *opt, dk_db **ret_db)
{
    const char *url = opt ? opt->url : NULL;
    const char *path = NULL;
    if (url && strncmp(url, "sqlite://", 9) == 0)
        path = url + 9;
    else if (url && strncmp(url, "sqlite:", 7) == 0)
        path = url + 7;
    if (!path || !*path)
        return DK_E_VALIDATION;

    dk_db *db = DK_NEW(dk_db);
    pthread_mutex_init(&db->mu, NULL);
    dk_cond_init_monotonic(&db->cv);
    pthread_mutex_init(&db->w.mu, NULL);
    pthread_cond_init(&db->w.ckpt_cv, NULL);
    db->w.conn.db = db;
    db->w.group_max = DB_SQLITE_GROUP_MAX;
    db->w.group_max_ms = DB_SQLITE_GROUP_MAX_MS;
    pthread_mutex_init(&db->ckpt.mu, NULL);
    dk_cond_init_monotonic(&db->ckpt.cv);
    db->size = opt->pool_size > 0 ? opt->pool_size : DB_SQLITE_DEFAULT_POOL;
    db->acquire_timeout_ms =
        opt->acquire_timeout_ms > 0 ? opt->acquire_timeout_ms : DB_SQLITE_DEFAULT_TIMEOUT_MS;
    db->busy_timeout_ms = db->acquire_timeout_ms;
    db->open_flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    dk_status s = DK_OK;
    if (strcmp(path, ":memory:") == 0) {
        /* A name starting with '/' makes the memdb database shared by the pool's connections;
         * it lives until the last of them closes. */
        char name[128];
        snprintf(name, sizeof name, "file:/docket-memdb-%ld-%p?vfs=memdb", (long)getpid(),
                 (void *)db);
        db->open_name = dk_strdup(name);
        db->open_flags |= SQLITE_OPEN_URI;
    } else {
        db->open_name = dk_strdup(path);
        s = db_sqlite_make_parent_dirs(path);
        if (s != DK_OK)
            goto fail;
    }
    db->conns = dk_calloc((size_t)db->size, sizeof *db->conns);
    for (int i = 0; i < db->size; i++) {
        db->conns[i].db = db;
        s = db_sqlite_conn_open(db, &db->conns[i]);
        if (s != DK_OK)
            goto fail;
    }
    db_sqlite_checkpointer_start(db);
    s = db_sqlite_writer_open(db);
    if (s != DK_OK)
        goto fail;
    *ret_db = db;
    return DK_OK;
fail:
    db_sqlite_close(db);
    return s;
}

/* Takes a free connection, waiting until deadline (monotonic ms). */
static dk_status db_sqlite_take(dk_db *db, int64_t deadline, dk_db_conn **ret_conn)
{
    struct timespec ts = {.tv_sec = deadline / 1000, .tv_nsec = (deadline % 1000) * 1000000};
    struct dk_db_conn *c = NULL;
    pthread_mutex_lock(&db->mu);
    for (;;) {
        for (int i = 0; i < db->size && !c; i++) {
            if (!db->conns[i].in_use)
                c = &db->conns[i];
        }
        if (c || db_sqlite_now_ms() >= deadline)
            break;
        if (pthread_cond_timedwait(&db->cv, &db->mu, &ts) == ETIMEDOUT) {
            for (int i = 0; i < db->size && !c; i++) {
                if (!db->conns[i].in_use)
                    c = &db->conns[i];
            }
            break;
        }
    }
    if (c)
        c->in_use = true;
    pthread_mutex_unlock(&db->mu);
    if (!c)
        return DK_E_UNAVAILABLE;

    if (!c->h) {
        dk_status s = db_sqlite_conn_open(db, c);
        if (s != DK_OK) {
            pthread_mutex_lock(&db->mu);
            c->in_use = false;
            pthread_cond_signal(&db->cv);
            pthread_mutex_unlock(&db->mu);
            return s;
        }
    }
    c->err[0] = '\0';
    *ret_conn = c;
    return DK_OK;
}

static dk_status db_sqlite_acquire(dk_db *db, dk_db_conn **ret_conn)
{
    return db_sqlite_take(db, db_sqlite_now_ms() + db->acquire_timeout_ms, ret_conn);
}

static void db_sqlite_release(dk_db *db, dk_db_conn *c)
{
    if (!c)
        return;
    if (c->in_tx)
        (void)db_sqlite_rollback(c); /* gives up its turn on the writer, too */
    /* A connection whose transaction cannot be rolled back is closed and re-opened later. */
    if (c->h && !sqlite3_get_autocommit(c->h) && db_sqlite_rollback(c) != DK_OK)
        db_sqlite_conn_close(c);
    pthread_mutex_lock(&db->mu);
    c->in_use = false;
    pthread_cond_signal(&db->cv);
    pthread_mutex_unlock(&db->mu);
}

static dk_status db_sqlite_ping(dk_db *db, int timeout_ms)
{
    dk_db_conn *c = NULL;
    dk_status s = db_sqlite_take(db, db_sqlite_now_ms() + (timeout_ms > 0 ? timeout_ms : 0), &c);
    if (s != DK_OK)
        return s;
    s = db_sqlite_simple(c, "SELECT 1");
    db_sqlite_release(db, c);
    return s;
}

static void db_sqlite_stats(dk_db *db, int *ret_idle, int *ret_busy)
{
    int idle = 0, busy = 0;
    pthread_mutex_lock(&db->mu);
    for (int i = 0; i < db->size; i++) {
        if (db->conns[i].in_use)
            busy++;
        else if (db->conns[i].h)
            idle++;
    }
    pthread_mutex_unlock(&db->mu);
    if (ret_idle)
        *ret_idle = idle;
    if (ret_busy)
        *ret_busy = busy;
}

/* ---- backup and restore (the online backup API) -------------------------------------------- */

static dk_status db_sqlite_copy(struct dk_db_conn *c, sqlite3 *to, sqlite3 *from)
{
    sqlite3_backup *b = sqlite3_backup_init(to, "main", from, "main");
    if (!b) {
        db_sqlite_set_err(c, sqlite3_errmsg(to));
        return DK_E_INTERNAL;
    }
    int rc;
    int tries = 0;
    while ((rc = sqlite3_backup_step(b, 256)) == SQLITE_OK || rc == SQLITE_BUSY ||
           rc == SQLITE_LOCKED) {
        if (rc != SQLITE_OK && ++tries > 200)
            break;
        if (rc != SQLITE_OK)
            sqlite3_sleep(25);
    }
    int frc = sqlite3_backup_finish(b);
    if (rc != SQLITE_DONE || frc != SQLITE_OK) {
        db_sqlite_set_err(c, sqlite3_errmsg(to));
        return rc == SQLITE_BUSY || rc == SQLITE_LOCKED ? DK_E_UNAVAILABLE : DK_E_INTERNAL;
    }
    return DK_OK;
}

/* "ok" from PRAGMA integrity_check and a docket_migrations table: a Docket database. */
static bool db_sqlite_sound(sqlite3 *h)
{
    sqlite3_stmt *st = NULL;
    bool ok = false;
    if (sqlite3_prepare_v2(h, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        const unsigned char *v = sqlite3_column_text(st, 0);
        ok = v && strcmp((const char *)v, "ok") == 0;
    }
    sqlite3_finalize(st);
    if (!ok)
        return false;
    st = NULL;
    ok = sqlite3_prepare_v2(h,
                            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                            "name = 'docket_migrations'",
                            -1, &st, NULL) == SQLITE_OK &&
         sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return ok;
}

static dk_status db_sqlite_backup(dk_db_conn *c, const char *dest_path)
{
    if (access(dest_path, F_OK) == 0) {
        db_sqlite_set_err(c, "the backup file exists already");
        return DK_E_CONFLICT;
    }
    sqlite3 *to = NULL;
    if (sqlite3_open_v2(dest_path, &to, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        db_sqlite_set_err(c, to ? sqlite3_errmsg(to) : "cannot create the backup file");
        sqlite3_close(to);
        return DK_E_INTERNAL;
    }
    dk_status st = db_sqlite_copy(c, to, c->h);
    if (st == DK_OK && !db_sqlite_sound(to)) {
        db_sqlite_set_err(c, "the backup failed its integrity check");
        st = DK_E_INTERNAL;
    }
    sqlite3_close(to);
    if (st != DK_OK)
        unlink(dest_path);
    return st;
}

static dk_status db_sqlite_restore(dk_db_conn *c, const char *src_path)
{
    sqlite3 *from = NULL;
    if (sqlite3_open_v2(src_path, &from, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        db_sqlite_set_err(c, from ? sqlite3_errmsg(from) : "cannot open the backup file");
        sqlite3_close(from);
        return DK_E_VALIDATION;
    }
    dk_status st = DK_OK;
    if (!db_sqlite_sound(from)) {
        db_sqlite_set_err(c, "not a sound Docket database (integrity check or schema failed)");
        st = DK_E_VALIDATION;
    }
    if (st == DK_OK)
        st = db_sqlite_copy(c, c->h, from);
    sqlite3_close(from);
    return st;
}

/* Runs one statement where it belongs: inside a transaction on the writer; a statement that
 * writes, outside one, as a transaction of its own through the write queue (so it waits its turn
 * instead of sleeping in the busy handler); a read on the caller's connection. */
static dk_status db_sqlite_query_routed(dk_db_conn *c, dk_arena *arena, const char *sql,
                                        int nparams, const char *const *params,
                                        dk_db_rows **ret_rows)
{
    struct dk_db_conn *wc = &c->db->w.conn;
    if (c->in_tx) {
        dk_status s = db_sqlite_query_run(wc, arena, sql, nparams, params, ret_rows);
        if (s != DK_OK)
            snprintf(c->err, sizeof c->err, "%s", wc->err);
        return s;
    }
    sqlite3_stmt *st = NULL;
    if (!c->h || db_sqlite_prepare_cached(c, sql, &st) != DK_OK)
        return db_sqlite_query_run(c, arena, sql, nparams, params,
                                   ret_rows); /* fails, with its error */
    if (sqlite3_stmt_readonly(st))
        return db_sqlite_query_run_stmt(c, st, arena, sql, nparams, params, ret_rows);
    dk_status s = db_sqlite_begin(c);
    if (s != DK_OK)
        return s;
    s = db_sqlite_query_run(wc, arena, sql, nparams, params, ret_rows);
    if (s != DK_OK) {
        snprintf(c->err, sizeof c->err, "%s", wc->err);
        (void)db_sqlite_rollback(c);
        return s;
    }
    return db_sqlite_commit(c);
}

/* Each statement is a client span under the caller's trace: named by its verb and table, never
 * its parameters (core/trace.h). */
static dk_status db_sqlite_query(dk_db_conn *c, dk_arena *arena, const char *sql, int nparams,
                                 const char *const *params, dk_db_rows **ret_rows)
{
    dk_span *sp = dk_span_sql("sqlite", sql);
    dk_status st = db_sqlite_query_routed(c, arena, sql, nparams, params, ret_rows);
    if (st != DK_OK)
        dk_span_error(sp, dk_status_title(st));
    dk_span_end(sp);
    return st;
}

const struct dk_db_ops dk_db_sqlite_ops = {
    .name = "sqlite",
    .engine = DK_DB_SQLITE,
    .open = db_sqlite_open,
    .close = db_sqlite_close,
    .acquire = db_sqlite_acquire,
    .release = db_sqlite_release,
    .query = db_sqlite_query,
    .exec_script = db_sqlite_exec_script,
    .begin = db_sqlite_begin,
    .commit = db_sqlite_commit,
    .rollback = db_sqlite_rollback,
    .ping = db_sqlite_ping,
    .stats = db_sqlite_stats,
    .last_error = db_sqlite_last_error,
    .backup = db_sqlite_backup,
    .restore = db_sqlite_restore,
};
