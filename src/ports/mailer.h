/* mailer.h — the mail port: hands one finished RFC 5322 message (CRLF line ends) to a transport.
 * Adapters: mailer_smtp (libcurl SMTP, when smtp.url is set) and mailer_file (.eml files under
 * <data_dir>/mail/, the embedded default). Composition (headers, MIME parts) is core/mail.h's;
 * a mailer only moves bytes. Registered in dk_app under DK_MAILER by main.c; one per process.
 * A mailer is thread-safe; send blocks up to the adapter's timeout (call it off request paths).
 * Errors: DK_E_UNAVAILABLE (transient: the server did not answer, 4xx, disk full: retry later),
 * DK_E_VALIDATION (permanent: the address or message was refused), DK_E_INTERNAL; `why` gets a
 * short reason that never holds a secret (no credentials, no message text). */
#ifndef DK_PORTS_MAILER_H
#define DK_PORTS_MAILER_H

#include <stdatomic.h>
#include <stddef.h>

#include "core/status.h"

#define DK_MAILER "mailer"

struct dk_mailer_ops {
    const char *name; /* "smtp", "file" */
    /* Sends message (len bytes) from envelope_from to rcpt (bare addr-specs). cancel, when not
     * NULL, abandons a transfer in flight once it becomes true (then DK_E_UNAVAILABLE, why
     * "abandoned"). */
    dk_status (*send)(void *h, const char *envelope_from, const char *rcpt, const char *message,
                      size_t len, const atomic_bool *cancel, char *why,
                      size_t why_cap) DK_MUSTCHECK;
    void (*free)(void *h); /* accepts NULL */
};

typedef struct dk_mailer {
    const struct dk_mailer_ops *ops;
    void *h;
} dk_mailer;

/* The adapters. smtp: url smtp[s]://[user:password@]host[:port]; with credentials the session
 * must be TLS (smtps://, or STARTTLS required on smtp://) or nothing is sent. timeout_ms bounds
 * one whole conversation. file: dir is created (0700) when missing; each message becomes
 * <dir>/<ms>-<random>.eml, written to a temporary name, fsynced and renamed into place. */
dk_status dk_mailer_smtp_new(const char *url, int64_t timeout_ms, void **ret) DK_MUSTCHECK;
dk_status dk_mailer_file_new(const char *dir, void **ret) DK_MUSTCHECK;

#endif
