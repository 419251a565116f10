/* alloc.h — the one allocation wrapper: aborts on out-of-memory, so callers never check.
 * Thread-safe; every pointer it returns is released with dk_free (or free). */
#ifndef DK_ALLOC_H
#define DK_ALLOC_H

#include <stddef.h>

void *dk_malloc(size_t n);
void *dk_calloc(size_t n, size_t size);
void *dk_realloc(void *p, size_t n);
char *dk_strdup(const char *s);
char *dk_strndup(const char *s, size_t n);
void dk_free(void *p);

#define DK_NEW(type) ((type *)dk_calloc(1, sizeof(type)))

/* Cleanup helpers for locals: `DK_AUTOFREE char *s = dk_strdup(x);` */
static inline void dk_freep(void *pp)
{
    void **p = (void **)pp;
    dk_free(*p);
}
#define DK_AUTOFREE __attribute__((cleanup(dk_freep)))
/* Hands ownership on: returns the pointer and clears the local. */
#define DK_TAKE_PTR(p)                                                                             \
    ({                                                                                             \
        __typeof__(p) dk_tmp_ = (p);                                                               \
        (p) = NULL;                                                                                \
        dk_tmp_;                                                                                   \
    })

#endif
