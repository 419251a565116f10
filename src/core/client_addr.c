/* client_addr.c — trusted proxy ranges and the forwarded-header walk (see client_addr.h). */
#include "core/client_addr.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/banned.h"

#define CA_MAX_HOPS 64 /* entries of a header looked at, from the right */

static const unsigned char client_addr_v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* An address in s[0..n), IPv4 (as ::ffff:a.b.c.d) or IPv6, into out. */
static bool client_addr_parse_ip(const char *s, size_t n, unsigned char out[16])
{
    char buf[DK_IP_STRLEN];
    if (n == 0 || n >= sizeof buf)
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    unsigned char v4[4];
    if (inet_pton(AF_INET, buf, v4) == 1) {
        memcpy(out, client_addr_v4_prefix, 12);
        memcpy(out + 12, v4, 4);
        return true;
    }
    return strchr(buf, ':') && inet_pton(AF_INET6, buf, out) == 1;
}

static bool client_addr_is_v4(const unsigned char a[16])
{
    return memcmp(a, client_addr_v4_prefix, 12) == 0;
}

static void client_addr_format(const unsigned char a[16], char out[DK_IP_STRLEN])
{
    if (client_addr_is_v4(a))
        inet_ntop(AF_INET, a + 12, out, DK_IP_STRLEN);
    else
        inet_ntop(AF_INET6, a, out, DK_IP_STRLEN);
}

static void client_addr_mask(unsigned char a[16], int bits)
{
    for (int i = 0; i < 16; i++) {
        int keep = bits - i * 8;
        if (keep >= 8)
            continue;
        a[i] &= keep <= 0 ? 0 : (unsigned char)(0xff << (8 - keep));
    }
}

static bool client_addr_in(const dk_cidr *r, const unsigned char a[16])
{
    unsigned char m[16];
    memcpy(m, a, 16);
    client_addr_mask(m, r->bits);
    return memcmp(m, r->addr, 16) == 0;
}

/* One "addr" or "addr/bits". */
static bool client_addr_parse_cidr(const char *s, size_t n, dk_cidr *ret)
{
    const char *slash = memchr(s, '/', n);
    size_t alen = slash ? (size_t)(slash - s) : n;
    dk_cidr r = {.bits = 128};
    if (!client_addr_parse_ip(s, alen, r.addr))
        return false;
    bool v4 = client_addr_is_v4(r.addr) && !memchr(s, ':', alen);
    if (slash) {
        const char *b = slash + 1;
        size_t blen = n - alen - 1;
        if (blen == 0 || blen > 3)
            return false;
        int bits = 0;
        for (size_t i = 0; i < blen; i++) {
            if (!isdigit((unsigned char)b[i]))
                return false;
            bits = bits * 10 + (b[i] - '0');
        }
        if (bits > (v4 ? 32 : 128))
            return false;
        r.bits = v4 ? 96 + bits : bits;
    }
    client_addr_mask(r.addr, r.bits);
    *ret = r;
    return true;
}

dk_status dk_proxy_list_parse(const char *spec, dk_proxy_list *ret)
{
    if (!ret)
        return DK_E_INTERNAL;
    dk_proxy_list l = {0};
    size_t cap = 0;
    const char *p = spec ? spec : "";
    for (;;) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        size_t n = strcspn(p, ", \t");
        dk_cidr r;
        if (!client_addr_parse_cidr(p, n, &r)) {
            dk_proxy_list_release(&l);
            return DK_E_VALIDATION;
        }
        if (l.n == cap) {
            cap = cap ? cap * 2 : 4;
            dk_cidr *grown = dk_calloc(cap, sizeof *grown);
            if (l.n)
                memcpy(grown, l.ranges, l.n * sizeof *grown);
            dk_free(l.ranges);
            l.ranges = grown;
        }
        l.ranges[l.n++] = r;
        p += n;
    }
    *ret = l;
    return DK_OK;
}

void dk_proxy_list_release(dk_proxy_list *l)
{
    if (!l)
        return;
    dk_free(l->ranges);
    l->ranges = NULL;
    l->n = 0;
}

static bool client_addr_contains(const dk_proxy_list *l, const unsigned char a[16])
{
    for (size_t i = 0; l && i < l->n; i++)
        if (client_addr_in(&l->ranges[i], a))
            return true;
    return false;
}

bool dk_proxy_list_contains(const dk_proxy_list *l, const char *ip)
{
    unsigned char a[16];
    return ip && client_addr_parse_ip(ip, strlen(ip), a) && client_addr_contains(l, a);
}

/* A node as proxies write it: 1.2.3.4, 1.2.3.4:80, 2001:db8::1, [2001:db8::1], [2001:db8::1]:80. */
static bool client_addr_parse_node(const char *s, size_t n, unsigned char out[16])
{
    while (n > 0 && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n > 0 && *s == '[') {
        const char *close = memchr(s, ']', n);
        if (!close)
            return false;
        size_t rest = n - (size_t)(close - s) - 1;
        if (rest > 0 && close[1] != ':')
            return false;
        for (size_t i = 2; i <= rest; i++)
            if (!isdigit((unsigned char)close[i]))
                return false;
        return memchr(s + 1, ':', (size_t)(close - s - 1)) &&
               client_addr_parse_ip(s + 1, (size_t)(close - s - 1), out);
    }
    const char *colon = memchr(s, ':', n);
    if (colon && !memchr(colon + 1, ':', n - (size_t)(colon - s) - 1)) {
        /* one colon: IPv4 with a port */
        for (const char *d = colon + 1; d < s + n; d++)
            if (!isdigit((unsigned char)*d))
                return false;
        return client_addr_parse_ip(s, (size_t)(colon - s), out) && client_addr_is_v4(out);
    }
    return client_addr_parse_ip(s, n, out);
}

/* The for= node of one Forwarded element ("for=1.2.3.4;proto=https"). */
static bool client_addr_parse_forwarded(const char *s, size_t n, unsigned char out[16])
{
    const char *end = s + n;
    while (s < end) {
        const char *semi = s;
        bool quoted = false;
        while (semi < end && (quoted || *semi != ';')) {
            if (*semi == '"')
                quoted = !quoted;
            semi++;
        }
        const char *k = s;
        while (k < semi && (*k == ' ' || *k == '\t'))
            k++;
        if (semi - k > 4 && strncasecmp(k, "for=", 4) == 0) {
            const char *v = k + 4;
            size_t vlen = (size_t)(semi - v);
            while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
                vlen--;
            if (vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"') {
                v++;
                vlen -= 2;
            }
            return client_addr_parse_node(v, vlen, out);
        }
        s = semi + 1;
    }
    return false;
}

void dk_client_addr_resolve(const dk_proxy_list *list, bool trust_peer, const char *peer,
                            dk_fwd_header kind, const char *header, char out[DK_IP_STRLEN])
{
    unsigned char cur[16];
    if (!peer || !client_addr_parse_ip(peer, strlen(peer), cur)) {
        snprintf(out, DK_IP_STRLEN, "%s", peer ? peer : "unknown");
        return;
    }
    client_addr_format(cur, out);
    if (!header || !(trust_peer || client_addr_contains(list, cur)))
        return;

    /* the elements, split on commas outside quotes; the rightmost CA_MAX_HOPS kept */
    const char *start[CA_MAX_HOPS];
    size_t len[CA_MAX_HOPS];
    size_t count = 0;
    const char *p = header, *elem = header;
    bool quoted = false;
    for (;; p++) {
        if (*p == '"')
            quoted = !quoted;
        if (*p == '\0' || (*p == ',' && !quoted)) {
            start[count % CA_MAX_HOPS] = elem;
            len[count % CA_MAX_HOPS] = (size_t)(p - elem);
            count++;
            if (*p == '\0')
                break;
            elem = p + 1;
        }
    }
    size_t kept = count < CA_MAX_HOPS ? count : CA_MAX_HOPS;
    for (size_t i = 0; i < kept; i++) {
        size_t at = (count - 1 - i) % CA_MAX_HOPS;
        unsigned char hop[16];
        bool ok = kind == DK_FWD_FORWARDED ? client_addr_parse_forwarded(start[at], len[at], hop)
                                           : client_addr_parse_node(start[at], len[at], hop);
        if (!ok)
            return; /* the last address reached stands */
        memcpy(cur, hop, 16);
        client_addr_format(cur, out);
        if (!client_addr_contains(list, cur))
            return; /* the first hop that is not ours: the client */
    }
}
