/* router.c — the route table and dispatch: a request's path and method to its handler, with
 * the edge checks (edge.c) in the order the contract fixes: CORS and the edge rate limit, the
 * per-route rate limit, the body limit, authentication; then the handler, here or on the
 * offload pool (offload.c). 404 for no path, 405 with Allow for a wrong method.
 * Contract: dk_http_mount/dk_http_add_ready_check in core/http.h.
 * Locking: none; the table is written before dk_http_start and only read afterwards. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/http/http_internal.h"
#include "core/alloc.h"
#include "core/trace.h"
#include "core/banned.h"

/* The one path splitter, for route patterns (at mount) and request paths (at dispatch): the
 * non-empty segments between slashes, copied into the arena, or onto the heap when a is NULL
 * (a route's segments live as long as the server). Returns how many, or -1 when there are more
 * than max (the segments copied so far are the caller's to drop with the arena or abort). */
static int router_path_split(dk_arena *a, const char *path, char **segs, int max)
{
    int n = 0;
    const char *p = path;
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (n >= max)
            return -1;
        segs[n++] = a ? dk_arena_strndup(a, p, len) : dk_strndup(p, len);
        p += len;
    }
    return n;
}

void dk_http_mount(dk_http_server *srv, const char *service_name, const char *prefix,
                   const dk_route *routes, size_t nroutes, void *state)
{
    for (size_t i = 0; i < nroutes; i++) {
        if (srv->nroutes >= DK_HTTP_MAX_ROUTES) {
            fprintf(stderr, "too many routes\n");
            abort();
        }
        struct dk_http_route_entry *r = &srv->routes[srv->nroutes++];
        size_t plen = strlen(prefix), rlen = strlen(routes[i].pattern);
        /* "/" relative pattern means the prefix itself */
        bool root = strcmp(routes[i].pattern, "/") == 0;
        r->pattern = dk_malloc(plen + rlen + 1);
        memcpy(r->pattern, prefix, plen);
        if (root) {
            r->pattern[plen] = '\0';
        } else {
            memcpy(r->pattern + plen, routes[i].pattern, rlen + 1);
        }
        r->service_name = service_name;
        r->method = routes[i].method;
        r->handler = routes[i].handler;
        r->flags = routes[i].flags;
        r->body_limit = DK_ROUTE_BODY_LIMIT(routes[i].flags);
        if (r->body_limit)
            srv->body_limit_routes++;
        r->state = state;
        if (r->flags & DK_ROUTE_BODY_STREAM)
            srv->body_stream_routes++;
        r->nsegs = router_path_split(NULL, r->pattern, r->segs, DK_HTTP_MAX_SEGMENTS);
        if (r->nsegs < 0) {
            fprintf(stderr, "route %s has too many segments\n", r->pattern);
            abort();
        }
    }
}

void dk_http_add_ready_check(dk_http_server *srv, const char *name, dk_ready_fn fn, void *ctx)
{
    if (srv->nready >= DK_HTTP_MAX_READY)
        return;
    srv->ready[srv->nready].name = name;
    srv->ready[srv->nready].fn = fn;
    srv->ready[srv->nready].ctx = ctx;
    srv->nready++;
}

/* ---------- routing ---------- */

static bool router_route_matches(const struct dk_http_route_entry *r, char **segs, int nsegs,
                                 dk_req *req)
{
    if (r->nsegs != nsegs)
        return false;
    int np = 0;
    for (int i = 0; i < nsegs; i++) {
        const char *s = r->segs[i];
        if (s[0] == '{') {
            if (np >= DK_MAX_PARAMS)
                return false;
            if (req) {
                size_t n = strlen(s);
                req->param_names[np] = dk_arena_strndup(req->arena, s + 1, n - 2);
                req->param_values[np] = segs[i];
            }
            np++;
        } else if (strcmp(s, segs[i]) != 0) {
            return false;
        }
    }
    if (req)
        req->nparams = np;
    return true;
}

/* The route a request will be dispatched to (method and path), or NULL. */
const struct dk_http_route_entry *dk_http_router_lookup(dk_http_server *srv,
                                                        struct dk_http_exchange *x)
{
    char *segs[DK_HTTP_MAX_SEGMENTS + 1];
    int nsegs = router_path_split(x->req.arena, x->req.path, segs, DK_HTTP_MAX_SEGMENTS + 1);
    for (int i = 0; nsegs >= 0 && i < srv->nroutes; i++) {
        const struct dk_http_route_entry *r = &srv->routes[i];
        if (strcmp(r->method, x->req.method) == 0 && router_route_matches(r, segs, nsegs, NULL))
            return r;
    }
    return NULL;
}

void dk_http_router_dispatch(struct dk_http_exchange *x)
{
    dk_http_server *srv = x->srv;
    dk_req *req = &x->req;
    const char *path = req->path;

    x->metric_service = srv->opt.process_name;
    x->metric_route = "unmatched";
    dk_trace_enter(req->trace_id, req->span_id, req->trace_sampled);

    char *segs[DK_HTTP_MAX_SEGMENTS + 1];
    int nsegs = router_path_split(req->arena, path, segs, DK_HTTP_MAX_SEGMENTS + 1);
    const struct dk_http_route_entry *found = NULL;
    char allow[128] = "";
    if (nsegs >= 0) {
        for (int i = 0; i < srv->nroutes; i++) {
            const struct dk_http_route_entry *r = &srv->routes[i];
            if (!router_route_matches(r, segs, nsegs, NULL))
                continue;
            if (strcmp(r->method, req->method) == 0) {
                found = r;
                break;
            }
            size_t al = strlen(allow);
            if (!strstr(allow, r->method))
                snprintf(allow + al, sizeof allow - al, "%s%s", al ? ", " : "", r->method);
        }
    }
    if (!found) {
        if (allow[0] && dk_http_edge_cors(x, allow))
            return;
        if (allow[0]) {
            dk_res_header(&x->res, "Allow", allow);
            dk_res_problem(&x->res, DK_E_METHOD, "%s is not allowed here; allowed: %s", req->method,
                           allow);
        } else {
            dk_res_problem(&x->res, DK_E_NOT_FOUND, "no such resource: %s", path);
        }
        return;
    }
    (void)router_route_matches(found, segs, nsegs, req);
    x->metric_service = found->service_name;
    x->metric_route = found->pattern;
    req->service = found->state;
    req->service_name = found->service_name;
    req->route_pattern = found->pattern;

    if (!(found->flags & DK_ROUTE_OPS)) {
        (void)dk_http_edge_cors(x, NULL);
        if (!dk_http_edge_rate_limit(x))
            return;
    }
    if ((found->flags & DK_ROUTE_RATE_LIMIT) && !dk_http_edge_route_rate_limit(x))
        return;
    if (x->too_large) {
        dk_res_problem(&x->res, DK_E_TOO_LARGE, "the request body exceeds the limit of %zu bytes",
                       x->body_limit);
        return;
    }
    if ((found->flags & (DK_ROUTE_AUTH | DK_ROUTE_INTERNAL)) &&
        !dk_http_edge_authenticate(x, (found->flags & DK_ROUTE_INTERNAL) != 0))
        return;
    if ((found->flags & DK_ROUTE_OFFLOAD) && srv->offload) {
        x->offload_handler = found->handler;
        dk_req_suspend(req);
        if (dk_workpool_submit(srv->offload, dk_http_offload_run, x) != DK_OK) {
            dk_res_header(&x->res, "Retry-After", "1");
            dk_res_problem(&x->res, DK_E_UNAVAILABLE,
                           "the server is busy with other sign-ins; try again shortly");
            dk_req_resume(req);
        }
        return;
    }
    x->edge_nheaders = x->res.nheaders;
    found->handler(req, &x->res);
    if (!x->suspended && x->res.status == 0) /* once suspended, res belongs to another thread */
        dk_res_problem(&x->res, DK_E_INTERNAL, "the handler produced no response");
}
