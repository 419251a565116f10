#include "services/notifications/notifications_repo.h"

#include <string.h>

#include "core/arena.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/log.h"
#include "core/sql.h"
#include "core/timeutil.h"
#include "core/trace.h"
#include "core/banned.h"

/* Tables are named alike on both engines; PostgreSQL puts them in the service's schema (the
 * migration runs with search_path set to it). seq gives the creation order that lists, cursors
 * and the event stream follow. */
#define NT_TABLES(seq, boolean, big)                                                               \
    "CREATE TABLE notifications_items (\n"                                                         \
    "  seq " seq ",\n"                                                                             \
    "  id TEXT NOT NULL UNIQUE,\n"                                                                 \
    "  user_id TEXT NOT NULL,\n"                                                                   \
    "  type TEXT NOT NULL,\n"                                                                      \
    "  task_id TEXT,\n"                                                                            \
    "  actor_id TEXT,\n"                                                                           \
    "  message TEXT NOT NULL,\n"                                                                   \
    "  created_at " big " NOT NULL,\n"                                                             \
    "  read_at " big ",\n"                                                                         \
    "  dedup_key TEXT NOT NULL UNIQUE\n"                                                           \
    ");\n"                                                                                         \
    "CREATE INDEX notifications_items_user_idx ON notifications_items (user_id, seq);\n"           \
    "CREATE INDEX notifications_items_unread_idx ON notifications_items (user_id, seq) "           \
    "WHERE read_at IS NULL;\n"                                                                     \
    "CREATE TABLE notifications_prefs (\n"                                                         \
    "  user_id TEXT PRIMARY KEY,\n"                                                                \
    "  email_enabled " boolean " NOT NULL DEFAULT FALSE,\n"                                        \
    "  webhook_url TEXT,\n"                                                                        \
    "  webhook_secret TEXT,\n"                                                                     \
    "  updated_at " big " NOT NULL\n"                                                              \
    ");\n"                                                                                         \
    "CREATE TABLE notifications_deliveries (\n"                                                    \
    "  id TEXT PRIMARY KEY,\n"                                                                     \
    "  notification_id TEXT NOT NULL,\n"                                                           \
    "  user_id TEXT NOT NULL,\n"                                                                   \
    "  channel TEXT NOT NULL CHECK (channel IN ('webhook', 'email')),\n"                           \
    "  target TEXT NOT NULL,\n"                                                                    \
    "  body TEXT NOT NULL,\n"                                                                      \
    "  state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'dead')),\n"                        \
    "  attempts INTEGER NOT NULL DEFAULT 0,\n"                                                     \
    "  next_attempt_at " big " NOT NULL,\n"                                                        \
    "  last_error TEXT,\n"                                                                         \
    "  created_at " big " NOT NULL,\n"                                                             \
    "  updated_at " big " NOT NULL\n"                                                              \
    ");\n"                                                                                         \
    "CREATE INDEX notifications_deliveries_due_idx ON notifications_deliveries "                   \
    "(state, next_attempt_at);\n"                                                                  \
    "CREATE INDEX notifications_deliveries_user_idx ON notifications_deliveries (user_id);\n"      \
    "CREATE TABLE notifications_due (\n"                                                           \
    "  task_id TEXT PRIMARY KEY,\n"                                                                \
    "  owner_id TEXT NOT NULL,\n"                                                                  \
    "  assignee_id TEXT,\n"                                                                        \
    "  title TEXT NOT NULL,\n"                                                                     \
    "  status TEXT NOT NULL,\n"                                                                    \
    "  due_at " big ",\n"                                                                          \
    "  due_set_at " big ",\n"                                                                      \
    "  notified_due_at " big ",\n"                                                                 \
    "  version " big " NOT NULL,\n"                                                                \
    "  changed_at " big " NOT NULL\n"                                                              \
    ");\n"                                                                                         \
    "CREATE INDEX notifications_due_at_idx ON notifications_due (due_at) "                         \
    "WHERE due_at IS NOT NULL;\n"                                                                  \
    "CREATE INDEX notifications_due_owner_idx ON notifications_due (owner_id);\n"                  \
    "CREATE INDEX notifications_due_assignee_idx ON notifications_due (assignee_id);\n"

const dk_migration dk_notifications_migrations[DK_NOTIFICATIONS_NMIGRATIONS] = {
    {1, "notifications", NT_TABLES("INTEGER PRIMARY KEY AUTOINCREMENT", "BOOLEAN", "INTEGER"),
     NT_TABLES("BIGSERIAL PRIMARY KEY", "BOOLEAN", "BIGINT")},
    /* the W3C traceparent of the request that caused a delivery: every attempt, retries
     * included, is traced in that request's trace */
    {2, "deliveries_traceparent",
     "ALTER TABLE notifications_deliveries ADD COLUMN traceparent TEXT;",
     "ALTER TABLE notifications_deliveries ADD COLUMN traceparent TEXT;"},
};

#define NT_COLS "seq, id, user_id, type, task_id, actor_id, message, created_at, read_at"

static bool repo_pg(const notifications_repo *r)
{
    return r->db->ops->engine == DK_DB_POSTGRES;
}

static void repo_row(const dk_db_rows *rows, int i, notifications_item *n)
{
    n->seq = dk_sql_get_int(rows, i, 0);
    n->id = dk_db_value(rows, i, 1);
    n->user_id = dk_db_value(rows, i, 2);
    n->type = dk_db_value(rows, i, 3);
    n->task_id = dk_db_value(rows, i, 4);
    n->actor_id = dk_db_value(rows, i, 5);
    n->message = dk_db_value(rows, i, 6);
    n->created_at = dk_sql_get_int(rows, i, 7);
    n->has_read = dk_db_value(rows, i, 8) != NULL;
    n->read_at = n->has_read ? dk_sql_get_int(rows, i, 8) : 0;
}

static void repo_rows(dk_arena *a, const dk_db_rows *rows, notifications_item **ret, int *ret_n)
{
    notifications_item *items =
        dk_arena_alloc(a, sizeof *items * (size_t)(rows->nrows ? rows->nrows : 1));
    for (int i = 0; i < rows->nrows; i++)
        repo_row(rows, i, &items[i]);
    *ret = items;
    *ret_n = rows->nrows;
}

static json_t *repo_time_or_null(bool has, int64_t ms)
{
    if (!has)
        return json_null();
    char t[DK_RFC3339_LEN];
    dk_time_format(ms, t);
    return json_string(t);
}

json_t *notifications_item_json(const notifications_item *n)
{
    return json_pack("{s:s,s:s,s:o,s:o,s:s,s:o,s:o}", "id", n->id, "type", n->type, "task_id",
                     dk_json_str_or_null(n->task_id), "actor_id", dk_json_str_or_null(n->actor_id),
                     "message", n->message, "created_at", repo_time_or_null(true, n->created_at),
                     "read_at", repo_time_or_null(n->has_read, n->read_at));
}

/* Queues one delivery of n on channel (inside tx). */
static dk_status repo_queue_delivery(dk_tx *tx, dk_arena *a, const notifications_item *n,
                                     const char *channel, const char *target)
{
    char id[DK_UUID_LEN];
    dk_uuid7(id);
    json_t *body = dk_json_own(a, json_pack("{s:s,s:s,s:o,s:o}", "id", id, "type", n->type,
                                            "created_at", repo_time_or_null(true, n->created_at),
                                            "notification", notifications_item_json(n)));
    const char *now = dk_sql_int(a, n->created_at);
    char tp[DK_TRACEPARENT_LEN];
    const char *p[] = {id,         n->id,
                       n->user_id, channel,
                       target,     dk_json_render(a, body, NULL),
                       now,        dk_trace_current_traceparent(tp) ? tp : NULL};
    return dk_tx_query(tx, a,
                       "INSERT INTO notifications_deliveries (id, notification_id, user_id, "
                       "channel, target, body, state, attempts, next_attempt_at, created_at, "
                       "updated_at, traceparent) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, "
                       "CAST($7 AS BIGINT), CAST($7 AS BIGINT), CAST($7 AS BIGINT), $8)",
                       8, p, NULL);
}

dk_status notifications_repo_create(const notifications_repo *r, dk_arena *a, notifications_item *n,
                                    const char *dedup_key, bool *ret_created)
{
    char *id = dk_arena_alloc(a, DK_UUID_LEN);
    dk_uuid7(id);
    n->id = id;
    n->created_at = dk_now_ms();
    n->has_read = false;
    *ret_created = false;
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    const char *p[] = {id,
                       n->user_id,
                       n->type,
                       n->task_id,
                       n->actor_id,
                       n->message,
                       dk_sql_int(a, n->created_at),
                       dedup_key};
    dk_db_rows *rows = NULL;
    st = dk_tx_query(&tx, a,
                     "INSERT INTO notifications_items (id, user_id, type, task_id, actor_id, "
                     "message, created_at, dedup_key) VALUES ($1, $2, $3, $4, $5, $6, CAST($7 AS "
                     "BIGINT), $8) ON CONFLICT (dedup_key) DO NOTHING RETURNING seq",
                     8, p, &rows);
    if (st != DK_OK || rows->nrows == 0) {
        dk_tx_abort(&tx); /* seen before (or failed): nothing more to do */
        return st;
    }
    n->seq = dk_sql_get_int(rows, 0, 0);
    const char *up[] = {n->user_id};
    dk_db_rows *pr = NULL;
    st = dk_tx_query(
        &tx, a, "SELECT email_enabled, webhook_url FROM notifications_prefs WHERE user_id = $1", 1,
        up, &pr);
    if (st == DK_OK && pr->nrows == 1) {
        if (dk_db_value(pr, 0, 1))
            st = repo_queue_delivery(&tx, a, n, "webhook", dk_db_value(pr, 0, 1));
        if (st == DK_OK && r->email_on && dk_db_bool(dk_db_value(pr, 0, 0)))
            st = repo_queue_delivery(&tx, a, n, "email", "");
    }
    st = dk_tx_end(&tx, st);
    if (st == DK_OK)
        *ret_created = true;
    return st;
}

dk_status notifications_repo_list(const notifications_repo *r, dk_arena *a, const char *user,
                                  bool unread_only, int64_t before, int limit,
                                  notifications_item **ret, int *ret_n)
{
    const char *p[] = {user, dk_sql_int(a, before > 0 ? before : INT64_MAX),
                       dk_sql_int(a, limit + 1)};
    const char *sql = unread_only ? "SELECT " NT_COLS " FROM notifications_items WHERE user_id = "
                                    "$1 AND read_at IS NULL AND seq < CAST($2 AS BIGINT) ORDER "
                                    "BY seq DESC LIMIT CAST($3 AS BIGINT)"
                                  : "SELECT " NT_COLS " FROM notifications_items WHERE user_id = "
                                    "$1 AND seq < CAST($2 AS BIGINT) ORDER BY seq DESC LIMIT "
                                    "CAST($3 AS BIGINT)";
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(r->db, a, sql, 3, p, &rows);
    if (st == DK_OK)
        repo_rows(a, rows, ret, ret_n);
    return st;
}

dk_status notifications_repo_after(const notifications_repo *r, dk_arena *a, const char *user,
                                   int64_t after, int limit, notifications_item **ret, int *ret_n)
{
    const char *p[] = {user, dk_sql_int(a, after), dk_sql_int(a, limit)};
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(r->db, a,
                          "SELECT " NT_COLS " FROM notifications_items WHERE user_id = $1 AND "
                          "seq > CAST($2 AS BIGINT) ORDER BY seq LIMIT CAST($3 AS BIGINT)",
                          3, p, &rows);
    if (st == DK_OK)
        repo_rows(a, rows, ret, ret_n);
    return st;
}

dk_status notifications_repo_seq_of(const notifications_repo *r, dk_arena *a, const char *user,
                                    const char *id, int64_t *ret)
{
    const char *p[] = {user, id};
    dk_db_rows *rows = NULL;
    dk_status st =
        dk_sql(r->db, a, "SELECT seq FROM notifications_items WHERE user_id = $1 AND id = $2", 2, p,
               &rows);
    if (st != DK_OK)
        return st;
    if (rows->nrows == 0)
        return DK_E_NOT_FOUND;
    *ret = dk_sql_get_int(rows, 0, 0);
    return DK_OK;
}

dk_status notifications_repo_last_seq(const notifications_repo *r, dk_arena *a, const char *user,
                                      int64_t *ret)
{
    const char *p[] = {user};
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(r->db, a,
                          "SELECT seq FROM notifications_items WHERE user_id = $1 ORDER BY seq "
                          "DESC LIMIT 1",
                          1, p, &rows);
    if (st == DK_OK)
        *ret = rows->nrows ? dk_sql_get_int(rows, 0, 0) : 0;
    return st;
}

dk_status notifications_repo_read(const notifications_repo *r, dk_arena *a, const char *user,
                                  const char *id)
{
    const char *p[] = {user, id, dk_sql_int(a, dk_now_ms())};
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(r->db, a,
                          "UPDATE notifications_items SET read_at = COALESCE(read_at, CAST($3 AS "
                          "BIGINT)) WHERE user_id = $1 AND id = $2",
                          3, p, &rows);
    if (st == DK_OK && rows->affected == 0)
        st = DK_E_NOT_FOUND;
    return st;
}

dk_status notifications_repo_read_all(const notifications_repo *r, dk_arena *a, const char *user)
{
    const char *p[] = {user, dk_sql_int(a, dk_now_ms())};
    return dk_sql(r->db, a,
                  "UPDATE notifications_items SET read_at = CAST($2 AS BIGINT) WHERE user_id = $1 "
                  "AND read_at IS NULL",
                  2, p, NULL);
}

dk_status notifications_repo_prefs_get(const notifications_repo *r, dk_arena *a, const char *user,
                                       notifications_user_prefs *ret)
{
    const char *p[] = {user};
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(r->db, a,
                          "SELECT email_enabled, webhook_url, webhook_secret FROM "
                          "notifications_prefs WHERE user_id = $1",
                          1, p, &rows);
    if (st != DK_OK)
        return st;
    memset(ret, 0, sizeof *ret);
    if (rows->nrows == 1) {
        ret->email_enabled = dk_db_bool(dk_db_value(rows, 0, 0));
        ret->webhook_url = dk_db_value(rows, 0, 1);
        ret->webhook_secret = dk_db_value(rows, 0, 2);
    }
    return DK_OK;
}

dk_status notifications_repo_prefs_put(const notifications_repo *r, dk_arena *a, const char *user,
                                       const notifications_user_prefs *pr)
{
    const char *p[] = {user, pr->email_enabled ? "true" : "false", pr->webhook_url,
                       pr->webhook_secret, dk_sql_int(a, dk_now_ms())};
    return dk_sql(r->db, a,
                  repo_pg(r) ? "INSERT INTO notifications_prefs (user_id, email_enabled, "
                               "webhook_url, webhook_secret, updated_at) VALUES ($1, CAST($2 AS "
                               "BOOLEAN), $3, $4, CAST($5 AS BIGINT)) ON CONFLICT (user_id) DO "
                               "UPDATE SET email_enabled = excluded.email_enabled, webhook_url = "
                               "excluded.webhook_url, webhook_secret = excluded.webhook_secret, "
                               "updated_at = excluded.updated_at"
                             : "INSERT INTO notifications_prefs (user_id, email_enabled, "
                               "webhook_url, webhook_secret, updated_at) VALUES ($1, $2 = 'true', "
                               "$3, $4, CAST($5 AS BIGINT)) ON CONFLICT (user_id) DO UPDATE SET "
                               "email_enabled = excluded.email_enabled, webhook_url = "
                               "excluded.webhook_url, webhook_secret = excluded.webhook_secret, "
                               "updated_at = excluded.updated_at",
                  5, p, NULL);
}

dk_status notifications_repo_forget_user(const notifications_repo *r, dk_arena *a, const char *user)
{
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    const char *p[] = {user};
    static const char *const stmts[] = {
        "DELETE FROM notifications_deliveries WHERE user_id = $1",
        "DELETE FROM notifications_items WHERE user_id = $1",
        "DELETE FROM notifications_prefs WHERE user_id = $1",
        "DELETE FROM notifications_due WHERE owner_id = $1",
        "UPDATE notifications_due SET assignee_id = NULL WHERE assignee_id = $1",
    };
    for (size_t i = 0; st == DK_OK && i < sizeof stmts / sizeof stmts[0]; i++)
        st = dk_tx_query(&tx, a, stmts[i], 1, p, NULL);
    return dk_tx_end(&tx, st);
}

dk_status notifications_repo_due_put(const notifications_repo *r, dk_arena *a,
                                     const notifications_due_task *d)
{
    const char *now = dk_sql_int(a, dk_now_ms());
    const char *p[] = {d->task_id,
                       d->owner_id,
                       d->assignee_id,
                       d->title,
                       d->status,
                       d->has_due ? dk_sql_int(a, d->due_at) : NULL,
                       now,
                       dk_sql_int(a, d->version)};
    /* due_set_at: when the stored due date last changed; a date already past then is not
     * "coming due" and is never notified. */
    return dk_sql(r->db, a,
                  "INSERT INTO notifications_due (task_id, owner_id, assignee_id, title, status, "
                  "due_at, due_set_at, notified_due_at, version, changed_at) VALUES ($1, $2, $3, "
                  "$4, $5, CAST($6 AS BIGINT), CAST($7 AS BIGINT), NULL, CAST($8 AS BIGINT), "
                  "CAST($7 AS BIGINT)) ON CONFLICT (task_id) DO UPDATE SET owner_id = "
                  "excluded.owner_id, assignee_id = excluded.assignee_id, title = excluded.title, "
                  "status = excluded.status, due_set_at = CASE WHEN "
                  "COALESCE(notifications_due.due_at, -1) <> COALESCE(excluded.due_at, -1) THEN "
                  "excluded.due_set_at ELSE notifications_due.due_set_at END, due_at = "
                  "excluded.due_at, version = excluded.version, changed_at = excluded.changed_at "
                  "WHERE notifications_due.version <= excluded.version",
                  8, p, NULL);
}

dk_status notifications_repo_due_scan(const notifications_repo *r, dk_arena *a, int64_t horizon,
                                      int limit, notifications_due_task **ret, int *ret_n)
{
    const char *p[] = {dk_sql_int(a, horizon), dk_sql_int(a, limit)};
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(r->db, a,
                          "SELECT task_id, owner_id, assignee_id, title, status, due_at, version "
                          "FROM notifications_due WHERE due_at IS NOT NULL AND due_at <= CAST($1 "
                          "AS BIGINT) AND status IN ('todo', 'in_progress') AND due_at > "
                          "due_set_at AND (notified_due_at IS NULL OR notified_due_at <> due_at) "
                          "ORDER BY due_at LIMIT CAST($2 AS BIGINT)",
                          2, p, &rows);
    if (st != DK_OK)
        return st;
    notifications_due_task *items =
        dk_arena_alloc(a, sizeof *items * (size_t)(rows->nrows ? rows->nrows : 1));
    for (int i = 0; i < rows->nrows; i++) {
        notifications_due_task *d = &items[i];
        d->task_id = dk_db_value(rows, i, 0);
        d->owner_id = dk_db_value(rows, i, 1);
        d->assignee_id = dk_db_value(rows, i, 2);
        d->title = dk_db_value(rows, i, 3);
        d->status = dk_db_value(rows, i, 4);
        d->has_due = true;
        d->due_at = dk_sql_get_int(rows, i, 5);
        d->version = dk_sql_get_int(rows, i, 6);
    }
    *ret = items;
    *ret_n = rows->nrows;
    return DK_OK;
}

dk_status notifications_repo_due_mark(const notifications_repo *r, dk_arena *a, const char *task_id,
                                      int64_t due_at)
{
    const char *p[] = {task_id, dk_sql_int(a, due_at)};
    return dk_sql(r->db, a,
                  "UPDATE notifications_due SET notified_due_at = CAST($2 AS BIGINT) WHERE "
                  "task_id = $1",
                  2, p, NULL);
}

dk_status notifications_repo_due_prune(const notifications_repo *r, dk_arena *a, int64_t cutoff)
{
    const char *p[] = {dk_sql_int(a, cutoff)};
    return dk_sql(r->db, a,
                  "DELETE FROM notifications_due WHERE status = 'deleted' AND changed_at < "
                  "CAST($1 AS BIGINT)",
                  1, p, NULL);
}
