/* service.h — the declaration every service makes: its name, URL prefix, default port, route
 * table, migrations, and start/stop hooks. main.c lists the services; the HTTP core mounts the
 * routes, `docket migrate` applies the migrations, and the gateway and metrics read the same
 * tables. A service's init receives the shared dk_app and returns its own state. */
#ifndef DK_SERVICE_H
#define DK_SERVICE_H

#include <stddef.h>

#include "core/app.h"
#include "core/http.h"
#include "core/migrate.h"

typedef struct dk_service {
    const char *name;   /* "auth" — also its PostgreSQL schema */
    const char *prefix; /* "/api/v1/auth" */
    int default_port;
    const dk_route *routes;
    size_t nroutes;
    const dk_migration *migrations;
    size_t nmigrations;
    /* Service-to-service routes (DK_ROUTE_INTERNAL), mounted only when the service runs in a
     * process of its own (split mode); the gateway never routes to them. */
    const char *internal_prefix;
    const dk_route *internal_routes;
    size_t ninternal_routes;
    /* Starts the service (after its dependencies); registers ports it provides and subscribes
     * to events. */
    dk_status (*init)(dk_app *app, void **ret_state) DK_MUSTCHECK;
    /* Optional: starts background work (outbox relays, schedulers) once every service of the
     * process has subscribed and the bus runs; stop ends it, before the bus closes (services
     * are stopped in reverse start order). */
    void (*start)(void *state);
    void (*stop)(void *state);
    /* Optional: the HTTP server has drained (no new request comes); answer every request the
     * service still holds suspended before it returns (the server stops next). */
    void (*drained)(void *state);
    void (*shutdown)(void *state); /* accepts NULL */
} dk_service;

extern const dk_service dk_auth_service;
extern const dk_service dk_users_service;
extern const dk_service dk_tasks_service;
extern const dk_service dk_notifications_service;

#endif
