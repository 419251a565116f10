/* users_repo.h — the users service's SQL: the `users` table (schema `users` on PostgreSQL).
 * The same parameterised statements run on SQLite and PostgreSQL. Results live in the caller's
 * arena. Errors: DK_E_NOT_FOUND, DK_E_CONFLICT (e-mail taken), and the db port's. */
#ifndef DK_USERS_REPO_H
#define DK_USERS_REPO_H

#include "core/migrate.h"
#include "ports/db.h"
#include "ports/users_directory.h"

#define DK_USERS_NMIGRATIONS 2
extern const dk_migration dk_users_migrations[DK_USERS_NMIGRATIONS];

dk_status users_repo_create(const dk_database *db, dk_arena *a, const char *email, const char *name,
                            dk_user *ret) DK_MUSTCHECK;
dk_status users_repo_get(const dk_database *db, dk_arena *a, const char *id,
                         dk_user *ret) DK_MUSTCHECK;
dk_status users_repo_find_by_email(const dk_database *db, dk_arena *a, const char *email,
                                   dk_user *ret) DK_MUSTCHECK;
/* name/email NULL = unchanged; updated_at moves only when something changed; a new address
 * (compared case-insensitively) is unverified. */
dk_status users_repo_update(const dk_database *db, dk_arena *a, const char *id, const char *name,
                            const char *email, dk_user *ret) DK_MUSTCHECK;
/* The user's avatar object key (*ret_key NULL when none); DK_E_NOT_FOUND without the user. */
dk_status users_repo_avatar_key(const dk_database *db, dk_arena *a, const char *id,
                                const char **ret_key) DK_MUSTCHECK;
/* Compare-and-set of the avatar key: sets key (NULL = none) when the current one is expect
 * (NULL = none), moving updated_at; DK_E_PRECONDITION when it is not (or no such user).
 * ret (may be NULL) gets the updated user. */
dk_status users_repo_set_avatar(const dk_database *db, dk_arena *a, const char *id,
                                const char *expect, const char *key, dk_user *ret) DK_MUSTCHECK;
/* Sets email_verified while the address is still email (case-insensitively); DK_E_NOT_FOUND
 * otherwise. */
dk_status users_repo_mark_verified(const dk_database *db, dk_arena *a, const char *id,
                                   const char *email, dk_user *ret) DK_MUSTCHECK;
dk_status users_repo_set_mfa(const dk_database *db, dk_arena *a, const char *id, bool enabled,
                             dk_user *ret) DK_MUSTCHECK;
dk_status users_repo_delete(const dk_database *db, dk_arena *a, const char *id) DK_MUSTCHECK;

#endif
