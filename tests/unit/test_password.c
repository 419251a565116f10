/* test_password.c — Argon2id hashing in a bounded pool: the PHC string's parameters, verify
 * match/mismatch, salts, hashes exchanged both ways with libargon2 and libsodium (the two
 * builds password.c uses), the dummy verification, malformed hashes, and the pool's bound (a
 * second concurrent caller is refused with DK_E_UNAVAILABLE, or waits when a queue allows), and
 * the work areas kept between hashes and released after a quiet quarter second. */
#include "testutil.h"

#include <argon2.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/limiter.h"
#include "core/timeutil.h"
#include "services/auth/password.h"
#include "core/banned.h"

/* Small parameters keep the file fast; the pool tests use a slower set. */
static const auth_hasher_options FAST = {.memory_kib = 1024,
                                         .iterations = 1,
                                         .parallelism = 1,
                                         .workers = 2,
                                         .queue = 4,
                                         .max_wait_ms = 2000};

struct fixture {
    auth_hasher *h;
    dk_arena *arena;
};

static int setup(void **state)
{
    struct fixture *f = test_calloc(1, sizeof *f);
    f->h = auth_hasher_new(&FAST);
    f->arena = dk_arena_new();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    auth_hasher_free(f->h);
    dk_arena_free(f->arena);
    test_free(f);
    return 0;
}

static void test_hash_format(void **state)
{
    struct fixture *f = *state;
    char *enc = NULL;
    assert_int_equal(auth_password_hash(f->h, f->arena, "correct horse", &enc), DK_OK);
    assert_non_null(enc);
    const char *prefix = "$argon2id$v=19$m=1024,t=1,p=1$";
    if (strncmp(enc, prefix, strlen(prefix)) != 0)
        fail_msg("hash %s lacks the prefix %s", enc, prefix);
    /* $salt$hash: 16-byte salt (22 base64 chars) and 32-byte hash (43 chars), unpadded */
    const char *salt = enc + strlen(prefix);
    const char *dollar = strchr(salt, '$');
    assert_non_null(dollar);
    assert_int_equal(dollar - salt, 22);
    assert_int_equal(strlen(dollar + 1), 43);
    assert_null(strchr(dollar + 1, '$'));
    assert_null(strchr(salt, '=')); /* no padding */

    /* other parameters show in the string */
    auth_hasher_options o = FAST;
    o.memory_kib = 2048;
    o.iterations = 2;
    o.parallelism = 2;
    auth_hasher *h2 = auth_hasher_new(&o);
    char *enc2 = NULL;
    assert_int_equal(auth_password_hash(h2, f->arena, "pw", &enc2), DK_OK);
    prefix = "$argon2id$v=19$m=2048,t=2,p=2$";
    if (strncmp(enc2, prefix, strlen(prefix)) != 0)
        fail_msg("hash %s lacks the prefix %s", enc2, prefix);
    /* hashes verify whatever hasher's parameters are current: they come from the string */
    assert_int_equal(auth_password_verify(f->h, enc2, "pw"), DK_OK);
    assert_int_equal(auth_password_verify(h2, enc, "correct horse"), DK_OK);
    auth_hasher_free(h2);
    auth_hasher_free(NULL); /* accepted */
}

static void test_verify(void **state)
{
    struct fixture *f = *state;
    static const char *pws[] = {"correct horse battery staple", "p\xc3\xa4ssw\xc3\xb6rd", "",
                                "12345678"};
    for (size_t i = 0; i < sizeof pws / sizeof pws[0]; i++) {
        char *enc = NULL;
        assert_int_equal(auth_password_hash(f->h, f->arena, pws[i], &enc), DK_OK);
        assert_int_equal(auth_password_verify(f->h, enc, pws[i]), DK_OK);
        assert_int_equal(auth_password_verify(f->h, enc, "wrong password"), DK_E_UNAUTHORIZED);
    }
    char *enc = NULL;
    assert_int_equal(auth_password_hash(f->h, f->arena, "Secret123", &enc), DK_OK);
    assert_int_equal(auth_password_verify(f->h, enc, "secret123"), DK_E_UNAUTHORIZED);
    assert_int_equal(auth_password_verify(f->h, enc, "Secret123 "), DK_E_UNAUTHORIZED);
    assert_int_equal(auth_password_verify(f->h, enc, "Secret12"), DK_E_UNAUTHORIZED);
    assert_int_equal(auth_password_verify(f->h, enc, ""), DK_E_UNAUTHORIZED);

    /* a long password (256 characters of 4 bytes) */
    char longpw[1025];
    for (int i = 0; i < 256; i++)
        memcpy(longpw + 4 * i, "\xf0\x9f\x98\x80", 4);
    longpw[1024] = '\0';
    assert_int_equal(auth_password_hash(f->h, f->arena, longpw, &enc), DK_OK);
    assert_int_equal(auth_password_verify(f->h, enc, longpw), DK_OK);
    longpw[1023] = '\x81';
    assert_int_equal(auth_password_verify(f->h, enc, longpw), DK_E_UNAUTHORIZED);
}

static void test_salted(void **state)
{
    struct fixture *f = *state;
    char *a = NULL, *b = NULL;
    assert_int_equal(auth_password_hash(f->h, f->arena, "same password", &a), DK_OK);
    assert_int_equal(auth_password_hash(f->h, f->arena, "same password", &b), DK_OK);
    assert_string_not_equal(a, b);
    /* the salts differ, not only the hashes */
    const char *sa = strrchr(a, '$'), *sb = strrchr(b, '$');
    assert_int_equal(sa - a, sb - b);
    assert_memory_not_equal(a, b, (size_t)(sa - a));
    assert_int_equal(auth_password_verify(f->h, a, "same password"), DK_OK);
    assert_int_equal(auth_password_verify(f->h, b, "same password"), DK_OK);
}

static void test_interoperates_with_libargon2(void **state)
{
    /* a hash made by libargon2 directly verifies, and ours verifies with libargon2 */
    struct fixture *f = *state;
    char ref[256];
    const unsigned char salt[16] = "0123456789abcdef";
    assert_int_equal(
        argon2id_hash_encoded(1, 1024, 1, "pw-ref", 6, salt, sizeof salt, 32, ref, sizeof ref),
        ARGON2_OK);
    assert_int_equal(auth_password_verify(f->h, ref, "pw-ref"), DK_OK);
    assert_int_equal(auth_password_verify(f->h, ref, "pw-reF"), DK_E_UNAUTHORIZED);
    char *enc = NULL;
    assert_int_equal(auth_password_hash(f->h, f->arena, "ours", &enc), DK_OK);
    assert_int_equal(argon2id_verify(enc, "ours", 4), ARGON2_OK);
    assert_int_equal(argon2id_verify(enc, "ourz", 4), ARGON2_VERIFY_MISMATCH);
    /* other parameters, salt and hash lengths (every base64 tail length) are read from the
     * string, not assumed */
    static const struct {
        uint32_t t, m, p, saltlen, hashlen;
    } params[] = {{3, 2048, 2, 8, 4},
                  {1, 1024, 1, 17, 33},
                  {2, 4096, 4, 18, 34},
                  {1, 1024, 3, 19, 35},
                  {1, 8192, 1, 64, 64}};
    for (size_t i = 0; i < sizeof params / sizeof params[0]; i++) {
        unsigned char s[64];
        for (uint32_t k = 0; k < params[i].saltlen; k++)
            s[k] = (unsigned char)(k * 37 + i);
        char other[512];
        assert_int_equal(argon2id_hash_encoded(params[i].t, params[i].m, params[i].p, "pw", 2, s,
                                               params[i].saltlen, params[i].hashlen, other,
                                               sizeof other),
                         ARGON2_OK);
        if (auth_password_verify(f->h, other, "pw") != DK_OK)
            fail_msg("libargon2's %s does not verify", other);
        assert_int_equal(auth_password_verify(f->h, other, "pW"), DK_E_UNAUTHORIZED);
    }
}

static void test_interoperates_with_libsodium(void **state)
{
    struct fixture *f = *state;
    assert_true(sodium_init() >= 0);
    /* the premise: both libraries give the same bytes for the same inputs */
    static const struct {
        uint32_t t, m;
    } same[] = {{1, 1024}, {2, 1024}, {3, 4096}, {2, 19456}};
    const unsigned char salt[16] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        unsigned char a[32], b[32];
        assert_int_equal(argon2id_hash_raw(same[i].t, same[i].m, 1, "pw", 2, salt, 16, a, 32),
                         ARGON2_OK);
        assert_int_equal(crypto_pwhash_argon2id(b, 32, "pw", 2, salt, same[i].t,
                                                (size_t)same[i].m * 1024,
                                                crypto_pwhash_argon2id_ALG_ARGON2ID13),
                         0);
        assert_memory_equal(a, b, 32);
    }
    /* libsodium's own PHC strings verify here, whatever their parameters */
    static const struct {
        unsigned long long ops;
        size_t mem;
    } theirs[] = {{1, 1024 * 1024}, {2, 19456 * 1024}, {3, 2048 * 1024}};
    for (size_t i = 0; i < sizeof theirs / sizeof theirs[0]; i++) {
        char str[crypto_pwhash_argon2id_STRBYTES];
        assert_int_equal(crypto_pwhash_argon2id_str(str, "s0dium", 6, theirs[i].ops, theirs[i].mem),
                         0);
        if (auth_password_verify(f->h, str, "s0dium") != DK_OK)
            fail_msg("libsodium's %s does not verify", str);
        assert_int_equal(auth_password_verify(f->h, str, "s0dlum"), DK_E_UNAUTHORIZED);
    }
    /* and ours verify with libsodium: one lane (computed by libsodium here) and two lanes
     * (computed by libargon2 here, verified by libsodium lane after lane) */
    for (uint32_t p = 1; p <= 2; p++) {
        auth_hasher_options o = FAST;
        o.parallelism = p;
        o.iterations = 1 + p;
        auth_hasher *h = auth_hasher_new(&o);
        char *enc = NULL;
        assert_int_equal(auth_password_hash(h, f->arena, "ours", &enc), DK_OK);
        if (crypto_pwhash_argon2id_str_verify(enc, "ours", 4) != 0)
            fail_msg("libsodium does not verify our %s", enc);
        assert_int_not_equal(crypto_pwhash_argon2id_str_verify(enc, "ourz", 4), 0);
        assert_int_equal(argon2id_verify(enc, "ours", 4), ARGON2_OK);
        assert_int_equal(auth_password_verify(f->h, enc, "ours"), DK_OK);
        auth_hasher_free(h);
    }
    /* what libsodium cannot compute (p > 1, a 12-byte hash, an 8-byte salt) still verifies
     * here through libargon2 */
    static const struct {
        uint32_t t, m, p, saltlen, hashlen;
    } only_argon2[] = {{2, 2048, 4, 16, 32}, {1, 1024, 1, 16, 12}, {1, 1024, 1, 8, 32}};
    for (size_t i = 0; i < sizeof only_argon2 / sizeof only_argon2[0]; i++) {
        char enc[256];
        assert_int_equal(argon2id_hash_encoded(only_argon2[i].t, only_argon2[i].m, only_argon2[i].p,
                                               "pw", 2, salt, only_argon2[i].saltlen,
                                               only_argon2[i].hashlen, enc, sizeof enc),
                         ARGON2_OK);
        if (auth_password_verify(f->h, enc, "pw") != DK_OK)
            fail_msg("%s does not verify", enc);
        assert_int_equal(auth_password_verify(f->h, enc, "pv"), DK_E_UNAUTHORIZED);
    }
}

static void test_malformed_hash(void **state)
{
    struct fixture *f = *state;
    char argon2i[256];
    const unsigned char salt[16] = "0123456789abcdef";
    assert_int_equal(
        argon2i_hash_encoded(1, 1024, 1, "pw", 2, salt, sizeof salt, 32, argon2i, sizeof argon2i),
        ARGON2_OK);
    static const char *bad[] = {
        "",
        "not a hash",
        "$argon2id$v=19$m=1024,t=1,p=1$",
        "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHRzYWx0$",
        "$2b$12$abcdefghijklmnopqrstuu5rZV0rJ3VsK1r8vGqF3zH6i0yQxkA9i", /* bcrypt */
        /* damaged variants of a sound hash (salt "saltsaltsaltsalt", any 32-byte hash) */
        "$argon2id$v=16$m=1024,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "$argon2id$v=19$m=01024,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "$argon2id$v=19$m=99999999999,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "$argon2id$v=19$m=1024,t=0,p=1$c2FsdHNhbHRzYWx0c2FsdA$"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA==$"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdB$" /* trailing bits set */
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "$argon2id$v=19$m=1024,t=1,p=1$c2Fs$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", /* short
                                                                                          salt */
        "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$A", /* 1 mod 4 */
        "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$AAAA*AAA",
        "$argon2id$v=19$m=1024,t=1,p=1,x=2$c2FsdHNhbHRzYWx0c2FsdA$"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dk_status st = auth_password_verify(f->h, bad[i], "pw");
        if (st != DK_E_INTERNAL)
            fail_msg("\"%s\": status %d, want DK_E_INTERNAL", bad[i], (int)st);
    }
    /* an argon2i hash is not an argon2id hash */
    assert_int_equal(auth_password_verify(f->h, argon2i, "pw"), DK_E_INTERNAL);
}

static void test_dummy_verify(void **state)
{
    struct fixture *f = *state;
    /* whatever the password, it is "wrong", and it costs about one verification */
    static const char *pws[] = {"", "guess", "correct horse battery staple"};
    for (size_t i = 0; i < sizeof pws / sizeof pws[0]; i++)
        assert_int_equal(auth_password_dummy_verify(f->h, pws[i]), DK_E_UNAUTHORIZED);
}

static double time_of(auth_hasher *h, const char *enc, bool dummy)
{
    double t0 = dk_mono_s();
    dk_status st = dummy ? auth_password_dummy_verify(h, "pw") : auth_password_verify(h, enc, "x");
    assert_int_equal(st, DK_E_UNAUTHORIZED);
    return dk_mono_s() - t0;
}

static void test_dummy_verify_costs_a_verification(void **state)
{
    /* with a parameter set slow enough to measure, the dummy costs what a real one does */
    struct fixture *f = *state;
    auth_hasher_options o = FAST;
    o.memory_kib = 16384;
    o.iterations = 2;
    auth_hasher *h = auth_hasher_new(&o);
    char *enc = NULL;
    assert_int_equal(auth_password_hash(h, f->arena, "pw", &enc), DK_OK);
    double real = 1e9, dummy = 1e9;
    for (int i = 0; i < 3; i++) {
        double r = time_of(h, enc, false), d = time_of(h, NULL, true);
        real = r < real ? r : real;
        dummy = d < dummy ? d : dummy;
    }
    if (dummy < real * 0.5 || dummy > real * 2)
        fail_msg("dummy verification took %.1f ms, a real one %.1f ms", dummy * 1e3, real * 1e3);
    auth_hasher_free(h);
}

/* ---- the pool ---- */

struct racer {
    auth_hasher *h;
    pthread_barrier_t *start;
    dk_status st;
    double seconds;
};

static void *racer_main(void *p)
{
    struct racer *r = p;
    dk_arena *a = dk_arena_new();
    pthread_barrier_wait(r->start);
    double t0 = dk_mono_s();
    char *enc = NULL;
    r->st = auth_password_hash(r->h, a, "racing", &enc);
    r->seconds = dk_mono_s() - t0;
    dk_arena_free(a);
    return NULL;
}

/* Starts n hashes at once on h; fills r[]. */
static void race(auth_hasher *h, struct racer *r, int n)
{
    pthread_barrier_t start;
    pthread_t th[8];
    assert_true(n <= 8);
    assert_int_equal(pthread_barrier_init(&start, NULL, (unsigned)n), 0);
    for (int i = 0; i < n; i++) {
        r[i] = (struct racer){.h = h, .start = &start};
        assert_int_equal(pthread_create(&th[i], NULL, racer_main, &r[i]), 0);
    }
    for (int i = 0; i < n; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    pthread_barrier_destroy(&start);
}

/* A parameter set that takes a few hundred milliseconds per hash. */
static const auth_hasher_options SLOW = {.memory_kib = 65536,
                                         .iterations = 3,
                                         .parallelism = 1,
                                         .workers = 1,
                                         .queue = 0,
                                         .max_wait_ms = 0};

static void test_pool_refuses_beyond_workers(void **state)
{
    auth_hasher *h = auth_hasher_new(&SLOW);
    struct racer r[2];
    race(h, r, 2);
    int ok = 0, refused = 0;
    double slow = 0, fast = 1e9;
    for (int i = 0; i < 2; i++) {
        if (r[i].st == DK_OK) {
            ok++;
            slow = r[i].seconds;
        } else if (r[i].st == DK_E_UNAVAILABLE) {
            refused++;
            fast = r[i].seconds;
        }
    }
    if (ok != 1 || refused != 1)
        fail_msg("statuses %d and %d: want one DK_OK and one DK_E_UNAVAILABLE", (int)r[0].st,
                 (int)r[1].st);
    /* the refusal is immediate: it does not wait for the running hash */
    if (fast > slow / 2)
        fail_msg("refused after %.1f ms while the hash took %.1f ms", fast * 1e3, slow * 1e3);
    /* verification shares the pool: once the hash is done, there is room again */
    assert_int_equal(auth_password_dummy_verify(h, "pw"), DK_E_UNAUTHORIZED);
    auth_hasher_free(h);
}

struct queued_hash {
    auth_hasher *h;
    atomic_bool done;
    dk_status st;
};

static void *queued_hash_main(void *p)
{
    struct queued_hash *q = p;
    dk_arena *a = dk_arena_new();
    char *enc = NULL;
    q->st = auth_password_hash(q->h, a, "queued", &enc);
    dk_arena_free(a);
    atomic_store(&q->done, true);
    return NULL;
}

/* Waits (bounded) until the pool shows `waiting` callers in its queue. */
static bool pool_waiting(dk_limiter *pool, int waiting)
{
    for (int i = 0; i < 10000; i++) {
        int a = 0, w = 0;
        dk_limiter_stats(pool, &a, &w);
        if (w == waiting)
            return true;
        struct timespec ts = {.tv_nsec = 1000000L};
        nanosleep(&ts, NULL);
    }
    return false;
}

static void test_pool_queue_waits(void **state)
{
    /* with one worker and a queue of 1, a caller that finds the worker busy waits in the queue
     * (it does not run alongside, nor is it refused) and runs once the worker is free; a
     * further caller finds the queue full. The test holds the worker's slot itself, so the
     * order is fixed by the test, not by how long a hash takes. */
    (void)state;
    auth_hasher_options o = SLOW;
    o.iterations = 1;
    o.queue = 1;
    o.max_wait_ms = 60000;
    auth_hasher *h = auth_hasher_new(&o);
    dk_limiter *pool = auth_hasher_pool(h);
    assert_int_equal(dk_limiter_enter(pool), DK_OK); /* the only worker is busy */

    struct queued_hash q = {.h = h};
    atomic_init(&q.done, false);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, queued_hash_main, &q), 0);
    bool queued = pool_waiting(pool, 1);
    bool finished_early = atomic_load(&q.done);
    /* the queue is full: a third caller is refused at once */
    dk_arena *a = dk_arena_new();
    char *enc = NULL;
    dk_status third = auth_password_hash(h, a, "third", &enc);
    dk_limiter_leave(pool); /* the worker is free: the queued hash runs */
    assert_int_equal(pthread_join(th, NULL), 0);
    dk_arena_free(a);

    assert_true(queued);
    assert_false(finished_early);
    assert_int_equal(third, DK_E_UNAVAILABLE);
    assert_int_equal(q.st, DK_OK);
    int active = -1, waiting = -1;
    dk_limiter_stats(pool, &active, &waiting);
    assert_int_equal(active, 0);
    assert_int_equal(waiting, 0);
    auth_hasher_free(h);
}

static void test_pool_max_wait(void **state)
{
    /* with a queue but a short max wait, a caller that finds the only worker busy gives up
     * after that wait (503), not before it and not much later. The test holds the worker's
     * slot itself, so the outcome does not depend on how long a hash takes. */
    auth_hasher_options o = SLOW;
    o.queue = 1;
    o.max_wait_ms = 30;
    auth_hasher *h = auth_hasher_new(&o);
    dk_limiter *pool = auth_hasher_pool(h);
    assert_int_equal(dk_limiter_enter(pool), DK_OK); /* the only worker is busy */
    dk_arena *a = dk_arena_new();
    char *enc = NULL;
    double t0 = dk_mono_s();
    dk_status st = auth_password_hash(h, a, "waits", &enc);
    double waited = dk_mono_s() - t0;
    dk_limiter_leave(pool);
    dk_arena_free(a);
    assert_int_equal(st, DK_E_UNAVAILABLE);
    if (waited < 0.025 || waited > 2.0)
        fail_msg("refused after %.1f ms with a max wait of 30 ms", waited * 1e3);
    auth_hasher_free(h);
}

/* The process's resident set in KiB (VmRSS). */
static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    assert_non_null(f);
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static void test_work_areas_reused_then_released(void **state)
{
    (void)state;
    /* 32 MiB areas: large against everything else this process holds; two lanes, so that
     * libargon2 computes them (libsodium maps and unmaps its own area per hash) */
    auth_hasher_options o = {.memory_kib = 32768,
                             .iterations = 1,
                             .parallelism = 2,
                             .workers = 2,
                             .queue = 0,
                             .max_wait_ms = 0};
    auth_hasher *h = auth_hasher_new(&o);
    /* waits for the dummy hash (made on its own thread), then verifies: one area is kept */
    assert_int_equal(auth_password_dummy_verify(h, "x"), DK_E_UNAUTHORIZED);
    dk_arena *a = dk_arena_new();
    long kept = rss_kib();
    /* hashes one after another reuse that area: the resident set does not grow by another */
    char *enc = NULL;
    for (int i = 0; i < 3; i++)
        assert_int_equal(auth_password_hash(h, a, "pw", &enc), DK_OK);
    assert_int_equal(auth_password_verify(h, enc, "pw"), DK_OK);
    long after = rss_kib();
    if (after > kept + 8 * 1024)
        fail_msg("RSS grew from %ld to %ld KiB over sequential hashes", kept, after);
    /* a quarter of a second after the last hash the area is unmapped */
    int64_t t0 = dk_mono_ms();
    while (rss_kib() > after - 24 * 1024 && dk_mono_ms() - t0 < 5000)
        usleep(50 * 1000);
    long released = rss_kib();
    if (released > after - 24 * 1024)
        fail_msg("RSS %ld KiB 5 s after the last hash (%ld KiB right after it)", released, after);
    assert_true(dk_mono_ms() - t0 >= 100);
    /* and a later hash still works (on a fresh area) */
    assert_int_equal(auth_password_verify(h, enc, "pw"), DK_OK);
    assert_int_equal(auth_password_verify(h, enc, "wrong"), DK_E_UNAUTHORIZED);
    dk_arena_free(a);
    auth_hasher_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hash_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_salted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interoperates_with_libargon2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interoperates_with_libsodium, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_hash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dummy_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dummy_verify_costs_a_verification, setup, teardown),
        cmocka_unit_test(test_pool_refuses_beyond_workers),
        cmocka_unit_test(test_pool_queue_waits),
        cmocka_unit_test(test_pool_max_wait),
        cmocka_unit_test(test_work_areas_reused_then_released),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
