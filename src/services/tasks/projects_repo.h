/* projects_repo.h — the SQL of projects, their members, task comments and task activity (the
 * tasks service's tables tasks_projects, tasks_project_members, tasks_comments,
 * tasks_activity; created by tasks migration 4). Every operation checks the caller's role in
 * the same transaction as its change (membership rows locked on PostgreSQL, the database
 * write lock on SQLite), so a member removed a moment ago can do nothing more. A caller who is
 * not a member gets DK_E_NOT_FOUND (the project's existence is not revealed); a member without
 * the right role DK_E_FORBIDDEN. Results live in the caller's arena; thread-safe as the db
 * port. Errors besides: DK_E_CONFLICT (duplicate name per owner, member already there),
 * DK_E_PRECONDITION (If-Match), DK_E_VALIDATION (*ret_field names the field), the port's. */
#ifndef DK_PROJECTS_REPO_H
#define DK_PROJECTS_REPO_H

#include <stdbool.h>
#include <stdint.h>

#include "services/tasks/tasks_repo.h"

typedef struct project {
    const char *id;
    const char *name;
    const char *description;
    const char *owner_id;
    int my_role; /* the caller's PROJECT_ROLE_* */
    int64_t created_at, updated_at, version;
} project;

typedef struct project_member {
    const char *user_id;
    int role;
    int64_t added_at;
} project_member;

typedef struct task_comment {
    const char *id;
    const char *task_id;
    const char *author_id; /* NULL: the author's account was deleted */
    const char *body;
    int64_t created_at, updated_at, seq;
} task_comment;

typedef struct task_activity {
    const char *id;
    const char *actor_id;              /* NULL: deleted account */
    const char *action;                /* created | updated | commented */
    const char *field;                 /* updated: the field; else NULL */
    const char *old_value, *new_value; /* JSON texts (updated only) */
    const char *comment_id;            /* commented only */
    int64_t created_at, seq;
} task_activity;

/* A keyset position: after (value, id); has = false for the first page. */
typedef struct projects_after {
    bool has;
    int64_t value;
    const char *id;   /* integer-keyed lists */
    const char *text; /* the project list: the name key */
} projects_after;

/* The lower-cased key a project name is unique and sorted by. */
char *projects_name_key(dk_arena *a, const char *name);

/* ---------- projects ---------- */

dk_status projects_repo_create(const tasks_repo *r, dk_arena *a, const project *p) DK_MUSTCHECK;
dk_status projects_repo_get(const tasks_repo *r, dk_arena *a, const char *id, const char *caller,
                            project *ret) DK_MUSTCHECK;
/* The caller's projects by name key, q (lower-cased; NULL: all) a prefix of it; limit + 1
 * rows at most (the extra one says another page follows). */
dk_status projects_repo_list(const tasks_repo *r, dk_arena *a, const char *caller,
                             const char *q_key, const projects_after *after, int limit,
                             project **ret, int *ret_n) DK_MUSTCHECK;
/* name/description NULL: unchanged. admin. */
dk_status projects_repo_patch(const tasks_repo *r, dk_arena *a, const char *id, const char *caller,
                              const char *name, const char *description, const char *if_match,
                              project *ret) DK_MUSTCHECK;
/* owner; with its tasks (and their comments and activity) and members. */
dk_status projects_repo_delete(const tasks_repo *r, dk_arena *a, const char *id, const char *caller,
                               const char *if_match) DK_MUSTCHECK;
/* owner; the target must be an admin (else DK_E_VALIDATION "user_id"); they swap roles. */
dk_status projects_repo_transfer(const tasks_repo *r, dk_arena *a, const char *id,
                                 const char *caller, const char *target, const char *if_match,
                                 project *ret) DK_MUSTCHECK;

/* ---------- members ---------- */

/* members only; ordered by added_at, user_id. */
dk_status projects_repo_members(const tasks_repo *r, dk_arena *a, const char *id,
                                const char *caller, const projects_after *after, int limit,
                                project_member **ret, int *ret_n) DK_MUSTCHECK;
/* admin; role admin only by the owner (DK_E_FORBIDDEN); an existing member DK_E_CONFLICT.
 * Records project.member_added. */
dk_status projects_repo_member_add(const tasks_repo *r, dk_arena *a, const char *id,
                                   const char *caller, const char *user_id, int role,
                                   project_member *ret) DK_MUSTCHECK;
/* admin; not the owner (DK_E_FORBIDDEN); role admin only by the owner. */
dk_status projects_repo_member_role(const tasks_repo *r, dk_arena *a, const char *id,
                                    const char *caller, const char *user_id, int role,
                                    project_member *ret) DK_MUSTCHECK;
/* admin, or the member leaving; never the owner (DK_E_FORBIDDEN). Clears the member's
 * assignments in the project (each a task.updated event). */
dk_status projects_repo_member_remove(const tasks_repo *r, dk_arena *a, const char *id,
                                      const char *caller, const char *user_id) DK_MUSTCHECK;

/* ---------- comments and activity (the task must be visible to the caller) ---------- */

dk_status comments_repo_list(const tasks_repo *r, dk_arena *a, const char *task_id,
                             const char *caller, const projects_after *after, int limit,
                             task_comment **ret, int *ret_n) DK_MUSTCHECK;
/* Records task.commented. */
dk_status comments_repo_create(const tasks_repo *r, dk_arena *a, const char *task_id,
                               const char *caller, const char *body,
                               task_comment *ret) DK_MUSTCHECK;
/* author only */
dk_status comments_repo_patch(const tasks_repo *r, dk_arena *a, const char *task_id,
                              const char *comment_id, const char *caller, const char *body,
                              task_comment *ret) DK_MUSTCHECK;
/* the author, or an admin of the task's project */
dk_status comments_repo_delete(const tasks_repo *r, dk_arena *a, const char *task_id,
                               const char *comment_id, const char *caller) DK_MUSTCHECK;
dk_status activity_repo_list(const tasks_repo *r, dk_arena *a, const char *task_id,
                             const char *caller, const projects_after *after, int limit,
                             task_activity **ret, int *ret_n) DK_MUSTCHECK;

#endif
