/* events.h — the event port: services publish domain events ("user.deleted", "task.updated")
 * and others subscribe, without knowing each other. The in-process adapter delivers to every
 * subscriber of the process synchronously, before publish returns; a queue adapter (Redis
 * Streams, database outbox) delivers across processes at least once. Subscribers must be
 * idempotent. Subscribe during start-up only, then start; publish is thread-safe. With Redis,
 * publish returns once the event is stored in the stream; delivery follows asynchronously. */
#ifndef DK_PORTS_EVENTS_H
#define DK_PORTS_EVENTS_H

#include "core/status.h"

typedef struct dk_events dk_events;
/* payload is a JSON object as text. Returns DK_OK when handled (or ignored). */
typedef dk_status (*dk_event_fn)(void *ctx, const char *type, const char *payload);

typedef struct dk_events_options {
    const char *url;         /* redis[s]://… for the Redis Streams adapter; ignored in-process */
    const char *tls_ca_file; /* rediss://: CA bundle to trust; NULL/empty = system store */
    const char *group;       /* consumer group: the service (or process) name, e.g. "auth" */
    const char *consumer;    /* this process within the group, e.g. "<hostname>-<pid>" */
    int timeout_ms;          /* connect and command timeout */
} dk_events_options;

struct dk_events_ops {
    const char *name;
    dk_status (*open)(const dk_events_options *opt, dk_events **ret) DK_MUSTCHECK;
    /* Begins delivery to the subscribers (after every subscribe). No-op in-process. */
    dk_status (*start)(dk_events *ev) DK_MUSTCHECK;
    /* Stops delivery (joins any consumer thread) and frees; accepts NULL. */
    void (*close)(dk_events *ev);
    dk_status (*subscribe)(dk_events *ev, const char *type, dk_event_fn fn, void *ctx) DK_MUSTCHECK;
    /* Returns the first subscriber failure (in-process) so the publisher can report it. */
    dk_status (*publish)(dk_events *ev, const char *type, const char *payload) DK_MUSTCHECK;
};

typedef struct dk_bus {
    const struct dk_events_ops *ops;
    dk_events *ev;
} dk_bus;

#endif
