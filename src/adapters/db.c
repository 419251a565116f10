/* db.c — picks the SQL adapter for a database URL. */
#include "ports/db.h"
#include "adapters/db.h"

#include <string.h>

#include "core/banned.h"

const struct dk_db_ops *dk_db_ops_for_url(const char *url)
{
    if (!url)
        return NULL;
    if (strncmp(url, "sqlite:", 7) == 0)
        return &dk_db_sqlite_ops;
    if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0)
        return &dk_db_postgres_ops;
    return NULL;
}
