#include "services/tasks/projects_repo.h"

#include <string.h>

#include "core/arena.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/log.h"
#include "core/sql.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "ports/task_events.h"
#include "core/banned.h"

static bool projects_repo_pg(const tasks_repo *r)
{
    return r->db->ops->engine == DK_DB_POSTGRES;
}

char *projects_name_key(dk_arena *a, const char *name)
{
    char *k = dk_arena_strdup(a, name);
    dk_str_lower(k);
    return k;
}

/* ---------- projects ---------- */

#define PR_COLS "p.id, p.name, p.description, p.owner_id, p.created_at, p.updated_at, p.version"

static void projects_repo_row(const dk_db_rows *rows, int i, int role_col, project *p)
{
    memset(p, 0, sizeof *p);
    p->id = dk_db_value(rows, i, 0);
    p->name = dk_db_value(rows, i, 1);
    p->description = dk_db_value(rows, i, 2);
    p->owner_id = dk_db_value(rows, i, 3);
    p->created_at = dk_sql_get_int(rows, i, 4);
    p->updated_at = dk_sql_get_int(rows, i, 5);
    p->version = dk_sql_get_int(rows, i, 6);
    p->my_role = role_col >= 0 ? (int)dk_sql_get_int(rows, i, role_col) : PROJECT_ROLE_NONE;
}

dk_status projects_repo_create(const tasks_repo *r, dk_arena *a, const project *p)
{
    const char *v[] = {p->id,          p->owner_id,
                       p->name,        projects_name_key(a, p->name),
                       p->description, dk_sql_int(a, p->created_at)};
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    st = dk_tx_query(&tx, a,
                     "INSERT INTO tasks_projects (id, owner_id, name, name_key, description, "
                     "created_at, updated_at, version) VALUES ($1, $2, $3, $4, $5, CAST($6 AS "
                     "BIGINT), CAST($6 AS BIGINT), 1)",
                     6, v, NULL);
    const char *m[] = {p->id, p->owner_id, dk_sql_int(a, p->created_at)};
    if (st == DK_OK)
        st = dk_tx_query(&tx, a,
                         "INSERT INTO tasks_project_members (project_id, user_id, role, added_at) "
                         "VALUES ($1, $2, 3, CAST($3 AS BIGINT))",
                         3, m, NULL);
    return dk_tx_end(&tx, st);
}

/* The project with the caller's role, in tx (locking both rows) or on its own connection. */
static dk_status projects_repo_read(const tasks_repo *r, dk_tx *tx, dk_arena *a, const char *id,
                                    const char *caller, project *ret)
{
    const char *v[] = {id, caller};
    dk_db_rows *rows = NULL;
    const char *sql =
        tx && projects_repo_pg(r)
            ? "SELECT " PR_COLS ", m.role FROM tasks_projects p JOIN tasks_project_members m ON "
              "m.project_id = p.id AND m.user_id = $2 WHERE p.id = $1 FOR UPDATE OF p FOR SHARE "
              "OF m"
            : "SELECT " PR_COLS ", m.role FROM tasks_projects p JOIN tasks_project_members m ON "
              "m.project_id = p.id AND m.user_id = $2 WHERE p.id = $1";
    dk_status st = tx ? dk_tx_query(tx, a, sql, 2, v, &rows) : dk_sql(r->db, a, sql, 2, v, &rows);
    if (st != DK_OK)
        return st;
    if (rows->nrows == 0)
        return DK_E_NOT_FOUND;
    projects_repo_row(rows, 0, 7, ret);
    return DK_OK;
}

dk_status projects_repo_get(const tasks_repo *r, dk_arena *a, const char *id, const char *caller,
                            project *ret)
{
    return projects_repo_read(r, NULL, a, id, caller, ret);
}

dk_status projects_repo_list(const tasks_repo *r, dk_arena *a, const char *caller,
                             const char *q_key, const projects_after *after, int limit,
                             project **ret, int *ret_n)
{
    const char *v[5] = {caller, dk_sql_int(a, limit + 1)};
    int n = 2;
    char conds[256] = "";
    size_t cl = 0;
    if (q_key) {
        v[n++] = q_key;
        cl += (size_t)snprintf(conds + cl, sizeof conds - cl,
                               " AND substr(p.name_key, 1, length(CAST($%d AS TEXT))) = $%d", n, n);
    }
    if (after && after->has) {
        v[n++] = after->text;
        v[n++] = after->id;
        cl += (size_t)snprintf(conds + cl, sizeof conds - cl,
                               " AND (p.name_key > $%d OR (p.name_key = $%d AND p.id > $%d))",
                               n - 1, n - 1, n);
    }
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(r->db, a,
                          dk_arena_printf(a,
                                          "SELECT " PR_COLS ", m.role FROM tasks_project_members "
                                          "m JOIN tasks_projects p ON p.id = m.project_id WHERE "
                                          "m.user_id = $1%s ORDER BY p.name_key, p.id LIMIT "
                                          "CAST($2 AS INTEGER)",
                                          conds),
                          n, v, &rows);
    if (st != DK_OK)
        return st;
    project *items = dk_arena_alloc(a, sizeof *items * (size_t)(rows->nrows + 1));
    for (int i = 0; i < rows->nrows; i++)
        projects_repo_row(rows, i, 7, &items[i]);
    *ret = items;
    *ret_n = rows->nrows;
    return DK_OK;
}

/* The caller's project in tx with at least role min: DK_E_NOT_FOUND for non-members,
 * DK_E_FORBIDDEN below min. */
static dk_status projects_repo_need(const tasks_repo *r, dk_tx *tx, dk_arena *a, const char *id,
                                    const char *caller, int min, project *ret)
{
    dk_status st = projects_repo_read(r, tx, a, id, caller, ret);
    if (st == DK_OK && ret->my_role < min)
        st = DK_E_FORBIDDEN;
    return st;
}

static dk_status projects_repo_bump(dk_tx *tx, dk_arena *a, project *p, const char *name,
                                    const char *description, const char *owner)
{
    int64_t now = dk_now_ms();
    int64_t up = now > p->updated_at ? now : p->updated_at;
    const char *nv = name ? name : p->name;
    const char *dv = description ? description : p->description;
    const char *ov = owner ? owner : p->owner_id;
    const char *v[] = {
        p->id, nv, projects_name_key(a, nv), dv, ov, dk_sql_int(a, up), dk_sql_int(a, p->version)};
    dk_db_rows *rows = NULL;
    dk_status st = dk_tx_query(tx, a,
                               "UPDATE tasks_projects SET name = $2, name_key = $3, description = "
                               "$4, owner_id = $5, updated_at = CAST($6 AS BIGINT), version = "
                               "version + 1 WHERE id = $1 AND version = CAST($7 AS BIGINT)",
                               7, v, &rows);
    if (st == DK_OK && rows->affected != 1)
        st = DK_E_INTERNAL;
    if (st == DK_OK) {
        p->name = nv;
        p->description = dv;
        p->owner_id = ov;
        p->updated_at = up;
        p->version++;
    }
    return st;
}

dk_status projects_repo_patch(const tasks_repo *r, dk_arena *a, const char *id, const char *caller,
                              const char *name, const char *description, const char *if_match,
                              project *ret)
{
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    project p;
    st = projects_repo_need(r, &tx, a, id, caller, PROJECT_ROLE_ADMIN, &p);
    if (st == DK_OK && !tasks_if_match(if_match, p.version))
        st = DK_E_PRECONDITION;
    bool changed = st == DK_OK && ((name && strcmp(name, p.name) != 0) ||
                                   (description && strcmp(description, p.description) != 0));
    if (st != DK_OK || !changed) {
        dk_tx_abort(&tx);
        if (st == DK_OK)
            *ret = p;
        return st;
    }
    st = projects_repo_bump(&tx, a, &p, name, description, NULL);
    st = dk_tx_end(&tx, st);
    if (st == DK_OK)
        *ret = p;
    return st;
}

dk_status projects_repo_delete(const tasks_repo *r, dk_arena *a, const char *id, const char *caller,
                               const char *if_match)
{
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    project p;
    st = projects_repo_need(r, &tx, a, id, caller, PROJECT_ROLE_OWNER, &p);
    if (st == DK_OK && !tasks_if_match(if_match, p.version))
        st = DK_E_PRECONDITION;
    const char *v[] = {id};
    if (st == DK_OK)
        st = tasks_repo_delete_where(r, &tx, a, "t.project_id = $1", 1, v, caller);
    if (st == DK_OK)
        st = dk_tx_query(&tx, a, "DELETE FROM tasks_project_members WHERE project_id = $1", 1, v,
                         NULL);
    if (st == DK_OK)
        st = dk_tx_query(&tx, a, "DELETE FROM tasks_projects WHERE id = $1", 1, v, NULL);
    return dk_tx_end(&tx, st);
}

static dk_status projects_repo_set_role(dk_tx *tx, dk_arena *a, const char *id, const char *user,
                                        int role)
{
    const char *v[] = {id, user, dk_sql_int(a, role)};
    return dk_tx_query(tx, a,
                       "UPDATE tasks_project_members SET role = CAST($3 AS INTEGER) WHERE "
                       "project_id = $1 AND user_id = $2",
                       3, v, NULL);
}

dk_status projects_repo_transfer(const tasks_repo *r, dk_arena *a, const char *id,
                                 const char *caller, const char *target, const char *if_match,
                                 project *ret)
{
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    project p;
    int role = PROJECT_ROLE_NONE;
    st = projects_repo_need(r, &tx, a, id, caller, PROJECT_ROLE_OWNER, &p);
    if (st == DK_OK && !tasks_if_match(if_match, p.version))
        st = DK_E_PRECONDITION;
    if (st == DK_OK)
        st = tasks_repo_role(r, &tx, a, id, target, true, &role);
    if (st == DK_OK && role != PROJECT_ROLE_ADMIN)
        st = DK_E_VALIDATION;
    if (st == DK_OK)
        st = projects_repo_bump(&tx, a, &p, NULL, NULL, target);
    if (st == DK_OK)
        st = projects_repo_set_role(&tx, a, id, target, PROJECT_ROLE_OWNER);
    if (st == DK_OK)
        st = projects_repo_set_role(&tx, a, id, caller, PROJECT_ROLE_ADMIN);
    if (st == DK_OK)
        p.my_role = PROJECT_ROLE_ADMIN;
    st = dk_tx_end(&tx, st);
    if (st == DK_OK)
        *ret = p;
    return st;
}

/* ---------- members ---------- */

static void members_repo_row(const dk_db_rows *rows, int i, project_member *m)
{
    m->user_id = dk_db_value(rows, i, 0);
    m->role = (int)dk_sql_get_int(rows, i, 1);
    m->added_at = dk_sql_get_int(rows, i, 2);
}

dk_status projects_repo_members(const tasks_repo *r, dk_arena *a, const char *id,
                                const char *caller, const projects_after *after, int limit,
                                project_member **ret, int *ret_n)
{
    const char *v[] = {id, caller, dk_sql_int(a, limit + 1),
                       after && after->has ? dk_sql_int(a, after->value) : NULL,
                       after && after->has ? after->id : NULL};
    dk_db_rows *rows = NULL;
    /* the caller's membership is part of the statement: a non-member gets no rows */
    dk_status st = dk_sql(
        r->db, a,
        after && after->has
            ? "SELECT m.user_id, m.role, m.added_at FROM tasks_project_members m WHERE "
              "m.project_id = $1 AND EXISTS (SELECT 1 FROM tasks_project_members c WHERE "
              "c.project_id = $1 AND c.user_id = $2) AND (m.added_at > CAST($4 AS BIGINT) OR "
              "(m.added_at = CAST($4 AS BIGINT) AND m.user_id > $5)) ORDER BY m.added_at, "
              "m.user_id LIMIT CAST($3 AS INTEGER)"
            : "SELECT m.user_id, m.role, m.added_at FROM tasks_project_members m WHERE "
              "m.project_id = $1 AND EXISTS (SELECT 1 FROM tasks_project_members c WHERE "
              "c.project_id = $1 AND c.user_id = $2) ORDER BY m.added_at, m.user_id LIMIT "
              "CAST($3 AS INTEGER)",
        after && after->has ? 5 : 3, v, &rows);
    if (st != DK_OK)
        return st;
    if (rows->nrows == 0) {
        /* no rows at all: not a member (a project always has its owner) */
        project p;
        st = projects_repo_get(r, a, id, caller, &p);
        if (st != DK_OK)
            return st;
    }
    project_member *items = dk_arena_alloc(a, sizeof *items * (size_t)(rows->nrows + 1));
    for (int i = 0; i < rows->nrows; i++)
        members_repo_row(rows, i, &items[i]);
    *ret = items;
    *ret_n = rows->nrows;
    return DK_OK;
}

dk_status projects_repo_member_add(const tasks_repo *r, dk_arena *a, const char *id,
                                   const char *caller, const char *user_id, int role,
                                   project_member *ret)
{
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    project p;
    st = projects_repo_need(r, &tx, a, id, caller, PROJECT_ROLE_ADMIN, &p);
    if (st == DK_OK && role >= PROJECT_ROLE_ADMIN && p.my_role != PROJECT_ROLE_OWNER)
        st = DK_E_FORBIDDEN;
    int64_t now = dk_now_ms();
    const char *v[] = {id, user_id, dk_sql_int(a, role), dk_sql_int(a, now)};
    if (st == DK_OK) /* a member already there: the primary key says 409 */
        st = dk_tx_query(&tx, a,
                         "INSERT INTO tasks_project_members (project_id, user_id, role, added_at) "
                         "VALUES ($1, $2, CAST($3 AS INTEGER), CAST($4 AS BIGINT))",
                         4, v, NULL);
    if (st == DK_OK) {
        json_t *ev = dk_json_own(a, json_pack("{s:s,s:{s:s,s:s},s:s,s:s}", "actor_id", caller,
                                              "project", "id", p.id, "name", p.name, "user_id",
                                              user_id, "role", project_role_name(role)));
        st = tasks_repo_record(&tx, a, DK_EVENT_PROJECT_MEMBER_ADDED, ev);
    }
    st = dk_tx_end(&tx, st);
    if (st == DK_OK) {
        ret->user_id = user_id;
        ret->role = role;
        ret->added_at = now;
    }
    return st;
}

/* The target's membership in tx (locked): DK_E_NOT_FOUND when not a member. */
static dk_status members_repo_target(const tasks_repo *r, dk_tx *tx, dk_arena *a, const char *id,
                                     const char *user_id, project_member *ret)
{
    const char *v[] = {id, user_id};
    dk_db_rows *rows = NULL;
    dk_status st =
        dk_tx_query(tx, a,
                    projects_repo_pg(r) ? "SELECT user_id, role, added_at FROM "
                                          "tasks_project_members WHERE project_id = $1 AND "
                                          "user_id = $2 FOR UPDATE"
                                        : "SELECT user_id, role, added_at FROM "
                                          "tasks_project_members WHERE project_id = $1 AND "
                                          "user_id = $2",
                    2, v, &rows);
    if (st != DK_OK)
        return st;
    if (rows->nrows == 0)
        return DK_E_NOT_FOUND;
    members_repo_row(rows, 0, ret);
    return DK_OK;
}

dk_status projects_repo_member_role(const tasks_repo *r, dk_arena *a, const char *id,
                                    const char *caller, const char *user_id, int role,
                                    project_member *ret)
{
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    project p;
    project_member m;
    st = projects_repo_need(r, &tx, a, id, caller, PROJECT_ROLE_ADMIN, &p);
    if (st == DK_OK)
        st = members_repo_target(r, &tx, a, id, user_id, &m);
    if (st == DK_OK && m.role == PROJECT_ROLE_OWNER)
        st = DK_E_FORBIDDEN; /* the owner is never demoted (transfer first) */
    if (st == DK_OK && role >= PROJECT_ROLE_ADMIN && p.my_role != PROJECT_ROLE_OWNER)
        st = DK_E_FORBIDDEN;
    if (st == DK_OK && m.role != role)
        st = projects_repo_set_role(&tx, a, id, user_id, role);
    st = dk_tx_end(&tx, st);
    if (st == DK_OK) {
        m.role = role;
        *ret = m;
    }
    return st;
}

dk_status projects_repo_member_remove(const tasks_repo *r, dk_arena *a, const char *id,
                                      const char *caller, const char *user_id)
{
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    project p;
    project_member m;
    bool leaving = strcmp(caller, user_id) == 0;
    st = projects_repo_need(r, &tx, a, id, caller,
                            leaving ? PROJECT_ROLE_VIEWER : PROJECT_ROLE_ADMIN, &p);
    if (st == DK_OK)
        st = members_repo_target(r, &tx, a, id, user_id, &m);
    if (st == DK_OK && m.role == PROJECT_ROLE_OWNER)
        st = DK_E_FORBIDDEN; /* the owner never leaves (transfer first) */
    const char *v[] = {id, user_id};
    if (st == DK_OK)
        st = tasks_repo_rewrite_where(r, &tx, a, "t.project_id = $1 AND t.assignee_id = $2", 2, v,
                                      caller, true, false);
    if (st == DK_OK)
        st = dk_tx_query(&tx, a,
                         "DELETE FROM tasks_project_members WHERE project_id = $1 AND user_id = $2",
                         2, v, NULL);
    return dk_tx_end(&tx, st);
}

/* ---------- comments ---------- */

#define CM_COLS "c.id, c.task_id, c.author_id, c.body, c.created_at, c.updated_at, c.seq"

static void comments_repo_row(const dk_db_rows *rows, int i, task_comment *c)
{
    c->id = dk_db_value(rows, i, 0);
    c->task_id = dk_db_value(rows, i, 1);
    c->author_id = dk_db_value(rows, i, 2);
    c->body = dk_db_value(rows, i, 3);
    c->created_at = dk_sql_get_int(rows, i, 4);
    c->updated_at = dk_sql_get_int(rows, i, 5);
    c->seq = dk_sql_get_int(rows, i, 6);
}

/* "c.task_id = $1 AND <the task is visible to $2>": the rule of tasks_visible_sql. */
static const char *comments_repo_visible(dk_arena *a, const char *alias)
{
    return dk_arena_printf(a, "EXISTS (SELECT 1 FROM tasks t WHERE t.id = %s.task_id AND %s)",
                           alias, tasks_visible_sql(a, 2));
}

/* A page of a visible task's rows in table (aliased c, ordered by seq): limit + 1 rows after
 * the cursor, so the caller can tell whether there is a next page. DK_E_NOT_FOUND when the
 * task is not visible to caller. */
static dk_status projects_repo_task_page(const tasks_repo *r, dk_arena *a, const char *cols,
                                         const char *table, const char *task_id, const char *caller,
                                         const projects_after *after, int limit, dk_db_rows **ret)
{
    tasks_task t;
    dk_status st = tasks_repo_get(r, a, task_id, caller, &t, NULL);
    if (st != DK_OK)
        return st;
    const char *v[] = {task_id, caller, dk_sql_int(a, limit + 1),
                       dk_sql_int(a, after && after->has ? after->value : 0)};
    return dk_sql(r->db, a,
                  dk_arena_printf(a,
                                  "SELECT %s FROM %s c WHERE c.task_id = $1 AND %s AND c.seq > "
                                  "CAST($4 AS BIGINT) ORDER BY c.seq LIMIT CAST($3 AS INTEGER)",
                                  cols, table, comments_repo_visible(a, "c")),
                  4, v, ret);
}

dk_status comments_repo_list(const tasks_repo *r, dk_arena *a, const char *task_id,
                             const char *caller, const projects_after *after, int limit,
                             task_comment **ret, int *ret_n)
{
    dk_db_rows *rows = NULL;
    dk_status st = projects_repo_task_page(r, a, CM_COLS, "tasks_comments", task_id, caller, after,
                                           limit, &rows);
    if (st != DK_OK)
        return st;
    task_comment *items = dk_arena_alloc(a, sizeof *items * (size_t)(rows->nrows + 1));
    for (int i = 0; i < rows->nrows; i++)
        comments_repo_row(rows, i, &items[i]);
    *ret = items;
    *ret_n = rows->nrows;
    return DK_OK;
}

/* The visible task in tx (row locked) and the caller's role in its project. */
static dk_status comments_repo_task(const tasks_repo *r, dk_tx *tx, dk_arena *a,
                                    const char *task_id, const char *caller, tasks_task *t,
                                    int *role)
{
    const char *v[] = {task_id, caller};
    dk_db_rows *rows = NULL;
    dk_status st = tasks_repo_lock_project_of(r, tx, a, task_id);
    if (st != DK_OK)
        return st;
    st = dk_tx_query(tx, a,
                     dk_arena_printf(a,
                                     "SELECT t.id, t.project_id, t.owner_id, t.title, t.status, "
                                     "t.assignee_id, t.version, t.updated_at FROM tasks t WHERE "
                                     "t.id = $1 AND %s%s",
                                     tasks_visible_sql(a, 2),
                                     projects_repo_pg(r) ? " FOR SHARE OF t" : ""),
                     2, v, &rows);
    if (st != DK_OK)
        return st;
    if (rows->nrows == 0)
        return DK_E_NOT_FOUND;
    memset(t, 0, sizeof *t);
    t->id = dk_db_value(rows, 0, 0);
    t->project_id = dk_db_value(rows, 0, 1);
    t->owner_id = dk_db_value(rows, 0, 2);
    t->title = dk_db_value(rows, 0, 3);
    t->status = tasks_status_parse(dk_db_value(rows, 0, 4));
    t->assignee_id = dk_db_value(rows, 0, 5);
    t->version = dk_sql_get_int(rows, 0, 6);
    t->updated_at = dk_sql_get_int(rows, 0, 7);
    *role = PROJECT_ROLE_NONE;
    if (t->project_id) /* held until commit: a removal waits for this comment, or wins */
        st = tasks_repo_role(r, tx, a, t->project_id, caller, true, role);
    if (st == DK_OK && t->project_id && *role == PROJECT_ROLE_NONE)
        st = DK_E_NOT_FOUND;
    return st;
}

dk_status comments_repo_create(const tasks_repo *r, dk_arena *a, const char *task_id,
                               const char *caller, const char *body, task_comment *ret)
{
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    tasks_task t;
    int role = PROJECT_ROLE_NONE, owner_role = PROJECT_ROLE_NONE;
    st = comments_repo_task(r, &tx, a, task_id, caller, &t, &role);
    if (st == DK_OK && t.project_id)
        st = tasks_repo_role(r, &tx, a, t.project_id, t.owner_id, false, &owner_role);
    char id[DK_UUID_LEN];
    dk_uuid7(id);
    int64_t now = dk_now_ms();
    const char *v[] = {dk_arena_strdup(a, id), task_id, caller, body, dk_sql_int(a, now)};
    dk_db_rows *rows = NULL;
    if (st == DK_OK)
        st = dk_tx_query(&tx, a,
                         "INSERT INTO tasks_comments (id, task_id, author_id, body, created_at, "
                         "updated_at) VALUES ($1, $2, $3, $4, CAST($5 AS BIGINT), CAST($5 AS "
                         "BIGINT)) RETURNING seq",
                         5, v, &rows);
    if (st == DK_OK) {
        json_t *ev = dk_json_own(a, json_pack("{s:s,s:o,s:{s:s},s:b}", "actor_id", caller, "task",
                                              tasks_repo_event_task(&t), "comment", "id", v[0],
                                              "owner_can_see",
                                              !t.project_id || owner_role != PROJECT_ROLE_NONE));
        st = tasks_repo_record(&tx, a, DK_EVENT_TASK_COMMENTED, ev);
    }
    if (st == DK_OK) {
        memset(ret, 0, sizeof *ret);
        ret->id = v[0];
        ret->task_id = task_id;
        ret->author_id = caller;
        ret->body = body;
        ret->created_at = ret->updated_at = now;
        ret->seq = rows->nrows > 0 ? dk_sql_get_int(rows, 0, 0) : 0;
    }
    return dk_tx_end(&tx, st);
}

/* The comment of a visible task, in tx. */
static dk_status comments_repo_get(const tasks_repo *r, dk_tx *tx, dk_arena *a, const char *task_id,
                                   const char *comment_id, const char *caller, task_comment *c,
                                   int *role)
{
    tasks_task t;
    dk_status st = comments_repo_task(r, tx, a, task_id, caller, &t, role);
    if (st != DK_OK)
        return st;
    const char *v[] = {comment_id, task_id};
    dk_db_rows *rows = NULL;
    st = dk_tx_query(tx, a,
                     "SELECT " CM_COLS " FROM tasks_comments c WHERE c.id = $1 AND c.task_id = $2",
                     2, v, &rows);
    if (st != DK_OK)
        return st;
    if (rows->nrows == 0)
        return DK_E_NOT_FOUND;
    comments_repo_row(rows, 0, c);
    return DK_OK;
}

dk_status comments_repo_patch(const tasks_repo *r, dk_arena *a, const char *task_id,
                              const char *comment_id, const char *caller, const char *body,
                              task_comment *ret)
{
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    task_comment c;
    int role;
    st = comments_repo_get(r, &tx, a, task_id, comment_id, caller, &c, &role);
    if (st == DK_OK && !(c.author_id && strcmp(c.author_id, caller) == 0))
        st = DK_E_FORBIDDEN;
    int64_t now = dk_now_ms();
    if (st == DK_OK && now < c.updated_at)
        now = c.updated_at;
    const char *v[] = {comment_id, body, dk_sql_int(a, now)};
    if (st == DK_OK && strcmp(c.body, body) != 0) {
        st = dk_tx_query(&tx, a,
                         "UPDATE tasks_comments SET body = $2, updated_at = CAST($3 AS BIGINT) "
                         "WHERE id = $1",
                         3, v, NULL);
        c.body = body;
        c.updated_at = now;
    }
    st = dk_tx_end(&tx, st);
    if (st == DK_OK)
        *ret = c;
    return st;
}

dk_status comments_repo_delete(const tasks_repo *r, dk_arena *a, const char *task_id,
                               const char *comment_id, const char *caller)
{
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    task_comment c;
    int role = PROJECT_ROLE_NONE;
    st = comments_repo_get(r, &tx, a, task_id, comment_id, caller, &c, &role);
    if (st == DK_OK && !(c.author_id && strcmp(c.author_id, caller) == 0) &&
        role < PROJECT_ROLE_ADMIN)
        st = DK_E_FORBIDDEN;
    const char *v[] = {comment_id};
    if (st == DK_OK)
        st = dk_tx_query(&tx, a, "DELETE FROM tasks_comments WHERE id = $1", 1, v, NULL);
    return dk_tx_end(&tx, st);
}

/* ---------- activity ---------- */

dk_status activity_repo_list(const tasks_repo *r, dk_arena *a, const char *task_id,
                             const char *caller, const projects_after *after, int limit,
                             task_activity **ret, int *ret_n)
{
    dk_db_rows *rows = NULL;
    dk_status st = projects_repo_task_page(
        r, a,
        "c.id, c.actor_id, c.action, c.field, c.old_value, c.new_value, c.comment_id, "
        "c.created_at, c.seq",
        "tasks_activity", task_id, caller, after, limit, &rows);
    if (st != DK_OK)
        return st;
    task_activity *items = dk_arena_alloc(a, sizeof *items * (size_t)(rows->nrows + 1));
    for (int i = 0; i < rows->nrows; i++) {
        task_activity *e = &items[i];
        e->id = dk_db_value(rows, i, 0);
        e->actor_id = dk_db_value(rows, i, 1);
        e->action = dk_db_value(rows, i, 2);
        e->field = dk_db_value(rows, i, 3);
        e->old_value = dk_db_value(rows, i, 4);
        e->new_value = dk_db_value(rows, i, 5);
        e->comment_id = dk_db_value(rows, i, 6);
        e->created_at = dk_sql_get_int(rows, i, 7);
        e->seq = dk_sql_get_int(rows, i, 8);
    }
    *ret = items;
    *ret_n = rows->nrows;
    return DK_OK;
}
