/* notifications_internal.h — what the notifications service's files share: the service's
 * state (built by notifications_init in notifications_service.c, read by the handlers of every
 * file) and the handlers that live outside notifications_service.c. Not for other services. */
#ifndef DK_NOTIFICATIONS_INTERNAL_H
#define DK_NOTIFICATIONS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/app.h"
#include "core/http.h"
#include "core/workpool.h"
#include "ports/mailer.h"
#include "services/notifications/notifications_delivery.h"
#include "services/notifications/notifications_hub.h"
#include "services/notifications/notifications_repo.h"
#include "services/notifications/webhook_url.h"

/* A background thread woken by kicks, a period, or stop. */
typedef struct notifications_loop {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool kicked, stop, running;
} notifications_loop;

typedef struct notifications_svc {
    dk_app *app;
    notifications_repo repo;
    unsigned char cursor_key[32];
    bool allow_private;
    int64_t heartbeat_ms, scheduler_ms, due_window_ms;
    notifications_delivery *delivery;
    dk_mailer mailer;     /* ops NULL: no mailer in this process */
    webhook_net net;      /* webhook URLs: read by the HTTP client, resolved by the resolver */
    dk_http_client *http; /* webhook calls */
    /* the event streams */
    notifications_hub *hub;
    int max_streams_per_user;
    /* the due-soon scheduler */
    notifications_loop sched;
    /* when the last task event was handled successfully (dk_mono_ms; 0: since reported) */
    atomic_llong last_event_ok_ms;
    /* webhook URL checks (name resolution, up to NT_WEBHOOK_CHECK_TIMEOUT) run here, never on
     * an HTTP thread */
    dk_workpool *checks;
} notifications_svc;

/* The problem for a failed repository or port call (404 names a notification, 503 says retry). */
void notifications_res_fail(dk_res *res, dk_status st);

/* GET and PUT /preferences (notifications_prefs.c). */
void notifications_prefs_get(dk_req *req, dk_res *res);
void notifications_prefs_put(dk_req *req, dk_res *res);

#endif
