/* adapters/events.h — the event-bus adapters: in-process (events_inproc.c) and Redis (events_redis.c).
 * The port (the interface) is ports/events.h; only the composition root (main.c) and the
 * adapters' own tests name these instances. */
#ifndef DK_ADAPTERS_EVENTS_H
#define DK_ADAPTERS_EVENTS_H

#include "ports/events.h"

extern const struct dk_events_ops dk_events_inproc_ops;
extern const struct dk_events_ops dk_events_redis_ops;

#endif
