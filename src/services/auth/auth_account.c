/* auth_account.c — account recovery, e-mail verification and the second factor:
 * POST /password/forgot, /password/reset, /email/verify, /email/resend, /mfa/totp/setup,
 * /mfa/totp/enable, /mfa/totp/disable and /login/mfa, and the mail jobs behind them.
 *
 * Mail never goes out on a request thread: handlers queue a job on the service's mail pool (one
 * thread), which looks the account up, applies the one-mail-per-address-per-interval rule,
 * creates the token and sends. So /password/forgot costs the same for a known and an unknown
 * address — both only validate and queue. Tokens appear in mails only, never in logs. */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/config.h"
#include "core/crypto.h"
#include "core/json.h"
#include "core/log.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "services/auth/auth_internal.h"
#include "core/validate.h"
#include "core/banned.h"

#define AUTH_MAIL_QUEUE 1024

enum { AUTH_JOB_FORGOT, AUTH_JOB_VERIFY };

typedef struct auth_mail_job {
    auth_svc *s;
    int kind;
    char *user_id; /* VERIFY */
    char *email;
} auth_mail_job;

/* ---------- templates ---------- */

static const char *auth_duration_text(dk_arena *a, int64_t ms)
{
    int64_t m = ms / 60000;
    if (m >= 60 * 24 && m % (60 * 24) == 0)
        return dk_arena_printf(a, "%lld day%s", (long long)(m / 1440), m == 1440 ? "" : "s");
    if (m >= 60 && m % 60 == 0)
        return dk_arena_printf(a, "%lld hour%s", (long long)(m / 60), m == 60 ? "" : "s");
    return dk_arena_printf(a, "%lld minute%s", (long long)m, m == 1 ? "" : "s");
}

/* The HTML part: the same words, the link as a button and as text. */
static char *auth_mail_html(dk_arena *a, const char *title, const char *greeting, const char *intro,
                            const char *action, const char *link, const char *outro)
{
    const char *l = dk_mail_html_escape(a, link);
    return dk_arena_printf(
        a,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>%s</title></head>\n"
        "<body style=\"font-family: sans-serif; line-height: 1.5; color: #222\">\n"
        "<p>%s</p>\n<p>%s</p>\n"
        "<p><a href=\"%s\" style=\"display: inline-block; padding: 8px 16px; background: #2456c9; "
        "color: #fff; text-decoration: none; border-radius: 4px\">%s</a></p>\n"
        "<p>Or paste this link into your browser:<br><a href=\"%s\">%s</a></p>\n"
        "<p>%s</p>\n<p style=\"color: #666\">&mdash; Docket</p>\n</body></html>\n",
        dk_mail_html_escape(a, title), dk_mail_html_escape(a, greeting),
        dk_mail_html_escape(a, intro), l, dk_mail_html_escape(a, action), l, l,
        dk_mail_html_escape(a, outro));
}

/* What differs between the account e-mails (a link with a one-time token in each). */
typedef struct auth_mail_kind {
    const char *route; /* the console page the link opens */
    const char *subject;
    const char *title;  /* of the HTML page */
    const char *action; /* the button's text */
    const char *token;  /* what the token is called, for API clients */
    const char *api;    /* the API call that takes it */
    const char *outro;
    const char *const *headers;
} auth_mail_kind;

static void auth_mail_account(auth_svc *s, dk_arena *a, const auth_mail_kind *k, const dk_user *u,
                              const char *token, const char *intro, dk_mail *m)
{
    const char *link = dk_arena_printf(a, "%s/#/%s?token=%s", s->public_url, k->route, token);
    const char *greeting = dk_arena_printf(a, "Hello %s,", u->name);
    m->to = u->email;
    m->subject = k->subject;
    m->text = dk_arena_printf(a,
                              "%s\n\n%s\n\n  %s\n\nThe %s token, for API clients "
                              "(%s):\n\n  %s\n\n%s\n\n-- \nDocket\n",
                              greeting, intro, link, k->token, k->api, token, k->outro);
    m->html = auth_mail_html(a, k->title, greeting, intro, k->action, link, k->outro);
    m->headers = k->headers;
}

static void auth_mail_reset(auth_svc *s, dk_arena *a, const dk_user *u, const char *token,
                            dk_mail *m)
{
    static const char *const hdrs[] = {"X-Docket-Mail: password-reset", NULL};
    static const auth_mail_kind k = {
        .route = "reset-password",
        .subject = "Reset your password",
        .title = "Reset your Docket password",
        .action = "Choose a new password",
        .token = "reset",
        .api = "POST /api/v1/auth/password/reset",
        .outro = "If you did not ask for this, ignore this e-mail: your password stays as it is. "
                 "Setting a new password signs out every device.",
        .headers = hdrs,
    };
    const char *intro = dk_arena_printf(
        a,
        "someone (hopefully you) asked to reset the password of the Docket account %s. The link "
        "below lets you choose a new one; it works once, within %s.",
        u->email, auth_duration_text(a, s->reset_ttl_ms));
    auth_mail_account(s, a, &k, u, token, intro, m);
}

static void auth_mail_verification(auth_svc *s, dk_arena *a, const dk_user *u, const char *token,
                                   dk_mail *m)
{
    static const char *const hdrs[] = {"X-Docket-Mail: email-verification", NULL};
    static const auth_mail_kind k = {
        .route = "verify-email",
        .subject = "Confirm your e-mail address",
        .title = "Confirm your e-mail address",
        .action = "Confirm the address",
        .token = "verification",
        .api = "POST /api/v1/auth/email/verify",
        .outro = "If you did not create a Docket account or change its address, ignore this "
                 "e-mail.",
        .headers = hdrs,
    };
    const char *intro = dk_arena_printf(
        a,
        "please confirm that %s is your address for Docket: open the link below (it works once, "
        "within %s). Until then Docket sends no notification e-mails to it.",
        u->email, auth_duration_text(a, s->verify_ttl_ms));
    auth_mail_account(s, a, &k, u, token, intro, m);
}

/* ---------- the mail pool ---------- */

static void auth_mail_send(auth_svc *s, dk_arena *a, const dk_mail *m, const char *what)
{
    if (!s->mailer.ops || !s->from_ok) {
        dk_log_warn("%s not sent: no mailer in this process", what);
        return;
    }
    size_t len = 0;
    char *msg = dk_mail_compose(a, &s->from, m, &len);
    if (!msg) {
        dk_log_warn("%s not sent: the account's address cannot be used in a mail", what);
        return;
    }
    char why[200] = "";
    dk_status st =
        s->mailer.ops->send(s->mailer.h, s->from.envelope, m->to, msg, len, NULL, why, sizeof why);
    if (st != DK_OK)
        dk_log_warn("%s not sent: %s", what, why[0] ? why : dk_status_title(st));
    else
        dk_log_info("%s sent (%s)", what, s->mailer.ops->name);
}

static void auth_job_forgot(auth_svc *s, dk_arena *a, const char *email)
{
    dk_user u;
    dk_status st = s->users->find_by_email(s->users_h, a, email, &u);
    if (st == DK_E_NOT_FOUND)
        return; /* nobody to write to; the client got the same 202 */
    if (st != DK_OK) {
        dk_log_warn("password-reset e-mail not sent: users directory: %s", dk_status_title(st));
        return;
    }
    bool allowed = false;
    st = auth_repo_mail_allowed(&s->repo, a, "reset", u.email, s->mail_interval_ms, &allowed);
    if (st == DK_OK && !allowed) {
        dk_log_info("password-reset e-mail withheld: one was sent to this address recently");
        return;
    }
    char *token = NULL;
    if (st == DK_OK)
        st =
            auth_repo_email_token_new(&s->repo, a, "reset", u.id, u.email, s->reset_ttl_ms, &token);
    if (st != DK_OK) {
        dk_log_warn("password-reset e-mail not sent: %s", dk_status_title(st));
        return;
    }
    dk_mail m = {0};
    auth_mail_reset(s, a, &u, token, &m);
    auth_mail_send(s, a, &m, "password-reset e-mail");
}

static void auth_job_verify(auth_svc *s, dk_arena *a, const char *user_id, const char *email)
{
    dk_user u;
    dk_status st = s->users->get(s->users_h, a, user_id, &u);
    if (st == DK_E_NOT_FOUND)
        return;
    if (st != DK_OK) {
        dk_log_warn("verification e-mail not sent: users directory: %s", dk_status_title(st));
        return;
    }
    if (u.email_verified || !dk_str_ieq(u.email, email))
        return; /* verified meanwhile, or the address changed again (that change sends one) */
    bool allowed = false;
    st = auth_repo_mail_allowed(&s->repo, a, "verify", u.email, s->mail_interval_ms, &allowed);
    if (st == DK_OK && !allowed) {
        dk_log_info("verification e-mail withheld: one was sent to this address recently");
        return;
    }
    char *token = NULL;
    if (st == DK_OK)
        st = auth_repo_email_token_new(&s->repo, a, "verify", u.id, u.email, s->verify_ttl_ms,
                                       &token);
    if (st != DK_OK) {
        dk_log_warn("verification e-mail not sent: %s", dk_status_title(st));
        return;
    }
    dk_mail m = {0};
    auth_mail_verification(s, a, &u, token, &m);
    auth_mail_send(s, a, &m, "verification e-mail");
}

static void auth_job_run(void *ctx)
{
    auth_mail_job *j = ctx;
    dk_arena *a = dk_arena_new();
    if (j->kind == AUTH_JOB_FORGOT)
        auth_job_forgot(j->s, a, j->email);
    else
        auth_job_verify(j->s, a, j->user_id, j->email);
    dk_arena_free(a);
    dk_free(j->user_id);
    dk_free(j->email);
    dk_free(j);
}

static dk_status auth_job_submit(auth_svc *s, int kind, const char *user_id, const char *email)
{
    auth_mail_job *j = DK_NEW(auth_mail_job);
    j->s = s;
    j->kind = kind;
    j->user_id = user_id ? dk_strdup(user_id) : NULL;
    j->email = dk_strdup(email);
    dk_status st =
        s->mail_pool ? dk_workpool_submit(s->mail_pool, auth_job_run, j) : DK_E_UNAVAILABLE;
    if (st != DK_OK) {
        dk_free(j->user_id);
        dk_free(j->email);
        dk_free(j);
    }
    return st;
}

dk_status auth_mail_verify(auth_svc *s, const char *user_id, const char *email)
{
    return auth_job_submit(s, AUTH_JOB_VERIFY, user_id, email);
}

dk_status auth_on_email_changed(void *ctx, const char *type, const char *payload)
{
    (void)type;
    auth_svc *s = ctx;
    json_error_t err;
    json_t *ev = json_loads(payload, 0, &err);
    const char *uid = json_string_value(json_object_get(ev, "user_id"));
    const char *email = json_string_value(json_object_get(ev, "email"));
    dk_status st = uid && email ? auth_mail_verify(s, uid, email) : DK_OK;
    json_decref(ev);
    return st;
}

/* ---------- lifecycle ---------- */

dk_status auth_account_init(auth_svc *s)
{
    const dk_config *c = s->app->config;
    s->keep = dk_arena_new();
    const void *mops = NULL;
    if (dk_app_port(s->app, DK_MAILER, &mops, &s->mailer.h))
        s->mailer.ops = mops;
    if (s->mailer.ops) {
        if (dk_mail_sender_parse(s->keep, dk_config_str(c, "smtp.from"), &s->from) != DK_OK) {
            dk_log_error("auth: smtp.from is not a usable address");
            return DK_E_VALIDATION;
        }
        s->from_ok = true;
    }
    char *url = dk_arena_strdup(s->keep, dk_config_str(c, "server.public_url"));
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        url[--n] = '\0';
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        dk_log_error("auth: server.public_url must start with http:// or https://");
        return DK_E_VALIDATION;
    }
    s->public_url = url;
    s->reset_ttl_ms = dk_config_int(c, "auth.reset_token_ttl");
    s->verify_ttl_ms = dk_config_int(c, "auth.verify_token_ttl");
    s->mail_interval_ms = dk_config_int(c, "auth.mail_interval");
    const char *key = dk_config_str(c, "auth.mfa_key");
    const char *prev = dk_config_str(c, "auth.mfa_key_previous");
    if (key && *key) {
        if (strlen(key) < 32) {
            dk_log_error("auth: auth.mfa_key must be at least 32 characters");
            return DK_E_VALIDATION;
        }
        /* secrets sealed before the key was set were sealed under the JWT-derived key */
        s->keys = totp_keyring_new(key, strlen(key), prev, s->app->mfa_fallback_key);
    } else {
        s->keys =
            totp_keyring_new(s->app->mfa_fallback_key, sizeof s->app->mfa_fallback_key, prev, NULL);
    }
    if (!s->keys) {
        dk_log_error("auth: cannot derive the TOTP encryption key");
        return DK_E_INTERNAL;
    }
    s->mail_pool = dk_workpool_new(1, AUTH_MAIL_QUEUE);
    return DK_OK;
}

void auth_account_shutdown(auth_svc *s)
{
    dk_workpool_free(s->mail_pool); /* runs the queued jobs first */
    s->mail_pool = NULL;
    totp_keyring_free(s->keys);
    s->keys = NULL;
    dk_arena_free(s->keep);
    s->keep = NULL;
}

/* ---------- recovery and verification ---------- */

static void auth_bad_token(dk_res *res, const char *field)
{
    dk_errors errs;
    dk_errors_init(&errs);
    dk_errors_add(&errs, field, "is invalid, expired or already used");
    dk_res_validation(res, &errs);
}

void auth_password_forgot(dk_req *req, dk_res *res)
{
    auth_svc *s = req->service;
    json_t *body = NULL;
    if (dk_req_json(req, res, &body) != DK_OK)
        return;
    dk_errors errs;
    dk_errors_init(&errs);
    const char *email = auth_field(body, "email", &errs);
    if (email && dk_validate_email(email))
        dk_errors_add(&errs, "email", "%s", dk_validate_email(email));
    if (dk_errors_any(&errs)) {
        dk_res_validation(res, &errs);
        return;
    }
    /* the same work for every address: the lookup happens on the mail pool */
    if (auth_job_submit(s, AUTH_JOB_FORGOT, NULL, email) != DK_OK) {
        auth_fail(res, DK_E_UNAVAILABLE);
        return;
    }
    dk_res_empty(res, 202);
}

void auth_password_reset(dk_req *req, dk_res *res)
{
    auth_svc *s = req->service;
    json_t *body = NULL;
    if (dk_req_json(req, res, &body) != DK_OK)
        return;
    dk_errors errs;
    dk_errors_init(&errs);
    const char *token = auth_field(body, "token", &errs);
    const char *fresh = auth_field(body, "new_password", &errs);
    if (fresh && dk_validate_password(fresh))
        dk_errors_add(&errs, "new_password", "%s", dk_validate_password(fresh));
    if (dk_errors_any(&errs)) {
        dk_res_validation(res, &errs);
        return;
    }
    char *uid = NULL, *email = NULL;
    dk_status st = auth_repo_email_token_peek(&s->repo, req->arena, "reset", token, &uid, &email);
    dk_user u;
    if (st == DK_OK) {
        st = s->users->get(s->users_h, req->arena, uid, &u);
        /* a token mailed to an address the account no longer has is dead */
        if (st == DK_E_NOT_FOUND || (st == DK_OK && !dk_str_ieq(u.email, email)))
            st = DK_E_VALIDATION;
    }
    char *hash = NULL;
    if (st == DK_OK)
        st = auth_password_hash(s->hasher, req->arena, fresh, &hash);
    if (st == DK_OK)
        st = auth_repo_email_token_use(&s->repo, req->arena, "reset", token, uid, hash);
    if (st == DK_E_VALIDATION) {
        auth_bad_token(res, "token");
        return;
    }
    if (st == DK_OK)
        st = auth_repo_session_revoke_all(&s->repo, req->arena, uid, NULL);
    if (st != DK_OK) {
        auth_fail(res, st);
        return;
    }
    /* the mail reached its owner: that proves the address too */
    if (!u.email_verified &&
        s->users->mark_email_verified(s->users_h, req->arena, uid, email) != DK_OK)
        dk_log_info("password reset: the address could not be marked verified");
    dk_log_info("password reset by e-mail; every session revoked");
    dk_res_empty(res, 204);
}

void auth_email_verify(dk_req *req, dk_res *res)
{
    auth_svc *s = req->service;
    json_t *body = NULL;
    if (dk_req_json(req, res, &body) != DK_OK)
        return;
    dk_errors errs;
    dk_errors_init(&errs);
    const char *token = auth_field(body, "token", &errs);
    if (dk_errors_any(&errs)) {
        dk_res_validation(res, &errs);
        return;
    }
    char *uid = NULL, *email = NULL;
    dk_status st = auth_repo_email_token_peek(&s->repo, req->arena, "verify", token, &uid, &email);
    if (st == DK_OK) {
        st = s->users->mark_email_verified(s->users_h, req->arena, uid, email);
        if (st == DK_E_NOT_FOUND) /* the address changed since the mail went out */
            st = DK_E_VALIDATION;
    }
    if (st == DK_OK) {
        st = auth_repo_email_token_use(&s->repo, req->arena, "verify", token, uid, NULL);
        if (st == DK_E_VALIDATION)
            st = DK_OK; /* used by a concurrent request: the address is verified all the same */
    }
    if (st == DK_E_VALIDATION) {
        auth_bad_token(res, "token");
        return;
    }
    if (st != DK_OK) {
        auth_fail(res, st);
        return;
    }
    dk_res_empty(res, 204);
}

void auth_email_resend(dk_req *req, dk_res *res)
{
    auth_svc *s = req->service;
    dk_user u;
    dk_status st = s->users->get(s->users_h, req->arena, req->identity->user_id, &u);
    if (st == DK_E_NOT_FOUND)
        st = DK_E_UNAUTHORIZED;
    if (st == DK_OK && !u.email_verified)
        st = auth_mail_verify(s, u.id, u.email);
    if (st != DK_OK) {
        auth_fail(res, st);
        return;
    }
    dk_res_empty(res, 202);
}

/* ---------- TOTP ---------- */

/* The user's TOTP secret in clear; re-sealed under the current key when a previous key opened
 * it (key rotation). */
static dk_status auth_totp_secret(auth_svc *s, dk_arena *a, const char *uid, const auth_totp *t,
                                  unsigned char **ret_key, size_t *ret_len)
{
    bool stale = false;
    dk_status st = totp_open(a, s->keys, uid, t->sealed, ret_key, ret_len, &stale);
    if (st != DK_OK) {
        dk_log_error("a stored TOTP secret cannot be decrypted: is auth.mfa_key (or "
                     "auth.mfa_key_previous) the key it was stored with?");
        return DK_E_INTERNAL;
    }
    if (stale) {
        char *sealed = totp_seal(a, s->keys, uid, *ret_key, *ret_len);
        if (sealed && auth_repo_totp_reseal(&s->repo, a, uid, sealed) == DK_OK)
            dk_log_info("a TOTP secret was re-encrypted with the current key");
    }
    return DK_OK;
}

/* A TOTP code (6 digits) of an enabled or pending secret, used up when right: DK_OK, or
 * DK_E_VALIDATION for a wrong or replayed code. */
static dk_status auth_totp_check(auth_svc *s, dk_arena *a, const char *uid, const auth_totp *t,
                                 const char *code, int64_t *ret_step)
{
    unsigned char *key = NULL;
    size_t len = 0;
    dk_status st = auth_totp_secret(s, a, uid, t, &key, &len);
    if (st != DK_OK)
        return st;
    int64_t step = totp_match(key, len, code, totp_step(dk_now_ms() / 1000));
    if (step < 0 || step <= t->last_step)
        return DK_E_VALIDATION;
    if (ret_step) { /* enabling records the step itself, with the codes */
        *ret_step = step;
        return DK_OK;
    }
    st = auth_repo_totp_use_step(&s->repo, a, uid, step);
    return st == DK_E_CONFLICT ? DK_E_VALIDATION : st;
}

/* A second factor for an enabled account: a TOTP code, or (when it is not 6 digits, or when
 * recovery is given) a recovery code, used up when right. */
static dk_status auth_second_factor(auth_svc *s, dk_arena *a, const char *uid, const auth_totp *t,
                                    const char *code, const char *recovery)
{
    if (code && !recovery) {
        size_t digits = 0, other = 0;
        for (const char *p = code; *p; p++)
            (*p >= '0' && *p <= '9') ? digits++ : (*p == ' ' ? 0 : other++);
        if (other == 0 && digits == TOTP_DIGITS)
            return auth_totp_check(s, a, uid, t, code, NULL);
        recovery = code;
    }
    const char *hash = recovery ? totp_recovery_hash(a, recovery) : NULL;
    if (!hash)
        return DK_E_VALIDATION;
    return auth_repo_recovery_use(&s->repo, a, uid, hash);
}

static void auth_code_wrong(dk_res *res, const char *field)
{
    dk_errors errs;
    dk_errors_init(&errs);
    dk_errors_add(&errs, field, "is wrong, expired or already used");
    dk_res_validation(res, &errs);
}

void auth_totp_setup(dk_req *req, dk_res *res)
{
    auth_svc *s = req->service;
    const char *uid = req->identity->user_id;
    dk_user u;
    dk_status st = s->users->get(s->users_h, req->arena, uid, &u);
    if (st == DK_E_NOT_FOUND)
        st = DK_E_UNAUTHORIZED;
    unsigned char secret[TOTP_SECRET_BYTES];
    dk_random_bytes(secret, sizeof secret);
    char *sealed = st == DK_OK ? totp_seal(req->arena, s->keys, uid, secret, sizeof secret) : NULL;
    if (st == DK_OK && !sealed)
        st = DK_E_INTERNAL;
    if (st == DK_OK)
        st = auth_repo_totp_setup(&s->repo, req->arena, uid, sealed);
    if (st == DK_E_CONFLICT) {
        dk_res_problem(res, st, "TOTP is already enabled; disable it first to set up a new one");
        return;
    }
    if (st != DK_OK) {
        auth_fail(res, st);
        return;
    }
    char *b32 = totp_base32(req->arena, secret, sizeof secret);
    char *label = dk_percent_encode(req->arena, u.email, "@");
    char *uri = dk_arena_printf(req->arena,
                                "otpauth://totp/Docket:%s?secret=%s&issuer=Docket&algorithm=SHA1&"
                                "digits=%d&period=%d",
                                label, b32, TOTP_DIGITS, TOTP_STEP_S);
    dk_random_bytes(secret, sizeof secret); /* no copy of it stays on the stack */
    dk_res_header(res, "Cache-Control", "no-store");
    dk_res_json(res, 200, json_pack("{s:s,s:s}", "secret", b32, "otpauth_uri", uri));
}

void auth_totp_enable(dk_req *req, dk_res *res)
{
    auth_svc *s = req->service;
    json_t *body = NULL;
    if (dk_req_json(req, res, &body) != DK_OK)
        return;
    dk_errors errs;
    dk_errors_init(&errs);
    const char *code = auth_field(body, "code", &errs);
    if (dk_errors_any(&errs)) {
        dk_res_validation(res, &errs);
        return;
    }
    const char *uid = req->identity->user_id;
    auth_totp t;
    dk_status st = auth_repo_totp_get(&s->repo, req->arena, uid, &t);
    if (st == DK_E_NOT_FOUND || (st == DK_OK && t.enabled)) {
        dk_res_problem(res, DK_E_CONFLICT,
                       st == DK_OK ? "TOTP is already enabled"
                                   : "no TOTP setup to confirm; POST /mfa/totp/setup first");
        return;
    }
    int64_t step = 0;
    if (st == DK_OK)
        st = auth_totp_check(s, req->arena, uid, &t, code, &step);
    const char *codes[TOTP_RECOVERY_CODES], *hashes[TOTP_RECOVERY_CODES];
    for (int i = 0; i < TOTP_RECOVERY_CODES; i++) {
        codes[i] = totp_recovery_code(req->arena);
        hashes[i] = totp_recovery_hash(req->arena, codes[i]);
    }
    if (st == DK_OK) {
        st = auth_repo_totp_enable(&s->repo, req->arena, uid, step, hashes, TOTP_RECOVERY_CODES);
        if (st == DK_E_CONFLICT)
            st = DK_E_VALIDATION; /* a concurrent enable or a replayed code */
    }
    if (st == DK_E_VALIDATION) {
        auth_code_wrong(res, "code");
        return;
    }
    if (st == DK_OK) {
        st = s->users->set_mfa_enabled(s->users_h, req->arena, uid, true);
        if (st != DK_OK && auth_repo_totp_disable(&s->repo, req->arena, uid) != DK_OK)
            dk_log_error("TOTP enabled but mfa_enabled not recorded, and the undo failed");
    }
    if (st == DK_OK)
        st = auth_repo_session_revoke_all(&s->repo, req->arena, uid, req->identity->session_id);
    if (st != DK_OK) {
        auth_fail(res, st);
        return;
    }
    dk_log_info("TOTP enabled; other sessions revoked");
    json_t *list = json_array();
    for (int i = 0; i < TOTP_RECOVERY_CODES; i++)
        json_array_append_new(list, json_string(codes[i]));
    dk_res_header(res, "Cache-Control", "no-store");
    dk_res_json(res, 200, json_pack("{s:o}", "recovery_codes", list));
}

void auth_totp_disable(dk_req *req, dk_res *res)
{
    auth_svc *s = req->service;
    json_t *body = NULL;
    if (dk_req_json(req, res, &body) != DK_OK)
        return;
    dk_errors errs;
    dk_errors_init(&errs);
    const char *password = auth_field(body, "password", &errs);
    const char *code = auth_field(body, "code", &errs);
    if (dk_errors_any(&errs)) {
        dk_res_validation(res, &errs);
        return;
    }
    const char *uid = req->identity->user_id;
    auth_totp t;
    dk_status st = auth_repo_totp_get(&s->repo, req->arena, uid, &t);
    if (st == DK_E_NOT_FOUND || (st == DK_OK && !t.enabled)) {
        dk_res_problem(res, DK_E_CONFLICT, "TOTP is not enabled");
        return;
    }
    char *hash = NULL;
    if (st == DK_OK)
        st = auth_repo_credentials_get(&s->repo, req->arena, uid, &hash);
    if (st == DK_OK)
        st = auth_password_verify(s->hasher, hash, password);
    if (st == DK_E_UNAUTHORIZED || st == DK_E_NOT_FOUND) {
        dk_res_problem(res, DK_E_UNAUTHORIZED, "the password is wrong");
        return;
    }
    if (st == DK_OK)
        st = auth_second_factor(s, req->arena, uid, &t, code, NULL);
    if (st == DK_E_VALIDATION) {
        auth_code_wrong(res, "code");
        return;
    }
    if (st == DK_OK)
        st = auth_repo_totp_disable(&s->repo, req->arena, uid);
    if (st == DK_OK)
        st = s->users->set_mfa_enabled(s->users_h, req->arena, uid, false);
    if (st == DK_OK)
        st = auth_repo_session_revoke_all(&s->repo, req->arena, uid, req->identity->session_id);
    if (st != DK_OK) {
        auth_fail(res, st);
        return;
    }
    dk_log_info("TOTP disabled; other sessions revoked");
    dk_res_empty(res, 204);
}

void auth_login_mfa(dk_req *req, dk_res *res)
{
    auth_svc *s = req->service;
    json_t *body = NULL;
    if (dk_req_json(req, res, &body) != DK_OK)
        return;
    dk_errors errs;
    dk_errors_init(&errs);
    const char *mfa = auth_field(body, "mfa_token", &errs);
    bool has_code = json_object_get(body, "code") != NULL;
    bool has_rc = json_object_get(body, "recovery_code") != NULL;
    const char *code = NULL, *recovery = NULL;
    if (has_code || !has_rc)
        code = auth_field(body, "code", &errs);
    else
        recovery = auth_field(body, "recovery_code", &errs);
    if (dk_errors_any(&errs)) {
        dk_res_validation(res, &errs);
        return;
    }
    char *uid = NULL;
    dk_status st = auth_repo_mfa_challenge_get(&s->repo, req->arena, mfa, &uid);
    if (st == DK_E_UNAUTHORIZED) {
        dk_res_problem(res, st, "the mfa_token is invalid, expired or used up; log in again");
        return;
    }
    auth_totp t;
    if (st == DK_OK) {
        st = auth_repo_totp_get(&s->repo, req->arena, uid, &t);
        if (st == DK_E_NOT_FOUND || (st == DK_OK && !t.enabled))
            st = DK_E_VALIDATION; /* disabled meanwhile: no code can be right; log in again */
    }
    if (st == DK_OK) {
        /* a code field always means TOTP; a recovery_code field always a recovery code */
        st = recovery ? auth_second_factor(s, req->arena, uid, &t, NULL, recovery)
                      : auth_totp_check(s, req->arena, uid, &t, code, NULL);
    }
    if (st == DK_E_VALIDATION) {
        if (auth_repo_mfa_challenge_fail(&s->repo, req->arena, mfa) != DK_OK)
            dk_log_warn("a failed second-factor attempt was not counted");
        dk_res_problem(res, DK_E_UNAUTHORIZED, "the code is wrong");
        return;
    }
    if (st == DK_OK)
        st = auth_repo_mfa_challenge_finish(&s->repo, req->arena, mfa);
    if (st == DK_E_UNAUTHORIZED) {
        dk_res_problem(res, st, "the mfa_token is invalid, expired or used up; log in again");
        return;
    }
    dk_user u;
    if (st == DK_OK) {
        st = s->users->get(s->users_h, req->arena, uid, &u);
        if (st == DK_E_NOT_FOUND)
            st = DK_E_UNAUTHORIZED;
    }
    if (st != DK_OK) {
        auth_fail(res, st);
        return;
    }
    auth_login_complete(s, req, res, &u);
}
