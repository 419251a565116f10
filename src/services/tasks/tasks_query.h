/* tasks_query.h — GET /api/v1/tasks as SQL: parses and validates the query parameters
 * (filters, sort, limit, cursor), turns a search text into a safe FTS5 expression, and builds
 * the one parameterised keyset statement for SQLite or PostgreSQL. User text only ever travels
 * as a statement parameter; the SQL text depends on which filters are present, never on their
 * values. Pure functions; everything lives in the arena given; thread-safe.
 * Errors: DK_E_BAD_REQUEST with one entry per bad parameter in the dk_errors. */
#ifndef DK_TASKS_QUERY_H
#define DK_TASKS_QUERY_H

#include <stdbool.h>
#include <stdint.h>

#include "core/http.h"
#include "ports/db.h"
#include "services/tasks/tasks_cursor.h"

typedef enum {
    TASKS_SORT_CREATED_AT,
    TASKS_SORT_DUE_AT,
    TASKS_SORT_PRIORITY,
    TASKS_SORT_UPDATED_AT,
    TASKS_SORT_RELEVANCE, /* only when q is given without sort; always descending */
} tasks_sort_field;

#define TASKS_LIMIT_DEFAULT 20
#define TASKS_LIMIT_MAX     100
#define TASKS_Q_MAX         500 /* characters of search text */

/* The columns every task query returns, in the order tasks_repo reads them. */
#define TASKS_COLS_SQLITE                                                                          \
    "t.id, t.title, t.description, t.status, t.priority, t.due_at, t.labels, t.owner_id, "         \
    "t.assignee_id, t.created_at, t.updated_at, t.completed_at, t.version, t.project_id"
#define TASKS_COLS_POSTGRES                                                                        \
    "t.id, t.title, t.description, t.status, t.priority, t.due_at, "                               \
    "CAST(to_json(t.labels) AS TEXT) AS labels, t.owner_id, t.assignee_id, t.created_at, "         \
    "t.updated_at, t.completed_at, t.version, t.project_id"
#define TASKS_NCOLS 14 /* list rows add the sort key ("sk") after these */

/* Who may see a task — the one rule, which every read asks (get, list, search, comments,
 * activity, and the checks before every change): a personal task (no project) is seen by its
 * owner and its assignee; a project task by the project's members and nobody else.
 * tasks_visible_sql is the rule as a predicate over `t` for the user in parameter $me; the
 * list statement applies the same rule split into its disjuncts (own personal tasks, personal
 * tasks assigned to the caller, the tasks of each project the caller is a member of), so that
 * each arm starts with an indexed equality. Membership is read by the statement itself, so a
 * member removed a moment ago sees nothing more, whatever cursor they hold. */
const char *tasks_visible_sql(dk_arena *a, int me);
/* The membership test alone: the caller ($me) is a member of the project in column `col`. */
const char *tasks_member_sql(dk_arena *a, const char *col, int me);

/* SQLite has no LATERAL join: up to this many projects get an arm each (a page per project
 * read from its index, then merged); a member of more is served by one IN arm. */
#define TASKS_PROJECT_ARMS_MAX 64

/* A search text in FTS5 form. Terms are double-quoted (so no FTS5 or SQL syntax in the text
 * survives), "quoted phrases" stay phrases, `-term` excludes, a bare `or` joins its neighbours
 * with OR; other terms are ANDed. */
typedef struct tasks_fts {
    const char *match;   /* positive terms with exclusions: "(P) NOT (N)"; NULL if no P */
    const char *exclude; /* "N1 OR N2 ..."; NULL if none */
} tasks_fts;

/* False when q holds no searchable term at all (then nothing matches). */
bool tasks_fts_query(dk_arena *a, const char *q, tasks_fts *ret);

/* The MATCH text of one arm of a search on SQLite: the words in the title and description of
 * the rows whose `scope` column holds the token of kind ('o' owner, 'a' assignee, 'p' project)
 * and id (see tasks_repo.c, migration 6). kind 0: every row (NULL when the search only
 * excludes: FTS5 has no bare NOT). */
const char *tasks_fts_scoped(dk_arena *a, const tasks_fts *fts, char kind, const char *id);

/* The same for n arms at once: the rows holding any of the tokens kinds[i]/ids[i] (n >= 1, every
 * kind non-zero). Unlike tasks_fts_scoped, also for a search that only excludes. */
const char *tasks_fts_scoped_any(dk_arena *a, const tasks_fts *fts, int n, const char *kinds,
                                 const char *const *ids);

typedef struct tasks_list_query {
    const char *caller;   /* the authenticated user */
    const char *status;   /* NULL: any */
    int priority;         /* -1: any */
    const char *label;    /* NULL: any */
    const char *owner;    /* resolved id ("me" → caller); NULL: any */
    const char *assignee; /* likewise */
    bool has_due_before, has_due_after;
    int64_t due_before, due_after;
    const char *q;          /* NULL when absent or blank */
    const char *project_id; /* ?project_id=: that project's tasks only; NULL: everything */
    /* SQLite only (filled by the repository before tasks_query_build): the projects the
     * caller is a member of, when at most TASKS_PROJECT_ARMS_MAX; each arm re-checks it. */
    const char **member_projects;
    int nmember_projects;
    bool many_projects; /* more than TASKS_PROJECT_ARMS_MAX */
    tasks_sort_field sort;
    bool desc;
    int limit;
    bool has_cursor;
    tasks_cursor cursor;
    unsigned char filter_hash[TASKS_FILTER_HASH_LEN]; /* of caller and every filter */
} tasks_list_query;

/* Reads a query parameter by name (NULL when absent). */
typedef const char *(*tasks_param_fn)(void *ctx, const char *name);

/* Parses every list parameter; a cursor must verify under cursor_key and belong to the same
 * sort and filters. On failure errs names each bad parameter and the result is
 * DK_E_BAD_REQUEST. */
dk_status tasks_query_parse(dk_arena *a, tasks_param_fn get, void *ctx, const char *caller,
                            const unsigned char cursor_key[32], tasks_list_query *ret,
                            dk_errors *errs) DK_MUSTCHECK;

/* The sort code a cursor records: field * 2 + descending. */
int tasks_query_sort_code(const tasks_list_query *q);

typedef struct tasks_sql {
    const char *sql;
    int nparams;
    const char **params;
    bool nothing; /* the filters can match no task: skip the database */
} tasks_sql;

/* The list statement: TASKS_NCOLS columns plus the integer sort key `sk`, in page order, at
 * most q->limit + 1 rows (one more than a page tells whether another page follows). */
void tasks_query_build(dk_arena *a, dk_db_engine engine, const tasks_list_query *q, tasks_sql *ret);

/* The cursor continuing after a row with this sort key and id. */
char *tasks_query_next_cursor(dk_arena *a, const unsigned char cursor_key[32],
                              const tasks_list_query *q, int64_t sort_value, const char *id);

#endif
