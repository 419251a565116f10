/* offload.c — handlers that run on the offload pool (DK_ROUTE_OFFLOAD: CPU-heavy work such as
 * password hashing) while the connection is suspended; and dk_req_client_gone, which tells a
 * handler whether its client has left.
 * Contract: the job answers (or 499 when the client left while it waited) and resumes the
 * request. Locking: none; the exchange belongs to the job until dk_req_resume. */
#include <poll.h>
#include <sys/socket.h>

#include "core/http/http_internal.h"
#include "core/log.h"
#include "core/trace.h"
#include "core/banned.h"

/* A handler on the offload pool: the connection is suspended meanwhile. */
bool dk_req_client_gone(const dk_req *req)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return false;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0)
        return false;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR))
        return true;
    char c;
    return recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

void dk_http_offload_run(void *arg)
{
    struct dk_http_exchange *x = arg;
    dk_log_set_context(x->req.request_id, x->req.trace_id);
    dk_trace_enter(x->req.trace_id, x->req.span_id, x->req.trace_sampled);
    /* a request that waited in the queue while its client gave up is not worth its CPU (an
     * Argon2 hash): 499, as for any client that leaves before its answer */
    if (dk_req_client_gone(&x->req))
        dk_res_empty(&x->res, 499);
    else
        x->offload_handler(&x->req, &x->res);
    if (x->res.status == 0)
        dk_res_problem(&x->res, DK_E_INTERNAL, "the handler produced no response");
    dk_log_set_context(NULL, NULL);
    dk_req_resume(&x->req);
}
