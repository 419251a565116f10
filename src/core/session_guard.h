/* session_guard.h — the shared record of revoked sessions and of when sessions were last used,
 * kept in the kv store so every process (gateway, services, replicas) sees it at once.
 * The auth service writes revocations; every token check reads them. Thread-safe. Errors are
 * the kv port's (DK_E_UNAVAILABLE when the store does not answer).
 *
 * Once dk_session_guard_start has run, checks against that store are cached in this process:
 * a session found not revoked is believed for up to DK_SESSION_GUARD_VALID_MS without asking
 * the store again, and every revocation is broadcast on the store's "rev" channel, which evicts
 * it from every process's cache. The guarantee: a revoked session is refused everywhere within
 * the message latency while subscriptions are live; a process whose subscription is down
 * (Redis unreachable, connection lost or silent) forgets everything it cached and checks the
 * store on every request until it is subscribed again. A revocation that could not be
 * broadcast is an error (see dk_session_revoke). Without start, every check asks the store. */
#ifndef DK_SESSION_GUARD_H
#define DK_SESSION_GUARD_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "ports/kv.h"

#define DK_SESSION_GUARD_VALID_MS 10000 /* how long a cached "not revoked" is believed */
#define DK_SESSION_GUARD_CHANNEL  "rev" /* the revocation broadcast (the store adds its prefix) */

/* Marks a session revoked for ttl_ms (at least the access-token lifetime), evicts it from this
 * process's cache and broadcasts it to the others. The record in the store is the source of
 * truth: when it was written but the broadcast failed twice, the error is returned all the
 * same, since other processes may still accept the session for up to
 * DK_SESSION_GUARD_VALID_MS; the caller must not report the revocation as done. */
dk_status dk_session_revoke(const dk_store *kv, const char *session_id,
                            int64_t ttl_ms) DK_MUSTCHECK;
/* DK_OK when not revoked, DK_E_UNAUTHORIZED when revoked, or the store's error. */
dk_status dk_session_check(const dk_store *kv, const char *session_id) DK_MUSTCHECK;
/* Records that the session was used now; writes at most once a second per session and process. */
dk_status dk_session_touch(const dk_store *kv, const char *session_id, int64_t ttl_ms) DK_MUSTCHECK;
/* Last use recorded by dk_session_touch, in ms since the epoch; 0 when none. */
dk_status dk_session_last_used(const dk_store *kv, dk_arena *a, const char *session_id,
                               int64_t *ret_ms) DK_MUSTCHECK;

/* Starts caching checks against this store (one store per process; the store must stay open
 * until dk_session_guard_stop). DK_E_INTERNAL when already started or the subscription cannot
 * start. */
dk_status dk_session_guard_start(const dk_store *kv) DK_MUSTCHECK;
/* Stops caching and ends the subscription; checks ask the store again. Harmless when not
 * started. Call it before closing the store. */
void dk_session_guard_stop(void);

typedef struct dk_session_guard_stats {
    bool started;
    bool live;        /* subscribed: cached answers are used */
    uint64_t outages; /* times the subscription was lost since the process started */
} dk_session_guard_stats;

void dk_session_guard_stats_get(dk_session_guard_stats *ret);

#endif
