/* blob.h — the object-storage port: whole objects (avatars: a few MiB at most) by key.
 * Two adapters: a directory under the data dir (the embedded default) and the S3 API (SigV4,
 * when s3.endpoint and s3.bucket are set). Keys are made by the caller from values it made
 * itself (ids, hex digests), never from user input: 1–200 characters of [a-z0-9._/-], no
 * leading '/', no empty or dot-only segment; an adapter refuses anything else
 * (DK_E_BAD_REQUEST). A dk_blob is thread-safe. put is atomic: a reader sees the old object or
 * the whole new one, never a part. get returns the bytes in the caller's arena.
 * Errors: DK_E_NOT_FOUND (get of an absent key), DK_E_TOO_LARGE (get: the object is larger
 * than max), DK_E_UNAVAILABLE (the store did not answer or failed, after the adapter's
 * retries: callers answer 503 and change nothing), DK_E_FORBIDDEN (the store refused our
 * credentials or permissions: a configuration error), DK_E_INTERNAL (anything else). Failing
 * calls write a one-line reason into err (never a secret). */
#ifndef DK_PORTS_BLOB_H
#define DK_PORTS_BLOB_H

#include <stdbool.h>
#include <stddef.h>

#include "core/status.h"

typedef struct dk_arena dk_arena;
typedef struct dk_blob dk_blob;

#define DK_BLOB_ERR_LEN 512
typedef struct dk_blob_err {
    char text[DK_BLOB_ERR_LEN];
} dk_blob_err;

typedef struct dk_blob_options {
    /* filesystem */
    const char *dir; /* created (0700) when missing */
    /* S3 */
    const char *endpoint;  /* http(s)://host[:port] */
    const char *bucket;    /* the bucket must exist */
    const char *region;    /* SigV4 scope */
    const char *url_style; /* "path", "virtual" or "auto" (virtual on amazonaws.com) */
    const char *access_key_id;
    const char *secret_access_key;
    const char *session_token; /* temporary credentials; NULL or "" when none */
    int connect_timeout_ms;
    int timeout_ms;   /* one attempt, whole response */
    int max_attempts; /* 5xx, throttling and transport failures are retried up to this */
    int backoff_ms;   /* before the first retry; doubles, with jitter */
} dk_blob_options;

struct dk_blob_ops {
    const char *name; /* "filesystem", "s3" */
    dk_status (*open)(const dk_blob_options *opt, dk_blob **ret_blob,
                      dk_blob_err *err) DK_MUSTCHECK;
    void (*close)(dk_blob *b); /* accepts NULL */
    dk_status (*put)(dk_blob *b, const char *key, const void *data, size_t len,
                     const char *content_type, dk_blob_err *err) DK_MUSTCHECK;
    dk_status (*get)(dk_blob *b, dk_arena *a, const char *key, size_t max, char **ret_data,
                     size_t *ret_len, dk_blob_err *err) DK_MUSTCHECK;
    /* An absent key is not an error. */
    dk_status (*del)(dk_blob *b, const char *key, dk_blob_err *err) DK_MUSTCHECK;
    /* Whether the store answers and accepts us (S3: HEAD on the bucket, one attempt). */
    dk_status (*ping)(dk_blob *b, dk_blob_err *err) DK_MUSTCHECK;
};

typedef struct dk_blobstore {
    const struct dk_blob_ops *ops;
    dk_blob *blob;
} dk_blobstore;

/* Whether key is one an adapter accepts (see above). */
bool dk_blob_key_valid(const char *key);

#endif
