/* adapters/http_client.h — the HTTP client adapter: libcurl multi (http_client_curl.c).
 * The port (the interface) is ports/http_client.h; only the composition root (main.c) and the
 * adapters' own tests name these instances. */
#ifndef DK_ADAPTERS_HTTP_CLIENT_H
#define DK_ADAPTERS_HTTP_CLIENT_H

#include "ports/http_client.h"

extern const struct dk_http_client_ops dk_http_client_curl_ops;

#endif
