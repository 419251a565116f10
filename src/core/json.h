/* json.h — jansson glue: rendering into a request arena, ownership tied to an arena, and the
 * small typed getters validation code needs. Thread-safe (jansson values are not shared
 * between requests). */
#ifndef DK_JSON_H
#define DK_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct dk_arena dk_arena;

/* Compact JSON text of v in the arena; *ret_len (optional) gets its length. */
char *dk_json_render(dk_arena *a, const json_t *v, size_t *ret_len);
/* Decrefs v when the arena is freed; returns v for chaining. */
json_t *dk_json_own(dk_arena *a, json_t *v);
/* json_string() of a possibly-NULL C string: NULL → json null. */
json_t *dk_json_str_or_null(const char *s);
/* A member of an object as a string: NULL when absent or JSON null; *ret_wrong_type is set when
 * present with another type. */
const char *dk_json_get_str(const json_t *obj, const char *key, bool *ret_present,
                            bool *ret_wrong_type);

#endif
