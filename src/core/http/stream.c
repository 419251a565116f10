/* stream.c — reference-counted response streams (server-sent events, proxied downloads).
 * Contract: dk_res_stream/dk_stream_* in core/http.h. The producer writes from any thread;
 * libmicrohttpd reads through stream_read; beyond a high-water mark the producer is told
 * when the buffer drains; a client that stops reading is cut off at DK_STREAM_MAX_BUFFER.
 * Long-lived streams (DK_ROUTE_STREAM) are ended when the server drains.
 * Locking: s->lock guards the buffer and flags; s->cb_lock is held while on_drained runs (so
 * dk_stream_release can clear it); srv->streams_lock guards the server's list of open streams
 * and may be held while taking s->lock, never the other way round. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "core/http/http_internal.h"
#include "core/alloc.h"
#include "core/log.h"
#include "core/banned.h"

#define DK_STREAM_HIGH_WATER (256u * 1024u)
/* Unsent bytes a stream may hold; a write beyond it cuts the connection (a client that stopped
 * reading an event stream). Producers that respect the high-water mark never reach it. */
#define DK_STREAM_MAX_BUFFER (4u * DK_STREAM_HIGH_WATER)
/* An idle event stream should cost little: its buffer starts small and is freed whenever the
 * client has taken everything (a heartbeat or a frame is a few hundred bytes), and
 * libmicrohttpd gets a small block for HTTP/1.0 clients (chunked HTTP/1.1 responses are read
 * straight into the connection's own buffer; the block is only allocated, 16 KiB a stream). */
#define DK_STREAM_FIRST_CAP  256u
#define DK_STREAM_BLOCK_LONG 1024u
#define DK_STREAM_BLOCK      (16u * 1024u)
/* Frames up to this size are written straight to an idle stream's socket (see
 * stream_send_direct); it is far below the smallest TCP send buffer, so a socket takes the
 * whole chunk at once unless the client is a full send buffer behind. */
#define DK_STREAM_DIRECT_MAX (4u * 1024u)

/* References: the producer's (until dk_stream_release), the exchange's (until the request's
 * arena is freed: the request is over, sent or abandoned) and, once the connection reads from
 * it, the MHD response's (until libmicrohttpd destroys the response). The stream is "gone"
 * when either of the last two lets go: nobody will read it any more. */
struct dk_stream {
    pthread_mutex_t lock;
    pthread_mutex_t cb_lock; /* held while on_drained runs; dk_stream_release clears it */
    int refs;
    char *buf;
    size_t off, len, cap; /* unsent bytes are buf[off, len) */
    bool ended, err, gone, suspended, want_drain, listed, long_lived, woken;
    bool detached; /* the exchange's reference passed to a finished-request record (server.c) */
    bool direct;   /* chunked long-lived stream: idle writes may go straight to the socket */
    int fd;        /* the connection's socket (valid while conn is set) */
    struct MHD_Connection *conn;
    void (*on_drained)(void *ctx);
    void *ctx;
    dk_http_server *srv;
    struct dk_stream *prev, *next; /* srv->streams */
};

void dk_stream_end(dk_stream *s, bool err);

/* Writes to streams since the start, by the way they reached the connection. */
static atomic_ullong stream_n_direct, stream_n_resumed;

void dk_stream_write_counts(unsigned long long *direct, unsigned long long *resumed)
{
    *direct = atomic_load(&stream_n_direct);
    *resumed = atomic_load(&stream_n_resumed);
}

static void stream_unref(dk_stream *s)
{
    pthread_mutex_lock(&s->lock);
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&s->lock);
    if (!last)
        return;
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->cb_lock);
    dk_free(s->buf);
    dk_free(s);
}

/* Runs the producer's on_drained unless it has released the stream meanwhile. */
static void stream_notify(dk_stream *s)
{
    pthread_mutex_lock(&s->cb_lock);
    if (s->on_drained)
        s->on_drained(s->ctx);
    pthread_mutex_unlock(&s->cb_lock);
}

/* Nobody reads the stream any more (the response is done or the request is over): later
 * writes fail. A producer still producing is woken through on_drained (it may be waiting for
 * a drain that will never come) and finds the stream closed. */
static void stream_gone(dk_stream *s)
{
    pthread_mutex_lock(&s->lock);
    s->gone = true;
    s->conn = NULL;
    bool wake = !s->ended && !s->woken;
    s->woken = true;
    pthread_mutex_unlock(&s->lock);
    if (wake)
        stream_notify(s);
}

/* The request's arena is being freed (server_on_completed): the exchange lets go — unless its
 * reference was passed on (dk_http_stream_detach): then dk_http_stream_detached_done lets go. */
static void stream_exchange_done(void *p)
{
    dk_stream *s = p;
    pthread_mutex_lock(&s->lock);
    bool detached = s->detached;
    pthread_mutex_unlock(&s->lock);
    if (detached)
        return;
    stream_gone(s);
    stream_unref(s);
}

bool dk_http_stream_detach(dk_stream *s)
{
    pthread_mutex_lock(&s->lock);
    bool ok = s->long_lived && !s->detached;
    if (ok)
        s->detached = true;
    pthread_mutex_unlock(&s->lock);
    return ok;
}

void dk_http_stream_detached_done(dk_stream *s)
{
    stream_gone(s);
    stream_unref(s);
}

/* Whether the request's route is a long-lived stream (DK_ROUTE_STREAM): those are ended when
 * the server drains; other streamed bodies are in-flight requests the drain waits for. */
static bool stream_route_is_stream(const dk_http_server *srv, const char *route_pattern)
{
    for (int i = 0; route_pattern && i < srv->nroutes; i++)
        if (srv->routes[i].pattern == route_pattern)
            return (srv->routes[i].flags & DK_ROUTE_STREAM) != 0;
    return false;
}

dk_stream *dk_res_stream(dk_res *res, int status, const char *content_type,
                         void (*on_drained)(void *ctx), void *ctx)
{
    struct dk_http_exchange *x =
        (struct dk_http_exchange *)(void *)((char *)res - offsetof(struct dk_http_exchange, res));
    dk_stream *s = dk_calloc(1, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->cb_lock, NULL);
    s->refs = 2; /* the producer's and the exchange's */
    s->on_drained = on_drained;
    s->ctx = ctx;
    s->srv = x->srv;
    s->long_lived = stream_route_is_stream(x->srv, x->req.route_pattern);
    dk_arena_defer(x->req.arena, stream_exchange_done, s);
    res->status = status;
    res->content_type = content_type;
    res->body = "";
    res->body_len = 0;
    x->stream = s;
    return s;
}

/* Hands data to libmicrohttpd; with nothing buffered the connection is suspended until the
 * producer writes or ends (returning 0 with the connection suspended is MHD's way to wait). */
static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    dk_stream *s = cls;
    pthread_mutex_lock(&s->lock);
    size_t avail = s->len - s->off;
    if (avail > 0) {
        size_t n = avail < max ? avail : max;
        memcpy(out, s->buf + s->off, n);
        s->off += n;
        bool drained = false;
        if (s->off == s->len) {
            s->off = s->len = 0;
            drained = s->want_drain;
            s->want_drain = false;
            if (s->long_lived) { /* an idle event stream holds no buffer */
                dk_free(s->buf);
                s->buf = NULL;
                s->cap = 0;
            }
        }
        pthread_mutex_unlock(&s->lock);
        if (drained)
            stream_notify(s);
        return (ssize_t)n;
    }
    if (s->ended) {
        bool err = s->err;
        pthread_mutex_unlock(&s->lock);
        return err ? MHD_CONTENT_READER_END_WITH_ERROR : MHD_CONTENT_READER_END_OF_STREAM;
    }
    s->suspended = true;
    MHD_suspend_connection(s->conn);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

/* The connection is done with the response (sent, or the client went away). */
static void stream_conn_done(void *cls)
{
    dk_stream *s = cls;
    dk_http_server *srv = s->srv;
    pthread_mutex_lock(&srv->streams_lock);
    if (s->listed) {
        if (s->prev)
            s->prev->next = s->next;
        else
            srv->streams = s->next;
        if (s->next)
            s->next->prev = s->prev;
        s->listed = false;
    }
    pthread_mutex_unlock(&srv->streams_lock);
    stream_gone(s);
    stream_unref(s);
}

struct MHD_Response *dk_http_stream_response(dk_stream *s, struct MHD_Connection *conn,
                                             bool chunked)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    pthread_mutex_lock(&s->lock);
    if (s->gone) { /* cannot happen while the exchange holds its reference; be safe */
        pthread_mutex_unlock(&s->lock);
        return NULL;
    }
    s->conn = conn;
    s->fd = ci ? ci->connect_fd : -1;
    s->direct = chunked && s->long_lived && s->fd >= 0;
    s->refs++;
    pthread_mutex_unlock(&s->lock);
    struct MHD_Response *r = MHD_create_response_from_callback(
        MHD_SIZE_UNKNOWN, s->long_lived ? DK_STREAM_BLOCK_LONG : DK_STREAM_BLOCK, stream_read, s,
        stream_conn_done);
    if (!r) {
        stream_gone(s);
        stream_unref(s);
        return NULL;
    }
    dk_http_server *srv = s->srv;
    pthread_mutex_lock(&srv->streams_lock);
    s->listed = true;
    s->prev = NULL;
    s->next = srv->streams;
    if (srv->streams)
        srv->streams->prev = s;
    srv->streams = s;
    pthread_mutex_unlock(&srv->streams_lock);
    if (s->long_lived && atomic_load(&srv->draining))
        dk_stream_end(s, false);
    return r;
}

/* Cuts the connection of a stream that cannot go on (s->lock held): the client sees the
 * response end abruptly, and a producer's later writes fail. */
static void stream_cut(dk_stream *s)
{
    s->ended = true;
    s->err = true;
    s->off = s->len = 0;
    if (s->conn) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(s->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (ci)
            (void)shutdown(ci->connect_fd, SHUT_RDWR);
    }
    if (s->suspended && s->conn) {
        s->suspended = false;
        MHD_resume_connection(s->conn);
    }
}

/* An idle event stream's frame, written as one HTTP chunk straight to its socket by the
 * producer's thread (s->lock held): 1 when all of it was sent, 0 when nothing was (the caller
 * buffers it and resumes the connection), -1 when only part was (the stream must be cut).
 *
 * Why: libmicrohttpd 0.9.75 walks every suspended connection of a thread each time one is
 * resumed, so with thousands of idle streams a resume per frame cost a large share of the CPU
 * (docs/design/measurements.md). Safe because the connection is suspended: libmicrohttpd
 * suspends it only from stream_read, after everything it had was handed to the kernel, does
 * not touch the socket until it is resumed, and tells us (stream_gone, under s->lock) before
 * it closes the socket; the framing matches its own (chunked: s->direct). Bytes the kernel
 * still queues for the socket (sent earlier, not yet acknowledged) go out first: the order
 * holds. A small chunk is taken whole unless the socket's send buffer is full: then nothing
 * (EAGAIN: the buffered path, as before) or, when the buffer fills in the middle of it, a part
 * — the client is a whole send buffer behind, and is cut like one that falls DK_STREAM_MAX_BUFFER
 * behind (it reconnects and replays after its Last-Event-ID). No check of the queue first: a
 * SIOCOUTQ ioctl per heartbeat was a sixth of an idle process's CPU with 10,000 streams, and on
 * a link with a real round trip it sent every frame written within a round trip of the last
 * one down the resume path (docs/design/measurements.md). */
static int stream_send_direct(dk_stream *s, const void *data, size_t len)
{
    char head[24];
    int hl = snprintf(head, sizeof head, "%zx\r\n", len);
    struct iovec iov[3] = {
        {head, (size_t)hl}, {(void *)(uintptr_t)data, len}, {(void *)(uintptr_t) "\r\n", 2}};
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 3};
    ssize_t n;
    do
        n = sendmsg(s->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n == (ssize_t)((size_t)hl + len + 2))
        return 1;
    /* nothing sent: the socket is full or broken; the buffered path resumes the connection
     * and libmicrohttpd finds out which */
    if (n <= 0)
        return 0;
    dk_log_warn("http: an event stream is cut: its socket took %zd of %zu bytes of a frame", n,
                (size_t)hl + len + 2);
    return -1;
}

bool dk_stream_write(dk_stream *s, const void *data, size_t len)
{
    pthread_mutex_lock(&s->lock);
    if (s->gone || s->ended) {
        pthread_mutex_unlock(&s->lock);
        return false;
    }
    if (s->direct && s->suspended && s->conn && s->len == s->off && len > 0 &&
        len <= DK_STREAM_DIRECT_MAX) {
        int sent = stream_send_direct(s, data, len);
        if (sent != 0) {
            if (sent < 0)
                stream_cut(s); /* half a chunk on the wire: the client reconnects */
            else
                atomic_fetch_add(&stream_n_direct, 1);
            pthread_mutex_unlock(&s->lock);
            return sent > 0;
        }
    }
    if (s->len - s->off + len > DK_STREAM_MAX_BUFFER) {
        /* a client that stopped reading: drop it rather than buffer without bound — the
         * buffer goes now, and the connection is cut at once (libmicrohttpd would otherwise
         * first wait for the client to take what its socket holds) */
        stream_cut(s);
        pthread_mutex_unlock(&s->lock);
        return false;
    }
    if (s->len + len > s->cap) {
        if (s->off > 0) {
            memmove(s->buf, s->buf + s->off, s->len - s->off);
            s->len -= s->off;
            s->off = 0;
        }
        if (s->len + len > s->cap) {
            size_t ncap = s->cap ? s->cap * 2 : s->long_lived ? DK_STREAM_FIRST_CAP : 4096;
            while (ncap < s->len + len)
                ncap *= 2;
            s->buf = dk_realloc(s->buf, ncap);
            s->cap = ncap;
        }
    }
    memcpy(s->buf + s->len, data, len);
    s->len += len;
    if (s->len - s->off >= DK_STREAM_HIGH_WATER)
        s->want_drain = true;
    if (s->suspended && s->conn) {
        s->suspended = false;
        MHD_resume_connection(s->conn);
        atomic_fetch_add(&stream_n_resumed, 1);
    }
    pthread_mutex_unlock(&s->lock);
    return true;
}

size_t dk_stream_buffered(dk_stream *s)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->len - s->off;
    pthread_mutex_unlock(&s->lock);
    return n;
}

void dk_stream_end(dk_stream *s, bool err)
{
    pthread_mutex_lock(&s->lock);
    if (!s->ended) {
        s->ended = true;
        s->err = err;
        if (s->suspended && s->conn) {
            s->suspended = false;
            MHD_resume_connection(s->conn);
        }
    }
    pthread_mutex_unlock(&s->lock);
}

bool dk_stream_closed(dk_stream *s)
{
    pthread_mutex_lock(&s->lock);
    bool closed = s->gone || s->ended;
    pthread_mutex_unlock(&s->lock);
    return closed;
}

/* After this returns on_drained is not running and will not run again, so the producer may
 * free its context (on_drained must therefore not call dk_stream_release itself). */
void dk_stream_release(dk_stream *s)
{
    if (!s)
        return;
    dk_stream_end(s, false);
    pthread_mutex_lock(&s->cb_lock);
    s->on_drained = NULL;
    pthread_mutex_unlock(&s->cb_lock);
    stream_unref(s);
}

/* Ends every open long-lived stream (drain): their clients see the end and reconnect
 * elsewhere. Finite streamed bodies (a proxied download) go on: the drain waits for them like
 * for any request in flight, and ending them here would truncate them silently. */
void dk_http_stream_end_all(dk_http_server *srv)
{
    pthread_mutex_lock(&srv->streams_lock);
    for (dk_stream *s = srv->streams; s; s = s->next)
        if (s->long_lived)
            dk_stream_end(s, false);
    pthread_mutex_unlock(&srv->streams_lock);
}
