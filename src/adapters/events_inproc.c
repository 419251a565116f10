/* In-process event delivery: a fixed table of subscribers, called synchronously. */
#include <pthread.h>
#include <string.h>

#include "core/alloc.h"
#include "core/str.h"
#include "ports/events.h"
#include "core/trace.h"
#include "adapters/events.h"
#include "core/banned.h"

#define DK_EVENTS_MAX_SUBS 32

struct dk_events {
    int nsubs;
    struct {
        char type[64];
        dk_event_fn fn;
        void *ctx;
    } subs[DK_EVENTS_MAX_SUBS];
};

static dk_status inproc_open(const dk_events_options *opt, dk_events **ret)
{
    (void)opt;
    *ret = DK_NEW(dk_events);
    return DK_OK;
}

static dk_status inproc_start(dk_events *ev)
{
    (void)ev;
    return DK_OK;
}

static void inproc_close(dk_events *ev)
{
    dk_free(ev);
}

static dk_status inproc_subscribe(dk_events *ev, const char *type, dk_event_fn fn, void *ctx)
{
    if (ev->nsubs >= DK_EVENTS_MAX_SUBS)
        return DK_E_INTERNAL;
    dk_strlcpy(ev->subs[ev->nsubs].type, type, sizeof ev->subs[ev->nsubs].type);
    ev->subs[ev->nsubs].fn = fn;
    ev->subs[ev->nsubs].ctx = ctx;
    ev->nsubs++;
    return DK_OK;
}

static dk_status inproc_publish(dk_events *ev, const char *type, const char *payload)
{
    dk_status first = DK_OK;
    for (int i = 0; i < ev->nsubs; i++) {
        if (strcmp(ev->subs[i].type, type) != 0)
            continue;
        dk_span *sp = dk_span_consume(type, "inproc");
        dk_status st = ev->subs[i].fn(ev->subs[i].ctx, type, payload);
        dk_span_consume_end(sp, st);
        if (st != DK_OK && first == DK_OK)
            first = st;
    }
    return first;
}

const struct dk_events_ops dk_events_inproc_ops = {
    .name = "inproc",
    .open = inproc_open,
    .start = inproc_start,
    .close = inproc_close,
    .subscribe = inproc_subscribe,
    .publish = inproc_publish,
};
