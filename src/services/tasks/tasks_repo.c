#include "services/tasks/tasks_repo.h"

#include <string.h>

#include "core/arena.h"
#include "core/json.h"
#include "core/log.h"
#include "core/outbox.h"
#include "core/sql.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "ports/task_events.h"
#include "core/banned.h"

/* Indexes: every list arm leads with an equality on owner_id or assignee_id followed by the
 * sort key and id, so a page is an index range scan whatever the sort. A due date sorts as
 * COALESCE(due_at, ±max) so that tasks without one come last in either direction. */
#define TASKS_SORT_INDEXES(who, where, table)                                                      \
    "CREATE INDEX tasks_" who "_created_idx ON " table " (" who "_id, created_at, id)" where ";\n" \
    "CREATE INDEX tasks_" who "_updated_idx ON " table " (" who "_id, updated_at, id)" where ";\n" \
    "CREATE INDEX tasks_" who "_priority_idx ON " table " (" who "_id, priority, id)" where ";\n"  \
    "CREATE INDEX tasks_" who "_due_asc_idx ON " table " (" who                                    \
    "_id, (COALESCE(due_at, 9223372036854775807)), id)" where ";\n"                                \
    "CREATE INDEX tasks_" who "_due_desc_idx ON " table " (" who                                   \
    "_id, (COALESCE(due_at, -9223372036854775807)), id)" where ";\n"                               \
    "CREATE INDEX tasks_" who "_status_idx ON " table " (" who "_id, status)" where ";\n"

#define TASKS_ASSIGNED " WHERE assignee_id IS NOT NULL"

const dk_migration dk_tasks_migrations[DK_TASKS_NMIGRATIONS] = {
    {1, "tasks",
     /* SQLite: seq aliases the rowid, so the FTS5 index keeps pointing at the right rows even
      * through VACUUM (an implicit rowid may be renumbered). */
     "CREATE TABLE tasks (\n"
     "  seq INTEGER PRIMARY KEY,\n"
     "  id TEXT NOT NULL UNIQUE,\n"
     "  owner_id TEXT NOT NULL,\n"
     "  assignee_id TEXT,\n"
     "  title TEXT NOT NULL,\n"
     "  description TEXT NOT NULL DEFAULT '',\n"
     "  status TEXT NOT NULL DEFAULT 'todo' CHECK (status IN ('todo', 'in_progress', 'done')),\n"
     "  priority INTEGER NOT NULL DEFAULT 1 CHECK (priority BETWEEN 0 AND 3),\n"
     "  due_at INTEGER,\n"
     "  labels TEXT NOT NULL DEFAULT '[]',\n"
     "  created_at INTEGER NOT NULL,\n"
     "  updated_at INTEGER NOT NULL,\n"
     "  completed_at INTEGER,\n"
     "  version INTEGER NOT NULL DEFAULT 1\n"
     ");\n" TASKS_SORT_INDEXES("owner", "", "tasks") TASKS_SORT_INDEXES(
         "assignee", TASKS_ASSIGNED,
         "tasks") "CREATE INDEX tasks_due_idx ON "
                  "tasks (due_at) WHERE due_at IS "
                  "NOT NULL;\n"
                  "CREATE VIRTUAL TABLE tasks_fts USING fts5(title, description, content='tasks', "
                  "content_rowid='rowid', tokenize='porter unicode61 remove_diacritics 2');\n"
                  "CREATE TRIGGER tasks_fts_insert AFTER INSERT ON tasks BEGIN\n"
                  "  INSERT INTO tasks_fts (rowid, title, description) "
                  "VALUES (new.rowid, new.title, new.description);\n"
                  "END;\n"
                  "CREATE TRIGGER tasks_fts_delete AFTER DELETE ON tasks BEGIN\n"
                  "  INSERT INTO tasks_fts (tasks_fts, rowid, title, description) "
                  "VALUES ('delete', old.rowid, old.title, old.description);\n"
                  "END;\n"
                  "CREATE TRIGGER tasks_fts_update AFTER UPDATE OF title, description ON tasks\n"
                  "WHEN old.title IS NOT new.title OR old.description IS NOT new.description "
                  "BEGIN\n"
                  "  INSERT INTO tasks_fts (tasks_fts, rowid, title, description) "
                  "VALUES ('delete', old.rowid, old.title, old.description);\n"
                  "  INSERT INTO tasks_fts (rowid, title, description) "
                  "VALUES (new.rowid, new.title, new.description);\n"
                  "END;\n",
     /* PostgreSQL: ids compare bytewise (COLLATE "C") whatever the database's locale, so the
      * keyset order is the UUIDv7 order. */
     "CREATE TABLE tasks.tasks (\n"
     "  id TEXT COLLATE \"C\" PRIMARY KEY,\n"
     "  owner_id TEXT NOT NULL,\n"
     "  assignee_id TEXT,\n"
     "  title TEXT NOT NULL,\n"
     "  description TEXT NOT NULL DEFAULT '',\n"
     "  status TEXT NOT NULL DEFAULT 'todo' CHECK (status IN ('todo', 'in_progress', 'done')),\n"
     "  priority INTEGER NOT NULL DEFAULT 1 CHECK (priority BETWEEN 0 AND 3),\n"
     "  due_at BIGINT,\n"
     "  labels TEXT[] NOT NULL DEFAULT '{}',\n"
     "  created_at BIGINT NOT NULL,\n"
     "  updated_at BIGINT NOT NULL,\n"
     "  completed_at BIGINT,\n"
     "  version BIGINT NOT NULL DEFAULT 1,\n"
     "  search TSVECTOR GENERATED ALWAYS AS (\n"
     "    setweight(to_tsvector('english', title), 'A') ||\n"
     "    setweight(to_tsvector('english', description), 'B')) STORED\n"
     ");\n" TASKS_SORT_INDEXES("owner", "", "tasks.tasks") TASKS_SORT_INDEXES(
         "assignee", TASKS_ASSIGNED,
         "tasks.tasks") "CREATE INDEX tasks_due_idx ON tasks.tasks (due_at) "
                        "WHERE due_at IS NOT NULL;\n"
                        "CREATE INDEX tasks_labels_idx ON tasks.tasks USING GIN (labels);\n"
                        "CREATE INDEX tasks_search_idx ON tasks.tasks USING GIN (search);\n"},
    {2, "outbox", DK_OUTBOX_SQLITE_DDL("tasks"), DK_OUTBOX_POSTGRES_DDL("tasks")},
};

/* ---------- rows ---------- */

static const char *tasks_cols(const tasks_repo *r)
{
    return r->db->ops->engine == DK_DB_POSTGRES ? TASKS_COLS_POSTGRES : TASKS_COLS_SQLITE;
}

static bool tasks_opt_int(const dk_db_rows *rows, int row, int col, int64_t *ret)
{
    if (!dk_db_value(rows, row, col))
        return false;
    *ret = dk_sql_get_int(rows, row, col);
    return true;
}

static dk_status tasks_row(dk_arena *a, const dk_db_rows *rows, int row, tasks_task *t)
{
    memset(t, 0, sizeof *t);
    t->id = dk_db_value(rows, row, 0);
    t->title = dk_db_value(rows, row, 1);
    t->description = dk_db_value(rows, row, 2);
    t->status = tasks_status_parse(dk_db_value(rows, row, 3));
    t->priority = (int)dk_sql_get_int(rows, row, 4);
    t->has_due = tasks_opt_int(rows, row, 5, &t->due_at);
    t->owner_id = dk_db_value(rows, row, 7);
    t->assignee_id = dk_db_value(rows, row, 8);
    t->created_at = dk_sql_get_int(rows, row, 9);
    t->updated_at = dk_sql_get_int(rows, row, 10);
    t->has_completed = tasks_opt_int(rows, row, 11, &t->completed_at);
    t->version = dk_sql_get_int(rows, row, 12);
    if (!t->id || !t->title || !t->description || !t->owner_id || t->status < 0 ||
        !tasks_labels_from_json(a, dk_db_value(rows, row, 6), &t->labels, &t->nlabels)) {
        dk_log_error("tasks: a stored row is malformed");
        return DK_E_INTERNAL;
    }
    return DK_OK;
}

static const char *tasks_opt_param(dk_arena *a, bool has, int64_t v)
{
    return has ? dk_sql_int(a, v) : NULL;
}

/* The labels parameter as the engine stores it. */
static const char *tasks_labels_sql(const tasks_repo *r)
{
    return r->db->ops->engine == DK_DB_POSTGRES
               ? "ARRAY(SELECT e.v FROM json_array_elements_text(CAST($9 AS JSON)) WITH "
                 "ORDINALITY AS e(v, n) ORDER BY e.n)"
               : "$9";
}

/* ---------- events ---------- */

static json_t *tasks_opt_ms(bool has, int64_t v)
{
    return has ? json_integer(v) : json_null();
}

static json_t *tasks_event_task(const tasks_task *t)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:o,s:o,s:I,s:I}", "id", t->id, "title", t->title, "status",
                     tasks_status_name(t->status), "owner_id", t->owner_id, "assignee_id",
                     dk_json_str_or_null(t->assignee_id), "due_at",
                     tasks_opt_ms(t->has_due, t->due_at), "updated_at", (json_int_t)t->updated_at,
                     "version", (json_int_t)t->version);
}

/* Records the event of a change in tx; before is NULL except for task.updated. */
static dk_status tasks_event(dk_tx *tx, dk_arena *a, const char *type, const char *actor,
                             const tasks_task *t, const tasks_task *before)
{
    json_t *ev =
        dk_json_own(a, json_pack("{s:s,s:o}", "actor_id", actor, "task", tasks_event_task(t)));
    if (before)
        json_object_set_new(ev, "before",
                            json_pack("{s:s,s:o,s:o}", "status", tasks_status_name(before->status),
                                      "assignee_id", dk_json_str_or_null(before->assignee_id),
                                      "due_at", tasks_opt_ms(before->has_due, before->due_at)));
    return dk_outbox_add(tx, a, TASKS_OUTBOX, type, ev);
}

/* ---------- statements ---------- */

dk_status tasks_repo_create(const tasks_repo *r, dk_arena *a, const tasks_task *t)
{
    const char *p[] = {t->id,
                       t->owner_id,
                       t->assignee_id,
                       t->title,
                       t->description,
                       tasks_status_name(t->status),
                       dk_sql_int(a, t->priority),
                       tasks_opt_param(a, t->has_due, t->due_at),
                       tasks_labels_json(a, t->labels, t->nlabels),
                       dk_sql_int(a, t->created_at),
                       tasks_opt_param(a, t->has_completed, t->completed_at)};
    const char *sql = dk_arena_printf(
        a,
        "INSERT INTO tasks (id, owner_id, assignee_id, title, description, status, priority, "
        "due_at, labels, created_at, updated_at, completed_at, version) VALUES ($1, $2, $3, $4, "
        "$5, $6, CAST($7 AS INTEGER), CAST($8 AS BIGINT), %s, CAST($10 AS BIGINT), "
        "CAST($10 AS BIGINT), CAST($11 AS BIGINT), 1)",
        tasks_labels_sql(r));
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    st = dk_tx_query(&tx, a, sql, 11, p, NULL);
    if (st == DK_OK)
        st = tasks_event(&tx, a, DK_EVENT_TASK_CREATED, t->owner_id, t, NULL);
    return dk_tx_end(&tx, st);
}

dk_status tasks_repo_get(const tasks_repo *r, dk_arena *a, const char *id, tasks_task *ret)
{
    const char *p[] = {id};
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(
        r->db, a, dk_arena_printf(a, "SELECT %s FROM tasks t WHERE t.id = $1", tasks_cols(r)), 1, p,
        &rows);
    if (st != DK_OK)
        return st;
    if (rows->nrows == 0)
        return DK_E_NOT_FOUND;
    return tasks_row(a, rows, 0, ret);
}

/* Reads the task inside tx, locking its row on PostgreSQL (SQLite's BEGIN IMMEDIATE already
 * holds the write lock). */
static dk_status tasks_get_locked(const tasks_repo *r, dk_tx *tx, dk_arena *a, const char *id,
                                  tasks_task *ret)
{
    const char *p[] = {id};
    dk_db_rows *rows = NULL;
    bool pg = r->db->ops->engine == DK_DB_POSTGRES;
    dk_status st = dk_tx_query(tx, a,
                               dk_arena_printf(a, "SELECT %s FROM tasks t WHERE t.id = $1%s",
                                               tasks_cols(r), pg ? " FOR UPDATE" : ""),
                               1, p, &rows);
    if (st != DK_OK)
        return st;
    if (rows->nrows == 0)
        return DK_E_NOT_FOUND;
    return tasks_row(a, rows, 0, ret);
}

static bool tasks_visible(const tasks_task *t, const char *caller)
{
    return strcmp(t->owner_id, caller) == 0 ||
           (t->assignee_id && strcmp(t->assignee_id, caller) == 0);
}

dk_status tasks_repo_patch(const tasks_repo *r, dk_arena *a, const char *id, const char *caller,
                           const tasks_changes *ch, const char *if_match, tasks_task *ret)
{
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    tasks_task cur, next;
    st = tasks_get_locked(r, &tx, a, id, &cur);
    if (st == DK_OK && !tasks_visible(&cur, caller))
        st = DK_E_NOT_FOUND;
    bool changed = false;
    if (st == DK_OK)
        st = tasks_apply(&cur, ch, caller, dk_now_ms(), &next, &changed);
    if (st == DK_OK && !tasks_if_match(if_match, cur.version))
        st = DK_E_PRECONDITION;
    if (st != DK_OK) {
        dk_tx_abort(&tx);
        return st;
    }
    if (!changed) {
        dk_tx_abort(&tx); /* nothing to write: the version stays */
        *ret = cur;
        return DK_OK;
    }
    const char *p[] = {id,
                       next.title,
                       next.description,
                       tasks_status_name(next.status),
                       dk_sql_int(a, next.priority),
                       tasks_opt_param(a, next.has_due, next.due_at),
                       next.assignee_id,
                       dk_sql_int(a, next.updated_at),
                       tasks_labels_json(a, next.labels, next.nlabels),
                       tasks_opt_param(a, next.has_completed, next.completed_at),
                       dk_sql_int(a, next.version),
                       dk_sql_int(a, cur.version)};
    const char *sql = dk_arena_printf(
        a,
        "UPDATE tasks SET title = $2, description = $3, status = $4, priority = CAST($5 AS "
        "INTEGER), due_at = CAST($6 AS BIGINT), assignee_id = $7, updated_at = CAST($8 AS "
        "BIGINT), labels = %s, completed_at = CAST($10 AS BIGINT), version = CAST($11 AS BIGINT) "
        "WHERE id = $1 AND version = CAST($12 AS BIGINT)",
        tasks_labels_sql(r));
    dk_db_rows *rows = NULL;
    st = dk_tx_query(&tx, a, sql, 12, p, &rows);
    if (st == DK_OK && rows->affected != 1) {
        dk_log_error("tasks: a locked row changed under an update");
        st = DK_E_INTERNAL;
    }
    if (st == DK_OK)
        st = tasks_event(&tx, a, DK_EVENT_TASK_UPDATED, caller, &next, &cur);
    st = dk_tx_end(&tx, st);
    if (st == DK_OK)
        *ret = next;
    return st;
}

dk_status tasks_repo_delete(const tasks_repo *r, dk_arena *a, const char *id, const char *caller,
                            const char *if_match)
{
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    tasks_task cur;
    st = tasks_get_locked(r, &tx, a, id, &cur);
    if (st == DK_OK && !tasks_visible(&cur, caller))
        st = DK_E_NOT_FOUND;
    if (st == DK_OK && strcmp(cur.owner_id, caller) != 0)
        st = DK_E_FORBIDDEN;
    if (st == DK_OK && !tasks_if_match(if_match, cur.version))
        st = DK_E_PRECONDITION;
    if (st != DK_OK) {
        dk_tx_abort(&tx);
        return st;
    }
    const char *p[] = {id};
    st = dk_tx_query(&tx, a, "DELETE FROM tasks WHERE id = $1", 1, p, NULL);
    if (st == DK_OK)
        st = tasks_event(&tx, a, DK_EVENT_TASK_DELETED, caller, &cur, NULL);
    return dk_tx_end(&tx, st);
}

dk_status tasks_repo_list(const tasks_repo *r, dk_arena *a, const tasks_list_query *q,
                          tasks_task **ret, int *ret_n, char **ret_next)
{
    tasks_sql s;
    tasks_query_build(a, r->db->ops->engine, q, &s);
    *ret_next = NULL;
    if (s.nothing) {
        *ret = dk_arena_alloc(a, sizeof **ret);
        *ret_n = 0;
        return DK_OK;
    }
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(r->db, a, s.sql, s.nparams, s.params, &rows);
    if (st != DK_OK)
        return st;
    int n = rows->nrows > q->limit ? q->limit : rows->nrows;
    tasks_task *items = dk_arena_alloc(a, sizeof *items * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) {
        st = tasks_row(a, rows, i, &items[i]);
        if (st != DK_OK)
            return st;
    }
    if (rows->nrows > q->limit && n > 0) {
        int64_t sk = 0;
        const char *skv = dk_db_value(rows, n - 1, TASKS_NCOLS);
        if (!skv || !dk_parse_i64(skv, INT64_MIN, INT64_MAX, &sk)) {
            dk_log_error("tasks: a sort key is not an integer");
            return DK_E_INTERNAL;
        }
        *ret_next = tasks_query_next_cursor(a, r->cursor_key, q, sk, items[n - 1].id);
        if (!*ret_next)
            return DK_E_INTERNAL;
    }
    *ret = items;
    *ret_n = n;
    return DK_OK;
}

dk_status tasks_repo_forget_user(const tasks_repo *r, dk_arena *a, const char *user_id)
{
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    const char *p[] = {user_id, dk_sql_int(a, dk_now_ms())};
    st = dk_tx_query(&tx, a, "DELETE FROM tasks WHERE owner_id = $1", 1, p, NULL);
    if (st == DK_OK)
        st = dk_tx_query(&tx, a,
                         "UPDATE tasks SET assignee_id = NULL, version = version + 1, "
                         "updated_at = CASE WHEN updated_at > CAST($2 AS BIGINT) THEN updated_at "
                         "ELSE CAST($2 AS BIGINT) END WHERE assignee_id = $1",
                         2, p, NULL);
    return dk_tx_end(&tx, st);
}
