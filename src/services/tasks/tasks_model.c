#include "services/tasks/tasks_model.h"

#include <stdio.h>
#include <string.h>

#include "core/arena.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "core/banned.h"

static const char *const tasks_status_names[TASKS_NSTATUS] = {"todo", "in_progress", "done"};
static const char *const tasks_priority_names[TASKS_NPRIORITY] = {"low", "medium", "high",
                                                                  "urgent"};

const char *tasks_status_name(int status)
{
    return status >= 0 && status < TASKS_NSTATUS ? tasks_status_names[status] : "todo";
}

const char *tasks_priority_name(int priority)
{
    return priority >= 0 && priority < TASKS_NPRIORITY ? tasks_priority_names[priority] : "medium";
}

int tasks_status_parse(const char *name)
{
    for (int i = 0; name && i < TASKS_NSTATUS; i++)
        if (strcmp(name, tasks_status_names[i]) == 0)
            return i;
    return -1;
}

int tasks_priority_parse(const char *name)
{
    for (int i = 0; name && i < TASKS_NPRIORITY; i++)
        if (strcmp(name, tasks_priority_names[i]) == 0)
            return i;
    return -1;
}

static const char *const project_role_names[PROJECT_NROLES] = {"viewer", "editor", "admin",
                                                               "owner"};

const char *project_role_name(int role)
{
    return role >= 0 && role < PROJECT_NROLES ? project_role_names[role] : "viewer";
}

int project_role_parse(const char *name)
{
    for (int i = 0; name && i < PROJECT_NROLES; i++)
        if (strcmp(name, project_role_names[i]) == 0)
            return i;
    return -1;
}

static bool tasks_blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
            return false;
    return true;
}

const char *tasks_validate_title(const char *title)
{
    long n = dk_utf8_len(title, strlen(title));
    if (n < 0)
        return "must be valid UTF-8";
    if (n < 1)
        return "must not be empty";
    if (n > TASKS_TITLE_MAX)
        return "must be at most 200 characters";
    if (tasks_blank(title))
        return "must not be blank";
    return NULL;
}

const char *tasks_validate_description(const char *description)
{
    long n = dk_utf8_len(description, strlen(description));
    if (n < 0)
        return "must be valid UTF-8";
    if (n > TASKS_DESCRIPTION_MAX)
        return "must be at most 10000 characters";
    return NULL;
}

const char *project_validate_name(const char *name)
{
    long n = dk_utf8_len(name, strlen(name));
    if (n < 0)
        return "must be valid UTF-8";
    if (n < 1)
        return "must not be empty";
    if (n > PROJECT_NAME_MAX)
        return "must be at most 100 characters";
    if (tasks_blank(name))
        return "must not be blank";
    return NULL;
}

const char *project_validate_description(const char *description)
{
    long n = dk_utf8_len(description, strlen(description));
    if (n < 0)
        return "must be valid UTF-8";
    if (n > PROJECT_DESCRIPTION_MAX)
        return "must be at most 2000 characters";
    return NULL;
}

const char *comment_validate_body(const char *body)
{
    long n = dk_utf8_len(body, strlen(body));
    if (n < 0)
        return "must be valid UTF-8";
    if (n < 1)
        return "must not be empty";
    if (n > COMMENT_BODY_MAX)
        return "must be at most 5000 characters";
    if (tasks_blank(body))
        return "must not be blank";
    return NULL;
}

const char *tasks_validate_label(const char *label)
{
    long n = dk_utf8_len(label, strlen(label));
    if (n < 0)
        return "must be valid UTF-8";
    if (n < 1 || n > TASKS_LABEL_MAX)
        return "each label must be 1 to 50 characters";
    return NULL;
}

/* A string member: NULL when absent (*ret_present false) or unusable (error added). */
static const char *tasks_string_member(const json_t *body, const char *key, bool *ret_present,
                                       dk_errors *errs)
{
    json_t *v = json_object_get(body, key);
    *ret_present = v != NULL;
    if (!v)
        return NULL;
    if (json_is_null(v)) {
        dk_errors_add(errs, key, "must not be null");
        return NULL;
    }
    if (!json_is_string(v)) {
        dk_errors_add(errs, key, "must be a string");
        return NULL;
    }
    return json_string_value(v);
}

static void tasks_parse_labels(dk_arena *a, const json_t *v, tasks_changes *ret, dk_errors *errs)
{
    if (!json_is_array(v)) {
        dk_errors_add(errs, "labels", "must be an array of strings");
        return;
    }
    size_t n = json_array_size(v);
    if (n > TASKS_LABELS_MAX) {
        dk_errors_add(errs, "labels", "must have at most %d labels", TASKS_LABELS_MAX);
        return;
    }
    const char **labels = dk_arena_alloc(a, (n ? n : 1) * sizeof *labels);
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_array_get(v, i);
        if (!json_is_string(item)) {
            dk_errors_add(errs, "labels", "labels[%zu] must be a string", i);
            return;
        }
        const char *s = json_string_value(item);
        const char *msg = tasks_validate_label(s);
        if (msg) {
            dk_errors_add(errs, "labels", "labels[%zu]: %s", i, msg);
            return;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(labels[j], s) == 0) {
                dk_errors_add(errs, "labels", "labels[%zu] repeats labels[%zu]", i, j);
                return;
            }
        }
        labels[i] = s;
    }
    ret->labels_set = true;
    ret->labels = labels;
    ret->nlabels = (int)n;
}

void tasks_changes_parse(dk_arena *a, const json_t *body, bool create, tasks_changes *ret,
                         dk_errors *errs)
{
    memset(ret, 0, sizeof *ret);
    bool present = false;
    const char *s = tasks_string_member(body, "title", &present, errs);
    if (!present && create) {
        dk_errors_add(errs, "title", "is required");
    } else if (s) {
        const char *msg = tasks_validate_title(s);
        if (msg)
            dk_errors_add(errs, "title", "%s", msg);
        ret->title_set = !msg;
        ret->title = s;
    }

    s = tasks_string_member(body, "description", &present, errs);
    if (s) {
        const char *msg = tasks_validate_description(s);
        if (msg)
            dk_errors_add(errs, "description", "%s", msg);
        ret->description_set = !msg;
        ret->description = s;
    }

    s = tasks_string_member(body, "status", &present, errs);
    if (s) {
        ret->status = tasks_status_parse(s);
        if (ret->status < 0)
            dk_errors_add(errs, "status", "must be one of todo, in_progress, done");
        ret->status_set = ret->status >= 0;
    }

    s = tasks_string_member(body, "priority", &present, errs);
    if (s) {
        ret->priority = tasks_priority_parse(s);
        if (ret->priority < 0)
            dk_errors_add(errs, "priority", "must be one of low, medium, high, urgent");
        ret->priority_set = ret->priority >= 0;
    }

    json_t *v = json_object_get(body, "due_at");
    if (v && json_is_null(v)) {
        ret->due_set = true;
        ret->due_null = true;
    } else if (v) {
        /* within what RFC 3339 can write back: years 0001 to 9999 in UTC */
        if (json_is_string(v) && dk_time_parse(json_string_value(v), &ret->due_at) &&
            ret->due_at >= TASKS_DUE_MIN && ret->due_at <= TASKS_DUE_MAX)
            ret->due_set = true;
        else
            dk_errors_add(errs, "due_at", "must be an RFC 3339 timestamp or null");
    }

    v = json_object_get(body, "labels");
    if (v)
        tasks_parse_labels(a, v, ret, errs);

    v = json_object_get(body, "assignee_id");
    if (v && json_is_null(v)) {
        ret->assignee_set = true;
        ret->assignee_id = NULL;
    } else if (v && !json_is_string(v)) {
        dk_errors_add(errs, "assignee_id", "must be a user id or null");
    } else if (v) {
        /* existence is the users service's to say; a string that is no id names nobody */
        if (dk_uuid_valid(json_string_value(v))) {
            ret->assignee_set = true;
            ret->assignee_id = json_string_value(v);
        } else {
            dk_errors_add(errs, "assignee_id", "must be the id of an existing user");
        }
    }

    v = json_object_get(body, "project_id");
    if (v && json_is_null(v)) {
        ret->project_set = true;
        ret->project_id = NULL;
    } else if (v && json_is_string(v) && dk_uuid_valid(json_string_value(v))) {
        ret->project_set = true;
        ret->project_id = json_string_value(v);
    } else if (v) {
        dk_errors_add(errs, "project_id", "must be the id of a project you may edit, or null");
    }
}

void tasks_task_new(dk_arena *a, const tasks_changes *ch, const char *id, const char *owner,
                    int64_t now, tasks_task *ret)
{
    memset(ret, 0, sizeof *ret);
    ret->id = id;
    ret->owner_id = owner;
    ret->title = ch->title;
    ret->description = ch->description_set ? ch->description : "";
    ret->status = ch->status_set ? ch->status : TASKS_STATUS_TODO;
    ret->priority = ch->priority_set ? ch->priority : TASKS_PRIORITY_MEDIUM;
    ret->has_due = ch->due_set && !ch->due_null;
    ret->due_at = ret->has_due ? ch->due_at : 0;
    if (ch->labels_set) {
        ret->labels = ch->labels;
        ret->nlabels = ch->nlabels;
    } else {
        ret->labels = dk_arena_alloc(a, sizeof *ret->labels);
        ret->nlabels = 0;
    }
    ret->assignee_id = ch->assignee_set ? ch->assignee_id : NULL;
    ret->project_id = ch->project_set ? ch->project_id : NULL;
    ret->created_at = now;
    ret->updated_at = now;
    ret->has_completed = ret->status == TASKS_STATUS_DONE;
    ret->completed_at = ret->has_completed ? now : 0;
    ret->version = 1;
}

static bool tasks_str_eq(const char *x, const char *y)
{
    if (!x || !y)
        return x == y;
    return strcmp(x, y) == 0;
}

static bool tasks_labels_eq(const char *const *x, int nx, const char *const *y, int ny)
{
    if (nx != ny)
        return false;
    for (int i = 0; i < nx; i++)
        if (strcmp(x[i], y[i]) != 0)
            return false;
    return true;
}

dk_status tasks_apply(const tasks_task *cur, const tasks_changes *ch, bool may_edit,
                      bool may_status, int64_t now, tasks_task *next, bool *ret_changed)
{
    *next = *cur;
    bool other = false; /* a change to anything but status */
    if (ch->title_set && strcmp(ch->title, cur->title) != 0) {
        next->title = ch->title;
        other = true;
    }
    if (ch->description_set && strcmp(ch->description, cur->description) != 0) {
        next->description = ch->description;
        other = true;
    }
    if (ch->priority_set && ch->priority != cur->priority) {
        next->priority = ch->priority;
        other = true;
    }
    if (ch->due_set) {
        bool has = !ch->due_null;
        if (has != cur->has_due || (has && ch->due_at != cur->due_at)) {
            next->has_due = has;
            next->due_at = has ? ch->due_at : 0;
            other = true;
        }
    }
    if (ch->labels_set && !tasks_labels_eq(ch->labels, ch->nlabels, cur->labels, cur->nlabels)) {
        next->labels = ch->labels;
        next->nlabels = ch->nlabels;
        other = true;
    }
    if (ch->assignee_set && !tasks_str_eq(ch->assignee_id, cur->assignee_id)) {
        next->assignee_id = ch->assignee_id;
        other = true;
    }
    if (ch->project_set && !tasks_str_eq(ch->project_id, cur->project_id)) {
        next->project_id = ch->project_id;
        other = true;
    }
    if (other && !may_edit)
        return DK_E_FORBIDDEN;
    bool status = ch->status_set && ch->status != cur->status;
    if (status && !may_edit && !may_status)
        return DK_E_FORBIDDEN;
    if (status) {
        next->status = ch->status;
        if (ch->status == TASKS_STATUS_DONE) {
            next->has_completed = true;
            next->completed_at = now;
        } else {
            next->has_completed = false;
            next->completed_at = 0;
        }
    }
    *ret_changed = other || status;
    if (*ret_changed) {
        next->version = cur->version + 1;
        next->updated_at = now > cur->updated_at ? now : cur->updated_at;
    }
    return DK_OK;
}

/* Whether a list of entity tags names the version; weak tags count only when weak_ok. */
static bool tasks_etag_list_match(const char *header, int64_t version, bool weak_ok)
{
    if (!header)
        return true;
    char want[24];
    snprintf(want, sizeof want, "%lld", (long long)version);
    size_t wlen = strlen(want);
    const char *p = header;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (!*p)
            return false;
        if (*p == '*')
            return true;
        bool weak = false;
        if (p[0] == 'W' && p[1] == '/') {
            weak = true;
            p += 2;
        }
        if (*p != '"')
            return false; /* malformed: matches nothing */
        const char *end = strchr(p + 1, '"');
        if (!end)
            return false;
        if ((weak_ok || !weak) && (size_t)(end - p - 1) == wlen && memcmp(p + 1, want, wlen) == 0)
            return true;
        p = end + 1;
    }
}

bool tasks_if_match(const char *header, int64_t version)
{
    return tasks_etag_list_match(header, version, false);
}

bool tasks_if_none_match(const char *header, int64_t version)
{
    return header && tasks_etag_list_match(header, version, true);
}

static json_t *tasks_time_json(bool has, int64_t ms)
{
    if (!has)
        return json_null();
    char buf[DK_RFC3339_LEN];
    dk_time_format(ms, buf);
    return json_string(buf);
}

static json_t *tasks_labels_value(const char *const *labels, int n)
{
    json_t *arr = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(arr, json_string(labels[i]));
    return arr;
}

static void tasks_change(json_t *out, const char *field, json_t *old, json_t *new_value)
{
    json_object_set_new(out, field, json_pack("{s:o,s:o}", "old", old, "new", new_value));
}

json_t *tasks_changes_json(const tasks_task *b, const tasks_task *x)
{
    json_t *out = json_object();
    if (strcmp(b->title, x->title) != 0)
        tasks_change(out, "title", json_string(b->title), json_string(x->title));
    if (strcmp(b->description, x->description) != 0)
        tasks_change(out, "description", json_string(b->description), json_string(x->description));
    if (b->status != x->status)
        tasks_change(out, "status", json_string(tasks_status_name(b->status)),
                     json_string(tasks_status_name(x->status)));
    if (b->priority != x->priority)
        tasks_change(out, "priority", json_string(tasks_priority_name(b->priority)),
                     json_string(tasks_priority_name(x->priority)));
    if (b->has_due != x->has_due || (b->has_due && b->due_at != x->due_at))
        tasks_change(out, "due_at", tasks_time_json(b->has_due, b->due_at),
                     tasks_time_json(x->has_due, x->due_at));
    if (!tasks_labels_eq(b->labels, b->nlabels, x->labels, x->nlabels))
        tasks_change(out, "labels", tasks_labels_value(b->labels, b->nlabels),
                     tasks_labels_value(x->labels, x->nlabels));
    if (!tasks_str_eq(b->assignee_id, x->assignee_id))
        tasks_change(out, "assignee_id", dk_json_str_or_null(b->assignee_id),
                     dk_json_str_or_null(x->assignee_id));
    if (!tasks_str_eq(b->project_id, x->project_id))
        tasks_change(out, "project_id", dk_json_str_or_null(b->project_id),
                     dk_json_str_or_null(x->project_id));
    if (!tasks_str_eq(b->owner_id, x->owner_id))
        tasks_change(out, "owner_id", json_string(b->owner_id), json_string(x->owner_id));
    return out;
}

char *tasks_etag(dk_arena *a, int64_t version)
{
    return dk_arena_printf(a, "\"%lld\"", (long long)version);
}

char *tasks_labels_json(dk_arena *a, const char *const *labels, int n)
{
    json_t *arr = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(arr, json_string(labels[i]));
    char *out = dk_json_render(a, arr, NULL);
    json_decref(arr);
    return out;
}

bool tasks_labels_from_json(dk_arena *a, const char *text, const char ***ret, int *ret_n)
{
    if (text && strcmp(text, "[]") == 0) { /* most tasks: no parse, no allocation */
        *ret = dk_arena_alloc(a, sizeof **ret);
        *ret_n = 0;
        return true;
    }
    json_error_t err;
    json_t *arr = text ? json_loads(text, 0, &err) : NULL;
    if (!json_is_array(arr)) {
        json_decref(arr);
        return false;
    }
    size_t n = json_array_size(arr);
    const char **out = dk_arena_alloc(a, (n ? n : 1) * sizeof *out);
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(arr, i));
        if (!s) {
            json_decref(arr);
            return false;
        }
        out[i] = dk_arena_strdup(a, s);
    }
    json_decref(arr);
    *ret = out;
    *ret_n = (int)n;
    return true;
}

static void tasks_write_time(dk_jw *w, const char *key, bool has, int64_t ms)
{
    dk_jw_key(w, key);
    if (!has) {
        dk_jw_null(w);
        return;
    }
    char buf[DK_RFC3339_LEN];
    dk_time_format(ms, buf);
    dk_jw_string(w, buf);
}

void tasks_task_write(dk_jw *w, const tasks_task *t)
{
    dk_jw_object(w);
    dk_jw_key(w, "id");
    dk_jw_string(w, t->id);
    dk_jw_key(w, "title");
    dk_jw_string(w, t->title);
    dk_jw_key(w, "description");
    dk_jw_string(w, t->description);
    dk_jw_key(w, "status");
    dk_jw_string(w, tasks_status_name(t->status));
    dk_jw_key(w, "priority");
    dk_jw_string(w, tasks_priority_name(t->priority));
    tasks_write_time(w, "due_at", t->has_due, t->due_at);
    dk_jw_key(w, "labels");
    dk_jw_array(w);
    for (int i = 0; i < t->nlabels; i++)
        dk_jw_string(w, t->labels[i]);
    dk_jw_array_end(w);
    dk_jw_key(w, "owner_id");
    dk_jw_string(w, t->owner_id);
    dk_jw_key(w, "assignee_id");
    dk_jw_string(w, t->assignee_id); /* NULL: null */
    dk_jw_key(w, "project_id");
    dk_jw_string(w, t->project_id);
    tasks_write_time(w, "created_at", true, t->created_at);
    tasks_write_time(w, "updated_at", true, t->updated_at);
    tasks_write_time(w, "completed_at", t->has_completed, t->completed_at);
    dk_jw_key(w, "version");
    dk_jw_int(w, (long long)t->version);
    dk_jw_object_end(w);
}
