/* test_tasks_model.c — the task model's rules added with projects: who may change what
 * (may_edit / may_status), project_id in bodies, the changed fields of an update with old and
 * new values (the activity history and the events are made of them), strong If-Match versus
 * weak If-None-Match, roles and the project and comment field rules. */
#include "testutil.h"

#include <string.h>

#include "core/arena.h"
#include "core/json.h"
#include "services/tasks/tasks_model.h"
#include "core/banned.h"

#define OWNER "01936d5e-0000-7000-8000-000000000001"
#define OTHER "01936d5e-0000-7000-8000-000000000002"
#define PROJ  "01936d5e-0000-7000-8000-0000000000bb"

static tasks_task base(dk_arena *a)
{
    tasks_changes ch;
    memset(&ch, 0, sizeof ch);
    ch.title = "Plan";
    tasks_task t;
    tasks_task_new(a, &ch, "01936d5e-0000-7000-8000-0000000000aa", OWNER, 1000, &t);
    return t;
}

static void test_rights(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    tasks_task cur = base(a), next;
    bool changed = false;
    tasks_changes ch;
    memset(&ch, 0, sizeof ch);
    ch.status_set = true;
    ch.status = TASKS_STATUS_DONE;
    /* status: an editor, or the assignee; nobody else */
    assert_int_equal(tasks_apply(&cur, &ch, false, false, 2000, &next, &changed), DK_E_FORBIDDEN);
    assert_int_equal(tasks_apply(&cur, &ch, false, true, 2000, &next, &changed), DK_OK);
    assert_true(changed && next.has_completed && next.version == 2);
    assert_int_equal(tasks_apply(&cur, &ch, true, false, 2000, &next, &changed), DK_OK);
    /* anything else: editors only, status right or not */
    ch.project_set = true;
    ch.project_id = PROJ;
    assert_int_equal(tasks_apply(&cur, &ch, false, true, 2000, &next, &changed), DK_E_FORBIDDEN);
    assert_int_equal(tasks_apply(&cur, &ch, true, false, 2000, &next, &changed), DK_OK);
    assert_string_equal(next.project_id, PROJ);
    /* a body that changes nothing is no change, whoever sends it */
    memset(&ch, 0, sizeof ch);
    ch.title_set = true;
    ch.title = "Plan";
    assert_int_equal(tasks_apply(&cur, &ch, false, false, 2000, &next, &changed), DK_OK);
    assert_false(changed);
    dk_arena_free(a);
}

static void test_project_id_in_bodies(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    struct {
        const char *body;
        bool ok, set;
        const char *want;
    } cases[] = {
        {"{\"title\":\"x\",\"project_id\":\"" PROJ "\"}", true, true, PROJ},
        {"{\"title\":\"x\",\"project_id\":null}", true, true, NULL},
        {"{\"title\":\"x\"}", true, false, NULL},
        {"{\"title\":\"x\",\"project_id\":\"nope\"}", false, false, NULL},
        {"{\"title\":\"x\",\"project_id\":7}", false, false, NULL},
        {"{\"title\":\"x\",\"project_id\":\"01936D5E-0000-7000-8000-0000000000BB\"}", false, false,
         NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_error_t err;
        json_t *body = dk_json_own(a, json_loads(cases[i].body, 0, &err));
        dk_errors errs;
        dk_errors_init(&errs);
        tasks_changes ch;
        tasks_changes_parse(a, body, true, &ch, &errs);
        assert_int_equal(!dk_errors_any(&errs), cases[i].ok);
        assert_int_equal(ch.project_set, cases[i].set);
        if (cases[i].want)
            assert_string_equal(ch.project_id, cases[i].want);
        else
            assert_null(ch.project_id);
        if (cases[i].ok) {
            tasks_task t;
            tasks_task_new(a, &ch, "01936d5e-0000-7000-8000-0000000000aa", OWNER, 1, &t);
            if (cases[i].want)
                assert_string_equal(t.project_id, cases[i].want);
            else
                assert_null(t.project_id);
        }
        dk_errors_release(&errs);
    }
    dk_arena_free(a);
}

static void test_changes_json(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    tasks_task b = base(a), x = b;
    json_t *none = tasks_changes_json(&b, &x);
    assert_int_equal(json_object_size(none), 0);
    json_decref(none);
    const char *labels[] = {"q1", "work"};
    x.title = "Plan v2";
    x.description = "details";
    x.status = TASKS_STATUS_DONE;
    x.has_completed = true; /* consequences are not changes */
    x.completed_at = 5;
    x.version = 9;
    x.updated_at = 9;
    x.priority = TASKS_PRIORITY_URGENT;
    x.has_due = true;
    x.due_at = 1700000000000LL;
    x.labels = labels;
    x.nlabels = 2;
    x.assignee_id = OTHER;
    x.project_id = PROJ;
    x.owner_id = OTHER;
    json_t *c = tasks_changes_json(&b, &x);
    char *text = dk_json_render(a, c, NULL);
    json_decref(c);
    assert_string_equal(
        text, "{\"title\":{\"old\":\"Plan\",\"new\":\"Plan v2\"},\"description\":{\"old\":\"\","
              "\"new\":\"details\"},\"status\":{\"old\":\"todo\",\"new\":\"done\"},\"priority\":{"
              "\"old\":\"medium\",\"new\":\"urgent\"},\"due_at\":{\"old\":null,\"new\":\"2023-11-"
              "14T22:13:20.000Z\"},\"labels\":{\"old\":[],\"new\":[\"q1\",\"work\"]},"
              "\"assignee_id\":{\"old\":null,\"new\":\"" OTHER "\"},\"project_id\":{\"old\":null,"
              "\"new\":\"" PROJ "\"},\"owner_id\":{\"old\":\"" OWNER "\",\"new\":\"" OTHER "\"}}");
    /* and back: due date cleared, project left */
    c = tasks_changes_json(&x, &b);
    assert_true(json_is_null(json_object_get(json_object_get(c, "due_at"), "new")));
    assert_true(json_is_null(json_object_get(json_object_get(c, "project_id"), "new")));
    json_decref(c);
    dk_arena_free(a);
}

static void test_if_match_strong_if_none_match_weak(void **state)
{
    (void)state;
    assert_true(tasks_if_match(NULL, 3));
    assert_true(tasks_if_match("\"3\"", 3));
    assert_true(tasks_if_match("*", 3));
    assert_true(tasks_if_match("\"1\", \"3\"", 3));
    assert_true(tasks_if_match("W/\"3\", \"3\"", 3));
    assert_false(tasks_if_match("W/\"3\"", 3));
    assert_false(tasks_if_match("\"1\", W/\"3\"", 3));
    assert_false(tasks_if_match("\"4\"", 3));
    assert_false(tasks_if_match("3", 3));
    assert_false(tasks_if_match("", 3));
    assert_false(tasks_if_none_match(NULL, 3));
    assert_true(tasks_if_none_match("W/\"3\"", 3));
    assert_true(tasks_if_none_match("\"3\"", 3));
    assert_true(tasks_if_none_match("*", 3));
    assert_false(tasks_if_none_match("W/\"2\"", 3));
}

static void test_roles_and_fields(void **state)
{
    (void)state;
    const char *names[] = {"viewer", "editor", "admin", "owner"};
    for (int i = 0; i < PROJECT_NROLES; i++) {
        assert_string_equal(project_role_name(i), names[i]);
        assert_int_equal(project_role_parse(names[i]), i);
    }
    assert_true(PROJECT_ROLE_VIEWER < PROJECT_ROLE_EDITOR &&
                PROJECT_ROLE_EDITOR < PROJECT_ROLE_ADMIN &&
                PROJECT_ROLE_ADMIN < PROJECT_ROLE_OWNER);
    assert_int_equal(project_role_parse("Admin"), -1);
    assert_int_equal(project_role_parse(NULL), -1);
    char name[102];
    memset(name, 'n', 100);
    name[100] = '\0';
    assert_null(project_validate_name(name));
    name[100] = 'n';
    name[101] = '\0';
    assert_non_null(project_validate_name(name));
    assert_non_null(project_validate_name(""));
    assert_non_null(project_validate_name("  "));
    assert_non_null(project_validate_name("\xff"));
    assert_null(project_validate_name("Ünïcødé"));
    assert_null(project_validate_description(""));
    assert_non_null(comment_validate_body(""));
    assert_non_null(comment_validate_body("\n\t"));
    assert_null(comment_validate_body("ok"));
    static char big[5002];
    memset(big, 'b', 5000);
    assert_null(comment_validate_body(big));
    big[5000] = 'b';
    assert_non_null(comment_validate_body(big));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rights),
        cmocka_unit_test(test_project_id_in_bodies),
        cmocka_unit_test(test_changes_json),
        cmocka_unit_test(test_if_match_strong_if_none_match_weak),
        cmocka_unit_test(test_roles_and_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
