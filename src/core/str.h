/* str.h — checked parsers and string helpers (the replacements for banned calls).
 * Pure functions, thread-safe. Parsers return false on any malformed or out-of-range input
 * and write *ret only on success. */
#ifndef DK_STR_H
#define DK_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

#endif
