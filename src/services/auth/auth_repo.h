/* auth_repo.h — the auth service's tables (schema `auth` on PostgreSQL): credentials
 * (password hashes by user id), sessions, and refresh tokens (stored only as SHA-256 hashes).
 * Multi-statement operations run in one transaction. Strings live in the caller's arena.
 * Errors: DK_E_NOT_FOUND, DK_E_UNAUTHORIZED (refresh refused), and the db port's. */
#ifndef DK_AUTH_REPO_H
#define DK_AUTH_REPO_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/migrate.h"
#include "ports/db.h"
#include "ports/kv.h"

#define DK_AUTH_NMIGRATIONS 2
extern const dk_migration dk_auth_migrations[DK_AUTH_NMIGRATIONS];

typedef struct auth_session {
    const char *id;
    const char *user_id;
    int64_t created_at, last_used_at, expires_at;
    const char *user_agent, *ip;
} auth_session;

/* Writes to the shared store that failed (it did not answer): the keeper makes them good. */
typedef struct auth_cache_owed {
    atomic_bool revocations; /* replay every recent revocation */
    atomic_bool lives;       /* write every live session */
} auth_cache_owed;

typedef struct auth_repo {
    const dk_database *db;
    const dk_store *kv;
    int64_t access_ttl_ms;  /* revocation records live this long (plus a margin) */
    int64_t refresh_ttl_ms; /* a session expires this long after its last refresh */
    int max_sessions;
    auth_cache_owed *owed;
} auth_repo;

dk_status auth_repo_credentials_put(const auth_repo *r, dk_arena *a, const char *user_id,
                                    const char *hash) DK_MUSTCHECK;
dk_status auth_repo_credentials_get(const auth_repo *r, dk_arena *a, const char *user_id,
                                    char **ret_hash) DK_MUSTCHECK;

/* Opens a session with its first refresh token, evicting the least recently used sessions
 * beyond max_sessions. ret_refresh receives the plaintext refresh token. */
dk_status auth_repo_session_open(const auth_repo *r, dk_arena *a, const char *user_id,
                                 const char *user_agent, const char *ip, char **ret_session_id,
                                 char **ret_refresh) DK_MUSTCHECK;
/* Rotates a refresh token. Reuse of a rotated token revokes the session. */
dk_status auth_repo_session_refresh(const auth_repo *r, dk_arena *a, const char *refresh_token,
                                    char **ret_session_id, char **ret_user_id,
                                    char **ret_new_refresh) DK_MUSTCHECK;
/* Revokes one session of user_id (DK_E_NOT_FOUND when it is not an active session of theirs;
 * an already revoked one is recorded and broadcast in the shared store again first). */
dk_status auth_repo_session_revoke(const auth_repo *r, dk_arena *a, const char *user_id,
                                   const char *session_id) DK_MUSTCHECK;
/* Revokes every active session of the user except keep_id (NULL: all). */
dk_status auth_repo_session_revoke_all(const auth_repo *r, dk_arena *a, const char *user_id,
                                       const char *keep_id) DK_MUSTCHECK;
/* Active sessions, oldest first, last_used_at including use recorded in the kv store. */
dk_status auth_repo_session_list(const auth_repo *r, dk_arena *a, const char *user_id,
                                 auth_session **ret, int *ret_n) DK_MUSTCHECK;
/* ---------- e-mail tokens: password reset ("reset") and address verification ("verify") -------
 * Random 256-bit tokens, stored as SHA-256 hashes, single use, expiring. */

/* A new token of kind for user_id/email; earlier unused tokens of that kind and user die. */
dk_status auth_repo_email_token_new(const auth_repo *r, dk_arena *a, const char *kind,
                                    const char *user_id, const char *email, int64_t ttl_ms,
                                    char **ret_token) DK_MUSTCHECK;
/* A live token of kind: its user and address. DK_E_VALIDATION when unknown, used or expired. */
dk_status auth_repo_email_token_peek(const auth_repo *r, dk_arena *a, const char *kind,
                                     const char *token, char **ret_user_id,
                                     char **ret_email) DK_MUSTCHECK;
/* Uses a live token (DK_E_VALIDATION when it is no longer live), killing the user's other
 * tokens of that kind; with new_hash (reset), the password changes in the same transaction. */
dk_status auth_repo_email_token_use(const auth_repo *r, dk_arena *a, const char *kind,
                                    const char *token, const char *user_id,
                                    const char *new_hash) DK_MUSTCHECK;
/* One mail of kind per address per interval: true (and the time recorded) when one may go now. */
dk_status auth_repo_mail_allowed(const auth_repo *r, dk_arena *a, const char *kind,
                                 const char *email, int64_t interval_ms,
                                 bool *ret_allowed) DK_MUSTCHECK;

/* ---------- TOTP and recovery codes ---------- */

typedef struct auth_totp {
    const char *sealed; /* the encrypted secret */
    bool enabled;
    int64_t last_step; /* the last step whose code was accepted */
} auth_totp;

/* DK_E_NOT_FOUND when the user has no TOTP row (neither pending nor enabled). */
dk_status auth_repo_totp_get(const auth_repo *r, dk_arena *a, const char *user_id,
                             auth_totp *ret) DK_MUSTCHECK;
/* A new pending secret; DK_E_CONFLICT when TOTP is already enabled. */
dk_status auth_repo_totp_setup(const auth_repo *r, dk_arena *a, const char *user_id,
                               const char *sealed) DK_MUSTCHECK;
dk_status auth_repo_totp_reseal(const auth_repo *r, dk_arena *a, const char *user_id,
                                const char *sealed) DK_MUSTCHECK;
/* Records step as used; DK_E_CONFLICT when it (or a later one) was used already (replay). */
dk_status auth_repo_totp_use_step(const auth_repo *r, dk_arena *a, const char *user_id,
                                  int64_t step) DK_MUSTCHECK;
/* Enables the pending secret (step: the code that confirmed it) and replaces the recovery
 * codes with these hashes. DK_E_CONFLICT when not pending or the step was used. */
dk_status auth_repo_totp_enable(const auth_repo *r, dk_arena *a, const char *user_id, int64_t step,
                                const char *const *code_hashes, int ncodes) DK_MUSTCHECK;
dk_status auth_repo_totp_disable(const auth_repo *r, dk_arena *a, const char *user_id) DK_MUSTCHECK;
/* Uses a recovery code; DK_E_VALIDATION when not a live code of this user. */
dk_status auth_repo_recovery_use(const auth_repo *r, dk_arena *a, const char *user_id,
                                 const char *code_hash) DK_MUSTCHECK;

/* ---------- the second step of a login ---------- */

#define AUTH_MFA_MAX_FAILURES 5

dk_status auth_repo_mfa_challenge_new(const auth_repo *r, dk_arena *a, const char *user_id,
                                      int64_t ttl_ms, char **ret_token) DK_MUSTCHECK;
/* The user of a live challenge; DK_E_UNAUTHORIZED when unknown, used, expired or failed. */
dk_status auth_repo_mfa_challenge_get(const auth_repo *r, dk_arena *a, const char *token,
                                      char **ret_user_id) DK_MUSTCHECK;
dk_status auth_repo_mfa_challenge_fail(const auth_repo *r, dk_arena *a,
                                       const char *token) DK_MUSTCHECK;
/* Uses it up; DK_E_UNAUTHORIZED when it was no longer live (a concurrent use). */
dk_status auth_repo_mfa_challenge_finish(const auth_repo *r, dk_arena *a,
                                         const char *token) DK_MUSTCHECK;

/* Deletes what the auth service holds about a user (their account was deleted). */
dk_status auth_repo_forget_user(const auth_repo *r, dk_arena *a, const char *user_id) DK_MUSTCHECK;
/* The source of truth for dk_session_check (dk_session_source_fn): whether the session is live,
 * and for how long that holds. */
dk_status auth_repo_session_state(const auth_repo *r, dk_arena *a, const char *session_id,
                                  bool *ret_live, int64_t *ret_ttl_ms) DK_MUSTCHECK;
/* Writes every live session to the shared store (dk_session_open), inside a seed (canary, then
 * the marker) when `full`. DK_E_NOT_FOUND when the store was emptied meanwhile. */
dk_status auth_repo_seed(const auth_repo *r, dk_arena *a, bool full) DK_MUSTCHECK;
/* Writes the revocations still within their lifetime to the shared store again. */
dk_status auth_repo_replay_revocations(const auth_repo *r, dk_arena *a) DK_MUSTCHECK;
/* Start-up: re-publishes recent revocations to the kv store (an in-process store starts empty)
 * and drops sessions long dead. */
dk_status auth_repo_housekeeping(const auth_repo *r, dk_arena *a) DK_MUSTCHECK;

#endif
