/* redis_url.h — what the Redis adapters (kv_redis, events_redis) share: a parsed redis:// or
 * rediss:// URL, connections to it over a plain or TLS socket (connect and I/O timeouts, TCP
 * keep-alive, certificate and host name checked, AUTH, SELECT) and the SIGPIPE guard every
 * exchange needs. A dk_redis_url owns its strings;
 * dk_redis_url_release frees them and wipes the password. Parsed once, then read-only: threads
 * may share it. Errors: DK_E_VALIDATION (malformed URL), DK_E_UNAVAILABLE (no answer in time,
 * server loading or busy), DK_E_INTERNAL (AUTH or SELECT refused, out of memory). */
#ifndef DK_ADAPTERS_REDIS_URL_H
#define DK_ADAPTERS_REDIS_URL_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

#include <hiredis/hiredis.h>

#include "core/status.h"

#define DK_REDIS_DEFAULT_PORT 6379

typedef struct dk_redis_url {
    char *host; /* without the brackets of an IPv6 literal */
    int port;
    int db;
    char *user;     /* NULL: AUTH with the password alone */
    char *password; /* NULL: no AUTH; may hold any byte but NUL */
    size_t password_len;
    bool tls;                   /* rediss:// */
    struct ssl_ctx_st *tls_ctx; /* made by dk_redis_url_tls; shared by every connection */
} dk_redis_url;

/* redis[s]://[[user]:password@]host[:port][/db], as redis-cli accepts it (rediss = TLS): userinfo without a ':'
 * is a password alone; user and password may be percent-encoded; the last '@' ends the
 * userinfo; host may be [IPv6]. *ret is written only on success. */
dk_status dk_redis_url_parse(const char *url, dk_redis_url *ret) DK_MUSTCHECK;
/* Frees the parts and zeroes *u; accepts a zeroed struct. */
void dk_redis_url_release(dk_redis_url *u);

/* rediss:// (TLS): the trust store is ca_file when set, otherwise OpenSSL's default paths
 * (which honour SSL_CERT_FILE and SSL_CERT_DIR); the server certificate must name the URL's
 * host (DNS name or IP address). Builds the TLS context a rediss:// URL needs; a no-op for
 * redis://. DK_E_VALIDATION when ca_file cannot be read or holds no certificate. */
dk_status dk_redis_url_tls(dk_redis_url *u, const char *ca_file) DK_MUSTCHECK;

/* A connection of our own: hiredis 0.14 has no TLS, so the socket (plain or OpenSSL) is ours
 * and hiredis only formats commands and parses replies (redisFormatCommandArgv, redisReader).
 * Not thread-safe: one user at a time. */
typedef struct dk_redis_conn dk_redis_conn;

/* A connection with connect (and TLS handshake), read and write bounded by timeout_ms,
 * keep-alive on, AUTH and SELECT done. */
dk_status dk_redis_connect(const dk_redis_url *u, int timeout_ms, dk_redis_conn **ret) DK_MUSTCHECK;
/* Closes and frees; accepts NULL. */
void dk_redis_conn_free(dk_redis_conn *c);
/* The connection's socket (another thread may shutdown(2) it to wake a wait on it). */
int dk_redis_conn_fd(const dk_redis_conn *c);
/* true once an I/O or protocol error has made the connection unusable. */
bool dk_redis_conn_broken(const dk_redis_conn *c);
/* Sets the bound of each later exchange; false on a broken connection. */
bool dk_redis_set_timeout(dk_redis_conn *c, int timeout_ms);
/* An idle connection is healthy when nothing is waiting to be read on it: in RESP2 the server
 * never speaks unasked, so readable means it closed the socket or sent a parting error (TLS
 * records that carry no data, such as session tickets, are consumed and do not count). */
bool dk_redis_idle_alive(dk_redis_conn *c);
/* One command, one reply, bounded by the timeout; NULL (and the connection broken) on an I/O
 * or protocol failure. The reply is freed with freeReplyObject. */
redisReply *dk_redis_command(dk_redis_conn *c, int argc, const char **argv, const size_t *argvlen);

/* For a subscribed connection, where replies arrive unasked: send a command without waiting
 * for its reply; wait up to ms for something to read (1 readable, 0 nothing, -1 error); read
 * what is there without blocking (false on EOF or error); take one parsed reply (*ret NULL
 * when none is complete; false on a protocol error). */
bool dk_redis_send(dk_redis_conn *c, int argc, const char **argv, const size_t *argvlen);
int dk_redis_wait_readable(dk_redis_conn *c, int ms);
bool dk_redis_read_some(dk_redis_conn *c);
bool dk_redis_get_reply(dk_redis_conn *c, redisReply **ret);

/* Maps an error reply: loading, busy, failing over, read-only → DK_E_UNAVAILABLE; anything
 * else (wrong type, bad password, unknown command) → DK_E_INTERNAL. */
dk_status dk_redis_error_status(const redisReply *r);

/* hiredis writes with write(2): a peer that has gone away would raise SIGPIPE and kill the
 * process. Block it on this thread around each exchange and swallow the one a failed write left
 * pending, without touching the process's signal dispositions. */
typedef struct dk_redis_sigpipe {
    sigset_t old;
} dk_redis_sigpipe;

void dk_redis_sigpipe_block(dk_redis_sigpipe *sp);
void dk_redis_sigpipe_restore(dk_redis_sigpipe *sp, bool io_failed);

#endif
