/* redis_conn.c — connections to Redis over a socket of our own, plain or TLS (OpenSSL).
 * hiredis 0.14 (Debian 12) cannot speak TLS, so it only formats commands
 * (redisFormatCommandArgv) and parses replies (redisReader); connecting, the TLS handshake and
 * every read and write happen here, on a non-blocking socket with poll(2) bounding each
 * exchange by the connection's timeout. TLS checks the server certificate against the URL's
 * trust store (dk_redis_url_tls) and its name against the URL's host. */
#include "adapters/redis_url.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "core/alloc.h"
#include "core/timeutil.h"
#include "core/trace.h"
#include "core/banned.h"

#define RC_READ_CHUNK  16384
#define RC_KEEPIDLE_S  15
#define RC_KEEPINTVL_S 5
#define RC_KEEPCNT     3

struct dk_redis_conn {
    int fd;
    SSL *ssl; /* NULL: plain TCP */
    redisReader *reader;
    int timeout_ms;
    bool broken;
};

/* --- sockets --------------------------------------------------------------------------------- */

/* Waits for events on the socket until the deadline (monotonic ms): 1 ready, 0 timed out,
 * -1 error. */
static int redis_conn_wait(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - dk_mono_ms();
        if (left <= 0)
            return 0;
        struct pollfd pfd = {.fd = fd, .events = events};
        int n = poll(&pfd, 1, left > 1000000 ? 1000000 : (int)left);
        if (n > 0)
            return 1;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

/* A non-blocking TCP connection to one of the host's addresses, within the deadline. */
static int redis_conn_tcp_connect(const char *host, int port, int64_t deadline)
{
    char service[8];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, service, &hints, &res) != 0)
        return -1;
    int fd = -1;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (rc != 0 && errno == EINPROGRESS && redis_conn_wait(fd, POLLOUT, deadline) == 1) {
            int err = 0;
            socklen_t len = sizeof err;
            rc = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0 ? 0 : -1;
        }
        if (rc != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        return -1;
    int one = 1, idle = RC_KEEPIDLE_S, intvl = RC_KEEPINTVL_S, cnt = RC_KEEPCNT;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* best effort: notices a vanished peer on idle pooled connections */
    (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    return fd;
}

/* After an SSL call returned r: the poll events to wait for, or 0 when the call failed. */
static short redis_conn_ssl_wants(dk_redis_conn *c, int r)
{
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        return POLLIN;
    case SSL_ERROR_WANT_WRITE:
        return POLLOUT;
    default:
        ERR_clear_error();
        return 0;
    }
}

static bool redis_conn_tls_handshake(dk_redis_conn *c, const dk_redis_url *u, int64_t deadline)
{
    c->ssl = SSL_new(u->tls_ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1)
        return false;
    unsigned char addr[sizeof(struct in6_addr)];
    bool is_ip = inet_pton(AF_INET, u->host, addr) == 1 || inet_pton(AF_INET6, u->host, addr) == 1;
    if (is_ip) {
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), u->host) != 1)
            return false;
    } else if (SSL_set_tlsext_host_name(c->ssl, u->host) != 1 ||
               SSL_set1_host(c->ssl, u->host) != 1) {
        return false;
    }
    for (;;) {
        ERR_clear_error(); /* SSL_get_error reads this thread's queue: start it empty */
        int r = SSL_connect(c->ssl);
        if (r == 1)
            return true;
        short ev = redis_conn_ssl_wants(c, r);
        if (!ev || redis_conn_wait(c->fd, ev, deadline) != 1)
            return false;
    }
}

/* Writes all of buf before the deadline. */
static bool redis_conn_write_all(dk_redis_conn *c, const char *buf, size_t len, int64_t deadline)
{
    size_t off = 0;
    while (off < len) {
        short ev;
        if (c->ssl) {
            ERR_clear_error();
            int n =
                SSL_write(c->ssl, buf + off, (int)(len - off > INT32_MAX ? INT32_MAX : len - off));
            if (n > 0) {
                off += (size_t)n;
                continue;
            }
            ev = redis_conn_ssl_wants(c, n);
            if (!ev)
                return false;
        } else {
            ssize_t n = send(c->fd, buf + off, len - off, MSG_NOSIGNAL);
            if (n > 0) {
                off += (size_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
                return false;
            ev = POLLOUT;
        }
        if (redis_conn_wait(c->fd, ev, deadline) != 1)
            return false;
    }
    return true;
}

/* One read without blocking, fed to the reader: 1 data, 0 nothing yet (wait for *ret_ev),
 * -1 closed or failed. */
static int redis_conn_read_once(dk_redis_conn *c, short *ret_ev)
{
    char buf[RC_READ_CHUNK];
    *ret_ev = POLLIN;
    if (c->ssl) {
        ERR_clear_error();
        int n = SSL_read(c->ssl, buf, sizeof buf);
        if (n <= 0) {
            short ev = redis_conn_ssl_wants(c, n);
            if (!ev)
                return -1; /* close_notify, EOF or an error */
            *ret_ev = ev;
            return 0;
        }
        return redisReaderFeed(c->reader, buf, (size_t)n) == REDIS_OK ? 1 : -1;
    }
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n > 0)
            return redisReaderFeed(c->reader, buf, (size_t)n) == REDIS_OK ? 1 : -1;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        return -1;
    }
}

/* --- the connection -------------------------------------------------------------------------- */

void dk_redis_conn_free(dk_redis_conn *c)
{
    if (!c)
        return;
    if (c->ssl) {
        if (!c->broken) { /* close_notify, best effort, never waits */
            dk_redis_sigpipe sp;
            dk_redis_sigpipe_block(&sp);
            int r = SSL_shutdown(c->ssl);
            dk_redis_sigpipe_restore(&sp, r < 0);
        }
        SSL_free(c->ssl);
        ERR_clear_error();
    }
    if (c->fd >= 0)
        close(c->fd);
    if (c->reader)
        redisReaderFree(c->reader);
    dk_free(c);
}

int dk_redis_conn_fd(const dk_redis_conn *c)
{
    return c->fd;
}

bool dk_redis_conn_broken(const dk_redis_conn *c)
{
    return c->broken;
}

bool dk_redis_set_timeout(dk_redis_conn *c, int timeout_ms)
{
    if (c->broken || timeout_ms <= 0)
        return false;
    c->timeout_ms = timeout_ms;
    return true;
}

bool dk_redis_send(dk_redis_conn *c, int argc, const char **argv, const size_t *argvlen)
{
    if (c->broken)
        return false;
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0) {
        c->broken = true;
        return false;
    }
    bool ok = redis_conn_write_all(c, cmd, (size_t)len, dk_mono_ms() + c->timeout_ms);
    redisFreeCommand(cmd);
    if (!ok)
        c->broken = true;
    return ok;
}

bool dk_redis_get_reply(dk_redis_conn *c, redisReply **ret)
{
    void *reply = NULL;
    if (c->broken || redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
        c->broken = true;
        return false;
    }
    *ret = reply;
    return true;
}

bool dk_redis_read_some(dk_redis_conn *c)
{
    if (c->broken)
        return false;
    short ev;
    if (redis_conn_read_once(c, &ev) < 0) {
        c->broken = true;
        return false;
    }
    return true;
}

int dk_redis_wait_readable(dk_redis_conn *c, int ms)
{
    if (c->broken)
        return -1;
    if (c->ssl && SSL_pending(c->ssl) > 0)
        return 1; /* decrypted already, the socket may have nothing more */
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    int n = poll(&pfd, 1, ms);
    if (n < 0)
        return errno == EINTR ? 0 : -1;
    return n > 0 ? 1 : 0;
}

static redisReply *redis_conn_command(dk_redis_conn *c, int argc, const char **argv,
                                      const size_t *argvlen);

/* Each command is a client span under the caller's trace, named by the command alone (never its
 * keys or values: they may hold tokens). */
redisReply *dk_redis_command(dk_redis_conn *c, int argc, const char **argv, const size_t *argvlen)
{
    dk_span *sp = NULL;
    if (argc > 0 && dk_trace_current_span_id()) {
        char name[32];
        size_t n = argvlen[0] < 16 ? argvlen[0] : 16;
        memcpy(name, "redis ", 6);
        for (size_t i = 0; i < n; i++)
            name[6 + i] =
                (char)(argv[0][i] >= 'a' && argv[0][i] <= 'z' ? argv[0][i] - 32 : argv[0][i]);
        name[6 + n] = '\0';
        sp = dk_span_start(name, DK_SPAN_CLIENT);
        dk_span_attr_str(sp, "db.system", "redis");
    }
    redisReply *r = redis_conn_command(c, argc, argv, argvlen);
    if (!r)
        dk_span_error(sp, "no reply");
    dk_span_end(sp);
    return r;
}

static redisReply *redis_conn_command(dk_redis_conn *c, int argc, const char **argv,
                                      const size_t *argvlen)
{
    if (!dk_redis_send(c, argc, argv, argvlen))
        return NULL;
    int64_t deadline = dk_mono_ms() + c->timeout_ms;
    for (;;) {
        redisReply *r = NULL;
        if (!dk_redis_get_reply(c, &r))
            return NULL;
        if (r)
            return r;
        short ev;
        int got = redis_conn_read_once(c, &ev);
        if (got < 0 || (got == 0 && redis_conn_wait(c->fd, ev, deadline) != 1)) {
            c->broken = true; /* a late reply would answer the next command */
            return NULL;
        }
    }
}

bool dk_redis_idle_alive(dk_redis_conn *c)
{
    if (c->broken)
        return false;
    if (c->ssl && SSL_pending(c->ssl) > 0)
        return false;
    for (;;) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int n = poll(&pfd, 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0)
            return true;
        if (n < 0 || !c->ssl)
            return false;
        /* TLS: records without data (a TLS 1.3 session ticket) make the socket readable */
        short ev;
        int got = redis_conn_read_once(c, &ev);
        if (got != 0 || ev != POLLIN) {
            c->broken = true;
            return false;
        }
    }
}

/* Runs one setup command on a fresh connection; the status reply is checked and dropped. */
static dk_status redis_conn_setup_command(dk_redis_conn *c, int argc, const char **argv,
                                          const size_t *argvlen)
{
    redisReply *r = dk_redis_command(c, argc, argv, argvlen);
    dk_status st = DK_OK;
    if (!r)
        st = DK_E_UNAVAILABLE;
    else if (r->type == REDIS_REPLY_ERROR)
        st = dk_redis_error_status(r);
    if (r)
        freeReplyObject(r);
    return st;
}

static dk_status redis_conn_open(const dk_redis_url *u, int timeout_ms, dk_redis_conn *c)
{
    int64_t deadline = dk_mono_ms() + timeout_ms;
    c->fd = redis_conn_tcp_connect(u->host, u->port, deadline);
    if (c->fd < 0)
        return DK_E_UNAVAILABLE;
    if (u->tls) {
        if (!u->tls_ctx)
            return DK_E_INTERNAL; /* dk_redis_url_tls was not called */
        if (!redis_conn_tls_handshake(c, u, deadline))
            return DK_E_UNAVAILABLE; /* unreachable, or a certificate we do not trust */
    }
    if (u->password) {
        bool with_user = u->user && *u->user && strcmp(u->user, "default") != 0;
        const char *argv[3] = {"AUTH"};
        size_t argvlen[3] = {4};
        int argc = 1;
        if (with_user) {
            argv[argc] = u->user;
            argvlen[argc++] = strlen(u->user);
        }
        argv[argc] = u->password;
        argvlen[argc++] = u->password_len;
        dk_status st = redis_conn_setup_command(c, argc, argv, argvlen);
        if (st != DK_OK)
            return st;
    }
    if (u->db != 0) {
        char db[16];
        int n = snprintf(db, sizeof db, "%d", u->db);
        const char *argv[2] = {"SELECT", db};
        size_t argvlen[2] = {6, (size_t)n};
        return redis_conn_setup_command(c, 2, argv, argvlen);
    }
    return DK_OK;
}

dk_status dk_redis_connect(const dk_redis_url *u, int timeout_ms, dk_redis_conn **ret)
{
    if (!u || !u->host || !ret || timeout_ms <= 0)
        return DK_E_INTERNAL;
    dk_redis_conn *c = dk_calloc(1, sizeof *c);
    c->fd = -1;
    c->timeout_ms = timeout_ms;
    c->reader = redisReaderCreate();
    if (!c->reader) {
        dk_free(c);
        return DK_E_INTERNAL;
    }
    /* the handshake and AUTH write with SSL_write: a vanished peer must not raise SIGPIPE */
    dk_redis_sigpipe sp;
    dk_redis_sigpipe_block(&sp);
    dk_status st = redis_conn_open(u, timeout_ms, c);
    dk_redis_sigpipe_restore(&sp, st != DK_OK);
    if (st != DK_OK) {
        c->broken = true;
        dk_redis_conn_free(c);
        return st;
    }
    *ret = c;
    return DK_OK;
}
