/* users_directory.h — how other services reach user accounts (the users service owns them):
 * create an account at registration, find one by e-mail at login, read one, remove one.
 * In `docket all` the users service provides it in-process; in split mode an HTTP client does.
 * Registered in dk_app under DK_USERS_DIRECTORY. Strings returned live in the caller's arena.
 * Errors: DK_E_NOT_FOUND, DK_E_CONFLICT (e-mail taken), DK_E_UNAVAILABLE, DK_E_INTERNAL. */
#ifndef DK_PORTS_USERS_DIRECTORY_H
#define DK_PORTS_USERS_DIRECTORY_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/json.h"
#include "core/status.h"
#include "core/timeutil.h"

typedef struct dk_arena dk_arena;

#define DK_USERS_DIRECTORY "users.directory"

typedef struct dk_user {
    const char *id;
    const char *email;
    const char *name;
    const char *role;
    const char *avatar_url; /* NULL when none */
    int64_t created_at;     /* ms since the epoch */
    int64_t updated_at;
    bool email_verified; /* the address received a verification e-mail and its link was used */
    bool mfa_enabled;    /* a second factor (TOTP) is on: the auth service keeps it in step */
} dk_user;

struct dk_users_directory_ops {
    dk_status (*create)(void *h, dk_arena *a, const char *email, const char *name,
                        dk_user *ret_user) DK_MUSTCHECK;
    dk_status (*find_by_email)(void *h, dk_arena *a, const char *email,
                               dk_user *ret_user) DK_MUSTCHECK;
    dk_status (*get)(void *h, dk_arena *a, const char *id, dk_user *ret_user) DK_MUSTCHECK;
    dk_status (*remove)(void *h, const char *id) DK_MUSTCHECK;
    /* Marks the address verified, but only while the account still has that address
     * (case-insensitively): DK_E_NOT_FOUND when the account is gone or its address changed. */
    dk_status (*mark_email_verified)(void *h, dk_arena *a, const char *id,
                                     const char *email) DK_MUSTCHECK;
    /* Records whether the account has a second factor (shown as mfa_enabled). */
    dk_status (*set_mfa_enabled)(void *h, dk_arena *a, const char *id, bool enabled) DK_MUSTCHECK;
};

/* The event the users service publishes when an account is deleted (before it goes), with
 * payload {"user_id": "..."}; subscribers remove what they hold about that user. */
#define DK_EVENT_USER_DELETED "user.deleted"

/* The event the users service publishes when an account's e-mail address changed (the new
 * address is unverified), payload {"user_id": "...", "email": "..."}: the auth service sends a
 * verification e-mail to it. */
#define DK_EVENT_USER_EMAIL_CHANGED "user.email_changed"

/* The user id of a user.deleted payload, copied into the arena; NULL when malformed. */
static inline const char *dk_user_deleted_id(dk_arena *a, const char *payload)
{
    json_error_t err;
    json_t *ev = json_loads(payload, 0, &err);
    const char *uid = json_string_value(json_object_get(ev, "user_id"));
    const char *out = uid ? dk_arena_strdup(a, uid) : NULL;
    json_decref(ev);
    return out;
}

/* The contract's {user} object. */
static inline json_t *dk_user_json(const dk_user *u)
{
    char created[DK_RFC3339_LEN], updated[DK_RFC3339_LEN];
    dk_time_format(u->created_at, created);
    dk_time_format(u->updated_at, updated);
    return json_pack("{s:s,s:s,s:s,s:s,s:o,s:s,s:s,s:b,s:b}", "id", u->id, "email", u->email,
                     "name", u->name, "role", u->role, "avatar_url",
                     u->avatar_url ? json_string(u->avatar_url) : json_null(), "created_at",
                     created, "updated_at", updated, "email_verified", u->email_verified,
                     "mfa_enabled", u->mfa_enabled);
}

/* The same object written as text directly (no jansson values: GET /users/me is a hot path);
 * the same bytes as dk_user_json rendered. */
static inline void dk_user_write(dk_jw *w, const dk_user *u)
{
    char created[DK_RFC3339_LEN], updated[DK_RFC3339_LEN];
    dk_time_format(u->created_at, created);
    dk_time_format(u->updated_at, updated);
    dk_jw_object(w);
    dk_jw_key(w, "id");
    dk_jw_string(w, u->id);
    dk_jw_key(w, "email");
    dk_jw_string(w, u->email);
    dk_jw_key(w, "name");
    dk_jw_string(w, u->name);
    dk_jw_key(w, "role");
    dk_jw_string(w, u->role);
    dk_jw_key(w, "avatar_url");
    dk_jw_string(w, u->avatar_url); /* NULL: null */
    dk_jw_key(w, "created_at");
    dk_jw_string(w, created);
    dk_jw_key(w, "updated_at");
    dk_jw_string(w, updated);
    dk_jw_key(w, "email_verified");
    dk_jw_bool(w, u->email_verified);
    dk_jw_key(w, "mfa_enabled");
    dk_jw_bool(w, u->mfa_enabled);
    dk_jw_object_end(w);
}

#endif
