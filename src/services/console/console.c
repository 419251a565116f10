/* console.c — serves the web console (see console.h): its headers make the page safe to run
 * next to the API on one origin (a Content-Security-Policy that allows only this origin's own
 * scripts, styles and API, never framed, never sniffed), and cheap to load again (ETag, a year
 * of cache for versioned asset URLs, gzip made once at start). */
#include "services/console/console.h"

#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "core/alloc.h"
#include "core/str.h"
#include "services/console/console_assets.h"

/* Files smaller than this are sent as they are: gzip would not pay for its header. */
#define CONSOLE_GZIP_MIN 512

struct console_gz {
    unsigned char *bytes;
    size_t len; /* 0: no gzip copy */
};

struct dk_console {
    struct console_gz *gz; /* parallel to dk_console_assets */
    size_t index;          /* the row of index.html */
};

static const char console_csp[] =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'";

/* gzip (RFC 1952) of one file at the best level; false when it would not be smaller. */
static bool console_gzip(const unsigned char *in, size_t len, struct console_gz *out)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK)
        return false;
    size_t cap = deflateBound(&z, (uLong)len);
    unsigned char *buf = dk_malloc(cap);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    z.next_out = buf;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    size_t n = cap - z.avail_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END || n >= len) {
        dk_free(buf);
        return false;
    }
    out->bytes = buf;
    out->len = n;
    return true;
}

dk_console *dk_console_new(void)
{
    dk_console *c = DK_NEW(dk_console);
    c->gz = dk_calloc(dk_console_nassets ? dk_console_nassets : 1, sizeof *c->gz);
    for (size_t i = 0; i < dk_console_nassets; i++) {
        const dk_console_asset *a = &dk_console_assets[i];
        if (strcmp(a->name, "index.html") == 0)
            c->index = i;
        if (a->len >= CONSOLE_GZIP_MIN)
            (void)console_gzip(a->bytes, a->len, &c->gz[i]);
    }
    return c;
}

void dk_console_free(dk_console *c)
{
    if (!c)
        return;
    for (size_t i = 0; c->gz && i < dk_console_nassets; i++)
        dk_free(c->gz[i].bytes);
    dk_free(c->gz);
    dk_free(c);
}

/* One Accept-Encoding entry in [s, s+n): 1 = gzip (or x-gzip), 2 = "*", 0 = another coding;
 * *ret_ok tells whether its q parameter is absent or above 0. */
static int console_coding(const char *s, size_t n, bool *ret_ok)
{
    while (n > 0 && (*s == ' ' || *s == '\t'))
        s++, n--;
    const char *semi = memchr(s, ';', n);
    size_t name_len = semi ? (size_t)(semi - s) : n;
    while (name_len > 0 && (s[name_len - 1] == ' ' || s[name_len - 1] == '\t'))
        name_len--;
    int kind = 0;
    if ((name_len == 4 && strncasecmp(s, "gzip", 4) == 0) ||
        (name_len == 6 && strncasecmp(s, "x-gzip", 6) == 0))
        kind = 1;
    else if (name_len == 1 && s[0] == '*')
        kind = 2;
    *ret_ok = true;
    if (!kind || !semi)
        return kind;
    /* q=0, q=0.0, q=0.000: refused; anything else accepted */
    const char *p = semi + 1, *end = s + n;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    if (end - p < 3 || (p[0] != 'q' && p[0] != 'Q') || p[1] != '=' || p[2] != '0')
        return kind;
    for (p += 3; p < end && (*p == '.' || *p == '0'); p++)
        ;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    *ret_ok = p < end;
    return kind;
}

bool dk_console_accepts_gzip(const char *ae)
{
    if (!ae)
        return false;
    int gzip = -1, star = -1; /* -1: not named; else whether accepted */
    for (const char *p = ae;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        bool ok = false;
        int kind = console_coding(p, n, &ok);
        if (kind == 1)
            gzip = ok;
        else if (kind == 2)
            star = ok;
        if (!comma)
            break;
        p = comma + 1;
    }
    /* an explicit gzip entry wins over "*" */
    return gzip >= 0 ? gzip == 1 : star == 1;
}

bool dk_console_etag_matches(const char *inm, const char *etag)
{
    if (!inm)
        return false;
    size_t el = strlen(etag);
    const char *p = inm;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (!*p)
            break;
        if (*p == '*')
            return true;
        if (p[0] == 'W' && p[1] == '/')
            p += 2;
        const char *end = p;
        if (*p == '"') {
            const char *q = strchr(p + 1, '"');
            end = q ? q + 1 : p + strlen(p);
        } else {
            while (*end && *end != ',')
                end++;
        }
        if ((size_t)(end - p) == el && memcmp(p, etag, el) == 0)
            return true;
        p = end;
    }
    return false;
}

static void console_send(dk_req *req, dk_res *res, size_t i, bool immutable)
{
    dk_console *c = req->service;
    const dk_console_asset *a = &dk_console_assets[i];
    bool gz = c->gz[i].len > 0 && dk_console_accepts_gzip(dk_req_header(req, "Accept-Encoding"));
    const char *etag = gz ? a->etag_gz : a->etag;

    dk_res_header(res, "ETag", etag);
    dk_res_header(res, "Cache-Control",
                  immutable ? "public, max-age=31536000, immutable" : "no-cache");
    if (c->gz[i].len > 0)
        dk_res_header(res, "Vary", "Accept-Encoding");
    dk_res_header(res, "Content-Security-Policy", console_csp);
    dk_res_header(res, "X-Content-Type-Options", "nosniff");
    dk_res_header(res, "Referrer-Policy", "no-referrer");
    dk_res_header(res, "X-Frame-Options", "DENY");
    dk_res_header(res, "Cross-Origin-Opener-Policy", "same-origin");
    dk_res_header(res, "Cross-Origin-Resource-Policy", "same-origin");
    if (dk_console_etag_matches(dk_req_header(req, "If-None-Match"), etag)) {
        dk_res_empty(res, 304);
        return;
    }
    if (gz) {
        dk_res_header(res, "Content-Encoding", "gzip");
        dk_res_text(res, 200, a->content_type, (const char *)c->gz[i].bytes, c->gz[i].len);
    } else {
        dk_res_text(res, 200, a->content_type, (const char *)a->bytes, a->len);
    }
}

static void console_index(dk_req *req, dk_res *res)
{
    dk_console *c = req->service;
    console_send(req, res, c->index, false);
}

static void console_asset(dk_req *req, dk_res *res)
{
    const char *version = dk_req_param(req, "version");
    const char *name = dk_req_param(req, "name");
    if (version && strcmp(version, dk_console_version) == 0 && name &&
        strcmp(name, "index.html") != 0) {
        for (size_t i = 0; i < dk_console_nassets; i++) {
            if (strcmp(dk_console_assets[i].name, name) == 0) {
                console_send(req, res, i, true);
                return;
            }
        }
    }
    /* an asset of another build (a page loaded before an upgrade) or no asset at all */
    dk_res_header(res, "Cache-Control", "no-store");
    dk_res_problem(res, DK_E_NOT_FOUND, "no such console asset: %s", req->path);
}

/* The page under the prefix "/" (so that its metrics and logs name the route "/"), the assets
 * under "". */
static const dk_route console_page_routes[] = {
    {"GET", "/", console_index, DK_ROUTE_OPS},
    {"HEAD", "/", console_index, DK_ROUTE_OPS},
};
static const dk_route console_asset_routes[] = {
    {"GET", "/assets/{version}/{name}", console_asset, DK_ROUTE_OPS},
};

void dk_console_mount(dk_console *c, dk_http_server *srv)
{
    dk_http_mount(srv, "console", "/", console_page_routes,
                  sizeof console_page_routes / sizeof console_page_routes[0], c);
    dk_http_mount(srv, "console", "", console_asset_routes,
                  sizeof console_asset_routes / sizeof console_asset_routes[0], c);
}
