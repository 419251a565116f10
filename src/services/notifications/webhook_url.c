/* webhook_url.c — webhook URL checks: parsing with libcurl's URL API, bounded name resolution
 * on a helper thread, and the private-address classification. */
#include "services/notifications/webhook_url.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <curl/curl.h>

#include "core/alloc.h"
#include "core/common.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "core/banned.h"

/* --- address classification ------------------------------------------------------------------ */

static bool nt_v4_private(const unsigned char b[4])
{
    return b[0] == 0 ||                               /* 0.0.0.0/8 "this network" */
           b[0] == 10 ||                              /* 10/8 */
           (b[0] == 100 && (b[1] & 0xc0) == 64) ||    /* 100.64/10 CGNAT */
           b[0] == 127 ||                             /* 127/8 loopback */
           (b[0] == 169 && b[1] == 254) ||            /* 169.254/16 link-local */
           (b[0] == 172 && (b[1] & 0xf0) == 16) ||    /* 172.16/12 */
           (b[0] == 192 && b[1] == 0 && b[2] == 0) || /* 192.0.0/24 IETF protocol assignments */
           (b[0] == 192 && b[1] == 168) ||            /* 192.168/16 */
           (b[0] == 198 && (b[1] & 0xfe) == 18) ||    /* 198.18/15 benchmarking */
           b[0] >= 224;                               /* 224/4 multicast, 240/4, broadcast */
}

static bool nt_zero(const unsigned char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

static bool nt_v6_private(const unsigned char b[16])
{
    static const unsigned char nat64[12] = {0x00, 0x64, 0xff, 0x9b};
    static const unsigned char nat64_local[6] = {0x00, 0x64, 0xff, 0x9b, 0x00, 0x01};
    static const unsigned char teredo[4] = {0x20, 0x01, 0x00, 0x00};
    if (memcmp(b, nat64_local, sizeof nat64_local) == 0) /* 64:ff9b:1::/48 local-use NAT64 */
        return true;
    if (memcmp(b, teredo, sizeof teredo) == 0) /* 2001::/32 Teredo: tunnels to anywhere */
        return true;
    if (nt_zero(b, 10) && b[10] == 0xff && b[11] == 0xff) /* ::ffff:a.b.c.d mapped */
        return nt_v4_private(b + 12);
    if (nt_zero(b, 12)) /* ::a.b.c.d compatible, which covers :: and ::1 (0.0.0.0/8) */
        return nt_v4_private(b + 12);
    if (memcmp(b, nat64, sizeof nat64) == 0) /* 64:ff9b::a.b.c.d NAT64 */
        return nt_v4_private(b + 12);
    if (b[0] == 0x20 && b[1] == 0x02) /* 2002:aabb:ccdd::/48 6to4 */
        return nt_v4_private(b + 2);
    return (b[0] & 0xfe) == 0xfc ||                   /* fc00::/7 unique local */
           (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) || /* fe80::/10 link-local */
           (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) || /* fec0::/10 site-local (deprecated) */
           b[0] == 0xff;                              /* ff00::/8 multicast */
}

bool nt_addr_is_private(const struct sockaddr *sa)
{
    if (!sa)
        return true;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        unsigned char b[4];
        memcpy(b, &in->sin_addr, 4);
        return nt_v4_private(b);
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        return nt_v6_private(in6->sin6_addr.s6_addr);
    }
    return true;
}

/* --- bounded resolution -----------------------------------------------------------------------
 * getaddrinfo has no timeout of its own, so it runs on a detached helper thread; the caller
 * waits at most its timeout and then walks away. The lookup record is shared by reference
 * count: whichever of the two finishes last frees it. */

static atomic_int nt_lookups_running;

typedef struct nt_lookup {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int refs;
    bool done;
    int gai_rc;
    bool any_private;
    int n;
    struct sockaddr_storage addrs[NT_WEBHOOK_MAX_ADDRS];
    char host[256];
} nt_lookup;

static void nt_lookup_unref(nt_lookup *l)
{
    pthread_mutex_lock(&l->lock);
    int left = --l->refs;
    pthread_mutex_unlock(&l->lock);
    if (left > 0)
        return;
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->lock);
    dk_free(l);
}

static size_t nt_sa_len(const struct sockaddr *sa)
{
    return sa->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
}

static void *nt_lookup_run(void *arg)
{
    nt_lookup *l = arg;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(l->host, NULL, &hints, &res);
    pthread_mutex_lock(&l->lock);
    l->gai_rc = rc;
    for (struct addrinfo *ai = rc == 0 ? res : NULL; ai; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) {
            l->any_private = true;
            continue;
        }
        if (nt_addr_is_private(ai->ai_addr))
            l->any_private = true;
        bool dup = false;
        for (int i = 0; i < l->n && !dup; i++)
            dup = memcmp(&l->addrs[i], ai->ai_addr, nt_sa_len(ai->ai_addr)) == 0;
        if (!dup && l->n < NT_WEBHOOK_MAX_ADDRS)
            memcpy(&l->addrs[l->n++], ai->ai_addr, nt_sa_len(ai->ai_addr));
    }
    l->done = true;
    pthread_cond_signal(&l->cond);
    pthread_mutex_unlock(&l->lock);
    if (res)
        freeaddrinfo(res);
    atomic_fetch_sub(&nt_lookups_running, 1);
    nt_lookup_unref(l);
    return NULL;
}

/* Starts resolving host on a helper thread; *ret holds the caller's reference (wait with
 * nt_lookup_wait, then nt_lookup_unref). DK_E_UNAVAILABLE when the lookup could not even start
 * (NT_WEBHOOK_MAX_LOOKUPS running, or no thread). */
static dk_status nt_lookup_start(const char *host, nt_lookup **ret)
{
    if (atomic_fetch_add(&nt_lookups_running, 1) >= NT_WEBHOOK_MAX_LOOKUPS) {
        atomic_fetch_sub(&nt_lookups_running, 1);
        return DK_E_UNAVAILABLE;
    }
    nt_lookup *l = DK_NEW(nt_lookup);
    pthread_mutex_init(&l->lock, NULL);
    dk_cond_init_monotonic(&l->cond);
    l->refs = 2;
    dk_strlcpy(l->host, host, sizeof l->host);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    /* the helper takes no process signals (they belong to the main thread's sigwait) */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    int rc = pthread_create(&t, &attr, nt_lookup_run, l);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        atomic_fetch_sub(&nt_lookups_running, 1);
        l->refs = 1;
        nt_lookup_unref(l);
        return DK_E_UNAVAILABLE;
    }
    *ret = l;
    return DK_OK;
}

/* Waits for l until timeout_ms has passed; true when it finished. */
static bool nt_lookup_wait(nt_lookup *l, int64_t timeout_ms)
{
    struct timespec deadline = dk_mono_deadline(timeout_ms);
    pthread_mutex_lock(&l->lock);
    while (!l->done) {
        if (pthread_cond_timedwait(&l->cond, &l->lock, &deadline) != 0 && !l->done)
            break; /* timed out */
    }
    bool done = l->done;
    pthread_mutex_unlock(&l->lock);
    return done;
}

/* --- URL parsing ------------------------------------------------------------------------------ */

static dk_status nt_reason_set(dk_status st, char *reason, size_t cap, const char *msg)
{
    if (reason && cap > 0)
        dk_strlcpy(reason, msg, cap);
    return st;
}

/* True when curl_url_get found the part (the text is freed). */
static bool nt_has_part(CURLU *u, CURLUPart part)
{
    char *s = NULL;
    CURLUcode rc = curl_url_get(u, part, &s, 0);
    curl_free(s);
    return rc == CURLUE_OK;
}

static void nt_addr_text(const struct sockaddr *sa, char out[NT_WEBHOOK_ADDR_LEN])
{
    char buf[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
        snprintf(out, NT_WEBHOOK_ADDR_LEN, "%s", buf);
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
        snprintf(out, NT_WEBHOOK_ADDR_LEN, "[%s]", buf);
    }
}

/* Parses and checks the URL itself (no resolution): fills host, port, literal. */
static dk_status nt_parse(const char *url, nt_webhook_target *t, struct sockaddr_storage *lit,
                          char *reason, size_t cap)
{
    if (!url || !*url)
        return nt_reason_set(DK_E_VALIDATION, reason, cap, "must be an absolute http or https URL");
    size_t len = strlen(url);
    if (len > NT_WEBHOOK_URL_MAX)
        return nt_reason_set(DK_E_VALIDATION, reason, cap, "must be at most 2048 characters long");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c >= 0x7f)
            return nt_reason_set(DK_E_VALIDATION, reason, cap,
                                 "must not contain spaces, control or non-ASCII characters "
                                 "(percent-encode them)");
    }
    CURLU *u = curl_url();
    if (!u)
        return nt_reason_set(DK_E_INTERNAL, reason, cap, "out of memory");
    dk_status st = DK_OK;
    char *scheme = NULL, *host = NULL, *port = NULL;
    CURLUcode rc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (rc == CURLUE_BAD_PORT_NUMBER) {
        st = nt_reason_set(DK_E_VALIDATION, reason, cap, "must have a valid port (1-65535)");
        goto out;
    }
    if (rc == CURLUE_NO_HOST) {
        st = nt_reason_set(DK_E_VALIDATION, reason, cap, "must include a host");
        goto out;
    }
    if (rc == CURLUE_UNSUPPORTED_SCHEME) {
        st = nt_reason_set(DK_E_VALIDATION, reason, cap, "must use http or https");
        goto out;
    }
    if (rc != CURLUE_OK || curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
        st = nt_reason_set(DK_E_VALIDATION, reason, cap, "must be an absolute http or https URL");
        goto out;
    }
    if (!dk_str_ieq(scheme, "http") && !dk_str_ieq(scheme, "https")) {
        st = nt_reason_set(DK_E_VALIDATION, reason, cap, "must use http or https");
        goto out;
    }
    if (nt_has_part(u, CURLUPART_USER) || nt_has_part(u, CURLUPART_PASSWORD) ||
        nt_has_part(u, CURLUPART_OPTIONS)) {
        st = nt_reason_set(DK_E_VALIDATION, reason, cap,
                           "must not contain user information (user:password@)");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host[0]) {
        st = nt_reason_set(DK_E_VALIDATION, reason, cap, "must include a host");
        goto out;
    }
    if (nt_has_part(u, CURLUPART_ZONEID)) {
        st =
            nt_reason_set(DK_E_VALIDATION, reason, cap, "must not contain an IPv6 zone identifier");
        goto out;
    }
    int64_t pn = 0;
    if (curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK ||
        !dk_parse_i64(port, 1, 65535, &pn)) {
        st = nt_reason_set(DK_E_VALIDATION, reason, cap, "must have a valid port (1-65535)");
        goto out;
    }
    /* an IPv6 literal comes back in brackets */
    const char *h = host;
    size_t hl = strlen(host);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl > 253) {
        st = nt_reason_set(DK_E_VALIDATION, reason, cap, "must have a valid host name or address");
        goto out;
    }
    memcpy(t->host, h, hl);
    t->host[hl] = '\0';
    t->port = (int)pn;
    memset(lit, 0, sizeof *lit);
    struct sockaddr_in *in = (struct sockaddr_in *)lit;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)lit;
    if (inet_pton(AF_INET, t->host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        t->literal = true;
    } else if (inet_pton(AF_INET6, t->host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        t->literal = true;
    } else if (h != host) {
        st = nt_reason_set(DK_E_VALIDATION, reason, cap, "must have a valid host name or address");
        goto out;
    }
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return st;
}

dk_status nt_webhook_resolve(const char *url, bool allow_private, int64_t timeout_ms,
                             nt_webhook_target *ret, char *reason, size_t cap)
{
    nt_webhook_target t;
    memset(&t, 0, sizeof t);
    struct sockaddr_storage lit;
    dk_status st = nt_parse(url, &t, &lit, reason, cap);
    if (st != DK_OK)
        return st;
    if (t.literal) {
        if (!allow_private && nt_addr_is_private((const struct sockaddr *)&lit))
            return nt_reason_set(DK_E_FORBIDDEN, reason, cap, "address not allowed");
        nt_addr_text((const struct sockaddr *)&lit, t.addrs[0]);
        t.naddrs = 1;
        *ret = t;
        return DK_OK;
    }
    nt_lookup *l = NULL;
    if (nt_lookup_start(t.host, &l) != DK_OK)
        return nt_reason_set(DK_E_UNAVAILABLE, reason, cap, "name resolution is busy");
    bool done = nt_lookup_wait(l, timeout_ms > 0 ? timeout_ms : 1);
    /* done: the helper no longer writes; read without the lock */
    if (!done || l->gai_rc != 0 || l->n == 0)
        st = nt_reason_set(DK_E_UNAVAILABLE, reason, cap, "does not resolve");
    else if (!allow_private && l->any_private)
        st = nt_reason_set(DK_E_FORBIDDEN, reason, cap, "address not allowed");
    else {
        for (int i = 0; i < l->n; i++)
            nt_addr_text((const struct sockaddr *)&l->addrs[i], t.addrs[i]);
        t.naddrs = l->n;
        *ret = t;
    }
    nt_lookup_unref(l);
    return st;
}

dk_status nt_webhook_url_check(const char *url, bool allow_private, char *reason, size_t cap)
{
    nt_webhook_target t;
    char why[160] = "";
    dk_status st =
        nt_webhook_resolve(url, allow_private, NT_WEBHOOK_CHECK_TIMEOUT, &t, why, sizeof why);
    if (st == DK_OK || st == DK_E_INTERNAL)
        return st == DK_OK ? DK_OK : nt_reason_set(st, reason, cap, why);
    if (st == DK_E_FORBIDDEN)
        return nt_reason_set(DK_E_VALIDATION, reason, cap,
                             "resolves to an address that is not allowed (loopback, "
                             "private, link-local, multicast or otherwise not public)");
    if (st == DK_E_UNAVAILABLE && strcmp(why, "does not resolve") == 0)
        return nt_reason_set(DK_E_VALIDATION, reason, cap, "host does not resolve");
    if (st == DK_E_UNAVAILABLE)
        return nt_reason_set(DK_E_UNAVAILABLE, reason, cap,
                             "could not be checked now: name resolution is busy");
    return nt_reason_set(st, reason, cap, why);
}
