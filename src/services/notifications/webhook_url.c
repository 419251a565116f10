/* webhook_url.c — webhook URL checks: the URL read by the HTTP client port (split_url), its
 * host resolved through the resolver port, and the private-address classification. */
#include "services/notifications/webhook_url.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "core/str.h"
#include "ports/http_client.h"
#include "ports/resolver.h"
#include "core/banned.h"

/* --- address classification ------------------------------------------------------------------ */

static bool webhook_v4_private(const unsigned char b[4])
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

static bool webhook_zero(const unsigned char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

static bool webhook_v6_private(const unsigned char b[16])
{
    static const unsigned char nat64[12] = {0x00, 0x64, 0xff, 0x9b};
    static const unsigned char nat64_local[6] = {0x00, 0x64, 0xff, 0x9b, 0x00, 0x01};
    static const unsigned char teredo[4] = {0x20, 0x01, 0x00, 0x00};
    if (memcmp(b, nat64_local, sizeof nat64_local) == 0) /* 64:ff9b:1::/48 local-use NAT64 */
        return true;
    if (memcmp(b, teredo, sizeof teredo) == 0) /* 2001::/32 Teredo: tunnels to anywhere */
        return true;
    if (webhook_zero(b, 10) && b[10] == 0xff && b[11] == 0xff) /* ::ffff:a.b.c.d mapped */
        return webhook_v4_private(b + 12);
    if (webhook_zero(b, 12)) /* ::a.b.c.d compatible, which covers :: and ::1 (0.0.0.0/8) */
        return webhook_v4_private(b + 12);
    if (memcmp(b, nat64, sizeof nat64) == 0) /* 64:ff9b::a.b.c.d NAT64 */
        return webhook_v4_private(b + 12);
    if (b[0] == 0x20 && b[1] == 0x02) /* 2002:aabb:ccdd::/48 6to4 */
        return webhook_v4_private(b + 2);
    return (b[0] & 0xfe) == 0xfc ||                   /* fc00::/7 unique local */
           (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) || /* fe80::/10 link-local */
           (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) || /* fec0::/10 site-local (deprecated) */
           b[0] == 0xff;                              /* ff00::/8 multicast */
}

bool webhook_addr_is_private(const struct sockaddr *sa)
{
    if (!sa)
        return true;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        unsigned char b[4];
        memcpy(b, &in->sin_addr, 4);
        return webhook_v4_private(b);
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        return webhook_v6_private(in6->sin6_addr.s6_addr);
    }
    return true;
}

/* --- URL parsing ------------------------------------------------------------------------------ */

static dk_status webhook_reason_set(dk_status st, char *reason, size_t cap, const char *msg)
{
    if (reason && cap > 0)
        dk_strlcpy(reason, msg, cap);
    return st;
}

static void webhook_addr_text(const struct sockaddr *sa, char out[NT_WEBHOOK_ADDR_LEN])
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
static dk_status webhook_parse(const webhook_net *net, const char *url, webhook_target *t,
                               struct sockaddr_storage *lit, char *reason, size_t cap)
{
    if (!url || !*url)
        return webhook_reason_set(DK_E_VALIDATION, reason, cap,
                                  "must be an absolute http or https URL");
    size_t len = strlen(url);
    if (len > NT_WEBHOOK_URL_MAX)
        return webhook_reason_set(DK_E_VALIDATION, reason, cap,
                                  "must be at most 2048 characters long");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c >= 0x7f)
            return webhook_reason_set(DK_E_VALIDATION, reason, cap,
                                      "must not contain spaces, control or non-ASCII characters "
                                      "(percent-encode them)");
    }
    dk_url_parts u;
    dk_status st = net->http->split_url(url, &u);
    if (st == DK_E_INTERNAL)
        return webhook_reason_set(DK_E_INTERNAL, reason, cap, "out of memory");
    if (u.error == DK_URL_BAD_PORT)
        return webhook_reason_set(DK_E_VALIDATION, reason, cap, "must have a valid port (1-65535)");
    if (u.error == DK_URL_NO_HOST)
        return webhook_reason_set(DK_E_VALIDATION, reason, cap, "must include a host");
    if (u.error == DK_URL_BAD_SCHEME)
        return webhook_reason_set(DK_E_VALIDATION, reason, cap, "must use http or https");
    if (u.error != DK_URL_OK)
        return webhook_reason_set(DK_E_VALIDATION, reason, cap,
                                  "must be an absolute http or https URL");
    if (!dk_str_ieq(u.scheme, "http") && !dk_str_ieq(u.scheme, "https"))
        return webhook_reason_set(DK_E_VALIDATION, reason, cap, "must use http or https");
    if (u.userinfo)
        return webhook_reason_set(DK_E_VALIDATION, reason, cap,
                                  "must not contain user information (user:password@)");
    if (!u.host[0])
        return webhook_reason_set(DK_E_VALIDATION, reason, cap, "must include a host");
    if (u.zone)
        return webhook_reason_set(DK_E_VALIDATION, reason, cap,
                                  "must not contain an IPv6 zone identifier");
    if (u.port < 1 || u.port > 65535)
        return webhook_reason_set(DK_E_VALIDATION, reason, cap, "must have a valid port (1-65535)");
    /* an IPv6 literal comes back in brackets */
    const char *host = u.host, *h = host;
    size_t hl = strlen(host);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl > 253)
        return webhook_reason_set(DK_E_VALIDATION, reason, cap,
                                  "must have a valid host name or address");
    memcpy(t->host, h, hl);
    t->host[hl] = '\0';
    t->port = u.port;
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
        return webhook_reason_set(DK_E_VALIDATION, reason, cap,
                                  "must have a valid host name or address");
    }
    return DK_OK;
}

dk_status webhook_resolve(const webhook_net *net, const char *url, bool allow_private,
                          int64_t timeout_ms, webhook_target *ret, char *reason, size_t cap)
{
    webhook_target t;
    memset(&t, 0, sizeof t);
    struct sockaddr_storage lit;
    dk_status st = webhook_parse(net, url, &t, &lit, reason, cap);
    if (st != DK_OK)
        return st;
    if (t.literal) {
        if (!allow_private && webhook_addr_is_private((const struct sockaddr *)&lit))
            return webhook_reason_set(DK_E_FORBIDDEN, reason, cap, "address not allowed");
        webhook_addr_text((const struct sockaddr *)&lit, t.addrs[0]);
        t.naddrs = 1;
        *ret = t;
        return DK_OK;
    }
    dk_resolved r;
    st = net->resolver->resolve(net->resolver_h, t.host, timeout_ms > 0 ? timeout_ms : 1, &r);
    if (st == DK_E_UNAVAILABLE)
        return webhook_reason_set(DK_E_UNAVAILABLE, reason, cap, "name resolution is busy");
    /* every address must be allowed (one that did not fit counts as not allowed); the
     * connection is pinned to the first IPv4/IPv6 ones */
    bool any_private = st == DK_OK && r.more > 0;
    for (int i = 0; st == DK_OK && i < r.n; i++) {
        const struct sockaddr *sa = (const struct sockaddr *)&r.addrs[i];
        if (webhook_addr_is_private(sa))
            any_private = true;
        if ((sa->sa_family == AF_INET || sa->sa_family == AF_INET6) &&
            t.naddrs < NT_WEBHOOK_MAX_ADDRS)
            webhook_addr_text(sa, t.addrs[t.naddrs++]);
    }
    if (st != DK_OK || t.naddrs == 0)
        return webhook_reason_set(DK_E_UNAVAILABLE, reason, cap, "does not resolve");
    if (!allow_private && any_private)
        return webhook_reason_set(DK_E_FORBIDDEN, reason, cap, "address not allowed");
    *ret = t;
    return DK_OK;
}

dk_status webhook_url_check(const webhook_net *net, const char *url, bool allow_private,
                            char *reason, size_t cap)
{
    webhook_target t;
    char why[160] = "";
    dk_status st =
        webhook_resolve(net, url, allow_private, NT_WEBHOOK_CHECK_TIMEOUT, &t, why, sizeof why);
    if (st == DK_OK || st == DK_E_INTERNAL)
        return st == DK_OK ? DK_OK : webhook_reason_set(st, reason, cap, why);
    if (st == DK_E_FORBIDDEN)
        return webhook_reason_set(DK_E_VALIDATION, reason, cap,
                                  "resolves to an address that is not allowed (loopback, "
                                  "private, link-local, multicast or otherwise not public)");
    if (st == DK_E_UNAVAILABLE && strcmp(why, "does not resolve") == 0)
        return webhook_reason_set(DK_E_VALIDATION, reason, cap, "host does not resolve");
    if (st == DK_E_UNAVAILABLE)
        return webhook_reason_set(DK_E_UNAVAILABLE, reason, cap,
                                  "could not be checked now: name resolution is busy");
    return webhook_reason_set(st, reason, cap, why);
}
