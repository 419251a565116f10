/* help.c — what `docket help` and `docket help COMMAND` print: the command list and, per
 * command, what it does and the configuration sections it reads (the keys themselves come from
 * the config table). */
#include "cli/help.h"

#include <string.h>

#include "core/config.h"
#include "core/banned.h"

void dk_cli_usage_print(FILE *out)
{
    fprintf(out,
            "Usage: docket COMMAND [--config PATH] [--KEY=VALUE ...]\n"
            "\n"
            "Commands:\n"
            "  all          run every service in one process (gateway on port 3000)\n"
            "  gateway      run the API gateway alone (split mode, port 3000); upstreams from\n"
            "               gateway.auth_url, gateway.users_url, gateway.tasks_url, …\n"
            "  auth, users, tasks, notifications\n"
            "               run one service alone (split mode; ports 3001, 3002, 3003, 3004)\n"
            "  migrate      apply the database migrations of every service, then exit\n"
            "  backup PATH  copy the embedded SQLite database to a new file (online, safe while\n"
            "               docket runs); PostgreSQL is backed up with pg_dump\n"
            "  restore PATH replace the embedded database with a backup (stop docket first)\n"
            "  config       print the effective configuration (secrets redacted), then exit\n"
            "  config-docs  print docs/configuration.md (generated from the config table)\n"
            "  routes       list the public HTTP routes of every service\n"
            "  version      print the version\n"
            "  help [COMMAND]\n"
            "               this text, or what COMMAND does and the keys it reads\n"
            "\n"
            "Every configuration key can be given as a flag (--server.port=8080), in the YAML\n"
            "file (--config PATH, or /app/config/config.yaml when present) or in the\n"
            "environment (DOCKET_SERVER_PORT=8080). Precedence: flag > environment > file >\n"
            "default.\n\n");
    dk_config_print_help(out);
}

static const dk_cli_command_help dk_cli_command_helps[] = {
    {"all",
     "docket all [--KEY=VALUE ...]",
     "Runs the gateway and every service (auth, users, tasks, notifications) in one process, on\n"
     "port 3000 unless server.port says otherwise. With nothing configured it uses SQLite and\n"
     "local files in storage.data_dir (./data), an in-process cache and queue, and a JWT secret\n"
     "generated there; it applies the database migrations itself.",
     {"server", "storage", "database", "redis", "auth", "rate_limiting", "log", "gateway", "events",
      "notification", "s3", "smtp", "otel", NULL}},
    {"gateway",
     "docket gateway [--KEY=VALUE ...]",
     "Runs the API gateway alone (split mode, port 3000): routes /api/v1/<service> to the\n"
     "upstreams in gateway.auth_url, gateway.users_url, gateway.tasks_url and\n"
     "gateway.notifications_url; verifies access tokens and revocations (needs redis.url and the\n"
     "same auth.jwt_secret as the services).",
     {"server", "redis", "auth", "log", "gateway", "otel", NULL}},
    {"auth",
     "docket auth [--KEY=VALUE ...]",
     "Runs the auth service alone (split mode, port 3001): registration, login, refresh,\n"
     "logout, sessions, password change. Needs database.url (PostgreSQL, migrated with\n"
     "`docket migrate`), redis.url and auth.jwt_secret.",
     {"server", "database", "redis", "auth", "rate_limiting", "log", "gateway", "smtp", "otel",
      NULL}},
    {"users",
     "docket users [--KEY=VALUE ...]",
     "Runs the users service alone (split mode, port 3002): profiles. Needs database.url,\n"
     "redis.url and auth.jwt_secret.",
     {"server", "database", "redis", "auth", "log", "gateway", "s3", "otel", NULL}},
    {"tasks",
     "docket tasks [--KEY=VALUE ...]",
     "Runs the tasks service alone (split mode, port 3003): tasks, search. Needs database.url,\n"
     "redis.url, auth.jwt_secret, and gateway.users_url to look users up.",
     {"server", "database", "redis", "auth", "log", "gateway", "events", "otel", NULL}},
    {"notifications",
     "docket notifications [--KEY=VALUE ...]",
     "Runs the notifications service alone (split mode, port 3004): in-app notifications, the\n"
     "event stream, e-mail and webhooks. Needs database.url, redis.url, auth.jwt_secret and\n"
     "gateway.users_url.",
     {"server", "database", "redis", "auth", "log", "gateway", "events", "notification", "smtp",
      "otel", NULL}},
    {"migrate",
     "docket migrate [--KEY=VALUE ...]",
     "Applies the database migrations of every service, then exits (0 when the schema is\n"
     "current). Run it before starting split services on PostgreSQL; `docket all` on SQLite\n"
     "migrates by itself.",
     {"database", "storage", "log", NULL}},
    {"backup",
     "docket backup PATH [--KEY=VALUE ...]",
     "Copies the embedded SQLite database to a new file PATH, online (safe while docket runs).\n"
     "PostgreSQL is backed up with pg_dump (docs/operations.md).",
     {"database", "storage", NULL}},
    {"restore",
     "docket restore PATH [--KEY=VALUE ...]",
     "Replaces the embedded SQLite database with the backup PATH (stop docket first), then\n"
     "applies newer migrations.",
     {"database", "storage", NULL}},
    {"config",
     "docket config [--KEY=VALUE ...]",
     "Prints the effective configuration, each key with where its value came from (default,\n"
     "file, environment, flag); secrets are redacted.",
     {NULL}},
};

const dk_cli_command_help *dk_cli_command_help_find(const char *name)
{
    for (size_t i = 0; i < sizeof dk_cli_command_helps / sizeof dk_cli_command_helps[0]; i++)
        if (strcmp(dk_cli_command_helps[i].name, name) == 0)
            return &dk_cli_command_helps[i];
    return NULL;
}

void dk_cli_command_help_print(FILE *out, const dk_cli_command_help *h)
{
    fprintf(out, "Usage: %s\n\n%s\n\n", h->usage, h->text);
    if (!h->sections[0]) {
        fputs("Every key is listed by `docket help`.\n", out);
        return;
    }
    fputs("The keys it reads (`docket help` lists every key):\n", out);
    dk_config_print_help_for(out, h->sections);
}
