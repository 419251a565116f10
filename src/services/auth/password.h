/* password.h — Argon2id password hashing (libsodium; libargon2 for what libsodium cannot
 * compute: p > 1, salts other than 16 bytes, hashes under 16 bytes) in a bounded pool: at most `workers`
 * hashes run at once and at most `queue` callers wait, so a burst of logins costs bounded
 * memory (workers × m KiB) and threads; beyond that callers get DK_E_UNAVAILABLE (503).
 * Thread-safe. Encoded hashes are PHC strings ($argon2id$v=19$m=…,t=…,p=…$salt$hash). */
#ifndef DK_AUTH_PASSWORD_H
#define DK_AUTH_PASSWORD_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"

typedef struct dk_arena dk_arena;
typedef struct auth_hasher auth_hasher;

typedef struct auth_hasher_options {
    uint32_t memory_kib, iterations, parallelism;
    int workers, queue, max_wait_ms;
} auth_hasher_options;

typedef struct dk_limiter dk_limiter;

auth_hasher *auth_hasher_new(const auth_hasher_options *opt);
/* The pool every hash and verification passes through (its stats; tests hold its slots). */
dk_limiter *auth_hasher_pool(auth_hasher *h);
void auth_hasher_free(auth_hasher *h);
dk_status auth_password_hash(auth_hasher *h, dk_arena *a, const char *password,
                             char **ret_encoded) DK_MUSTCHECK;
/* DK_OK when it matches, DK_E_UNAUTHORIZED when not, DK_E_UNAVAILABLE when saturated. */
dk_status auth_password_verify(auth_hasher *h, const char *encoded,
                               const char *password) DK_MUSTCHECK;
/* Spends the time of one verification without a real hash (unknown e-mail at login), so wrong
 * e-mail and wrong password cannot be told apart by timing. */
dk_status auth_password_dummy_verify(auth_hasher *h, const char *password) DK_MUSTCHECK;

#endif
