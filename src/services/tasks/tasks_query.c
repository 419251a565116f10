#include "services/tasks/tasks_query.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/crypto.h"
#include "core/ids.h"
#include "core/sql.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "services/tasks/tasks_model.h"
#include "core/banned.h"

/* ---------- the string builder (core/str.h's dk_sb) ---------- */

static void tasks_query_addn(dk_sb *b, const char *s, size_t n)
{
    dk_sb_printf(b, "%.*s", (int)n, s);
}

/* ---------- search text → FTS5 ---------- */

static bool tasks_query_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Whether the tokenizer can find a word in it: an ASCII letter or digit, or any non-ASCII
 * byte (letters of other scripts). Pure punctuation would make an empty phrase. */
static bool tasks_query_wordish(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80)
            return true;
    }
    return false;
}

/* "text" with every double quote doubled: inside FTS5 quotes nothing is syntax. */
static void tasks_query_fts_quoted(dk_sb *b, const char *s, size_t n)
{
    dk_sb_printf(b, "\"");
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"')
            dk_sb_printf(b, "\"\"");
        else
            tasks_query_addn(b, s + i, 1);
    }
    dk_sb_printf(b, "\"");
}

bool tasks_fts_query(dk_arena *a, const char *q, tasks_fts *ret)
{
    memset(ret, 0, sizeof *ret);
    dk_sb pos = {0}, neg = {0};
    int npos = 0, nneg = 0;
    bool pending_or = false;
    const char *p = q;
    while (*p) {
        while (tasks_query_space(*p))
            p++;
        if (!*p)
            break;
        bool negate = false, phrase = false;
        if (*p == '-') {
            negate = true;
            p++;
        }
        const char *start = p;
        size_t len;
        if (*p == '"') {
            phrase = true;
            start = ++p;
            while (*p && *p != '"')
                p++;
            len = (size_t)(p - start);
            if (*p == '"')
                p++;
        } else {
            while (*p && !tasks_query_space(*p))
                p++;
            len = (size_t)(p - start);
        }
        if (!negate && !phrase && len == 2 && (start[0] == 'o' || start[0] == 'O') &&
            (start[1] == 'r' || start[1] == 'R')) {
            pending_or = npos > 0;
            continue;
        }
        if (!tasks_query_wordish(start, len))
            continue;
        if (negate) {
            if (nneg++ > 0)
                dk_sb_printf(&neg, " OR ");
            tasks_query_fts_quoted(&neg, start, len);
            pending_or = false;
        } else {
            if (npos++ > 0)
                dk_sb_printf(&pos, pending_or ? " OR " : " AND ");
            tasks_query_fts_quoted(&pos, start, len);
            pending_or = false;
        }
    }
    char *ps = dk_sb_take(&pos, a);
    char *ns = dk_sb_take(&neg, a);
    if (npos == 0 && nneg == 0)
        return false;
    if (nneg > 0)
        ret->exclude = ns;
    if (npos > 0)
        ret->match = nneg > 0 ? dk_arena_printf(a, "(%s) NOT (%s)", ps, ns) : ps;
    return true;
}

/* Appends the scope token of kind and id as the view tasks_fts_src spells it (kind, the id
 * without dashes, x), quoted. */
static void tasks_fts_token(dk_sb *b, dk_arena *a, char kind, const char *id)
{
    dk_sb tok = {0};
    dk_sb_printf(&tok, "%c", kind);
    for (const char *c = id; *c; c++)
        if (*c != '-')
            tasks_query_addn(&tok, c, 1);
    dk_sb_printf(&tok, "x");
    char *t = dk_sb_take(&tok, a);
    tasks_query_fts_quoted(b, t, strlen(t));
}

const char *tasks_fts_scoped_any(dk_arena *a, const tasks_fts *fts, int n, const char *kinds,
                                 const char *const *ids)
{
    dk_sb b = {0};
    dk_sb_printf(&b, "{scope} : ");
    if (n > 1)
        dk_sb_printf(&b, "(");
    for (int i = 0; i < n; i++) {
        if (i > 0)
            dk_sb_printf(&b, " OR ");
        tasks_fts_token(&b, a, kinds[i], ids[i]);
    }
    if (n > 1)
        dk_sb_printf(&b, ")");
    if (fts->match)
        dk_sb_printf(&b, " AND {title description} : (%s)", fts->match);
    else
        dk_sb_printf(&b, " NOT {title description} : (%s)", fts->exclude);
    return dk_sb_take(&b, a);
}

const char *tasks_fts_scoped(dk_arena *a, const tasks_fts *fts, char kind, const char *id)
{
    if (!kind)
        return fts->match ? dk_arena_printf(a, "{title description} : (%s)", fts->match) : NULL;
    return tasks_fts_scoped_any(a, fts, 1, &kind, &id);
}

/* ---------- parameters ---------- */

static const char *const tasks_query_sort_names[] = {"created_at", "due_at", "priority",
                                                     "updated_at"};

int tasks_query_sort_code(const tasks_list_query *q)
{
    return (int)q->sort * 2 + (q->desc ? 1 : 0);
}

/* "me" or a user id; NULL (error added) otherwise. */
static const char *tasks_query_user_param(const char *v, const char *caller, const char *name,
                                          dk_errors *errs)
{
    if (strcmp(v, "me") == 0)
        return caller;
    if (dk_uuid_valid(v))
        return v;
    dk_errors_add(errs, name, "must be `me` or a user id");
    return NULL;
}

static void tasks_query_hash_str(dk_sb *b, const char *name, const char *v)
{
    if (v)
        dk_sb_printf(b, "%s=%zu:%s\n", name, strlen(v), v);
    else
        dk_sb_printf(b, "%s=-\n", name);
}

static void tasks_query_filter_hash(dk_arena *a, tasks_list_query *q)
{
    dk_sb b = {0};
    dk_sb_printf(&b, "tasks.list.filters.v1\n");
    tasks_query_hash_str(&b, "caller", q->caller);
    tasks_query_hash_str(&b, "status", q->status);
    dk_sb_printf(&b, "priority=%d\n", q->priority);
    tasks_query_hash_str(&b, "label", q->label);
    tasks_query_hash_str(&b, "owner", q->owner);
    tasks_query_hash_str(&b, "assignee", q->assignee);
    if (q->has_due_before)
        dk_sb_printf(&b, "due_before=%lld\n", (long long)q->due_before);
    else
        dk_sb_printf(&b, "due_before=-\n");
    if (q->has_due_after)
        dk_sb_printf(&b, "due_after=%lld\n", (long long)q->due_after);
    else
        dk_sb_printf(&b, "due_after=-\n");
    tasks_query_hash_str(&b, "q", q->q);
    if (q->project_id) /* absent: the same text as before projects existed */
        tasks_query_hash_str(&b, "project_id", q->project_id);
    char *text = dk_sb_take(&b, a);
    unsigned char h[32];
    dk_sha256(text, strlen(text), h);
    memcpy(q->filter_hash, h, TASKS_FILTER_HASH_LEN);
}

dk_status tasks_query_parse(dk_arena *a, tasks_param_fn get, void *ctx, const char *caller,
                            const unsigned char cursor_key[32], tasks_list_query *ret,
                            dk_errors *errs)
{
    tasks_list_query q;
    memset(&q, 0, sizeof q);
    q.caller = caller;
    q.priority = -1;
    q.limit = TASKS_LIMIT_DEFAULT;
    bool bad = false;
    const char *v;

    if ((v = get(ctx, "status")) != NULL) {
        int s = tasks_status_parse(v);
        if (s < 0) {
            dk_errors_add(errs, "status", "must be one of todo, in_progress, done");
            bad = true;
        } else {
            q.status = tasks_status_name(s);
        }
    }
    if ((v = get(ctx, "priority")) != NULL) {
        q.priority = tasks_priority_parse(v);
        if (q.priority < 0) {
            dk_errors_add(errs, "priority", "must be one of low, medium, high, urgent");
            bad = true;
        }
    }
    if ((v = get(ctx, "label")) != NULL) {
        const char *msg = tasks_validate_label(v);
        if (msg) {
            dk_errors_add(errs, "label", "%s", msg);
            bad = true;
        } else {
            q.label = v;
        }
    }
    if ((v = get(ctx, "owner")) != NULL) {
        q.owner = tasks_query_user_param(v, caller, "owner", errs);
        bad |= q.owner == NULL;
    }
    if ((v = get(ctx, "assignee")) != NULL) {
        q.assignee = tasks_query_user_param(v, caller, "assignee", errs);
        bad |= q.assignee == NULL;
    }
    if ((v = get(ctx, "due_before")) != NULL) {
        q.has_due_before = dk_time_parse(v, &q.due_before);
        if (!q.has_due_before) {
            dk_errors_add(errs, "due_before", "must be an RFC 3339 timestamp");
            bad = true;
        }
    }
    if ((v = get(ctx, "due_after")) != NULL) {
        q.has_due_after = dk_time_parse(v, &q.due_after);
        if (!q.has_due_after) {
            dk_errors_add(errs, "due_after", "must be an RFC 3339 timestamp");
            bad = true;
        }
    }
    if ((v = get(ctx, "q")) != NULL) {
        long n = dk_utf8_len(v, strlen(v));
        if (n < 0) {
            dk_errors_add(errs, "q", "must be valid UTF-8");
            bad = true;
        } else if (n > TASKS_Q_MAX) {
            dk_errors_add(errs, "q", "must be at most %d characters", TASKS_Q_MAX);
            bad = true;
        } else {
            const char *p = v;
            while (tasks_query_space(*p))
                p++;
            q.q = *p ? v : NULL; /* a blank search is no search */
        }
    }
    if ((v = get(ctx, "project_id")) != NULL) {
        if (!dk_uuid_valid(v)) {
            dk_errors_add(errs, "project_id", "must be a project id");
            bad = true;
        } else {
            q.project_id = v;
        }
    }
    q.sort = q.q ? TASKS_SORT_RELEVANCE : TASKS_SORT_CREATED_AT;
    q.desc = true;
    if ((v = get(ctx, "sort")) != NULL) {
        bool desc = v[0] == '-';
        const char *name = desc ? v + 1 : v;
        int found = -1;
        for (int i = 0; i < (int)(sizeof tasks_query_sort_names / sizeof tasks_query_sort_names[0]);
             i++)
            if (strcmp(name, tasks_query_sort_names[i]) == 0)
                found = i;
        if (found < 0) {
            dk_errors_add(errs, "sort",
                          "must be one of created_at, due_at, priority, updated_at, each "
                          "optionally prefixed with - for descending order");
            bad = true;
        } else {
            q.sort = (tasks_sort_field)found;
            q.desc = desc;
        }
    }
    if ((v = get(ctx, "limit")) != NULL) {
        int64_t n = 0;
        if (!dk_parse_i64(v, 1, TASKS_LIMIT_MAX, &n) || v[0] == '-') {
            dk_errors_add(errs, "limit", "must be an integer from 1 to %d", TASKS_LIMIT_MAX);
            bad = true;
        } else {
            q.limit = (int)n;
        }
    }
    tasks_query_filter_hash(a, &q);
    if ((v = get(ctx, "cursor")) != NULL && *v) {
        if (tasks_cursor_decode(a, cursor_key, v, &q.cursor) != DK_OK) {
            dk_errors_add(errs, "cursor", "is malformed or was altered");
            bad = true;
        } else if (!bad && (q.cursor.sort != tasks_query_sort_code(&q) ||
                            memcmp(q.cursor.filter_hash, q.filter_hash, TASKS_FILTER_HASH_LEN))) {
            dk_errors_add(errs, "cursor",
                          "belongs to another query: keep the filters and sort of the request "
                          "that returned it");
            bad = true;
        } else {
            q.has_cursor = true;
        }
    }
    if (bad)
        return DK_E_BAD_REQUEST;
    *ret = q;
    return DK_OK;
}

/* ---------- the statement ---------- */

/* At most 16 are ever used besides SQLite's arms: caller, owner, assignee, project, five
 * filters, two search texts, two cursor values, the limit; each arm of SQLite's adds at most
 * two (its project, its MATCH text). */
#define TASKS_QUERY_MAX_ARMS   (3 + TASKS_PROJECT_ARMS_MAX)
#define TASKS_QUERY_MAX_PARAMS (16 + 2 * TASKS_QUERY_MAX_ARMS)

typedef struct tasks_query_sql_params {
    const char *v[TASKS_QUERY_MAX_PARAMS];
    int n;
} tasks_query_sql_params;

/* Adds a parameter; returns its number ($n). */
static int tasks_query_sql_param(tasks_query_sql_params *p, const char *v)
{
    if (p->n >= TASKS_QUERY_MAX_PARAMS)
        abort(); /* a builder bug, not input: the count depends only on which filters exist */
    p->v[p->n++] = v;
    return p->n;
}

const char *tasks_member_sql(dk_arena *a, const char *col, int me)
{
    return dk_arena_printf(a,
                           "EXISTS (SELECT 1 FROM tasks_project_members m WHERE m.project_id = "
                           "%s AND m.user_id = $%d)",
                           col, me);
}

const char *tasks_visible_sql(dk_arena *a, int me)
{
    return dk_arena_printf(
        a, "((t.project_id IS NULL AND (t.owner_id = $%d OR t.assignee_id = $%d)) OR %s)", me, me,
        tasks_member_sql(a, "t.project_id", me));
}

/* The sort key as an integer expression. Dates without a due date sort last either way (the
 * sentinel is the far end of the direction); relevance is a deterministic function of the
 * task and the search, so that keyset pages stay stable. */
static const char *tasks_query_sort_expr(dk_arena *a, dk_db_engine engine,
                                         const tasks_list_query *q, const tasks_fts *fts,
                                         const char *tsq)
{
    switch (q->sort) {
    case TASKS_SORT_CREATED_AT:
        return "t.created_at";
    case TASKS_SORT_UPDATED_AT:
        return "t.updated_at";
    case TASKS_SORT_PRIORITY:
        return "t.priority";
    case TASKS_SORT_DUE_AT:
        return q->desc ? "COALESCE(t.due_at, -9223372036854775807)"
                       : "COALESCE(t.due_at, 9223372036854775807)";
    case TASKS_SORT_RELEVANCE:
        break;
    }
    if (engine == DK_DB_POSTGRES) {
        /* cover density over the weighted vector: a title (A) hit weighs ten times a
         * description (B) hit; scaled to an integer so the cursor carries it exactly */
        return dk_arena_printf(a,
                               "CAST(CAST(ts_rank_cd(CAST('{0.1, 0.1, 0.1, 1.0}' AS REAL[]), "
                               "t.search, %s) AS DOUBLE PRECISION) * 1000000 AS BIGINT)",
                               tsq);
    }
    if (!fts->match)
        return "CAST(0 AS BIGINT)"; /* exclusions only: all alike (a bare 0 would be a column
                                       number in ORDER BY) */
    /* SQLite: bm25() depends on the whole table's statistics, which other users' writes move
     * between two pages; docket_hits() (adapters/db_sqlite_fts.c) reads the row alone: each
     * occurrence of a searched word or phrase counts 10 in the title, 1 in the description
     * (the weights ts_rank_cd is given on PostgreSQL above), none in the scope tokens. */
    return "docket_hits(tasks_fts, 10, 1, 0)";
}

/* match_param: SQLite's search, the arm's MATCH text ($n); 0 when none. The full-text index
 * is read first (CROSS JOIN keeps that order): the rows it yields are the caller's already. */
static void tasks_query_arm(dk_sb *b, dk_db_engine engine, const char *pred, const char *conds,
                            const char *sk, const char *dir, int limit_param, int match_param)
{
    dk_sb_printf(b, "SELECT %s, %s AS sk FROM ",
                 engine == DK_DB_POSTGRES ? TASKS_COLS_POSTGRES : TASKS_COLS_SQLITE, sk);
    if (match_param)
        dk_sb_printf(b,
                     "tasks_fts CROSS JOIN tasks t ON t.seq = tasks_fts.rowid WHERE tasks_fts "
                     "MATCH $%d AND ",
                     match_param);
    else
        dk_sb_printf(b, "tasks t WHERE ");
    dk_sb_printf(b, "%s%s ORDER BY %s %s, t.id %s LIMIT CAST($%d AS INTEGER)", pred, conds, sk, dir,
                 dir, limit_param);
}

/* PostgreSQL: a page of each of the caller's projects, each read from its project index in
 * order (a nested loop over the memberships); the outer statement merges them. */
static void tasks_query_lateral_arm(dk_sb *b, const char *conds, const char *sk, const char *dir,
                                    int limit_param, int me)
{
    dk_sb_printf(b,
                 "SELECT x.* FROM tasks_project_members m CROSS JOIN LATERAL (SELECT %s, %s AS sk "
                 "FROM tasks t WHERE t.project_id = m.project_id%s ORDER BY %s %s, t.id %s LIMIT "
                 "CAST($%d AS INTEGER)) x WHERE m.user_id = $%d",
                 TASKS_COLS_POSTGRES, sk, conds, sk, dir, dir, limit_param, me);
}

typedef struct tasks_query_arms {
    const char *pred[TASKS_QUERY_MAX_ARMS]; /* NULL pred with lateral: the PostgreSQL project arm */
    const char *extra[TASKS_QUERY_MAX_ARMS]; /* arm-specific conditions (" AND ...") */
    bool lateral[TASKS_QUERY_MAX_ARMS];
    char scope_kind
        [TASKS_QUERY_MAX_ARMS]; /* SQLite's search: the arm's scope token (tasks_fts_scoped) */
    const char *scope_id[TASKS_QUERY_MAX_ARMS];
    int n;
} tasks_query_arms;

static void tasks_query_arms_add(tasks_query_arms *arms, const char *pred, const char *extra,
                                 bool lateral, char scope_kind, const char *scope_id)
{
    arms->pred[arms->n] = pred;
    arms->extra[arms->n] = extra ? extra : "";
    arms->lateral[arms->n] = lateral;
    arms->scope_kind[arms->n] = scope_kind;
    arms->scope_id[arms->n] = scope_id;
    arms->n++;
}

/* SQLite's search when every arm has a scope token (all but a member of more projects than get
 * an arm each): one statement, not one per arm. The full-text index is read once, for the
 * caller's tokens ORed (`{scope} : ("o<me>x" OR "a<me>x" OR "p<project>x" ...) AND {title
 * description} : (words)`): FTS5 walks the word's doclist once instead of once per arm, and the
 * rows are sorted once. The arms' predicates, ORed, still decide visibility for every row (the
 * token only narrows what is read; the arms are disjoint, so no row is counted twice). The sort
 * keeps only (seq, id, relevance) of each match; the page's rows are read by rowid afterwards
 * (docs/design/search.md, "One statement"). */
static void tasks_query_sqlite_search(dk_arena *a, dk_sb *sql, tasks_query_sql_params *p,
                                      const tasks_query_arms *arms, const tasks_fts *fts,
                                      const char *cs, const char *sk, const char *dir, int lk)
{
    int mp = tasks_query_sql_param(
        p, tasks_fts_scoped_any(a, fts, arms->n, arms->scope_kind, arms->scope_id));
    dk_sb_printf(sql,
                 "SELECT " TASKS_COLS_SQLITE ", s.sk AS sk FROM (SELECT t.seq AS seq, t.id AS id, "
                 "%s AS sk FROM tasks_fts CROSS JOIN tasks t ON t.seq = tasks_fts.rowid WHERE "
                 "tasks_fts MATCH $%d AND (",
                 sk, mp);
    for (int i = 0; i < arms->n; i++)
        dk_sb_printf(sql, "%s(%s%s)", i ? " OR " : "", arms->pred[i], arms->extra[i]);
    dk_sb_printf(sql,
                 ")%s ORDER BY %s %s, t.id %s LIMIT CAST($%d AS INTEGER)) s CROSS JOIN tasks t ON "
                 "t.seq = s.seq ORDER BY s.sk %s, s.id %s",
                 cs, sk, dir, dir, lk, dir, dir);
}

/* PostgreSQL's search ordered by relevance (docs/design/search.md, "One sort (PostgreSQL)").
 * Each arm is still a statement of its own under UNION ALL, so that the planner picks each
 * arm's index by itself (tasks_scope_search_idx with the caller's id and the words); ORed
 * into one WHERE, it could read a common word's matches over everybody's tasks instead. But
 * an arm yields only (ctid, id, relevance) of its matches, with no ORDER BY or LIMIT of its
 * own: every match is ranked exactly once, the matches of all arms are sorted once (top-N),
 * and the page's rows are read by ctid after the LIMIT (a TID scan of the row version the
 * same snapshot has just seen). The columns, labels as JSON included, are produced for the
 * page only; before, each arm copied every match's whole row into its own sort, and the
 * merge sorted the arms' pages again. The projects' arm loops over the caller's memberships,
 * read by the statement itself. */
static void tasks_query_pg_search(dk_arena *a, dk_sb *sql, const tasks_query_arms *arms,
                                  const char *cs, const char *sk, const char *dir, int me, int lk)
{
    dk_sb_printf(sql, "SELECT " TASKS_COLS_POSTGRES ", s.sk AS sk FROM (SELECT * FROM (");
    for (int i = 0; i < arms->n; i++) {
        const char *sel =
            dk_arena_printf(a, "SELECT t.ctid AS tid, t.id AS id, %s AS sk FROM tasks t", sk);
        if (arms->lateral[i]) /* OFFSET 0 keeps it a loop over the memberships, each project
                                 read with its own index condition: flattened into a join,
                                 the planner hashed the memberships against the word's
                                 matches over every task */
            dk_sb_printf(sql,
                         "%sSELECT x.* FROM tasks_project_members m CROSS JOIN LATERAL (%s WHERE "
                         "t.project_id = m.project_id%s%s OFFSET 0) x WHERE m.user_id = $%d",
                         i ? " UNION ALL " : "", sel, arms->extra[i], cs, me);
        else
            dk_sb_printf(sql, "%s%s WHERE %s%s%s", i ? " UNION ALL " : "", sel, arms->pred[i],
                         arms->extra[i], cs);
    }
    dk_sb_printf(sql,
                 ") u ORDER BY sk %s, id %s LIMIT CAST($%d AS INTEGER)) s CROSS JOIN tasks t WHERE "
                 "t.ctid = s.tid ORDER BY s.sk %s, s.id %s",
                 dir, dir, lk, dir, dir);
}

void tasks_query_build(dk_arena *a, dk_db_engine engine, const tasks_list_query *q, tasks_sql *ret)
{
    memset(ret, 0, sizeof *ret);
    tasks_query_sql_params p = {.n = 0};
    bool pg = engine == DK_DB_POSTGRES;
    int me = tasks_query_sql_param(&p, q->caller);
    dk_sb conds = {0};

    /* which rows: the visibility rule (tasks_visible_sql) as arms that each lead with an
     * indexed equality — own personal tasks (owner_id), personal tasks assigned to the caller
     * (assignee_id), and the tasks of the caller's projects (project_id) */
    tasks_query_arms arms = {.n = 0};
    bool owner_me = q->owner && strcmp(q->owner, q->caller) == 0;
    bool assignee_me = q->assignee && strcmp(q->assignee, q->caller) == 0;
    int ownp = q->owner && !owner_me ? tasks_query_sql_param(&p, q->owner) : 0;
    int asgp = q->assignee && !assignee_me ? tasks_query_sql_param(&p, q->assignee) : 0;
    const char *who = ""; /* owner and assignee filters, for the project arms */
    if (q->owner || q->assignee)
        who = dk_arena_printf(
            a, "%s%s",
            q->owner ? dk_arena_printf(a, " AND t.owner_id = $%d", owner_me ? me : ownp) : "",
            q->assignee ? dk_arena_printf(a, " AND t.assignee_id = $%d", assignee_me ? me : asgp)
                        : "");
    if (!q->project_id) {
        if (assignee_me && !q->owner) { /* one arm: every personal task assigned to me */
            tasks_query_arms_add(
                &arms, dk_arena_printf(a, "t.assignee_id = $%d AND t.project_id IS NULL", me), NULL,
                false, 'a', q->caller);
        } else if (!q->owner || owner_me) {
            const char *pred = dk_arena_printf(a, "t.owner_id = $%d AND t.project_id IS NULL", me);
            if (q->assignee)
                pred =
                    dk_arena_printf(a, "%s AND t.assignee_id = $%d", pred, assignee_me ? me : asgp);
            tasks_query_arms_add(&arms, pred, NULL, false, 'o', q->caller);
        }
        if (!owner_me && (!q->assignee || assignee_me) && !(assignee_me && !q->owner)) {
            const char *pred =
                q->owner ? dk_arena_printf(a,
                                           "t.assignee_id = $%d AND t.owner_id = $%d AND "
                                           "t.project_id IS NULL",
                                           me, ownp)
                         : dk_arena_printf(a,
                                           "t.assignee_id = $%d AND t.owner_id <> $%d AND "
                                           "t.project_id IS NULL",
                                           me, me);
            tasks_query_arms_add(&arms, pred, NULL, false, 'a', q->caller);
        }
        if (pg) {
            tasks_query_arms_add(&arms, NULL, who, true, 0, NULL);
        } else if (q->many_projects) {
            tasks_query_arms_add(&arms,
                                 dk_arena_printf(a,
                                                 "t.project_id IN (SELECT m.project_id FROM "
                                                 "tasks_project_members m WHERE m.user_id = $%d)",
                                                 me),
                                 who, false, 0, NULL);
        } else {
            for (int i = 0; i < q->nmember_projects && i < TASKS_PROJECT_ARMS_MAX; i++)
                tasks_query_arms_add(
                    &arms,
                    dk_arena_printf(a, "t.project_id = $%d AND %s",
                                    tasks_query_sql_param(&p, q->member_projects[i]),
                                    tasks_member_sql(a, "t.project_id", me)),
                    who, false, 'p', q->member_projects[i]);
        }
    } else {
        int pp = tasks_query_sql_param(&p, q->project_id);
        tasks_query_arms_add(
            &arms,
            dk_arena_printf(a, "t.project_id = $%d AND %s", pp,
                            tasks_member_sql(a, dk_arena_printf(a, "$%d", pp), me)),
            who, false, 'p', q->project_id);
    }
    bool nothing = arms.n == 0;

    if (q->status)
        dk_sb_printf(&conds, " AND t.status = $%d", tasks_query_sql_param(&p, q->status));
    if (q->priority >= 0)
        dk_sb_printf(&conds, " AND t.priority = CAST($%d AS INTEGER)",
                     tasks_query_sql_param(&p, dk_sql_int(a, q->priority)));
    if (q->label) {
        int k = tasks_query_sql_param(&p, q->label);
        if (pg)
            dk_sb_printf(&conds, " AND t.labels @> ARRAY[CAST($%d AS TEXT)]", k);
        else
            dk_sb_printf(
                &conds,
                " AND EXISTS (SELECT 1 FROM json_each(t.labels) WHERE json_each.value = $%d)", k);
    }
    if (q->has_due_before)
        dk_sb_printf(&conds, " AND t.due_at < CAST($%d AS BIGINT)",
                     tasks_query_sql_param(&p, dk_sql_int(a, q->due_before)));
    if (q->has_due_after)
        dk_sb_printf(&conds, " AND t.due_at >= CAST($%d AS BIGINT)",
                     tasks_query_sql_param(&p, dk_sql_int(a, q->due_after)));
    tasks_fts fts;
    memset(&fts, 0, sizeof fts);
    int qparam = 0;
    const char *tsq = NULL; /* PostgreSQL: the search as a tsquery expression */
    bool ranked = pg && q->sort == TASKS_SORT_RELEVANCE; /* tasks_query_pg_search */
    bool sqlite_fts = false;
    if (q->q) {
        if (!tasks_fts_query(a, q->q, &fts)) {
            nothing = true; /* no word to look for */
        } else if (pg) {
            qparam = tasks_query_sql_param(&p, q->q);
            /* a sub-select: parsed once per statement (an InitPlan), not once per row, when
             * the prepared statement runs its generic plan (0.46 -> 0.35 ms per search,
             * docs/design/measurements.md). Ranked, the text is parsed once for the whole
             * statement (the CTE w), not once per arm and use. */
            tsq = ranked
                      ? "(SELECT w.q FROM w)"
                      : dk_arena_printf(a, "(SELECT websearch_to_tsquery('english', $%d))", qparam);
            dk_sb_printf(&conds, " AND t.search @@ %s", tsq);
        } else {
            /* SQLite: each arm reads the full-text index with its own scope token (below) */
            sqlite_fts = true;
        }
    }
    if (nothing) {
        dk_free(conds.s);
        ret->nothing = true;
        ret->sql = "";
        ret->params = dk_arena_alloc(a, sizeof *ret->params);
        return;
    }
    const char *sk = tasks_query_sort_expr(a, engine, q, &fts, tsq);
    const char *dir = q->desc ? "DESC" : "ASC";
    if (q->has_cursor) {
        int vk = tasks_query_sql_param(&p, dk_sql_int(a, q->cursor.value));
        int ik = tasks_query_sql_param(&p, dk_arena_strdup(a, q->cursor.id));
        dk_sb_printf(&conds, " AND (%s, t.id) %s (CAST($%d AS BIGINT), $%d)", sk,
                     q->desc ? "<" : ">", vk, ik);
    }
    int lk = tasks_query_sql_param(&p, dk_sql_int(a, q->limit + 1));
    char *cs = dk_sb_take(&conds, a);

    dk_sb sql = {0};
    dk_sb_printf(&sql, "/* tasks.list */ ");
    bool all_scoped = sqlite_fts;
    for (int i = 0; i < arms.n; i++)
        all_scoped &= arms.scope_kind[i] != 0;
    if (all_scoped || (qparam && ranked)) {
        if (all_scoped) {
            tasks_query_sqlite_search(a, &sql, &p, &arms, &fts, cs, sk, dir, lk);
        } else {
            dk_sb_printf(&sql,
                         "WITH w AS MATERIALIZED (SELECT websearch_to_tsquery('english', $%d) AS "
                         "q) ",
                         qparam);
            tasks_query_pg_search(a, &sql, &arms, cs, sk, dir, me, lk);
        }
        ret->sql = dk_sb_take(&sql, a);
        ret->nparams = p.n;
        ret->params = dk_arena_alloc(a, sizeof *ret->params * (size_t)p.n);
        memcpy(ret->params, p.v, sizeof *ret->params * (size_t)p.n);
        return;
    }
    bool wrap = arms.n > 1 || arms.lateral[0]; /* several arms are merged in page order */
    for (int i = 0; i < arms.n; i++) {
        const char *c = dk_arena_printf(a, "%s%s", arms.extra[i], cs);
        int mp = 0;
        if (sqlite_fts) {
            const char *m = tasks_fts_scoped(a, &fts, arms.scope_kind[i], arms.scope_id[i]);
            if (m)
                mp = tasks_query_sql_param(&p, m);
            else /* an unscoped arm of a search that only excludes */
                c = dk_arena_printf(
                    a,
                    "%s AND t.seq NOT IN (SELECT rowid FROM tasks_fts WHERE "
                    "tasks_fts MATCH $%d)",
                    c,
                    tasks_query_sql_param(
                        &p, dk_arena_printf(a, "{title description} : (%s)", fts.exclude)));
        }
        if (wrap)
            dk_sb_printf(&sql, "%sSELECT * FROM (", i == 0 ? "" : " UNION ALL ");
        if (arms.lateral[i])
            tasks_query_lateral_arm(&sql, c, sk, dir, lk, me);
        else
            tasks_query_arm(&sql, engine, arms.pred[i], c, sk, dir, lk, mp);
        if (wrap)
            dk_sb_printf(&sql, ") a%d", i);
    }
    if (wrap)
        dk_sb_printf(&sql, " ORDER BY sk %s, id %s LIMIT CAST($%d AS INTEGER)", dir, dir, lk);
    ret->sql = dk_sb_take(&sql, a);
    ret->nparams = p.n;
    ret->params = dk_arena_alloc(a, sizeof *ret->params * (size_t)p.n);
    memcpy(ret->params, p.v, sizeof *ret->params * (size_t)p.n);
}

char *tasks_query_next_cursor(dk_arena *a, const unsigned char cursor_key[32],
                              const tasks_list_query *q, int64_t sort_value, const char *id)
{
    tasks_cursor c;
    memset(&c, 0, sizeof c);
    c.sort = tasks_query_sort_code(q);
    c.value = sort_value;
    dk_strlcpy(c.id, id, sizeof c.id);
    memcpy(c.filter_hash, q->filter_hash, TASKS_FILTER_HASH_LEN);
    return tasks_cursor_encode(a, cursor_key, &c);
}
