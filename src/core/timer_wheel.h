/* timer_wheel.h — a hashed timing wheel: many timers (one per open event stream) at a cost that
 * does not grow with their number. A ring of slots, each one tick (res_ms) wide, holds the
 * timers whose due time falls in it; setting, moving and cancelling a timer is O(1), and
 * expiring visits the slots the clock passed and the timers in them. A timer further away than
 * the ring's span waits in its slot for its round (looked at once a revolution).
 * A timer never fires before its due time; called every tick, expiry finds it within a tick.
 * Timers are embedded in the caller's objects (the wheel owns no timer memory); within a tick
 * they come in no particular order, across ticks in order (when the clock moved less than a
 * revolution since the last expiry). Not thread-safe: one owner. */
#ifndef DK_TIMER_WHEEL_H
#define DK_TIMER_WHEEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct dk_wheel_timer {
    struct dk_wheel_timer *prev, *next; /* NULL when not on the wheel */
    int64_t due;                        /* ms, the clock the caller passes to dk_wheel_expire */
} dk_wheel_timer;

typedef struct dk_wheel {
    dk_wheel_timer *slots; /* list heads (circular, the head a sentinel) */
    dk_wheel_timer ready;  /* expired, not yet handed out */
    size_t nslots;         /* a power of two */
    int64_t res_ms;
    int64_t cur; /* the earliest tick whose slot may still hold a due timer */
    size_t n;    /* timers on the wheel (ready included) */
} dk_wheel;

/* A wheel of res_ms ticks spanning at least span_ms before timers wrap, starting at now_ms
 * (times are non-negative). The wheel must not be moved (copied) once initialised. */
void dk_wheel_init(dk_wheel *w, int64_t res_ms, int64_t span_ms, int64_t now_ms);
void dk_wheel_release(dk_wheel *w); /* the timers still on it are only forgotten */

/* Arms t for due (adds it, or moves it when it is on the wheel already). A due time not after
 * the last expiry's clock makes t due at the next expiry. */
void dk_wheel_set(dk_wheel *w, dk_wheel_timer *t, int64_t due);
/* Takes t off the wheel; harmless when it is not on it (also while it waits in `ready`). */
void dk_wheel_cancel(dk_wheel *w, dk_wheel_timer *t);
static inline bool dk_wheel_armed(const dk_wheel_timer *t)
{
    return t->next != NULL;
}
/* One timer due at now_ms (due <= now_ms), taken off the wheel; NULL when none is. Call it
 * until NULL; a timer set again with a due time <= now_ms meanwhile comes back in the same
 * round (set it later than now_ms). */
dk_wheel_timer *dk_wheel_expire(dk_wheel *w, int64_t now_ms);
static inline size_t dk_wheel_count(const dk_wheel *w)
{
    return w->n;
}

#endif
