#include "services/auth/auth_repo.h"

#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/crypto.h"
#include "core/ids.h"
#include "core/log.h"
#include "core/session_guard.h"
#include "core/sql.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "core/banned.h"

#define AUTH_REVOKE_MARGIN_MS 60000
#define AUTH_REFRESH_BYTES    32 /* 256 bits */

const dk_migration dk_auth_migrations[DK_AUTH_NMIGRATIONS] = {
    {1, "credentials_sessions_refresh_tokens",
     "CREATE TABLE credentials (\n"
     "  user_id TEXT PRIMARY KEY,\n"
     "  password_hash TEXT NOT NULL,\n"
     "  updated_at INTEGER NOT NULL\n"
     ");\n"
     "CREATE TABLE sessions (\n"
     "  id TEXT PRIMARY KEY,\n"
     "  user_id TEXT NOT NULL,\n"
     "  created_at INTEGER NOT NULL,\n"
     "  last_used_at INTEGER NOT NULL,\n"
     "  expires_at INTEGER NOT NULL,\n"
     "  revoked_at INTEGER,\n"
     "  user_agent TEXT,\n"
     "  ip TEXT\n"
     ");\n"
     "CREATE INDEX sessions_user_idx ON sessions (user_id, revoked_at);\n"
     "CREATE TABLE refresh_tokens (\n"
     "  token_hash TEXT PRIMARY KEY,\n"
     "  session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,\n"
     "  created_at INTEGER NOT NULL,\n"
     "  used_at INTEGER\n"
     ");\n"
     "CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id);\n",
     "CREATE TABLE auth.credentials (\n"
     "  user_id TEXT PRIMARY KEY,\n"
     "  password_hash TEXT NOT NULL,\n"
     "  updated_at BIGINT NOT NULL\n"
     ");\n"
     "CREATE TABLE auth.sessions (\n"
     "  id TEXT PRIMARY KEY,\n"
     "  user_id TEXT NOT NULL,\n"
     "  created_at BIGINT NOT NULL,\n"
     "  last_used_at BIGINT NOT NULL,\n"
     "  expires_at BIGINT NOT NULL,\n"
     "  revoked_at BIGINT,\n"
     "  user_agent TEXT,\n"
     "  ip TEXT\n"
     ");\n"
     "CREATE INDEX sessions_user_idx ON auth.sessions (user_id, revoked_at);\n"
     "CREATE TABLE auth.refresh_tokens (\n"
     "  token_hash TEXT PRIMARY KEY,\n"
     "  session_id TEXT NOT NULL REFERENCES auth.sessions (id) ON DELETE CASCADE,\n"
     "  created_at BIGINT NOT NULL,\n"
     "  used_at BIGINT\n"
     ");\n"
     "CREATE INDEX refresh_tokens_session_idx ON auth.refresh_tokens (session_id);\n"},
    {2, "email_tokens_totp_recovery_codes_mfa_challenges",
     "CREATE TABLE email_tokens (\n"
     "  token_hash TEXT PRIMARY KEY,\n"
     "  kind TEXT NOT NULL CHECK (kind IN ('reset', 'verify')),\n"
     "  user_id TEXT NOT NULL,\n"
     "  email TEXT NOT NULL,\n"
     "  created_at INTEGER NOT NULL,\n"
     "  expires_at INTEGER NOT NULL,\n"
     "  used_at INTEGER\n"
     ");\n"
     "CREATE INDEX email_tokens_user_idx ON email_tokens (user_id, kind);\n"
     "CREATE TABLE mail_throttle (\n"
     "  kind TEXT NOT NULL,\n"
     "  email_key TEXT NOT NULL,\n"
     "  last_sent_at INTEGER NOT NULL,\n"
     "  PRIMARY KEY (kind, email_key)\n"
     ");\n"
     "CREATE TABLE totp (\n"
     "  user_id TEXT PRIMARY KEY,\n"
     "  secret TEXT NOT NULL,\n"
     "  enabled_at INTEGER,\n"
     "  last_step INTEGER NOT NULL DEFAULT 0,\n"
     "  created_at INTEGER NOT NULL\n"
     ");\n"
     "CREATE TABLE recovery_codes (\n"
     "  code_hash TEXT PRIMARY KEY,\n"
     "  user_id TEXT NOT NULL,\n"
     "  used_at INTEGER\n"
     ");\n"
     "CREATE INDEX recovery_codes_user_idx ON recovery_codes (user_id);\n"
     "CREATE TABLE mfa_challenges (\n"
     "  token_hash TEXT PRIMARY KEY,\n"
     "  user_id TEXT NOT NULL,\n"
     "  expires_at INTEGER NOT NULL,\n"
     "  failures INTEGER NOT NULL DEFAULT 0,\n"
     "  used_at INTEGER\n"
     ");\n",
     "CREATE TABLE auth.email_tokens (\n"
     "  token_hash TEXT PRIMARY KEY,\n"
     "  kind TEXT NOT NULL CHECK (kind IN ('reset', 'verify')),\n"
     "  user_id TEXT NOT NULL,\n"
     "  email TEXT NOT NULL,\n"
     "  created_at BIGINT NOT NULL,\n"
     "  expires_at BIGINT NOT NULL,\n"
     "  used_at BIGINT\n"
     ");\n"
     "CREATE INDEX email_tokens_user_idx ON auth.email_tokens (user_id, kind);\n"
     "CREATE TABLE auth.mail_throttle (\n"
     "  kind TEXT NOT NULL,\n"
     "  email_key TEXT NOT NULL,\n"
     "  last_sent_at BIGINT NOT NULL,\n"
     "  PRIMARY KEY (kind, email_key)\n"
     ");\n"
     "CREATE TABLE auth.totp (\n"
     "  user_id TEXT PRIMARY KEY,\n"
     "  secret TEXT NOT NULL,\n"
     "  enabled_at BIGINT,\n"
     "  last_step BIGINT NOT NULL DEFAULT 0,\n"
     "  created_at BIGINT NOT NULL\n"
     ");\n"
     "CREATE TABLE auth.recovery_codes (\n"
     "  code_hash TEXT PRIMARY KEY,\n"
     "  user_id TEXT NOT NULL,\n"
     "  used_at BIGINT\n"
     ");\n"
     "CREATE INDEX recovery_codes_user_idx ON auth.recovery_codes (user_id);\n"
     "CREATE TABLE auth.mfa_challenges (\n"
     "  token_hash TEXT PRIMARY KEY,\n"
     "  user_id TEXT NOT NULL,\n"
     "  expires_at BIGINT NOT NULL,\n"
     "  failures INTEGER NOT NULL DEFAULT 0,\n"
     "  used_at BIGINT\n"
     ");\n"},
};

static const char *auth_token_hash(dk_arena *a, const char *token)
{
    unsigned char h[32];
    dk_sha256(token, strlen(token), h);
    char *hex = dk_arena_alloc(a, 65);
    dk_hex(h, 32, hex);
    return hex;
}

/* Session ids are ours (UUIDs); anything else cannot be in the table, and must not reach SQL
 * (PostgreSQL refuses bytes that are not UTF-8). */
static bool auth_sid_plausible(const char *sid)
{
    return dk_uuid_valid(sid);
}

static int64_t auth_revoke_ttl(const auth_repo *r)
{
    return r->access_ttl_ms + AUTH_REVOKE_MARGIN_MS;
}

/* Records a revocation (after its transaction committed). When the store does not take it, the
 * keeper replays recent revocations until it does. */
static dk_status auth_kv_revoke(const auth_repo *r, const char *sid)
{
    dk_status st = dk_session_revoke(r->kv, sid, auth_revoke_ttl(r));
    if (st != DK_OK) {
        dk_log_error("could not record the revocation of a session: %s", dk_status_title(st));
        if (r->owed)
            atomic_store(&r->owed->revocations, true);
    }
    return st;
}

/* Records a live session (after its transaction committed); a failure is made good by the
 * keeper, and until then processes with the database find it there. */
static void auth_kv_open(const auth_repo *r, const char *sid, int64_t ttl_ms)
{
    dk_status st = dk_session_open(r->kv, sid, ttl_ms);
    if (st != DK_OK) {
        dk_log_warn("could not record a session in the shared store: %s", dk_status_title(st));
        if (r->owed)
            atomic_store(&r->owed->lives, true);
    }
}

dk_status auth_repo_credentials_put(const auth_repo *r, dk_arena *a, const char *user_id,
                                    const char *hash)
{
    const char *p[] = {user_id, hash, dk_sql_int(a, dk_now_ms())};
    return dk_sql(
        r->db, a,
        "INSERT INTO credentials (user_id, password_hash, updated_at) VALUES ($1, $2, $3) "
        "ON CONFLICT (user_id) DO UPDATE SET password_hash = excluded.password_hash, "
        "updated_at = excluded.updated_at",
        3, p, NULL);
}

dk_status auth_repo_credentials_get(const auth_repo *r, dk_arena *a, const char *user_id,
                                    char **ret_hash)
{
    const char *p[] = {user_id};
    dk_db_rows *rows = NULL;
    dk_status st =
        dk_sql(r->db, a, "SELECT password_hash FROM credentials WHERE user_id = $1", 1, p, &rows);
    if (st != DK_OK)
        return st;
    if (rows->nrows == 0)
        return DK_E_NOT_FOUND;
    *ret_hash = (char *)dk_db_value(rows, 0, 0);
    return DK_OK;
}

/* Effective last use: the later of the database record and the kv record. */
static int64_t auth_last_used(const auth_repo *r, dk_arena *a, const char *sid, int64_t db_value)
{
    int64_t kv_value = 0;
    if (dk_session_last_used(r->kv, a, sid, &kv_value) != DK_OK)
        return db_value;
    return kv_value > db_value ? kv_value : db_value;
}

static int auth_session_lru_cmp(const void *pa, const void *pb)
{
    const auth_session *x = pa, *y = pb;
    if (x->last_used_at != y->last_used_at)
        return x->last_used_at < y->last_used_at ? -1 : 1;
    if (x->created_at != y->created_at)
        return x->created_at < y->created_at ? -1 : 1;
    return strcmp(x->id, y->id);
}

dk_status auth_repo_session_open(const auth_repo *r, dk_arena *a, const char *user_id,
                                 const char *user_agent, const char *ip, char **ret_session_id,
                                 char **ret_refresh)
{
    int64_t now = dk_now_ms();
    const char *nows = dk_sql_int(a, now);
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    const char *pu[] = {user_id, nows};
    dk_db_rows *rows = NULL;
    if (r->db->ops->engine == DK_DB_POSTGRES) {
        /* serialise logins of one user so two at once cannot exceed max_sessions */
        st = dk_tx_query(&tx, a, "SELECT user_id FROM credentials WHERE user_id = $1 FOR UPDATE", 1,
                         pu, NULL);
        if (st != DK_OK)
            return dk_tx_end(&tx, st);
    }
    st = dk_tx_query(&tx, a,
                     "SELECT id, created_at, last_used_at FROM sessions WHERE user_id = $1 "
                     "AND revoked_at IS NULL AND expires_at > $2",
                     2, pu, &rows);
    if (st != DK_OK)
        return dk_tx_end(&tx, st);
    int n = rows->nrows;
    auth_session *evicted = NULL;
    int nevicted = 0;
    if (n >= r->max_sessions) {
        auth_session *active = dk_arena_alloc(a, sizeof(auth_session) * (size_t)n);
        for (int i = 0; i < n; i++) {
            active[i].id = dk_db_value(rows, i, 0);
            active[i].created_at = dk_sql_get_int(rows, i, 1);
            active[i].last_used_at = auth_last_used(r, a, active[i].id, dk_sql_get_int(rows, i, 2));
        }
        qsort(active, (size_t)n, sizeof *active, auth_session_lru_cmp);
        evicted = active;
        nevicted = n - r->max_sessions + 1;
        for (int i = 0; i < nevicted; i++) {
            const char *pr[] = {active[i].id, nows};
            st = dk_tx_query(&tx, a, "UPDATE sessions SET revoked_at = $2 WHERE id = $1", 2, pr,
                             NULL);
            if (st != DK_OK)
                return dk_tx_end(&tx, st);
        }
    }
    char *sid = dk_arena_alloc(a, DK_UUID_LEN);
    dk_uuid7(sid);
    char *refresh = dk_random_token(a, AUTH_REFRESH_BYTES);
    const char *ps[] = {sid, user_id, nows, dk_sql_int(a, now + r->refresh_ttl_ms), user_agent, ip};
    st = dk_tx_query(&tx, a,
                     "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, "
                     "user_agent, ip) VALUES ($1, $2, $3, $3, $4, $5, $6)",
                     6, ps, NULL);
    if (st != DK_OK)
        return dk_tx_end(&tx, st);
    const char *pt[] = {auth_token_hash(a, refresh), sid, nows};
    st = dk_tx_query(&tx, a,
                     "INSERT INTO refresh_tokens (token_hash, session_id, created_at) "
                     "VALUES ($1, $2, $3)",
                     3, pt, NULL);
    st = dk_tx_end(&tx, st);
    if (st != DK_OK)
        return st;
    /* the store learns of the eviction only once it is committed (a rolled back login must not
     * leave a session revoked in the store but live in the database) */
    for (int i = 0; i < nevicted; i++) {
        (void)auth_kv_revoke(r, evicted[i].id); /* on failure the keeper replays it */
        dk_log_info("session evicted: more than %d active sessions", r->max_sessions);
    }
    auth_kv_open(r, sid, r->refresh_ttl_ms);
    *ret_session_id = sid;
    *ret_refresh = refresh;
    return DK_OK;
}

dk_status auth_repo_session_refresh(const auth_repo *r, dk_arena *a, const char *refresh_token,
                                    char **ret_session_id, char **ret_user_id,
                                    char **ret_new_refresh)
{
    int64_t now = dk_now_ms();
    const char *nows = dk_sql_int(a, now);
    const char *hash = auth_token_hash(a, refresh_token);
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    const char *p1[] = {hash, nows};
    dk_db_rows *rows = NULL;
    st = dk_tx_query(&tx, a,
                     "UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1 "
                     "AND used_at IS NULL RETURNING session_id",
                     2, p1, &rows);
    if (st != DK_OK)
        return dk_tx_end(&tx, st);
    if (rows->nrows == 0) {
        const char *p2[] = {hash};
        st = dk_tx_query(&tx, a, "SELECT session_id FROM refresh_tokens WHERE token_hash = $1", 1,
                         p2, &rows);
        if (st != DK_OK)
            return dk_tx_end(&tx, st);
        if (rows->nrows == 0) {
            dk_tx_abort(&tx);
            return DK_E_UNAUTHORIZED;
        }
        /* A rotated token came back: someone holds a copy. Kill the whole session. */
        const char *sid = dk_db_value(rows, 0, 0);
        const char *p3[] = {sid, nows};
        st = dk_tx_query(&tx, a,
                         "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                         2, p3, NULL);
        st = dk_tx_end(&tx, st);
        if (st != DK_OK)
            return st;
        (void)auth_kv_revoke(r, sid); /* on failure the keeper replays it */
        dk_log_warn("refresh token reuse detected: session revoked");
        return DK_E_UNAUTHORIZED;
    }
    char *sid = (char *)dk_db_value(rows, 0, 0);
    const char *p4[] = {sid};
    st = dk_tx_query(&tx, a, "SELECT user_id, revoked_at, expires_at FROM sessions WHERE id = $1",
                     1, p4, &rows);
    if (st != DK_OK)
        return dk_tx_end(&tx, st);
    if (rows->nrows == 0 || dk_db_value(rows, 0, 1) != NULL || dk_sql_get_int(rows, 0, 2) <= now) {
        dk_tx_abort(&tx);
        return DK_E_UNAUTHORIZED;
    }
    char *user_id = (char *)dk_db_value(rows, 0, 0);
    char *fresh = dk_random_token(a, AUTH_REFRESH_BYTES);
    const char *p5[] = {auth_token_hash(a, fresh), sid, nows};
    st = dk_tx_query(&tx, a,
                     "INSERT INTO refresh_tokens (token_hash, session_id, created_at) "
                     "VALUES ($1, $2, $3)",
                     3, p5, NULL);
    if (st != DK_OK)
        return dk_tx_end(&tx, st);
    const char *p6[] = {sid, nows, dk_sql_int(a, now + r->refresh_ttl_ms)};
    st = dk_tx_query(&tx, a, "UPDATE sessions SET last_used_at = $2, expires_at = $3 WHERE id = $1",
                     3, p6, NULL);
    st = dk_tx_end(&tx, st);
    if (st != DK_OK)
        return st;
    auth_kv_open(r, sid, r->refresh_ttl_ms); /* its new lifetime */
    *ret_session_id = sid;
    *ret_user_id = user_id;
    *ret_new_refresh = fresh;
    return DK_OK;
}

dk_status auth_repo_session_revoke(const auth_repo *r, dk_arena *a, const char *user_id,
                                   const char *session_id)
{
    if (!auth_sid_plausible(session_id))
        return DK_E_NOT_FOUND;
    const char *p[] = {session_id, user_id, dk_sql_int(a, dk_now_ms())};
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(r->db, a,
                          "UPDATE sessions SET revoked_at = $3 WHERE id = $1 AND user_id = $2 "
                          "AND revoked_at IS NULL AND expires_at > $3",
                          3, p, &rows);
    if (st != DK_OK)
        return st;
    if (rows->affected == 0) {
        /* Already revoked: record and broadcast it again, in case the first attempt reached
         * the database but not the shared store (a retried logout after a 503). */
        const char *pq[] = {session_id, user_id};
        dk_db_rows *old = NULL;
        st = dk_sql(r->db, a,
                    "SELECT 1 FROM sessions WHERE id = $1 AND user_id = $2 AND revoked_at IS NOT "
                    "NULL",
                    2, pq, &old);
        if (st == DK_OK && old->nrows > 0)
            st = auth_kv_revoke(r, session_id);
        return st == DK_OK ? DK_E_NOT_FOUND : st;
    }
    return auth_kv_revoke(r, session_id);
}

dk_status auth_repo_session_revoke_all(const auth_repo *r, dk_arena *a, const char *user_id,
                                       const char *keep_id)
{
    const char *nows = dk_sql_int(a, dk_now_ms());
    const char *p[] = {user_id, keep_id ? keep_id : "", nows};
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(r->db, a,
                          "UPDATE sessions SET revoked_at = $3 WHERE user_id = $1 AND id <> $2 "
                          "AND revoked_at IS NULL RETURNING id",
                          3, p, &rows);
    if (st != DK_OK)
        return st;
    for (int i = 0; i < rows->nrows; i++) {
        dk_status kst = auth_kv_revoke(r, dk_db_value(rows, i, 0));
        if (kst != DK_OK)
            st = kst;
    }
    return st;
}

dk_status auth_repo_session_list(const auth_repo *r, dk_arena *a, const char *user_id,
                                 auth_session **ret, int *ret_n)
{
    const char *p[] = {user_id, dk_sql_int(a, dk_now_ms())};
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(r->db, a,
                          "SELECT id, created_at, last_used_at, expires_at, user_agent, ip "
                          "FROM sessions WHERE user_id = $1 AND revoked_at IS NULL "
                          "AND expires_at > $2 ORDER BY created_at, id",
                          2, p, &rows);
    if (st != DK_OK)
        return st;
    auth_session *out = dk_arena_alloc(a, sizeof(auth_session) * (size_t)(rows->nrows + 1));
    for (int i = 0; i < rows->nrows; i++) {
        out[i].id = dk_db_value(rows, i, 0);
        out[i].user_id = user_id;
        out[i].created_at = dk_sql_get_int(rows, i, 1);
        out[i].last_used_at = auth_last_used(r, a, out[i].id, dk_sql_get_int(rows, i, 2));
        out[i].expires_at = dk_sql_get_int(rows, i, 3);
        out[i].user_agent = dk_db_value(rows, i, 4);
        out[i].ip = dk_db_value(rows, i, 5);
    }
    *ret = out;
    *ret_n = rows->nrows;
    return DK_OK;
}

dk_status auth_repo_forget_user(const auth_repo *r, dk_arena *a, const char *user_id)
{
    /* Sessions stay as revoked rows (no personal data) until housekeeping drops them, so a
     * restart of an in-process store still knows their tokens are dead. */
    dk_status st = auth_repo_session_revoke_all(r, a, user_id, NULL);
    if (st != DK_OK)
        return st;
    const char *p[] = {user_id};
    dk_tx tx;
    st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    st = dk_tx_query(&tx, a,
                     "DELETE FROM refresh_tokens WHERE session_id IN "
                     "(SELECT id FROM sessions WHERE user_id = $1)",
                     1, p, NULL);
    if (st == DK_OK)
        st = dk_tx_query(&tx, a,
                         "UPDATE sessions SET user_agent = NULL, ip = NULL WHERE user_id = $1", 1,
                         p, NULL);
    if (st == DK_OK)
        st = dk_tx_query(&tx, a, "DELETE FROM credentials WHERE user_id = $1", 1, p, NULL);
    static const char *const per_user[] = {
        "DELETE FROM email_tokens WHERE user_id = $1",
        "DELETE FROM totp WHERE user_id = $1",
        "DELETE FROM recovery_codes WHERE user_id = $1",
        "DELETE FROM mfa_challenges WHERE user_id = $1",
    };
    for (size_t i = 0; st == DK_OK && i < sizeof per_user / sizeof per_user[0]; i++)
        st = dk_tx_query(&tx, a, per_user[i], 1, p, NULL);
    return dk_tx_end(&tx, st);
}

dk_status auth_repo_replay_revocations(const auth_repo *r, dk_arena *a)
{
    int64_t now = dk_now_ms();
    int64_t horizon = now - auth_revoke_ttl(r);
    const char *p[] = {dk_sql_int(a, horizon)};
    dk_db_rows *rows = NULL;
    dk_status st =
        dk_sql(r->db, a, "SELECT id, revoked_at FROM sessions WHERE revoked_at > $1", 1, p, &rows);
    if (st != DK_OK)
        return st;
    for (int i = 0; i < rows->nrows; i++) {
        int64_t left = dk_sql_get_int(rows, i, 1) + auth_revoke_ttl(r) - now;
        if (left > 0) {
            st = dk_session_revoke(r->kv, dk_db_value(rows, i, 0), left);
            if (st != DK_OK)
                return st;
        }
    }
    return DK_OK;
}

dk_status auth_repo_session_state(const auth_repo *r, dk_arena *a, const char *session_id,
                                  bool *ret_live, int64_t *ret_ttl_ms)
{
    int64_t now = dk_now_ms();
    bool live = false;
    int64_t ttl = auth_revoke_ttl(r);
    if (auth_sid_plausible(session_id)) {
        const char *p[] = {session_id};
        dk_db_rows *rows = NULL;
        dk_status st = dk_sql(r->db, a, "SELECT revoked_at, expires_at FROM sessions WHERE id = $1",
                              1, p, &rows);
        if (st != DK_OK)
            return st;
        if (rows->nrows == 1) {
            int64_t expires = dk_sql_get_int(rows, 0, 1);
            live = dk_db_value(rows, 0, 0) == NULL && expires > now;
            if (live)
                ttl = expires - now;
        }
    }
    *ret_live = live;
    *ret_ttl_ms = ttl;
    return DK_OK;
}

dk_status auth_repo_seed(const auth_repo *r, dk_arena *a, bool full)
{
    char token[DK_SESSION_SEED_TOKEN_LEN];
    dk_status st = DK_OK;
    if (full) {
        st = dk_session_seed_begin(r->kv, token);
        if (st != DK_OK)
            return st;
    }
    int64_t now = dk_now_ms();
    const char *p[] = {dk_sql_int(a, now)};
    dk_db_rows *rows = NULL;
    st = dk_sql(r->db, a,
                "SELECT id, expires_at FROM sessions WHERE revoked_at IS NULL AND expires_at > $1",
                1, p, &rows);
    if (st != DK_OK)
        return st;
    for (int i = 0; i < rows->nrows && st == DK_OK; i++)
        st = dk_session_open(r->kv, dk_db_value(rows, i, 0), dk_sql_get_int(rows, i, 1) - now);
    if (st == DK_OK && full)
        st = dk_session_seed_end(r->kv, token);
    if (st == DK_OK)
        dk_log_info("shared session store %s: %d live sessions written",
                    full ? "seeded" : "topped up", rows->nrows);
    return st;
}

dk_status auth_repo_housekeeping(const auth_repo *r, dk_arena *a)
{
    int64_t now = dk_now_ms();
    int64_t horizon = now - auth_revoke_ttl(r);
    dk_status st = auth_repo_replay_revocations(r, a);
    if (st != DK_OK)
        return st;
    /* dead long enough that no token of theirs can still verify */
    const char *pd[] = {dk_sql_int(a, horizon), dk_sql_int(a, now)};
    return dk_sql(r->db, a,
                  "DELETE FROM sessions WHERE (revoked_at IS NOT NULL AND revoked_at < $1) "
                  "OR expires_at < $2",
                  2, pd, NULL);
}

/* ---------- e-mail tokens ---------- */

#define AUTH_EMAIL_TOKEN_BYTES 32 /* 256 bits */

dk_status auth_repo_email_token_new(const auth_repo *r, dk_arena *a, const char *kind,
                                    const char *user_id, const char *email, int64_t ttl_ms,
                                    char **ret_token)
{
    int64_t now = dk_now_ms();
    const char *nows = dk_sql_int(a, now);
    char *token = dk_random_token(a, AUTH_EMAIL_TOKEN_BYTES);
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    const char *pk[] = {user_id, kind, nows};
    st = dk_tx_query(&tx, a,
                     "UPDATE email_tokens SET used_at = $3 WHERE user_id = $1 AND kind = $2 "
                     "AND used_at IS NULL",
                     3, pk, NULL);
    if (st == DK_OK) {
        const char *p[] = {auth_token_hash(a, token),  kind, user_id, email, nows,
                           dk_sql_int(a, now + ttl_ms)};
        st = dk_tx_query(&tx, a,
                         "INSERT INTO email_tokens (token_hash, kind, user_id, email, created_at, "
                         "expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
                         6, p, NULL);
    }
    /* rows long dead go while we are here */
    if (st == DK_OK) {
        const char *pd[] = {dk_sql_int(a, now - 7 * 24 * 3600 * INT64_C(1000))};
        st = dk_tx_query(&tx, a, "DELETE FROM email_tokens WHERE expires_at < $1", 1, pd, NULL);
    }
    st = dk_tx_end(&tx, st);
    if (st == DK_OK)
        *ret_token = token;
    return st;
}

dk_status auth_repo_email_token_peek(const auth_repo *r, dk_arena *a, const char *kind,
                                     const char *token, char **ret_user_id, char **ret_email)
{
    const char *p[] = {auth_token_hash(a, token), kind, dk_sql_int(a, dk_now_ms())};
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(r->db, a,
                          "SELECT user_id, email FROM email_tokens WHERE token_hash = $1 AND "
                          "kind = $2 AND used_at IS NULL AND expires_at > $3",
                          3, p, &rows);
    if (st != DK_OK)
        return st;
    if (rows->nrows == 0)
        return DK_E_VALIDATION;
    *ret_user_id = (char *)dk_db_value(rows, 0, 0);
    *ret_email = (char *)dk_db_value(rows, 0, 1);
    return DK_OK;
}

dk_status auth_repo_email_token_use(const auth_repo *r, dk_arena *a, const char *kind,
                                    const char *token, const char *user_id, const char *new_hash)
{
    const char *nows = dk_sql_int(a, dk_now_ms());
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    const char *p[] = {auth_token_hash(a, token), kind, nows, user_id};
    dk_db_rows *rows = NULL;
    st = dk_tx_query(&tx, a,
                     "UPDATE email_tokens SET used_at = $3 WHERE token_hash = $1 AND kind = $2 "
                     "AND user_id = $4 AND used_at IS NULL AND expires_at > $3",
                     4, p, &rows);
    if (st != DK_OK)
        return dk_tx_end(&tx, st);
    if (rows->affected == 0) {
        dk_tx_abort(&tx);
        return DK_E_VALIDATION;
    }
    const char *pk[] = {user_id, kind, nows};
    st = dk_tx_query(&tx, a,
                     "UPDATE email_tokens SET used_at = $3 WHERE user_id = $1 AND kind = $2 "
                     "AND used_at IS NULL",
                     3, pk, NULL);
    if (st == DK_OK && new_hash) {
        const char *pc[] = {user_id, new_hash, nows};
        st = dk_tx_query(&tx, a,
                         "UPDATE credentials SET password_hash = $2, updated_at = $3 "
                         "WHERE user_id = $1",
                         3, pc, &rows);
        if (st == DK_OK && rows->affected == 0)
            st = DK_E_VALIDATION; /* the account went away meanwhile */
    }
    return dk_tx_end(&tx, st);
}

dk_status auth_repo_mail_allowed(const auth_repo *r, dk_arena *a, const char *kind,
                                 const char *email, int64_t interval_ms, bool *ret_allowed)
{
    int64_t now = dk_now_ms();
    char *key = dk_arena_strdup(a, email);
    dk_str_lower(key);
    const char *p[] = {kind, key, dk_sql_int(a, now), dk_sql_int(a, now - interval_ms)};
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(r->db, a,
                          "INSERT INTO mail_throttle (kind, email_key, last_sent_at) "
                          "VALUES ($1, $2, $3) ON CONFLICT (kind, email_key) DO UPDATE SET "
                          "last_sent_at = excluded.last_sent_at "
                          "WHERE mail_throttle.last_sent_at <= $4",
                          4, p, &rows);
    if (st != DK_OK)
        return st;
    *ret_allowed = rows->affected > 0;
    return DK_OK;
}

/* ---------- TOTP and recovery codes ---------- */

dk_status auth_repo_totp_get(const auth_repo *r, dk_arena *a, const char *user_id, auth_totp *ret)
{
    const char *p[] = {user_id};
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(
        r->db, a, "SELECT secret, enabled_at, last_step FROM totp WHERE user_id = $1", 1, p, &rows);
    if (st != DK_OK)
        return st;
    if (rows->nrows == 0)
        return DK_E_NOT_FOUND;
    ret->sealed = dk_db_value(rows, 0, 0);
    ret->enabled = dk_db_value(rows, 0, 1) != NULL;
    ret->last_step = dk_sql_get_int(rows, 0, 2);
    return DK_OK;
}

dk_status auth_repo_totp_setup(const auth_repo *r, dk_arena *a, const char *user_id,
                               const char *sealed)
{
    const char *p[] = {user_id, sealed, dk_sql_int(a, dk_now_ms())};
    dk_db_rows *rows = NULL;
    dk_status st =
        dk_sql(r->db, a,
               "INSERT INTO totp (user_id, secret, last_step, created_at) "
               "VALUES ($1, $2, 0, $3) ON CONFLICT (user_id) DO UPDATE SET "
               "secret = excluded.secret, last_step = 0, created_at = excluded.created_at "
               "WHERE totp.enabled_at IS NULL",
               3, p, &rows);
    if (st != DK_OK)
        return st;
    return rows->affected > 0 ? DK_OK : DK_E_CONFLICT;
}

dk_status auth_repo_totp_reseal(const auth_repo *r, dk_arena *a, const char *user_id,
                                const char *sealed)
{
    const char *p[] = {user_id, sealed};
    return dk_sql(r->db, a, "UPDATE totp SET secret = $2 WHERE user_id = $1", 2, p, NULL);
}

dk_status auth_repo_totp_use_step(const auth_repo *r, dk_arena *a, const char *user_id,
                                  int64_t step)
{
    const char *p[] = {user_id, dk_sql_int(a, step)};
    dk_db_rows *rows = NULL;
    dk_status st =
        dk_sql(r->db, a, "UPDATE totp SET last_step = $2 WHERE user_id = $1 AND last_step < $2", 2,
               p, &rows);
    if (st != DK_OK)
        return st;
    return rows->affected > 0 ? DK_OK : DK_E_CONFLICT;
}

dk_status auth_repo_totp_enable(const auth_repo *r, dk_arena *a, const char *user_id, int64_t step,
                                const char *const *code_hashes, int ncodes)
{
    const char *nows = dk_sql_int(a, dk_now_ms());
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    const char *p[] = {user_id, dk_sql_int(a, step), nows};
    dk_db_rows *rows = NULL;
    st = dk_tx_query(&tx, a,
                     "UPDATE totp SET enabled_at = $3, last_step = $2 WHERE user_id = $1 "
                     "AND enabled_at IS NULL AND last_step < $2",
                     3, p, &rows);
    if (st != DK_OK)
        return dk_tx_end(&tx, st);
    if (rows->affected == 0) {
        dk_tx_abort(&tx);
        return DK_E_CONFLICT;
    }
    const char *pu[] = {user_id};
    st = dk_tx_query(&tx, a, "DELETE FROM recovery_codes WHERE user_id = $1", 1, pu, NULL);
    for (int i = 0; st == DK_OK && i < ncodes; i++) {
        const char *pc[] = {code_hashes[i], user_id};
        st = dk_tx_query(&tx, a, "INSERT INTO recovery_codes (code_hash, user_id) VALUES ($1, $2)",
                         2, pc, NULL);
    }
    return dk_tx_end(&tx, st);
}

dk_status auth_repo_totp_disable(const auth_repo *r, dk_arena *a, const char *user_id)
{
    const char *p[] = {user_id};
    dk_tx tx;
    dk_status st = dk_tx_begin(r->db, &tx);
    if (st != DK_OK)
        return st;
    st = dk_tx_query(&tx, a, "DELETE FROM totp WHERE user_id = $1", 1, p, NULL);
    if (st == DK_OK)
        st = dk_tx_query(&tx, a, "DELETE FROM recovery_codes WHERE user_id = $1", 1, p, NULL);
    return dk_tx_end(&tx, st);
}

dk_status auth_repo_recovery_use(const auth_repo *r, dk_arena *a, const char *user_id,
                                 const char *code_hash)
{
    const char *p[] = {code_hash, user_id, dk_sql_int(a, dk_now_ms())};
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(r->db, a,
                          "UPDATE recovery_codes SET used_at = $3 WHERE code_hash = $1 AND "
                          "user_id = $2 AND used_at IS NULL",
                          3, p, &rows);
    if (st != DK_OK)
        return st;
    return rows->affected > 0 ? DK_OK : DK_E_VALIDATION;
}

/* ---------- the second step of a login ---------- */

dk_status auth_repo_mfa_challenge_new(const auth_repo *r, dk_arena *a, const char *user_id,
                                      int64_t ttl_ms, char **ret_token)
{
    int64_t now = dk_now_ms();
    char *token = dk_random_token(a, AUTH_EMAIL_TOKEN_BYTES);
    const char *p[] = {auth_token_hash(a, token), user_id, dk_sql_int(a, now + ttl_ms)};
    dk_status st = dk_sql(r->db, a,
                          "INSERT INTO mfa_challenges (token_hash, user_id, expires_at) "
                          "VALUES ($1, $2, $3)",
                          3, p, NULL);
    if (st != DK_OK)
        return st;
    const char *pd[] = {dk_sql_int(a, now - 24 * 3600 * INT64_C(1000))};
    st = dk_sql(r->db, a, "DELETE FROM mfa_challenges WHERE expires_at < $1", 1, pd, NULL);
    if (st == DK_OK)
        *ret_token = token;
    return st;
}

dk_status auth_repo_mfa_challenge_get(const auth_repo *r, dk_arena *a, const char *token,
                                      char **ret_user_id)
{
    const char *p[] = {auth_token_hash(a, token), dk_sql_int(a, dk_now_ms()),
                       dk_sql_int(a, AUTH_MFA_MAX_FAILURES)};
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(r->db, a,
                          "SELECT user_id FROM mfa_challenges WHERE token_hash = $1 AND "
                          "used_at IS NULL AND expires_at > $2 AND failures < $3",
                          3, p, &rows);
    if (st != DK_OK)
        return st;
    if (rows->nrows == 0)
        return DK_E_UNAUTHORIZED;
    *ret_user_id = (char *)dk_db_value(rows, 0, 0);
    return DK_OK;
}

dk_status auth_repo_mfa_challenge_fail(const auth_repo *r, dk_arena *a, const char *token)
{
    const char *p[] = {auth_token_hash(a, token)};
    return dk_sql(r->db, a,
                  "UPDATE mfa_challenges SET failures = failures + 1 WHERE token_hash = $1", 1, p,
                  NULL);
}

dk_status auth_repo_mfa_challenge_finish(const auth_repo *r, dk_arena *a, const char *token)
{
    const char *p[] = {auth_token_hash(a, token), dk_sql_int(a, dk_now_ms()),
                       dk_sql_int(a, AUTH_MFA_MAX_FAILURES)};
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(r->db, a,
                          "UPDATE mfa_challenges SET used_at = $2 WHERE token_hash = $1 AND "
                          "used_at IS NULL AND expires_at > $2 AND failures < $3",
                          3, p, &rows);
    if (st != DK_OK)
        return st;
    return rows->affected > 0 ? DK_OK : DK_E_UNAUTHORIZED;
}
