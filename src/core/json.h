/* json.h — jansson glue: rendering into a request arena, ownership tied to an arena, and the
 * small typed getters validation code needs. Thread-safe (jansson values are not shared
 * between requests). */
#ifndef DK_JSON_H
#define DK_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/str.h"

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

/* A JSON writer: text produced directly, without jansson values, for responses on hot paths
 * (a task list would otherwise allocate a value per field). Strings are escaped exactly as
 * dk_json_render escapes them, so both paths give the same bytes for the same data; commas are
 * placed by the writer, the nesting is the caller's. Zero-initialise, write, then
 * dk_jw_finish. */
typedef struct dk_jw {
    dk_sb sb;   /* the text so far */
    bool comma; /* the next value or key needs a comma before it */
} dk_jw;
void dk_jw_object(dk_jw *w);
void dk_jw_object_end(dk_jw *w);
void dk_jw_array(dk_jw *w);
void dk_jw_array_end(dk_jw *w);
void dk_jw_key(dk_jw *w, const char *key);
void dk_jw_string(dk_jw *w, const char *s); /* NULL writes null */
void dk_jw_stringn(dk_jw *w, const char *s, size_t n);
void dk_jw_int(dk_jw *w, long long v);
void dk_jw_bool(dk_jw *w, bool v);
void dk_jw_null(dk_jw *w);
/* The text in the arena (NUL-terminated; *ret_len its length); the writer is emptied. */
char *dk_jw_finish(dk_jw *w, dk_arena *a, size_t *ret_len);

#endif
