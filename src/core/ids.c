#include "core/ids.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/crypto.h"
#include "core/timeutil.h"
#include "core/banned.h"

static void dk_uuid7_format(unsigned char b[16], char out[DK_UUID_LEN]);

void dk_uuid7(char out[DK_UUID_LEN])
{
    unsigned char b[16];
    dk_random_bytes(b + 6, 10);
    dk_uuid7_format(b, out);
}

void dk_uuid7_fast(char out[DK_UUID_LEN])
{
    unsigned char b[16];
    dk_fast_random(b + 6, 10);
    dk_uuid7_format(b, out);
}

static void dk_uuid7_format(unsigned char b[16], char out[DK_UUID_LEN])
{
    uint64_t ms = (uint64_t)dk_now_ms();
    for (int i = 0; i < 6; i++)
        b[i] = (unsigned char)(ms >> (8 * (5 - i)));
    b[6] = (unsigned char)(0x70 | (b[6] & 0x0F));
    b[8] = (unsigned char)(0x80 | (b[8] & 0x3F));
    char hex[33];
    dk_hex(b, 16, hex);
    snprintf(out, DK_UUID_LEN, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16,
             hex + 20);
}

bool dk_uuid_valid(const char *s)
{
    if (!s || strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
    }
    return true;
}

bool dk_request_id_valid(const char *s)
{
    if (!s)
        return false;
    size_t n = strlen(s);
    if (n < 1 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return false;
    }
    return true;
}
