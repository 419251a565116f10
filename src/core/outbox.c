/* The outbox relay: one thread per service table, woken by kicks (the committing process's), by
 * a retry timer after a failure, or every DK_OUTBOX_IDLE_POLL_MS when idle. Rows are read in
 * sequence order, up to a batch, published one by one, and those published are deleted in one
 * statement; the first failure stops the pass (order is kept) and the rest waits for the next
 * one. On PostgreSQL the read is the delete: one statement (DELETE ... RETURNING) in a
 * transaction that commits once every row it took was published; after a failed publish it
 * rolls back and those published are deleted as on SQLite (order and retries as above). Several
 * replicas may relay the same table: an event can then be published twice, which
 * at-least-once consumers tolerate. */
#include "core/outbox.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "core/trace.h"
#include "core/banned.h"

#define DK_OUTBOX_BATCH  100
#define DK_OUTBOX_GAP_MS 5 /* between passes under a stream of kicks */
/* With the table empty, a relay looks again this often even without a kick: a kick reaches only
 * the relay of the process that committed, so this catches rows whose process died between its
 * commit and its publish and never came back. Failures retry at interval_ms instead. */
#define DK_OUTBOX_IDLE_POLL_MS 30000
/* PostgreSQL: the relay vacuums its table itself after this many deletions. Every pass reads
 * the table from its lowest seq, so it walks the index entries of every row deleted since the
 * last vacuum (and their heap tuples, until pruned); autovacuum looks at a table once a
 * minute at best, by which time a busy service has deleted a few hundred thousand rows and
 * each pass read over a thousand pages (docs/design/events.md, "Vacuum"). */
#define DK_OUTBOX_VACUUM_ROWS 5000

typedef enum { OUTBOX_IDLE, OUTBOX_MORE, OUTBOX_RETRY } outbox_pass_result;

struct dk_outbox {
    const dk_database *db;
    dk_bus bus;
    const char *service;
    char table[64];
    char select_sql[320]; /* PostgreSQL: the DELETE ... RETURNING that takes a batch */
    char delete_sql[224]; /* of the rows published (PostgreSQL: after a failed publish) */
    int64_t interval_ms;
    long deleted;       /* rows deleted since the last vacuum (PostgreSQL) */
    bool vacuum_failed; /* logged once; autovacuum alone from then on */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool kicked, stop;
};

void dk_outbox_event(dk_arena *a, const char *type, json_t *payload,
                     const char *ret_params[DK_OUTBOX_NPARAMS])
{
    char id[DK_UUID_LEN];
    dk_uuid7(id);
    int64_t now = dk_now_ms();
    json_object_set_new(payload, "id", json_string(id));
    json_object_set_new(payload, "occurred_at", json_integer(now));
    /* the trace context of the request that caused the event goes with it (NULL outside one) */
    char tp[DK_TRACEPARENT_LEN];
    ret_params[0] = dk_arena_strdup(a, id);
    ret_params[1] = type;
    ret_params[2] = dk_json_render(a, payload, NULL);
    ret_params[3] = dk_sql_int(a, now);
    ret_params[4] = dk_trace_current_traceparent(tp) ? dk_arena_strdup(a, tp) : NULL;
}

dk_status dk_outbox_add(dk_tx *tx, dk_arena *a, const char *table, const char *type,
                        json_t *payload)
{
    const char *p[DK_OUTBOX_NPARAMS];
    dk_outbox_event(a, type, payload, p);
    char sql[160];
    snprintf(sql, sizeof sql,
             "INSERT INTO %s (id, type, payload, created_at, traceparent) "
             "VALUES ($1, $2, $3, $4, $5)",
             table);
    return dk_tx_query(tx, a, sql, DK_OUTBOX_NPARAMS, p, NULL);
}

/* One pass: publishes up to a batch. OUTBOX_MORE: a whole batch went, more may wait;
 * OUTBOX_IDLE: the table was emptied; OUTBOX_RETRY: something failed and rows are left. */
typedef struct {
    int64_t seq;
    int row;
} outbox_order;

static int outbox_order_cmp(const void *x, const void *y)
{
    const outbox_order *l = x, *r = y;
    return (l->seq > r->seq) - (l->seq < r->seq);
}

static outbox_pass_result dk_outbox_pass(dk_outbox *o)
{
    dk_arena *a = dk_arena_new();
    dk_db_rows *rows = NULL;
    const char *lim[] = {"100"};
    bool pg = o->db->ops->engine == DK_DB_POSTGRES;
    dk_tx tx;
    dk_status st = pg ? dk_tx_begin(o->db, &tx) : DK_OK;
    if (st == DK_OK && pg) {
        st = dk_tx_query(&tx, a, o->select_sql, 1, lim, &rows);
        if (st != DK_OK)
            dk_tx_abort(&tx);
    } else if (st == DK_OK) {
        st = dk_sql(o->db, a, o->select_sql, 1, lim, &rows);
    }
    if (st != DK_OK) {
        dk_arena_free(a);
        return OUTBOX_RETRY;
    }
    /* RETURNING comes in no particular order: publish in sequence order */
    outbox_order *order = dk_arena_alloc(a, sizeof *order * (size_t)(rows->nrows + 1));
    for (int i = 0; i < rows->nrows; i++)
        order[i] = (outbox_order){dk_sql_get_int(rows, i, 0), i};
    if (pg)
        qsort(order, (size_t)rows->nrows, sizeof *order, outbox_order_cmp);
    int done = 0;
    int64_t oldest = 0; /* created_at of the first event left unpublished */
    /* the published rows' seqs, as an array literal: {1,2} (PostgreSQL) or [1,2] (SQLite) */
    char *list = dk_arena_alloc(a, (size_t)rows->nrows * 21 + 3);
    size_t ll = 0;
    list[ll++] = pg ? '{' : '[';
    for (int k = 0; k < rows->nrows; k++) {
        int i = order[k].row;
        oldest = dk_sql_get_int(rows, i, 3);
        const char *seq = dk_db_value(rows, i, 0);
        const char *type = dk_db_value(rows, i, 1);
        const char *payload = dk_db_value(rows, i, 2);
        /* a producer span under the stored context: the bus hands it on to the consumer */
        (void)dk_trace_enter_traceparent(dk_db_value(rows, i, 4));
        char name[80];
        snprintf(name, sizeof name, "publish %s", type);
        dk_span *sp = dk_span_start(name, DK_SPAN_PRODUCER);
        dk_span_attr_str(sp, "docket.event.type", type);
        dk_span_push(sp);
        dk_status pst = o->bus.ops->publish(o->bus.ev, type, payload);
        dk_span_pop(sp);
        if (pst != DK_OK)
            dk_span_error(sp, dk_status_title(pst));
        dk_span_end(sp);
        dk_trace_leave();
        if (pst != DK_OK) {
            dk_log_warn("outbox %s: publishing %s failed (%s); retrying later", o->table, type,
                        dk_status_title(pst));
            break;
        }
        size_t sl = strlen(seq);
        if (sl > 20)
            break; /* not a seq this table makes */
        if (done > 0)
            list[ll++] = ',';
        memcpy(list + ll, seq, sl);
        ll += sl;
        done++;
        oldest = 0;
    }
    list[ll++] = pg ? '}' : ']';
    list[ll] = '\0';
    bool delete_published = done > 0;
    if (pg && done == rows->nrows) {
        /* all taken rows published: the delete commits (without waiting for its WAL flush:
         * see dk_outbox_start) */
        if (dk_tx_end(&tx, DK_OK) != DK_OK)
            done = 0; /* published but kept: they go out again later */
        delete_published = false;
    } else if (pg) {
        dk_tx_abort(&tx); /* a publish failed: every row stays, then the published ones go */
    }
    if (delete_published) {
        const char *p[] = {list};
        if (dk_sql(o->db, a, o->delete_sql, 1, p, NULL) != DK_OK)
            done = 0; /* published but kept: they go out again later (consumers de-duplicate) */
    }
    o->deleted += done;
    outbox_pass_result res = done < rows->nrows        ? OUTBOX_RETRY
                             : done == DK_OUTBOX_BATCH ? OUTBOX_MORE
                                                       : OUTBOX_IDLE;
    dk_metrics_queue_lag(o->service, "outbox",
                         oldest > 0 && dk_now_ms() > oldest ? (double)(dk_now_ms() - oldest) / 1000
                                                            : 0);
    dk_arena_free(a);
    return res;
}

/* PostgreSQL, after DK_OUTBOX_VACUUM_ROWS deletions: VACUUM the table (on the relay's thread,
 * between passes). SKIP_LOCKED: when autovacuum is at it already, this one is not needed. A
 * failure (a role that may not vacuum the table) is logged once and leaves it to autovacuum. */
static void dk_outbox_vacuum(dk_outbox *o)
{
    if (o->db->ops->engine != DK_DB_POSTGRES || o->deleted < DK_OUTBOX_VACUUM_ROWS ||
        o->vacuum_failed)
        return;
    o->deleted = 0;
    char sql[96];
    snprintf(sql, sizeof sql, "VACUUM (SKIP_LOCKED) %s", o->table);
    dk_db_conn *conn = NULL;
    if (o->db->ops->acquire(o->db->db, &conn) != DK_OK)
        return; /* the next pass will tell */
    if (o->db->ops->exec_script(conn, sql) != DK_OK) {
        o->vacuum_failed = true;
        dk_log_warn("outbox %s: cannot vacuum it (%s); autovacuum alone will", o->table,
                    o->db->ops->last_error(conn));
    }
    o->db->ops->release(o->db->db, conn);
}

static void *dk_outbox_loop(void *arg)
{
    dk_outbox *o = arg;
    pthread_mutex_lock(&o->lock);
    while (!o->stop) {
        o->kicked = false;
        pthread_mutex_unlock(&o->lock);
        outbox_pass_result res;
        while ((res = dk_outbox_pass(o)) == OUTBOX_MORE)
            dk_outbox_vacuum(o);
        dk_outbox_vacuum(o);
        pthread_mutex_lock(&o->lock);
        if (o->stop)
            continue;
        if (o->kicked) {
            /* kicked while passing: commits keep coming. Let a few milliseconds of them
             * gather, so that one pass (a SELECT and a DELETE) carries several events
             * instead of one or two; an idle relay still starts at the first kick. */
            struct timespec gap = dk_mono_deadline(DK_OUTBOX_GAP_MS);
            while (!o->stop)
                if (pthread_cond_timedwait(&o->cond, &o->lock, &gap) != 0)
                    break;
            continue;
        }
        int64_t wait = res == OUTBOX_IDLE && o->interval_ms < DK_OUTBOX_IDLE_POLL_MS
                           ? DK_OUTBOX_IDLE_POLL_MS
                           : o->interval_ms;
        struct timespec ts = dk_mono_deadline(wait);
        while (!o->stop && !o->kicked)
            if (pthread_cond_timedwait(&o->cond, &o->lock, &ts) != 0)
                break;
    }
    pthread_mutex_unlock(&o->lock);
    return NULL;
}

dk_outbox *dk_outbox_start(const dk_database *db, const dk_bus *bus, const char *service,
                           const char *table, int64_t interval_ms)
{
    dk_outbox *o = DK_NEW(dk_outbox);
    o->db = db;
    o->service = service;
    o->bus = *bus;
    snprintf(o->table, sizeof o->table, "%s", table);
    /* PostgreSQL: one statement takes the batch (its transaction commits after publishing),
     * and that commit does not wait for its WAL flush (set_config local to the transaction).
     * Losing it in a crash only brings rows back that were published already: they go out
     * again and consumers de-duplicate. The events themselves were recorded by the service's
     * durable commit. Rows another relay has deleted meanwhile are skipped (the DELETE waits
     * for that relay's commit, then finds them gone). The batch is an array computed once
     * (an InitPlan), so the plan is an index lookup per row whatever the statistics say (an
     * IN (subquery) was planned as a semi join that rescans the subquery per row). */
    if (db->ops->engine == DK_DB_POSTGRES)
        snprintf(
            o->select_sql, sizeof o->select_sql,
            "DELETE FROM %s WHERE seq = ANY(ARRAY(SELECT seq FROM %s ORDER BY seq LIMIT $1)) AND "
            "(SELECT set_config('synchronous_commit', 'off', true)) = 'off' RETURNING seq, "
            "type, payload, created_at, traceparent",
            table, table);
    else
        snprintf(o->select_sql, sizeof o->select_sql,
                 "SELECT seq, type, payload, created_at, traceparent FROM %s ORDER BY seq LIMIT $1",
                 table);
    if (db->ops->engine == DK_DB_POSTGRES)
        snprintf(o->delete_sql, sizeof o->delete_sql,
                 "DELETE FROM %s WHERE seq = ANY(CAST($1 AS BIGINT[])) AND (SELECT "
                 "set_config('synchronous_commit', 'off', true)) = 'off'",
                 table);
    else
        snprintf(o->delete_sql, sizeof o->delete_sql,
                 "DELETE FROM %s WHERE seq IN (SELECT CAST(value AS INTEGER) FROM json_each($1))",
                 table);
    o->interval_ms = interval_ms > 0 ? interval_ms : 1000;
    pthread_mutex_init(&o->lock, NULL);
    dk_cond_init_monotonic(&o->cond); /* waits immune to clock steps */
    o->kicked = true;
    if (pthread_create(&o->thread, NULL, dk_outbox_loop, o) != 0) {
        dk_log_error("cannot start the outbox relay for %s", table);
        pthread_cond_destroy(&o->cond);
        pthread_mutex_destroy(&o->lock);
        dk_free(o);
        return NULL;
    }
    return o;
}

void dk_outbox_kick(dk_outbox *o)
{
    if (!o)
        return;
    pthread_mutex_lock(&o->lock);
    o->kicked = true;
    pthread_cond_signal(&o->cond);
    pthread_mutex_unlock(&o->lock);
}

void dk_outbox_stop(dk_outbox *o)
{
    if (!o)
        return;
    pthread_mutex_lock(&o->lock);
    o->stop = true;
    pthread_cond_signal(&o->cond);
    pthread_mutex_unlock(&o->lock);
    pthread_join(o->thread, NULL);
    (void)dk_outbox_pass(o);
    pthread_cond_destroy(&o->cond);
    pthread_mutex_destroy(&o->lock);
    dk_free(o);
}
