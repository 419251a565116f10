#include "services/auth/password.h"

#include <argon2.h>
#include <string.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/crypto.h"
#include "core/limiter.h"
#include "core/banned.h"

#define AUTH_SALT_LEN 16
#define AUTH_HASH_LEN 32

struct auth_hasher {
    auth_hasher_options opt;
    dk_limiter *pool;
    char *dummy; /* a real hash of a random password, for dummy verifications */
};

static dk_status auth_hash_raw(const auth_hasher *h, const char *password, char *out, size_t cap)
{
    unsigned char salt[AUTH_SALT_LEN];
    dk_random_bytes(salt, sizeof salt);
    int rc =
        argon2id_hash_encoded(h->opt.iterations, h->opt.memory_kib, h->opt.parallelism, password,
                              strlen(password), salt, sizeof salt, AUTH_HASH_LEN, out, cap);
    return rc == ARGON2_OK ? DK_OK : DK_E_INTERNAL;
}

static size_t auth_encoded_len(const auth_hasher *h)
{
    return argon2_encodedlen(h->opt.iterations, h->opt.memory_kib, h->opt.parallelism,
                             AUTH_SALT_LEN, AUTH_HASH_LEN, Argon2_id);
}

auth_hasher *auth_hasher_new(const auth_hasher_options *opt)
{
    auth_hasher *h = DK_NEW(auth_hasher);
    h->opt = *opt;
    h->pool = dk_limiter_new(opt->workers, opt->queue, opt->max_wait_ms);
    size_t cap = auth_encoded_len(h);
    h->dummy = dk_malloc(cap);
    unsigned char rnd[24];
    char pw[64];
    dk_random_bytes(rnd, sizeof rnd);
    dk_hex(rnd, sizeof rnd, pw);
    if (auth_hash_raw(h, pw, h->dummy, cap) != DK_OK)
        h->dummy[0] = '\0';
    return h;
}

void auth_hasher_free(auth_hasher *h)
{
    if (!h)
        return;
    dk_limiter_free(h->pool);
    dk_free(h->dummy);
    dk_free(h);
}

dk_status auth_password_hash(auth_hasher *h, dk_arena *a, const char *password, char **ret_encoded)
{
    dk_status st = dk_limiter_enter(h->pool);
    if (st != DK_OK)
        return st;
    size_t cap = auth_encoded_len(h);
    char *out = dk_arena_alloc(a, cap);
    st = auth_hash_raw(h, password, out, cap);
    dk_limiter_leave(h->pool);
    if (st == DK_OK)
        *ret_encoded = out;
    return st;
}

dk_status auth_password_verify(auth_hasher *h, const char *encoded, const char *password)
{
    dk_status st = dk_limiter_enter(h->pool);
    if (st != DK_OK)
        return st;
    int rc = argon2id_verify(encoded, password, strlen(password));
    dk_limiter_leave(h->pool);
    if (rc == ARGON2_OK)
        return DK_OK;
    if (rc == ARGON2_VERIFY_MISMATCH)
        return DK_E_UNAUTHORIZED;
    return DK_E_INTERNAL;
}

dk_status auth_password_dummy_verify(auth_hasher *h, const char *password)
{
    if (!h->dummy[0])
        return DK_E_UNAUTHORIZED;
    dk_status st = auth_password_verify(h, h->dummy, password);
    if (st == DK_OK || st == DK_E_UNAUTHORIZED)
        return DK_E_UNAUTHORIZED;
    return st;
}
