/* hugepages.h — large anonymous mappings on transparent huge pages. Argon2id's work area is
 * m KiB (19 MiB by default) that libsodium maps afresh for every hash: with 4 KiB pages the
 * kernel faults and zero-fills ~4,900 pages per login and the hash's random reads miss the TLB;
 * with 2 MiB pages both shrink (a third of a login's CPU: docs/design/passwords.md). libsodium
 * offers no allocator hook, so the build links it statically with `-Wl,--wrap=mmap`
 * (CMakeLists.txt): its mmap calls, and Docket's own, reach __wrap_mmap below, which gives a
 * private anonymous mapping of DK_HUGEPAGE_MIN bytes or more a 2 MiB-aligned start and
 * MADV_HUGEPAGE before it is populated. Everything else goes to the real mmap unchanged, as do
 * the shared libraries' calls. Where the kernel has THP off the advice is a no-op and only the
 * alignment remains. Without a static libsodium (DOCKET_WRAP_MMAP undefined) nothing is
 * wrapped and this module is empty. */
#ifndef DK_CORE_HUGEPAGES_H
#define DK_CORE_HUGEPAGES_H

#include <stdbool.h>
#include <stddef.h>

/* Mappings of at least this many bytes are put on huge pages (twice a huge page: below that
 * the alignment costs more than it brings). */
#define DK_HUGEPAGE_MIN ((size_t)4 << 20)

/* Whether this build routes mmap through the wrapper (libsodium linked statically). */
bool dk_hugepages_wrapped(void);

#endif
