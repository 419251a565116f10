/* task_events.h — the events the tasks service publishes (through its transactional outbox)
 * for others to react to, e.g. notifications. Every payload is a JSON object:
 *   "id": event id (uuid7, for de-duplication), "occurred_at": ms since the epoch,
 *   "actor_id": the user who made the change,
 *   "task": {"id", "title", "status", "owner_id", "assignee_id" (null), "project_id" (null),
 *            "due_at" (ms or null), "updated_at" (ms), "version"} — the task after the change
 *            (for task.deleted: as it was when deleted),
 *   "before": {"status", "assignee_id", "due_at"} — task.updated only: the values before,
 *   "changes": {"<field>": {"old", "new"}} — task.updated only: every changed field, in the
 *            API's representation (the task's activity history is derived from it),
 *   "owner_can_see": false when the task's owner has left its project (task.commented
 *            always carries it, task.updated when the status changed): the change is not
 *            announced to them,
 *   task.commented: "comment": {"id"}.
 * project.member_added: "actor_id", "project": {"id", "name"}, "user_id" (the new member),
 *   "role". 
 * Consumers must be idempotent (delivery is at least once) and may see events of one task in
 * order only within one publishing replica. */
#ifndef DK_PORTS_TASK_EVENTS_H
#define DK_PORTS_TASK_EVENTS_H

#define DK_EVENT_TASK_CREATED         "task.created"
#define DK_EVENT_TASK_UPDATED         "task.updated"
#define DK_EVENT_TASK_DELETED         "task.deleted"
#define DK_EVENT_TASK_COMMENTED       "task.commented"
#define DK_EVENT_PROJECT_MEMBER_ADDED "project.member_added"

#endif
