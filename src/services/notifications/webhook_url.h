/* webhook_url.h — what a webhook URL may be, and where a webhook may connect (the SSRF guard).
 * A URL must be absolute http/https, at most NT_WEBHOOK_URL_MAX bytes of printable ASCII, with
 * a host and a valid port, and without userinfo or an IPv6 zone; its host must resolve, and
 * every address it resolves to must be public unless private addresses are allowed. The same
 * resolution runs when the preference is saved (webhook_url_check) and again before each
 * delivery (webhook_resolve, whose addresses the caller pins the connection to).
 * The URL is read by the HTTP client port's split_url (what is checked is where the call goes)
 * and the host resolved through the resolver port, bounded in time; a resolver that is busy
 * makes the check DK_E_UNAVAILABLE. Thread-safe; no allocation is left to the caller. */
#ifndef DK_NOTIFICATIONS_WEBHOOK_URL_H
#define DK_NOTIFICATIONS_WEBHOOK_URL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

struct sockaddr;
struct dk_http_client_ops;
struct dk_resolver_ops;
typedef struct dk_resolver dk_resolver;

/* The ports the checks go through. */
typedef struct webhook_net {
    const struct dk_http_client_ops *http; /* its split_url reads the URL */
    const struct dk_resolver_ops *resolver;
    dk_resolver *resolver_h;
} webhook_net;

#define NT_WEBHOOK_URL_MAX       2048
#define NT_WEBHOOK_MAX_ADDRS     8    /* addresses kept (and pinned) per host */
#define NT_WEBHOOK_CHECK_TIMEOUT 5000 /* ms webhook_url_check waits for the resolver */
#define NT_WEBHOOK_ADDR_LEN      48   /* "[v6 address]" or "v4 address", NUL-terminated */

/* DK_OK when url is acceptable. Otherwise DK_E_VALIDATION with a one-line reason for the user,
 * phrased like the other field validators (no field name: "must use http or https", "host
 * does not resolve" — also when the resolver did not answer within NT_WEBHOOK_CHECK_TIMEOUT —,
 * "resolves to an address that is not allowed (...)"), or DK_E_UNAVAILABLE when the resolver
 * is busy (a 503 would fit: try again). reason may be NULL; it is written only on failure.
 * Blocks for the resolution. */
dk_status webhook_url_check(const webhook_net *net, const char *url, bool allow_private,
                            char *reason, size_t cap) DK_MUSTCHECK;

/* Where a webhook connects: the URL's host and port, and its checked addresses. */
typedef struct webhook_target {
    char host[256]; /* as in the URL, an IPv6 literal without its brackets */
    int port;       /* explicit, or the scheme's default */
    bool literal;   /* the host is an IP address: nothing was resolved by name */
    int naddrs;     /* 1..NT_WEBHOOK_MAX_ADDRS */
    char addrs[NT_WEBHOOK_MAX_ADDRS]
              [NT_WEBHOOK_ADDR_LEN]; /* IPv6 in brackets (connect_to syntax) */
} webhook_target;

/* Checks url as webhook_url_check does, waiting at most timeout_ms for the resolver, and
 * fills *ret on success. Errors (reason written, a short phrase): DK_E_VALIDATION — the URL
 * itself is unacceptable; DK_E_FORBIDDEN — "address not allowed" (a private address and
 * !allow_private); DK_E_UNAVAILABLE — "does not resolve" / resolver busy (may pass later). */
dk_status webhook_resolve(const webhook_net *net, const char *url, bool allow_private,
                          int64_t timeout_ms, webhook_target *ret, char *reason,
                          size_t cap) DK_MUSTCHECK;

/* True when sa is not a public unicast address: IPv4 0/8, 10/8, 100.64/10, 127/8, 169.254/16,
 * 172.16/12, 192.0.0/24, 192.168/16, 198.18/15, 224/4, 240/4 (so 255.255.255.255); IPv6 ::, ::1,
 * 64:ff9b:1::/48, 2001::/32 (Teredo), fc00::/7, fe80::/10, fec0::/10, ff00::/8, and IPv4 addresses embedded as IPv4-mapped (::ffff:0:0/96),
 * IPv4-compatible (::/96), NAT64 (64:ff9b::/96) or 6to4 (2002::/16) when the embedded address
 * is private. Any other family counts as private. */
bool webhook_addr_is_private(const struct sockaddr *sa);

#endif
