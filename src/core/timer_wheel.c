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
    w->cur = wheel_tick(w, now_ms);
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

void dk_wheel_set(dk_wheel *w, dk_wheel_timer *t, int64_t due)
{
    dk_wheel_cancel(w, t);
    t->due = due;
    int64_t tick = wheel_tick(w, due);
    if (tick < w->cur)
        tick = w->cur; /* already due: the next expiry looks at cur's slot */
    wheel_link(&w->slots[(size_t)tick & (w->nslots - 1)], t);
    w->n++;
}

/* Moves the timers of one slot that are due at now to `ready`. */
static void wheel_collect(dk_wheel *w, dk_wheel_timer *head, int64_t now)
{
    dk_wheel_timer *t = head->next;
    while (t != head) {
        dk_wheel_timer *next = t->next;
        if (t->due <= now) {
            wheel_unlink(t);
            wheel_link(&w->ready, t);
        }
        t = next;
    }
}

dk_wheel_timer *dk_wheel_expire(dk_wheel *w, int64_t now_ms)
{
    int64_t nt = wheel_tick(w, now_ms);
    while (w->ready.next == &w->ready) {
        if (w->cur > nt)
            return NULL; /* the clock went back: nothing is due before cur */
        if (nt - w->cur >= (int64_t)w->nslots)
            w->cur = nt - (int64_t)w->nslots + 1; /* a long gap: every slot once is enough */
        wheel_collect(w, &w->slots[(size_t)w->cur & (w->nslots - 1)], now_ms);
        if (w->cur == nt)
            break; /* cur stays: its slot holds timers later in this tick */
        w->cur++;
    }
    dk_wheel_timer *t = w->ready.next;
    if (t == &w->ready)
        return NULL;
    wheel_unlink(t);
    w->n--;
    return t;
}
