/* The timing wheel: see timer_wheel.h. */
#include "core/timer_wheel.h"

#include "core/alloc.h"
#include "core/banned.h"

static void wheel_list_init(dk_wheel_timer *head)
{
    head->prev = head->next = head;
}

static void wheel_link(dk_wheel_timer *head, dk_wheel_timer *t)
{
    t->prev = head->prev;
    t->next = head;
    head->prev->next = t;
    head->prev = t;
}

static void wheel_unlink(dk_wheel_timer *t)
{
    t->prev->next = t->next;
    t->next->prev = t->prev;
    t->prev = t->next = NULL;
}

static int64_t wheel_tick(const dk_wheel *w, int64_t ms)
{
    return ms > 0 ? ms / w->res_ms : 0;
}

/* The tick a timer due at ms belongs to: the first whose start is not before ms. */
static int64_t wheel_tick_up(const dk_wheel *w, int64_t ms)
{
    return ms > 0 ? (ms - 1) / w->res_ms + 1 : 0;
}

void dk_wheel_init(dk_wheel *w, int64_t res_ms, int64_t span_ms, int64_t now_ms)
{
    w->res_ms = res_ms > 0 ? res_ms : 1;
    int64_t need = span_ms / w->res_ms + 2; /* a partial tick at each end */
    size_t n = 8;
    while ((int64_t)n < need && n < ((size_t)1 << 24))
        n *= 2;
    w->nslots = n;
    w->slots = dk_malloc(n * sizeof *w->slots);
    for (size_t i = 0; i < n; i++)
        wheel_list_init(&w->slots[i]);
    wheel_list_init(&w->ready);
    w->cur = wheel_tick(w, now_ms) + 1;
    w->n = 0;
}

void dk_wheel_release(dk_wheel *w)
{
    dk_free(w->slots);
    w->slots = NULL;
    w->n = 0;
}

void dk_wheel_cancel(dk_wheel *w, dk_wheel_timer *t)
{
    if (!t->next)
        return;
    wheel_unlink(t);
    w->n--;
}

/* Files t in its tick's slot (at the tail: the timer linked just before it is usually the one
 * the caller handled just before, still in the cache). */
static void wheel_file(dk_wheel *w, dk_wheel_timer *t)
{
    int64_t tick = wheel_tick_up(w, t->due);
    if (tick < w->cur)
        tick = w->cur; /* already due: the next tick's expiry hands it out */
    wheel_link(&w->slots[(size_t)tick & (w->nslots - 1)], t);
}

void dk_wheel_set(dk_wheel *w, dk_wheel_timer *t, int64_t due)
{
    dk_wheel_cancel(w, t);
    t->due = due;
    wheel_file(w, t);
    w->n++;
}

/* Moves a whole slot to the end of `ready` without touching its timers (each is touched when
 * it is handed out, just before its owner uses it). */
static void wheel_splice(dk_wheel_timer *ready, dk_wheel_timer *head)
{
    if (head->next == head)
        return;
    dk_wheel_timer *first = head->next, *last = head->prev;
    first->prev = ready->prev;
    ready->prev->next = first;
    last->next = ready;
    ready->prev = last;
    wheel_list_init(head);
}

dk_wheel_timer *dk_wheel_expire(dk_wheel *w, int64_t now_ms)
{
    int64_t nt = wheel_tick(w, now_ms);
    for (;;) {
        while (w->ready.next == &w->ready) {
            if (w->cur > nt)
                return NULL; /* every tick up to now's was handed out */
            if (nt - w->cur >= (int64_t)w->nslots)
                w->cur = nt - (int64_t)w->nslots + 1; /* a long gap: every slot once is enough */
            wheel_splice(&w->ready, &w->slots[(size_t)w->cur & (w->nslots - 1)]);
            w->cur++;
        }
        dk_wheel_timer *t = w->ready.next;
        wheel_unlink(t);
        if (t->due > now_ms) { /* a later round of the ring: back to its slot */
            wheel_file(w, t);
            continue;
        }
        w->n--;
        return t;
    }
}
