/* Raw Argon2id rate: how many Argon2id verifications per second THREADS threads sustain at
 * the given cost parameters — the work Docket's login does once per request — computed by the
 * library Docket uses for those parameters (docs/design/passwords.md): libsodium's
 * crypto_pwhash for one lane, libargon2's argon2id_verify otherwise. The yardstick of the
 * `login` scenario.
 *
 * Usage: argon2_rate SECONDS THREADS MEMORY_KIB ITERATIONS PARALLELISM
 * Prints one JSON object: {"threads", "memory_kib", "iterations", "parallelism", "hashes",
 * "seconds", "rate"}. Exit status 1 on bad arguments or a libargon2 error. */
#define _POSIX_C_SOURCE 200809L

#include <argon2.h>
#include <sodium.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PASSWORD "correct horse battery staple"

struct worker {
    pthread_t thread;
    const char *encoded;
    const uint8_t *salt, *expect; /* libsodium: the salt and the 32-byte hash to recompute */
    long iters, mem;
    double deadline;
    uint64_t count;
    int error;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *work(void *arg)
{
    struct worker *w = arg;
    while (now_s() < w->deadline) {
        int rc = ARGON2_OK;
        if (w->salt) {
            uint8_t out[32];
            if (crypto_pwhash(out, sizeof out, PASSWORD, strlen(PASSWORD), w->salt,
                              (unsigned long long)w->iters, (size_t)w->mem * 1024,
                              crypto_pwhash_ALG_ARGON2ID13) != 0 ||
                sodium_memcmp(out, w->expect, sizeof out) != 0)
                rc = ARGON2_VERIFY_MISMATCH;
        } else {
            rc = argon2id_verify(w->encoded, PASSWORD, strlen(PASSWORD));
        }
        if (rc != ARGON2_OK) {
            w->error = rc;
            break;
        }
        w->count++;
    }
    return NULL;
}

static int parse(const char *s, long lo, long hi, long *ret)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        return -1;
    *ret = v;
    return 0;
}

int main(int argc, char **argv)
{
    long secs, threads, mem, iters, par;
    if (argc != 6 || parse(argv[1], 1, 3600, &secs) != 0 || parse(argv[2], 1, 256, &threads) != 0 ||
        parse(argv[3], 8, 4194304, &mem) != 0 || parse(argv[4], 1, 100, &iters) != 0 ||
        parse(argv[5], 1, 64, &par) != 0) {
        fprintf(stderr, "usage: argon2_rate SECONDS THREADS MEMORY_KIB ITERATIONS PARALLELISM\n");
        return 1;
    }
    static const uint8_t salt[16] = "docket-bench-16";
    size_t len = argon2_encodedlen((uint32_t)iters, (uint32_t)mem, (uint32_t)par, sizeof salt, 32,
                                   Argon2_id);
    char *encoded = malloc(len);
    if (!encoded)
        return 1;
    int rc = argon2id_hash_encoded((uint32_t)iters, (uint32_t)mem, (uint32_t)par, PASSWORD,
                                   strlen(PASSWORD), salt, sizeof salt, 32, encoded, len);
    if (rc != ARGON2_OK) {
        fprintf(stderr, "argon2id_hash_encoded: %s\n", argon2_error_message(rc));
        free(encoded);
        return 1;
    }
    /* one lane: libsodium, as Docket (its hash of the same inputs must be libargon2's) */
    bool sodium = par == 1 && sodium_init() >= 0;
    uint8_t expect[32];
    if (sodium && argon2id_hash_raw((uint32_t)iters, (uint32_t)mem, 1, PASSWORD, strlen(PASSWORD),
                                    salt, sizeof salt, expect, sizeof expect) != ARGON2_OK) {
        free(encoded);
        return 1;
    }
    struct worker *w = calloc((size_t)threads, sizeof *w);
    if (!w) {
        free(encoded);
        return 1;
    }
    double start = now_s();
    int started = 0;
    for (long i = 0; i < threads; i++) {
        w[i].encoded = encoded;
        w[i].salt = sodium ? salt : NULL;
        w[i].expect = expect;
        w[i].iters = iters;
        w[i].mem = mem;
        w[i].deadline = start + (double)secs;
        if (pthread_create(&w[i].thread, NULL, work, &w[i]) != 0)
            break;
        started++;
    }
    uint64_t total = 0;
    int error = started == threads ? ARGON2_OK : ARGON2_THREAD_FAIL;
    for (int i = 0; i < started; i++) {
        pthread_join(w[i].thread, NULL);
        total += w[i].count;
        if (w[i].error != ARGON2_OK)
            error = w[i].error;
    }
    double elapsed = now_s() - start;
    free(w);
    free(encoded);
    if (error != ARGON2_OK) {
        fprintf(stderr, "%s: %s\n", sodium ? "crypto_pwhash" : "argon2id_verify",
                argon2_error_message(error));
        return 1;
    }
    printf("{\"library\":\"%s\",\"threads\":%ld,\"memory_kib\":%ld,\"iterations\":%ld,"
           "\"parallelism\":%ld,\"hashes\":%" PRIu64 ",\"seconds\":%.3f,\"rate\":%.2f}\n",
           sodium ? "libsodium" : "libargon2", threads, mem, iters, par, total, elapsed,
           (double)total / elapsed);
    return 0;
}
