/* ids.h — identifiers: UUIDv7 (time-ordered, RFC 9562) for every resource, and request ids.
 * Thread-safe; writes into caller buffers. */
#ifndef DK_IDS_H
#define DK_IDS_H

#include <stdbool.h>
#include <stddef.h>

#define DK_UUID_LEN 37 /* 36 chars + NUL */

void dk_uuid7(char out[DK_UUID_LEN]);
/* The same layout with non-cryptographic random bits (request ids: unique, not secret). */
void dk_uuid7_fast(char out[DK_UUID_LEN]);
/* True for the canonical lower-case 8-4-4-4-12 hex form of any UUID. */
bool dk_uuid_valid(const char *s);
/* True when s is an acceptable client request id: 1–128 chars of [A-Za-z0-9._:-]. */
bool dk_request_id_valid(const char *s);

#endif
