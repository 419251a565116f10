/* timeutil.h — clocks, condition variables that wait on the monotonic clock, and RFC 3339
 * timestamps (UTC, millisecond precision, 'Z' suffix). Thread-safe. */
#ifndef DK_TIMEUTIL_H
#define DK_TIMEUTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define DK_RFC3339_LEN 32 /* buffer size for dk_time_format */

int64_t dk_now_ms(void);  /* wall clock, ms since the epoch */
int64_t dk_mono_ms(void); /* monotonic, for timeouts */
double dk_mono_s(void);   /* monotonic, seconds with ns resolution */
/* A condition variable whose timed waits take dk_mono_deadline times (immune to clock steps). */
void dk_cond_init_monotonic(pthread_cond_t *c);
/* The monotonic time ms from now, for pthread_cond_timedwait on such a condition variable. */
struct timespec dk_mono_deadline(int64_t ms);
/* "2026-11-29T14:55:36.123Z" */
void dk_time_format(int64_t ms, char out[DK_RFC3339_LEN]);
/* Accepts RFC 3339 with 'Z' or a numeric offset and optional fraction; false when malformed. */
bool dk_time_parse(const char *s, int64_t *ret_ms);

#endif
