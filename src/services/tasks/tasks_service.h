/* tasks_service.h — what the tasks service's handler files share (tasks_service.c: tasks and
 * the service descriptor; projects_service.c: projects, members, comments and activity): the
 * service state, turning a status into a problem response, and public profiles of users read
 * through the users.directory port. Handlers run on the HTTP server's threads; the state is
 * immutable after start except the outbox pointer (set before the server starts). */
#ifndef DK_TASKS_SERVICE_H
#define DK_TASKS_SERVICE_H

#include "core/http.h"
#include "core/outbox.h"
#include "ports/users_directory.h"
#include "services/tasks/tasks_repo.h"

typedef struct tasks_svc {
    dk_app *app;
    tasks_repo repo;
    const struct dk_users_directory_ops *users;
    void *users_h;
    dk_outbox *outbox; /* relays task.* events; NULL until start */
} tasks_svc;

/* A problem response for st; what names the resource of a 404 ("task", "project", ...). */
void tasks_fail_what(dk_res *res, dk_status st, const char *what);
/* The 422 of a rule the repository checked (field: "project_id", "assignee_id", "user_id"). */
void tasks_fail_field(dk_res *res, const char *field);

/* Public profiles of the users a response names, each looked up once per request. */
typedef struct tasks_profiles {
    int n;
    struct {
        const char *id;
        bool found;
        dk_user u;
    } e[64];
} tasks_profiles;
/* Writes {id, name, avatar_url} of user id, or null when the account is gone (or id NULL).
 * DK_E_UNAVAILABLE when the directory cannot answer. */
dk_status tasks_write_profile(tasks_svc *s, dk_req *req, tasks_profiles *cache, dk_jw *w,
                              const char *id) DK_MUSTCHECK;

/* projects_service.c: its handlers, mounted by tasks_service.c. */
void projects_create(dk_req *req, dk_res *res);
void projects_list(dk_req *req, dk_res *res);
void projects_get(dk_req *req, dk_res *res);
void projects_patch(dk_req *req, dk_res *res);
void projects_delete(dk_req *req, dk_res *res);
void projects_transfer(dk_req *req, dk_res *res);
void projects_members_list(dk_req *req, dk_res *res);
void projects_members_add(dk_req *req, dk_res *res);
void projects_members_patch(dk_req *req, dk_res *res);
void projects_members_delete(dk_req *req, dk_res *res);
void comments_list(dk_req *req, dk_res *res);
void comments_create(dk_req *req, dk_res *res);
void comments_patch(dk_req *req, dk_res *res);
void comments_delete(dk_req *req, dk_res *res);
void activity_list(dk_req *req, dk_res *res);

#endif
