/* blob_s3.h — the S3 adapter's request builder, public for its unit test (the vectors of AWS's
 * Signature Version 4 test suite). libcurl signs (CURLOPT_AWS_SIGV4); what libcurl 7.88 leaves
 * to the caller is done here: the canonical query string (parameters sorted by name, then
 * value, RFC 3986-encoded), the x-amz-content-sha256 header, the session token header, and an
 * explicit X-Amz-Date when the caller fixes the time (tests). Not thread-safe per handle. */
#ifndef DK_ADAPTERS_BLOB_S3_H
#define DK_ADAPTERS_BLOB_S3_H

#include <stdbool.h>
#include <stddef.h>

#include "core/status.h"

typedef struct dk_arena dk_arena;
struct curl_slist;

typedef struct dk_s3_param {
    const char *name; /* raw (not encoded) */
    const char *value;
} dk_s3_param;

/* "a=1&b=2": sorted by encoded name, then encoded value; every byte but A-Z a-z 0-9 - . _ ~
 * percent-encoded (upper-case hex). "" for none. */
char *dk_s3_canonical_query(dk_arena *a, const dk_s3_param *params, size_t n);

typedef struct dk_s3_request {
    const char *method;   /* GET, PUT, DELETE, HEAD */
    const char *url_base; /* scheme://host[:port], no trailing slash */
    const char *path;     /* "/..." already URI-encoded (keys need none) */
    const dk_s3_param *query;
    size_t nquery;
    const char *const *headers; /* more "Name: value" lines, signed too */
    size_t nheaders;
    const void *body; /* PUT */
    size_t body_len;
    bool content_sha256; /* send x-amz-content-sha256: sha256(body) (always, for S3) */
    const char *region;
    const char *service; /* "s3" */
    const char *access_key_id;
    const char *secret_access_key;
    const char *session_token; /* NULL/"": none */
    const char *amz_date;      /* "20150830T123600Z"; NULL: now (libcurl's clock) */
} dk_s3_request;

/* Sets up the easy handle (a CURL *) for r: URL, method, body, headers, SigV4. The header list
 * and strings live in the arena / *ret_headers, which the caller frees after the transfer
 * (curl_slist_free_all). */
dk_status dk_s3_setup(void *easy, dk_arena *a, const dk_s3_request *r,
                      struct curl_slist **ret_headers) DK_MUSTCHECK;

#endif
