/* The webhook URL check and the SSRF address classifier. Mode 0: the bytes as a URL (host
 * names are resolved with a 1 ms budget: the parser is what is fuzzed); mode 1: the bytes as
 * an IPv4 or IPv6 address for webhook_addr_is_private, which must agree with the URL check on
 * literal addresses. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "services/notifications/webhook_url.h"
#include "adapters/http_client.h"
#include "adapters/resolver.h"

static webhook_net net;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    dk_resolver *r = NULL;
    if (dk_resolver_getaddrinfo_new(32, &r) != DK_OK)
        abort();
    net = (webhook_net){&dk_http_client_curl_ops, &dk_resolver_getaddrinfo_ops, r};
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    char reason[256];
    if (data[0] % 2 == 0) {
        char *url = fuzz_cstr(data + 1, size - 1);
        webhook_target t;
        (void)!webhook_resolve(&net, url, false, 1, &t, reason, sizeof reason);
        free(url);
        return 0;
    }
    char text[128], url[200];
    if (size - 1 >= 16) {
        struct sockaddr_in6 sa = {.sin6_family = AF_INET6};
        memcpy(&sa.sin6_addr, data + 1, 16);
        bool priv = webhook_addr_is_private((struct sockaddr *)&sa);
        inet_ntop(AF_INET6, &sa.sin6_addr, text, sizeof text);
        snprintf(url, sizeof url, "https://[%s]/hook", text);
        webhook_target t;
        dk_status st = webhook_resolve(&net, url, false, 1000, &t, reason, sizeof reason);
        if (priv != (st == DK_E_FORBIDDEN) && st != DK_E_VALIDATION)
            abort(); /* the classifier and the URL check disagree on a literal */
    } else if (size - 1 >= 4) {
        struct sockaddr_in sa = {.sin_family = AF_INET};
        memcpy(&sa.sin_addr, data + 1, 4);
        bool priv = webhook_addr_is_private((struct sockaddr *)&sa);
        inet_ntop(AF_INET, &sa.sin_addr, text, sizeof text);
        snprintf(url, sizeof url, "http://%s:8080/hook", text);
        webhook_target t;
        dk_status st = webhook_resolve(&net, url, false, 1000, &t, reason, sizeof reason);
        if (priv != (st == DK_E_FORBIDDEN))
            abort();
    }
    return 0;
}
