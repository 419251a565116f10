#include "services/tasks/tasks_repo.h"

#include <string.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/batch.h"
#include "core/ids.h"
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

#define TASKS_ASSIGNED   " WHERE assignee_id IS NOT NULL"
#define TASKS_IN_PROJECT " WHERE project_id IS NOT NULL"

/* Projects, their members, comments and activity (migration 4). The list of a project's tasks
 * (and each arm of a member's list) leads with project_id, like the owner and assignee arms.
 * A role is stored as its rank (viewer 0 .. owner 3); a project name is unique per owner as
 * its lower-cased key. ids compare bytewise on PostgreSQL (collate), as tasks' ids do. */
#define TASKS_PROJECTS_DDL(big, collate, seq, table)                                               \
    "ALTER TABLE " table " ADD COLUMN project_id TEXT" collate ";\n" TASKS_SORT_INDEXES(           \
        "project", TASKS_IN_PROJECT,                                                               \
        table) "CREATE TABLE tasks_projects (\n"                                                   \
               "  id TEXT" collate " PRIMARY KEY,\n"                                               \
               "  owner_id TEXT NOT NULL,\n"                                                       \
               "  name TEXT NOT NULL,\n"                                                           \
               "  name_key TEXT" collate " NOT NULL,\n"                                            \
               "  description TEXT NOT NULL DEFAULT '',\n"                                         \
               "  created_at " big " NOT NULL,\n"                                                  \
               "  updated_at " big " NOT NULL,\n"                                                  \
               "  version " big " NOT NULL DEFAULT 1,\n"                                           \
               "  UNIQUE (owner_id, name_key)\n"                                                   \
               ");\n"                                                                              \
               "CREATE TABLE tasks_project_members (\n"                                            \
               "  project_id TEXT" collate " NOT NULL,\n"                                          \
               "  user_id TEXT" collate " NOT NULL,\n"                                             \
               "  role INTEGER NOT NULL CHECK (role BETWEEN 0 AND 3),\n"                           \
               "  added_at " big " NOT NULL,\n"                                                    \
               "  PRIMARY KEY (project_id, user_id)\n"                                             \
               ");\n"                                                                              \
               "CREATE INDEX tasks_project_members_user_idx ON tasks_project_members (user_id, "   \
               "project_id);\n"                                                                    \
               "CREATE TABLE tasks_comments (\n"                                                   \
               "  seq " seq ",\n"                                                                  \
               "  id TEXT" collate " NOT NULL UNIQUE,\n"                                           \
               "  task_id TEXT" collate " NOT NULL,\n"                                             \
               "  author_id TEXT,\n"                                                               \
               "  body TEXT NOT NULL,\n"                                                           \
               "  created_at " big " NOT NULL,\n"                                                  \
               "  updated_at " big " NOT NULL\n"                                                   \
               ");\n"                                                                              \
               "CREATE INDEX tasks_comments_task_idx ON tasks_comments (task_id, seq);\n"          \
               "CREATE INDEX tasks_comments_author_idx ON tasks_comments (author_id);\n"           \
               "CREATE TABLE tasks_activity (\n"                                                   \
               "  seq " seq ",\n"                                                                  \
               "  id TEXT" collate " NOT NULL UNIQUE,\n"                                           \
               "  task_id TEXT" collate " NOT NULL,\n"                                             \
               "  event_id TEXT NOT NULL,\n"                                                       \
               "  actor_id TEXT,\n"                                                                \
               "  action TEXT NOT NULL,\n"                                                         \
               "  field TEXT,\n"                                                                   \
               "  old_value TEXT,\n"                                                               \
               "  new_value TEXT,\n"                                                               \
               "  comment_id TEXT,\n"                                                              \
               "  created_at " big " NOT NULL\n"                                                   \
               ");\n"                                                                              \
               "CREATE INDEX tasks_activity_task_idx ON tasks_activity (task_id, seq);\n"          \
               "CREATE INDEX tasks_activity_actor_idx ON tasks_activity (actor_id);\n"

/* Search that fits the caller (migration 6): a search reads the caller's visible tasks first
 * (the arms of tasks_visible_sql: own personal tasks, personal tasks assigned to them, each of
 * their projects), not every task that holds a common word.
 * SQLite: the FTS5 document gets a third column, `scope`, with one token per arm the row
 * belongs to — o<owner>x, a<assignee>x, p<project>x (the id's hex digits; the final x ends no
 * English suffix, so the porter stemmer leaves the token whole) — and an arm's MATCH is
 * `{scope} : "o<me>x" AND {title description} : (words)`: FTS5 walks the caller's doclist and
 * seeks in the word's. The index reads its text through the view tasks_fts_src (external
 * content): 'rebuild' converts an existing database, and no second copy of the text is kept.
 * PostgreSQL: one GIN index over (owner_id, assignee_id, project_id, search) with btree_gin,
 * which each arm's equality plus the @@ condition can use; it replaces the GIN over search
 * alone (no statement searches without one of those equalities). When the role may not create
 * the extension (btree_gin is trusted: CREATE on the database suffices), the GIN over search
 * alone stays, with a warning in PostgreSQL's log; docs/design/search.md says how to upgrade. */
#define TASKS_FTS_SCOPE(r)                                                                         \
    "'o' || replace(" r ".owner_id, '-', '') || 'x' || COALESCE(' a' || replace(" r                \
    ".assignee_id, '-', '') || 'x', '') || COALESCE(' p' || replace(" r                            \
    ".project_id, '-', '') || 'x', '')"
#define TASKS_FTS_VALUES(r) r ".seq, " r ".title, " r ".description, " TASKS_FTS_SCOPE(r)

static const char tasks_search_scope_sqlite[] =
    "DROP TRIGGER tasks_fts_insert;\n"
    "DROP TRIGGER tasks_fts_delete;\n"
    "DROP TRIGGER tasks_fts_update;\n"
    "DROP TABLE tasks_fts;\n"
    "CREATE VIEW tasks_fts_src AS SELECT seq, title, description, " TASKS_FTS_SCOPE(
        "tasks") " AS scope FROM tasks;\n"
                 "CREATE VIRTUAL TABLE tasks_fts USING fts5(title, description, scope, "
                 "content='tasks_fts_src', content_rowid='seq', "
                 "tokenize='porter unicode61 remove_diacritics 2');\n"
                 "INSERT INTO tasks_fts (tasks_fts) VALUES ('rebuild');\n"
                 "CREATE TRIGGER tasks_fts_insert AFTER INSERT ON tasks BEGIN\n"
                 "  INSERT INTO tasks_fts (rowid, title, description, scope) "
                 "VALUES (" TASKS_FTS_VALUES(
                     "new") ");\n"
                            "END;\n"
                            "CREATE TRIGGER tasks_fts_delete AFTER DELETE ON tasks BEGIN\n"
                            "  INSERT INTO tasks_fts (tasks_fts, rowid, title, description, scope) "
                            "VALUES ('delete', " TASKS_FTS_VALUES(
                                "old") ");\n"
                                       "END;\n"
                                       "CREATE TRIGGER tasks_fts_update AFTER UPDATE OF title, "
                                       "description, owner_id, "
                                       "assignee_id, project_id ON tasks\n"
                                       "WHEN old.title IS NOT new.title OR old.description IS NOT "
                                       "new.description OR "
                                       "old.owner_id IS NOT new.owner_id OR old.assignee_id IS NOT "
                                       "new.assignee_id OR "
                                       "old.project_id IS NOT new.project_id BEGIN\n"
                                       "  INSERT INTO tasks_fts (tasks_fts, rowid, title, "
                                       "description, scope) "
                                       "VALUES ('delete', " TASKS_FTS_VALUES(
                                           "old") ");\n"
                                                  "  INSERT INTO tasks_fts (rowid, title, "
                                                  "description, scope) "
                                                  "VALUES (" TASKS_FTS_VALUES("new") ");\n"
                                                                                     "END;\n";

static const char tasks_search_scope_postgres[] =
    "DO $$\n"
    "BEGIN\n"
    "  BEGIN\n"
    "    CREATE EXTENSION IF NOT EXISTS btree_gin;\n"
    "  EXCEPTION WHEN insufficient_privilege OR undefined_file OR feature_not_supported THEN\n"
    "    RAISE WARNING 'docket tasks migration 6: cannot create extension btree_gin (%); search "
    "keeps the GIN index over the text alone (see docs/design/search.md)', SQLERRM;\n"
    "  END;\n"
    "  IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'btree_gin') THEN\n"
    "    CREATE INDEX tasks_scope_search_idx ON tasks.tasks\n"
    "      USING GIN (owner_id, assignee_id, project_id, search);\n"
    "    DROP INDEX tasks.tasks_search_idx;\n"
    "  END IF;\n"
    "END\n"
    "$$;\n";

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
    /* 3 was taken for a short while by a migration that was reverted (0af08ad) before any
     * release; it is not reused, so no database can take one for the other. */
    {4, "projects", TASKS_PROJECTS_DDL("INTEGER", "", "INTEGER PRIMARY KEY AUTOINCREMENT", "tasks"),
     TASKS_PROJECTS_DDL("BIGINT", " COLLATE \"C\"", "BIGSERIAL PRIMARY KEY", "tasks")},
    {5, "outbox_traceparent", DK_OUTBOX_TRACE_DDL("tasks"), DK_OUTBOX_TRACE_DDL("tasks")},
    {6, "search_scope", tasks_search_scope_sqlite, tasks_search_scope_postgres},
    /* 7: cheaper writes on PostgreSQL (SQLite keeps its FTS5 triggers,
     * which already skip status-only updates). The search vector stops being a generated
     * column, which PostgreSQL 15 recomputes on every UPDATE (a status change re-ran
     * to_tsvector over the whole text): a trigger computes it on INSERT and only when the
     * title or the description really changes (the WHEN clause is tested without calling the
     * function). Same expression as before, so existing vectors and their index stay valid.
     * The (who, status) indexes go: no list reads them (a status filter runs along the sort
     * index of its arm), and each cost an insertion per write. */
    {7, "tasks_cheaper_writes", NULL,
     "ALTER TABLE tasks ALTER COLUMN search DROP EXPRESSION;\n"
     "CREATE FUNCTION tasks_search_vector() RETURNS trigger LANGUAGE plpgsql AS $f$\n"
     "BEGIN\n"
     "  NEW.search := setweight(to_tsvector('english', NEW.title), 'A') ||\n"
     "                setweight(to_tsvector('english', NEW.description), 'B');\n"
     "  RETURN NEW;\n"
     "END\n"
     "$f$;\n"
     "CREATE TRIGGER tasks_search_insert BEFORE INSERT ON tasks FOR EACH ROW\n"
     "  EXECUTE FUNCTION tasks_search_vector();\n"
     "CREATE TRIGGER tasks_search_update BEFORE UPDATE OF title, description ON tasks\n"
     "  FOR EACH ROW WHEN (OLD.title IS DISTINCT FROM NEW.title OR\n"
     "                     OLD.description IS DISTINCT FROM NEW.description)\n"
     "  EXECUTE FUNCTION tasks_search_vector();\n"
     "DROP INDEX tasks_owner_status_idx, tasks_assignee_status_idx, tasks_project_status_idx;\n"},
    /* 8: a status change becomes a HOT update on PostgreSQL (nothing on SQLite, which updates
     * only the indexes of the columns that change). An UPDATE that changes no indexed column
     * and finds room on its page writes no index entry at all; updated_at was the one indexed
     * column every change sets, through the three (who, updated_at, id) sort indexes. Without
     * them, sort=updated_at sorts the caller's tasks in memory (top-N): a fraction of a
     * millisecond for a few hundred tasks, tens of milliseconds for a 100,000-task account
     * (docs/design/measurements.md). fillfactor 85 leaves room on new pages for the new
     * versions (existing pages get it as they are pruned and vacuumed). The activity id's
     * UNIQUE index goes too: no statement reads an entry by its id (UUIDv7, made here). */
    {8, "tasks_hot_updates", NULL,
     "DROP INDEX tasks_owner_updated_idx, tasks_assignee_updated_idx, tasks_project_updated_idx;\n"
     "ALTER TABLE tasks SET (fillfactor = 85);\n"
     "ALTER TABLE tasks_activity DROP CONSTRAINT tasks_activity_id_key;\n"},
    /* 9: the (who, status) indexes go on SQLite too, as on PostgreSQL in 7: no list reads them
     * (EXPLAIN QUERY PLAN of a status-filtered list, every arm: the sort index of its arm, with
     * or without them), and each cost an insertion per create, 1.3 of a create's 28 WAL
     * frames (docs/design/sqlite-writes.md). */
    {9, "tasks_sqlite_status_indexes",
     "DROP INDEX tasks_owner_status_idx;\n"
     "DROP INDEX tasks_assignee_status_idx;\n"
     "DROP INDEX tasks_project_status_idx;\n",
     NULL},
    /* 10: cheaper writes on PostgreSQL.
     * - The search vector of a new task is computed by the INSERT itself, through
     *   tasks_search_of (an IMMUTABLE SQL function, which the planner inlines: plain expression
     *   evaluation). The PL/pgSQL trigger's call cost about as much as the two to_tsvector in
     *   it (it sets its assignment up anew in every transaction, and each request is one):
     *   ~150 k instructions a create (docs/design/measurements.md); it now runs only for an
     *   INSERT that brings no vector.
     *   One definition of the vector: the trigger's function calls tasks_search_of too
     *   (schema-qualified: it must not depend on the search path of whoever writes, e.g. a
     *   restore).
     * - The BEFORE UPDATE trigger goes: any BEFORE UPDATE row trigger, whatever its column
     *   list and WHEN clause, makes PostgreSQL lock the old row first (GetTupleForTrigger: a
     *   heap lock and its WAL record on every UPDATE of a task). The one UPDATE that writes the
     *   text (tasks_write) sets search itself: CASE WHEN the text is unchanged THEN search
     *   ELSE tasks_search_of(...) END.
     * - The primary key on tasks_activity.seq goes: every history row (one per create, one per
     *   changed field of a patch) paid an insertion into it, always on its rightmost page, and
     *   no statement reads an entry by seq alone (a page of a task's history reads (task_id,
     *   seq), which stays). seq still comes from its sequence, unique by construction. */
    {10, "tasks_cheaper_creates", NULL,
     "CREATE FUNCTION tasks_search_of(title TEXT, description TEXT) RETURNS TSVECTOR\n"
     "  LANGUAGE sql IMMUTABLE PARALLEL SAFE AS\n"
     "  $f$SELECT setweight(to_tsvector('english', title), 'A') ||\n"
     "            setweight(to_tsvector('english', description), 'B')$f$;\n"
     "CREATE OR REPLACE FUNCTION tasks_search_vector() RETURNS trigger LANGUAGE plpgsql AS $f$\n"
     "BEGIN\n"
     "  NEW.search := tasks.tasks_search_of(NEW.title, NEW.description);\n"
     "  RETURN NEW;\n"
     "END\n"
     "$f$;\n"
     "DROP TRIGGER tasks_search_insert ON tasks;\n"
     "CREATE TRIGGER tasks_search_insert BEFORE INSERT ON tasks FOR EACH ROW\n"
     "  WHEN (NEW.search IS NULL) EXECUTE FUNCTION tasks_search_vector();\n"
     "DROP TRIGGER tasks_search_update ON tasks;\n"
     "ALTER TABLE tasks_activity DROP CONSTRAINT tasks_activity_pkey;\n"},
    /* 11: a search reads the text index's pending list whole (PostgreSQL only; SQLite's FTS5
     * has none). GIN buffers new entries in a list that every scan of the index reads in
     * full and that is merged into the index when it outgrows gin_pending_list_limit (4 MB
     * by default) or at VACUUM: with writes going on, each arm of a search read up to 512
     * pages and tested every pending task against its keys (148 pending pages: 157 buffers
     * and 1.5 ms for the owner arm, against 9 buffers and 0.12 ms merged). 256 kB bounds that
     * at 32 pages; the inserts that merge pay it in smaller, more frequent steps, for the
     * same WAL (docs/design/search.md, "The pending list"). tasks_search_idx exists only
     * where migration 6 could not create btree_gin. */
    {11, "tasks_search_pending_list", NULL,
     "ALTER INDEX IF EXISTS tasks_scope_search_idx SET (gin_pending_list_limit = 256);\n"
     "ALTER INDEX IF EXISTS tasks_search_idx SET (gin_pending_list_limit = 256);\n"},
};

/* ---------- rows ---------- */

static bool tasks_pg(const tasks_repo *r)
{
    return r->db->ops->engine == DK_DB_POSTGRES;
}

static const char *tasks_cols(const tasks_repo *r)
{
    return tasks_pg(r) ? TASKS_COLS_POSTGRES : TASKS_COLS_SQLITE;
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
    t->project_id = dk_db_value(rows, row, 13);
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

/* The labels parameter $n (a JSON array) as PostgreSQL stores it: a text[] in its order. */
static const char *tasks_labels_sql_pg(dk_arena *a, int n)
{
    return dk_arena_printf(a,
                           "ARRAY(SELECT e.v FROM json_array_elements_text(CAST($%d AS JSON)) WITH "
                           "ORDINALITY AS e(v, n) ORDER BY e.n)",
                           n);
}

/* The labels parameter $n as the engine stores it. */
static const char *tasks_labels_sql(const tasks_repo *r, dk_arena *a, int n)
{
    return tasks_pg(r) ? tasks_labels_sql_pg(a, n) : dk_arena_printf(a, "$%d", n);
}

/* ---------- events and activity ---------- */

static json_t *tasks_opt_ms(bool has, int64_t v)
{
    return has ? json_integer(v) : json_null();
}

json_t *tasks_repo_event_task(const tasks_task *t)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:o,s:o,s:o,s:I,s:I}", "id", t->id, "title", t->title,
                     "status", tasks_status_name(t->status), "owner_id", t->owner_id, "assignee_id",
                     dk_json_str_or_null(t->assignee_id), "project_id",
                     dk_json_str_or_null(t->project_id), "due_at",
                     tasks_opt_ms(t->has_due, t->due_at), "updated_at", (json_int_t)t->updated_at,
                     "version", (json_int_t)t->version);
}

static dk_status tasks_activity_add(dk_tx *tx, dk_arena *a, const char *task_id,
                                    const char *event_id, const char *actor, const char *action,
                                    const char *field, const json_t *old_v, const json_t *new_v,
                                    const char *comment_id, int64_t at)
{
    char id[DK_UUID_LEN];
    dk_uuid7(id);
    const char *p[] = {dk_arena_strdup(a, id),
                       task_id,
                       event_id,
                       actor,
                       action,
                       field,
                       old_v ? dk_json_render(a, old_v, NULL) : NULL,
                       new_v ? dk_json_render(a, new_v, NULL) : NULL,
                       comment_id,
                       dk_sql_int(a, at)};
    return dk_tx_query(
        tx, a,
        "INSERT INTO tasks_activity (id, task_id, event_id, actor_id, action, field, "
        "old_value, new_value, comment_id, created_at) VALUES ($1, $2, $3, $4, $5, "
        "$6, $7, $8, $9, CAST($10 AS BIGINT))",
        10, p, NULL);
}

dk_status tasks_repo_record(dk_tx *tx, dk_arena *a, const char *type, json_t *ev)
{
    dk_status st = dk_outbox_add(tx, a, TASKS_OUTBOX, type, ev);
    if (st != DK_OK)
        return st;
    /* the task's history, read off the event just recorded */
    const char *event_id = json_string_value(json_object_get(ev, "id"));
    int64_t at = (int64_t)json_integer_value(json_object_get(ev, "occurred_at"));
    const char *actor = json_string_value(json_object_get(ev, "actor_id"));
    const char *task_id = json_string_value(json_object_get(json_object_get(ev, "task"), "id"));
    if (!task_id || !event_id)
        return DK_OK; /* not a task's event */
    if (strcmp(type, DK_EVENT_TASK_CREATED) == 0)
        return tasks_activity_add(tx, a, task_id, event_id, actor, "created", NULL, NULL, NULL,
                                  NULL, at);
    if (strcmp(type, DK_EVENT_TASK_COMMENTED) == 0)
        return tasks_activity_add(
            tx, a, task_id, event_id, actor, "commented", NULL, NULL, NULL,
            json_string_value(json_object_get(json_object_get(ev, "comment"), "id")), at);
    if (strcmp(type, DK_EVENT_TASK_UPDATED) != 0)
        return DK_OK;
    const char *field;
    json_t *change;
    json_object_foreach(json_object_get(ev, "changes"), field, change)
    {
        st = tasks_activity_add(tx, a, task_id, event_id, actor, "updated", field,
                                json_object_get(change, "old"), json_object_get(change, "new"),
                                NULL, at);
        if (st != DK_OK)
            return st;
    }
    return DK_OK;
}

/* The event of a change; before is NULL except for task.updated. owner_gone: the task's owner
 * has left its project (they are told nothing about it any more). Owned by a. */
static json_t *tasks_event_json(dk_arena *a, const char *actor, const tasks_task *t,
                                const tasks_task *before, bool owner_gone)
{
    json_t *ev =
        dk_json_own(a, json_pack("{s:s,s:o}", "actor_id", actor, "task", tasks_repo_event_task(t)));
    if (owner_gone)
        json_object_set_new(ev, "owner_can_see", json_false());
    if (before) {
        json_object_set_new(ev, "before",
                            json_pack("{s:s,s:o,s:o}", "status", tasks_status_name(before->status),
                                      "assignee_id", dk_json_str_or_null(before->assignee_id),
                                      "due_at", tasks_opt_ms(before->has_due, before->due_at)));
        json_object_set_new(ev, "changes", tasks_changes_json(before, t));
    }
    return ev;
}

/* Records the event of a change in tx (see tasks_event_json). */
static dk_status tasks_event_as(dk_tx *tx, dk_arena *a, const char *type, const char *actor,
                                const tasks_task *t, const tasks_task *before, bool owner_gone)
{
    return tasks_repo_record(tx, a, type, tasks_event_json(a, actor, t, before, owner_gone));
}

static dk_status tasks_event(dk_tx *tx, dk_arena *a, const char *type, const char *actor,
                             const tasks_task *t, const tasks_task *before)
{
    return tasks_event_as(tx, a, type, actor, t, before, false);
}

/* ---------- membership ---------- */

dk_status tasks_repo_role(const tasks_repo *r, dk_tx *tx, dk_arena *a, const char *project_id,
                          const char *user_id, bool lock, int *ret_role)
{
    const char *p[] = {project_id, user_id};
    dk_db_rows *rows = NULL;
    dk_status st = dk_tx_query(tx, a,
                               lock && tasks_pg(r)
                                   ? "SELECT role FROM tasks_project_members WHERE project_id = $1 "
                                     "AND user_id = $2 FOR SHARE"
                                   : "SELECT role FROM tasks_project_members WHERE project_id = $1 "
                                     "AND user_id = $2",
                               2, p, &rows);
    if (st != DK_OK)
        return st;
    *ret_role = rows->nrows > 0 ? (int)dk_sql_get_int(rows, 0, 0) : PROJECT_ROLE_NONE;
    return DK_OK;
}

dk_status tasks_repo_lock_project(const tasks_repo *r, dk_tx *tx, dk_arena *a,
                                  const char *project_id)
{
    if (!tasks_pg(r) || !project_id)
        return DK_OK; /* SQLite: the transaction holds the database's write lock already */
    const char *p[] = {project_id};
    return dk_tx_query(tx, a, "SELECT 1 FROM tasks_projects WHERE id = $1 FOR SHARE", 1, p, NULL);
}

dk_status tasks_repo_lock_project_of(const tasks_repo *r, dk_tx *tx, dk_arena *a,
                                     const char *task_id)
{
    if (!tasks_pg(r))
        return DK_OK;
    const char *p[] = {task_id};
    dk_db_rows *rows = NULL;
    dk_status st = dk_tx_query(tx, a, "SELECT project_id FROM tasks WHERE id = $1", 1, p, &rows);
    if (st == DK_OK && rows->nrows > 0)
        st = tasks_repo_lock_project(r, tx, a, dk_db_value(rows, 0, 0));
    return st;
}

/* The project rules of a task as it will be stored: its creator or changer may edit the
 * project (editor), its assignee is a member. */
static dk_status tasks_check_project(const tasks_repo *r, dk_tx *tx, dk_arena *a,
                                     const tasks_task *t, const char *caller, bool check_caller,
                                     bool check_assignee, const char **ret_field)
{
    if (!t->project_id)
        return DK_OK;
    int role = PROJECT_ROLE_NONE;
    dk_status st;
    if (check_caller) {
        st = tasks_repo_lock_project(r, tx, a, t->project_id);
        if (st == DK_OK)
            st = tasks_repo_role(r, tx, a, t->project_id, caller, true, &role);
        if (st != DK_OK)
            return st;
        if (role < PROJECT_ROLE_EDITOR) {
            *ret_field = "project_id";
            return DK_E_VALIDATION;
        }
    }
    if (check_assignee && t->assignee_id) {
        st = tasks_repo_role(r, tx, a, t->project_id, t->assignee_id, true, &role);
        if (st != DK_OK)
            return st;
        if (role == PROJECT_ROLE_NONE) {
            *ret_field = "assignee_id";
            return DK_E_VALIDATION;
        }
    }
    return DK_OK;
}

/* ---------- statements ---------- */

/* PostgreSQL, a task outside any project: nothing to read first, so the task, its event and
 * its history entry are written by one statement (one round trip and one implicit
 * transaction, where BEGIN, three INSERTs and COMMIT took five), and the creates that arrive
 * together share it (core/batch.h): n rows in one statement cost PostgreSQL about half as much
 * per row as n statements, most of a statement's cost being its own start, end and commit
 * (docs/design/write-batching.md). Each create has TASKS_CREATE_NPARAMS parameters: the
 * task's 12 ($1..$12 as in tasks_repo_create), its outbox row's 5 (id, type, payload,
 * created_at, traceparent) and its history entry's id. */
#define TASKS_CREATE_NPARAMS (12 + DK_OUTBOX_NPARAMS + 1)
/* At most 16 creates a statement (past that the saving per row is small and the statement
 * long), and two statements at once: one executes while the other waits for its commit to
 * reach the disk (docs/design/write-batching.md). */
#define TASKS_CREATE_GROUP_MAX      16
#define TASKS_CREATE_GROUPS_RUNNING 2

/* The statement for n creates, the k-th create's parameters from $(k * TASKS_CREATE_NPARAMS + 1). */
static const char *tasks_create_personal_sql(dk_arena *a, int n)
{
    dk_sb t = {0}, o = {0}, h = {0};
    for (int k = 0; k < n; k++) {
        int b = k * TASKS_CREATE_NPARAMS;
        const char *sep = k ? ", " : "";
        dk_sb_printf(&t,
                     "%s($%d, $%d, $%d, $%d, $%d, $%d, CAST($%d AS INTEGER), CAST($%d AS BIGINT), "
                     "%s, CAST($%d AS BIGINT), CAST($%d AS BIGINT), CAST($%d AS BIGINT), 1, $%d, "
                     "tasks_search_of($%d, $%d))",
                     sep, b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7, b + 8,
                     tasks_labels_sql_pg(a, b + 9), b + 10, b + 10, b + 11, b + 12, b + 4, b + 5);
        dk_sb_printf(&o, "%s($%d, $%d, $%d, CAST($%d AS BIGINT), $%d)", sep, b + 13, b + 14, b + 15,
                     b + 16, b + 17);
        dk_sb_printf(&h, "%s($%d, $%d, $%d, $%d, 'created', CAST($%d AS BIGINT))", sep, b + 18,
                     b + 1, b + 13, b + 2, b + 16);
    }
    return dk_arena_printf(
        a,
        "WITH t AS (INSERT INTO tasks (id, owner_id, assignee_id, title, description, status, "
        "priority, due_at, labels, created_at, updated_at, completed_at, version, project_id, "
        "search) VALUES %s), o AS (INSERT INTO " TASKS_OUTBOX " (id, type, payload, created_at, "
        "traceparent) VALUES %s) INSERT INTO tasks_activity (id, task_id, event_id, actor_id, "
        "action, created_at) VALUES %s",
        dk_sb_take(&t, a), dk_sb_take(&o, a), dk_sb_take(&h, a));
}

/* dk_batch_run_fn: n creates in one statement. When it fails for something one row could have
 * caused (not for a lost connection or a timeout, where the outcome may be unknown and every
 * create gets the error), each create is tried alone, so that one bad row fails only its own
 * request. */
static void tasks_create_group(void *ctx, dk_batch_job **jobs, int n)
{
    const tasks_repo *r = ctx;
    dk_arena *a = dk_arena_new();
    const char **p = dk_arena_alloc(a, sizeof(const char *) * TASKS_CREATE_NPARAMS * (size_t)n);
    for (int i = 0; i < n; i++)
        memcpy(p + i * TASKS_CREATE_NPARAMS, jobs[i]->arg,
               sizeof(const char *) * TASKS_CREATE_NPARAMS);
    dk_status st =
        dk_sql(r->db, a, tasks_create_personal_sql(a, n), n * TASKS_CREATE_NPARAMS, p, NULL);
    if (st != DK_OK && st != DK_E_UNAVAILABLE && n > 1) {
        const char *one = tasks_create_personal_sql(a, 1);
        for (int i = 0; i < n; i++)
            jobs[i]->status = dk_sql(r->db, a, one, TASKS_CREATE_NPARAMS, jobs[i]->arg, NULL);
    } else {
        for (int i = 0; i < n; i++)
            jobs[i]->status = st;
    }
    dk_arena_free(a);
}

/* The parameters of a personal create's statement (TASKS_CREATE_NPARAMS, in a). */
static const char **tasks_create_personal_params(dk_arena *a, const char *const task_params[12],
                                                 const tasks_task *t)
{
    json_t *ev = dk_json_own(
        a, json_pack("{s:s,s:o}", "actor_id", t->owner_id, "task", tasks_repo_event_task(t)));
    const char **p = dk_arena_alloc(a, sizeof(const char *) * TASKS_CREATE_NPARAMS);
    memcpy(p, task_params, sizeof(const char *) * 12);
    dk_outbox_event(a, DK_EVENT_TASK_CREATED, ev, p + 12);
    char aid[DK_UUID_LEN];
    dk_uuid7(aid);
    p[12 + DK_OUTBOX_NPARAMS] = dk_arena_strdup(a, aid);
    return p;
}

/* The task's own 12 parameters ($1..$12), in a. */
static const char **tasks_create_params(dk_arena *a, const tasks_task *t)
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
                       tasks_opt_param(a, t->has_completed, t->completed_at),
                       t->project_id};
    const char **ret = dk_arena_alloc(a, sizeof p);
    memcpy(ret, p, sizeof p);
    return ret;
}

dk_status tasks_repo_create(const tasks_repo *r, dk_arena *a, const tasks_task *t,
                            const char **ret_field)
{
    const char **p = tasks_create_params(a, t);
    if (tasks_pg(r) && !t->project_id) {
        const char **pp = tasks_create_personal_params(a, p, t);
        return dk_sql(r->db, a, tasks_create_personal_sql(a, 1), TASKS_CREATE_NPARAMS, pp, NULL);
    }
    /* PostgreSQL: the search vector with the row (migration 10: no trigger call) */
    const char *sql = dk_arena_printf(
        a,
        "INSERT INTO tasks (id, owner_id, assignee_id, title, description, status, priority, "
        "due_at, labels, created_at, updated_at, completed_at, version, project_id%s) VALUES ($1, "
        "$2, $3, $4, $5, $6, CAST($7 AS INTEGER), CAST($8 AS BIGINT), %s, CAST($10 AS BIGINT), "
        "CAST($10 AS BIGINT), CAST($11 AS BIGINT), 1, $12%s)",
        tasks_pg(r) ? ", search" : "", tasks_labels_sql(r, a, 9),
        tasks_pg(r) ? ", tasks_search_of($4, $5)" : "");
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    st = tasks_check_project(r, &tx, a, t, t->owner_id, true, true, ret_field);
    if (st == DK_OK)
        st = dk_tx_query(&tx, a, sql, 12, p, NULL);
    if (st == DK_OK)
        st = tasks_event(&tx, a, DK_EVENT_TASK_CREATED, t->owner_id, t, NULL);
    return dk_tx_end(&tx, st);
}

bool tasks_repo_create_start(const tasks_repo *r, dk_arena *a, const tasks_task *t,
                             dk_batch_job *later, dk_status *ret_status, const char **ret_field)
{
    if (!tasks_pg(r) || t->project_id || !r->creates) {
        *ret_status = tasks_repo_create(r, a, t, ret_field);
        return true;
    }
    later->arg = tasks_create_personal_params(a, tasks_create_params(a, t), t);
    later->status = DK_E_INTERNAL;
    if (!dk_batch_run_or_queue(r->creates, later))
        return false;
    *ret_status = later->status;
    return true;
}

/* The SQL of tasks_read_visible, locking the row or not. */
static const char *tasks_read_sql(const tasks_repo *r, dk_arena *a, bool lock)
{
    return dk_arena_printf(
        a,
        "SELECT %s, (SELECT m.role FROM tasks_project_members m WHERE m.project_id = t.project_id "
        "AND m.user_id = $2) AS role FROM tasks t WHERE t.id = $1 AND %s%s",
        tasks_cols(r), tasks_visible_sql(a, 2), lock && tasks_pg(r) ? " FOR UPDATE OF t" : "");
}

/* Patches: as many a group and at once as creates (below, tasks_patch_group). */
#define TASKS_PATCH_GROUP_MAX      16
#define TASKS_PATCH_GROUPS_RUNNING 2
static void tasks_patch_group(void *ctx, dk_batch_job **jobs, int n);

void tasks_repo_prepare(tasks_repo *r)
{
    dk_arena *a = dk_arena_new();
    for (int lock = 0; lock < 2; lock++) {
        const char *sql = tasks_read_sql(r, a, lock);
        if (strlen(sql) < sizeof r->read_sql[lock])
            memcpy(r->read_sql[lock], sql, strlen(sql) + 1);
        else
            r->read_sql[lock][0] = '\0';
    }
    dk_arena_free(a);
    if (tasks_pg(r)) {
        r->creates = dk_batch_new(tasks_create_group, r, TASKS_CREATE_GROUP_MAX,
                                  TASKS_CREATE_GROUPS_RUNNING);
        r->patches =
            dk_batch_new(tasks_patch_group, r, TASKS_PATCH_GROUP_MAX, TASKS_PATCH_GROUPS_RUNNING);
    }
}

void tasks_repo_release(tasks_repo *r)
{
    dk_batch_free(r->creates);
    dk_batch_free(r->patches);
    r->creates = r->patches = NULL;
}

/* The task by id with the caller's role in its project, if the caller may see it (the rule of
 * tasks_visible_sql); in tx (locking the row) or on a connection of its own. */
static dk_status tasks_read_visible(const tasks_repo *r, dk_tx *tx, dk_arena *a, const char *id,
                                    const char *caller, tasks_task *ret, int *ret_role)
{
    const char *p[] = {id, caller};
    dk_db_rows *rows = NULL;
    bool lock = tx != NULL;
    const char *sql = r->read_sql[lock][0] ? r->read_sql[lock] : tasks_read_sql(r, a, lock);
    dk_status st = tx ? dk_tx_query(tx, a, sql, 2, p, &rows) : dk_sql(r->db, a, sql, 2, p, &rows);
    if (st != DK_OK)
        return st;
    if (rows->nrows == 0)
        return DK_E_NOT_FOUND;
    st = tasks_row(a, rows, 0, ret);
    if (st == DK_OK && ret_role)
        *ret_role = dk_db_value(rows, 0, TASKS_NCOLS) ? (int)dk_sql_get_int(rows, 0, TASKS_NCOLS)
                                                      : PROJECT_ROLE_NONE;
    return st;
}

dk_status tasks_repo_get(const tasks_repo *r, dk_arena *a, const char *id, const char *caller,
                         tasks_task *ret, int *ret_role)
{
    return tasks_read_visible(r, NULL, a, id, caller, ret, ret_role);
}

/* What the caller may do with a task they can see. */
static void tasks_rights(const tasks_task *t, const char *caller, int role, bool *may_edit,
                         bool *may_status)
{
    bool assignee = t->assignee_id && strcmp(t->assignee_id, caller) == 0;
    *may_edit = t->project_id ? role >= PROJECT_ROLE_EDITOR : strcmp(t->owner_id, caller) == 0;
    *may_status = *may_edit || assignee;
}

/* PostgreSQL: the UPDATE of tasks_write (14 parameters), its task.updated event (ev, whose
 * "changes" has nchanges fields) and one history entry per changed field, as one statement:
 * one round trip where three or more were. Both inserts read the UPDATE's RETURNING, so a row
 * that did not match writes nothing, and the count says so. tx NULL (the row was read without
 * a lock): nothing is run; the rows go into *keep, written by tasks_patch_run (alone or in a
 * group: one statement for both) only if the version is still the one read. */
#define TASKS_WRITE_ONE_MAX 12

/* A personal task's write kept for a group (tasks_patch_group): tasks_write's 14 parameters,
 * the outbox row's, the actor and (id, field, old, new) per history entry. */
typedef struct tasks_patch_write {
    const char *row[14];
    const char *ob[DK_OUTBOX_NPARAMS];
    const char *actor;
    int nh;
    const char *hist[4 * TASKS_WRITE_ONE_MAX];
} tasks_patch_write;

static dk_status tasks_write_one(dk_tx *tx, dk_arena *a, const char *update_sql,
                                 const char *const update_params[14], json_t *ev, const char *actor,
                                 size_t nchanges, bool last, tasks_patch_write *keep)
{
    const char *ob[DK_OUTBOX_NPARAMS];
    dk_outbox_event(a, DK_EVENT_TASK_UPDATED, ev, ob);
    enum { NFIXED = 14 + DK_OUTBOX_NPARAMS + 1 };
    const char *p[NFIXED + 4 * TASKS_WRITE_ONE_MAX];
    memcpy(p, update_params, sizeof(const char *) * 14);
    memcpy(p + 14, ob, sizeof ob);
    p[NFIXED - 1] = actor;
    /* $15.. the outbox row (id, type, payload, created_at, traceparent), $20 the actor, then
     * (id, field, old, new) per history entry, in the event's order */
    dk_sb values = {0};
    int n = 0;
    const char *field;
    json_t *change;
    json_object_foreach(json_object_get(ev, "changes"), field, change)
    {
        char id[DK_UUID_LEN];
        dk_uuid7(id);
        int b = NFIXED + 4 * n;
        p[b] = dk_arena_strdup(a, id);
        p[b + 1] = field;
        json_t *old_v = json_object_get(change, "old"), *new_v = json_object_get(change, "new");
        p[b + 2] = old_v ? dk_json_render(a, old_v, NULL) : NULL;
        p[b + 3] = new_v ? dk_json_render(a, new_v, NULL) : NULL;
        dk_sb_printf(&values, "%s(%d, $%d, $%d, $%d, $%d)", n ? ", " : "", n, b + 1, b + 2, b + 3,
                     b + 4);
        n++;
    }
    if (!tx) {
        dk_free(values.s);
        memcpy(keep->row, update_params, sizeof keep->row);
        memcpy(keep->ob, ob, sizeof ob);
        keep->actor = actor;
        keep->nh = n;
        memcpy(keep->hist, p + NFIXED, sizeof(const char *) * 4 * (size_t)n);
        return DK_OK;
    }
    const char *sql = dk_arena_printf(
        a,
        "WITH u AS (%s RETURNING id), o AS (INSERT INTO " TASKS_OUTBOX " (id, type, payload, "
        "created_at, traceparent) SELECT $15, $16, $17, CAST($18 AS BIGINT), $19 FROM u) INSERT "
        "INTO tasks_activity (id, task_id, event_id, actor_id, action, field, old_value, "
        "new_value, created_at) SELECT v.id, u.id, $15, $20, 'updated', v.field, v.old_value, "
        "v.new_value, CAST($18 AS BIGINT) FROM u, (VALUES %s) AS v(n, id, field, old_value, "
        "new_value) ORDER BY v.n",
        update_sql, dk_sb_take(&values, a));
    dk_db_rows *rows = NULL;
    dk_status st = last ? dk_tx_query_commit(tx, a, sql, NFIXED + 4 * n, p, &rows)
                        : dk_tx_query(tx, a, sql, NFIXED + 4 * n, p, &rows);
    if (st == DK_OK && rows->affected != n) {
        dk_log_error("tasks: a locked row changed under an update");
        st = DK_E_INTERNAL;
    }
    return st;
}

/* Writes next over cur (same id and version as read) and records the task.updated event.
 * last: nothing follows in tx, which may commit with the write (dk_tx_query_commit).
 * tx NULL (PostgreSQL, a personal task read without a lock): the write goes into *keep, for
 * tasks_patch_run. */
static dk_status tasks_write(const tasks_repo *r, dk_tx *tx, dk_arena *a, const tasks_task *cur,
                             const tasks_task *next, const char *actor, bool last,
                             tasks_patch_write *keep)
{
    const char *p[] = {cur->id,
                       next->title,
                       next->description,
                       tasks_status_name(next->status),
                       dk_sql_int(a, next->priority),
                       tasks_opt_param(a, next->has_due, next->due_at),
                       next->assignee_id,
                       dk_sql_int(a, next->updated_at),
                       tasks_labels_json(a, next->labels, next->nlabels),
                       tasks_opt_param(a, next->has_completed, next->completed_at),
                       dk_sql_int(a, next->version),
                       dk_sql_int(a, cur->version),
                       next->project_id,
                       next->owner_id};
    const char *sql = dk_arena_printf(
        a,
        "UPDATE tasks SET title = $2, description = $3, status = $4, priority = CAST($5 AS "
        "INTEGER), due_at = CAST($6 AS BIGINT), assignee_id = $7, updated_at = CAST($8 AS "
        "BIGINT), labels = %s, completed_at = CAST($10 AS BIGINT), version = CAST($11 AS BIGINT), "
        "project_id = $13, owner_id = $14%s WHERE id = $1 AND version = CAST($12 AS BIGINT)",
        tasks_labels_sql(r, a, 9),
        /* PostgreSQL (migration 10): the search vector is this statement's to keep; the same
         * datum when the text is unchanged, so a status change stays a HOT update */
        tasks_pg(r) ? ", search = CASE WHEN title = $2 AND description = $3 THEN search ELSE "
                      "tasks_search_of($2, $3) END"
                    : "");
    /* a status change is announced to the owner: not to one who has left the project */
    int owner_role = PROJECT_ROLE_OWNER;
    dk_status st = DK_OK;
    if (next->project_id && next->status != cur->status && strcmp(actor, next->owner_id) != 0)
        st = tasks_repo_role(r, tx, a, next->project_id, next->owner_id, false, &owner_role);
    if (st != DK_OK)
        return st;
    json_t *ev = tasks_event_json(a, actor, next, cur, owner_role == PROJECT_ROLE_NONE);
    size_t nchanges = json_object_size(json_object_get(ev, "changes"));
    if (tasks_pg(r) && nchanges > 0 && nchanges <= TASKS_WRITE_ONE_MAX)
        return tasks_write_one(tx, a, sql, p, ev, actor, nchanges, last, keep);
    if (!tx)
        return DK_E_INTERNAL; /* the caller's path needs the one statement */
    dk_db_rows *rows = NULL;
    st = dk_tx_query(tx, a, sql, 14, p, &rows);
    if (st == DK_OK && rows->affected != 1) {
        dk_log_error("tasks: a locked row changed under an update");
        st = DK_E_INTERNAL;
    }
    if (st == DK_OK)
        st = tasks_repo_record(tx, a, DK_EVENT_TASK_UPDATED, ev);
    return st;
}

/* PostgreSQL: a personal task the caller may see, locked, in one statement (no project to lock
 * first). DK_E_NOT_FOUND when the task is not such a task, or was not when the row was locked
 * (the caller then takes the general path: project, then task). */
static dk_status tasks_lock_personal(dk_tx *tx, dk_arena *a, const char *id, const char *caller,
                                     tasks_task *ret)
{
    const char *p[] = {id, caller};
    dk_db_rows *rows = NULL;
    dk_status st = dk_tx_query(tx, a,
                               "SELECT " TASKS_COLS_POSTGRES " FROM tasks t WHERE t.id = $1 AND "
                               "t.project_id IS NULL AND (t.owner_id = $2 OR t.assignee_id = $2) "
                               "FOR UPDATE OF t",
                               2, p, &rows);
    if (st != DK_OK)
        return st;
    if (rows->nrows == 0)
        return DK_E_NOT_FOUND;
    return tasks_row(a, rows, 0, ret);
}

/* PostgreSQL, a personal task the caller may see (tasks_lock_personal's rule) that stays
 * personal: read without a lock or a transaction, then written by one statement that matches
 * only the version read (every UPDATE of a task moves its version, so an unchanged version is
 * an unchanged row and what was checked on it still holds). A change that changes nothing
 * costs a plain read: no transaction id, no row lock, no WAL. DK_E_NOT_FOUND: not such a task
 * (or the change moves it into a project): the caller takes the locking path; DK_E_CONFLICT:
 * the row moved between the read and the write (nothing written): read again.
 * The write itself is not run here but kept (*ret_kept true, *keep, *ret the task as it will
 * be once written), for tasks_patch_alone or a group (tasks_patch_group). */
static dk_status tasks_patch_personal(const tasks_repo *r, dk_arena *a, const char *id,
                                      const char *caller, const tasks_changes *ch,
                                      const char *if_match, tasks_task *ret,
                                      tasks_patch_write *keep, bool *ret_kept)
{
    const char *p[] = {id, caller};
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(r->db, a,
                          "SELECT " TASKS_COLS_POSTGRES " FROM tasks t WHERE t.id = $1 AND "
                          "t.project_id IS NULL AND (t.owner_id = $2 OR t.assignee_id = $2)",
                          2, p, &rows);
    if (st != DK_OK)
        return st;
    if (rows->nrows == 0)
        return DK_E_NOT_FOUND;
    tasks_task cur, next;
    st = tasks_row(a, rows, 0, &cur);
    bool changed = false, may_edit = false, may_status = false;
    if (st == DK_OK) {
        tasks_rights(&cur, caller, PROJECT_ROLE_NONE, &may_edit, &may_status);
        st = tasks_apply(&cur, ch, may_edit, may_status, dk_now_ms(), &next, &changed);
    }
    if (st == DK_OK && !tasks_if_match(if_match, cur.version))
        st = DK_E_PRECONDITION;
    if (st != DK_OK)
        return st;
    if (!changed) {
        *ret = cur;
        return DK_OK;
    }
    if (next.project_id)
        return DK_E_NOT_FOUND; /* into a project: its membership is checked under locks */
    st = tasks_write(r, NULL, a, &cur, &next, caller, true, keep);
    if (st == DK_OK) {
        *ret = next;
        *ret_kept = true;
    }
    return st;
}

/* Personal patches written together (core/batch.h, docs/design/write-batching.md): one
 * statement for any number of them, their rows as arrays (one prepared statement whatever the
 * group's size). Each task is written only if its version is still the one read; the history
 * insert returns the ids of the tasks written (every write has at least one entry). */
static const char tasks_patch_group_sql[] =
    "WITH v AS (SELECT * FROM unnest(CAST($1 AS TEXT[]), CAST($2 AS TEXT[]), CAST($3 AS TEXT[]), "
    "CAST($4 AS TEXT[]), CAST($5 AS INTEGER[]), CAST($6 AS BIGINT[]), CAST($7 AS TEXT[]), "
    "CAST($8 AS BIGINT[]), CAST($9 AS TEXT[]), CAST($10 AS BIGINT[]), CAST($11 AS BIGINT[]), "
    "CAST($12 AS BIGINT[]), CAST($13 AS TEXT[]), CAST($14 AS TEXT[])) AS v(id, title, "
    "description, status, priority, due_at, assignee_id, updated_at, labels, completed_at, "
    "version, old_version, project_id, owner_id)), u AS (UPDATE tasks t SET title = v.title, "
    "description = v.description, status = v.status, priority = v.priority, due_at = v.due_at, "
    "assignee_id = v.assignee_id, updated_at = v.updated_at, labels = ARRAY(SELECT e.v FROM "
    "json_array_elements_text(CAST(v.labels AS JSON)) WITH ORDINALITY AS e(v, n) ORDER BY e.n), "
    "completed_at = v.completed_at, version = v.version, project_id = v.project_id, owner_id = "
    "v.owner_id, search = CASE WHEN t.title = v.title AND t.description = v.description THEN "
    "t.search ELSE tasks_search_of(v.title, v.description) END FROM v WHERE t.id = v.id COLLATE "
    "\"C\" AND t.version = v.old_version RETURNING t.id), o AS (INSERT INTO " TASKS_OUTBOX
    " (id, type, payload, created_at, traceparent) SELECT e.id, e.type, e.payload, e.created_at, "
    "e.traceparent FROM unnest(CAST($15 AS TEXT[]), CAST($16 AS TEXT[]), CAST($17 AS TEXT[]), "
    "CAST($18 AS TEXT[]), CAST($19 AS BIGINT[]), CAST($20 AS TEXT[])) WITH ORDINALITY AS "
    "e(task_id, id, type, payload, created_at, traceparent, n) JOIN u ON u.id = e.task_id "
    "COLLATE \"C\" ORDER BY e.n) INSERT INTO tasks_activity (id, task_id, event_id, actor_id, "
    "action, field, old_value, new_value, created_at) SELECT h.id, u.id, h.event_id, h.actor_id, "
    "'updated', h.field, h.old_value, h.new_value, h.created_at FROM unnest(CAST($21 AS TEXT[]), "
    "CAST($22 AS TEXT[]), CAST($23 AS TEXT[]), CAST($24 AS TEXT[]), CAST($25 AS TEXT[]), "
    "CAST($26 AS TEXT[]), CAST($27 AS TEXT[]), CAST($28 AS BIGINT[])) WITH ORDINALITY AS h(id, "
    "task_id, event_id, actor_id, field, old_value, new_value, created_at, n) JOIN u ON u.id = "
    "h.task_id COLLATE \"C\" ORDER BY h.n RETURNING task_id";

/* Runs w[0..n) (distinct tasks) as one statement; ret_written[i]: w[i]'s version still
 * matched and it was written. */
static dk_status tasks_patch_run(const tasks_repo *r, dk_arena *a, tasks_patch_write *const *w,
                                 int n, bool *ret_written)
{
    int nh = 0;
    for (int i = 0; i < n; i++)
        nh += w[i]->nh;
    const char **col = dk_arena_alloc(a, sizeof(const char *) * (size_t)(n > nh ? n : nh));
    const char *p[28];
    for (int c = 0; c < 14; c++) { /* the tasks */
        for (int i = 0; i < n; i++)
            col[i] = w[i]->row[c];
        p[c] = dk_sql_pg_array(a, col, n);
    }
    for (int c = 0; c < 6; c++) { /* their events: task id, then the outbox row */
        for (int i = 0; i < n; i++)
            col[i] = c == 0 ? w[i]->row[0] : w[i]->ob[c - 1];
        p[14 + c] = dk_sql_pg_array(a, col, n);
    }
    /* history: id, task id, event id, actor, field, old, new, created_at */
    for (int c = 0; c < 8; c++) {
        int k = 0;
        for (int i = 0; i < n; i++)
            for (int e = 0; e < w[i]->nh; e++) {
                const char *const *h = w[i]->hist + 4 * e;
                const char *v[] = {h[0], w[i]->row[0], w[i]->ob[0], w[i]->actor,
                                   h[1], h[2],         h[3],        w[i]->ob[3]};
                col[k++] = v[c];
            }
        p[20 + c] = dk_sql_pg_array(a, col, nh);
    }
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(r->db, a, tasks_patch_group_sql, 28, p, &rows);
    if (st != DK_OK)
        return st;
    for (int i = 0; i < n; i++) {
        ret_written[i] = false;
        for (int j = 0; j < rows->nrows && !ret_written[i]; j++)
            ret_written[i] = strcmp(dk_db_value(rows, j, 0), w[i]->row[0]) == 0;
    }
    return DK_OK;
}

/* One kept write in a statement of its own: DK_E_CONFLICT when its version moved. */
static dk_status tasks_patch_alone(const tasks_repo *r, dk_arena *a, tasks_patch_write *w)
{
    bool written = false;
    dk_status st = tasks_patch_run(r, a, &w, 1, &written);
    return st == DK_OK && !written ? DK_E_CONFLICT : st;
}

/* dk_batch_run_fn: a group of personal patches. Two patches of one task never share a
 * statement: the later one is answered DK_E_CONFLICT at once (its caller reads again, as when
 * another writer got there first). A group that fails on something one row could cause is
 * tried again patch by patch (see tasks_create_group). */
static void tasks_patch_group(void *ctx, dk_batch_job **jobs, int n)
{
    const tasks_repo *r = ctx;
    dk_arena *a = dk_arena_new();
    tasks_patch_write **w = dk_arena_alloc(a, sizeof *w * (size_t)n);
    int *of = dk_arena_alloc(a, sizeof *of * (size_t)n);
    int m = 0;
    for (int i = 0; i < n; i++) {
        tasks_patch_write *x = jobs[i]->arg;
        of[i] = m;
        for (int j = 0; j < m && of[i] >= 0; j++)
            if (strcmp(w[j]->row[0], x->row[0]) == 0)
                of[i] = -1;
        if (of[i] >= 0)
            w[m++] = x;
        else
            jobs[i]->status = DK_E_CONFLICT;
    }
    bool *written = dk_arena_alloc(a, sizeof *written * (size_t)m);
    dk_status *sts = dk_arena_alloc(a, sizeof *sts * (size_t)m);
    dk_status st = tasks_patch_run(r, a, w, m, written);
    bool alone = st != DK_OK && st != DK_E_UNAVAILABLE && m > 1;
    for (int k = 0; k < m; k++)
        sts[k] = alone         ? tasks_patch_alone(r, a, w[k])
                 : st != DK_OK ? st
                 : written[k]  ? DK_OK
                               : DK_E_CONFLICT;
    for (int i = 0; i < n; i++)
        if (of[i] >= 0)
            jobs[i]->status = sts[of[i]];
    dk_arena_free(a);
}

/* Attempts of tasks_patch_personal before the locking path takes over (each lost one means
 * another writer changed the task in between). */
#define TASKS_PATCH_ATTEMPTS 3

dk_status tasks_repo_patch(const tasks_repo *r, dk_arena *a, const char *id, const char *caller,
                           const tasks_changes *ch, const char *if_match, tasks_task *ret,
                           const char **ret_field)
{
    for (int i = 0; tasks_pg(r) && i < TASKS_PATCH_ATTEMPTS; i++) {
        tasks_patch_write keep;
        bool kept = false;
        dk_status st = tasks_patch_personal(r, a, id, caller, ch, if_match, ret, &keep, &kept);
        if (st == DK_OK && kept)
            st = tasks_patch_alone(r, a, &keep);
        if (st == DK_E_NOT_FOUND)
            break;
        if (st != DK_E_CONFLICT)
            return st;
    }
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    tasks_task cur, next;
    int role = PROJECT_ROLE_NONE;
    /* Most changes are to personal tasks: try that first (one round trip, BEGIN included);
     * otherwise, lock order: project, then task. */
    bool personal = tasks_pg(r);
    if (personal) {
        st = tasks_lock_personal(&tx, a, id, caller, &cur);
        personal = st == DK_OK;
        if (st == DK_E_NOT_FOUND)
            st = DK_OK;
    }
    if (st == DK_OK && !personal)
        st = tasks_repo_lock_project_of(r, &tx, a, id);
    if (st == DK_OK && !personal)
        st = tasks_read_visible(r, &tx, a, id, caller, &cur, &role);
    if (st == DK_OK && cur.project_id) /* hold the membership until commit */
        st = tasks_repo_role(r, &tx, a, cur.project_id, caller, true, &role);
    if (st == DK_OK && cur.project_id && role == PROJECT_ROLE_NONE)
        st = DK_E_NOT_FOUND;
    bool changed = false, may_edit = false, may_status = false;
    if (st == DK_OK) {
        tasks_rights(&cur, caller, role, &may_edit, &may_status);
        st = tasks_apply(&cur, ch, may_edit, may_status, dk_now_ms(), &next, &changed);
    }
    if (st == DK_OK && !tasks_if_match(if_match, cur.version))
        st = DK_E_PRECONDITION;
    if (st == DK_OK && changed) {
        bool moved = (next.project_id == NULL) != (cur.project_id == NULL) ||
                     (next.project_id && strcmp(next.project_id, cur.project_id) != 0);
        bool reassigned = (next.assignee_id == NULL) != (cur.assignee_id == NULL) ||
                          (next.assignee_id && strcmp(next.assignee_id, cur.assignee_id) != 0);
        st = tasks_check_project(r, &tx, a, &next, caller, moved, moved || reassigned, ret_field);
    }
    if (st != DK_OK || !changed) {
        dk_tx_abort(&tx); /* an error, or nothing to write: the version stays */
        if (st == DK_OK)
            *ret = cur;
        return st;
    }
    st = tasks_write(r, &tx, a, &cur, &next, caller, true, NULL);
    st = dk_tx_end(&tx, st);
    if (st == DK_OK)
        *ret = next;
    return st;
}

bool tasks_repo_patch_start(const tasks_repo *r, dk_arena *a, const char *id, const char *caller,
                            const tasks_changes *ch, const char *if_match, dk_batch_job *later,
                            dk_status *ret_status, tasks_task *ret, const char **ret_field)
{
    if (r->patches) {
        tasks_patch_write *keep = dk_arena_alloc(a, sizeof *keep);
        bool kept = false;
        dk_status st = tasks_patch_personal(r, a, id, caller, ch, if_match, ret, keep, &kept);
        if (st == DK_OK && kept) {
            later->arg = keep;
            later->status = DK_E_INTERNAL;
            if (!dk_batch_run_or_queue(r->patches, later))
                return false;
            st = later->status;
        }
        if (st != DK_E_NOT_FOUND && st != DK_E_CONFLICT) {
            *ret_status = st;
            return true;
        }
    }
    *ret_status = tasks_repo_patch(r, a, id, caller, ch, if_match, ret, ret_field);
    return true;
}

dk_status tasks_repo_delete(const tasks_repo *r, dk_arena *a, const char *id, const char *caller,
                            const char *if_match)
{
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    tasks_task cur;
    int role = PROJECT_ROLE_NONE;
    st = tasks_repo_lock_project_of(r, &tx, a, id);
    if (st == DK_OK)
        st = tasks_read_visible(r, &tx, a, id, caller, &cur, &role);
    bool may_edit = false, may_status = false;
    if (st == DK_OK)
        tasks_rights(&cur, caller, role, &may_edit, &may_status);
    if (st == DK_OK && !may_edit)
        st = DK_E_FORBIDDEN;
    if (st == DK_OK && !tasks_if_match(if_match, cur.version))
        st = DK_E_PRECONDITION;
    if (st != DK_OK) {
        dk_tx_abort(&tx);
        return st;
    }
    const char *p[] = {id};
    st = tasks_repo_delete_where(r, &tx, a, "t.id = $1", 1, p, caller);
    return dk_tx_end(&tx, st);
}

dk_status tasks_repo_delete_where(const tasks_repo *r, dk_tx *tx, dk_arena *a, const char *where,
                                  int nparams, const char *const *params, const char *actor)
{
    dk_db_rows *rows = NULL;
    dk_status st =
        dk_tx_query(tx, a,
                    dk_arena_printf(a, "SELECT %s FROM tasks t WHERE %s%s", tasks_cols(r), where,
                                    tasks_pg(r) ? " FOR UPDATE" : ""),
                    nparams, params, &rows);
    for (int i = 0; st == DK_OK && i < rows->nrows; i++) {
        tasks_task t;
        st = tasks_row(a, rows, i, &t);
        if (st == DK_OK)
            st = tasks_event(tx, a, DK_EVENT_TASK_DELETED, actor, &t, NULL);
    }
    static const char *const tables[] = {"tasks_comments", "tasks_activity"};
    for (size_t k = 0; st == DK_OK && k < sizeof tables / sizeof tables[0]; k++)
        st = dk_tx_query(tx, a,
                         dk_arena_printf(a,
                                         "DELETE FROM %s WHERE task_id IN (SELECT t.id FROM tasks "
                                         "t WHERE %s)",
                                         tables[k], where),
                         nparams, params, NULL);
    if (st == DK_OK)
        st = dk_tx_query(tx, a,
                         dk_arena_printf(a,
                                         "DELETE FROM tasks WHERE id IN (SELECT t.id FROM tasks t "
                                         "WHERE %s)",
                                         where),
                         nparams, params, NULL);
    return st;
}

dk_status tasks_repo_rewrite_where(const tasks_repo *r, dk_tx *tx, dk_arena *a, const char *where,
                                   int nparams, const char *const *params, const char *actor,
                                   bool unassign, bool owner_to_project_owner)
{
    dk_db_rows *rows = NULL;
    dk_status st = dk_tx_query(
        tx, a,
        dk_arena_printf(a,
                        "SELECT %s, (SELECT p.owner_id FROM tasks_projects p WHERE p.id = "
                        "t.project_id) FROM tasks t WHERE %s%s",
                        tasks_cols(r), where, tasks_pg(r) ? " FOR UPDATE OF t" : ""),
        nparams, params, &rows);
    int64_t now = dk_now_ms();
    for (int i = 0; st == DK_OK && i < rows->nrows; i++) {
        tasks_task cur, next;
        st = tasks_row(a, rows, i, &cur);
        if (st != DK_OK)
            break;
        next = cur;
        if (unassign)
            next.assignee_id = NULL;
        const char *po = dk_db_value(rows, i, TASKS_NCOLS);
        if (owner_to_project_owner && po)
            next.owner_id = po;
        next.version = cur.version + 1;
        next.updated_at = now > cur.updated_at ? now : cur.updated_at;
        st = tasks_write(r, tx, a, &cur, &next, actor, false, NULL);
    }
    return st;
}

/* The projects of the caller, for SQLite's per-project arms (see tasks_query.h). */
static dk_status tasks_member_projects(const tasks_repo *r, dk_arena *a, tasks_list_query *q)
{
    const char *p[] = {q->caller, dk_sql_int(a, TASKS_PROJECT_ARMS_MAX + 1)};
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(r->db, a,
                          "SELECT project_id FROM tasks_project_members WHERE user_id = $1 ORDER "
                          "BY project_id LIMIT CAST($2 AS INTEGER)",
                          2, p, &rows);
    if (st != DK_OK)
        return st;
    q->many_projects = rows->nrows > TASKS_PROJECT_ARMS_MAX;
    q->nmember_projects = q->many_projects ? 0 : rows->nrows;
    q->member_projects = dk_arena_alloc(a, sizeof *q->member_projects * (size_t)(rows->nrows + 1));
    for (int i = 0; i < q->nmember_projects; i++)
        q->member_projects[i] = dk_db_value(rows, i, 0);
    return DK_OK;
}

dk_status tasks_repo_list(const tasks_repo *r, dk_arena *a, tasks_list_query *q, tasks_task **ret,
                          int *ret_n, char **ret_next)
{
    *ret_next = NULL;
    dk_status st;
    if (q->project_id) { /* a non-member learns nothing, not even that the project exists */
        const char *p[] = {q->project_id, q->caller};
        dk_db_rows *rows = NULL;
        st = dk_sql(r->db, a,
                    "SELECT 1 FROM tasks_project_members WHERE project_id = $1 AND user_id = $2", 2,
                    p, &rows);
        if (st != DK_OK)
            return st;
        if (rows->nrows == 0)
            return DK_E_NOT_FOUND;
    } else if (!tasks_pg(r)) {
        st = tasks_member_projects(r, a, q);
        if (st != DK_OK)
            return st;
    }
    tasks_sql s;
    tasks_query_build(a, r->db->ops->engine, q, &s);
    if (s.nothing) {
        *ret = dk_arena_alloc(a, sizeof **ret);
        *ret_n = 0;
        return DK_OK;
    }
    dk_db_rows *rows = NULL;
    st = dk_sql(r->db, a, s.sql, s.nparams, s.params, &rows);
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

/* A project's owner with other members. */
#define TASKS_SHARED_OWNED                                                                         \
    "SELECT p.id FROM tasks_projects p WHERE p.owner_id = $1 AND EXISTS (SELECT 1 FROM "           \
    "tasks_project_members m WHERE m.project_id = p.id AND m.user_id <> $1)"

dk_status tasks_repo_account_blocked(const tasks_repo *r, dk_arena *a, const char *user_id,
                                     bool *ret_blocked)
{
    const char *p[] = {user_id};
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(r->db, a, TASKS_SHARED_OWNED " LIMIT 1", 1, p, &rows);
    if (st == DK_OK)
        *ret_blocked = rows->nrows > 0;
    return st;
}

dk_status tasks_repo_forget_user(const tasks_repo *r, dk_arena *a, const char *user_id)
{
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    const char *p[] = {user_id, dk_sql_int(a, dk_now_ms())};
    dk_db_rows *rows = NULL;
    /* shared projects still owned (a member joined after the check): the longest-standing
     * admin, else member, becomes the owner */
    st = dk_tx_query(&tx, a, TASKS_SHARED_OWNED, 1, p, &rows);
    for (int i = 0; st == DK_OK && i < rows->nrows; i++) {
        const char *q[] = {dk_db_value(rows, i, 0), user_id, p[1]};
        dk_db_rows *heir = NULL;
        st = dk_tx_query(&tx, a,
                         "SELECT user_id FROM tasks_project_members WHERE project_id = $1 AND "
                         "user_id <> $2 ORDER BY role DESC, added_at, user_id LIMIT 1",
                         2, q, &heir);
        if (st != DK_OK || heir->nrows == 0)
            break;
        const char *h[] = {q[0], dk_db_value(heir, 0, 0), p[1]};
        st = dk_tx_query(&tx, a,
                         "UPDATE tasks_projects SET owner_id = $2, version = version + 1, "
                         "updated_at = CAST($3 AS BIGINT) WHERE id = $1",
                         3, h, NULL);
        if (st == DK_OK)
            st = dk_tx_query(&tx, a,
                             "UPDATE tasks_project_members SET role = 3 WHERE project_id = $1 AND "
                             "user_id = $2",
                             2, h, NULL);
    }
    /* one-member projects go with their tasks */
    if (st == DK_OK)
        st = tasks_repo_delete_where(r, &tx, a,
                                     "t.project_id IN (SELECT p.id FROM tasks_projects p WHERE "
                                     "p.owner_id = $1)",
                                     1, p, user_id);
    if (st == DK_OK)
        st = dk_tx_query(&tx, a,
                         "DELETE FROM tasks_project_members WHERE project_id IN (SELECT p.id FROM "
                         "tasks_projects p WHERE p.owner_id = $1)",
                         1, p, NULL);
    if (st == DK_OK)
        st = dk_tx_query(&tx, a, "DELETE FROM tasks_projects WHERE owner_id = $1", 1, p, NULL);
    /* tasks made in other projects pass to the project's owner; assignments there end */
    if (st == DK_OK)
        st = tasks_repo_rewrite_where(r, &tx, a, "t.owner_id = $1 AND t.project_id IS NOT NULL", 1,
                                      p, user_id, false, true);
    if (st == DK_OK)
        st = tasks_repo_rewrite_where(r, &tx, a, "t.assignee_id = $1 AND t.project_id IS NOT NULL",
                                      1, p, user_id, true, false);
    if (st == DK_OK)
        st =
            dk_tx_query(&tx, a, "DELETE FROM tasks_project_members WHERE user_id = $1", 1, p, NULL);
    /* comments stay, by a deleted author; the history forgets who acted */
    if (st == DK_OK)
        st = dk_tx_query(&tx, a, "UPDATE tasks_comments SET author_id = NULL WHERE author_id = $1",
                         1, p, NULL);
    if (st == DK_OK)
        st = dk_tx_query(&tx, a, "UPDATE tasks_activity SET actor_id = NULL WHERE actor_id = $1", 1,
                         p, NULL);
    /* personal tasks: their own go, assignments end */
    static const char *const personal[] = {
        "DELETE FROM tasks_comments WHERE task_id IN (SELECT id FROM tasks WHERE owner_id = $1 "
        "AND project_id IS NULL)",
        "DELETE FROM tasks_activity WHERE task_id IN (SELECT id FROM tasks WHERE owner_id = $1 "
        "AND project_id IS NULL)",
        "DELETE FROM tasks WHERE owner_id = $1 AND project_id IS NULL",
    };
    for (size_t i = 0; st == DK_OK && i < sizeof personal / sizeof personal[0]; i++)
        st = dk_tx_query(&tx, a, personal[i], 1, p, NULL);
    if (st == DK_OK)
        st = dk_tx_query(&tx, a,
                         "UPDATE tasks SET assignee_id = NULL, version = version + 1, "
                         "updated_at = CASE WHEN updated_at > CAST($2 AS BIGINT) THEN updated_at "
                         "ELSE CAST($2 AS BIGINT) END WHERE assignee_id = $1",
                         2, p, NULL);
    return dk_tx_end(&tx, st);
}
