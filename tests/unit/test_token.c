/* test_token.c — HS256 access tokens: issue/verify roundtrip with the documented claims, and
 * rejection of alg "none", other algorithms (HS384/HS512 under the same key), another key,
 * tampering, expiry, a wrong issuer, missing claims, oversize and garbage input. Hand-built
 * tokens are signed here with HMAC-SHA256 directly; a valid hand-built token is accepted, so
 * each rejection is down to the one thing changed. */
#include "testutil.h"

#include <errno.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/arena.h"
#include "core/crypto.h"
#include "core/ids.h"
#include "core/timeutil.h"
#include "core/token.h"
#include "core/banned.h"

#define SECRET     "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
#define SECRET_LEN (sizeof SECRET - 1)
#define TTL_MS     900000

struct fixture {
    dk_tokens *tokens;
    dk_arena *arena;
};

static int setup(void **state)
{
    struct fixture *f = test_calloc(1, sizeof *f);
    f->tokens = dk_tokens_new((const unsigned char *)SECRET, SECRET_LEN, TTL_MS);
    f->arena = dk_arena_new();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    dk_tokens_free(f->tokens);
    dk_arena_free(f->arena);
    test_free(f);
    return 0;
}

static dk_status verify(struct fixture *f, const char *token, dk_identity *id)
{
    dk_identity scratch;
    return dk_tokens_verify(f->tokens, f->arena, token, id ? id : &scratch);
}

/* header.payload.signature with the given JSON texts, signed HS256 with key (NULL: sig as given,
 * "" for none). */
static char *build(dk_arena *a, const char *header, const char *payload, const char *key,
                   const char *sig)
{
    char *h = dk_base64url(a, (const unsigned char *)header, strlen(header));
    char *p = dk_base64url(a, (const unsigned char *)payload, strlen(payload));
    char *signing = dk_arena_printf(a, "%s.%s", h, p);
    if (key) {
        unsigned char mac[32];
        dk_hmac_sha256(key, strlen(key), signing, strlen(signing), mac);
        sig = dk_base64url(a, mac, sizeof mac);
    }
    return dk_arena_printf(a, "%s.%s", signing, sig);
}

static char *payload(dk_arena *a, const char *iss, const char *sub, const char *sid,
                     const char *role, long long exp)
{
    long long now = (long long)(dk_now_ms() / 1000);
    char *s = dk_arena_printf(a, "{\"iat\":%lld,\"exp\":%lld,\"jti\":\"j1\"", now, exp);
    if (iss)
        s = dk_arena_printf(a, "%s,\"iss\":\"%s\"", s, iss);
    if (sub)
        s = dk_arena_printf(a, "%s,\"sub\":\"%s\"", s, sub);
    if (sid)
        s = dk_arena_printf(a, "%s,\"sid\":\"%s\"", s, sid);
    if (role)
        s = dk_arena_printf(a, "%s,\"role\":\"%s\"", s, role);
    return dk_arena_printf(a, "%s}", s);
}

static long long now_s(void)
{
    return (long long)(dk_now_ms() / 1000);
}

static const char *HS256 = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

static void test_roundtrip(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(dk_tokens_ttl_ms(f->tokens), TTL_MS);
    char *tok = NULL;
    int64_t before = dk_now_ms();
    assert_int_equal(dk_tokens_issue(f->tokens, f->arena, "user-1", "sess-1", "admin", &tok),
                     DK_OK);
    assert_non_null(tok);
    dk_identity id = {0};
    assert_int_equal(verify(f, tok, &id), DK_OK);
    assert_string_equal(id.user_id, "user-1");
    assert_string_equal(id.session_id, "sess-1");
    assert_string_equal(id.role, "admin");
    int64_t exp_ms = id.expires_at_ms;
    assert_int_equal(exp_ms % 1000, 0);
    assert_true(exp_ms >= before / 1000 * 1000 + TTL_MS);
    assert_true(exp_ms <= dk_now_ms() + TTL_MS);

    /* the claims as any JWT library sees them */
    jwt_t *jwt = NULL;
    assert_int_equal(jwt_decode(&jwt, tok, (const unsigned char *)SECRET, (int)SECRET_LEN), 0);
    assert_int_equal(jwt_get_alg(jwt), JWT_ALG_HS256);
    assert_string_equal(jwt_get_grant(jwt, "iss"), "docket");
    assert_string_equal(jwt_get_grant(jwt, "sub"), "user-1");
    assert_string_equal(jwt_get_grant(jwt, "sid"), "sess-1");
    assert_string_equal(jwt_get_grant(jwt, "role"), "admin");
    assert_true(dk_uuid_valid(jwt_get_grant(jwt, "jti")));
    errno = 0;
    long iat = jwt_get_grant_int(jwt, "iat");
    long exp = jwt_get_grant_int(jwt, "exp");
    assert_int_equal(errno, 0);
    assert_int_equal(exp - iat, TTL_MS / 1000);
    assert_int_equal((int64_t)exp * 1000, exp_ms);
    assert_true(iat >= before / 1000 && iat <= dk_now_ms() / 1000);
    jwt_free(jwt);

    /* every token is new (jti), and each verifies */
    char *tok2 = NULL;
    assert_int_equal(dk_tokens_issue(f->tokens, f->arena, "user-1", "sess-1", "admin", &tok2),
                     DK_OK);
    assert_string_not_equal(tok, tok2);
    assert_int_equal(verify(f, tok2, NULL), DK_OK);
}

static void test_hand_built_valid_token_accepted(void **state)
{
    /* the control for every hand-built rejection below */
    struct fixture *f = *state;
    char *tok = build(f->arena, HS256, payload(f->arena, "docket", "u", "s", "user", now_s() + 60),
                      SECRET, NULL);
    dk_identity id = {0};
    assert_int_equal(verify(f, tok, &id), DK_OK);
    assert_string_equal(id.user_id, "u");
    /* typ is optional */
    tok = build(f->arena, "{\"alg\":\"HS256\"}",
                payload(f->arena, "docket", "u", "s", "user", now_s() + 60), SECRET, NULL);
    assert_int_equal(verify(f, tok, NULL), DK_OK);
    /* an empty role is still a role */
    tok = build(f->arena, HS256, payload(f->arena, "docket", "u", "s", "", now_s() + 60), SECRET,
                NULL);
    assert_int_equal(verify(f, tok, NULL), DK_OK);
}

static void test_alg_none_rejected(void **state)
{
    struct fixture *f = *state;
    const char *body = payload(f->arena, "docket", "u", "s", "admin", now_s() + 60);
    static const char *headers[] = {
        "{\"alg\":\"none\",\"typ\":\"JWT\"}",
        "{\"alg\":\"none\"}",
        "{\"alg\":\"None\"}",
        "{\"alg\":\"NONE\"}",
    };
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        /* with an empty signature, as alg none has */
        char *tok = build(f->arena, headers[i], body, NULL, "");
        assert_int_equal(verify(f, tok, NULL), DK_E_UNAUTHORIZED);
        /* and with a valid HS256 signature over the same bytes */
        tok = build(f->arena, headers[i], body, SECRET, NULL);
        assert_int_equal(verify(f, tok, NULL), DK_E_UNAUTHORIZED);
    }
    /* a none token made by libjwt itself */
    jwt_t *jwt = NULL;
    assert_int_equal(jwt_new(&jwt), 0);
    assert_int_equal(jwt_add_grant(jwt, "iss", "docket"), 0);
    assert_int_equal(jwt_add_grant(jwt, "sub", "u"), 0);
    assert_int_equal(jwt_add_grant(jwt, "sid", "s"), 0);
    assert_int_equal(jwt_add_grant(jwt, "role", "admin"), 0);
    assert_int_equal(jwt_add_grant_int(jwt, "exp", (long)now_s() + 60), 0);
    assert_int_equal(jwt_set_alg(jwt, JWT_ALG_NONE, NULL, 0), 0);
    char *s = jwt_encode_str(jwt);
    assert_non_null(s);
    char *tok = dk_arena_strdup(f->arena, s);
    free(s);
    jwt_free(jwt);
    assert_int_equal(verify(f, tok, NULL), DK_E_UNAUTHORIZED);
}

static char *libjwt_token(dk_arena *a, jwt_alg_t alg, const char *key)
{
    jwt_t *jwt = NULL;
    assert_int_equal(jwt_new(&jwt), 0);
    assert_int_equal(jwt_add_grant(jwt, "iss", "docket"), 0);
    assert_int_equal(jwt_add_grant(jwt, "sub", "u"), 0);
    assert_int_equal(jwt_add_grant(jwt, "sid", "s"), 0);
    assert_int_equal(jwt_add_grant(jwt, "role", "admin"), 0);
    assert_int_equal(jwt_add_grant_int(jwt, "iat", (long)now_s()), 0);
    assert_int_equal(jwt_add_grant_int(jwt, "exp", (long)now_s() + 60), 0);
    assert_int_equal(jwt_set_alg(jwt, alg, (const unsigned char *)key, (int)strlen(key)), 0);
    char *s = jwt_encode_str(jwt);
    assert_non_null(s);
    char *tok = dk_arena_strdup(a, s);
    free(s);
    jwt_free(jwt);
    return tok;
}

static void test_other_algorithms_rejected(void **state)
{
    struct fixture *f = *state;
    /* the control: libjwt's own HS256 token under our key verifies */
    assert_int_equal(verify(f, libjwt_token(f->arena, JWT_ALG_HS256, SECRET), NULL), DK_OK);
    /* same key, same claims, another HMAC: refused */
    assert_int_equal(verify(f, libjwt_token(f->arena, JWT_ALG_HS512, SECRET), NULL),
                     DK_E_UNAUTHORIZED);
    assert_int_equal(verify(f, libjwt_token(f->arena, JWT_ALG_HS384, SECRET), NULL),
                     DK_E_UNAUTHORIZED);
    /* header games: case, type, missing alg, header not an object or not JSON */
    const char *body = payload(f->arena, "docket", "u", "s", "user", now_s() + 60);
    static const char *headers[] = {
        "{\"alg\":\"hs256\"}",
        "{\"alg\":\"HS256 \"}",
        "{\"alg\":\"RS256\"}",
        "{\"alg\":\"ES256\"}",
        "{\"alg\":[\"HS256\"]}",
        "{\"alg\":null}",
        "{\"typ\":\"JWT\"}",
        "[\"HS256\"]",
        "\"HS256\"",
        "{}",
        "not json {\"alg\":\"HS256\"}",
        "{\"alg\":\"HS256\"",
    };
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        char *tok = build(f->arena, headers[i], body, SECRET, NULL);
        if (verify(f, tok, NULL) != DK_E_UNAUTHORIZED)
            fail_msg("accepted header %s", headers[i]);
    }
}

static void test_wrong_key_rejected(void **state)
{
    struct fixture *f = *state;
    dk_tokens *other = dk_tokens_new((const unsigned char *)"another-secret", 14, TTL_MS);
    char *tok = NULL;
    assert_int_equal(dk_tokens_issue(other, f->arena, "u", "s", "admin", &tok), DK_OK);
    dk_tokens_free(other);
    assert_int_equal(verify(f, tok, NULL), DK_E_UNAUTHORIZED);
    /* a key that differs in its last byte, or is a prefix of ours */
    char key[SECRET_LEN + 1];
    memcpy(key, SECRET, sizeof key);
    key[SECRET_LEN - 1] ^= 1;
    const char *body = payload(f->arena, "docket", "u", "s", "user", now_s() + 60);
    assert_int_equal(verify(f, build(f->arena, HS256, body, key, NULL), NULL), DK_E_UNAUTHORIZED);
    key[SECRET_LEN - 1] = '\0';
    assert_int_equal(verify(f, build(f->arena, HS256, body, key, NULL), NULL), DK_E_UNAUTHORIZED);
    assert_int_equal(verify(f, build(f->arena, HS256, body, "", NULL), NULL), DK_E_UNAUTHORIZED);
}

static void test_tampering_rejected(void **state)
{
    struct fixture *f = *state;
    char *tok = NULL;
    assert_int_equal(dk_tokens_issue(f->tokens, f->arena, "user-1", "sess-1", "user", &tok), DK_OK);
    size_t n = strlen(tok);
    const char *d1 = strchr(tok, '.');
    const char *d2 = strrchr(tok, '.');
    /* flip one character at a time, everywhere but the dots */
    for (size_t i = 0; i < n; i++) {
        if (tok[i] == '.')
            continue;
        char *t = dk_arena_strdup(f->arena, tok);
        t[i] = t[i] == 'A' ? 'B' : 'A';
        if (verify(f, t, NULL) != DK_E_UNAUTHORIZED)
            fail_msg("accepted a token changed at offset %zu of %zu", i, n);
    }
    /* the payload of a token for another user, with our signature */
    char *admin = NULL;
    assert_int_equal(dk_tokens_issue(f->tokens, f->arena, "user-2", "sess-2", "admin", &admin),
                     DK_OK);
    const char *a1 = strchr(admin, '.');
    const char *a2 = strrchr(admin, '.');
    char *spliced =
        dk_arena_printf(f->arena, "%.*s%.*s%s", (int)(d1 - tok), tok, (int)(a2 - a1), a1, d2);
    assert_int_equal(verify(f, spliced, NULL), DK_E_UNAUTHORIZED);
    /* a payload rewritten to role admin, signature kept */
    char *p = payload(f->arena, "docket", "user-1", "sess-1", "admin", now_s() + 60);
    char *forged = dk_arena_printf(f->arena, "%.*s.%s%s", (int)(d1 - tok), tok,
                                   dk_base64url(f->arena, (const unsigned char *)p, strlen(p)), d2);
    assert_int_equal(verify(f, forged, NULL), DK_E_UNAUTHORIZED);
    /* the signature dropped, or truncated */
    char *nosig = dk_arena_strndup(f->arena, tok, (size_t)(d2 - tok) + 1);
    assert_int_equal(verify(f, nosig, NULL), DK_E_UNAUTHORIZED);
    char *short_sig = dk_arena_strndup(f->arena, tok, n - 2);
    assert_int_equal(verify(f, short_sig, NULL), DK_E_UNAUTHORIZED);
}

static void test_expiry(void **state)
{
    struct fixture *f = *state;
    long long now = now_s();
    static const long long offsets[] = {-1, -60, -86400, 0};
    for (size_t i = 0; i < sizeof offsets / sizeof offsets[0]; i++) {
        char *tok =
            build(f->arena, HS256, payload(f->arena, "docket", "u", "s", "user", now + offsets[i]),
                  SECRET, NULL);
        if (verify(f, tok, NULL) != DK_E_UNAUTHORIZED)
            fail_msg("accepted a token with exp now%+lld s", offsets[i]);
    }
    /* exp far in the future is fine */
    char *tok = build(f->arena, HS256, payload(f->arena, "docket", "u", "s", "user", now + 86400),
                      SECRET, NULL);
    assert_int_equal(verify(f, tok, NULL), DK_OK);

    /* a real token with a 1 s lifetime stops verifying once the second is over */
    dk_tokens *brief = dk_tokens_new((const unsigned char *)SECRET, SECRET_LEN, 1000);
    char *b = NULL;
    assert_int_equal(dk_tokens_issue(brief, f->arena, "u", "s", "user", &b), DK_OK);
    dk_identity first;
    assert_int_equal(dk_tokens_verify(brief, f->arena, b, &first), DK_OK); /* now cached */
    struct timespec ts = {1, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    dk_identity id;
    assert_int_equal(dk_tokens_verify(brief, f->arena, b, &id), DK_E_UNAUTHORIZED);
    assert_int_equal(verify(f, b, NULL), DK_E_UNAUTHORIZED);
    dk_tokens_free(brief);
}

static void test_claims_required(void **state)
{
    struct fixture *f = *state;
    long long exp = now_s() + 60;
    dk_arena *a = f->arena;
    const struct {
        const char *payload, *why;
    } rows[] = {
        {payload(a, "other", "u", "s", "user", exp), "wrong iss"},
        {payload(a, "Docket", "u", "s", "user", exp), "iss in another case"},
        {payload(a, "", "u", "s", "user", exp), "empty iss"},
        {payload(a, NULL, "u", "s", "user", exp), "no iss"},
        {payload(a, "docket", NULL, "s", "user", exp), "no sub"},
        {payload(a, "docket", "", "s", "user", exp), "empty sub"},
        {payload(a, "docket", "u", NULL, "user", exp), "no sid"},
        {payload(a, "docket", "u", "", "user", exp), "empty sid"},
        {payload(a, "docket", "u", "s", NULL, exp), "no role"},
        {"{\"iss\":\"docket\",\"sub\":\"u\",\"sid\":\"s\",\"role\":\"user\"}", "no exp"},
        {"{\"iss\":\"docket\",\"sub\":\"u\",\"sid\":\"s\",\"role\":\"user\",\"exp\":"
         "\"99999999999\"}",
         "exp as a string"},
        {"{\"iss\":\"docket\",\"sub\":7,\"sid\":\"s\",\"role\":\"user\",\"exp\":99999999999}",
         "sub as a number"},
        {"[1,2,3]", "payload not an object"},
        {"not json", "payload not JSON"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char *tok = build(a, HS256, rows[i].payload, SECRET, NULL);
        if (verify(f, tok, NULL) != DK_E_UNAUTHORIZED)
            fail_msg("accepted a token with %s", rows[i].why);
    }
}

static void test_garbage_rejected(void **state)
{
    struct fixture *f = *state;
    char *good = NULL;
    assert_int_equal(dk_tokens_issue(f->tokens, f->arena, "u", "s", "user", &good), DK_OK);
    const char *garbage[] = {
        "",
        ".",
        "..",
        "...",
        "a",
        "a.b",
        "a.b.c",
        "a..c",
        ".b.c",
        "a.b.",
        "a.b.c.d",
        "Bearer a.b.c",
        "eyJhbGciOiJIUzI1NiJ9",
        "eyJhbGciOiJIUzI1NiJ9.e30.",
        "!!!.###.$$$",
        "\xc3\xa9.\xc3\xa9.\xc3\xa9",
        dk_arena_printf(f->arena, "%s.", good),         /* four parts */
        dk_arena_printf(f->arena, " %s", good),         /* leading space */
        dk_arena_printf(f->arena, "%s ", good),         /* trailing space */
        dk_arena_printf(f->arena, "%s\n", good),        /* trailing newline */
        dk_arena_printf(f->arena, "%s==", good),        /* padding */
        dk_arena_printf(f->arena, "%s.%s", good, good), /* two tokens */
    };
    for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++)
        if (verify(f, garbage[i], NULL) != DK_E_UNAUTHORIZED)
            fail_msg("accepted \"%s\"", garbage[i]);
    dk_identity id;
    assert_int_equal(dk_tokens_verify(f->tokens, f->arena, NULL, &id), DK_E_UNAUTHORIZED);
}

static void test_oversize_rejected(void **state)
{
    struct fixture *f = *state;
    /* 5000 characters of token-shaped garbage */
    char *big = dk_arena_alloc(f->arena, 5001);
    memset(big, 'a', 5000);
    big[1000] = '.';
    big[2000] = '.';
    assert_int_equal(verify(f, big, NULL), DK_E_UNAUTHORIZED);
    /* a correctly signed token that is over 4 KiB long (a huge role claim) */
    char *role = dk_arena_alloc(f->arena, 3801);
    memset(role, 'r', 3800);
    char *tok = build(f->arena, HS256, payload(f->arena, "docket", "u", "s", role, now_s() + 60),
                      SECRET, NULL);
    assert_true(strlen(tok) > 5000);
    assert_int_equal(verify(f, tok, NULL), DK_E_UNAUTHORIZED);
    /* while one of ~2 KiB is fine */
    role[1500] = '\0';
    tok = build(f->arena, HS256, payload(f->arena, "docket", "u", "s", role, now_s() + 60), SECRET,
                NULL);
    assert_true(strlen(tok) > 2000 && strlen(tok) < 4096);
    assert_int_equal(verify(f, tok, NULL), DK_OK);
}

static void test_strict_forms_rejected(void **state)
{
    /* verification is Docket's own (not libjwt's): the forms a lenient decoder might accept */
    struct fixture *f = *state;
    dk_arena *a = f->arena;
    char *tok = build(a, HS256, payload(a, "docket", "u", "s", "user", now_s() + 60), SECRET, NULL);
    assert_int_equal(verify(f, tok, NULL), DK_OK);
    /* the same signature bytes in another spelling: 32 bytes are 43 characters whose last one
     * carries 2 unused bits; setting them decodes to the same MAC */
    char *other = dk_arena_strdup(a, tok);
    char *lastc = other + strlen(other) - 1;
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    int v = (int)(strchr(alphabet, *lastc) - alphabet);
    *lastc = alphabet[v | 1];
    if (*lastc == tok[strlen(tok) - 1])
        *lastc = alphabet[v & ~1];
    assert_int_equal(verify(f, other, NULL), DK_E_UNAUTHORIZED);
    /* a truncated or extended signature */
    other = dk_arena_strndup(a, tok, strlen(tok) - 1);
    assert_int_equal(verify(f, other, NULL), DK_E_UNAUTHORIZED);
    assert_int_equal(verify(f, dk_arena_printf(a, "%sA", tok), NULL), DK_E_UNAUTHORIZED);
    /* exp must be an integer */
    char *p = dk_arena_printf(a,
                              "{\"iss\":\"docket\",\"sub\":\"u\",\"sid\":\"s\",\"role\":\"user\","
                              "\"exp\":\"%lld\"}",
                              now_s() + 60);
    assert_int_equal(verify(f, build(a, HS256, p, SECRET, NULL), NULL), DK_E_UNAUTHORIZED);
    p = dk_arena_printf(a,
                        "{\"iss\":\"docket\",\"sub\":\"u\",\"sid\":\"s\",\"role\":\"user\","
                        "\"exp\":%lld.5}",
                        now_s() + 60);
    assert_int_equal(verify(f, build(a, HS256, p, SECRET, NULL), NULL), DK_E_UNAUTHORIZED);
    /* an exp whose milliseconds overflow */
    p = "{\"iss\":\"docket\",\"sub\":\"u\",\"sid\":\"s\",\"role\":\"user\","
        "\"exp\":9223372036854775807}";
    assert_int_equal(verify(f, build(a, HS256, p, SECRET, NULL), NULL), DK_E_UNAUTHORIZED);
    /* and one far in the past (signed by us, yet no arithmetic may overflow on it) */
    p = "{\"iss\":\"docket\",\"sub\":\"u\",\"sid\":\"s\",\"role\":\"user\","
        "\"exp\":-9223372036854775807}";
    assert_int_equal(verify(f, build(a, HS256, p, SECRET, NULL), NULL), DK_E_UNAUTHORIZED);
    /* claims that are not an object, or not JSON */
    assert_int_equal(verify(f, build(a, HS256, "[1,2]", SECRET, NULL), NULL), DK_E_UNAUTHORIZED);
    assert_int_equal(verify(f, build(a, HS256, "{\"iss\":", SECRET, NULL), NULL),
                     DK_E_UNAUTHORIZED);
    /* claims of the wrong type */
    p = dk_arena_printf(a,
                        "{\"iss\":\"docket\",\"sub\":1,\"sid\":\"s\",\"role\":\"user\","
                        "\"exp\":%lld}",
                        now_s() + 60);
    assert_int_equal(verify(f, build(a, HS256, p, SECRET, NULL), NULL), DK_E_UNAUTHORIZED);
}

static void test_cached_tokens(void **state)
{
    /* a token verified once is recognised again (same identity), but only that exact token,
     * and only by the dk_tokens (the secret) that verified it */
    struct fixture *f = *state;
    dk_arena *a = f->arena;
    char *tok = NULL;
    assert_int_equal(dk_tokens_issue(f->tokens, a, "user-7", "sess-7", "admin", &tok), DK_OK);
    dk_identity id1 = {0}, id2 = {0};
    assert_int_equal(verify(f, tok, &id1), DK_OK);
    assert_int_equal(verify(f, tok, &id2), DK_OK);
    assert_string_equal(id2.user_id, "user-7");
    assert_string_equal(id2.session_id, "sess-7");
    assert_string_equal(id2.role, "admin");
    assert_true(id2.expires_at_ms == id1.expires_at_ms);
    /* every one-character change of the cached token is refused */
    size_t n = strlen(tok);
    for (size_t i = 0; i < n; i += 7) {
        char *bad = dk_arena_strdup(a, tok);
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        if (verify(f, bad, NULL) != DK_E_UNAUTHORIZED)
            fail_msg("accepted the cached token changed at %zu", i);
    }
    assert_int_equal(verify(f, dk_arena_strndup(a, tok, n - 1), NULL), DK_E_UNAUTHORIZED);
    /* another secret does not see this one's cache */
    dk_tokens *other =
        dk_tokens_new((const unsigned char *)"another-secret-0123456789-abcdefghijkl", 38, TTL_MS);
    dk_identity id3;
    assert_int_equal(dk_tokens_verify(other, a, tok, &id3), DK_E_UNAUTHORIZED);
    dk_tokens_free(other);
    assert_int_equal(verify(f, tok, NULL), DK_OK);
    /* a token too long to be kept (a 600-character claim) is verified afresh every time */
    char pad[601];
    memset(pad, 'x', 600);
    pad[600] = '\0';
    const char *p = dk_arena_printf(a,
                                    "{\"iss\":\"docket\",\"sub\":\"u-long\",\"sid\":\"s-long\","
                                    "\"role\":\"user\",\"pad\":\"%s\",\"exp\":%lld}",
                                    pad, now_s() + 60);
    const char *longtok = build(a, HS256, p, SECRET, NULL);
    assert_true(strlen(longtok) > 512);
    for (int i = 0; i < 2; i++) {
        dk_identity id = {0};
        assert_int_equal(verify(f, longtok, &id), DK_OK);
        assert_string_equal(id.user_id, "u-long");
    }
    char *badlong = dk_arena_strdup(a, longtok);
    badlong[40] = badlong[40] == 'A' ? 'B' : 'A';
    assert_int_equal(verify(f, badlong, NULL), DK_E_UNAUTHORIZED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hand_built_valid_token_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alg_none_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_algorithms_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_key_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tampering_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claims_required, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversize_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_strict_forms_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cached_tokens, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
