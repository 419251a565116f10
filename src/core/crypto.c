#include "core/crypto.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/banned.h"

void dk_random_bytes(void *buf, size_t n)
{
    if (RAND_bytes(buf, (int)n) != 1) {
        fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"CSPRNG failure\"}\n");
        abort();
    }
}

static _Thread_local uint64_t dk_xs[4];
static _Thread_local bool dk_xs_seeded;

static inline uint64_t dk_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t dk_xoshiro(void)
{
    uint64_t *s = dk_xs;
    uint64_t result = dk_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = dk_rotl(s[3], 45);
    return result;
}

void dk_fast_random(void *buf, size_t n)
{
    if (!dk_xs_seeded) {
        do
            dk_random_bytes(dk_xs, sizeof dk_xs);
        while (!(dk_xs[0] | dk_xs[1] | dk_xs[2] | dk_xs[3]));
        dk_xs_seeded = true;
    }
    unsigned char *p = buf;
    while (n > 0) {
        uint64_t v = dk_xoshiro();
        size_t k = n < 8 ? n : 8;
        memcpy(p, &v, k);
        p += k;
        n -= k;
    }
}

bool dk_ct_equal(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

bool dk_ct_streq(const char *a, const char *b)
{
    if (!a || !b)
        return false;
    size_t la = strlen(a), lb = strlen(b);
    if (la != lb)
        return false;
    return CRYPTO_memcmp(a, b, la) == 0;
}

/* Algorithms fetched once: OpenSSL 3 looks an implicitly named algorithm up in a locked store
 * on every call (SHA256(), HMAC()), which threads contend for. Kept for the process's life. */
static pthread_once_t dk_algs_once = PTHREAD_ONCE_INIT;
static EVP_MD *dk_md_sha256;
static EVP_MAC *dk_mac_hmac;

static void dk_algs_fetch(void)
{
    dk_md_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    dk_mac_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

void dk_sha256(const void *data, size_t n, unsigned char out[32])
{
    pthread_once(&dk_algs_once, dk_algs_fetch);
    if (!dk_md_sha256 || !EVP_Digest(data, n, out, NULL, dk_md_sha256, NULL))
        SHA256(data, n, out);
}

struct dk_hmac_key {
    EVP_MAC_CTX *ctx; /* keyed; never used itself, only copied */
    unsigned char *key;
    size_t keylen;
};

dk_hmac_key *dk_hmac_key_new(const void *key, size_t keylen)
{
    pthread_once(&dk_algs_once, dk_algs_fetch);
    dk_hmac_key *k = DK_NEW(dk_hmac_key);
    k->key = dk_malloc(keylen ? keylen : 1);
    memcpy(k->key, key, keylen);
    k->keylen = keylen;
    if (dk_mac_hmac) {
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
            OSSL_PARAM_construct_end()};
        k->ctx = EVP_MAC_CTX_new(dk_mac_hmac);
        if (k->ctx && !EVP_MAC_init(k->ctx, key, keylen, params)) {
            EVP_MAC_CTX_free(k->ctx);
            k->ctx = NULL;
        }
    }
    return k;
}

void dk_hmac_key_free(dk_hmac_key *k)
{
    if (!k)
        return;
    EVP_MAC_CTX_free(k->ctx);
    OPENSSL_cleanse(k->key, k->keylen);
    dk_free(k->key);
    dk_free(k);
}

void dk_hmac_key_sign(const dk_hmac_key *k, const void *data, size_t n, unsigned char out[32])
{
    EVP_MAC_CTX *c = k->ctx ? EVP_MAC_CTX_dup(k->ctx) : NULL;
    size_t len = 0;
    bool ok = c && EVP_MAC_update(c, data, n) && EVP_MAC_final(c, out, &len, 32) && len == 32;
    EVP_MAC_CTX_free(c);
    if (!ok) /* no prepared state (OpenSSL out of memory): the slow path gives the same MAC */
        dk_hmac_sha256(k->key, k->keylen, data, n, out);
}

void dk_hmac_sha256(const void *key, size_t keylen, const void *data, size_t n,
                    unsigned char out[32])
{
    unsigned int len = 32;
    HMAC(EVP_sha256(), key, (int)keylen, data, n, out, &len);
}

void dk_hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

const char dk_base64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const char dk_base64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t dk_base64_encode(const char *alphabet, const unsigned char *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = alphabet[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = alphabet[v & 63];
    }
    out[o] = '\0';
    return o;
}

bool dk_base64_decode(const char *alphabet, const char *in, size_t len, unsigned char *out,
                      size_t cap, size_t *ret_n)
{
    if (len % 4 == 1)
        return false;
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        const char *c = memchr(alphabet, in[i], 64);
        if (!c || in[i] == '\0')
            return false;
        acc = (acc << 6) | (uint32_t)(c - alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n == cap)
                return false;
            out[n++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0)
        return false;
    *ret_n = n;
    return true;
}

char *dk_base64url(dk_arena *a, const unsigned char *in, size_t n)
{
    char *out = dk_arena_alloc(a, (n + 2) / 3 * 4 + 1);
    dk_base64_encode(dk_base64_url, in, n, out);
    return out;
}

unsigned char *dk_base64url_decode(dk_arena *a, const char *in, size_t *ret_len)
{
    size_t n = strlen(in);
    while (n > 0 && in[n - 1] == '=')
        n--;
    size_t cap = n / 4 * 3 + 3;
    unsigned char *out = dk_arena_alloc(a, cap);
    return dk_base64_decode(dk_base64_url, in, n, out, cap, ret_len) ? out : NULL;
}

char *dk_random_token(dk_arena *a, size_t nbytes)
{
    unsigned char *buf = dk_arena_alloc(a, nbytes ? nbytes : 1);
    dk_random_bytes(buf, nbytes);
    return dk_base64url(a, buf, nbytes);
}
