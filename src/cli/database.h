/* database.h — opening, migrating and backing up the database for the command line. Each
 * function says what went wrong on stderr and returns 0, DK_EXIT_USAGE (a configuration error)
 * or another non-zero exit code. Called from main's thread before the services start. */
#ifndef DK_CLI_DATABASE_H
#define DK_CLI_DATABASE_H

#include <stdbool.h>

#include "cli/plan.h"
#include "core/app.h"
#include "core/config.h"

/* mkdir -p with mode 0700; 0 or -1 (errno set). */
int dk_cli_dir_make(const char *path);
/* Opens app->db for the services of plan with a pool of pool connections. */
int dk_cli_database_open(dk_app *app, const dk_config *c, int pool, const dk_plan *plan);
/* Applies the migrations of every service of plan. */
int dk_cli_database_migrate(dk_app *app, const dk_plan *plan);
/* On PostgreSQL the schema is `docket migrate`'s job: non-zero when it is older than this
 * binary. */
int dk_cli_database_check(dk_app *app, const dk_plan *plan);
/* docket migrate. */
int dk_cli_migrate_run(dk_config *c, const dk_plan *plan);
/* docket backup PATH / docket restore PATH; all is the plan of every service. */
int dk_cli_backup_run(dk_config *c, const dk_plan *all, bool restore, const char *path);

#endif
