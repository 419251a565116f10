/* totp.h — the second factor: RFC 6238 TOTP (HMAC-SHA1, 30 s steps, 6 digits) over RFC 4648
 * base32 secrets, recovery codes, and the encryption of stored TOTP secrets.
 *
 * Secrets at rest: AES-256-GCM under a key derived with HKDF-SHA256 from a configured secret
 * (auth.mfa_key, else the JWT secret's HMAC "docket-mfa-v1"), the user id as associated data,
 * stored as "v1.<key id>.<base64url(nonce|ciphertext|tag)>". A keyring holds the current key
 * and any previous ones (auth.mfa_key_previous); decryption picks the key by its id and says
 * when it was not the current one, so the caller can re-encrypt (rotation).
 * Pure functions and an immutable keyring: thread-safe. Strings live in the caller's arena. */
#ifndef DK_AUTH_TOTP_H
#define DK_AUTH_TOTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct dk_arena dk_arena;

#define TOTP_SECRET_BYTES   20 /* 160 bits, RFC 4226 section 4 */
#define TOTP_STEP_S         30
#define TOTP_DIGITS         6
#define TOTP_RECOVERY_CODES 10

/* The HOTP value (RFC 4226) of key for counter, as TOTP_DIGITS decimal digits + NUL. */
void totp_hotp(const unsigned char *key, size_t keylen, uint64_t counter,
               char out[TOTP_DIGITS + 1]);
/* The time step of a Unix time in seconds. */
int64_t totp_step(int64_t unix_s);
/* Checks a 6-digit code against steps now-1, now, now+1 in constant time (every candidate is
 * computed and compared). Returns the matching step, or -1. */
int64_t totp_match(const unsigned char *key, size_t keylen, const char *code, int64_t now_step);

/* RFC 4648 base32 without padding (upper case); decode accepts lower case, spaces, padding. */
char *totp_base32(dk_arena *a, const unsigned char *in, size_t n);
unsigned char *totp_base32_decode(dk_arena *a, const char *in, size_t *ret_len);

/* A recovery code: 80 random bits as "xxxx-xxxx-xxxx-xxxx" (lower-case base32). */
char *totp_recovery_code(dk_arena *a);
/* The stored form of a recovery code as typed (dashes and spaces ignored, any case): SHA-256
 * hex of the normalised code; NULL when it cannot be a code. */
char *totp_recovery_hash(dk_arena *a, const char *typed);

typedef struct totp_keyring totp_keyring;
/* current: the configured secret (bytes); previous: comma-separated former secrets, or NULL.
 * fallback_previous, when not NULL, is added to the previous keys (32 bytes). */
totp_keyring *totp_keyring_new(const void *current, size_t current_len, const char *previous,
                               const unsigned char *fallback_previous);
void totp_keyring_free(totp_keyring *k); /* accepts NULL */
char *totp_seal(dk_arena *a, const totp_keyring *k, const char *user_id,
                const unsigned char *secret, size_t n);
/* DK_E_INTERNAL for a value no key of the ring opens. *ret_stale: opened with a previous key. */
dk_status totp_open(dk_arena *a, const totp_keyring *k, const char *user_id, const char *sealed,
                    unsigned char **ret_secret, size_t *ret_len, bool *ret_stale) DK_MUSTCHECK;

#endif
