#include "core/app.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/banned.h"

void dk_app_register_port(dk_app *app, const char *name, const void *ops, void *handle)
{
    if (app->nports >= DK_APP_MAX_PORTS) {
        fprintf(stderr, "too many service ports\n");
        abort();
    }
    app->ports[app->nports].name = name;
    app->ports[app->nports].ops = ops;
    app->ports[app->nports].handle = handle;
    app->nports++;
}

bool dk_app_port(const dk_app *app, const char *name, const void **ret_ops, void **ret_handle)
{
    for (int i = 0; i < app->nports; i++) {
        if (strcmp(app->ports[i].name, name) == 0) {
            *ret_ops = app->ports[i].ops;
            *ret_handle = app->ports[i].handle;
            return true;
        }
    }
    return false;
}
