#include "core/hugepages.h"

#include <stdint.h>
#include <sys/mman.h>

#include "core/banned.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

#define HUGEPAGE ((size_t)2 << 20)

#ifdef DOCKET_WRAP_MMAP

bool dk_hugepages_wrapped(void)
{
    return true;
}

/* The linker's names for the wrapped calls and the real ones (ld --wrap): libsodium calls
 * mmap; Docket's own code, built with 64-bit file offsets, calls mmap64 (the same function on
 * a 64-bit system). */
void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
void *__wrap_mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off);

void *__wrap_mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    return __wrap_mmap(addr, len, prot, flags, fd, off);
}

void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    const int want = MAP_PRIVATE | MAP_ANONYMOUS;
    if (addr || (flags & want) != want || (flags & (MAP_FIXED | MAP_SHARED)) ||
        len < DK_HUGEPAGE_MIN || len > SIZE_MAX - HUGEPAGE)
        return __real_mmap(addr, len, prot, flags, fd, off);
    /* One huge page more than asked, then the unaligned head and the tail given back: the
     * caller's munmap(start, len) later covers exactly what is left. */
    char *raw = __real_mmap(NULL, len + HUGEPAGE, prot, flags & ~MAP_POPULATE, fd, off);
    if (raw == MAP_FAILED)
        return raw;
    char *start = (char *)(((uintptr_t)raw + HUGEPAGE - 1) & ~(uintptr_t)(HUGEPAGE - 1));
    size_t head = (size_t)(start - raw), tail = HUGEPAGE - head;
    if (head)
        munmap(raw, head);
    if (tail)
        munmap(start + len, tail);
    (void)madvise(start, len, MADV_HUGEPAGE); /* EINVAL where the kernel has no THP: fine */
    /* MAP_POPULATE's promise, now on huge pages; a kernel without MADV_POPULATE_WRITE leaves
     * the pages to fault in on first touch, which is what they would do without the flag */
    if (flags & MAP_POPULATE)
        (void)madvise(start, len, MADV_POPULATE_WRITE);
    return start;
}

#else

bool dk_hugepages_wrapped(void)
{
    return false;
}

#endif
