/* notifications_prefs.c — a user's delivery preferences (GET/PUT /preferences): e-mail on or
 * off, and a webhook URL with its signing secret. A new webhook URL is checked (the SSRF rules
 * of webhook_url.h, name resolution included) on the service's checks pool, never on an HTTP
 * thread: the request is suspended meanwhile. */
#include <string.h>

#include "core/arena.h"
#include "core/crypto.h"
#include "core/json.h"
#include "core/log.h"
#include "core/str.h"
#include "core/workpool.h"
#include "services/notifications/notifications_internal.h"
#include "core/banned.h"

#define NT_URL_MAX 2048

static json_t *notifications_prefs_json(const notifications_user_prefs *p, bool with_secret)
{
    json_t *j = json_pack("{s:b,s:o}", "email_enabled", p->email_enabled, "webhook_url",
                          dk_json_str_or_null(p->webhook_url));
    if (with_secret)
        json_object_set_new(j, "webhook_secret", dk_json_str_or_null(p->webhook_secret));
    return j;
}

void notifications_prefs_get(dk_req *req, dk_res *res)
{
    notifications_svc *s = req->service;
    notifications_user_prefs p;
    dk_status st = notifications_repo_prefs_get(&s->repo, req->arena, req->identity->user_id, &p);
    if (st != DK_OK) {
        notifications_res_fail(res, st);
        return;
    }
    dk_res_json(res, 200, notifications_prefs_json(&p, false));
}

/* The preferences are valid: stores them and answers. */
static void notifications_prefs_save(notifications_svc *s, dk_req *req, dk_res *res, bool email,
                                     const char *u)
{
    notifications_user_prefs cur, next = {0};
    dk_status st = notifications_repo_prefs_get(&s->repo, req->arena, req->identity->user_id, &cur);
    if (st != DK_OK) {
        notifications_res_fail(res, st);
        return;
    }
    next.email_enabled = email;
    next.webhook_url = u ? dk_arena_strdup(req->arena, u) : NULL;
    bool url_changed = u && (!cur.webhook_url || strcmp(cur.webhook_url, u) != 0);
    if (url_changed) {
        unsigned char raw[32];
        char hex[65];
        dk_random_bytes(raw, sizeof raw);
        dk_hex(raw, sizeof raw, hex);
        next.webhook_secret = dk_arena_printf(req->arena, "whsec_%s", hex);
    } else if (u) {
        next.webhook_secret = cur.webhook_secret;
    }
    st = notifications_repo_prefs_put(&s->repo, req->arena, req->identity->user_id, &next);
    if (st != DK_OK) {
        notifications_res_fail(res, st);
        return;
    }
    dk_res_json(res, 200, notifications_prefs_json(&next, url_changed));
}

/* A suspended PUT /preferences whose webhook URL is being checked on the checks pool. */
typedef struct notifications_prefs_job {
    notifications_svc *s;
    dk_req *req;
    dk_res *res;
    bool email;
    const char *url;
} notifications_prefs_job;

static void notifications_prefs_check_run(void *arg)
{
    notifications_prefs_job *job = arg;
    dk_req *req = job->req;
    dk_res *res = job->res;
    dk_log_set_context(req->request_id, req->trace_id);
    char reason[256];
    dk_status chk =
        webhook_url_check(&job->s->net, job->url, job->s->allow_private, reason, sizeof reason);
    if (chk == DK_E_UNAVAILABLE) { /* the resolver is saturated: not the user's fault */
        notifications_res_fail(res, chk);
    } else if (chk != DK_OK) {
        dk_errors errs;
        dk_errors_init(&errs);
        dk_errors_add(&errs, "webhook_url", "%s", reason);
        dk_res_validation(res, &errs);
    } else {
        notifications_prefs_save(job->s, req, res, job->email, job->url);
    }
    dk_log_set_context(NULL, NULL);
    dk_req_resume(req);
}

void notifications_prefs_put(dk_req *req, dk_res *res)
{
    notifications_svc *s = req->service;
    json_t *body = NULL;
    if (dk_req_json(req, res, &body) != DK_OK)
        return;
    dk_errors errs;
    dk_errors_init(&errs);
    json_t *email = json_object_get(body, "email_enabled");
    json_t *url = json_object_get(body, "webhook_url");
    if (!email)
        dk_errors_add(&errs, "email_enabled", "is required");
    else if (!json_is_boolean(email))
        dk_errors_add(&errs, "email_enabled", "must be true or false");
    const char *u = json_string_value(url);
    if (!url)
        dk_errors_add(&errs, "webhook_url", "is required (null for none)");
    else if (!json_is_null(url) && !u)
        dk_errors_add(&errs, "webhook_url", "must be a string or null");
    else if (u && (strlen(u) > NT_URL_MAX || dk_utf8_len(u, strlen(u)) < 0))
        dk_errors_add(&errs, "webhook_url", "must be a URL of at most %d characters", NT_URL_MAX);
    if (dk_errors_any(&errs)) {
        dk_res_validation(res, &errs);
        return;
    }
    if (!u) {
        notifications_prefs_save(s, req, res, json_is_true(email), NULL);
        return;
    }
    /* the URL's host is resolved (up to NT_WEBHOOK_CHECK_TIMEOUT) on the checks pool: a slow
     * name server must not hold an HTTP thread */
    notifications_prefs_job *job = dk_arena_alloc(req->arena, sizeof *job);
    *job = (notifications_prefs_job){.s = s,
                                     .req = req,
                                     .res = res,
                                     .email = json_is_true(email),
                                     .url = dk_arena_strdup(req->arena, u)};
    dk_req_suspend(req);
    if (dk_workpool_submit(s->checks, notifications_prefs_check_run, job) != DK_OK) {
        dk_res_header(res, "Retry-After", "1");
        dk_res_problem(res, DK_E_UNAVAILABLE,
                       "too many webhook URLs are being checked; try again shortly");
        dk_req_resume(req);
    }
}
