/* tasks_repo.h — the tasks service's SQL: the `tasks` table (schema `tasks` on PostgreSQL, with
 * a generated tsvector and GIN indexes; on SQLite a JSON labels column and an external-content
 * FTS5 table `tasks_fts` kept in sync by triggers), its migrations, and every statement the
 * service runs. Read-check-write operations run in one transaction (row locked on PostgreSQL,
 * BEGIN IMMEDIATE on SQLite). Results live in the caller's arena; thread-safe as the db port.
 * Errors: DK_E_NOT_FOUND (absent or not visible to the caller), DK_E_FORBIDDEN,
 * DK_E_PRECONDITION (If-Match), and the db port's. */
#ifndef DK_TASKS_REPO_H
#define DK_TASKS_REPO_H

#include <stdbool.h>

#include "core/migrate.h"
#include "ports/db.h"
#include "services/tasks/tasks_model.h"
#include "services/tasks/tasks_query.h"

#define DK_TASKS_NMIGRATIONS 2
extern const dk_migration dk_tasks_migrations[DK_TASKS_NMIGRATIONS];

typedef struct tasks_repo {
    const dk_database *db;
    const unsigned char *cursor_key; /* 32 bytes, for next_cursor */
} tasks_repo;

/* Every create, patch and delete also records its task.* event (ports/task_events.h) in
 * tasks_outbox, in the same transaction; the service's outbox relay publishes it. */
#define TASKS_OUTBOX "tasks_outbox"

dk_status tasks_repo_create(const tasks_repo *r, dk_arena *a, const tasks_task *t) DK_MUSTCHECK;
/* The task by id, whoever may see it (the caller checks visibility). */
dk_status tasks_repo_get(const tasks_repo *r, dk_arena *a, const char *id,
                         tasks_task *ret) DK_MUSTCHECK;
/* Applies ch as caller: DK_E_NOT_FOUND unless caller owns or is assigned the task,
 * DK_E_FORBIDDEN for an assignee changing more than status, DK_E_PRECONDITION when if_match
 * (NULL: none) does not name the current version. ret gets the task as stored afterwards. */
dk_status tasks_repo_patch(const tasks_repo *r, dk_arena *a, const char *id, const char *caller,
                           const tasks_changes *ch, const char *if_match,
                           tasks_task *ret) DK_MUSTCHECK;
/* Deletes as caller: the owner only (the assignee gets DK_E_FORBIDDEN, others
 * DK_E_NOT_FOUND); if_match as for patch. */
dk_status tasks_repo_delete(const tasks_repo *r, dk_arena *a, const char *id, const char *caller,
                            const char *if_match) DK_MUSTCHECK;
/* One page of the list; *ret_next is NULL on the last page. */
dk_status tasks_repo_list(const tasks_repo *r, dk_arena *a, const tasks_list_query *q,
                          tasks_task **ret, int *ret_n, char **ret_next) DK_MUSTCHECK;
/* The user is gone: their tasks go, and tasks assigned to them become unassigned. */
dk_status tasks_repo_forget_user(const tasks_repo *r, dk_arena *a,
                                 const char *user_id) DK_MUSTCHECK;

#endif
