/* The task-list cursor codec: arbitrary text decodes or is refused; what decodes re-encodes to
 * a cursor that decodes to the same position. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "core/arena.h"
#include "services/tasks/tasks_cursor.h"

static const unsigned char key[32] = "cursor-key-for-fuzzing-0123456";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_cstr(data, size);
    dk_arena *a = dk_arena_new();
    tasks_cursor c;
    if (tasks_cursor_decode(a, key, text, &c) == DK_OK) {
        char *again = tasks_cursor_encode(a, key, &c);
        tasks_cursor d;
        if (!again || tasks_cursor_decode(a, key, again, &d) != DK_OK)
            abort();
    }
    dk_arena_free(a);
    free(text);
    return 0;
}
