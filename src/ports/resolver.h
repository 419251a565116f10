/* resolver.h — the name-resolution port: a host name to its addresses, within a time budget.
 * resolve blocks its caller for at most timeout_ms (the adapter walks away from a slow name
 * server; nothing is left for the caller to free). Thread-safe. Adapters bound how many
 * resolutions run at once and say DK_E_UNAVAILABLE past that. Registered in dk_app under
 * DK_RESOLVER by main.c where a service needs it (the notifications service's webhooks).
 * Errors: DK_E_NOT_FOUND (the name has no address), DK_E_TIMEOUT (no answer in time),
 * DK_E_UNAVAILABLE (too many resolutions running, or none could start). */
#ifndef DK_PORTS_RESOLVER_H
#define DK_PORTS_RESOLVER_H

#include <stdint.h>
#include <sys/socket.h>

#include "core/status.h"

#define DK_RESOLVER           "resolver"
#define DK_RESOLVER_MAX_ADDRS 32

typedef struct dk_resolver dk_resolver;

/* The distinct addresses of a name, in the resolver's order, of whatever family it answered. */
typedef struct dk_resolved {
    int n;    /* addresses kept: 1..DK_RESOLVER_MAX_ADDRS */
    int more; /* further distinct addresses that did not fit */
    struct sockaddr_storage addrs[DK_RESOLVER_MAX_ADDRS];
} dk_resolved;

struct dk_resolver_ops {
    const char *name; /* "getaddrinfo" */
    dk_status (*resolve)(dk_resolver *r, const char *host, int64_t timeout_ms,
                         dk_resolved *ret) DK_MUSTCHECK;
    void (*free)(dk_resolver *r); /* accepts NULL; resolutions still running finish alone */
};

#endif
