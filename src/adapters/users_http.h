/* users_http.h — the users.directory port over HTTP, for split mode: calls the users service's
 * internal API (/internal/v1/users…) with a fresh service token (sub "service:<caller>", role
 * "service") and the current request id. A dk_users_http owns its copies of the URLs and a pool
 * of keep-alive connections; it borrows `tokens`, which must outlive it. Thread-safe. Errors:
 * DK_E_NOT_FOUND (404), DK_E_CONFLICT (409), DK_E_UNAVAILABLE (no connection, timeout, 5xx),
 * DK_E_INTERNAL (anything else, e.g. a refused token); _new: DK_E_VALIDATION for bad arguments. */
#ifndef DK_ADAPTERS_USERS_HTTP_H
#define DK_ADAPTERS_USERS_HTTP_H

#include "core/status.h"
#include "ports/account_guard.h"
#include "ports/users_directory.h"

typedef struct dk_tokens dk_tokens;
typedef struct dk_users_http dk_users_http;

/* base_urls: comma-separated http:// or https:// bases, e.g.
 * "http://users-a:3002,http://users-b:3002"; calls go round-robin, and one whose connection
 * fails (refused, unresolvable, connect timeout: the request was never sent) is tried once on
 * the next base. caller names this service in the token ([A-Za-z0-9._-]). A timeout <= 0 takes
 * the default (connect 1000 ms, whole call 5000 ms). A call that fails over may take up to
 * connect_timeout_ms + timeout_ms. *ret is written only on success. */
dk_status dk_users_http_new(const char *base_urls, const dk_tokens *tokens, const char *caller,
                            int connect_timeout_ms, int timeout_ms,
                            dk_users_http **ret) DK_MUSTCHECK;
/* Closes the pooled connections; accepts NULL. No call may be in flight. */
void dk_users_http_free(dk_users_http *h);

/* A GET of another internal path on the same bases (e.g. a client made with the tasks
 * service's URLs: /internal/v1/tasks/accounts/{id}/deletable); *ret_http gets the status of
 * whatever answered (DK_E_UNAVAILABLE when nothing did). */
dk_status dk_users_http_get_status(dk_users_http *h, dk_arena *a, const char *path,
                                   long *ret_http) DK_MUSTCHECK;

/* The accounts.deletion_guard port over HTTP (handle = a dk_users_http made with the tasks
 * service's base URLs): 204 may go, 409 DK_E_CONFLICT, 5xx DK_E_UNAVAILABLE. */
extern const struct dk_account_guard_ops dk_account_guard_http_ops;

/* handle = dk_users_http *. Strings of a returned dk_user live in the caller's arena. */
extern const struct dk_users_directory_ops dk_users_directory_http_ops;

#endif
