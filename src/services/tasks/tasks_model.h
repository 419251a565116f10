/* tasks_model.h — the task as the tasks service sees it: field rules (title, description,
 * status, priority, due date, labels, assignee, project), a request body parsed into a change
 * set, the domain rules of applying one (who may change what, completed_at, version), the
 * changed fields of an update (old and new values, for events and activity), project roles and
 * project/comment field rules, ETag/If-Match matching, and the contract's JSON form. Pure functions over caller memory (strings live in
 * the arena given); thread-safe. Validation failures are collected in a dk_errors. */
#ifndef DK_TASKS_MODEL_H
#define DK_TASKS_MODEL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/http.h"
#include "core/json.h"
#include "core/status.h"

typedef struct dk_arena dk_arena;

enum { TASKS_STATUS_TODO, TASKS_STATUS_IN_PROGRESS, TASKS_STATUS_DONE, TASKS_NSTATUS };
/* Priorities are stored as their rank, so that sorting by the column orders them. */
enum {
    TASKS_PRIORITY_LOW,
    TASKS_PRIORITY_MEDIUM,
    TASKS_PRIORITY_HIGH,
    TASKS_PRIORITY_URGENT,
    TASKS_NPRIORITY
};

#define TASKS_TITLE_MAX         200
#define TASKS_DESCRIPTION_MAX   10000
#define TASKS_LABELS_MAX        20
#define TASKS_LABEL_MAX         50
#define TASKS_DUE_MIN           (-62135596800000LL) /* 0001-01-01T00:00:00.000Z */
#define TASKS_DUE_MAX           253402300799999LL   /* 9999-12-31T23:59:59.999Z */
#define PROJECT_NAME_MAX        100
#define PROJECT_DESCRIPTION_MAX 2000
#define COMMENT_BODY_MAX        5000

/* Project roles, each including the ones before it; stored as their rank. */
enum {
    PROJECT_ROLE_NONE = -1, /* not a member */
    PROJECT_ROLE_VIEWER,
    PROJECT_ROLE_EDITOR,
    PROJECT_ROLE_ADMIN,
    PROJECT_ROLE_OWNER,
    PROJECT_NROLES
};
const char *project_role_name(int role);
/* -1 when the name is not a role. */
int project_role_parse(const char *name);
/* NULL when acceptable, else the message for `errors`. */
const char *project_validate_name(const char *name);
const char *project_validate_description(const char *description);
const char *comment_validate_body(const char *body);

typedef struct tasks_task {
    const char *id;
    const char *title;
    const char *description;
    int status;   /* TASKS_STATUS_* */
    int priority; /* TASKS_PRIORITY_* */
    bool has_due;
    int64_t due_at; /* ms since the epoch, when has_due */
    const char **labels;
    int nlabels;
    const char *owner_id;
    const char *assignee_id; /* NULL when unassigned */
    const char *project_id;  /* NULL for a personal task */
    int64_t created_at, updated_at;
    bool has_completed;
    int64_t completed_at;
    int64_t version;
} tasks_task;

/* The fields a POST or PATCH body sets (a member absent from the body is not set). */
typedef struct tasks_changes {
    bool title_set, description_set, status_set, priority_set, due_set, labels_set, assignee_set,
        project_set;
    const char *title;
    const char *description;
    int status;
    int priority;
    bool due_null;
    int64_t due_at;
    const char **labels;
    int nlabels;
    const char *assignee_id; /* NULL: unassign */
    const char *project_id;  /* NULL: personal */
} tasks_changes;

const char *tasks_status_name(int status);
const char *tasks_priority_name(int priority);
/* -1 when the name is not a status / priority. */
int tasks_status_parse(const char *name);
int tasks_priority_parse(const char *name);

/* NULL when acceptable, else the message for `errors` (title also refuses blank text). */
const char *tasks_validate_title(const char *title);
const char *tasks_validate_description(const char *description);
const char *tasks_validate_label(const char *label);

/* Reads a POST (create: title required) or PATCH body into ret. Every failure is added to
 * errs under the field's name; the caller answers 422 when errs has any. Unknown members are
 * ignored. Strings point into body (which the request arena owns) or the arena. */
void tasks_changes_parse(dk_arena *a, const json_t *body, bool create, tasks_changes *ret,
                         dk_errors *errs);

/* A new task from a create body (defaults filled in) for owner, at now. */
void tasks_task_new(dk_arena *a, const tasks_changes *ch, const char *id, const char *owner,
                    int64_t now, tasks_task *ret);

/* Applies ch to cur, writing the result to next. may_edit: the caller may change every field
 * (a personal task's owner, a project's editor); may_status: the caller may change the status
 * (also its assignee). DK_E_FORBIDDEN when ch changes something the caller may not.
 * *ret_changed tells whether any value differs; when it does, version is cur's + 1 and
 * updated_at is now; completed_at follows the status into and out of done. */
dk_status tasks_apply(const tasks_task *cur, const tasks_changes *ch, bool may_edit,
                      bool may_status, int64_t now, tasks_task *next,
                      bool *ret_changed) DK_MUSTCHECK;

/* The fields that differ between before and after, as {"field": {"old": v, "new": v}} in the
 * contract's representation (status and priority by name, times as RFC 3339, null for none);
 * version, updated_at and completed_at are consequences, not changes, and are left out. */
json_t *tasks_changes_json(const tasks_task *before, const tasks_task *after);

/* True when an If-Match header value (a list of entity tags, or `*`) names the version, by
 * RFC 9110's strong comparison: a weak tag (W/"3") never matches. NULL header: true. */
bool tasks_if_match(const char *header, int64_t version);
/* If-None-Match: the weak comparison (W/"3" matches version 3). */
bool tasks_if_none_match(const char *header, int64_t version);
/* The ETag of a version: "\"<version>\"" in the arena. */
char *tasks_etag(dk_arena *a, int64_t version);

/* Labels as a JSON array text (SQLite column, PostgreSQL parameter), in the arena. */
char *tasks_labels_json(dk_arena *a, const char *const *labels, int n);
/* Parses a JSON array of strings into the arena; false when malformed. */
bool tasks_labels_from_json(dk_arena *a, const char *text, const char ***ret, int *ret_n);

/* Writes the contract's {task} object (written directly: a list of them is the hottest
 * response, and a jansson value per field was a large share of its cost; figures in
 * docs/design/measurements.md). */
void tasks_task_write(dk_jw *w, const tasks_task *t);

#endif
