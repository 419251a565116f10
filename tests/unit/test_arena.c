/* test_arena.c — the per-request arena: zeroed aligned allocations, large allocations in their
 * own blocks, string helpers, deferred cleanups in reverse order, reset and free. */
#include "testutil.h"

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/banned.h"

static void test_alloc_zeroed_aligned(void **state)
{
    dk_arena *a = dk_arena_new();
    assert_int_equal(dk_arena_used(a), 0);
    for (size_t n = 0; n < 200; n++) {
        unsigned char *p = dk_arena_alloc(a, n);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 16, 0);
        for (size_t i = 0; i < n; i++)
            assert_int_equal(p[i], 0);
        memset(p, 0xAB, n); /* every byte is writable (ASan checks the bounds) */
    }
    dk_arena_free(a);
}

static void test_alloc_sizes_and_used(void **state)
{
    dk_arena *a = dk_arena_new();
    char *p1 = dk_arena_alloc(a, 1);
    assert_int_equal(dk_arena_used(a), 16);
    char *p2 = dk_arena_alloc(a, 16);
    assert_int_equal(dk_arena_used(a), 32);
    char *p3 = dk_arena_alloc(a, 17);
    assert_int_equal(dk_arena_used(a), 64);
    char *p4 = dk_arena_alloc(a, 0); /* a distinct, valid pointer */
    assert_int_equal(dk_arena_used(a), 80);
    /* consecutive small allocations are laid out back to back in one block */
    assert_ptr_equal(p2, p1 + 16);
    assert_ptr_equal(p3, p2 + 16);
    assert_ptr_equal(p4, p3 + 32);
    dk_arena_free(a);
}

static void test_many_blocks(void **state)
{
    dk_arena *a = dk_arena_new();
    /* ~1 MiB in 100-byte pieces spans many 8 KiB blocks; every piece keeps its content */
    enum { N = 10000 };
    char **ptrs = test_malloc(N * sizeof *ptrs);
    for (int i = 0; i < N; i++) {
        ptrs[i] = dk_arena_alloc(a, 100);
        memset(ptrs[i], (char)(i & 0x7f), 100);
    }
    for (int i = 0; i < N; i++)
        for (int k = 0; k < 100; k++)
            assert_int_equal(ptrs[i][k], (char)(i & 0x7f));
    assert_int_equal(dk_arena_used(a), (size_t)N * 112);
    test_free(ptrs);
    dk_arena_free(a);
}

static void test_large_allocations(void **state)
{
    dk_arena *a = dk_arena_new();
    char *small1 = dk_arena_alloc(a, 32);
    unsigned char *big = dk_arena_alloc(a, 100000);
    char *small2 = dk_arena_alloc(a, 32);
    /* the big one has its own block; the current block's free space stays in use */
    assert_ptr_equal(small2, small1 + 32);
    assert_int_equal((uintptr_t)big % 16, 0);
    for (size_t i = 0; i < 100000; i++)
        assert_int_equal(big[i], 0);
    memset(big, 0xCD, 100000);
    assert_int_equal(dk_arena_used(a), 32 + 100000 + 32);

    /* bigger than a whole block, several times */
    unsigned char *huge[4];
    for (int i = 0; i < 4; i++) {
        huge[i] = dk_arena_alloc(a, (size_t)(1u << 20) + (size_t)i);
        memset(huge[i], i + 1, (size_t)(1u << 20) + (size_t)i);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(huge[i][0], i + 1);
        assert_int_equal(huge[i][(1u << 20) + (unsigned)i - 1], i + 1);
    }
    assert_int_equal(big[99999], 0xCD);
    /* none of them took the current block's room */
    char *small3 = dk_arena_alloc(a, 16);
    assert_ptr_equal(small3, small2 + 32);
    dk_arena_free(a);
}

static void test_strings(void **state)
{
    dk_arena *a = dk_arena_new();
    const char *src = "hello world";
    char *d = dk_arena_strdup(a, src);
    assert_string_equal(d, "hello world");
    assert_ptr_not_equal(d, src);
    assert_null(dk_arena_strdup(a, NULL));
    char *e = dk_arena_strdup(a, "");
    assert_string_equal(e, "");

    char *n = dk_arena_strndup(a, "abcdef", 3);
    assert_string_equal(n, "abc");
    char *z = dk_arena_strndup(a, "abc", 0);
    assert_string_equal(z, "");
    /* strndup copies exactly n bytes, even past an embedded NUL */
    char *nul = dk_arena_strndup(a, "ab\0cd", 5);
    assert_memory_equal(nul, "ab\0cd", 6);

    char *p = dk_arena_printf(a, "%s-%d-%05.1f-%c", "x", 42, 3.14159, 'z');
    assert_string_equal(p, "x-42-003.1-z");
    char *empty = dk_arena_printf(a, "%s", "");
    assert_string_equal(empty, "");

    /* a long formatted string (bigger than a block) */
    char *longs = dk_arena_printf(a, "%20000d|", 7);
    assert_int_equal(strlen(longs), 20001);
    assert_int_equal(longs[19999], '7');
    assert_int_equal(longs[20000], '|');
    dk_arena_free(a);
}

struct trace {
    int order[16];
    int n;
};

struct trace_item {
    struct trace *t;
    int id;
};

static void record(void *p)
{
    struct trace_item *it = p;
    it->t->order[it->t->n++] = it->id;
}

static void test_defer_reverse_order(void **state)
{
    struct trace t = {{0}, 0};
    struct trace_item items[5];
    dk_arena *a = dk_arena_new();
    for (int i = 0; i < 5; i++) {
        items[i] = (struct trace_item){&t, i + 1};
        dk_arena_defer(a, record, &items[i]);
        (void)dk_arena_alloc(a, 3000); /* cleanups survive block changes */
    }
    assert_int_equal(t.n, 0);
    dk_arena_free(a);
    assert_int_equal(t.n, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(t.order[i], 5 - i);
}

static void free_cb(void *p)
{
    free(p);
}

static void test_defer_frees_foreign_memory(void **state)
{
    /* a malloc'd object handed to the arena is released with it (LeakSanitizer checks) */
    dk_arena *a = dk_arena_new();
    char *foreign = malloc(1000);
    assert_non_null(foreign);
    memset(foreign, 1, 1000);
    dk_arena_defer(a, free_cb, foreign);
    dk_arena_free(a);
    dk_arena_free(NULL); /* accepted */
}

static void test_reset_runs_cleanups_and_reuses(void **state)
{
    struct trace t = {{0}, 0};
    struct trace_item items[3] = {{&t, 1}, {&t, 2}, {&t, 3}};
    dk_arena *a = dk_arena_new();
    char *first = dk_arena_alloc(a, 64);
    dk_arena_defer(a, record, &items[0]);
    dk_arena_defer(a, record, &items[1]);
    for (int i = 0; i < 20; i++)
        (void)dk_arena_alloc(a, 1000); /* several more blocks */
    dk_arena_reset(a);
    assert_int_equal(t.n, 2);
    assert_int_equal(t.order[0], 2);
    assert_int_equal(t.order[1], 1);
    assert_int_equal(dk_arena_used(a), 0);

    /* the first block is kept: the next allocation starts where the first one did */
    char *again = dk_arena_alloc(a, 64);
    assert_ptr_equal(again, first);
    for (int i = 0; i < 64; i++)
        assert_int_equal(again[i], 0);
    assert_int_equal(dk_arena_used(a), 64);

    /* cleanups registered after a reset run once, at free */
    dk_arena_defer(a, record, &items[2]);
    dk_arena_reset(a);
    assert_int_equal(t.n, 3);
    assert_int_equal(t.order[2], 3);
    dk_arena_reset(NULL); /* accepted */
    dk_arena_free(a);
    assert_int_equal(t.n, 3);
}

static int arena_setup(void **state)
{
    *state = dk_arena_new();
    return 0;
}

static int arena_teardown(void **state)
{
    dk_arena_free(*state);
    return 0;
}

static void test_reset_after_large_allocation_keeps_first_block(void **state)
{
    /* A large allocation made while the first block is current sits in the list behind it.
     * Reset must still keep the first 8 KiB block, not the large one (which a reused arena
     * would then hold for its whole life). */
    dk_arena *a = *state;
    char *first = dk_arena_alloc(a, 16);
    unsigned char *big = dk_arena_alloc(a, (size_t)1 << 20);
    memset(big, 1, (size_t)1 << 20);
    dk_arena_reset(a);
    char *again = dk_arena_alloc(a, 16);
    assert_ptr_equal(again, first);
}

/* Runs fn in a child process; returns its wait status. */
static int run_in_child(void (*fn)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fn();
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

static void alloc_size_max(void)
{
    dk_arena *a = dk_arena_new();
    /* cannot be satisfied: must abort like any other out-of-memory, not wrap around */
    char *p = dk_arena_alloc(a, SIZE_MAX);
    p[0] = 1;
    dk_arena_free(a);
}

static void alloc_nearly_size_max(void)
{
    dk_arena *a = dk_arena_new();
    char *p = dk_arena_alloc(a, SIZE_MAX - 8);
    p[0] = 1;
    dk_arena_free(a);
}

/* The process must die (abort, or the sanitizer's allocator refusing the size): returning a
 * small block for a huge request is a heap overflow waiting to happen. */
static bool died(int st)
{
    return (WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT) || (WIFEXITED(st) && WEXITSTATUS(st) != 0);
}

static void test_impossible_sizes_abort(void **state)
{
    int st = run_in_child(alloc_size_max);
    if (!died(st))
        fail_msg("dk_arena_alloc(SIZE_MAX) returned (wait status %#x)", (unsigned)st);
    st = run_in_child(alloc_nearly_size_max);
    if (!died(st))
        fail_msg("dk_arena_alloc(SIZE_MAX - 8) returned (wait status %#x)", (unsigned)st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_zeroed_aligned),
        cmocka_unit_test(test_alloc_sizes_and_used),
        cmocka_unit_test(test_many_blocks),
        cmocka_unit_test(test_large_allocations),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_defer_reverse_order),
        cmocka_unit_test(test_defer_frees_foreign_memory),
        cmocka_unit_test(test_reset_runs_cleanups_and_reuses),
        cmocka_unit_test_setup_teardown(test_reset_after_large_allocation_keeps_first_block,
                                        arena_setup, arena_teardown),
        cmocka_unit_test(test_impossible_sizes_abort),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
