/* account_guard.h — asked before an account is deleted: may it go now? The tasks service
 * provides it (an account that owns a project with other members must transfer it first);
 * in `docket all` in-process, in split mode over the tasks service's internal API. Registered
 * in dk_app under DK_ACCOUNT_GUARD; absent when no tasks service is reachable (then nothing
 * blocks a deletion). Thread-safe. Errors: DK_E_CONFLICT (not now; *ret_reason in the arena),
 * DK_E_UNAVAILABLE, DK_E_INTERNAL. */
#ifndef DK_PORTS_ACCOUNT_GUARD_H
#define DK_PORTS_ACCOUNT_GUARD_H

#include "core/status.h"

typedef struct dk_arena dk_arena;

#define DK_ACCOUNT_GUARD "accounts.deletion_guard"

struct dk_account_guard_ops {
    dk_status (*may_delete)(void *h, dk_arena *a, const char *user_id) DK_MUSTCHECK;
};

#endif
