/* redis_url.h — what the Redis adapters (kv_redis, events_redis) share: a parsed redis:// URL,
 * blocking hiredis 0.14 connections to it (connect and I/O timeouts, TCP keep-alive, AUTH,
 * SELECT) and the SIGPIPE guard every exchange needs. A dk_redis_url owns its strings;
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
} dk_redis_url;

/* redis://[[user]:password@]host[:port][/db], as redis-cli accepts it: userinfo without a ':'
 * is a password alone; user and password may be percent-encoded; the last '@' ends the
 * userinfo; host may be [IPv6]. *ret is written only on success. */
dk_status dk_redis_url_parse(const char *url, dk_redis_url *ret) DK_MUSTCHECK;
/* Frees the parts and zeroes *u; accepts a zeroed struct. */
void dk_redis_url_release(dk_redis_url *u);

/* A connection with connect, read and write bounded by timeout_ms, keep-alive on, AUTH and
 * SELECT done. */
dk_status dk_redis_connect(const dk_redis_url *u, int timeout_ms, redisContext **ret) DK_MUSTCHECK;
/* Sets the read/write timeout of a connected context; false when the socket refused it. */
bool dk_redis_set_timeout(redisContext *c, int timeout_ms);
/* An idle connection is healthy when nothing is waiting to be read on it: in RESP2 the server
 * never speaks unasked, so readable means it closed the socket or sent a parting error. */
bool dk_redis_idle_alive(redisContext *c);
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
