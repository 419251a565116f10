/* tasks_cursor.h — the opaque keyset cursor of GET /api/v1/tasks: which sort it continues, the
 * last row's sort value and id, and a hash of the filters it was issued for. On the wire it is
 * base64url of a versioned binary record followed by its HMAC-SHA256 under the app's cursor
 * key (domain-separated, so no other cursor of the key verifies as a tasks cursor). Pure
 * functions, thread-safe; strings in the caller's arena. Errors: DK_E_BAD_REQUEST for anything
 * malformed, truncated, of another version, or altered. */
#ifndef DK_TASKS_CURSOR_H
#define DK_TASKS_CURSOR_H

#include <stdint.h>

#include "core/ids.h"
#include "core/status.h"

typedef struct dk_arena dk_arena;

#define TASKS_FILTER_HASH_LEN 16
#define TASKS_CURSOR_TEXT_MAX 160 /* longer input is refused before decoding */

typedef struct tasks_cursor {
    int sort;      /* tasks_query's sort code (field and direction), 0..255 */
    int64_t value; /* the last row's sort key */
    char id[DK_UUID_LEN];
    unsigned char filter_hash[TASKS_FILTER_HASH_LEN];
} tasks_cursor;

/* The cursor's text in the arena; NULL when c->id is not a canonical UUID or sort is out of
 * range (a caller bug). */
char *tasks_cursor_encode(dk_arena *a, const unsigned char key[32], const tasks_cursor *c);
/* Verifies and decodes text into ret (written only on success). */
dk_status tasks_cursor_decode(dk_arena *a, const unsigned char key[32], const char *text,
                              tasks_cursor *ret) DK_MUSTCHECK;

#endif
