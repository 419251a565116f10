/* users_avatar.h — the rules of avatar images, without I/O: which media types are accepted,
 * whether bytes are what they claim (magic numbers), and the object key, ETag and URL an
 * avatar gets. Keys are content-addressed: avatars/<user id>/<sha256 of the bytes>.<ext>, made
 * only from the caller's verified user id and the digest (never from user input). Pure
 * functions; strings returned live in the caller's arena. */
#ifndef DK_USERS_AVATAR_H
#define DK_USERS_AVATAR_H

#include <stdbool.h>
#include <stddef.h>

typedef struct dk_arena dk_arena;

/* 2 MiB: the route's body limit (DK_ROUTE_BODY_MIB(2)) enforces it */
#define DK_AVATAR_MAX_BYTES ((size_t)2 * 1024 * 1024)

typedef enum dk_avatar_type {
    DK_AVATAR_NONE = 0,
    DK_AVATAR_PNG,
    DK_AVATAR_JPEG,
    DK_AVATAR_WEBP,
} dk_avatar_type;

/* The accepted type a Content-Type header names (parameters and case ignored), or NONE. */
dk_avatar_type dk_avatar_type_from_media(const char *content_type);
/* The type the bytes' magic number says, or NONE. */
dk_avatar_type dk_avatar_sniff(const void *data, size_t len);
const char *dk_avatar_media(dk_avatar_type t); /* "image/png" ... */
const char *dk_avatar_ext(dk_avatar_type t);   /* "png" ... */

/* avatars/<user_id>/<64 hex>.<ext>; NULL when user_id is not a UUID. */
char *dk_avatar_key(dk_arena *a, const char *user_id, dk_avatar_type t, const void *data,
                    size_t len);
/* Reads a key made by dk_avatar_key: the type and the digest (64 hex + NUL into hex).
 * False for anything else. */
bool dk_avatar_key_parse(const char *key, dk_avatar_type *ret_type, char hex[65]);
/* Strong ETag of a key: "\"<64 hex>\"" (the digest of the bytes); NULL for a bad key. */
char *dk_avatar_etag(dk_arena *a, const char *key);
/* The URL profiles show: /api/v1/users/<id>/avatar?v=<first 16 hex of the digest> (a new image
 * gets a new URL, so the versioned URL may be cached for long); NULL without a key. */
char *dk_avatar_url(dk_arena *a, const char *user_id, const char *key);
/* Whether an If-None-Match header value matches etag (weak comparison, RFC 9110 13.1.2: a
 * list, "*", W/ prefixes). */
bool dk_avatar_etag_matches(const char *if_none_match, const char *etag);

#endif
