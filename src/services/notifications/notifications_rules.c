#include "services/notifications/notifications_rules.h"

#include <jansson.h>
#include <string.h>

#include "core/arena.h"
#include "core/timeutil.h"
#include "ports/task_events.h"
#include "core/banned.h"

static const char *rules_str(dk_arena *a, const json_t *obj, const char *key)
{
    const char *v = json_string_value(json_object_get(obj, key));
    return v ? dk_arena_strdup(a, v) : NULL;
}

static bool rules_same(const char *x, const char *y)
{
    return (!x && !y) || (x && y && strcmp(x, y) == 0);
}

static void rules_add(dk_arena *a, notifications_rules_plan *p, const char *event_id,
                      const char *user, const char *type, const char *task_id, const char *actor,
                      const char *message)
{
    notifications_rules_item *n = &p->items[p->n++];
    memset(n, 0, sizeof *n);
    n->item.user_id = user;
    n->item.type = type;
    n->item.task_id = task_id;
    n->item.actor_id = actor;
    n->item.message = message;
    n->dedup_key = dk_arena_printf(a, "%s:%s:%s", event_id, type, user);
}

static bool rules_open(const char *status)
{
    return status && (strcmp(status, "todo") == 0 || strcmp(status, "in_progress") == 0);
}

/* Whether a task.updated event's "changes" (an object) touch what the due-date scheduler
 * keeps and reads: the title (its message), the due date, who is told (owner, assignee), and
 * whether the task is open (todo or in_progress: the scan's filter; todo to in_progress is
 * not such a change). The description, priority, labels and project are not kept. */
static bool rules_due_relevant(const json_t *changes)
{
    if (json_object_get(changes, "title") || json_object_get(changes, "due_at") ||
        json_object_get(changes, "assignee_id") || json_object_get(changes, "owner_id"))
        return true;
    json_t *status = json_object_get(changes, "status");
    return status && rules_open(json_string_value(json_object_get(status, "old"))) !=
                         rules_open(json_string_value(json_object_get(status, "new")));
}

/* project.member_added: to the added user, unless they added themselves. */
static dk_status rules_rules_member_added(dk_arena *a, json_t *ev, notifications_rules_plan *ret)
{
    const char *event_id = rules_str(a, ev, "id");
    const char *actor = rules_str(a, ev, "actor_id");
    const char *user = rules_str(a, ev, "user_id");
    const char *role = rules_str(a, ev, "role");
    const char *name = rules_str(a, json_object_get(ev, "project"), "name");
    if (!event_id || !actor || !user || !role || !name)
        return DK_E_BAD_REQUEST;
    if (strcmp(user, actor) != 0)
        rules_add(a, ret, event_id, user, NT_TYPE_MEMBER_ADDED, NULL, actor,
                  dk_arena_printf(a, "You were added to the project \"%s\" as %s", name, role));
    return DK_OK;
}

dk_status notifications_rules_task_event(dk_arena *a, const char *type, const char *payload,
                                         notifications_rules_plan *ret)
{
    memset(ret, 0, sizeof *ret);
    json_error_t jerr;
    json_t *ev = json_loads(payload, 0, &jerr);
    if (strcmp(type, DK_EVENT_PROJECT_MEMBER_ADDED) == 0) {
        ret->occurred_at = (int64_t)json_integer_value(json_object_get(ev, "occurred_at"));
        dk_status st = json_is_object(ev) ? rules_rules_member_added(a, ev, ret) : DK_E_BAD_REQUEST;
        json_decref(ev);
        return st;
    }
    json_t *task = json_object_get(ev, "task");
    const char *event_id = rules_str(a, ev, "id");
    const char *actor = rules_str(a, ev, "actor_id");
    ret->occurred_at = (int64_t)json_integer_value(json_object_get(ev, "occurred_at"));
    notifications_due_task *d = &ret->due;
    d->task_id = rules_str(a, task, "id");
    d->owner_id = rules_str(a, task, "owner_id");
    d->assignee_id = rules_str(a, task, "assignee_id");
    d->title = rules_str(a, task, "title");
    d->status = rules_str(a, task, "status");
    json_t *due = json_object_get(task, "due_at");
    d->has_due = json_is_integer(due);
    d->due_at = d->has_due ? (int64_t)json_integer_value(due) : 0;
    d->version = (int64_t)json_integer_value(json_object_get(task, "version"));
    if (!event_id || !actor || !d->task_id || !d->owner_id || !d->title || !d->status) {
        json_decref(ev);
        return DK_E_BAD_REQUEST;
    }
    bool created = strcmp(type, DK_EVENT_TASK_CREATED) == 0;
    bool updated = strcmp(type, DK_EVENT_TASK_UPDATED) == 0;
    if (strcmp(type, DK_EVENT_TASK_COMMENTED) == 0) {
        /* the task is unchanged: nothing for the scheduler */
        json_t *ocs = json_object_get(ev, "owner_can_see");
        bool owner_sees = !json_is_false(ocs);
        const char *msg = dk_arena_printf(a, "New comment on \"%s\"", d->title);
        if (owner_sees && strcmp(d->owner_id, actor) != 0)
            rules_add(a, ret, event_id, d->owner_id, NT_TYPE_COMMENTED, d->task_id, actor, msg);
        if (d->assignee_id && strcmp(d->assignee_id, actor) != 0 &&
            strcmp(d->assignee_id, d->owner_id) != 0)
            rules_add(a, ret, event_id, d->assignee_id, NT_TYPE_COMMENTED, d->task_id, actor, msg);
        ret->due.task_id = NULL;
    } else if (strcmp(type, DK_EVENT_TASK_DELETED) == 0) {
        d->status = "deleted";
        d->version++; /* outranks the last update, which carried the same version */
    } else if (created || updated) {
        json_t *before = json_object_get(ev, "before");
        const char *was_assignee = updated ? rules_str(a, before, "assignee_id") : NULL;
        const char *was_status = updated ? rules_str(a, before, "status") : d->status;
        if (d->assignee_id && strcmp(d->assignee_id, actor) != 0 &&
            (created || !rules_same(was_assignee, d->assignee_id)))
            rules_add(a, ret, event_id, d->assignee_id, NT_TYPE_ASSIGNED, d->task_id, actor,
                      dk_arena_printf(a, "You were assigned \"%s\"", d->title));
        if (updated && was_status && strcmp(was_status, d->status) != 0 &&
            strcmp(actor, d->owner_id) != 0 && !json_is_false(json_object_get(ev, "owner_can_see")))
            rules_add(a, ret, event_id, d->owner_id, NT_TYPE_STATUS_CHANGED, d->task_id, actor,
                      dk_arena_printf(a, "\"%s\" is now %s", d->title, d->status));
        /* A task without a due date that had none before gives the scheduler nothing to
         * store: the first event that sets one writes the whole state, and until then the
         * scheduler never reads the row (a write per task event saved). */
        if (!d->has_due && (created || json_is_null(json_object_get(before, "due_at"))))
            ret->due.task_id = NULL;
        /* Nor does a change to nothing it keeps: the row stays as the last change that
         * mattered left it (its status then says open or done, not which open status), and
         * the version check keeps it right when events come out of order, since a skipped
         * event would have stored what the row holds. An event without "changes" is stored. */
        json_t *changes = json_object_get(ev, "changes");
        if (updated && json_is_object(changes) && !rules_due_relevant(changes))
            ret->due.task_id = NULL;
    } else {
        json_decref(ev);
        return DK_E_BAD_REQUEST;
    }
    json_decref(ev);
    return DK_OK;
}

void notifications_rules_due_soon(dk_arena *a, const notifications_due_task *d,
                                  notifications_rules_item *ret)
{
    char when[DK_RFC3339_LEN];
    dk_time_format(d->due_at, when);
    memset(ret, 0, sizeof *ret);
    ret->item.user_id = d->assignee_id ? d->assignee_id : d->owner_id;
    ret->item.type = NT_TYPE_DUE_SOON;
    ret->item.task_id = d->task_id;
    ret->item.actor_id = NULL;
    ret->item.message = dk_arena_printf(a, "\"%s\" is due %s", d->title, when);
    ret->dedup_key = dk_arena_printf(a, "due:%s:%lld", d->task_id, (long long)d->due_at);
}
