/* plan.h — what a command runs in this process: every service (`docket all`, `docket migrate`),
 * one (split mode) or none (`docket gateway`). main.c makes the plan from the command and its
 * list of services; the wiring reads it. A value on the stack: nothing to free. */
#ifndef DK_CLI_PLAN_H
#define DK_CLI_PLAN_H

#include <stdbool.h>
#include <stddef.h>

#include "services/service.h"

#define DK_EXIT_USAGE    2 /* the exit code of a usage or configuration error */
#define DK_PLAN_SERVICES 8 /* room for every service main.c lists */

typedef struct dk_plan {
    const char *process; /* "all", "gateway", or a service name */
    bool gateway;        /* forwards to upstream processes instead of running services */
    size_t n;
    const dk_service *local[DK_PLAN_SERVICES];
} dk_plan;

/* Whether svc runs in this process. */
static inline bool dk_plan_has(const dk_plan *plan, const dk_service *svc)
{
    for (size_t i = 0; i < plan->n; i++)
        if (plan->local[i] == svc)
            return true;
    return false;
}

#endif
