/* str.h — checked parsers and string helpers (the replacements for banned calls).
 * Pure functions, thread-safe. Parsers return false on any malformed or out-of-range input
 * and write *ret only on success. */
#ifndef DK_STR_H
#define DK_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct dk_arena dk_arena;

/* Whole string must be a decimal integer (optional leading '-'), within [min, max]. */
bool dk_parse_i64(const char *s, int64_t min, int64_t max, int64_t *ret);
/* Like dk_parse_i64 for a length-delimited string. */
bool dk_parse_i64n(const char *s, size_t n, int64_t min, int64_t max, int64_t *ret);
/* Number of Unicode code points in valid UTF-8; -1 when s is not valid UTF-8. */
long dk_utf8_len(const char *s, size_t n);
/* Copies src[0..n) to dst as valid UTF-8 without control characters: each byte that does not
 * start a valid sequence, and each C0 control or DEL, becomes U+FFFD. Stops before a character
 * that would not fit in cap-1 bytes; always terminates (cap > 0). Returns the length written. */
size_t dk_utf8_scrub(char *dst, size_t cap, const char *src, size_t n);
/* ASCII case-insensitive equality. */
bool dk_str_ieq(const char *a, const char *b);
/* Copies at most cap-1 bytes and always terminates; returns the length copied. */
size_t dk_strlcpy(char *dst, const char *src, size_t cap);
/* Lower-cases ASCII letters in place. */
void dk_str_lower(char *s);
/* The value of a hexadecimal digit (either case), or -1. */
int dk_hex_digit(char c);
/* The one percent-encoder (RFC 3986), into the arena: every byte but the unreserved characters
 * (A-Z a-z 0-9 - . _ ~) and those in keep ("" for none) becomes %XX, upper-case hex. */
char *dk_percent_encode(dk_arena *a, const char *s, const char *keep);

/* The one string builder: text grown on the heap (doubling from 1 KiB), then handed to an
 * arena. Zero-initialise, append, then dk_sb_take (or dk_free(b.s) to drop it). dk_sb_put does
 * not terminate the text; dk_sb_printf does. */
typedef struct dk_sb {
    char *s;
    size_t len, cap;
} dk_sb;
void dk_sb_grow(dk_sb *b, size_t n); /* room for n more bytes */
static inline void dk_sb_reserve(dk_sb *b, size_t n)
{
    if (b->len + n > b->cap)
        dk_sb_grow(b, n);
}
static inline void dk_sb_put(dk_sb *b, const char *s, size_t n)
{
    dk_sb_reserve(b, n);
    memcpy(b->s + b->len, s, n);
    b->len += n;
}
void dk_sb_printf(dk_sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Copies the text into the arena ("" when empty) and frees the heap buffer. */
char *dk_sb_take(dk_sb *b, dk_arena *a);

#endif
