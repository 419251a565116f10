/* gateway.h — the API gateway of split mode: it mounts every service's public route table with
 * a forwarding handler, so routing, authentication, CORS, body limits and rate limits are the
 * core's (identical to `docket all`), and forwards each request to a healthy upstream of its
 * service over the http_client port. Upstreams are balanced round-robin, probed on /ready,
 * and taken out of rotation after repeated failures (circuit breaker). Errors answer fast:
 * 502 refused, 503 none ready / circuit open (Retry-After), 504 timeout. Response bodies
 * stream (a body still arriving after its headers goes out as it comes, with flow control);
 * on DK_ROUTE_STREAM routes gateway.timeout bounds only the wait for the headers. Request
 * bodies over 64 KiB or chunked stream too (DK_ROUTE_BODY_STREAM: sent up as they arrive, the
 * client held back while 256 KiB wait for the upstream; 413 when one passes the limit). */
#ifndef DK_GATEWAY_H
#define DK_GATEWAY_H

#include "core/app.h"
#include "core/http.h"
#include "services/service.h"

struct dk_http_client_ops;

typedef struct dk_gateway dk_gateway;

/* Creates the gateway for the given services; their upstream URLs come from the config keys
 * gateway.<service>_url. Upstream calls go through client_ops (the composition root picks the
 * adapter: adapters/http_client.h). Fails with a message when a service has no URL. */
dk_status dk_gateway_new(dk_app *app, const dk_service *const *services, size_t nservices,
                         const struct dk_http_client_ops *client_ops,
                         dk_gateway **ret) DK_MUSTCHECK;
/* Mounts the forwarding routes of every service on srv. */
void dk_gateway_mount(dk_gateway *gw, dk_http_server *srv);
void dk_gateway_free(dk_gateway *gw);

#endif
