/* redis_url.c — redis:// and rediss:// URLs, their TLS context, error replies and the SIGPIPE
 * guard, shared by the Redis adapters (connections: redis_conn.c). */
#include "adapters/redis_url.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "core/alloc.h"
#include "core/str.h"
#include "core/banned.h"

/* --- URL ------------------------------------------------------------------------------------- */

/* Percent-decodes s[0..n) into a new string; NULL when malformed or when it would hold a NUL. */
static char *redis_url_pct_decode(const char *s, size_t n, size_t *ret_len)
{
    char *out = dk_malloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[o++] = s[i];
            continue;
        }
        int hi = i + 2 < n ? dk_hex_digit(s[i + 1]) : -1;
        int lo = i + 2 < n ? dk_hex_digit(s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            explicit_bzero(out, n + 1);
            dk_free(out);
            return NULL;
        }
        out[o++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[o] = '\0';
    if (ret_len)
        *ret_len = o;
    return out;
}

/* Decimal digits only, within [min, max]. */
static bool redis_url_parse_uint(const char *s, size_t n, long min, long max, long *ret)
{
    if (n == 0 || n > 10)
        return false;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v < min || v > max)
        return false;
    *ret = v;
    return true;
}

static dk_status redis_url_parse(const char *url, dk_redis_url *u)
{
    static const char scheme[] = "redis://", tls_scheme[] = "rediss://";
    const char *auth;
    if (url && strncasecmp(url, scheme, sizeof scheme - 1) == 0) {
        auth = url + sizeof scheme - 1;
    } else if (url && strncasecmp(url, tls_scheme, sizeof tls_scheme - 1) == 0) {
        auth = url + sizeof tls_scheme - 1;
        u->tls = true;
    } else {
        return DK_E_VALIDATION;
    }
    const char *auth_end = auth + strcspn(auth, "/?#");
    if (*auth_end == '?' || *auth_end == '#')
        return DK_E_VALIDATION;

    /* userinfo ends at the last '@' of the authority (an unencoded '@' in a password works) */
    const char *at = NULL;
    for (const char *p = auth; p < auth_end; p++)
        if (*p == '@')
            at = p;
    const char *host = auth;
    if (at) {
        const char *colon = memchr(auth, ':', (size_t)(at - auth));
        const char *pw = colon ? colon + 1 : auth;
        if (colon && colon > auth) {
            u->user = redis_url_pct_decode(auth, (size_t)(colon - auth), NULL);
            if (!u->user)
                return DK_E_VALIDATION;
        }
        if (at > pw) {
            u->password = redis_url_pct_decode(pw, (size_t)(at - pw), &u->password_len);
            if (!u->password)
                return DK_E_VALIDATION;
        }
        host = at + 1;
    }

    const char *host_end, *port = NULL;
    if (*host == '[') {
        const char *close = memchr(host, ']', (size_t)(auth_end - host));
        if (!close || close == host + 1)
            return DK_E_VALIDATION;
        u->host = dk_strndup(host + 1, (size_t)(close - host - 1));
        host_end = close + 1;
        if (host_end < auth_end) {
            if (*host_end != ':')
                return DK_E_VALIDATION;
            port = host_end + 1;
        }
    } else {
        const char *colon = memchr(host, ':', (size_t)(auth_end - host));
        host_end = colon ? colon : auth_end;
        if (host_end == host)
            return DK_E_VALIDATION;
        u->host = dk_strndup(host, (size_t)(host_end - host));
        if (colon)
            port = colon + 1;
    }
    long v = DK_REDIS_DEFAULT_PORT;
    if (port && !redis_url_parse_uint(port, (size_t)(auth_end - port), 1, 65535, &v))
        return DK_E_VALIDATION;
    u->port = (int)v;

    v = 0;
    if (*auth_end == '/' && auth_end[1] != '\0' &&
        !redis_url_parse_uint(auth_end + 1, strlen(auth_end + 1), 0, INT_MAX, &v))
        return DK_E_VALIDATION;
    u->db = (int)v;
    return DK_OK;
}

dk_status dk_redis_url_parse(const char *url, dk_redis_url *ret)
{
    if (!ret)
        return DK_E_INTERNAL;
    dk_redis_url u = {0};
    dk_status st = redis_url_parse(url, &u);
    if (st != DK_OK) {
        dk_redis_url_release(&u);
        return st;
    }
    *ret = u;
    return DK_OK;
}

void dk_redis_url_release(dk_redis_url *u)
{
    if (!u)
        return;
    if (u->password) {
        explicit_bzero(u->password, u->password_len);
        dk_free(u->password);
    }
    dk_free(u->user);
    dk_free(u->host);
    SSL_CTX_free(u->tls_ctx);
    memset(u, 0, sizeof *u);
}

/* --- TLS ------------------------------------------------------------------------------------- */

dk_status dk_redis_url_tls(dk_redis_url *u, const char *ca_file)
{
    if (!u)
        return DK_E_INTERNAL;
    if (!u->tls || u->tls_ctx)
        return DK_OK;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return DK_E_INTERNAL;
    dk_status st = DK_OK;
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
        st = DK_E_INTERNAL;
    else if (ca_file && *ca_file) {
        if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1)
            st = DK_E_VALIDATION;
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        st = DK_E_INTERNAL;
    }
    ERR_clear_error(); /* the error queue is per thread: leave nothing behind */
    if (st != DK_OK) {
        SSL_CTX_free(ctx);
        return st;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    u->tls_ctx = ctx;
    return DK_OK;
}

/* --- SIGPIPE --------------------------------------------------------------------------------- */

void dk_redis_sigpipe_block(dk_redis_sigpipe *sp)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &sp->old);
}

void dk_redis_sigpipe_restore(dk_redis_sigpipe *sp, bool io_failed)
{
    if (sigismember(&sp->old, SIGPIPE))
        return; /* the caller blocks SIGPIPE itself: leave its pending set alone */
    if (io_failed) {
        sigset_t set, pending;
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
            const struct timespec zero = {0, 0};
            while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR) {
            }
        }
    }
    pthread_sigmask(SIG_SETMASK, &sp->old, NULL);
}

/* --- replies ---------------------------------------------------------------------------------- */

dk_status dk_redis_error_status(const redisReply *r)
{
    static const char *const transient[] = {"LOADING",  "BUSY ",    "MASTERDOWN",
                                            "TRYAGAIN", "READONLY", "CLUSTERDOWN"};
    for (size_t i = 0; i < sizeof transient / sizeof transient[0]; i++)
        if (r->str && strncmp(r->str, transient[i], strlen(transient[i])) == 0)
            return DK_E_UNAVAILABLE;
    return DK_E_INTERNAL;
}
