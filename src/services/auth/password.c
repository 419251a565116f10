#include "services/auth/password.h"

#include <argon2.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/crypto.h"
#include "core/limiter.h"
#include "core/timeutil.h"
#include "core/trace.h"
#include "core/banned.h"

#define AUTH_SALT_LEN 16
#define AUTH_HASH_LEN 32

#define AUTH_MAX_AREAS    16
#define AUTH_AREA_IDLE_MS 250

/* Argon2 work areas (m KiB each) kept between hashes: a fresh mapping costs the kernel a
 * zero-fill of every page (a visible share of a hash: docs/design/measurements.md), so while
 * logins keep coming the areas of finished hashes are reused (libargon2 wipes an area before
 * giving it back). A reaper thread unmaps them once no hash has finished for AUTH_AREA_IDLE_MS
 * (a quarter of a second: under a login load each area is reused every few tens of ms), so
 * the resident set falls back after a burst. At most `workers` areas are kept: no more hashes
 * run at once. */
struct auth_areas {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int cap, n;
    struct {
        void *p;
        size_t size;
    } idle[AUTH_MAX_AREAS];
    int64_t last_put_ms;
    bool stop;
    pthread_t reaper;
};

struct auth_hasher {
    auth_hasher_options opt;
    dk_limiter *pool;
    char *dummy; /* a real hash of a random password, for dummy verifications */
    /* the dummy is hashed on its own thread, so a start does not wait the hash out; a dummy
     * verification waits for it (the first unknown e-mail, at most a hash's time) */
    pthread_t dummy_thread;
    bool dummy_thread_started, dummy_ready;
    pthread_mutex_t dummy_mu;
    pthread_cond_t dummy_cv;
    struct auth_areas areas;
};

/* Two builds of the same function. libsodium's Argon2id picks SIMD code for the CPU at run time
 * (SSSE3, AVX2, AVX-512F) and takes much less user CPU than Debian's libargon2, which is the
 * portable reference code (docs/design/measurements.md); it computes lanes one after another
 * and wants a 16-byte salt and at least 16 bytes of output. So libsodium computes what it can
 * (one lane, a 16-byte salt, 16+ bytes out: every hash Docket writes with the default
 * parallelism) and libargon2 the rest (p > 1, where its threads give the lanes their
 * parallelism, and PHC strings from elsewhere with other salt or hash lengths). Both give the
 * same bytes for the same inputs (tests/unit/test_password.c checks both ways). */
static pthread_once_t auth_sodium_once = PTHREAD_ONCE_INIT;
static bool auth_sodium_ready;

static void auth_sodium_init(void)
{
    auth_sodium_ready = sodium_init() >= 0;
}

/* Whether libsodium computes this hash. */
static bool auth_sodium_fits(uint32_t m, uint32_t p, size_t saltlen, size_t hashlen)
{
    pthread_once(&auth_sodium_once, auth_sodium_init);
    return auth_sodium_ready && p == 1 && saltlen == crypto_pwhash_argon2id_SALTBYTES &&
           hashlen >= crypto_pwhash_argon2id_BYTES_MIN &&
           (uint64_t)m * 1024 >= crypto_pwhash_argon2id_MEMLIMIT_MIN;
}

/* Argon2id version 1.3 of password with t passes over m KiB, one lane, by libsodium. */
static int auth_sodium_hash(unsigned char *out, size_t outlen, const char *password,
                            const unsigned char *salt, uint32_t t, uint32_t m)
{
    return crypto_pwhash_argon2id(out, outlen, password, strlen(password), salt, t,
                                  (size_t)m * 1024, crypto_pwhash_argon2id_ALG_ARGON2ID13);
}

/* libargon2's allocation callbacks take no context: the hasher whose hash runs on this
 * thread (none: plain mappings). */
static _Thread_local auth_hasher *auth_current;

static void *auth_area_map(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    /* transparent huge pages: the kernel zero-fills a few 2 MiB pages instead of faulting in
     * thousands of 4 KiB ones (cheaper per fresh area: docs/design/measurements.md); advice
     * only */
    (void)madvise(p, n, MADV_HUGEPAGE);
    return p;
}

static int auth_argon2_alloc(uint8_t **mem, size_t n)
{
    auth_hasher *h = auth_current;
    void *p = NULL;
    if (h) {
        struct auth_areas *ar = &h->areas;
        pthread_mutex_lock(&ar->mu);
        for (int i = 0; i < ar->n && !p; i++) {
            if (ar->idle[i].size == n) {
                p = ar->idle[i].p;
                ar->idle[i] = ar->idle[--ar->n];
            }
        }
        pthread_mutex_unlock(&ar->mu);
    }
    if (!p)
        p = auth_area_map(n);
    *mem = p;
    return p ? ARGON2_OK : ARGON2_MEMORY_ALLOCATION_ERROR;
}

static void auth_argon2_free(uint8_t *mem, size_t n)
{
    auth_hasher *h = auth_current;
    if (h) {
        struct auth_areas *ar = &h->areas;
        pthread_mutex_lock(&ar->mu);
        bool kept = !ar->stop && ar->n < ar->cap;
        if (kept) {
            ar->idle[ar->n].p = mem;
            ar->idle[ar->n].size = n;
            ar->n++;
            ar->last_put_ms = dk_mono_ms();
            pthread_cond_signal(&ar->cv);
        }
        pthread_mutex_unlock(&ar->mu);
        if (kept)
            return;
    }
    munmap(mem, n);
}

/* Unmaps every idle area (called with the lock held; drops it meanwhile). */
static void auth_areas_release(struct auth_areas *ar)
{
    while (ar->n > 0) {
        void *p = ar->idle[ar->n - 1].p;
        size_t size = ar->idle[ar->n - 1].size;
        ar->n--;
        pthread_mutex_unlock(&ar->mu);
        munmap(p, size);
        pthread_mutex_lock(&ar->mu);
    }
}

static void *auth_reaper_main(void *arg)
{
    struct auth_areas *ar = arg;
    pthread_mutex_lock(&ar->mu);
    while (!ar->stop) {
        if (ar->n == 0) {
            pthread_cond_wait(&ar->cv, &ar->mu);
            continue;
        }
        int64_t due = ar->last_put_ms + AUTH_AREA_IDLE_MS;
        if (dk_mono_ms() >= due) {
            auth_areas_release(ar);
            continue;
        }
        struct timespec ts = dk_mono_deadline(due - dk_mono_ms() + 1);
        pthread_cond_timedwait(&ar->cv, &ar->mu, &ts);
    }
    auth_areas_release(ar);
    pthread_mutex_unlock(&ar->mu);
    return NULL;
}

static void auth_areas_init(struct auth_areas *ar, int workers)
{
    pthread_mutex_init(&ar->mu, NULL);
    dk_cond_init_monotonic(&ar->cv);
    ar->cap = workers < 1 ? 1 : workers > AUTH_MAX_AREAS ? AUTH_MAX_AREAS : workers;
    if (pthread_create(&ar->reaper, NULL, auth_reaper_main, ar) != 0)
        ar->cap = 0; /* no reaper: keep nothing */
}

static void auth_areas_destroy(struct auth_areas *ar)
{
    pthread_mutex_lock(&ar->mu);
    ar->stop = true;
    pthread_cond_signal(&ar->cv);
    pthread_mutex_unlock(&ar->mu);
    if (ar->cap > 0)
        pthread_join(ar->reaper, NULL);
    pthread_cond_destroy(&ar->cv);
    pthread_mutex_destroy(&ar->mu);
}

static void auth_ctx_init(argon2_context *c, uint32_t t, uint32_t m, uint32_t p)
{
    memset(c, 0, sizeof *c);
    c->t_cost = t;
    c->m_cost = m;
    c->lanes = p;
    c->threads = p;
    c->version = ARGON2_VERSION_13;
    c->allocate_cbk = auth_argon2_alloc;
    c->free_cbk = auth_argon2_free;
    c->flags = ARGON2_DEFAULT_FLAGS;
}

static dk_status auth_hash_raw(const auth_hasher *h, const char *password, char *out, size_t cap)
{
    unsigned char salt[AUTH_SALT_LEN], hash[AUTH_HASH_LEN];
    dk_random_bytes(salt, sizeof salt);
    argon2_context c;
    auth_ctx_init(&c, h->opt.iterations, h->opt.memory_kib, h->opt.parallelism);
    c.out = hash;
    c.outlen = sizeof hash;
    c.pwd = (uint8_t *)(uintptr_t)password;
    c.pwdlen = (uint32_t)strlen(password);
    c.salt = salt;
    c.saltlen = sizeof salt;
    dk_span *sp = dk_span_start("argon2id hash", DK_SPAN_INTERNAL);
    int rc;
    if (auth_sodium_fits(h->opt.memory_kib, h->opt.parallelism, sizeof salt, sizeof hash)) {
        rc = auth_sodium_hash(hash, sizeof hash, password, salt, h->opt.iterations,
                              h->opt.memory_kib) == 0
                 ? ARGON2_OK
                 : ARGON2_MEMORY_ALLOCATION_ERROR;
    } else {
        auth_current = (auth_hasher *)(uintptr_t)h;
        rc = argon2id_ctx(&c);
        auth_current = NULL;
    }
    dk_span_end(sp);
    if (rc != ARGON2_OK)
        return DK_E_INTERNAL;
    char s64[AUTH_SALT_LEN * 2], h64[AUTH_HASH_LEN * 2];
    dk_base64_encode(dk_base64_std, salt, sizeof salt, s64);
    dk_base64_encode(dk_base64_std, hash, sizeof hash, h64);
    int n = snprintf(out, cap, "$argon2id$v=%d$m=%u,t=%u,p=%u$%s$%s", ARGON2_VERSION_13,
                     h->opt.memory_kib, h->opt.iterations, h->opt.parallelism, s64, h64);
    return n > 0 && (size_t)n < cap ? DK_OK : DK_E_INTERNAL;
}

/* Reads an unsigned decimal up to max; advances *p. */
static bool auth_phc_uint(const char **p, uint32_t max, uint32_t *ret)
{
    const char *s = *p;
    uint64_t v = 0;
    if (*s < '0' || *s > '9' || (*s == '0' && s[1] >= '0' && s[1] <= '9'))
        return false;
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (uint64_t)(*s++ - '0');
        if (v > max)
            return false;
    }
    *p = s;
    *ret = (uint32_t)v;
    return true;
}

#define AUTH_PHC_MAX_SALT 64
#define AUTH_PHC_MAX_HASH 64

typedef struct auth_phc {
    uint32_t m, t, p;
    unsigned char salt[AUTH_PHC_MAX_SALT], hash[AUTH_PHC_MAX_HASH];
    size_t saltlen, hashlen;
} auth_phc;

/* Parses "$argon2id$v=19$m=M,t=T,p=P$SALT$HASH" (what libargon2 writes). */
static bool auth_phc_parse(const char *s, auth_phc *r)
{
    static const char head[] = "$argon2id$v=19$m=";
    if (strncmp(s, head, sizeof head - 1) != 0)
        return false;
    s += sizeof head - 1;
    if (!auth_phc_uint(&s, ARGON2_MAX_MEMORY > UINT32_MAX ? UINT32_MAX : ARGON2_MAX_MEMORY,
                       &r->m) ||
        strncmp(s, ",t=", 3) != 0)
        return false;
    s += 3;
    if (!auth_phc_uint(&s, ARGON2_MAX_TIME, &r->t) || strncmp(s, ",p=", 3) != 0)
        return false;
    s += 3;
    if (!auth_phc_uint(&s, ARGON2_MAX_LANES, &r->p) || *s != '$')
        return false;
    const char *salt = ++s;
    const char *dollar = strchr(salt, '$');
    if (!dollar)
        return false;
    const char *hash = dollar + 1;
    return r->m >= ARGON2_MIN_MEMORY && r->m >= 8 * r->p && r->t >= ARGON2_MIN_TIME &&
           r->p >= ARGON2_MIN_LANES &&
           dk_base64_decode(dk_base64_std, salt, (size_t)(dollar - salt), r->salt, sizeof r->salt,
                            &r->saltlen) &&
           r->saltlen >= ARGON2_MIN_SALT_LENGTH &&
           dk_base64_decode(dk_base64_std, hash, strlen(hash), r->hash, sizeof r->hash,
                            &r->hashlen) &&
           r->hashlen >= ARGON2_MIN_OUTLEN;
}

static size_t auth_encoded_len(const auth_hasher *h)
{
    return argon2_encodedlen(h->opt.iterations, h->opt.memory_kib, h->opt.parallelism,
                             AUTH_SALT_LEN, AUTH_HASH_LEN, Argon2_id);
}

static void auth_dummy_make(auth_hasher *h)
{
    size_t cap = auth_encoded_len(h);
    char *d = dk_malloc(cap);
    unsigned char rnd[24];
    char pw[64];
    dk_random_bytes(rnd, sizeof rnd);
    dk_hex(rnd, sizeof rnd, pw);
    if (auth_hash_raw(h, pw, d, cap) != DK_OK)
        d[0] = '\0';
    pthread_mutex_lock(&h->dummy_mu);
    h->dummy = d;
    h->dummy_ready = true;
    pthread_cond_broadcast(&h->dummy_cv);
    pthread_mutex_unlock(&h->dummy_mu);
}

static void *auth_dummy_main(void *arg)
{
    auth_dummy_make(arg);
    return NULL;
}

auth_hasher *auth_hasher_new(const auth_hasher_options *opt)
{
    auth_hasher *h = DK_NEW(auth_hasher);
    h->opt = *opt;
    h->pool = dk_limiter_new(opt->workers, opt->queue, opt->max_wait_ms);
    auth_areas_init(&h->areas, opt->workers);
    pthread_mutex_init(&h->dummy_mu, NULL);
    pthread_cond_init(&h->dummy_cv, NULL);
    h->dummy_thread_started = pthread_create(&h->dummy_thread, NULL, auth_dummy_main, h) == 0;
    if (!h->dummy_thread_started)
        auth_dummy_make(h);
    return h;
}

dk_limiter *auth_hasher_pool(auth_hasher *h)
{
    return h->pool;
}

/* The dummy hash, once made. */
static const char *auth_dummy(auth_hasher *h)
{
    pthread_mutex_lock(&h->dummy_mu);
    while (!h->dummy_ready)
        pthread_cond_wait(&h->dummy_cv, &h->dummy_mu);
    pthread_mutex_unlock(&h->dummy_mu);
    return h->dummy;
}

void auth_hasher_free(auth_hasher *h)
{
    if (!h)
        return;
    if (h->dummy_thread_started)
        pthread_join(h->dummy_thread, NULL);
    dk_limiter_free(h->pool);
    auth_areas_destroy(&h->areas);
    pthread_cond_destroy(&h->dummy_cv);
    pthread_mutex_destroy(&h->dummy_mu);
    dk_free(h->dummy);
    dk_free(h);
}

dk_status auth_password_hash(auth_hasher *h, dk_arena *a, const char *password, char **ret_encoded)
{
    dk_status st = dk_limiter_enter(h->pool);
    if (st != DK_OK)
        return st;
    size_t cap = auth_encoded_len(h);
    char *out = dk_arena_alloc(a, cap);
    st = auth_hash_raw(h, password, out, cap);
    dk_limiter_leave(h->pool);
    if (st == DK_OK)
        *ret_encoded = out;
    return st;
}

/* The libargon2 or libsodium status of checking password against a parsed PHC string. */
static int auth_phc_verify(auth_hasher *h, const auth_phc *phc, const char *password)
{
    unsigned char out[AUTH_PHC_MAX_HASH];
    int rc;
    dk_span *sp = dk_span_start("argon2id verify", DK_SPAN_INTERNAL);
    if (auth_sodium_fits(phc->m, phc->p, phc->saltlen, phc->hashlen)) {
        if (auth_sodium_hash(out, phc->hashlen, password, phc->salt, phc->t, phc->m) != 0)
            rc = ARGON2_MEMORY_ALLOCATION_ERROR;
        else
            rc = dk_ct_equal(out, phc->hash, phc->hashlen) ? ARGON2_OK : ARGON2_VERIFY_MISMATCH;
        sodium_memzero(out, sizeof out);
    } else {
        argon2_context c;
        auth_ctx_init(&c, phc->t, phc->m, phc->p);
        c.out = out;
        c.outlen = (uint32_t)phc->hashlen;
        c.pwd = (uint8_t *)(uintptr_t)password;
        c.pwdlen = (uint32_t)strlen(password);
        c.salt = (uint8_t *)(uintptr_t)phc->salt;
        c.saltlen = (uint32_t)phc->saltlen;
        auth_current = h;
        rc = argon2_verify_ctx(&c, (const char *)phc->hash, Argon2_id);
        auth_current = NULL;
    }
    dk_span_end(sp);
    return rc;
}

dk_status auth_password_verify(auth_hasher *h, const char *encoded, const char *password)
{
    dk_status st = dk_limiter_enter(h->pool);
    if (st != DK_OK)
        return st;
    auth_phc phc;
    int rc =
        auth_phc_parse(encoded, &phc) ? auth_phc_verify(h, &phc, password) : ARGON2_DECODING_FAIL;
    dk_limiter_leave(h->pool);
    if (rc == ARGON2_OK)
        return DK_OK;
    if (rc == ARGON2_VERIFY_MISMATCH)
        return DK_E_UNAUTHORIZED;
    return DK_E_INTERNAL;
}

dk_status auth_password_dummy_verify(auth_hasher *h, const char *password)
{
    const char *dummy = auth_dummy(h);
    if (!dummy[0])
        return DK_E_UNAUTHORIZED;
    dk_status st = auth_password_verify(h, dummy, password);
    if (st == DK_OK || st == DK_E_UNAUTHORIZED)
        return DK_E_UNAUTHORIZED;
    return st;
}
