/* notifications_repo.h — the notifications service's SQL: in-app notifications, delivery
 * preferences, the delivery queue (worked by notifications_delivery) and the due-date table the
 * scheduler reads (fed by task events). Tables are prefixed `notifications_` on both engines
 * (schema `notifications` on PostgreSQL). Creating a notification is idempotent by a
 * de-duplication key and queues its webhook/e-mail deliveries in the same transaction.
 * Strings live in the caller's arena; thread-safe as the db port. Errors: DK_E_NOT_FOUND and
 * the db port's. */
#ifndef DK_NOTIFICATIONS_REPO_H
#define DK_NOTIFICATIONS_REPO_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/migrate.h"
#include "ports/db.h"

#define DK_NOTIFICATIONS_NMIGRATIONS 2
extern const dk_migration dk_notifications_migrations[DK_NOTIFICATIONS_NMIGRATIONS];

typedef struct notifications_repo {
    const dk_database *db;
    bool email_on; /* smtp.url is set: queue e-mail deliveries for users who enabled them */
} notifications_repo;

typedef struct notifications_item {
    int64_t seq; /* creation order within the database */
    const char *id;
    const char *user_id;
    const char *type;
    const char *task_id;  /* NULL when none */
    const char *actor_id; /* NULL when none (the scheduler) */
    const char *message;
    int64_t created_at;
    bool has_read;
    int64_t read_at;
} notifications_item;

/* The contract's {notification}. */
json_t *notifications_item_json(const notifications_item *n);

/* Creates n (the repo sets id, seq and created_at) unless dedup_key was used before; then
 * queues its deliveries. *ret_created tells which. */
dk_status notifications_repo_create(const notifications_repo *r, dk_arena *a, notifications_item *n,
                                    const char *dedup_key, bool *ret_created) DK_MUSTCHECK;
/* The user's notifications, newest first, with seq < before (0: from the newest); up to
 * limit + 1 rows so the caller can tell whether there is a next page. */
dk_status notifications_repo_list(const notifications_repo *r, dk_arena *a, const char *user,
                                  bool unread_only, int64_t before, int limit,
                                  notifications_item **ret, int *ret_n) DK_MUSTCHECK;
/* The user's notifications with seq > after, oldest first, at most limit. */
dk_status notifications_repo_after(const notifications_repo *r, dk_arena *a, const char *user,
                                   int64_t after, int limit, notifications_item **ret,
                                   int *ret_n) DK_MUSTCHECK;
/* The seq of the user's notification id (DK_E_NOT_FOUND), and of their newest (0 if none). */
dk_status notifications_repo_seq_of(const notifications_repo *r, dk_arena *a, const char *user,
                                    const char *id, int64_t *ret) DK_MUSTCHECK;
dk_status notifications_repo_last_seq(const notifications_repo *r, dk_arena *a, const char *user,
                                      int64_t *ret) DK_MUSTCHECK;
/* Marks read (keeping an earlier read_at); DK_E_NOT_FOUND unless it is the user's. */
dk_status notifications_repo_read(const notifications_repo *r, dk_arena *a, const char *user,
                                  const char *id) DK_MUSTCHECK;
dk_status notifications_repo_read_all(const notifications_repo *r, dk_arena *a,
                                      const char *user) DK_MUSTCHECK;

typedef struct notifications_user_prefs {
    bool email_enabled;
    const char *webhook_url;    /* NULL when none */
    const char *webhook_secret; /* NULL when none */
} notifications_user_prefs;
/* The defaults (false, NULL) when the user never set any. */
dk_status notifications_repo_prefs_get(const notifications_repo *r, dk_arena *a, const char *user,
                                       notifications_user_prefs *ret) DK_MUSTCHECK;
dk_status notifications_repo_prefs_put(const notifications_repo *r, dk_arena *a, const char *user,
                                       const notifications_user_prefs *p) DK_MUSTCHECK;

/* The user is gone: their notifications, preferences and deliveries go. */
dk_status notifications_repo_forget_user(const notifications_repo *r, dk_arena *a,
                                         const char *user) DK_MUSTCHECK;

/* What the scheduler knows of a task, from its events. */
typedef struct notifications_due_task {
    const char *task_id;
    const char *owner_id;
    const char *assignee_id; /* NULL when unassigned */
    const char *title;
    const char *status; /* "todo" | "in_progress" | "done" | "deleted" */
    bool has_due;
    int64_t due_at;
    int64_t version; /* the task's version; older events never overwrite newer ones */
} notifications_due_task;
/* Records the task's state unless a newer version is stored. A changed due date may be
 * notified again. */
dk_status notifications_repo_due_put(const notifications_repo *r, dk_arena *a,
                                     const notifications_due_task *d) DK_MUSTCHECK;
/* Tasks not done whose due date is at or before horizon and has not been notified, and was
 * not already past when it was set; at most limit. */
dk_status notifications_repo_due_scan(const notifications_repo *r, dk_arena *a, int64_t horizon,
                                      int limit, notifications_due_task **ret,
                                      int *ret_n) DK_MUSTCHECK;
dk_status notifications_repo_due_mark(const notifications_repo *r, dk_arena *a, const char *task_id,
                                      int64_t due_at) DK_MUSTCHECK;
/* Forgets the tombstones of tasks deleted before cutoff. */
dk_status notifications_repo_due_prune(const notifications_repo *r, dk_arena *a,
                                       int64_t cutoff) DK_MUSTCHECK;

#endif
