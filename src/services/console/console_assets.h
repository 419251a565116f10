/* console_assets.h — the web console's files, compiled into the binary by
 * cmake/embed_console.cmake (one row per file of src/services/console/www). Read-only data:
 * safe from any thread. */
#ifndef DK_CONSOLE_ASSETS_H
#define DK_CONSOLE_ASSETS_H

#include <stddef.h>

typedef struct dk_console_asset {
    const char *name;         /* "app.js", "index.html" */
    const char *content_type; /* "text/javascript; charset=utf-8" */
    const unsigned char *bytes;
    size_t len;
    const char *etag;    /* quoted, from the SHA-256 of the bytes: "\"3fa2...\"" */
    const char *etag_gz; /* the gzip representation's: "\"3fa2...-gz\"" */
} dk_console_asset;

extern const dk_console_asset dk_console_assets[];
extern const size_t dk_console_nassets;
/* A digest of every file: the assets' URL path is /assets/<version>/<name>. */
extern const char dk_console_version[];

#endif
