/* The auth service (/api/v1/auth): registration, login (with a second step when TOTP is on),
 * refresh-token rotation with reuse detection, sessions, logout and password changes; account
 * recovery, e-mail verification and TOTP are in auth_account.c. Accounts themselves belong to
 * the users service and are reached through the users.directory port. */
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/cpus.h"
#include "core/json.h"
#include "core/log.h"
#include "core/session_guard.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "services/auth/auth_internal.h"
#include "services/service.h"
#include "core/validate.h"
#include "core/banned.h"

#define AUTH_KEEPER_INTERVAL_MS 1000

void auth_fail(dk_res *res, dk_status st)
{
    switch (st) {
    case DK_E_UNAVAILABLE:
        dk_res_header(res, "Retry-After", "1");
        dk_res_problem(res, st, "a dependency is unavailable or busy; try again shortly");
        break;
    case DK_E_UNAUTHORIZED:
        dk_res_problem(res, st, "not authorised");
        break;
    case DK_E_NOT_FOUND:
        dk_res_problem(res, st, "not found");
        break;
    case DK_E_CONFLICT:
        dk_res_problem(res, st, "this e-mail address is already registered");
        break;
    default:
        dk_res_problem(res, DK_E_INTERNAL, "unexpected error");
    }
}

/* A required string member; adds a validation error when missing or not a string. */
const char *auth_field(const json_t *body, const char *key, dk_errors *errs)
{
    bool present = false, wrong = false;
    const char *v = dk_json_get_str(body, key, &present, &wrong);
    if (!present || (!v && !wrong))
        dk_errors_add(errs, key, "is required");
    else if (wrong)
        dk_errors_add(errs, key, "must be a string");
    return v;
}

static void auth_tokens_reply(auth_svc *s, dk_req *req, dk_res *res, const dk_user *u,
                              const char *sid, const char *refresh)
{
    char *access = NULL;
    dk_status st = dk_tokens_issue(s->app->tokens, req->arena, u->id, sid, u->role, &access);
    if (st != DK_OK) {
        auth_fail(res, st);
        return;
    }
    dk_res_header(res, "Cache-Control", "no-store");
    dk_res_json(res, 200,
                json_pack("{s:s,s:s,s:I,s:s,s:I,s:o}", "access_token", access, "token_type",
                          "Bearer", "expires_in",
                          (json_int_t)(dk_tokens_ttl_ms(s->app->tokens) / 1000), "refresh_token",
                          refresh, "refresh_expires_in",
                          (json_int_t)(s->repo.refresh_ttl_ms / 1000), "user", dk_user_json(u)));
}

static void auth_register(dk_req *req, dk_res *res)
{
    auth_svc *s = req->service;
    json_t *body = NULL;
    if (dk_req_json(req, res, &body) != DK_OK)
        return;
    dk_errors errs;
    dk_errors_init(&errs);
    const char *email = auth_field(body, "email", &errs);
    const char *password = auth_field(body, "password", &errs);
    const char *name = auth_field(body, "name", &errs);
    if (email && dk_validate_email(email))
        dk_errors_add(&errs, "email", "%s", dk_validate_email(email));
    if (password && dk_validate_password(password))
        dk_errors_add(&errs, "password", "%s", dk_validate_password(password));
    if (name && dk_validate_name(name))
        dk_errors_add(&errs, "name", "%s", dk_validate_name(name));
    if (dk_errors_any(&errs)) {
        dk_res_validation(res, &errs);
        return;
    }
    /* a cheap check first, so a taken address costs no hash; the unique index decides races */
    dk_user existing;
    dk_status st = s->users->find_by_email(s->users_h, req->arena, email, &existing);
    if (st == DK_OK) {
        auth_fail(res, DK_E_CONFLICT);
        return;
    }
    if (st != DK_E_NOT_FOUND) {
        auth_fail(res, st);
        return;
    }
    char *hash = NULL;
    st = auth_password_hash(s->hasher, req->arena, password, &hash);
    if (st != DK_OK) {
        auth_fail(res, st);
        return;
    }
    dk_user u;
    st = s->users->create(s->users_h, req->arena, email, name, &u);
    if (st != DK_OK) {
        auth_fail(res, st);
        return;
    }
    st = auth_repo_credentials_put(&s->repo, req->arena, u.id, hash);
    if (st != DK_OK) {
        /* undo the account so the address can register again */
        if (s->users->remove(s->users_h, u.id) != DK_OK)
            dk_log_error("registration failed half-way; account %s left without credentials", u.id);
        auth_fail(res, st);
        return;
    }
    dk_log_info("account registered");
    if (auth_mail_verify(s, u.id, u.email) != DK_OK)
        dk_log_warn("the verification e-mail of a new account was not queued (mail queue full); "
                    "POST /auth/email/resend sends one");
    dk_res_header(res, "Location", dk_arena_printf(req->arena, "/api/v1/users/%s", u.id));
    dk_res_json(res, 201, dk_user_json(&u));
}

/* Text a client sent, as stored and shown: valid UTF-8 (bytes that are not become U+FFFD, so
 * PostgreSQL accepts it and JSON can carry it), at most cap bytes. */
static const char *auth_clean_text(dk_arena *a, const char *text, size_t cap)
{
    if (!text)
        return NULL;
    char *out = dk_arena_alloc(a, cap + 1);
    (void)dk_utf8_scrub(out, cap + 1, text, strlen(text));
    return out;
}

const char *auth_user_agent(dk_req *req)
{
    return auth_clean_text(req->arena, dk_req_header(req, "User-Agent"), 512);
}

static void auth_login(dk_req *req, dk_res *res)
{
    auth_svc *s = req->service;
    json_t *body = NULL;
    if (dk_req_json(req, res, &body) != DK_OK)
        return;
    dk_errors errs;
    dk_errors_init(&errs);
    const char *email = auth_field(body, "email", &errs);
    const char *password = auth_field(body, "password", &errs);
    if (dk_errors_any(&errs)) {
        dk_res_validation(res, &errs);
        return;
    }
    dk_user u;
    char *hash = NULL;
    dk_status st = s->users->find_by_email(s->users_h, req->arena, email, &u);
    if (st == DK_OK)
        st = auth_repo_credentials_get(&s->repo, req->arena, u.id, &hash);
    if (st == DK_E_NOT_FOUND) {
        st = auth_password_dummy_verify(s->hasher, password);
    } else if (st == DK_OK) {
        st = auth_password_verify(s->hasher, hash, password);
    }
    if (st == DK_E_UNAUTHORIZED || st == DK_E_NOT_FOUND) {
        dk_res_problem(res, DK_E_UNAUTHORIZED, "wrong e-mail address or password");
        return;
    }
    if (st != DK_OK) {
        auth_fail(res, st);
        return;
    }
    auth_totp t;
    st = auth_repo_totp_get(&s->repo, req->arena, u.id, &t);
    if (st == DK_OK && t.enabled) {
        /* the password was right; the second factor completes the login (POST /login/mfa) */
        char *mfa = NULL;
        st = auth_repo_mfa_challenge_new(&s->repo, req->arena, u.id, AUTH_MFA_TOKEN_TTL_MS, &mfa);
        if (st != DK_OK) {
            auth_fail(res, st);
            return;
        }
        dk_res_header(res, "Cache-Control", "no-store");
        dk_res_json(res, 200,
                    json_pack("{s:b,s:s,s:I}", "mfa_required", 1, "mfa_token", mfa, "expires_in",
                              (json_int_t)(AUTH_MFA_TOKEN_TTL_MS / 1000)));
        return;
    }
    if (st != DK_OK && st != DK_E_NOT_FOUND) {
        auth_fail(res, st);
        return;
    }
    auth_login_complete(s, req, res, &u);
}

void auth_login_complete(auth_svc *s, dk_req *req, dk_res *res, const dk_user *u)
{
    char *sid = NULL, *refresh = NULL;
    dk_status st = auth_repo_session_open(&s->repo, req->arena, u->id, auth_user_agent(req),
                                          req->client_ip, &sid, &refresh);
    if (st != DK_OK) {
        auth_fail(res, st);
        return;
    }
    auth_tokens_reply(s, req, res, u, sid, refresh);
}

static void auth_refresh(dk_req *req, dk_res *res)
{
    auth_svc *s = req->service;
    json_t *body = NULL;
    if (dk_req_json(req, res, &body) != DK_OK)
        return;
    dk_errors errs;
    dk_errors_init(&errs);
    const char *token = auth_field(body, "refresh_token", &errs);
    if (dk_errors_any(&errs)) {
        dk_res_validation(res, &errs);
        return;
    }
    char *sid = NULL, *user_id = NULL, *fresh = NULL;
    dk_status st = auth_repo_session_refresh(&s->repo, req->arena, token, &sid, &user_id, &fresh);
    if (st == DK_E_UNAUTHORIZED) {
        dk_res_problem(res, st, "the refresh token is invalid, expired or already used");
        return;
    }
    if (st != DK_OK) {
        auth_fail(res, st);
        return;
    }
    dk_user u;
    st = s->users->get(s->users_h, req->arena, user_id, &u);
    if (st != DK_OK) {
        auth_fail(res, st == DK_E_NOT_FOUND ? DK_E_UNAUTHORIZED : st);
        return;
    }
    auth_tokens_reply(s, req, res, &u, sid, fresh);
}

static void auth_logout(dk_req *req, dk_res *res)
{
    auth_svc *s = req->service;
    dk_status st = auth_repo_session_revoke(&s->repo, req->arena, req->identity->user_id,
                                            req->identity->session_id);
    if (st != DK_OK && st != DK_E_NOT_FOUND) {
        auth_fail(res, st);
        return;
    }
    dk_res_empty(res, 204);
}

static void auth_sessions_list(dk_req *req, dk_res *res)
{
    auth_svc *s = req->service;
    auth_session *list = NULL;
    int n = 0;
    dk_status st = auth_repo_session_list(&s->repo, req->arena, req->identity->user_id, &list, &n);
    if (st != DK_OK) {
        auth_fail(res, st);
        return;
    }
    json_t *items = json_array();
    for (int i = 0; i < n; i++) {
        char created[DK_RFC3339_LEN], used[DK_RFC3339_LEN];
        dk_time_format(list[i].created_at, created);
        dk_time_format(list[i].last_used_at, used);
        json_array_append_new(
            items,
            json_pack("{s:s,s:s,s:s,s:o,s:o,s:b}", "id", list[i].id, "created_at", created,
                      "last_used_at", used, "user_agent",
                      dk_json_str_or_null(auth_clean_text(req->arena, list[i].user_agent, 1536)),
                      "ip", dk_json_str_or_null(auth_clean_text(req->arena, list[i].ip, 64)),
                      "current", strcmp(list[i].id, req->identity->session_id) == 0));
    }
    dk_res_json(res, 200, json_pack("{s:o}", "sessions", items));
}

static void auth_sessions_delete(dk_req *req, dk_res *res)
{
    auth_svc *s = req->service;
    dk_status st = auth_repo_session_revoke(&s->repo, req->arena, req->identity->user_id,
                                            dk_req_param(req, "id"));
    if (st == DK_E_NOT_FOUND) {
        dk_res_problem(res, st, "no such active session");
        return;
    }
    if (st != DK_OK) {
        auth_fail(res, st);
        return;
    }
    dk_res_empty(res, 204);
}

static void auth_password_change(dk_req *req, dk_res *res)
{
    auth_svc *s = req->service;
    json_t *body = NULL;
    if (dk_req_json(req, res, &body) != DK_OK)
        return;
    dk_errors errs;
    dk_errors_init(&errs);
    const char *current = auth_field(body, "current_password", &errs);
    const char *fresh = auth_field(body, "new_password", &errs);
    if (fresh && dk_validate_password(fresh))
        dk_errors_add(&errs, "new_password", "%s", dk_validate_password(fresh));
    if (dk_errors_any(&errs)) {
        dk_res_validation(res, &errs);
        return;
    }
    const char *uid = req->identity->user_id;
    char *hash = NULL;
    dk_status st = auth_repo_credentials_get(&s->repo, req->arena, uid, &hash);
    if (st == DK_OK)
        st = auth_password_verify(s->hasher, hash, current);
    if (st == DK_E_UNAUTHORIZED || st == DK_E_NOT_FOUND) {
        dk_res_problem(res, DK_E_UNAUTHORIZED, "the current password is wrong");
        return;
    }
    char *new_hash = NULL;
    if (st == DK_OK)
        st = auth_password_hash(s->hasher, req->arena, fresh, &new_hash);
    if (st == DK_OK)
        st = auth_repo_credentials_put(&s->repo, req->arena, uid, new_hash);
    if (st == DK_OK)
        st = auth_repo_session_revoke_all(&s->repo, req->arena, uid, req->identity->session_id);
    if (st != DK_OK) {
        auth_fail(res, st);
        return;
    }
    dk_log_info("password changed; other sessions revoked");
    dk_res_empty(res, 204);
}

/* user.deleted: the account is going away — its sessions die and its credentials go. */
static dk_status auth_on_user_deleted(void *ctx, const char *type, const char *payload)
{
    auth_svc *s = ctx;
    dk_arena *a = dk_arena_new();
    const char *uid = dk_user_deleted_id(a, payload);
    dk_status st = uid ? auth_repo_forget_user(&s->repo, a, uid) : DK_OK;
    dk_arena_free(a);
    return st;
}

/* dk_session_source_fn: the sessions table answers for an emptied or missing store record. */
static dk_status auth_session_source(void *ctx, const char *session_id, bool *ret_live,
                                     int64_t *ret_ttl_ms)
{
    auth_svc *s = ctx;
    dk_arena *a = dk_arena_new();
    dk_status st = auth_repo_session_state(&s->repo, a, session_id, ret_live, ret_ttl_ms);
    dk_arena_free(a);
    return st;
}

/* One round of the keeper: an emptied store is seeded; revocations and live sessions that did
 * not reach the store are written again. A failed step is retried next round. */
static void auth_keeper_round(auth_svc *s)
{
    dk_arena *a = dk_arena_new();
    if (atomic_exchange(&s->owed.revocations, false)) {
        dk_status st = auth_repo_replay_revocations(&s->repo, a);
        if (st != DK_OK)
            atomic_store(&s->owed.revocations, true);
        else
            dk_log_info("revocations that had missed the shared store were written again");
    }
    bool seeded = true;
    if (dk_session_seeded(&s->app->store, &seeded) == DK_OK) {
        bool topup = atomic_exchange(&s->owed.lives, false);
        if (!seeded || topup) {
            dk_status st = auth_repo_seed(&s->repo, a, !seeded);
            if (st != DK_OK) {
                dk_log_warn("seeding the shared session store failed (%s); retrying",
                            dk_status_title(st));
                if (topup)
                    atomic_store(&s->owed.lives, true);
            }
        }
    }
    dk_arena_free(a);
}

static void *auth_keeper_run(void *arg)
{
    auth_svc *s = arg;
    pthread_mutex_lock(&s->keeper_lock);
    while (!s->keeper_stop) {
        pthread_mutex_unlock(&s->keeper_lock);
        auth_keeper_round(s);
        pthread_mutex_lock(&s->keeper_lock);
        struct timespec deadline = dk_mono_deadline(AUTH_KEEPER_INTERVAL_MS);
        while (!s->keeper_stop &&
               pthread_cond_timedwait(&s->keeper_cond, &s->keeper_lock, &deadline) == 0) {
        }
    }
    pthread_mutex_unlock(&s->keeper_lock);
    return NULL;
}

static void auth_start(void *state)
{
    auth_svc *s = state;
    s->keeper_stop = false;
    s->keeper_running = pthread_create(&s->keeper, NULL, auth_keeper_run, s) == 0;
    if (!s->keeper_running)
        dk_log_error("auth: could not start the session store keeper");
}

static void auth_stop(void *state)
{
    auth_svc *s = state;
    if (!s->keeper_running)
        return;
    pthread_mutex_lock(&s->keeper_lock);
    s->keeper_stop = true;
    pthread_cond_signal(&s->keeper_cond);
    pthread_mutex_unlock(&s->keeper_lock);
    pthread_join(s->keeper, NULL);
    s->keeper_running = false;
}

static dk_status auth_init(dk_app *app, void **ret_state)
{
    auth_svc *s = DK_NEW(auth_svc);
    s->app = app;
    const void *ops = NULL;
    if (!dk_app_port(app, DK_USERS_DIRECTORY, &ops, &s->users_h)) {
        dk_log_error("auth needs the users service (users.directory) and nothing provides it");
        dk_free(s);
        return DK_E_INTERNAL;
    }
    s->users = ops;
    const dk_config *c = app->config;
    s->repo.db = &app->db;
    s->repo.kv = &app->store;
    s->repo.access_ttl_ms = dk_tokens_ttl_ms(app->tokens);
    s->repo.refresh_ttl_ms = app->refresh_ttl_ms;
    s->repo.max_sessions = (int)dk_config_int(c, "auth.max_sessions");
    s->repo.owed = &s->owed;
    pthread_mutex_init(&s->keeper_lock, NULL);
    dk_cond_init_monotonic(&s->keeper_cond);
    int workers = (int)dk_config_int(c, "auth.hash_workers");
    auth_hasher_options ho = {
        .memory_kib = (uint32_t)dk_config_int(c, "auth.argon2_memory_kib"),
        .iterations = (uint32_t)dk_config_int(c, "auth.argon2_iterations"),
        .parallelism = (uint32_t)dk_config_int(c, "auth.argon2_parallelism"),
        .workers = workers > 0 ? workers : dk_cpu_count(),
        .queue = (int)dk_config_int(c, "auth.hash_queue"),
        .max_wait_ms = 5000,
    };
    s->hasher = auth_hasher_new(&ho);
    dk_status st =
        app->bus.ops->subscribe(app->bus.ev, DK_EVENT_USER_DELETED, auth_on_user_deleted, s);
    if (st == DK_OK)
        st = app->bus.ops->subscribe(app->bus.ev, DK_EVENT_USER_EMAIL_CHANGED,
                                     auth_on_email_changed, s);
    if (st == DK_OK)
        st = auth_account_init(s);
    if (st == DK_OK) {
        dk_arena *a = dk_arena_new();
        st = auth_repo_housekeeping(&s->repo, a);
        dk_arena_free(a);
        if (st != DK_OK)
            dk_log_error("auth start-up housekeeping failed: %s", dk_status_title(st));
    }
    if (st != DK_OK) {
        auth_account_shutdown(s);
        auth_hasher_free(s->hasher);
        pthread_cond_destroy(&s->keeper_cond);
        pthread_mutex_destroy(&s->keeper_lock);
        dk_free(s);
        return st;
    }
    dk_session_guard_set_source(auth_session_source, s);
    *ret_state = s;
    return DK_OK;
}

static void auth_shutdown(void *state)
{
    auth_svc *s = state;
    if (!s)
        return;
    dk_session_guard_set_source(NULL, NULL);
    auth_account_shutdown(s);
    auth_hasher_free(s->hasher);
    pthread_cond_destroy(&s->keeper_cond);
    pthread_mutex_destroy(&s->keeper_lock);
    dk_free(s);
}

#define RL DK_ROUTE_RATE_LIMIT
static const dk_route auth_routes[] = {
    {"POST", "/register", auth_register, RL | DK_ROUTE_OFFLOAD},
    {"POST", "/login", auth_login, RL | DK_ROUTE_OFFLOAD},
    {"POST", "/refresh", auth_refresh, RL},
    {"POST", "/logout", auth_logout, RL | DK_ROUTE_AUTH},
    {"GET", "/sessions", auth_sessions_list, RL | DK_ROUTE_AUTH},
    {"DELETE", "/sessions/{id}", auth_sessions_delete, RL | DK_ROUTE_AUTH},
    {"POST", "/password", auth_password_change, RL | DK_ROUTE_AUTH | DK_ROUTE_OFFLOAD},
    {"POST", "/password/forgot", auth_password_forgot, RL},
    {"POST", "/password/reset", auth_password_reset, RL | DK_ROUTE_OFFLOAD},
    {"POST", "/email/verify", auth_email_verify, RL},
    {"POST", "/email/resend", auth_email_resend, RL | DK_ROUTE_AUTH},
    {"POST", "/mfa/totp/setup", auth_totp_setup, RL | DK_ROUTE_AUTH},
    {"POST", "/mfa/totp/enable", auth_totp_enable, RL | DK_ROUTE_AUTH},
    {"POST", "/mfa/totp/disable", auth_totp_disable, RL | DK_ROUTE_AUTH | DK_ROUTE_OFFLOAD},
    {"POST", "/login/mfa", auth_login_mfa, RL},
};

const dk_service dk_auth_service = {
    .name = "auth",
    .prefix = "/api/v1/auth",
    .default_port = 3001,
    .routes = auth_routes,
    .nroutes = sizeof auth_routes / sizeof auth_routes[0],
    .migrations = dk_auth_migrations,
    .nmigrations = DK_AUTH_NMIGRATIONS,
    .init = auth_init,
    .start = auth_start,
    .stop = auth_stop,
    .shutdown = auth_shutdown,
};
