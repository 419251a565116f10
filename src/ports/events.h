/* events.h — the event port: services publish domain events ("user.deleted", "task.updated")
 * and others subscribe, without knowing each other. The in-process adapter delivers to every
 * subscriber of the process synchronously, before publish returns; a queue adapter (Redis
 * Streams, database outbox) delivers across processes at least once. Subscribers must be
 * idempotent. Subscribe during start-up only; publish is thread-safe. */
#ifndef DK_PORTS_EVENTS_H
#define DK_PORTS_EVENTS_H

#include "core/status.h"

typedef struct dk_events dk_events;
/* payload is a JSON object as text. Returns DK_OK when handled (or ignored). */
typedef dk_status (*dk_event_fn)(void *ctx, const char *type, const char *payload);

struct dk_events_ops {
    const char *name;
    dk_status (*open)(dk_events **ret) DK_MUSTCHECK;
    void (*close)(dk_events *ev);
    dk_status (*subscribe)(dk_events *ev, const char *type, dk_event_fn fn, void *ctx) DK_MUSTCHECK;
    /* Returns the first subscriber failure (in-process) so the publisher can report it. */
    dk_status (*publish)(dk_events *ev, const char *type, const char *payload) DK_MUSTCHECK;
};

extern const struct dk_events_ops dk_events_inproc_ops;

typedef struct dk_bus {
    const struct dk_events_ops *ops;
    dk_events *ev;
} dk_bus;

#endif
