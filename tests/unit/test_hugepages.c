/* test_hugepages.c — the mmap wrapper (core/hugepages.h) is wired where the build says so:
 * a large anonymous mapping comes back 2 MiB-aligned and whole (every byte usable, unmapped by
 * the caller's own munmap), small and file mappings come back as the kernel gives them, and
 * libsodium's Argon2id — the caller the wrapper exists for — faults its 19 MiB work area in on
 * huge pages (a few hundred faults per hash, not ~4,900) where the kernel has THP on. */
#include "testutil.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core/hugepages.h"
#include "core/banned.h"

#define MIB ((size_t)1 << 20)

/* Transparent huge pages on for madvised areas ("[always]" or "[madvise]")? */
static bool thp_on(void)
{
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f)
        return false;
    char line[128] = "";
    bool on = fgets(line, sizeof line, f) && !strstr(line, "[never]");
    fclose(f);
    return on;
}

static long minor_faults(void)
{
    struct rusage ru;
    assert_int_equal(getrusage(RUSAGE_THREAD, &ru), 0);
    return ru.ru_minflt;
}

static void test_large_anonymous(void **state)
{
    (void)state;
    if (!dk_hugepages_wrapped())
        skip();
    size_t len = 19 * MIB + 4096; /* not a multiple of the huge page */
    char *p =
        mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    assert_true(p != MAP_FAILED);
    assert_int_equal((uintptr_t)p % (2 * MIB), 0);
    memset(p, 0xa5, len);
    assert_int_equal((unsigned char)p[len - 1], 0xa5);
    assert_int_equal(munmap(p, len), 0);
}

static void test_others_untouched(void **state)
{
    (void)state;
    /* small: the kernel's placement, usable */
    char *s = mmap(NULL, 64 * 1024, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(s != MAP_FAILED);
    s[0] = 1;
    assert_int_equal(munmap(s, 64 * 1024), 0);
    /* a file mapping keeps the file's bytes */
    char *dir = dk_test_tmpdir("hugepages");
    char path[512];
    snprintf(path, sizeof path, "%s/f", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    size_t len = 5 * MIB;
    assert_int_equal(ftruncate(fd, (off_t)len), 0);
    assert_int_equal(pwrite(fd, "docket", 6, 0), 6);
    char *f = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    assert_true(f != MAP_FAILED);
    assert_memory_equal(f, "docket", 6);
    assert_int_equal(munmap(f, len), 0);
    close(fd);
    free(dir);
    /* MAP_FIXED over a range we own is the kernel's business */
    char *r = mmap(NULL, 8 * MIB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(r != MAP_FAILED);
    char *x = mmap(r + 4096, 5 * MIB, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    assert_ptr_equal(x, r + 4096);
    assert_int_equal(munmap(r, 8 * MIB), 0);
}

static void test_libsodium_area(void **state)
{
    (void)state;
    assert_true(sodium_init() >= 0);
    if (!dk_hugepages_wrapped() || !thp_on())
        skip();
    unsigned char salt[crypto_pwhash_SALTBYTES] = {7}, out[32];
    long before = minor_faults();
    assert_int_equal(
        crypto_pwhash(out, sizeof out, "pw", 2, salt, 1, 19 * MIB, crypto_pwhash_ALG_ARGON2ID13),
        0);
    long faults = minor_faults() - before;
    /* 4 KiB pages: 4,864 faults for 19 MiB; huge pages: one per 2 MiB plus the unaligned end
     * and whatever the hash touches besides (its stack, a few small allocations) */
    print_message("minor faults for one 19 MiB hash: %ld\n", faults);
    assert_true(faults < 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_large_anonymous),
        cmocka_unit_test(test_others_untouched),
        cmocka_unit_test(test_libsodium_area),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
