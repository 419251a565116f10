/* auth_internal.h — what the auth service's files share: the service state and the reply
 * helpers (auth_service.c), and the account-recovery, verification and second-factor handlers
 * with their mail jobs (auth_account.c). Not for other services. */
#ifndef DK_AUTH_INTERNAL_H
#define DK_AUTH_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>

#include "core/app.h"
#include "core/http.h"
#include "core/mail.h"
#include "core/workpool.h"
#include "ports/mailer.h"
#include "ports/users_directory.h"
#include "services/auth/auth_repo.h"
#include "services/auth/password.h"
#include "services/auth/totp.h"

#define AUTH_MFA_TOKEN_TTL_MS (300 * 1000)

typedef struct auth_svc {
    dk_app *app;
    auth_repo repo;
    auth_hasher *hasher;
    const struct dk_users_directory_ops *users;
    void *users_h;
    /* mail: composed and sent on the mail pool, never on a request thread */
    dk_mailer mailer; /* ops NULL: no mailer (mails are logged as skipped) */
    dk_arena *keep;   /* long-lived strings: the sender, the public URL */
    dk_mail_sender from;
    bool from_ok;
    const char *public_url; /* without a trailing slash */
    dk_workpool *mail_pool;
    int64_t reset_ttl_ms, verify_ttl_ms, mail_interval_ms;
    totp_keyring *keys;
    auth_cache_owed owed;
    /* the keeper: seeds an emptied shared store, makes good the writes it missed */
    pthread_t keeper;
    bool keeper_running;
    bool keeper_stop; /* under keeper_lock */
    pthread_mutex_t keeper_lock;
    pthread_cond_t keeper_cond;
} auth_svc;

void auth_fail(dk_res *res, dk_status st);
const char *auth_field(const json_t *body, const char *key, dk_errors *errs);
const char *auth_user_agent(dk_req *req);
/* Opens a session for u and answers 200 {tokens}. */
void auth_login_complete(auth_svc *s, dk_req *req, dk_res *res, const dk_user *u);

/* Mail jobs (queued; DK_E_UNAVAILABLE when the queue is full). */
dk_status auth_mail_verify(auth_svc *s, const char *user_id, const char *email) DK_MUSTCHECK;
dk_status auth_account_init(auth_svc *s) DK_MUSTCHECK;
void auth_account_shutdown(auth_svc *s);
/* user.email_changed */
dk_status auth_on_email_changed(void *ctx, const char *type, const char *payload);

void auth_password_forgot(dk_req *req, dk_res *res);
void auth_password_reset(dk_req *req, dk_res *res);
void auth_email_verify(dk_req *req, dk_res *res);
void auth_email_resend(dk_req *req, dk_res *res);
void auth_totp_setup(dk_req *req, dk_res *res);
void auth_totp_enable(dk_req *req, dk_res *res);
void auth_totp_disable(dk_req *req, dk_res *res);
void auth_login_mfa(dk_req *req, dk_res *res);

#endif
