/* token.h — access tokens: HS256 JWTs with claims iss "docket", sub, sid, role, iat, exp, jti
 * (signed with libjwt; checked here, on every request). Verification demands alg HS256
 * explicitly (never "none", never another algorithm or key), the issuer, and an unexpired exp;
 * a token verified lately is recognised by its digest until it expires. A dk_tokens is
 * thread-safe (its secret is immutable, its cache locked). Errors: DK_E_UNAUTHORIZED for any
 * token that does not verify. */
#ifndef DK_TOKEN_H
#define DK_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "core/http.h"
#include "core/status.h"

typedef struct dk_tokens dk_tokens;

dk_tokens *dk_tokens_new(const unsigned char *secret, size_t secret_len, int64_t access_ttl_ms);
void dk_tokens_free(dk_tokens *t);
int64_t dk_tokens_ttl_ms(const dk_tokens *t);
/* Signs a token for (user, session, role); the text lives in the arena. */
dk_status dk_tokens_issue(const dk_tokens *t, dk_arena *a, const char *user_id,
                          const char *session_id, const char *role, char **ret_token) DK_MUSTCHECK;
/* Verifies a compact JWT; the identity's strings live in the arena. */
dk_status dk_tokens_verify(const dk_tokens *t, dk_arena *a, const char *token,
                           dk_identity *ret_identity) DK_MUSTCHECK;

#endif
