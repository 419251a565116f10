/* arena.h — per-request memory: many small allocations, one free.
 * A request's strings, JSON and foreign results live in its arena and die with it; foreign
 * resources (a PGresult, a jansson value) are attached with dk_arena_defer and released, in
 * reverse order, by dk_arena_free. Not thread-safe: one arena belongs to one request. */
#ifndef DK_ARENA_H
#define DK_ARENA_H

#include <stdarg.h>
#include <stddef.h>

#include "core/status.h"

typedef struct dk_arena dk_arena;

dk_arena *dk_arena_new(void);
/* Releases everything; the arena (reset, first block kept) may be handed out again by a later
 * dk_arena_new. Accepts NULL. */
void dk_arena_free(dk_arena *a);
/* Frees everything but keeps the first block, for reuse by the next request. */
void dk_arena_reset(dk_arena *a);

void *dk_arena_alloc(dk_arena *a, size_t n); /* zeroed, 16-byte aligned; aborts on OOM */
char *dk_arena_strdup(dk_arena *a, const char *s);
char *dk_arena_strndup(dk_arena *a, const char *s, size_t n);
char *dk_arena_printf(dk_arena *a, const char *fmt, ...) DK_PRINTF(2, 3);
char *dk_arena_vprintf(dk_arena *a, const char *fmt, va_list ap) DK_PRINTF(2, 0);
/* Runs fn(ptr) when the arena is freed or reset. */
void dk_arena_defer(dk_arena *a, void (*fn)(void *), void *ptr);
/* Bytes handed out so far (for tests and metrics). */
size_t dk_arena_used(const dk_arena *a);

#endif
