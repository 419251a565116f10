/* app.h — what a running process shares with its services: configuration, the database and kv
 * handles, the token signer/verifier, the event bus, and a registry of service ports (how one
 * service reaches another: in-process in `docket all`, over HTTP in split mode).
 * Built by main.c before services start and immutable afterwards (thread-safe to read). */
#ifndef DK_APP_H
#define DK_APP_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/token.h"
#include "ports/blob.h"
#include "ports/db.h"
#include "ports/events.h"
#include "ports/kv.h"

#define DK_APP_MAX_PORTS 16

struct dk_app {
    const dk_config *config;
    const char *process; /* "all", "auth", "users", ... */
    dk_database db;      /* ops NULL when the process has no database */
    dk_store store;
    dk_bus bus;
    dk_blobstore blobs; /* object storage (avatars); ops NULL when no service here needs it */
    dk_tokens *tokens;
    /* A key for signing opaque values handed to clients (pagination cursors), derived from the
     * JWT secret so every replica shares it: HMAC-SHA256(secret, "docket-cursor-v1"). */
    unsigned char cursor_key[32];
    /* Key material for the TOTP-secret encryption key when auth.mfa_key is unset:
     * HMAC-SHA256(JWT secret, "docket-mfa-v1"). */
    unsigned char mfa_fallback_key[32];
    bool rate_limit_enabled;
    int64_t rate_limit_window_ms;
    int64_t rate_limit_max;
    int64_t refresh_ttl_ms;
    int nports;
    struct {
        const char *name;
        const void *ops;
        void *handle;
    } ports[DK_APP_MAX_PORTS];
};

/* Registers the implementation of a named service port, e.g. "users.directory". */
void dk_app_register_port(dk_app *app, const char *name, const void *ops, void *handle);
/* Looks a port up; false when nothing registered it. */
bool dk_app_port(const dk_app *app, const char *name, const void **ret_ops, void **ret_handle);

#endif
