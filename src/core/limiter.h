/* limiter.h — a bounded pool for expensive work (password hashing): at most `workers` run at
 * once, at most `queue` callers wait for a turn, and anyone beyond that is refused at once
 * (the caller answers 503 with Retry-After). Memory and threads stay bounded under any burst.
 * Thread-safe. */
#ifndef DK_LIMITER_H
#define DK_LIMITER_H

#include "core/status.h"

typedef struct dk_limiter dk_limiter;

dk_limiter *dk_limiter_new(int workers, int queue, int max_wait_ms);
void dk_limiter_free(dk_limiter *l);
/* DK_OK: the caller holds a slot and must call dk_limiter_leave. DK_E_UNAVAILABLE: saturated
 * (queue full, or no slot within max_wait_ms). */
dk_status dk_limiter_enter(dk_limiter *l) DK_MUSTCHECK;
void dk_limiter_leave(dk_limiter *l);
void dk_limiter_stats(dk_limiter *l, int *ret_active, int *ret_waiting);

#endif
