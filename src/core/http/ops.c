/* ops.c — the routes every process serves: /health, /ready (the registered readiness
 * checks), /metrics (Prometheus text) and /openapi.yaml|json (the compiled-in contract).
 * Contract: mounted by dk_http_new under the process name, flagged DK_ROUTE_OPS (no edge limits).
 * Locking: the JSON form of the OpenAPI document is made once (pthread_once). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/http/http_internal.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/str.h"
#include "core/yaml_json.h"
#include "core/banned.h"

static void ops_health(dk_req *req, dk_res *res)
{
    static const char body[] = "{\"status\":\"ok\"}";
    dk_res_text(res, 200, "application/json", body, sizeof body - 1);
}

static void ops_ready(dk_req *req, dk_res *res)
{
    dk_http_server *srv = req->service;
    json_t *checks = json_object();
    bool ok = true;
    char failing[256] = "";
    if (atomic_load(&srv->draining)) {
        ok = false;
        json_object_set_new(checks, "server", json_string("shutting down"));
        dk_strlcpy(failing, "server", sizeof failing);
    }
    for (int i = 0; i < srv->nready; i++) {
        char reason[256] = "";
        dk_status st = srv->ready[i].fn(srv->ready[i].ctx, reason, sizeof reason);
        if (st == DK_OK) {
            json_object_set_new(checks, srv->ready[i].name, json_string("ok"));
        } else {
            ok = false;
            json_t *r = json_string(reason[0] ? reason : dk_status_title(st));
            json_object_set_new(checks, srv->ready[i].name, r ? r : json_string("unavailable"));
            size_t fl = strlen(failing);
            snprintf(failing + fl, sizeof failing - fl, "%s%s", fl ? ", " : "", srv->ready[i].name);
        }
    }
    if (ok) {
        dk_res_json(res, 200, json_pack("{s:s,s:o}", "status", "ok", "checks", checks));
    } else {
        json_t *ext = json_pack("{s:o}", "checks", checks);
        dk_res_header(res, "Retry-After", "1");
        dk_res_problem_ext(res, DK_E_UNAVAILABLE, ext, "not ready: %s", failing);
    }
}

static void ops_metrics(dk_req *req, dk_res *res)
{
    /* OpenMetrics (with exemplars) when the scraper asks for it, as Prometheus does */
    const char *accept = dk_req_header(req, "Accept");
    bool om = accept && strstr(accept, "application/openmetrics-text");
    size_t len = 0;
    char *text = dk_metrics_render_as(req->arena, &len, om);
    dk_res_text(res, 200,
                om ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
                   : "text/plain; version=0.0.4; charset=utf-8",
                text, len);
}

/* The OpenAPI document, compiled in (cmake/embed.cmake); its JSON form is made once. */
extern const unsigned char dk_openapi_yaml[];
extern const size_t dk_openapi_yaml_len;
static pthread_once_t ops_openapi_once = PTHREAD_ONCE_INIT;
static char *ops_openapi_json_text;
static size_t ops_openapi_json_len;

static void ops_openapi_json_make(void)
{
    char err[256] = "";
    json_t *doc =
        dk_yaml_to_json((const char *)dk_openapi_yaml, dk_openapi_yaml_len, err, sizeof err);
    if (!doc) {
        dk_log_error("the compiled-in OpenAPI document does not convert to JSON: %s", err);
        return;
    }
    ops_openapi_json_text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    ops_openapi_json_len = ops_openapi_json_text ? strlen(ops_openapi_json_text) : 0;
    json_decref(doc);
}

static void ops_openapi(dk_req *req, dk_res *res)
{
    dk_res_header(res, "Cache-Control", "public, max-age=300");
    if (strstr(req->path, ".json")) {
        pthread_once(&ops_openapi_once, ops_openapi_json_make);
        if (!ops_openapi_json_text) {
            dk_res_problem(res, DK_E_INTERNAL, "the OpenAPI document could not be converted");
            return;
        }
        dk_res_text(res, 200, "application/json", ops_openapi_json_text, ops_openapi_json_len);
        return;
    }
    dk_res_text(res, 200, "application/yaml", (const char *)dk_openapi_yaml, dk_openapi_yaml_len);
}

/* Frees what the ops routes made lazily (for leak checks at exit). */
static void ops_openapi_json_free(void) __attribute__((destructor));
static void ops_openapi_json_free(void)
{
    free(ops_openapi_json_text);
    ops_openapi_json_text = NULL;
}

const dk_route dk_http_ops_routes[] = {
    {"GET", "/health", ops_health, DK_ROUTE_OPS},
    {"GET", "/ready", ops_ready, DK_ROUTE_OPS},
    {"GET", "/metrics", ops_metrics, DK_ROUTE_OPS},
    {"GET", "/openapi.yaml", ops_openapi, DK_ROUTE_OPS},
    {"GET", "/openapi.json", ops_openapi, DK_ROUTE_OPS},
};
