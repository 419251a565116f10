/* session_guard.h — the shared record of revoked sessions and of when sessions were last used,
 * kept in the kv store so every process (gateway, services, replicas) sees it at once.
 * The auth service writes revocations; every token check reads them. Thread-safe. Errors are
 * the kv port's (DK_E_UNAVAILABLE when the store does not answer). */
#ifndef DK_SESSION_GUARD_H
#define DK_SESSION_GUARD_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "ports/kv.h"

/* Marks a session revoked for ttl_ms (at least the access-token lifetime). */
dk_status dk_session_revoke(const dk_store *kv, const char *session_id,
                            int64_t ttl_ms) DK_MUSTCHECK;
/* DK_OK when not revoked, DK_E_UNAUTHORIZED when revoked, or the store's error. */
dk_status dk_session_check(const dk_store *kv, const char *session_id) DK_MUSTCHECK;
/* Records that the session was used now; writes at most once a second per session and process. */
dk_status dk_session_touch(const dk_store *kv, const char *session_id, int64_t ttl_ms) DK_MUSTCHECK;
/* Last use recorded by dk_session_touch, in ms since the epoch; 0 when none. */
dk_status dk_session_last_used(const dk_store *kv, dk_arena *a, const char *session_id,
                               int64_t *ret_ms) DK_MUSTCHECK;

#endif
