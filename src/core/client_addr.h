/* client_addr.h — who the client is when proxies stand in between: a list of trusted proxy
 * ranges (CIDRs) and the walk over X-Forwarded-For or Forwarded (RFC 7239) that finds the first
 * address, from the right, that is not one of our proxies. Only a peer inside the trusted
 * ranges (or any peer, when the caller trusts its one peer, as a service behind the Docket
 * gateway does) has its forwarded header read at all; everything else is the peer itself.
 * A dk_proxy_list owns its array (dk_proxy_list_release frees it); once parsed it is read-only
 * and may be shared by threads. Errors: DK_E_VALIDATION for a malformed range. */
#ifndef DK_CORE_CLIENT_ADDR_H
#define DK_CORE_CLIENT_ADDR_H

#include <stdbool.h>
#include <stddef.h>

#include "core/status.h"

#define DK_IP_STRLEN 46 /* INET6_ADDRSTRLEN */

typedef struct dk_cidr {
    unsigned char addr[16]; /* IPv4 as ::ffff:a.b.c.d, masked */
    int bits;               /* prefix length over the 128 bits */
} dk_cidr;

typedef struct dk_proxy_list {
    dk_cidr *ranges;
    size_t n;
} dk_proxy_list;

typedef enum {
    DK_FWD_X_FORWARDED_FOR, /* X-Forwarded-For: client, proxy1, proxy2 */
    DK_FWD_FORWARDED,       /* Forwarded: for=client, for="[2001:db8::1]:4711" */
} dk_fwd_header;

/* "10.0.0.0/8, 192.168.1.7, fd00::/8": comma- or space-separated addresses or CIDRs; an
 * address alone is a /32 (/128). Empty or NULL = no range. *ret is written only on success. */
dk_status dk_proxy_list_parse(const char *spec, dk_proxy_list *ret) DK_MUSTCHECK;
void dk_proxy_list_release(dk_proxy_list *l); /* accepts a zeroed list */
/* Whether ip (text; IPv4, IPv6 or IPv4-mapped IPv6) lies in one of the ranges. */
bool dk_proxy_list_contains(const dk_proxy_list *l, const char *ip);

/* The client's address, written to out (canonical text):
 * - peer is the socket's address. When it is neither trusted (trust_peer, or inside list) nor
 *   given a header, the answer is peer.
 * - Otherwise header (all values of the chosen header, joined with ", "; NULL = absent) is read
 *   from the right: each entry is the address that the hop after it saw; an entry inside list
 *   is another proxy of ours and the walk goes on, the first one outside it is the client. An
 *   entry that is not an address ("unknown", garbage) ends the walk: the answer is the last
 *   address reached, never something a client wrote further left. When every entry is a
 *   proxy of ours, the leftmost is the answer. */
void dk_client_addr_resolve(const dk_proxy_list *list, bool trust_peer, const char *peer,
                            dk_fwd_header kind, const char *header, char out[DK_IP_STRLEN]);

#endif
