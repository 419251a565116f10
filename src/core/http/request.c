/* request.c — what a handler reads from its request: path parameters, headers, the query,
 * the JSON body; and suspending a request to answer it from another thread.
 * Contract: dk_req_* in core/http.h. Everything read lives in the request's arena.
 * Locking: none of its own, except dk_req_resume on a streamed body, which takes
 * x->bs_cb_lock (waits for a running body callback) and then x->bs_lock (body.c). */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/http/http_internal.h"
#include "core/json.h"
#include "core/str.h"
#include "core/banned.h"

const char *dk_req_param(const dk_req *req, const char *name)
{
    for (int i = 0; i < req->nparams; i++)
        if (strcmp(req->param_names[i], name) == 0)
            return req->param_values[i];
    return NULL;
}

const char *dk_req_header(const dk_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *dk_req_query(const dk_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

/* The query string re-encoded (dk_req_query_string): the one builder and the one encoder. */
struct request_query_build {
    dk_arena *arena;
    dk_sb sb;
};

static void request_query_escape(struct request_query_build *q, const char *s)
{
    if (!s)
        return;
    const char *e = dk_percent_encode(q->arena, s, "");
    dk_sb_put(&q->sb, e, strlen(e));
}

static enum MHD_Result request_query_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                         const char *value)
{
    struct request_query_build *q = cls;
    if (q->sb.len)
        dk_sb_put(&q->sb, "&", 1);
    request_query_escape(q, key);
    if (value) {
        dk_sb_put(&q->sb, "=", 1);
        request_query_escape(q, value);
    }
    return MHD_YES;
}

const char *dk_req_query_string(dk_req *req)
{
    struct request_query_build q = {.arena = req->arena};
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, request_query_arg, &q);
    return dk_sb_take(&q.sb, req->arena);
}

struct request_header_iter {
    void (*fn)(void *ctx, const char *name, const char *value);
    void *ctx;
};

static enum MHD_Result request_header_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                         const char *value)
{
    struct request_header_iter *it = cls;
    it->fn(it->ctx, key, value ? value : "");
    return MHD_YES;
}

void dk_req_each_header(const dk_req *req,
                        void (*fn)(void *ctx, const char *name, const char *value), void *ctx)
{
    struct request_header_iter it = {fn, ctx};
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, request_header_cb, &it);
}

static bool request_content_type_is_json(const char *ct)
{
    if (!ct)
        return false;
    while (*ct == ' ')
        ct++;
    const char *want = "application/json";
    size_t n = strlen(want);
    if (strncasecmp(ct, want, n) != 0)
        return false;
    const char *rest = ct + n;
    while (*rest == ' ')
        rest++;
    return *rest == '\0' || *rest == ';';
}

dk_status dk_req_json(dk_req *req, dk_res *res, json_t **ret_obj)
{
    if (!request_content_type_is_json(dk_req_header(req, MHD_HTTP_HEADER_CONTENT_TYPE))) {
        dk_res_problem(res, DK_E_MEDIA_TYPE, "the request body must be sent as application/json");
        return DK_E_MEDIA_TYPE;
    }
    json_error_t err;
    json_t *v = json_loadb(req->body, req->body_len, JSON_DECODE_ANY, &err);
    if (!v) {
        dk_res_problem(res, DK_E_BAD_REQUEST, "malformed JSON at line %d, column %d: %s", err.line,
                       err.column, err.text);
        return DK_E_BAD_REQUEST;
    }
    dk_json_own(req->arena, v);
    if (!json_is_object(v)) {
        dk_errors e;
        dk_errors_init(&e);
        dk_errors_add(&e, "body", "must be a JSON object");
        dk_res_validation(res, &e);
        return DK_E_VALIDATION;
    }
    *ret_obj = v;
    return DK_OK;
}

void dk_req_suspend(dk_req *req)
{
    struct dk_http_exchange *x = (struct dk_http_exchange *)req; /* req is the first member */
    x->suspended = true;
    if (x->bs)
        return; /* the connection goes on reading the body; it waits after it if need be */
    MHD_suspend_connection(req->conn);
}

void dk_req_resume(dk_req *req)
{
    struct dk_http_exchange *x = (struct dk_http_exchange *)req;
    if (!x->bs) {
        MHD_resume_connection(req->conn);
        return;
    }
    pthread_mutex_lock(&x->bs_cb_lock); /* waits for a callback that is running */
    x->on_chunk = NULL;
    x->on_end = NULL;
    pthread_mutex_unlock(&x->bs_cb_lock);
    pthread_mutex_lock(&x->bs_lock);
    x->bs_answered = true;
    if (x->bs_orphaned) {
        pthread_mutex_unlock(&x->bs_lock);
        dk_http_server_exchange_free(x);
        return;
    }
    /* a connection held back by on_chunk reads (and discards) the rest of the body; one
     * waiting after the body sends the answer */
    bool wake = x->bs_paused || x->bs_waiting;
    x->bs_paused = x->bs_waiting = false;
    if (wake)
        MHD_resume_connection(req->conn);
    pthread_mutex_unlock(&x->bs_lock);
}
