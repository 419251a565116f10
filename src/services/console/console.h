/* console.h — the web console: the files of src/services/console/www, compiled into the binary,
 * served at / (index.html) and /assets/<version>/<name> by the edge processes (`docket all`,
 * `docket gateway`). It owns the gzip copies it makes at dk_console_new; dk_console_free
 * releases them, after the HTTP server that serves them has stopped. Handlers are thread-safe
 * (read-only after creation). The console uses the public API only. */
#ifndef DK_CONSOLE_H
#define DK_CONSOLE_H

#include <stdbool.h>

#include "core/http.h"

typedef struct dk_console dk_console;

dk_console *dk_console_new(void);
void dk_console_free(dk_console *c); /* accepts NULL */
/* Mounts GET / and GET /assets/{version}/{name}. */
void dk_console_mount(dk_console *c, dk_http_server *srv);

/* True when an Accept-Encoding value accepts gzip (a "gzip" or "*" coding whose q is not 0). */
bool dk_console_accepts_gzip(const char *accept_encoding);
/* True when an If-None-Match value names etag (quoted, as sent) or is "*"; weak validators
 * (W/"...") match too, as RFC 9110 asks for If-None-Match. */
bool dk_console_etag_matches(const char *if_none_match, const char *etag);

#endif
