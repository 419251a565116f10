#include "services/tasks/tasks_cursor.h"

#include <string.h>

#include "core/arena.h"
#include "core/crypto.h"
#include "core/banned.h"

/* Layout: version(1) sort(1) filter_hash(16) id(16) value(8, big-endian two's complement)
 * mac(32). The MAC covers the context string and everything before it. */
#define CUR_VERSION 1
#define CUR_BODY    (1 + 1 + TASKS_FILTER_HASH_LEN + 16 + 8)
#define CUR_MAC     32
#define CUR_TOTAL   (CUR_BODY + CUR_MAC)

static const char tasks_cursor_context[] = "docket.tasks.list.cursor\n";

static void tasks_cursor_mac(const unsigned char key[32], const unsigned char *body,
                             unsigned char out[CUR_MAC])
{
    unsigned char msg[sizeof tasks_cursor_context - 1 + CUR_BODY];
    memcpy(msg, tasks_cursor_context, sizeof tasks_cursor_context - 1);
    memcpy(msg + sizeof tasks_cursor_context - 1, body, CUR_BODY);
    dk_hmac_sha256(key, 32, msg, sizeof msg, out);
}

static int tasks_cursor_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Canonical lower-case UUID text to 16 bytes; false when it is not one. */
static bool tasks_cursor_uuid_pack(const char *s, unsigned char out[16])
{
    if (!dk_uuid_valid(s))
        return false;
    int n = 0;
    for (const char *p = s; *p; p++) {
        if (*p == '-')
            continue;
        int hi = tasks_cursor_hexval(p[0]), lo = tasks_cursor_hexval(p[1]);
        if (hi < 0 || lo < 0 || n >= 16)
            return false;
        out[n++] = (unsigned char)(hi << 4 | lo);
        p++;
    }
    return n == 16;
}

static void tasks_cursor_uuid_unpack(const unsigned char in[16], char out[DK_UUID_LEN])
{
    static const char hex[] = "0123456789abcdef";
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[in[i] >> 4];
        out[o++] = hex[in[i] & 15];
    }
    out[o] = '\0';
}

char *tasks_cursor_encode(dk_arena *a, const unsigned char key[32], const tasks_cursor *c)
{
    unsigned char buf[CUR_TOTAL];
    if (c->sort < 0 || c->sort > 255)
        return NULL;
    buf[0] = CUR_VERSION;
    buf[1] = (unsigned char)c->sort;
    memcpy(buf + 2, c->filter_hash, TASKS_FILTER_HASH_LEN);
    if (!tasks_cursor_uuid_pack(c->id, buf + 2 + TASKS_FILTER_HASH_LEN))
        return NULL;
    uint64_t v = (uint64_t)c->value;
    unsigned char *pv = buf + 2 + TASKS_FILTER_HASH_LEN + 16;
    for (int i = 7; i >= 0; i--) {
        pv[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
    tasks_cursor_mac(key, buf, buf + CUR_BODY);
    return dk_base64url(a, buf, sizeof buf);
}

dk_status tasks_cursor_decode(dk_arena *a, const unsigned char key[32], const char *text,
                              tasks_cursor *ret)
{
    if (!text || !*text || strlen(text) > TASKS_CURSOR_TEXT_MAX)
        return DK_E_BAD_REQUEST;
    size_t n = 0;
    unsigned char *buf = dk_base64url_decode(a, text, &n);
    if (!buf || n != CUR_TOTAL)
        return DK_E_BAD_REQUEST;
    /* only the canonical spelling: no padding, no altered spare bits in the last character */
    if (strcmp(dk_base64url(a, buf, n), text) != 0)
        return DK_E_BAD_REQUEST;
    unsigned char mac[CUR_MAC];
    tasks_cursor_mac(key, buf, mac);
    if (!dk_ct_equal(mac, buf + CUR_BODY, CUR_MAC))
        return DK_E_BAD_REQUEST;
    if (buf[0] != CUR_VERSION)
        return DK_E_BAD_REQUEST;
    tasks_cursor c;
    c.sort = buf[1];
    memcpy(c.filter_hash, buf + 2, TASKS_FILTER_HASH_LEN);
    tasks_cursor_uuid_unpack(buf + 2 + TASKS_FILTER_HASH_LEN, c.id);
    const unsigned char *pv = buf + 2 + TASKS_FILTER_HASH_LEN + 16;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | pv[i];
    c.value = (int64_t)v;
    *ret = c;
    return DK_OK;
}
