/* guard.c — the connection guard: slowloris deadlines, the connection cap, the raw request-line
 * check. Every connection is tracked from accept to close (libmicrohttpd's socket context), so
 * that
 *  - the housekeeping thread closes a connection whose request head is not complete by its
 *    deadline: server.header_timeout after the connection opened or its request line arrived,
 *    DK_HTTP_IDLE_TIMEOUT_S after its previous response (a client trickling header bytes —
 *    slowloris — keeps libmicrohttpd's inactivity timer alive, not this deadline);
 *  - a request beyond server.max_connections open connections is answered 503 at once;
 *  - the raw request line is checked before libmicrohttpd decodes it into C strings, where a
 *    percent-encoded NUL would cut a value short and invalid UTF-8 would reach the database.
 * Locking: guard_lock protects the list and each entry's fd, deadline and reaped flag; the
 * per-request URI flags are written and read on the connection's own thread only. */

#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "core/http/http_internal.h"
#include "core/alloc.h"
#include "core/log.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "core/banned.h"

struct dk_http_conn *dk_http_guard_conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* Links c into the list its deadline belongs on (guard_lock held). */
static void guard_conn_link(dk_http_server *srv, struct dk_http_conn *c)
{
    c->held = c->deadline_ms == INT64_MAX;
    struct dk_http_conn **head = c->held ? &srv->conns_held : &srv->conns;
    c->prev = NULL;
    c->next = *head;
    if (*head)
        (*head)->prev = c;
    *head = c;
}

static void guard_conn_unlink(dk_http_server *srv, struct dk_http_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else if (c->held)
        srv->conns_held = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

/* Sets the deadline (guard_lock held), moving c between the lists when it changes sides. */
static void guard_conn_deadline_set(dk_http_server *srv, struct dk_http_conn *c, int64_t at)
{
    bool held = at == INT64_MAX;
    c->deadline_ms = at;
    if (held != c->held) {
        guard_conn_unlink(srv, c);
        guard_conn_link(srv, c);
    }
}

void dk_http_guard_deadline_set(dk_http_server *srv, struct dk_http_conn *c, int64_t at,
                                bool sooner_only)
{
    if (!c)
        return;
    pthread_mutex_lock(&srv->guard_lock);
    if (!sooner_only || at < c->deadline_ms)
        guard_conn_deadline_set(srv, c, at);
    pthread_mutex_unlock(&srv->guard_lock);
}

void dk_http_guard_request_done(dk_http_server *srv, struct dk_http_conn *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&srv->guard_lock);
    c->busy = false;
    c->answered++;
    guard_conn_deadline_set(srv, c, dk_mono_ms() + DK_HTTP_IDLE_TIMEOUT_S * 1000);
    pthread_mutex_unlock(&srv->guard_lock);
}

void dk_http_guard_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                                 enum MHD_ConnectionNotificationCode code)
{
    dk_http_server *srv = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        struct dk_http_conn *c = DK_NEW(struct dk_http_conn);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        c->fd = ci ? ci->connect_fd : -1;
        c->opened_ms = dk_mono_ms();
        c->deadline_ms = c->opened_ms + srv->header_timeout_ms;
        pthread_mutex_lock(&srv->guard_lock);
        guard_conn_link(srv, c);
        pthread_mutex_unlock(&srv->guard_lock);
        atomic_fetch_add(&srv->nconns, 1);
        atomic_fetch_sub(&srv->handing, 1); /* handed by the acceptor, now known here */
        *socket_context = c;
        return;
    }
    struct dk_http_conn *c = *socket_context;
    if (!c)
        return;
    /* libmicrohttpd closes the socket after this returns: the housekeeper, which shuts sockets
     * down under the lock, can no longer reach it */
    pthread_mutex_lock(&srv->guard_lock);
    guard_conn_unlink(srv, c);
    pthread_mutex_unlock(&srv->guard_lock);
    atomic_fetch_sub(&srv->nconns, 1);
    dk_free(c);
    *socket_context = NULL;
}

/* Closes the connections whose request head is late (the housekeeping thread). Only those
 * with a deadline are walked: with thousands of event streams open, walking them all twice a
 * second was half of an idle process's CPU (docs/design/measurements.md). */
void dk_http_guard_reap(dk_http_server *srv)
{
    int64_t now = dk_mono_ms();
    unsigned n = 0;
    pthread_mutex_lock(&srv->guard_lock);
    for (struct dk_http_conn *c = srv->conns; c; c = c->next) {
        if (!c->reaped && c->fd >= 0 && now > c->deadline_ms) {
            (void)shutdown(c->fd, SHUT_RDWR); /* libmicrohttpd sees the end and closes it */
            c->reaped = true;
            n++;
        }
    }
    pthread_mutex_unlock(&srv->guard_lock);
    if (n) {
        atomic_fetch_add(&srv->reaped, n);
        dk_log_debug("closed %u connection(s) whose request head took longer than %d ms", n,
                     srv->header_timeout_ms);
    }
}

/* Connections a graceful stop waits for: a request under way, or opened moments ago with no
 * request yet (its request may be on the wire; closing it would fail a client that did
 * nothing wrong). Idle kept-alive connections are not waited for. */
int dk_http_guard_pending(dk_http_server *srv)
{
    int64_t now = dk_mono_ms();
    int n = 0;
    pthread_mutex_lock(&srv->guard_lock);
    for (int l = 0; l < 2; l++)
        for (struct dk_http_conn *c = l ? srv->conns_held : srv->conns; c; c = c->next)
            if (!c->reaped && (c->busy || (c->answered == 0 && now - c->opened_ms < 1000)))
                n++;
    pthread_mutex_unlock(&srv->guard_lock);
    int handing = atomic_load(&srv->handing);
    return n + (handing > 0 ? handing : 0);
}

/* True when s[0, n) percent-decodes (and '+' → ' ' when plus) to text without a NUL that is
 * valid UTF-8. Raw bytes are taken as they are. */
static bool guard_uri_part_clean(const char *s, size_t n, bool plus)
{
    char stackbuf[512];
    char *buf = n < sizeof stackbuf ? stackbuf : dk_malloc(n + 1);
    size_t m = 0;
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        char ch = s[i];
        if (ch == '%' && i + 2 < n && dk_hex_digit(s[i + 1]) >= 0 && dk_hex_digit(s[i + 2]) >= 0) {
            ch = (char)(dk_hex_digit(s[i + 1]) * 16 + dk_hex_digit(s[i + 2]));
            i += 2;
        } else if (ch == '+' && plus) {
            ch = ' ';
        }
        if (ch == '\0')
            ok = false;
        buf[m++] = ch;
    }
    if (ok)
        ok = dk_utf8_len(buf, m) >= 0;
    if (buf != stackbuf)
        dk_free(buf);
    return ok;
}

/* Checks the raw request-target of the current request (path and query). */
static void guard_uri_check(const char *uri, bool *ret_bad_path, char *bad_param, size_t cap)
{
    const char *q = strchr(uri, '?');
    size_t plen = q ? (size_t)(q - uri) : strlen(uri);
    *ret_bad_path = !guard_uri_part_clean(uri, plen, false);
    bad_param[0] = '\0';
    if (!q)
        return;
    const char *p = q + 1;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t klen = eq ? (size_t)(eq - p) : len;
        bool key_ok = guard_uri_part_clean(p, klen, true);
        bool val_ok = !eq || guard_uri_part_clean(eq + 1, len - klen - 1, true);
        if (!key_ok || !val_ok) {
            /* name the parameter by its key, as the client wrote it (printable ASCII only) */
            size_t o = 0;
            for (size_t i = 0; i < klen && o + 1 < cap; i++)
                bad_param[o++] = (p[i] > 0x20 && p[i] < 0x7f) ? p[i] : '?';
            bad_param[o] = '\0';
            if (!o)
                dk_strlcpy(bad_param, "?", cap);
            return;
        }
        if (!amp)
            break;
        p = amp + 1;
    }
}

void *dk_http_guard_on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    dk_http_server *srv = cls;
    struct dk_http_conn *c = dk_http_guard_conn_of(conn);
    if (c) {
        guard_uri_check(uri, &c->bad_path, c->bad_param, sizeof c->bad_param);
        pthread_mutex_lock(&srv->guard_lock);
        c->busy = true;
        pthread_mutex_unlock(&srv->guard_lock);
        dk_http_guard_deadline_set(srv, c, dk_mono_ms() + srv->header_timeout_ms, true);
    }
    return NULL;
}

/* Answers what the guard refuses before anything else runs; false when the request may go on. */
bool dk_http_guard_refuses(dk_http_server *srv, struct dk_http_exchange *x,
                           struct MHD_Connection *conn)
{
    struct dk_http_conn *c = dk_http_guard_conn_of(conn);
    if (srv->max_connections > 0 && atomic_load(&srv->nconns) > srv->max_connections) {
        dk_res_header(&x->res, "Retry-After", "1");
        dk_res_header(&x->res, "Connection", "close");
        dk_res_problem(&x->res, DK_E_UNAVAILABLE,
                       "the server has too many open connections; try again shortly");
        return true;
    }
    if (c && c->bad_path) {
        dk_res_problem(&x->res, DK_E_NOT_FOUND,
                       "no such resource (the path holds a NUL byte or invalid UTF-8)");
        return true;
    }
    if (c && c->bad_param[0]) {
        dk_errors e;
        dk_errors_init(&e);
        dk_errors_add(&e, c->bad_param, "holds a NUL byte or invalid UTF-8");
        dk_res_bad_query(&x->res, &e);
        return true;
    }
    /* (a NUL inside a header value cannot be seen here: libmicrohttpd 0.9.75 ends the value
     * at it before any callback runs) */
    return false;
}
