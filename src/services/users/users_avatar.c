#include "services/users/users_avatar.h"

#include <string.h>
#include <strings.h>

#include "core/arena.h"
#include "core/crypto.h"
#include "core/ids.h"
#include "core/banned.h"

static const struct {
    dk_avatar_type type;
    const char *media;
    const char *ext;
} avatar_types[] = {
    {DK_AVATAR_PNG, "image/png", "png"},
    {DK_AVATAR_JPEG, "image/jpeg", "jpg"},
    {DK_AVATAR_WEBP, "image/webp", "webp"},
};

#define NTYPES (sizeof avatar_types / sizeof avatar_types[0])

dk_avatar_type dk_avatar_type_from_media(const char *ct)
{
    if (!ct)
        return DK_AVATAR_NONE;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, "; \t");
    for (size_t i = 0; i < NTYPES; i++)
        if (strlen(avatar_types[i].media) == n && strncasecmp(ct, avatar_types[i].media, n) == 0)
            return avatar_types[i].type;
    return DK_AVATAR_NONE;
}

dk_avatar_type dk_avatar_sniff(const void *data, size_t len)
{
    const unsigned char *p = data;
    static const unsigned char png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len >= sizeof png && memcmp(p, png, sizeof png) == 0)
        return DK_AVATAR_PNG;
    /* JPEG: SOI then the first marker's 0xFF */
    if (len >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff)
        return DK_AVATAR_JPEG;
    /* WebP: a RIFF container of form WEBP whose first chunk is VP8, VP8L or VP8X */
    if (len >= 16 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBPVP8", 7) == 0 &&
        (p[15] == ' ' || p[15] == 'L' || p[15] == 'X'))
        return DK_AVATAR_WEBP;
    return DK_AVATAR_NONE;
}

const char *dk_avatar_media(dk_avatar_type t)
{
    for (size_t i = 0; i < NTYPES; i++)
        if (avatar_types[i].type == t)
            return avatar_types[i].media;
    return "application/octet-stream";
}

const char *dk_avatar_ext(dk_avatar_type t)
{
    for (size_t i = 0; i < NTYPES; i++)
        if (avatar_types[i].type == t)
            return avatar_types[i].ext;
    return NULL;
}

char *dk_avatar_key(dk_arena *a, const char *user_id, dk_avatar_type t, const void *data,
                    size_t len)
{
    const char *ext = dk_avatar_ext(t);
    if (!ext || !dk_uuid_valid(user_id))
        return NULL;
    unsigned char digest[32];
    char hex[65];
    dk_sha256(data, len, digest);
    dk_hex(digest, sizeof digest, hex);
    char *key = dk_arena_printf(a, "avatars/%s/%s.%s", user_id, hex, ext);
    /* ids are lower-case hex and dashes already; keep keys lower-case whatever their case */
    for (char *p = key; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return key;
}

bool dk_avatar_key_parse(const char *key, dk_avatar_type *ret_type, char hex[65])
{
    if (!key || strncmp(key, "avatars/", 8) != 0)
        return false;
    const char *file = strrchr(key, '/');
    if (!file || file == key + 7)
        return false;
    file++;
    for (int i = 0; i < 64; i++)
        if (!((file[i] >= '0' && file[i] <= '9') || (file[i] >= 'a' && file[i] <= 'f')))
            return false;
    if (file[64] != '.')
        return false;
    for (size_t i = 0; i < NTYPES; i++) {
        if (strcmp(file + 65, avatar_types[i].ext) == 0) {
            if (ret_type)
                *ret_type = avatar_types[i].type;
            if (hex) {
                memcpy(hex, file, 64);
                hex[64] = '\0';
            }
            return true;
        }
    }
    return false;
}

char *dk_avatar_etag(dk_arena *a, const char *key)
{
    char hex[65];
    if (!dk_avatar_key_parse(key, NULL, hex))
        return NULL;
    return dk_arena_printf(a, "\"%s\"", hex);
}

char *dk_avatar_url(dk_arena *a, const char *user_id, const char *key)
{
    char hex[65];
    if (!user_id || !dk_avatar_key_parse(key, NULL, hex))
        return NULL;
    return dk_arena_printf(a, "/api/v1/users/%s/avatar?v=%.16s", user_id, hex);
}

bool dk_avatar_etag_matches(const char *inm, const char *etag)
{
    if (!inm || !etag)
        return false;
    size_t elen = strlen(etag);
    const char *p = inm;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (!*p)
            break;
        if (*p == '*')
            return true;
        if (strncmp(p, "W/", 2) == 0)
            p += 2;
        if (*p != '"')
            return false; /* malformed: no match */
        const char *end = strchr(p + 1, '"');
        if (!end)
            return false;
        size_t n = (size_t)(end - p) + 1;
        if (n == elen && memcmp(p, etag, n) == 0)
            return true;
        p = end + 1;
    }
    return false;
}
