#include "core/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void dk_oom(size_t n)
{
    fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"out of memory allocating %zu bytes\"}\n", n);
    abort();
}

void *dk_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        dk_oom(n);
    return p;
}

void *dk_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        dk_oom(n * size);
    return p;
}

void *dk_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        dk_oom(n);
    return q;
}

char *dk_strdup(const char *s)
{
    return dk_strndup(s, strlen(s));
}

char *dk_strndup(const char *s, size_t n)
{
    char *p = dk_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void dk_free(void *p)
{
    free(p);
}
