/* test_notifications_rules.c — who is notified of which task change: assignment to someone
 * else (on create and on update), a status change by someone other than the owner, nothing for
 * one's own changes, the due-date state handed to the scheduler, stable de-duplication keys,
 * and malformed events refused. */
#include "testutil.h"

#include <stdio.h>
#include <string.h>

#include "core/arena.h"
#include "services/notifications/notifications_rules.h"
#include "core/banned.h"

#define OWNER "01936d5e-0000-7000-8000-000000000001"
#define OTHER "01936d5e-0000-7000-8000-000000000002"
#define THIRD "01936d5e-0000-7000-8000-000000000003"
#define TASK  "01936d5e-0000-7000-8000-0000000000aa"
#define EVID  "01936d5e-0000-7000-8000-0000000000ee"

static const char *event(dk_arena *a, const char *actor, const char *assignee, const char *status,
                         const char *before)
{
    return dk_arena_printf(
        a,
        "{\"id\":\"" EVID "\",\"occurred_at\":1,\"actor_id\":\"%s\",\"task\":{\"id\":\"" TASK
        "\",\"title\":\"Write \\\"docs\\\"\",\"status\":\"%s\",\"owner_id\":\"" OWNER
        "\",\"assignee_id\":%s,\"due_at\":1700000000000,\"updated_at\":5,\"version\":3}%s%s}",
        actor, status, assignee, before ? ",\"before\":" : "", before ? before : "");
}

static void test_created_with_assignee(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    notifications_rules_plan p;
    assert_int_equal(notifications_rules_task_event(
                         a, "task.created", event(a, OWNER, "\"" OTHER "\"", "todo", NULL), &p),
                     DK_OK);
    assert_int_equal(p.n, 1);
    assert_string_equal(p.items[0].item.type, NT_TYPE_ASSIGNED);
    assert_string_equal(p.items[0].item.user_id, OTHER);
    assert_string_equal(p.items[0].item.actor_id, OWNER);
    assert_string_equal(p.items[0].item.task_id, TASK);
    assert_string_equal(p.items[0].item.message, "You were assigned \"Write \"docs\"\"");
    assert_string_equal(p.items[0].dedup_key, EVID ":task.assigned:" OTHER);
    assert_string_equal(p.due.task_id, TASK);
    assert_true(p.due.has_due);
    assert_int_equal(p.due.due_at, 1700000000000LL);
    assert_int_equal(p.due.version, 3);
    assert_string_equal(p.due.status, "todo");
    dk_arena_free(a);
}

static void test_self_assignment_and_unassigned_notify_nobody(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    notifications_rules_plan p;
    assert_int_equal(notifications_rules_task_event(
                         a, "task.created", event(a, OWNER, "\"" OWNER "\"", "todo", NULL), &p),
                     DK_OK);
    assert_int_equal(p.n, 0);
    assert_int_equal(notifications_rules_task_event(a, "task.created",
                                                    event(a, OWNER, "null", "todo", NULL), &p),
                     DK_OK);
    assert_int_equal(p.n, 0);
    assert_null(p.due.assignee_id);
    dk_arena_free(a);
}

static void test_updated_assignment(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    notifications_rules_plan p;
    /* reassigned from OTHER to THIRD by the owner: THIRD is told */
    const char *before = "{\"status\":\"todo\",\"assignee_id\":\"" OTHER "\",\"due_at\":null}";
    assert_int_equal(notifications_rules_task_event(
                         a, "task.updated", event(a, OWNER, "\"" THIRD "\"", "todo", before), &p),
                     DK_OK);
    assert_int_equal(p.n, 1);
    assert_string_equal(p.items[0].item.user_id, THIRD);
    /* same assignee as before (another field changed): nobody */
    before = "{\"status\":\"todo\",\"assignee_id\":\"" THIRD "\",\"due_at\":null}";
    assert_int_equal(notifications_rules_task_event(
                         a, "task.updated", event(a, OWNER, "\"" THIRD "\"", "todo", before), &p),
                     DK_OK);
    assert_int_equal(p.n, 0);
    dk_arena_free(a);
}

static void test_status_change(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    notifications_rules_plan p;
    const char *before = "{\"status\":\"todo\",\"assignee_id\":\"" OTHER "\",\"due_at\":null}";
    /* the assignee moves it: the owner is told */
    assert_int_equal(notifications_rules_task_event(
                         a, "task.updated", event(a, OTHER, "\"" OTHER "\"", "done", before), &p),
                     DK_OK);
    assert_int_equal(p.n, 1);
    assert_string_equal(p.items[0].item.type, NT_TYPE_STATUS_CHANGED);
    assert_string_equal(p.items[0].item.user_id, OWNER);
    assert_string_equal(p.items[0].item.message, "\"Write \"docs\"\" is now done");
    /* the owner has left the task's project: nobody */
    const char *ev = event(a, OTHER, "\"" OTHER "\"", "done", before);
    char *gone = dk_arena_printf(a, "%.*s%s}", (int)strlen(ev) - 1, ev, ",\"owner_can_see\":false");
    assert_int_equal(notifications_rules_task_event(a, "task.updated", gone, &p), DK_OK);
    assert_int_equal(p.n, 0);
    /* the owner moves it: nobody */
    assert_int_equal(notifications_rules_task_event(
                         a, "task.updated", event(a, OWNER, "\"" OTHER "\"", "done", before), &p),
                     DK_OK);
    assert_int_equal(p.n, 0);
    dk_arena_free(a);
}

#define UNDATED                                                                                    \
    "{\"id\":\"" EVID "\",\"occurred_at\":1,\"actor_id\":\"" OWNER "\",\"task\":{\"id\":\"" TASK   \
    "\",\"title\":\"t\",\"status\":\"%s\",\"owner_id\":\"" OWNER "\",\"assignee_id\":\"" OTHER     \
    "\",\"due_at\":null,\"updated_at\":5,\"version\":3}%s}"

/* A task without a due date, before or after, gives the scheduler nothing to store; one that
 * gets a due date, or loses one, does. */
static void test_no_due_date_stores_nothing(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    notifications_rules_plan p;
    /* created without one: the assignee is still told, nothing is stored */
    assert_int_equal(notifications_rules_task_event(a, "task.created",
                                                    dk_arena_printf(a, UNDATED, "todo", ""), &p),
                     DK_OK);
    assert_int_equal(p.n, 1);
    assert_null(p.due.task_id);
    /* a status change, none before either */
    assert_int_equal(notifications_rules_task_event(
                         a, "task.updated",
                         dk_arena_printf(a, UNDATED, "done",
                                         ",\"before\":{\"status\":\"todo\",\"assignee_id\":"
                                         "\"" OTHER "\",\"due_at\":null}"),
                         &p),
                     DK_OK);
    assert_null(p.due.task_id);
    /* the due date removed: stored, so that the scheduler forgets it */
    assert_int_equal(notifications_rules_task_event(
                         a, "task.updated",
                         dk_arena_printf(a, UNDATED, "todo",
                                         ",\"before\":{\"status\":\"todo\",\"assignee_id\":"
                                         "\"" OTHER "\",\"due_at\":1700000000000}"),
                         &p),
                     DK_OK);
    assert_string_equal(p.due.task_id, TASK);
    assert_false(p.due.has_due);
    /* deleted: a tombstone whatever the date */
    assert_int_equal(notifications_rules_task_event(a, "task.deleted",
                                                    dk_arena_printf(a, UNDATED, "todo", ""), &p),
                     DK_OK);
    assert_string_equal(p.due.task_id, TASK);
    assert_string_equal(p.due.status, "deleted");
    /* with a due date, before none: stored */
    assert_int_equal(notifications_rules_task_event(
                         a, "task.updated",
                         event(a, OWNER, "null", "todo",
                               "{\"status\":\"todo\",\"assignee_id\":null,\"due_at\":null}"),
                         &p),
                     DK_OK);
    assert_string_equal(p.due.task_id, TASK);
    assert_true(p.due.has_due);
    dk_arena_free(a);
}

/* A dated task's update stores its state only when it changes what the scheduler keeps: the
 * title, the due date, owner or assignee, open or done; not the description, priority,
 * labels, project, nor todo to in_progress. */
static void test_due_stored_only_when_kept_state_changes(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    notifications_rules_plan p;
    const char *before = "{\"status\":\"todo\",\"assignee_id\":null,\"due_at\":1700000000000}";
    static const struct {
        const char *status, *changes;
        bool stored;
    } cases[] = {
        {"in_progress", "{\"status\":{\"old\":\"todo\",\"new\":\"in_progress\"}}", false},
        {"done", "{\"status\":{\"old\":\"todo\",\"new\":\"done\"}}", true},
        {"todo",
         "{\"description\":{\"old\":\"a\",\"new\":\"b\"},\"priority\":{\"old\":"
         "\"low\",\"new\":\"high\"},\"labels\":{\"old\":[],\"new\":[\"x\"]}}",
         false},
        {"todo", "{\"project_id\":{\"old\":null,\"new\":\"p\"}}", false},
        {"todo", "{\"title\":{\"old\":\"a\",\"new\":\"b\"}}", true},
        {"todo", "{\"due_at\":{\"old\":1,\"new\":1700000000000}}", true},
        {"todo", "{\"assignee_id\":{\"old\":\"" OTHER "\",\"new\":null}}", true},
        {"todo", "{\"owner_id\":{\"old\":\"" OTHER "\",\"new\":\"" OWNER "\"}}", true},
        {"todo",
         "{\"priority\":{\"old\":\"low\",\"new\":\"high\"},\"status\":{\"old\":"
         "\"done\",\"new\":\"todo\"}}",
         true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *ev = event(a, OWNER, "null", cases[i].status, before);
        ev = dk_arena_printf(a, "%.*s,\"changes\":%s}", (int)strlen(ev) - 1, ev, cases[i].changes);
        assert_int_equal(notifications_rules_task_event(a, "task.updated", ev, &p), DK_OK);
        if (cases[i].stored) {
            assert_non_null(p.due.task_id);
            assert_string_equal(p.due.status, cases[i].status);
        } else {
            assert_null(p.due.task_id);
        }
    }
    dk_arena_free(a);
}

static void test_deleted_is_a_tombstone(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    notifications_rules_plan p;
    assert_int_equal(notifications_rules_task_event(
                         a, "task.deleted", event(a, OWNER, "\"" OTHER "\"", "todo", NULL), &p),
                     DK_OK);
    assert_int_equal(p.n, 0);
    assert_string_equal(p.due.status, "deleted");
    assert_int_equal(p.due.version, 4); /* outranks the last update's version */
    dk_arena_free(a);
}

static void test_malformed(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    notifications_rules_plan p;
    assert_int_equal(notifications_rules_task_event(a, "task.created", "not json", &p),
                     DK_E_BAD_REQUEST);
    assert_int_equal(notifications_rules_task_event(a, "task.created", "{\"id\":\"x\"}", &p),
                     DK_E_BAD_REQUEST);
    assert_int_equal(notifications_rules_task_event(a, "task.renamed",
                                                    event(a, OWNER, "null", "todo", NULL), &p),
                     DK_E_BAD_REQUEST);
    dk_arena_free(a);
}

/* task.commented: the owner and the assignee, never the author, once each; an owner who has
 * left the task's project is not told; the scheduler's state is left alone. */
static void test_commented(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    notifications_rules_plan p;
    assert_int_equal(notifications_rules_task_event(
                         a, "task.commented", event(a, THIRD, "\"" OTHER "\"", "todo", NULL), &p),
                     DK_OK);
    assert_int_equal(p.n, 2);
    assert_string_equal(p.items[0].item.user_id, OWNER);
    assert_string_equal(p.items[1].item.user_id, OTHER);
    assert_string_equal(p.items[0].item.type, NT_TYPE_COMMENTED);
    assert_string_equal(p.items[0].item.message, "New comment on \"Write \"docs\"\"");
    assert_string_equal(p.items[1].dedup_key, EVID ":task.commented:" OTHER);
    assert_null(p.due.task_id);
    /* the assignee comments: only the owner */
    assert_int_equal(notifications_rules_task_event(
                         a, "task.commented", event(a, OTHER, "\"" OTHER "\"", "todo", NULL), &p),
                     DK_OK);
    assert_int_equal(p.n, 1);
    assert_string_equal(p.items[0].item.user_id, OWNER);
    /* the owner, also the assignee, comments: nobody */
    assert_int_equal(notifications_rules_task_event(
                         a, "task.commented", event(a, OWNER, "\"" OWNER "\"", "todo", NULL), &p),
                     DK_OK);
    assert_int_equal(p.n, 0);
    /* an owner who left the project */
    const char *ev = event(a, THIRD, "null", "todo", NULL);
    char *gone = dk_arena_printf(a, "%.*s%s}", (int)strlen(ev) - 1, ev, ",\"owner_can_see\":false");
    assert_int_equal(notifications_rules_task_event(a, "task.commented", gone, &p), DK_OK);
    assert_int_equal(p.n, 0);
    dk_arena_free(a);
}

static void test_member_added(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    notifications_rules_plan p;
    const char *ev = "{\"id\":\"" EVID "\",\"occurred_at\":7,\"actor_id\":\"" OWNER
                     "\",\"project\":{\"id\":\"p\",\"name\":\"Launch\"},\"user_id\":\"" OTHER
                     "\",\"role\":\"editor\"}";
    assert_int_equal(notifications_rules_task_event(a, "project.member_added", ev, &p), DK_OK);
    assert_int_equal(p.n, 1);
    assert_string_equal(p.items[0].item.user_id, OTHER);
    assert_string_equal(p.items[0].item.type, NT_TYPE_MEMBER_ADDED);
    assert_null(p.items[0].item.task_id);
    assert_string_equal(p.items[0].item.actor_id, OWNER);
    assert_string_equal(p.items[0].item.message,
                        "You were added to the project \"Launch\" as editor");
    assert_null(p.due.task_id);
    assert_int_equal(p.occurred_at, 7);
    assert_int_equal(
        notifications_rules_task_event(a, "project.member_added", "{\"id\":\"x\"}", &p),
        DK_E_BAD_REQUEST);
    assert_int_equal(notifications_rules_task_event(a, "project.member_added", "[", &p),
                     DK_E_BAD_REQUEST);
    dk_arena_free(a);
}

static void test_due_soon(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    notifications_due_task d = {.task_id = TASK,
                                .owner_id = OWNER,
                                .assignee_id = NULL,
                                .title = "Ship",
                                .status = "todo",
                                .has_due = true,
                                .due_at = 1700000000000LL};
    notifications_rules_item n;
    notifications_rules_due_soon(a, &d, &n);
    assert_string_equal(n.item.user_id, OWNER); /* unassigned: the owner */
    assert_string_equal(n.item.type, NT_TYPE_DUE_SOON);
    assert_null(n.item.actor_id);
    assert_string_equal(n.item.message, "\"Ship\" is due 2023-11-14T22:13:20.000Z");
    assert_string_equal(n.dedup_key, "due:" TASK ":1700000000000");
    d.assignee_id = OTHER;
    notifications_rules_due_soon(a, &d, &n);
    assert_string_equal(n.item.user_id, OTHER);
    dk_arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_created_with_assignee),
        cmocka_unit_test(test_self_assignment_and_unassigned_notify_nobody),
        cmocka_unit_test(test_updated_assignment),
        cmocka_unit_test(test_status_change),
        cmocka_unit_test(test_no_due_date_stores_nothing),
        cmocka_unit_test(test_due_stored_only_when_kept_state_changes),
        cmocka_unit_test(test_deleted_is_a_tombstone),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_due_soon),
        cmocka_unit_test(test_commented),
        cmocka_unit_test(test_member_added),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
