/* mail.h — composing RFC 5322 messages: the sender setting split into header and envelope,
 * RFC 5322 dates, one-line header values (control characters removed), RFC 2047 subjects, and a
 * complete text + HTML (multipart/alternative) message. Transport is the mailer port's
 * (ports/mailer.h). Everything returned lives in the caller's arena; thread-safe. */
#ifndef DK_CORE_MAIL_H
#define DK_CORE_MAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct dk_arena dk_arena;

/* The sender: smtp.from ("addr@host" or "Name <addr@host>") split into its parts. */
typedef struct dk_mail_sender {
    const char *header;       /* the From header value, as configured */
    const char *envelope;     /* its addr-spec, for MAIL FROM */
    const char *msgid_domain; /* right-hand side of Message-IDs (host-name characters only) */
} dk_mail_sender;

/* DK_E_VALIDATION when from is empty, has control characters or no usable address. */
dk_status dk_mail_sender_parse(dk_arena *a, const char *from, dk_mail_sender *ret) DK_MUSTCHECK;
/* True for an address we can put in an envelope and a header as it is. */
bool dk_mail_mailbox_ok(const char *s);
/* RFC 5322 date, e.g. "Fri, 13 Feb 2026 09:05:00 +0000". */
void dk_mail_date(int64_t ms, char out[64]);
/* A copy of s fit for one header or body line: control characters (CR, LF) become spaces; cut
 * to max bytes without splitting UTF-8 ("..." marks a cut). */
char *dk_mail_one_line(dk_arena *a, const char *s, size_t max);
/* "Subject: <prefix> <text>\r\n"; non-ASCII text as RFC 2047 B encoded-words on folded lines. */
char *dk_mail_subject(dk_arena *a, const char *prefix, const char *text);

/* A message with a plain-text and an HTML part (html NULL: text/plain only). Bodies are UTF-8
 * with LF line ends; a part goes as readable 8bit text when its lines are short (<= 900 bytes),
 * else base64-encoded, so no line is ever too long. */
typedef struct dk_mail {
    const char *to;      /* addr-spec */
    const char *subject; /* after the "[Docket]" prefix */
    const char *text;
    const char *html;
    const char *const *headers; /* extra "Name: value" lines (values sanitised), NULL-ended */
} dk_mail;

/* The whole message, CRLF line ends; NULL when m->to is not a usable address. */
char *dk_mail_compose(dk_arena *a, const dk_mail_sender *from, const dk_mail *m, size_t *ret_len);
/* Escapes &, <, >, " and ' for HTML text and attribute values. */
char *dk_mail_html_escape(dk_arena *a, const char *s);

#endif
