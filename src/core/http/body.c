/* body.c — request bodies: buffered ones (collected by server.c up to the route's limit) and
 * streamed ones (DK_ROUTE_BODY_STREAM), handed to the handler chunk by chunk with back-pressure.
 * Contract: dk_req_body_streaming/stream/resume in core/http.h. A handler that takes less than
 * it is offered suspends the connection until dk_req_body_resume; past the body limit on_end
 * gets false and the rest is discarded (413).
 * Locking: x->bs_lock guards the flags shared with the handler's threads (paused, wake,
 * answered, waiting, orphaned); x->bs_cb_lock is held while on_chunk/on_end run, so that
 * dk_req_resume can clear them and know none is running. bs_cb_lock is never held while taking
 * bs_lock. */
#include <string.h>

#include "core/http/http_internal.h"
#include "core/alloc.h"
#include "core/banned.h"

bool dk_req_body_streaming(const dk_req *req)
{
    return ((const struct dk_http_exchange *)(const void *)req)->bs;
}

void dk_req_body_stream(dk_req *req, dk_body_chunk_fn on_chunk, dk_body_end_fn on_end, void *ctx)
{
    struct dk_http_exchange *x = (struct dk_http_exchange *)req;
    if (!x->bs)
        return;
    pthread_mutex_lock(&x->bs_cb_lock);
    x->on_chunk = on_chunk;
    x->on_end = on_end;
    x->bs_ctx = ctx;
    pthread_mutex_unlock(&x->bs_cb_lock);
}

void dk_req_body_resume(dk_req *req)
{
    struct dk_http_exchange *x = (struct dk_http_exchange *)req;
    if (!x->bs)
        return;
    pthread_mutex_lock(&x->bs_lock);
    if (x->bs_paused) {
        x->bs_paused = false;
        MHD_resume_connection(req->conn);
    } else if (!x->bs_orphaned && !x->bs_answered) {
        x->bs_wake = true;
    }
    pthread_mutex_unlock(&x->bs_lock);
}

/* Offers data to on_chunk; returns what it took (everything once the callbacks are gone: the
 * rest of the body is discarded). */
static size_t body_stream_chunk(struct dk_http_exchange *x, const char *data, size_t n)
{
    pthread_mutex_lock(&x->bs_cb_lock);
    size_t took = x->on_chunk ? x->on_chunk(x->bs_ctx, data, n) : n;
    pthread_mutex_unlock(&x->bs_cb_lock);
    return took < n ? took : n;
}

/* Ends the body for the handler (once); no callback runs afterwards. */
void dk_http_body_stream_end(struct dk_http_exchange *x, bool ok)
{
    pthread_mutex_lock(&x->bs_cb_lock);
    dk_body_end_fn fn = x->on_end;
    x->on_chunk = NULL;
    x->on_end = NULL;
    if (fn)
        fn(x->bs_ctx, ok);
    pthread_mutex_unlock(&x->bs_cb_lock);
}

void dk_http_body_stream_destroy(void *p)
{
    struct dk_http_exchange *x = p;
    pthread_mutex_destroy(&x->bs_lock);
    pthread_mutex_destroy(&x->bs_cb_lock);
}

/* Body data on a streaming exchange: to on_chunk until it takes less, then the connection is
 * suspended with the rest left in libmicrohttpd's buffer (*upload_size) for after
 * dk_req_body_resume. Past the body limit the handler is told (on_end false) and the rest is
 * discarded; the final call answers 413. */
void dk_http_body_stream_upload(struct dk_http_exchange *x, const char *data, size_t *upload_size)
{
    size_t n = *upload_size;
    if (!x->too_large && x->bs_received + n > x->body_limit) {
        x->too_large = true;
        dk_http_body_stream_end(x, false);
    }
    if (x->too_large) {
        *upload_size = 0;
        return;
    }
    while (n > 0) {
        size_t took = body_stream_chunk(x, data, n);
        x->bs_received += took;
        data += took;
        n -= took;
        if (n == 0)
            break;
        pthread_mutex_lock(&x->bs_lock);
        if (x->bs_wake || x->bs_answered) { /* room came meanwhile, or nobody wants it */
            x->bs_wake = false;
            pthread_mutex_unlock(&x->bs_lock);
            continue;
        }
        x->bs_paused = true;
        MHD_suspend_connection(x->req.conn);
        pthread_mutex_unlock(&x->bs_lock);
        break;
    }
    *upload_size = n;
}

void dk_http_body_buf_free(void *p)
{
    struct dk_http_exchange *x = p;
    dk_free(x->buf);
    x->buf = NULL;
}

/* Whether the request's body streams to its handler: a DK_ROUTE_BODY_STREAM route and a body
 * of unknown length or declared larger than DK_BODY_STREAM_AFTER. */
bool dk_http_body_streams(dk_http_server *srv, const struct dk_http_route_entry *r, bool chunked,
                          uint64_t declared)
{
    if (!srv->body_stream_routes || !(chunked || declared > DK_BODY_STREAM_AFTER))
        return false;
    return r && (r->flags & DK_ROUTE_BODY_STREAM) != 0;
}
