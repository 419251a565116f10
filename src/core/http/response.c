/* response.c — what a handler answers: JSON, text, empty bodies, response headers, and
 * problem+json errors (RFC 9457) with field-level validation errors.
 * Contract: dk_res_*, dk_errors_* in core/http.h. Everything lives in the request's arena.
 * Locking: none; a dk_res belongs to one thread at a time. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/http/http_internal.h"
#include "core/json.h"
#include "core/banned.h"

void dk_res_header(dk_res *res, const char *name, const char *value)
{
    if (res->nheaders >= DK_MAX_RES_HEADERS)
        return;
    res->header_names[res->nheaders] = dk_arena_strdup(res->arena, name);
    res->header_values[res->nheaders] = dk_arena_strdup(res->arena, value);
    res->nheaders++;
}

void dk_res_json(dk_res *res, int status, json_t *body)
{
    res->status = status;
    res->content_type = "application/json";
    res->body = dk_json_render(res->arena, body, &res->body_len);
    json_decref(body);
}

void dk_res_jw(dk_res *res, int status, dk_jw *w)
{
    res->status = status;
    res->content_type = "application/json";
    res->body = dk_jw_finish(w, res->arena, &res->body_len);
}

void dk_res_empty(dk_res *res, int status)
{
    res->status = status;
    res->content_type = NULL;
    res->body = "";
    res->body_len = 0;
}

void dk_res_text(dk_res *res, int status, const char *content_type, const char *body, size_t len)
{
    res->status = status;
    res->content_type = content_type;
    res->body = body;
    res->body_len = len;
}

static void response_problem_v(dk_res *res, dk_status st, json_t *ext, const char *fmt, va_list ap)
    DK_PRINTF(4, 0);
static void response_problem_v(dk_res *res, dk_status st, json_t *ext, const char *fmt, va_list ap)
{
    char detail[1024];
    vsnprintf(detail, sizeof detail, fmt, ap);
    int http = dk_status_http(st);
    json_t *p = json_object();
    json_object_set_new(p, "type", json_string("about:blank"));
    json_object_set_new(p, "title", json_string(dk_status_title(st)));
    json_object_set_new(p, "status", json_integer(http));
    json_t *d = json_string(detail);
    json_object_set_new(p, "detail", d ? d : json_string("(detail not valid UTF-8)"));
    json_object_set_new(p, "request_id", json_string(res->request_id ? res->request_id : ""));
    if (ext) {
        json_object_update(p, ext);
        json_decref(ext);
    }
    if (st == DK_E_UNAUTHORIZED) {
        bool has = false;
        for (int i = 0; i < res->nheaders; i++)
            if (strcasecmp(res->header_names[i], "WWW-Authenticate") == 0)
                has = true;
        if (!has)
            dk_res_header(res, "WWW-Authenticate", "Bearer realm=\"docket\"");
    }
    res->status = http;
    res->content_type = "application/problem+json";
    res->body = dk_json_render(res->arena, p, &res->body_len);
    json_decref(p);
}

void dk_res_problem(dk_res *res, dk_status st, const char *detail_fmt, ...)
{
    va_list ap;
    va_start(ap, detail_fmt);
    response_problem_v(res, st, NULL, detail_fmt, ap);
    va_end(ap);
}

void dk_res_problem_ext(dk_res *res, dk_status st, json_t *ext, const char *detail_fmt, ...)
{
    va_list ap;
    va_start(ap, detail_fmt);
    response_problem_v(res, st, ext, detail_fmt, ap);
    va_end(ap);
}

void dk_errors_init(dk_errors *e)
{
    e->list = NULL;
}

void dk_errors_add(dk_errors *e, const char *field, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!e->list)
        e->list = json_array();
    json_t *item = json_object();
    json_object_set_new(item, "field", json_string(field));
    json_object_set_new(item, "message", json_string(msg));
    json_array_append_new(e->list, item);
}

bool dk_errors_any(const dk_errors *e)
{
    return e->list && json_array_size(e->list) > 0;
}

void dk_errors_release(dk_errors *e)
{
    json_decref(e->list);
    e->list = NULL;
}

/* {"errors": [...]} taken from e (emptied); *ret_n gets how many. */
static json_t *response_errors_ext(dk_errors *e, size_t *ret_n)
{
    json_t *ext = json_object();
    json_object_set_new(ext, "errors", e->list ? e->list : json_array());
    e->list = NULL;
    *ret_n = json_array_size(json_object_get(ext, "errors"));
    return ext;
}

void dk_res_validation(dk_res *res, dk_errors *e)
{
    size_t n = 0;
    json_t *ext = response_errors_ext(e, &n);
    dk_res_problem_ext(res, DK_E_VALIDATION, ext, "%zu field%s failed validation", n,
                       n == 1 ? "" : "s");
}

void dk_res_bad_query(dk_res *res, dk_errors *e)
{
    size_t n = 0;
    json_t *ext = response_errors_ext(e, &n);
    dk_res_problem_ext(res, DK_E_BAD_REQUEST, ext, "%zu query parameter%s %s invalid", n,
                       n == 1 ? "" : "s", n == 1 ? "is" : "are");
}
