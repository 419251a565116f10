/* tasks_repo.h — the tasks service's SQL: the `tasks` table (schema `tasks` on PostgreSQL, with
 * a tsvector that triggers compute when the text changes, and GIN indexes; on SQLite a JSON
 * labels column and an external-content FTS5 table `tasks_fts` kept in sync by triggers), its
 * migrations, and every statement the service runs. Read-check-write operations run in one
 * transaction (row locked on PostgreSQL, BEGIN IMMEDIATE on SQLite). Results live in the
 * caller's arena; thread-safe as the db port.
 * Errors: DK_E_NOT_FOUND (absent or not visible to the caller), DK_E_FORBIDDEN,
 * DK_E_PRECONDITION (If-Match), and the db port's. */
#ifndef DK_TASKS_REPO_H
#define DK_TASKS_REPO_H

#include <stdbool.h>

#include "core/batch.h"
#include "core/migrate.h"
#include "ports/db.h"
#include "core/sql.h"
#include "services/tasks/tasks_model.h"
#include "services/tasks/tasks_query.h"

#define DK_TASKS_NMIGRATIONS 10
extern const dk_migration dk_tasks_migrations[DK_TASKS_NMIGRATIONS];

typedef struct tasks_repo {
    const dk_database *db;
    const unsigned char *cursor_key; /* 32 bytes, for next_cursor */
    /* tasks_repo_prepare: the text of a task read by id, unlocked [0] and locked [1] (built
     * once: formatting the same text per request was a large share of a task read's
     * instructions, docs/design/measurements.md); empty: built per call */
    char read_sql[2][1024];
    /* PostgreSQL: personal creates, and the writes of personal patches, arriving together
     * share a statement (core/batch.h); NULL on SQLite, whose writes are grouped by its
     * writer */
    dk_batch *creates, *patches;
} tasks_repo;

/* Builds the statements that do not change between calls and the write batches (after db is
 * set); tasks_repo_release frees what it made. */
void tasks_repo_prepare(tasks_repo *r);
void tasks_repo_release(tasks_repo *r);

/* Every create, patch and delete also records its event (ports/task_events.h) in
 * tasks_outbox, in the same transaction; the service's outbox relay publishes it. A task's
 * activity history is derived from the same event as it is recorded (tasks_activity: one
 * entry for a creation, one per changed field of an update, one per comment), so history and
 * events cannot disagree. */
#define TASKS_OUTBOX "tasks_outbox"

/* Creates t (owner t->owner_id). A project task needs its creator to be an editor of the
 * project (else DK_E_VALIDATION, *ret_field "project_id") and an assignee that is a member
 * ("assignee_id"); membership rows are locked until commit, so a member removed meanwhile
 * either had the task created before the removal or gets the 422. */
dk_status tasks_repo_create(const tasks_repo *r, dk_arena *a, const tasks_task *t,
                            const char **ret_field) DK_MUSTCHECK; /* never queues */
/* The same without waiting for the creates it shares a statement with (a personal task on
 * PostgreSQL, docs/design/write-batching.md): returns true when the create finished on this
 * thread (*ret_status, and *ret_field as above, set), or false when it was queued: then
 * later->on_queue has been called (on this thread, before anything else could finish it) and
 * later->done will be called on another thread with later->status set. The caller sets both
 * callbacks; later must stay alive until done (the repository sets its arg, in a). */
bool tasks_repo_create_start(const tasks_repo *r, dk_arena *a, const tasks_task *t,
                             dk_batch_job *later, dk_status *ret_status,
                             const char **ret_field) DK_MUSTCHECK;
/* The task by id if caller may see it (DK_E_NOT_FOUND otherwise), with the caller's role in
 * its project (PROJECT_ROLE_NONE for a personal task). ret_role may be NULL. */
dk_status tasks_repo_get(const tasks_repo *r, dk_arena *a, const char *id, const char *caller,
                         tasks_task *ret, int *ret_role) DK_MUSTCHECK;
/* Applies ch as caller: DK_E_NOT_FOUND unless caller may see the task, DK_E_FORBIDDEN for a
 * change the caller may not make (personal: the assignee changes the status only; project:
 * viewers change the status of tasks assigned to them only), DK_E_PRECONDITION when if_match
 * (NULL: none) does not name the current version, DK_E_VALIDATION (*ret_field) for a project
 * the caller may not edit or an assignee who is not a member. ret gets the task as stored. */
dk_status tasks_repo_patch(const tasks_repo *r, dk_arena *a, const char *id, const char *caller,
                           const tasks_changes *ch, const char *if_match, tasks_task *ret,
                           const char **ret_field) DK_MUSTCHECK;
/* The same without waiting for the patches it shares a statement with (a personal task that
 * stays personal, on PostgreSQL): returns true when the patch finished on this thread
 * (*ret_status, *ret, *ret_field as above), or false when its write was queued: then
 * later->on_queue has been called and later->done will be, on another thread, with
 * later->status set; on DK_OK *ret (which must stay alive until then) is the task as written;
 * DK_E_CONFLICT means the task changed since it was read: call tasks_repo_patch (which reads
 * again, and never queues). */
bool tasks_repo_patch_start(const tasks_repo *r, dk_arena *a, const char *id, const char *caller,
                            const tasks_changes *ch, const char *if_match, dk_batch_job *later,
                            dk_status *ret_status, tasks_task *ret,
                            const char **ret_field) DK_MUSTCHECK;
/* Deletes as caller (with its comments and activity): a personal task by its owner (the
 * assignee gets DK_E_FORBIDDEN), a project task by an editor (a viewer gets DK_E_FORBIDDEN);
 * others DK_E_NOT_FOUND; if_match as for patch. */
dk_status tasks_repo_delete(const tasks_repo *r, dk_arena *a, const char *id, const char *caller,
                            const char *if_match) DK_MUSTCHECK;
/* One page of the list; *ret_next is NULL on the last page. With q->project_id, a caller who
 * is not a member of that project gets DK_E_NOT_FOUND. */
dk_status tasks_repo_list(const tasks_repo *r, dk_arena *a, tasks_list_query *q, tasks_task **ret,
                          int *ret_n, char **ret_next) DK_MUSTCHECK;
/* Whether deleting the account must wait: it owns a project that has other members. */
dk_status tasks_repo_account_blocked(const tasks_repo *r, dk_arena *a, const char *user_id,
                                     bool *ret_blocked) DK_MUSTCHECK;
/* The user is gone: their personal tasks go and personal tasks assigned to them become
 * unassigned; their one-member projects go with their tasks; the tasks they created in other
 * projects pass to each project's owner; their memberships end (assignments cleared); their
 * comments stay, by a deleted author. A project they still own with other members (deleted
 * in a race with an invitation) passes to its longest-standing admin, else member. */
dk_status tasks_repo_forget_user(const tasks_repo *r, dk_arena *a,
                                 const char *user_id) DK_MUSTCHECK;

/* ---------- shared with projects_repo.c ---------- */

/* Records an event in tx and the activity it implies (payload borrowed, modified). */
dk_status tasks_repo_record(dk_tx *tx, dk_arena *a, const char *type, json_t *payload) DK_MUSTCHECK;
/* The event object of a task ({"id", "title", ...}, see ports/task_events.h). */
json_t *tasks_repo_event_task(const tasks_task *t);
/* The caller's role in a project, read in tx (PROJECT_ROLE_NONE when not a member). lock: hold
 * the membership row until commit (PostgreSQL FOR SHARE; SQLite holds the database lock). */
dk_status tasks_repo_role(const tasks_repo *r, dk_tx *tx, dk_arena *a, const char *project_id,
                          const char *user_id, bool lock, int *ret_role) DK_MUSTCHECK;
/* Lock order on PostgreSQL, so that membership changes and task writes never deadlock: the
 * project row first (FOR SHARE by task writes, FOR UPDATE by membership and project changes),
 * then task rows, then membership rows. The first locks a project (NULL: none); the second
 * the project of a task, read before the task row is locked. No-ops on SQLite. */
dk_status tasks_repo_lock_project(const tasks_repo *r, dk_tx *tx, dk_arena *a,
                                  const char *project_id) DK_MUSTCHECK;
dk_status tasks_repo_lock_project_of(const tasks_repo *r, dk_tx *tx, dk_arena *a,
                                     const char *task_id) DK_MUSTCHECK;
/* Deletes, as actor, the tasks matching `where` (a predicate over `t`) with their comments and
 * activity, recording a task.deleted event for each. */
dk_status tasks_repo_delete_where(const tasks_repo *r, dk_tx *tx, dk_arena *a, const char *where,
                                  int nparams, const char *const *params,
                                  const char *actor) DK_MUSTCHECK;
/* Clears, as actor, the assignee of every task matching `where`, and/or sets owner_id to
 * new_owner (NULL: unchanged; "=project" : each task's project owner), each with its
 * task.updated event. */
dk_status tasks_repo_rewrite_where(const tasks_repo *r, dk_tx *tx, dk_arena *a, const char *where,
                                   int nparams, const char *const *params, const char *actor,
                                   bool unassign, bool owner_to_project_owner) DK_MUSTCHECK;

#endif
