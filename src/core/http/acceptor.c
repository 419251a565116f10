/* acceptor.c — the thread that accepts connections and deals them out to libmicrohttpd's
 * worker threads.
 * Why: left to itself, libmicrohttpd lets every worker watch the listening socket, and the one
 * that wakes first accepts up to ten connections in a row. A client that opens its connections
 * together (a load balancer's pool, a browser, wrk) then lands most of them on two or three of
 * the eight workers (measured: 14, 8 and 7 of 32 connections on three workers, five nearly
 * idle), and a request waits behind its neighbours' database round trips on a busy worker while
 * others sleep. MHD_add_connection places a connection on the worker at (fd mod pool size),
 * the next one with room if that one is full, so connections accepted here are spread evenly.
 * Contract: dk_http_acceptor_start takes the listening socket and starts the thread;
 * dk_http_acceptor_stop takes the connections already waiting in the backlog, then closes the
 * socket (new connections are refused from then on); both are called by server.c only.
 * Locking: none shared — the thread owns the socket until stop joins it. */
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/http/http_internal.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/banned.h"

static void *acceptor_main(void *arg)
{
    dk_http_server *srv = arg;
    int64_t last_warn = 0;
    for (;;) {
        struct pollfd p[2] = {{.fd = srv->listen_fd, .events = POLLIN},
                              {.fd = srv->acceptor_wake, .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            dk_log_error("http: poll on the listening socket failed: %s", strerror(errno));
            return NULL;
        }
        /* stopping (drain): the connections already in the backlog are taken and served
         * first — closing the socket over them would reset clients that are connected and may
         * have sent their request; those that come later are refused */
        bool stopping = p[1].revents != 0;
        /* take what the backlog holds, then poll again (the socket is non-blocking) */
        for (int n = 0; n < (stopping ? 4096 : 64); n++) {
            struct sockaddr_storage ss;
            socklen_t sl = sizeof ss;
            int fd =
                accept4(srv->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd < 0) {
                int e = errno;
                if (e == EAGAIN || e == EWOULDBLOCK || e == EINTR)
                    break;
                if (e == ECONNABORTED || e == EPROTO || e == EPERM)
                    continue; /* the client left before we took it */
                /* out of file descriptors (EMFILE/ENFILE) or memory: the connection stays in the
                 * backlog; look again shortly rather than spin */
                int64_t now = dk_mono_ms();
                if (now - last_warn >= 10000) {
                    dk_log_warn("http: cannot accept a connection: %s (retrying)", strerror(e));
                    last_warn = now;
                }
                struct timespec ts = {0, 20 * 1000 * 1000};
                nanosleep(&ts, NULL);
                break;
            }
            /* libmicrohttpd closes the socket itself when it refuses it (at its connection
             * limit, the guard's per-address limit) */
            atomic_fetch_add(&srv->handing, 1); /* the guard's NOTIFY_STARTED takes it back */
            if (MHD_add_connection(srv->daemon, fd, (const struct sockaddr *)&ss, sl) != MHD_YES)
                atomic_fetch_sub(&srv->handing, 1); /* refused before any worker saw it */
        }
        if (stopping) {
            /* at once: a connection that completes its handshake between the last accept and
             * this close is reset (nothing can prevent that), one that comes after is refused */
            close(srv->listen_fd);
            srv->listen_fd = -1;
            return NULL;
        }
    }
}

bool dk_http_acceptor_start(dk_http_server *srv, int listen_fd)
{
    srv->listen_fd = listen_fd;
    srv->acceptor_wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (srv->acceptor_wake < 0)
        return false;
    if (pthread_create(&srv->acceptor, NULL, acceptor_main, srv) != 0) {
        close(srv->acceptor_wake);
        srv->acceptor_wake = -1;
        return false;
    }
    srv->acceptor_running = true;
    return true;
}

void dk_http_acceptor_stop(dk_http_server *srv)
{
    if (!srv->acceptor_running)
        return;
    uint64_t one = 1;
    ssize_t w = write(srv->acceptor_wake, &one, sizeof one);
    (void)w; /* an eventfd write fails only on overflow, which one write cannot reach */
    pthread_join(srv->acceptor, NULL);
    srv->acceptor_running = false;
    close(srv->acceptor_wake);
    srv->acceptor_wake = -1;
    if (srv->listen_fd >= 0) { /* the thread ended on an error before stopping */
        close(srv->listen_fd);
        srv->listen_fd = -1;
    }
}
