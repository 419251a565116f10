#include "services/users/users_repo.h"

#include <string.h>

#include "core/arena.h"
#include "core/ids.h"
#include "core/sql.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "services/users/users_avatar.h"
#include "core/banned.h"

const dk_migration dk_users_migrations[DK_USERS_NMIGRATIONS] = {
    {1, "users",
     "CREATE TABLE users (\n"
     "  id TEXT PRIMARY KEY,\n"
     "  email TEXT NOT NULL,\n"
     "  email_key TEXT NOT NULL UNIQUE,\n"
     "  name TEXT NOT NULL,\n"
     "  role TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),\n"
     "  avatar_key TEXT,\n"
     "  created_at INTEGER NOT NULL,\n"
     "  updated_at INTEGER NOT NULL\n"
     ");\n",
     "CREATE TABLE users.users (\n"
     "  id TEXT PRIMARY KEY,\n"
     "  email TEXT NOT NULL,\n"
     "  email_key TEXT NOT NULL UNIQUE,\n"
     "  name TEXT NOT NULL,\n"
     "  role TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),\n"
     "  avatar_key TEXT,\n"
     "  created_at BIGINT NOT NULL,\n"
     "  updated_at BIGINT NOT NULL\n"
     ");\n"},
    {2, "users_email_verified_mfa_enabled",
     "ALTER TABLE users ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 0;\n"
     "ALTER TABLE users ADD COLUMN mfa_enabled INTEGER NOT NULL DEFAULT 0;\n",
     "ALTER TABLE users.users ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 0;\n"
     "ALTER TABLE users.users ADD COLUMN mfa_enabled INTEGER NOT NULL DEFAULT 0;\n"},
};

#define USER_COLS                                                                                  \
    "id, email, name, role, avatar_key, created_at, updated_at, email_verified, mfa_enabled"

static void users_row(dk_arena *a, const dk_db_rows *r, int row, dk_user *u)
{
    u->id = dk_db_value(r, row, 0);
    u->email = dk_db_value(r, row, 1);
    u->name = dk_db_value(r, row, 2);
    u->role = dk_db_value(r, row, 3);
    u->avatar_url = dk_avatar_url(a, u->id, dk_db_value(r, row, 4));
    u->created_at = dk_sql_get_int(r, row, 5);
    u->updated_at = dk_sql_get_int(r, row, 6);
    u->email_verified = dk_sql_get_int(r, row, 7) != 0;
    u->mfa_enabled = dk_sql_get_int(r, row, 8) != 0;
}

static char *users_email_key(dk_arena *a, const char *email)
{
    char *k = dk_arena_strdup(a, email);
    dk_str_lower(k);
    return k;
}

dk_status users_repo_create(const dk_database *db, dk_arena *a, const char *email, const char *name,
                            dk_user *ret)
{
    char *id = dk_arena_alloc(a, DK_UUID_LEN);
    dk_uuid7(id);
    const char *now = dk_sql_int(a, dk_now_ms());
    const char *p[] = {id, email, users_email_key(a, email), name, now};
    dk_db_rows *rows = NULL;
    dk_status st =
        dk_sql(db, a,
               "INSERT INTO users (id, email, email_key, name, role, created_at, "
               "updated_at) VALUES ($1, $2, $3, $4, 'user', $5, $5) RETURNING " USER_COLS,
               5, p, &rows);
    if (st != DK_OK)
        return st;
    if (rows->nrows != 1)
        return DK_E_INTERNAL;
    users_row(a, rows, 0, ret);
    return DK_OK;
}

static dk_status users_one(const dk_database *db, dk_arena *a, const char *sql, const char *arg,
                           dk_user *ret)
{
    const char *p[] = {arg};
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(db, a, sql, 1, p, &rows);
    if (st != DK_OK)
        return st;
    if (rows->nrows == 0)
        return DK_E_NOT_FOUND;
    users_row(a, rows, 0, ret);
    return DK_OK;
}

dk_status users_repo_get(const dk_database *db, dk_arena *a, const char *id, dk_user *ret)
{
    if (!dk_uuid_valid(id))
        return DK_E_NOT_FOUND; /* names nobody; and PostgreSQL refuses bytes that are not UTF-8 */
    return users_one(db, a, "SELECT " USER_COLS " FROM users WHERE id = $1", id, ret);
}

dk_status users_repo_find_by_email(const dk_database *db, dk_arena *a, const char *email,
                                   dk_user *ret)
{
    if (!email || dk_utf8_len(email, strlen(email)) < 0)
        return DK_E_NOT_FOUND;
    return users_one(db, a, "SELECT " USER_COLS " FROM users WHERE email_key = $1",
                     users_email_key(a, email), ret);
}

dk_status users_repo_update(const dk_database *db, dk_arena *a, const char *id, const char *name,
                            const char *email, dk_user *ret)
{
    const char *p[] = {id, name, email, email ? users_email_key(a, email) : NULL,
                       dk_sql_int(a, dk_now_ms())};
    dk_db_rows *rows = NULL;
    /* updated_at moves only when a value really changes */
    dk_status st =
        dk_sql(db, a,
               "UPDATE users SET name = COALESCE($2, name), email = COALESCE($3, email), "
               "email_key = COALESCE($4, email_key), "
               "email_verified = CASE WHEN COALESCE($4, email_key) <> email_key THEN 0 "
               "ELSE email_verified END, "
               "updated_at = CASE WHEN COALESCE($2, name) <> name OR COALESCE($3, email) <> email "
               "THEN $5 ELSE updated_at END "
               "WHERE id = $1 RETURNING " USER_COLS,
               5, p, &rows);
    if (st != DK_OK)
        return st;
    if (rows->nrows == 0)
        return DK_E_NOT_FOUND;
    users_row(a, rows, 0, ret);
    return DK_OK;
}

dk_status users_repo_mark_verified(const dk_database *db, dk_arena *a, const char *id,
                                   const char *email, dk_user *ret)
{
    const char *p[] = {id, users_email_key(a, email)};
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(db, a,
                          "UPDATE users SET email_verified = 1 WHERE id = $1 AND email_key = $2 "
                          "RETURNING " USER_COLS,
                          2, p, &rows);
    if (st != DK_OK)
        return st;
    if (rows->nrows == 0)
        return DK_E_NOT_FOUND;
    users_row(a, rows, 0, ret);
    return DK_OK;
}

dk_status users_repo_set_mfa(const dk_database *db, dk_arena *a, const char *id, bool enabled,
                             dk_user *ret)
{
    const char *p[] = {id, enabled ? "1" : "0"};
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(
        db, a, "UPDATE users SET mfa_enabled = $2 WHERE id = $1 RETURNING " USER_COLS, 2, p, &rows);
    if (st != DK_OK)
        return st;
    if (rows->nrows == 0)
        return DK_E_NOT_FOUND;
    users_row(a, rows, 0, ret);
    return DK_OK;
}

dk_status users_repo_delete(const dk_database *db, dk_arena *a, const char *id)
{
    if (!dk_uuid_valid(id))
        return DK_E_NOT_FOUND;
    const char *p[] = {id};
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(db, a, "DELETE FROM users WHERE id = $1", 1, p, &rows);
    if (st != DK_OK)
        return st;
    return rows->affected > 0 ? DK_OK : DK_E_NOT_FOUND;
}

dk_status users_repo_avatar_key(const dk_database *db, dk_arena *a, const char *id,
                                const char **ret_key)
{
    const char *p[] = {id};
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(db, a, "SELECT avatar_key FROM users WHERE id = $1", 1, p, &rows);
    if (st != DK_OK)
        return st;
    if (rows->nrows == 0)
        return DK_E_NOT_FOUND;
    *ret_key = dk_db_value(rows, 0, 0);
    return DK_OK;
}

dk_status users_repo_set_avatar(const dk_database *db, dk_arena *a, const char *id,
                                const char *expect, const char *key, dk_user *ret)
{
    const char *p[] = {id, key, dk_sql_int(a, dk_now_ms()), expect};
    dk_db_rows *rows = NULL;
    dk_status st = dk_sql(db, a,
                          "UPDATE users SET avatar_key = $2, updated_at = $3 "
                          "WHERE id = $1 AND COALESCE(avatar_key, '') = COALESCE($4, '') "
                          "RETURNING " USER_COLS,
                          4, p, &rows);
    if (st != DK_OK)
        return st;
    if (rows->nrows == 0)
        return DK_E_PRECONDITION;
    if (ret)
        users_row(a, rows, 0, ret);
    return DK_OK;
}
