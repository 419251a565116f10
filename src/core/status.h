/* status.h — the one result code of Docket.
 * Every fallible function returns a dk_status: DK_OK (0) on success. Each row of the X-macro
 * table gives the HTTP status and problem title the code turns into, so a handler can hand any
 * status to the HTTP core, which renders it as problem+json in one place. */
#ifndef DK_STATUS_H
#define DK_STATUS_H

#define DK_MUSTCHECK    __attribute__((warn_unused_result))
#define DK_PRINTF(a, b) __attribute__((format(printf, a, b)))

#define DK_STATUS_MAP(X)                                                                           \
    X(DK_OK, 200, "OK")                                                                            \
    X(DK_E_BAD_REQUEST, 400, "Bad Request")                                                        \
    X(DK_E_UNAUTHORIZED, 401, "Unauthorized")                                                      \
    X(DK_E_FORBIDDEN, 403, "Forbidden")                                                            \
    X(DK_E_NOT_FOUND, 404, "Not Found")                                                            \
    X(DK_E_METHOD, 405, "Method Not Allowed")                                                      \
    X(DK_E_CONFLICT, 409, "Conflict")                                                              \
    X(DK_E_PRECONDITION, 412, "Precondition Failed")                                               \
    X(DK_E_TOO_LARGE, 413, "Content Too Large")                                                    \
    X(DK_E_MEDIA_TYPE, 415, "Unsupported Media Type")                                              \
    X(DK_E_VALIDATION, 422, "Unprocessable Content")                                               \
    X(DK_E_RATE_LIMITED, 429, "Too Many Requests")                                                 \
    X(DK_E_INTERNAL, 500, "Internal Server Error")                                                 \
    X(DK_E_BAD_GATEWAY, 502, "Bad Gateway")                                                        \
    X(DK_E_UNAVAILABLE, 503, "Service Unavailable")                                                \
    X(DK_E_TIMEOUT, 504, "Gateway Timeout")

typedef enum {
#define DK_STATUS_ENUM(name, http, title) name,
    DK_STATUS_MAP(DK_STATUS_ENUM)
#undef DK_STATUS_ENUM
        DK_STATUS__COUNT
} dk_status;

int dk_status_http(dk_status st);
const char *dk_status_title(dk_status st);
/* Maps an HTTP status back to the closest dk_status (DK_E_INTERNAL when unknown). */
dk_status dk_status_from_http(int http);

#endif
