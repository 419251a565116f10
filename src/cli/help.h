/* help.h — the text of `docket help` and `docket help COMMAND`. Static tables only: nothing to
 * free, safe from any thread. */
#ifndef DK_CLI_HELP_H
#define DK_CLI_HELP_H

#include <stdio.h>

/* Per-command help: what it does, its port, the configuration sections it reads. */
typedef struct dk_cli_command_help {
    const char *name;
    const char *usage;
    const char *text;
    const char *const sections[16];
} dk_cli_command_help;

/* The command list and every configuration key. */
void dk_cli_usage_print(FILE *out);
/* The help of one command; NULL when there is none. */
const dk_cli_command_help *dk_cli_command_help_find(const char *name);
void dk_cli_command_help_print(FILE *out, const dk_cli_command_help *h);

#endif
