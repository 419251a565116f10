/* The resolver port over a fixed table of names, like a hosts file: "name=addr[,addr...]"
 * entries separated by ';' (IPv4 or IPv6 literals), matched without regard to case. A name not
 * in the table does not resolve. Read-only once built: thread-safe. For tests that need names
 * with known addresses (no name server), and for pinning names in a closed deployment. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "core/alloc.h"
#include "core/str.h"
#include "adapters/resolver.h"
#include "core/banned.h"

#define DK_TABLE_MAX_NAMES 64

struct dk_resolver {
    int n;
    char names[DK_TABLE_MAX_NAMES][256];
    dk_resolved addrs[DK_TABLE_MAX_NAMES];
};

static bool dk_table_addr(const char *text, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, text, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, text, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        return true;
    }
    return false;
}

dk_status dk_resolver_table_new(const char *table, dk_resolver **ret)
{
    dk_resolver *r = DK_NEW(dk_resolver);
    const char *p = table ? table : "";
    while (*p) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (!eq || eq == p || (size_t)(eq - p) >= sizeof r->names[0] || r->n == DK_TABLE_MAX_NAMES)
            goto bad;
        memcpy(r->names[r->n], p, (size_t)(eq - p));
        dk_resolved *d = &r->addrs[r->n];
        const char *a = eq + 1, *stop = p + len;
        while (a < stop) {
            const char *comma = memchr(a, ',', (size_t)(stop - a));
            const char *aend = comma ? comma : stop;
            char text[64];
            if ((size_t)(aend - a) >= sizeof text)
                goto bad;
            memcpy(text, a, (size_t)(aend - a));
            text[aend - a] = '\0';
            struct sockaddr_storage ss;
            if (!dk_table_addr(text, &ss))
                goto bad;
            if (d->n < DK_RESOLVER_MAX_ADDRS)
                d->addrs[d->n++] = ss;
            else
                d->more++;
            a = comma ? comma + 1 : stop;
        }
        if (d->n == 0)
            goto bad;
        r->n++;
        p = end ? end + 1 : stop;
    }
    *ret = r;
    return DK_OK;
bad:
    dk_free(r);
    return DK_E_VALIDATION;
}

static dk_status dk_table_resolve(dk_resolver *r, const char *host, int64_t timeout_ms,
                                  dk_resolved *ret)
{
    (void)timeout_ms;
    for (int i = 0; i < r->n; i++) {
        if (dk_str_ieq(r->names[i], host)) {
            *ret = r->addrs[i];
            return DK_OK;
        }
    }
    return DK_E_NOT_FOUND;
}

static void dk_table_free(dk_resolver *r)
{
    dk_free(r);
}

const struct dk_resolver_ops dk_resolver_table_ops = {
    .name = "table",
    .resolve = dk_table_resolve,
    .free = dk_table_free,
};
