/* timeutil.h — clocks and RFC 3339 timestamps (UTC, millisecond precision, 'Z' suffix).
 * Pure functions over caller buffers; thread-safe. */
#ifndef DK_TIMEUTIL_H
#define DK_TIMEUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DK_RFC3339_LEN 32 /* buffer size for dk_time_format */

int64_t dk_now_ms(void);  /* wall clock, ms since the epoch */
int64_t dk_mono_ms(void); /* monotonic, for timeouts */
double dk_mono_s(void);   /* monotonic, seconds with ns resolution */
/* "2026-11-29T14:55:36.123Z" */
void dk_time_format(int64_t ms, char out[DK_RFC3339_LEN]);
/* Accepts RFC 3339 with 'Z' or a numeric offset and optional fraction; false when malformed. */
bool dk_time_parse(const char *s, int64_t *ret_ms);

#endif
