#include "services/auth/totp.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/crypto.h"
#include "core/banned.h"

#define TOTP_MAX_KEYS 8
#define TOTP_NONCE    12
#define TOTP_TAG      16

void totp_hotp(const unsigned char *key, size_t keylen, uint64_t counter, char out[TOTP_DIGITS + 1])
{
    unsigned char msg[8], mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    for (int i = 7; i >= 0; i--) {
        msg[i] = (unsigned char)(counter & 0xff);
        counter >>= 8;
    }
    HMAC(EVP_sha1(), key, (int)keylen, msg, sizeof msg, mac, &maclen);
    int off = mac[maclen - 1] & 0x0f;
    uint32_t bin = ((uint32_t)(mac[off] & 0x7f) << 24) | ((uint32_t)mac[off + 1] << 16) |
                   ((uint32_t)mac[off + 2] << 8) | (uint32_t)mac[off + 3];
    snprintf(out, TOTP_DIGITS + 1, "%06u", bin % 1000000u);
}

int64_t totp_step(int64_t unix_s)
{
    return unix_s / TOTP_STEP_S;
}

int64_t totp_match(const unsigned char *key, size_t keylen, const char *code, int64_t now_step)
{
    char typed[TOTP_DIGITS + 1] = {0};
    size_t n = 0;
    for (const char *p = code; p && *p; p++) {
        if (*p == ' ')
            continue;
        if (!isdigit((unsigned char)*p) || n == TOTP_DIGITS)
            return -1;
        typed[n++] = *p;
    }
    if (n != TOTP_DIGITS)
        return -1;
    int64_t found = -1;
    for (int64_t s = now_step - 1; s <= now_step + 1; s++) {
        char want[TOTP_DIGITS + 1];
        totp_hotp(key, keylen, (uint64_t)s, want);
        bool eq = CRYPTO_memcmp(want, typed, TOTP_DIGITS) == 0;
        /* no early exit: every candidate costs the same */
        if (eq && found < 0)
            found = s;
    }
    return found;
}

static const char b32_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

char *totp_base32(dk_arena *a, const unsigned char *in, size_t n)
{
    char *out = dk_arena_alloc(a, (n * 8 + 4) / 5 + 1);
    size_t o = 0;
    uint32_t buf = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        buf = (buf << 8) | in[i];
        bits += 8;
        while (bits >= 5) {
            out[o++] = b32_alphabet[(buf >> (bits - 5)) & 31];
            bits -= 5;
        }
    }
    if (bits > 0)
        out[o++] = b32_alphabet[(buf << (5 - bits)) & 31];
    out[o] = '\0';
    return out;
}

unsigned char *totp_base32_decode(dk_arena *a, const char *in, size_t *ret_len)
{
    unsigned char *out = dk_arena_alloc(a, strlen(in) * 5 / 8 + 1);
    size_t o = 0;
    uint32_t buf = 0;
    int bits = 0;
    for (const char *p = in; *p; p++) {
        if (*p == ' ' || *p == '=' || *p == '-')
            continue;
        const char *hit = strchr(b32_alphabet, toupper((unsigned char)*p));
        if (!hit || !*p)
            return NULL;
        buf = (buf << 5) | (uint32_t)(hit - b32_alphabet);
        bits += 5;
        if (bits >= 8) {
            out[o++] = (unsigned char)((buf >> (bits - 8)) & 0xff);
            bits -= 8;
        }
    }
    *ret_len = o;
    return out;
}

char *totp_recovery_code(dk_arena *a)
{
    unsigned char raw[10];
    dk_random_bytes(raw, sizeof raw);
    char *b = totp_base32(a, raw, sizeof raw); /* 16 characters */
    for (char *p = b; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return dk_arena_printf(a, "%.4s-%.4s-%.4s-%.4s", b, b + 4, b + 8, b + 12);
}

char *totp_recovery_hash(dk_arena *a, const char *typed)
{
    char norm[17];
    size_t n = 0;
    for (const char *p = typed; *p; p++) {
        if (*p == '-' || *p == ' ')
            continue;
        char c = (char)tolower((unsigned char)*p);
        if (!((c >= 'a' && c <= 'z') || (c >= '2' && c <= '7')) || n == 16)
            return NULL;
        norm[n++] = c;
    }
    if (n != 16)
        return NULL;
    norm[n] = '\0';
    unsigned char h[32];
    dk_sha256(norm, n, h);
    char *hex = dk_arena_alloc(a, 65);
    dk_hex(h, sizeof h, hex);
    return hex;
}

/* ---------- the keyring ---------- */

typedef struct totp_key {
    unsigned char key[32];
    char id[9];
} totp_key;

struct totp_keyring {
    int n; /* keys[0] is the current one */
    totp_key keys[TOTP_MAX_KEYS];
};

static bool totp_derive(const void *ikm, size_t ikm_len, totp_key *out)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
    size_t len = sizeof out->key;
    bool ok = c && EVP_PKEY_derive_init(c) > 0 && EVP_PKEY_CTX_set_hkdf_md(c, EVP_sha256()) > 0 &&
              EVP_PKEY_CTX_set1_hkdf_salt(c, (const unsigned char *)"docket-totp", 11) > 0 &&
              EVP_PKEY_CTX_set1_hkdf_key(c, ikm, (int)ikm_len) > 0 &&
              EVP_PKEY_CTX_add1_hkdf_info(c, (const unsigned char *)"aes-256-gcm v1", 14) > 0 &&
              EVP_PKEY_derive(c, out->key, &len) > 0 && len == sizeof out->key;
    EVP_PKEY_CTX_free(c);
    if (!ok)
        return false;
    unsigned char h[32];
    dk_hmac_sha256(out->key, sizeof out->key, "key-id", 6, h);
    dk_hex(h, 4, out->id);
    return true;
}

totp_keyring *totp_keyring_new(const void *current, size_t current_len, const char *previous,
                               const unsigned char *fallback_previous)
{
    totp_keyring *k = DK_NEW(totp_keyring);
    if (!totp_derive(current, current_len, &k->keys[k->n++])) {
        dk_free(k);
        return NULL;
    }
    if (fallback_previous && k->n < TOTP_MAX_KEYS &&
        totp_derive(fallback_previous, 32, &k->keys[k->n]))
        k->n++;
    const char *p = previous;
    while (p && *p && k->n < TOTP_MAX_KEYS) {
        size_t len = strcspn(p, ",");
        if (len > 0 && totp_derive(p, len, &k->keys[k->n]))
            k->n++;
        p += len;
        if (*p == ',')
            p++;
    }
    return k;
}

void totp_keyring_free(totp_keyring *k)
{
    if (!k)
        return;
    OPENSSL_cleanse(k, sizeof *k);
    dk_free(k);
}

char *totp_seal(dk_arena *a, const totp_keyring *k, const char *user_id,
                const unsigned char *secret, size_t n)
{
    const totp_key *key = &k->keys[0];
    size_t total = TOTP_NONCE + n + TOTP_TAG;
    unsigned char *buf = dk_arena_alloc(a, total);
    dk_random_bytes(buf, TOTP_NONCE);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int len = 0, fin = 0;
    bool ok = c && EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, key->key, buf) == 1 &&
              EVP_EncryptUpdate(c, NULL, &len, (const unsigned char *)user_id,
                                (int)strlen(user_id)) == 1 &&
              EVP_EncryptUpdate(c, buf + TOTP_NONCE, &len, secret, (int)n) == 1 &&
              EVP_EncryptFinal_ex(c, buf + TOTP_NONCE + len, &fin) == 1 &&
              EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TOTP_TAG, buf + TOTP_NONCE + n) == 1;
    EVP_CIPHER_CTX_free(c);
    if (!ok)
        return NULL;
    return dk_arena_printf(a, "v1.%s.%s", key->id, dk_base64url(a, buf, total));
}

dk_status totp_open(dk_arena *a, const totp_keyring *k, const char *user_id, const char *sealed,
                    unsigned char **ret_secret, size_t *ret_len, bool *ret_stale)
{
    if (!sealed || strncmp(sealed, "v1.", 3) != 0 || strlen(sealed) < 13 || sealed[11] != '.')
        return DK_E_INTERNAL;
    const totp_key *key = NULL;
    int idx = -1;
    for (int i = 0; i < k->n && !key; i++)
        if (memcmp(k->keys[i].id, sealed + 3, 8) == 0) {
            key = &k->keys[i];
            idx = i;
        }
    if (!key)
        return DK_E_INTERNAL;
    size_t total = 0;
    unsigned char *buf = dk_base64url_decode(a, sealed + 12, &total);
    if (!buf || total <= TOTP_NONCE + TOTP_TAG)
        return DK_E_INTERNAL;
    size_t n = total - TOTP_NONCE - TOTP_TAG;
    unsigned char *out = dk_arena_alloc(a, n + 1);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int len = 0, fin = 0;
    bool ok = c && EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key->key, buf) == 1 &&
              EVP_DecryptUpdate(c, NULL, &len, (const unsigned char *)user_id,
                                (int)strlen(user_id)) == 1 &&
              EVP_DecryptUpdate(c, out, &len, buf + TOTP_NONCE, (int)n) == 1 &&
              EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TOTP_TAG, buf + TOTP_NONCE + n) == 1 &&
              EVP_DecryptFinal_ex(c, out + len, &fin) == 1;
    EVP_CIPHER_CTX_free(c);
    if (!ok)
        return DK_E_INTERNAL;
    *ret_secret = out;
    *ret_len = n;
    *ret_stale = idx != 0;
    return DK_OK;
}
