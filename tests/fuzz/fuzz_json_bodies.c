/* JSON request bodies of the task, project and comment routes: any bytes parse or are
 * refused; what parses is validated without a crash. The first byte picks the route. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "core/arena.h"
#include "core/http.h"
#include "services/tasks/tasks_model.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return 0;
}

static const char *str_member(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned route = data[0] % 4;
    json_error_t jerr;
    json_t *body = json_loadb((const char *)data + 1, size - 1, JSON_REJECT_DUPLICATES, &jerr);
    if (!body || !json_is_object(body)) {
        json_decref(body);
        return 0;
    }
    dk_arena *a = dk_arena_new();
    dk_errors errs;
    dk_errors_init(&errs);
    if (route <= 1) {
        tasks_changes ch;
        tasks_changes_parse(a, body, route == 0, &ch, &errs);
        if (route == 0 && !dk_errors_any(&errs)) {
            tasks_task t;
            tasks_task_new(a, &ch, "0190a1b2-0000-7000-8000-000000000001",
                           "0190a1b2-0000-7000-8000-000000000002", 1700000000000, &t);
            dk_jw w = {0};
            tasks_task_write(&w, &t);
            size_t n = 0;
            (void)dk_jw_finish(&w, a, &n);
        }
    } else if (route == 2) {
        const char *name = str_member(body, "name"), *desc = str_member(body, "description");
        if (name)
            (void)project_validate_name(name);
        if (desc)
            (void)project_validate_description(desc);
        const char *role = str_member(body, "role");
        if (role)
            (void)project_role_parse(role);
    } else {
        const char *b = str_member(body, "body");
        if (b)
            (void)comment_validate_body(b);
    }
    dk_errors_release(&errs);
    dk_arena_free(a);
    json_decref(body);
    return 0;
}
