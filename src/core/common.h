/* common.h — small macros every module may use. No state, no allocation. */
#ifndef DK_COMMON_H
#define DK_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define DK_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define DK_MIN(a, b)    ((a) < (b) ? (a) : (b))
#define DK_MAX(a, b)    ((a) > (b) ? (a) : (b))
#define DK_UNUSED(x)    (void)(x)

static inline bool dk_streq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

#endif
