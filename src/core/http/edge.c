/* edge.c — the checks every route shares at the edge: bearer-token authentication and
 * session revocation, CORS (allowed origins, preflights), the per-client rate limits (edge and
 * per-route), trace context and request ids, the client's address behind trusted proxies.
 * Contract: each check either lets the request go on (true) or has written its answer into
 * x->res (false); dk_http_edge_cors returns true when it has answered a preflight.
 * Locking: none of its own; the stores it calls are thread-safe. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "core/http/http_internal.h"
#include "core/client_addr.h"
#include "core/crypto.h"
#include "core/ids.h"
#include "core/log.h"
#include "core/ratelimit.h"
#include "core/session_guard.h"
#include "core/token.h"
#include "core/trace.h"
#include "core/banned.h"

bool dk_http_edge_route_rate_limit(struct dk_http_exchange *x)
{
    dk_app *app = x->srv->app;
    if (!app->rate_limit_enabled)
        return true;
    dk_ratelimit_result rl;
    dk_status st = dk_ratelimit_hit(&app->store, "auth", x->req.client_ip, app->rate_limit_max,
                                    app->rate_limit_window_ms, &rl);
    if (st != DK_OK) {
        dk_log_error("rate limiter unavailable: %s", dk_status_title(st));
        dk_res_header(&x->res, "Retry-After", "1");
        dk_res_problem(&x->res, DK_E_UNAVAILABLE, "the rate limiter's store is unavailable");
        return false;
    }
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)rl.limit);
    dk_res_header(&x->res, "RateLimit-Limit", buf);
    snprintf(buf, sizeof buf, "%lld", (long long)rl.remaining);
    dk_res_header(&x->res, "RateLimit-Remaining", buf);
    snprintf(buf, sizeof buf, "%lld", (long long)rl.reset_s);
    dk_res_header(&x->res, "RateLimit-Reset", buf);
    if (!rl.allowed) {
        snprintf(buf, sizeof buf, "%lld", (long long)rl.retry_after_s);
        dk_res_header(&x->res, "Retry-After", buf);
        dk_res_problem(&x->res, DK_E_RATE_LIMITED,
                       "too many requests from this client: %lld per %lld s; retry in %lld s",
                       (long long)rl.limit, (long long)(app->rate_limit_window_ms / 1000),
                       (long long)rl.retry_after_s);
        return false;
    }
    return true;
}

bool dk_http_edge_authenticate(struct dk_http_exchange *x, bool internal)
{
    dk_app *app = x->srv->app;
    const char *h = dk_req_header(&x->req, MHD_HTTP_HEADER_AUTHORIZATION);
    const char *token = NULL;
    if (h && strncasecmp(h, "Bearer ", 7) == 0) {
        token = h + 7;
        while (*token == ' ')
            token++;
    }
    dk_status st = DK_E_UNAUTHORIZED;
    if (token && *token)
        st = dk_tokens_verify(app->tokens, x->req.arena, token, &x->identity);
    if (st == DK_OK && internal) {
        /* service tokens have no session: the role is what admits them */
        if (strcmp(x->identity.role, "service") != 0) {
            dk_res_problem(&x->res, DK_E_NOT_FOUND, "no such resource: %s", x->req.path);
            return false;
        }
        x->req.identity = &x->identity;
        return true;
    }
    if (st == DK_OK && strcmp(x->identity.role, "service") == 0)
        st = DK_E_UNAUTHORIZED; /* a service token is not a user's */
    if (st == DK_OK)
        st = dk_session_check(&app->store, x->identity.session_id);
    if (st == DK_OK) {
        dk_status tst = dk_session_touch(&app->store, x->identity.session_id, app->refresh_ttl_ms);
        if (tst != DK_OK)
            dk_log_warn("could not record session use: %s", dk_status_title(tst));
        x->req.identity = &x->identity;
        return true;
    }
    if (st == DK_E_UNAUTHORIZED) {
        dk_res_header(&x->res, "WWW-Authenticate",
                      token ? "Bearer realm=\"docket\", error=\"invalid_token\""
                            : "Bearer realm=\"docket\"");
        dk_res_problem(&x->res, DK_E_UNAUTHORIZED,
                       token ? "the access token is invalid, expired or revoked"
                             : "this endpoint needs an access token (Authorization: Bearer …)");
    } else {
        dk_res_header(&x->res, "Retry-After", "1");
        dk_res_problem(&x->res, DK_E_UNAVAILABLE, "the session store is unavailable");
    }
    return false;
}

static bool edge_origin_allowed(const char *list, const char *origin)
{
    if (!list || !origin || !*origin)
        return false;
    size_t on = strlen(origin);
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && t[-1] == ' ')
            t--;
        size_t n = (size_t)(t - p);
        if ((n == 1 && *p == '*') || (n == on && strncmp(p, origin, n) == 0))
            return true;
        p = e;
    }
    return false;
}

/* CORS: adds the response headers for an allowed Origin; answers preflights. Returns true
 * when the request has been answered. */
bool dk_http_edge_cors(struct dk_http_exchange *x, const char *allow_methods)
{
    const char *origin = dk_req_header(&x->req, "Origin");
    if (!edge_origin_allowed(x->srv->opt.cors_origins, origin))
        return false;
    dk_res_header(&x->res, "Access-Control-Allow-Origin", origin);
    dk_res_header(&x->res, "Vary", "Origin");
    dk_res_header(&x->res, "Access-Control-Expose-Headers",
                  "X-Request-Id, ETag, Location, Retry-After, RateLimit-Limit, "
                  "RateLimit-Remaining, RateLimit-Reset");
    if (strcmp(x->req.method, "OPTIONS") == 0 &&
        dk_req_header(&x->req, "Access-Control-Request-Method") && allow_methods) {
        dk_res_header(&x->res, "Access-Control-Allow-Methods", allow_methods);
        dk_res_header(&x->res, "Access-Control-Allow-Headers",
                      "Authorization, Content-Type, If-Match, If-None-Match, X-Request-Id, "
                      "traceparent, Last-Event-ID");
        dk_res_header(&x->res, "Access-Control-Max-Age", "600");
        dk_res_empty(&x->res, 204);
        return true;
    }
    return false;
}

bool dk_http_edge_rate_limit(struct dk_http_exchange *x)
{
    int64_t rps = x->srv->opt.edge_rate_limit_rps;
    if (rps <= 0)
        return true;
    dk_ratelimit_result rl;
    dk_status st = dk_ratelimit_hit(&x->srv->app->store, "edge", x->req.client_ip, rps, 1000, &rl);
    if (st != DK_OK) {
        dk_log_error("edge rate limiter unavailable: %s", dk_status_title(st));
        dk_res_header(&x->res, "Retry-After", "1");
        dk_res_problem(&x->res, DK_E_UNAVAILABLE, "the rate limiter's store is unavailable");
        return false;
    }
    if (rl.allowed)
        return true;
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)rl.limit);
    dk_res_header(&x->res, "RateLimit-Limit", buf);
    dk_res_header(&x->res, "RateLimit-Remaining", "0");
    snprintf(buf, sizeof buf, "%lld", (long long)rl.reset_s);
    dk_res_header(&x->res, "RateLimit-Reset", buf);
    dk_res_header(&x->res, "Retry-After", buf);
    dk_res_problem(&x->res, DK_E_RATE_LIMITED,
                   "more than %lld requests per second from this client", (long long)rps);
    return false;
}

/* ---------- libmicrohttpd callbacks ---------- */

void dk_http_edge_trace_init(dk_req *req, const char *traceparent)
{
    /* W3C: 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags> (core/trace.c) */
    unsigned char rnd[16];
    bool parent_sampled = false;
    if (dk_traceparent_parse(traceparent, req->trace_id, req->parent_span_id, &parent_sampled)) {
        req->trace_sampled = dk_trace_sample(req->trace_id, parent_sampled);
    } else {
        dk_fast_random(rnd, 16);
        dk_hex(rnd, 16, req->trace_id);
        req->parent_span_id[0] = '\0';
        req->trace_sampled = dk_trace_sample(req->trace_id, -1);
    }
    dk_fast_random(rnd, 8);
    dk_hex(rnd, 8, req->span_id);
}

const char *dk_http_edge_client_ip(dk_arena *a, struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char buf[INET6_ADDRSTRLEN] = "unknown";
    if (ci && ci->client_addr) {
        if (ci->client_addr->sa_family == AF_INET) {
            inet_ntop(AF_INET, &((const struct sockaddr_in *)ci->client_addr)->sin_addr, buf,
                      sizeof buf);
        } else if (ci->client_addr->sa_family == AF_INET6) {
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ci->client_addr)->sin6_addr, buf,
                      sizeof buf);
        }
    }
    return dk_arena_strdup(a, buf);
}

/* Every value of a request header, joined with ", " in the order received; NULL when absent. */
struct edge_joined_header {
    dk_arena *arena;
    const char *name;
    char *value;
};

static enum MHD_Result edge_header_join(void *cls, enum MHD_ValueKind kind, const char *key,
                                        const char *value)
{
    (void)kind;
    struct edge_joined_header *j = cls;
    if (value && strcasecmp(key, j->name) == 0)
        j->value = j->value ? dk_arena_printf(j->arena, "%s, %s", j->value, value)
                            : dk_arena_strdup(j->arena, value);
    return MHD_YES;
}

/* The client's address behind trusted proxies (core/client_addr.h). */
const char *dk_http_edge_forwarded_client(dk_http_server *srv, dk_arena *a,
                                          struct MHD_Connection *c, const char *peer)
{
    dk_fwd_header kind = srv->opt.forwarded_header;
    struct edge_joined_header j = {a, kind == DK_FWD_FORWARDED ? "Forwarded" : "X-Forwarded-For",
                                   NULL};
    (void)MHD_get_connection_values(c, MHD_HEADER_KIND, edge_header_join, &j);
    char *out = dk_arena_alloc(a, DK_IP_STRLEN);
    dk_client_addr_resolve(srv->opt.trusted_proxies, srv->opt.trust_forwarded_for, peer, kind,
                           j.value, out);
    return out;
}
