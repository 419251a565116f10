#include "core/token.h"

#include <jwt.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/crypto.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "core/banned.h"

#define DK_TOKEN_ISSUER  "docket"
#define DK_TOKEN_MAX_LEN 4096

/* Tokens verified lately: a client presents the same token on every request until it expires,
 * and a hit skips the signature check and the claims' JSON (a measurable share of a task read's
 * CPU: docs/design/measurements.md). An entry holds the whole token and is found only by those
 * exact bytes (compared in constant time); it keeps the token's expiry and the identity, nothing
 * else: revocation is checked after verification, as for a token verified afresh. The slot comes
 * from a cheap hash of the signature part (hashing the whole token with SHA-256 for the lookup
 * cost more than the rest of the hit; a client that aims tokens at one slot only evicts, as it
 * could before). Tokens longer than DK_TOKEN_CACHE_TOKEN_MAX (never ours) are not kept.
 * Direct-mapped (a collision only evicts), DK_TOKEN_CACHE_LOCKS striped locks. */
#define DK_TOKEN_CACHE_SLOTS     1024
#define DK_TOKEN_CACHE_LOCKS     16
#define DK_TOKEN_CACHE_TOKEN_MAX 512

struct dk_token_slot {
    int64_t expires_at_ms; /* 0: empty */
    size_t len;
    char token[DK_TOKEN_CACHE_TOKEN_MAX];
    char user_id[40], session_id[40], role[24];
};

struct dk_token_cache {
    pthread_mutex_t locks[DK_TOKEN_CACHE_LOCKS];
    struct dk_token_slot slots[DK_TOKEN_CACHE_SLOTS];
};

struct dk_tokens {
    unsigned char *secret;
    size_t secret_len;
    int64_t ttl_ms;
    dk_hmac_key *mac; /* the secret, prepared for verification */
    struct dk_token_cache *cache;
};

dk_tokens *dk_tokens_new(const unsigned char *secret, size_t secret_len, int64_t access_ttl_ms)
{
    dk_tokens *t = DK_NEW(dk_tokens);
    t->secret = dk_malloc(secret_len);
    memcpy(t->secret, secret, secret_len);
    t->secret_len = secret_len;
    t->ttl_ms = access_ttl_ms;
    t->mac = dk_hmac_key_new(secret, secret_len);
    t->cache = DK_NEW(struct dk_token_cache);
    for (int i = 0; i < DK_TOKEN_CACHE_LOCKS; i++)
        pthread_mutex_init(&t->cache->locks[i], NULL);
    return t;
}

void dk_tokens_free(dk_tokens *t)
{
    if (!t)
        return;
    dk_hmac_key_free(t->mac);
    for (int i = 0; i < DK_TOKEN_CACHE_LOCKS; i++)
        pthread_mutex_destroy(&t->cache->locks[i]);
    OPENSSL_cleanse(t->cache, sizeof *t->cache);
    dk_free(t->cache);
    if (t->secret) {
        memset(t->secret, 0, t->secret_len);
        dk_free(t->secret);
    }
    dk_free(t);
}

int64_t dk_tokens_ttl_ms(const dk_tokens *t)
{
    return t->ttl_ms;
}

dk_status dk_tokens_issue(const dk_tokens *t, dk_arena *a, const char *user_id,
                          const char *session_id, const char *role, char **ret_token)
{
    jwt_t *jwt = NULL;
    dk_status st = DK_E_INTERNAL;
    if (jwt_new(&jwt) != 0)
        return DK_E_INTERNAL;
    int64_t now = dk_now_ms() / 1000;
    char jti[DK_UUID_LEN];
    dk_uuid7(jti);
    if (jwt_set_alg(jwt, JWT_ALG_HS256, t->secret, (int)t->secret_len) != 0 ||
        jwt_add_grant(jwt, "iss", DK_TOKEN_ISSUER) != 0 ||
        jwt_add_grant(jwt, "sub", user_id) != 0 || jwt_add_grant(jwt, "sid", session_id) != 0 ||
        jwt_add_grant(jwt, "role", role) != 0 || jwt_add_grant_int(jwt, "iat", (long)now) != 0 ||
        jwt_add_grant_int(jwt, "exp", (long)(now + t->ttl_ms / 1000)) != 0 ||
        jwt_add_grant(jwt, "jti", jti) != 0)
        goto out;
    char *s = jwt_encode_str(jwt);
    if (!s)
        goto out;
    *ret_token = dk_arena_strdup(a, s);
    free(s); /* libjwt 1.10 allocates with malloc */
    st = DK_OK;
out:
    jwt_free(jwt);
    return st;
}

/* The header must say {"alg":"HS256"} (typ optional): checked before libjwt sees the token, so
 * "none" and every other algorithm are refused whatever the library would do with them. */
static bool dk_token_header_ok(dk_arena *a, const char *token)
{
    const char *dot = strchr(token, '.');
    if (!dot || dot == token)
        return false;
    /* the header libjwt writes, {"alg":"HS256","typ":"JWT"}: no need to decode it */
    static const char ours[] = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";
    if ((size_t)(dot - token) == sizeof ours - 1 && memcmp(token, ours, sizeof ours - 1) == 0)
        return true;
    char *head = dk_arena_strndup(a, token, (size_t)(dot - token));
    size_t n = 0;
    unsigned char *raw = dk_base64url_decode(a, head, &n);
    if (!raw)
        return false;
    json_error_t err;
    json_t *h = json_loadb((const char *)raw, n, 0, &err);
    if (!h)
        return false;
    bool ok = json_is_object(h) && json_is_string(json_object_get(h, "alg")) &&
              strcmp(json_string_value(json_object_get(h, "alg")), "HS256") == 0;
    json_decref(h);
    return ok;
}

static dk_status dk_tokens_check(const dk_tokens *t, dk_arena *a, const char *token,
                                 dk_identity *ret_identity)
{
    /* three non-empty base64url parts */
    int dots = 0;
    for (const char *p = token; *p; p++) {
        if (*p == '.')
            dots++;
        else if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                   (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
            return DK_E_UNAUTHORIZED;
    }
    const char *last = strrchr(token, '.');
    if (dots != 2 || !last || !last[1])
        return DK_E_UNAUTHORIZED;
    if (!dk_token_header_ok(a, token))
        return DK_E_UNAUTHORIZED;

    /* The signature: the token's third part must be exactly the base64url text of the
     * HMAC-SHA256 of the first two (so no other encoding of the same bytes is accepted),
     * compared in constant time. Verified here rather than by libjwt, whose decode was a
     * large share of a task read's CPU (an algorithm lookup, BIOs and two JSON parses per
     * call; docs/design/measurements.md). */
    unsigned char mac[32];
    dk_hmac_key_sign(t->mac, token, (size_t)(last - token), mac);
    if (!dk_ct_streq(last + 1, dk_base64url(a, mac, sizeof mac)))
        return DK_E_UNAUTHORIZED;

    const char *dot = strchr(token, '.');
    size_t n = 0;
    unsigned char *raw =
        dk_base64url_decode(a, dk_arena_strndup(a, dot + 1, (size_t)(last - dot - 1)), &n);
    if (!raw)
        return DK_E_UNAUTHORIZED;
    json_error_t err;
    json_t *claims = dk_json_own(a, json_loadb((const char *)raw, n, 0, &err));
    if (!json_is_object(claims))
        return DK_E_UNAUTHORIZED;
    const char *iss = json_string_value(json_object_get(claims, "iss"));
    const char *sub = json_string_value(json_object_get(claims, "sub"));
    const char *sid = json_string_value(json_object_get(claims, "sid"));
    const char *role = json_string_value(json_object_get(claims, "role"));
    json_t *exp = json_object_get(claims, "exp");
    if (!json_is_integer(exp))
        return DK_E_UNAUTHORIZED;
    if (!iss || strcmp(iss, DK_TOKEN_ISSUER) != 0 || !sub || !*sub || !sid || !*sid || !role)
        return DK_E_UNAUTHORIZED;
    json_int_t exp_s = json_integer_value(exp);
    if (exp_s <= 0 || exp_s > INT64_MAX / 1000 || exp_s * 1000 <= dk_now_ms())
        return DK_E_UNAUTHORIZED;
    ret_identity->user_id = dk_arena_strdup(a, sub);
    ret_identity->session_id = dk_arena_strdup(a, sid);
    ret_identity->role = dk_arena_strdup(a, role);
    ret_identity->expires_at_ms = (int64_t)exp_s * 1000;
    return DK_OK;
}

/* FNV-1a of the signature part (the text after the last dot). */
static unsigned dk_token_slot_of(const char *token, size_t len)
{
    const char *sig = memrchr(token, '.', len);
    sig = sig ? sig + 1 : token;
    unsigned h = 2166136261u;
    for (const char *p = sig; p < token + len; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h % DK_TOKEN_CACHE_SLOTS;
}

dk_status dk_tokens_verify(const dk_tokens *t, dk_arena *a, const char *token,
                           dk_identity *ret_identity)
{
    size_t len = token ? strlen(token) : 0;
    if (len == 0 || len > DK_TOKEN_MAX_LEN)
        return DK_E_UNAUTHORIZED;
    bool keep = len <= DK_TOKEN_CACHE_TOKEN_MAX;
    unsigned slot = dk_token_slot_of(token, len);
    struct dk_token_slot *e = &t->cache->slots[slot];
    pthread_mutex_t *lock = &t->cache->locks[slot % DK_TOKEN_CACHE_LOCKS];
    int64_t now = dk_now_ms();
    if (keep) {
        pthread_mutex_lock(lock);
        if (e->expires_at_ms > now && e->len == len && dk_ct_equal(e->token, token, len)) {
            ret_identity->user_id = dk_arena_strdup(a, e->user_id);
            ret_identity->session_id = dk_arena_strdup(a, e->session_id);
            ret_identity->role = dk_arena_strdup(a, e->role);
            ret_identity->expires_at_ms = e->expires_at_ms;
            pthread_mutex_unlock(lock);
            return DK_OK;
        }
        pthread_mutex_unlock(lock);
    }
    dk_status st = dk_tokens_check(t, a, token, ret_identity);
    if (st != DK_OK || !keep || strlen(ret_identity->user_id) >= sizeof e->user_id ||
        strlen(ret_identity->session_id) >= sizeof e->session_id ||
        strlen(ret_identity->role) >= sizeof e->role)
        return st; /* not kept: tokens or identities that long are not ours */
    pthread_mutex_lock(lock);
    memcpy(e->token, token, len);
    e->len = len;
    e->expires_at_ms = ret_identity->expires_at_ms;
    dk_strlcpy(e->user_id, ret_identity->user_id, sizeof e->user_id);
    dk_strlcpy(e->session_id, ret_identity->session_id, sizeof e->session_id);
    dk_strlcpy(e->role, ret_identity->role, sizeof e->role);
    pthread_mutex_unlock(lock);
    return DK_OK;
}
