/* crypto.h — secure randomness, constant-time comparison, hashes and encodings (OpenSSL).
 * Thread-safe. Output buffers are the caller's; arena variants allocate in the arena.
 * dk_random_bytes aborts if the system CSPRNG fails (there is no safe way to continue). */
#ifndef DK_CRYPTO_H
#define DK_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct dk_arena dk_arena;

void dk_random_bytes(void *buf, size_t n);
/* Fast, non-cryptographic random bytes (xoshiro256**, per thread, seeded from the CSPRNG):
 * for identifiers that need to be unique, not secret — request, trace and span ids. */
void dk_fast_random(void *buf, size_t n);
/* Constant-time equality of two equal-length buffers. */
bool dk_ct_equal(const void *a, const void *b, size_t n);
/* Constant-time equality of two strings (time depends only on the lengths). */
bool dk_ct_streq(const char *a, const char *b);
void dk_sha256(const void *data, size_t n, unsigned char out[32]);
/* HMAC-SHA256 */
void dk_hmac_sha256(const void *key, size_t keylen, const void *data, size_t n,
                    unsigned char out[32]);
/* An HMAC-SHA256 key prepared once, for a key that signs or checks on every request (tokens,
 * cursors): the algorithm lookup and the key schedule are done at creation, each use copies the
 * prepared state. Immutable after creation, so one key serves every thread. */
typedef struct dk_hmac_key dk_hmac_key;
dk_hmac_key *dk_hmac_key_new(const void *key, size_t keylen);
void dk_hmac_key_free(dk_hmac_key *k); /* accepts NULL */
void dk_hmac_key_sign(const dk_hmac_key *k, const void *data, size_t n, unsigned char out[32]);
/* Lower-case hex; out must hold 2n+1 bytes. */
void dk_hex(const unsigned char *in, size_t n, char *out);
/* The one base64 codec (RFC 4648), without padding, over either alphabet: dk_base64_std
 * ("+/", e.g. PHC password strings) or dk_base64_url ("-_", tokens and cursors). */
extern const char dk_base64_std[];
extern const char dk_base64_url[];
/* Writes (n + 2) / 3 * 4 characters at most, and a NUL, to out; returns the length. */
size_t dk_base64_encode(const char *alphabet, const unsigned char *in, size_t n, char *out);
/* Decodes exactly len characters into out (at most cap bytes); false on a character outside
 * the alphabet, a length that cannot end a group (1 mod 4), non-zero trailing bits, or more
 * than cap bytes. */
bool dk_base64_decode(const char *alphabet, const char *in, size_t len, unsigned char *out,
                      size_t cap, size_t *ret_n);
/* base64url without padding. */
char *dk_base64url(dk_arena *a, const unsigned char *in, size_t n);
/* Decodes base64url (padding optional); NULL when malformed. */
unsigned char *dk_base64url_decode(dk_arena *a, const char *in, size_t *ret_len);
/* n random bytes as base64url text (a token of n*8 bits). */
char *dk_random_token(dk_arena *a, size_t nbytes);

#endif
