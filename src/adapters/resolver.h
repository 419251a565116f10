/* adapters/resolver.h — the resolver adapters: the system's getaddrinfo on short-lived helper
 * threads (resolver_getaddrinfo.c), and a fixed table of names (resolver_table.c). The port (the interface) is ports/resolver.h; only the
 * composition root (main.c) and tests name this instance. */
#ifndef DK_ADAPTERS_RESOLVER_H
#define DK_ADAPTERS_RESOLVER_H

#include "ports/resolver.h"

extern const struct dk_resolver_ops dk_resolver_getaddrinfo_ops;

/* A resolver that runs at most max_running lookups at once (>= 1). */
dk_status dk_resolver_getaddrinfo_new(int max_running, dk_resolver **ret) DK_MUSTCHECK;

extern const struct dk_resolver_ops dk_resolver_table_ops;

/* A resolver over "name=addr[,addr...];..." (at most 64 names; IPv4/IPv6 literals);
 * DK_E_VALIDATION for a malformed table. */
dk_status dk_resolver_table_new(const char *table, dk_resolver **ret) DK_MUSTCHECK;

#endif
