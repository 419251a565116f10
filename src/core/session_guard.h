/* session_guard.h — the shared record of which sessions are live, and of when sessions were
 * last used, kept in the kv store so every process (gateway, services, replicas) sees it at once.
 * The database (the auth service's sessions table) is the source of truth; the store is a cache
 * of it that may be emptied at any time (a Redis restart). Thread-safe. Errors are the kv port's
 * (DK_E_UNAVAILABLE when the store does not answer).
 *
 * Records: "sess:<sid>" = "1" (live, expiring with the session) or "0" (revoked or otherwise
 * dead, kept for at least the access-token lifetime), and the marker "sess:seeded", present when
 * every live session has its "1" (the auth service seeds an emptied store from the database).
 * A check that finds no record asks the source when this process has one (the auth service
 * registers its table lookup) and remembers the answer in the store; without a source it counts
 * the session dead when the store is seeded, and answers DK_E_UNAVAILABLE when it is not (yet).
 * So an emptied store never brings a revoked session back, and a session id that was never
 * issued never passes.
 *
 * Once dk_session_guard_start has run, checks against that store are cached in this process:
 * a session found live is believed for up to DK_SESSION_GUARD_VALID_MS without asking
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

#define DK_SESSION_KEY_PREFIX     "sess:"
#define DK_SESSION_SEEDED_KEY     "sess:seeded"
#define DK_SESSION_SEED_TOKEN_LEN 37      /* a UUID and its NUL */
#define DK_SESSION_SEED_MAX_MS    3600000 /* a seed left unfinished is forgotten after this */

/* The source of truth: *ret_live says whether the session is live; *ret_ttl_ms is how long that
 * answer holds (live: until the session expires; dead: how long to remember it, 0 for not at
 * all). Errors: the database's (DK_E_UNAVAILABLE...). */
typedef dk_status (*dk_session_source_fn)(void *ctx, const char *session_id, bool *ret_live,
                                          int64_t *ret_ttl_ms);

/* Registers the source of this process (NULL: none). Set it before checks start and clear it
 * before ctx goes away. */
void dk_session_guard_set_source(dk_session_source_fn fn, void *ctx);

/* Records a live session for ttl_ms (its remaining lifetime): written when absent; when there,
 * its expiry is moved (a "0" stays "0"). Called after the transaction that made it live. */
dk_status dk_session_open(const dk_store *kv, const char *session_id, int64_t ttl_ms) DK_MUSTCHECK;

/* Seeding an emptied store: begin leaves a canary under a fresh token, the caller then writes
 * every live session with dk_session_open, and end turns the canary into the marker atomically —
 * DK_E_NOT_FOUND when the canary is gone (the store was emptied meanwhile: seed again). */
dk_status dk_session_seeded(const dk_store *kv, bool *ret_seeded) DK_MUSTCHECK;
dk_status dk_session_seed_begin(const dk_store *kv,
                                char token[DK_SESSION_SEED_TOKEN_LEN]) DK_MUSTCHECK;
dk_status dk_session_seed_end(const dk_store *kv, const char *token) DK_MUSTCHECK;

/* Marks a session revoked for ttl_ms (at least the access-token lifetime), evicts it from this
 * process's cache and broadcasts it to the others. The record in the store is the source of
 * truth: when it was written but the broadcast failed twice, the error is returned all the
 * same, since other processes may still accept the session for up to
 * DK_SESSION_GUARD_VALID_MS; the caller must not report the revocation as done. */
dk_status dk_session_revoke(const dk_store *kv, const char *session_id,
                            int64_t ttl_ms) DK_MUSTCHECK;
/* DK_OK when live, DK_E_UNAUTHORIZED when revoked, expired or unknown, DK_E_UNAVAILABLE when
 * the store is emptied and this process has no source, or the store's (or source's) error. */
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
