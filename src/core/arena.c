#include "core/arena.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/banned.h"

#define DK_ARENA_BLOCK 8192
#define DK_ARENA_ALIGN 16

struct dk_arena_block {
    struct dk_arena_block *next;
    size_t cap;
    size_t used;
    _Alignas(DK_ARENA_ALIGN) unsigned char data[];
};

struct dk_arena_cleanup {
    struct dk_arena_cleanup *next;
    void (*fn)(void *);
    void *ptr;
};

struct dk_arena {
    struct dk_arena_block *head;  /* current block first */
    struct dk_arena_block *first; /* the block made with the arena, kept by reset */
    struct dk_arena_cleanup *cleanups;
    size_t total;
};

static struct dk_arena_block *dk_arena_block_new(size_t cap)
{
    if (cap > SIZE_MAX / 2) {
        fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"arena allocation of %zu bytes\"}\n", cap);
        abort();
    }
    struct dk_arena_block *b = dk_malloc(sizeof(*b) + cap);
    b->next = NULL;
    b->cap = cap;
    b->used = 0;
    return b;
}

/* Freed arenas (reset, with their first block) wait here for the next request: a request
 * then costs no malloc of its first block (whose size also made glibc consolidate its fast
 * bins on every request). Not under AddressSanitizer, which should see every block die. */
#if defined(__SANITIZE_ADDRESS__)
#define DK_ARENA_POOL 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DK_ARENA_POOL 0
#endif
#endif
#ifndef DK_ARENA_POOL
#define DK_ARENA_POOL 64
#endif

static pthread_mutex_t dk_arena_pool_lock = PTHREAD_MUTEX_INITIALIZER;
static dk_arena *dk_arena_pool[DK_ARENA_POOL + 1];
static int dk_arena_pool_n;

dk_arena *dk_arena_new(void)
{
    if (DK_ARENA_POOL > 0) {
        dk_arena *a = NULL;
        pthread_mutex_lock(&dk_arena_pool_lock);
        if (dk_arena_pool_n > 0)
            a = dk_arena_pool[--dk_arena_pool_n];
        pthread_mutex_unlock(&dk_arena_pool_lock);
        if (a)
            return a;
    }
    dk_arena *a = DK_NEW(dk_arena);
    a->head = dk_arena_block_new(DK_ARENA_BLOCK);
    a->first = a->head;
    return a;
}

static void dk_arena_run_cleanups(dk_arena *a)
{
    while (a->cleanups) {
        struct dk_arena_cleanup *c = a->cleanups;
        a->cleanups = c->next;
        c->fn(c->ptr);
    }
}

void dk_arena_reset(dk_arena *a)
{
    if (!a)
        return;
    dk_arena_run_cleanups(a);
    struct dk_arena_block *b = a->head;
    while (b) {
        struct dk_arena_block *next = b->next;
        if (b != a->first)
            dk_free(b);
        b = next;
    }
    a->head = a->first;
    a->first->next = NULL;
    a->first->used = 0;
    a->total = 0;
}

void dk_arena_free(dk_arena *a)
{
    if (!a)
        return;
    if (DK_ARENA_POOL > 0) {
        dk_arena_reset(a);
        pthread_mutex_lock(&dk_arena_pool_lock);
        bool kept = dk_arena_pool_n < DK_ARENA_POOL;
        if (kept)
            dk_arena_pool[dk_arena_pool_n++] = a;
        pthread_mutex_unlock(&dk_arena_pool_lock);
        if (kept)
            return;
    }
    dk_arena_run_cleanups(a);
    struct dk_arena_block *b = a->head;
    while (b) {
        struct dk_arena_block *next = b->next;
        dk_free(b);
        b = next;
    }
    dk_free(a);
}

void *dk_arena_alloc(dk_arena *a, size_t n)
{
    if (n > SIZE_MAX / 2) {
        fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"arena allocation of %zu bytes\"}\n", n);
        abort();
    }
    size_t need = (n + DK_ARENA_ALIGN - 1) & ~(size_t)(DK_ARENA_ALIGN - 1);
    if (need == 0)
        need = DK_ARENA_ALIGN;
    struct dk_arena_block *b = a->head;
    if (!b || b->cap - b->used < need) {
        size_t cap = need > DK_ARENA_BLOCK / 2 ? need : DK_ARENA_BLOCK;
        struct dk_arena_block *nb = dk_arena_block_new(cap);
        if (need > DK_ARENA_BLOCK / 2 && b) {
            /* big allocation: its own block behind the current one, so the current
             * block's free space stays usable */
            nb->next = b->next;
            b->next = nb;
            nb->used = need;
            a->total += need;
            memset(nb->data, 0, need);
            return nb->data;
        }
        nb->next = b;
        a->head = nb;
        b = nb;
    }
    void *p = b->data + b->used;
    b->used += need;
    a->total += need;
    memset(p, 0, need);
    return p;
}

char *dk_arena_strndup(dk_arena *a, const char *s, size_t n)
{
    char *p = dk_arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *dk_arena_strdup(dk_arena *a, const char *s)
{
    return s ? dk_arena_strndup(a, s, strlen(s)) : NULL;
}

char *dk_arena_vprintf(dk_arena *a, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return dk_arena_strdup(a, "");
    char *p = dk_arena_alloc(a, (size_t)n + 1);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    return p;
}

char *dk_arena_printf(dk_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *p = dk_arena_vprintf(a, fmt, ap);
    va_end(ap);
    return p;
}

void dk_arena_defer(dk_arena *a, void (*fn)(void *), void *ptr)
{
    struct dk_arena_cleanup *c = dk_arena_alloc(a, sizeof(*c));
    c->fn = fn;
    c->ptr = ptr;
    c->next = a->cleanups;
    a->cleanups = c;
}

size_t dk_arena_used(const dk_arena *a)
{
    return a->total;
}
