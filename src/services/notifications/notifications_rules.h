/* notifications_rules.h — who is told what, decided from task events (ports/task_events.h):
 * task.assigned to a new assignee who is not the actor; task.status_changed to the owner when
 * someone else changed the status (not to an owner who has left the task's project);
 * task.commented to the owner and the assignee, not the author (nor an owner who has left the
 * task's project); project.member_added to the added user; and, for the due-soon scheduler,
 * the task's current state.
 * Each notification carries a de-duplication key derived from the event id (or from the task
 * and due date for task.due_soon), so redelivered events never show twice. Pure functions;
 * strings in the caller's arena. */
#ifndef DK_NOTIFICATIONS_RULES_H
#define DK_NOTIFICATIONS_RULES_H

#include "core/status.h"
#include "services/notifications/notifications_repo.h"

typedef struct dk_arena dk_arena;

#define NT_TYPE_ASSIGNED       "task.assigned"
#define NT_TYPE_STATUS_CHANGED "task.status_changed"
#define NT_TYPE_DUE_SOON       "task.due_soon"
#define NT_TYPE_COMMENTED      "task.commented"
#define NT_TYPE_MEMBER_ADDED   "project.member_added"

typedef struct notifications_rules_item {
    notifications_item item; /* user_id, type, task_id, actor_id, message */
    const char *dedup_key;
} notifications_rules_item;

typedef struct notifications_rules_plan {
    int64_t occurred_at; /* of the event, ms since the epoch (0 when absent) */
    int n;
    notifications_rules_item items[2];
    notifications_due_task
        due; /* the task's state for the scheduler (status "deleted" on task.deleted);
                   due.task_id NULL when there is nothing to store: project events, and
                   the creation or update of a task without a due date that had none */
} notifications_rules_plan;

/* The plan for one task.* or project.* event; DK_E_BAD_REQUEST when the payload is
 * malformed. */
dk_status notifications_rules_task_event(dk_arena *a, const char *type, const char *payload,
                                         notifications_rules_plan *ret) DK_MUSTCHECK;
/* The task.due_soon notification of a task coming due. */
void notifications_rules_due_soon(dk_arena *a, const notifications_due_task *d,
                                  notifications_rules_item *ret);

#endif
