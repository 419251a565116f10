/* timer_wheel.h — a hashed timing wheel: many timers (one per open event stream) at a cost that
 * does not grow with their number. A ring of slots, each one tick (res_ms) wide, holds the
 * timers due in it; setting, moving and cancelling a timer is O(1), and expiring hands out
 * whole slots, touching each timer once, when it is handed out. A timer further away than the
 * ring's span waits in its slot for its round (looked at once a revolution).
 * A timer due at `due` is handed out by the first expiry at or after `due` rounded up to a
 * tick: never early; called at every tick's start, within a tick of its due time. Within a
 * tick timers come in the order they were set, across ticks in tick order (when the clock
 * moved less than a revolution since the last expiry).
 * Timers are embedded in the caller's objects (the wheel owns no timer memory). Not
 * thread-safe: one owner. */
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
    int64_t cur; /* the next tick to hand out */
    size_t n;    /* timers on the wheel (ready included) */
} dk_wheel;

/* A wheel of res_ms ticks spanning at least span_ms before timers wrap, starting at now_ms
 * (times are non-negative). The wheel must not be moved (copied) once initialised. */
void dk_wheel_init(dk_wheel *w, int64_t res_ms, int64_t span_ms, int64_t now_ms);
void dk_wheel_release(dk_wheel *w); /* the timers still on it are only forgotten */

/* Arms t for due (adds it, or moves it when it is on the wheel already). A due time whose
 * tick was handed out already makes t due at the next tick. */
void dk_wheel_set(dk_wheel *w, dk_wheel_timer *t, int64_t due);
/* Takes t off the wheel; harmless when it is not on it (also while it waits in `ready`). */
void dk_wheel_cancel(dk_wheel *w, dk_wheel_timer *t);
static inline bool dk_wheel_armed(const dk_wheel_timer *t)
{
    return t->next != NULL;
}
/* One timer of a tick up to now_ms's (its due <= now_ms), taken off the wheel; NULL when none
 * is left. Call it until NULL. */
dk_wheel_timer *dk_wheel_expire(dk_wheel *w, int64_t now_ms);
static inline size_t dk_wheel_count(const dk_wheel *w)
{
    return w->n;
}

#endif
