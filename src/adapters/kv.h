/* adapters/kv.h — the key-value adapters: in-process memory (kv_memory.c) and Redis (kv_redis.c).
 * The port (the interface) is ports/kv.h; only the composition root (main.c) and the
 * adapters' own tests name these instances. */
#ifndef DK_ADAPTERS_KV_H
#define DK_ADAPTERS_KV_H

#include "ports/kv.h"

extern const struct dk_kv_ops dk_kv_memory_ops;
extern const struct dk_kv_ops dk_kv_redis_ops;

#endif
