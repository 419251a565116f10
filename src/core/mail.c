#include "core/mail.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "core/arena.h"
#include "core/crypto.h"
#include "core/timeutil.h"
#include "core/banned.h"

bool dk_mail_mailbox_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 3 || n > 254)
        return false;
    const char *at = strrchr(s, '@');
    if (!at || at == s || at[1] == '\0')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f || strchr("<>()[],;:\"\\", c))
            return false;
    }
    return true;
}

dk_status dk_mail_sender_parse(dk_arena *a, const char *from, dk_mail_sender *ret)
{
    if (!from || !*from)
        return DK_E_VALIDATION;
    for (const char *p = from; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return DK_E_VALIDATION;
    const char *lt = strchr(from, '<');
    char *env;
    if (lt) {
        const char *gt = strchr(lt, '>');
        if (!gt || gt[1] != '\0')
            return DK_E_VALIDATION;
        env = dk_arena_strndup(a, lt + 1, (size_t)(gt - lt - 1));
    } else {
        env = dk_arena_strdup(a, from);
    }
    if (!dk_mail_mailbox_ok(env))
        return DK_E_VALIDATION;
    char *m = dk_arena_strdup(a, strrchr(env, '@') + 1);
    for (char *p = m; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '-'))
            *p = '-';
    ret->header = dk_arena_strdup(a, from);
    ret->envelope = env;
    ret->msgid_domain = m;
    return DK_OK;
}

void dk_mail_date(int64_t ms, char out[64])
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, 64, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday % 7], tm.tm_mday,
             months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Length of s cut to at most max bytes without splitting a UTF-8 sequence. */
static size_t mail_utf8_cut(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n <= max)
        return n;
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
        n--;
    return n;
}

char *dk_mail_one_line(dk_arena *a, const char *s, size_t max)
{
    size_t n = mail_utf8_cut(s, max);
    bool cut = n < strlen(s);
    char *out = dk_arena_alloc(a, n + 4);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
    }
    if (cut)
        memcpy(out + n, "...", 3);
    return out;
}

static bool mail_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return false;
    return true;
}

char *dk_mail_subject(dk_arena *a, const char *prefix, const char *text)
{
    if (mail_ascii(text))
        return dk_arena_printf(a, "Subject: %s %s\r\n", prefix, text);
    char *out = dk_arena_printf(a, "Subject: %s", prefix);
    size_t len = strlen(text), pos = 0;
    while (pos < len) {
        size_t end = pos + 45 < len ? pos + 45 : len;
        while (end > pos + 1 && end < len && ((unsigned char)text[end] & 0xc0) == 0x80)
            end--;
        unsigned char b64[64];
        EVP_EncodeBlock(b64, (const unsigned char *)text + pos, (int)(end - pos));
        out = dk_arena_printf(a, "%s%s=?UTF-8?B?%s?=", out, pos == 0 ? " " : "\r\n ",
                              (const char *)b64);
        pos = end;
    }
    return dk_arena_printf(a, "%s\r\n", out);
}

/* s with CRLF line ends, base64-encoded in lines of 76 characters. */
static char *mail_base64_body(dk_arena *a, const char *s);

/* A body part as readable 8bit text (CRLF line ends) when every line fits in 900 bytes and
 * no bare CR or NUL is in it, else base64. *ret_cte gets the transfer encoding. */
static char *mail_body(dk_arena *a, const char *s, const char **ret_cte)
{
    size_t line = 0, n = strlen(s);
    bool plain = true;
    for (size_t i = 0; i <= n && plain; i++) {
        if (i == n || s[i] == '\n') {
            line = 0;
            continue;
        }
        if (s[i] == '\r' || s[i] == '\0' || ++line > 900)
            plain = false;
    }
    if (!plain) {
        *ret_cte = "base64";
        return mail_base64_body(a, s);
    }
    char *out = dk_arena_alloc(a, 2 * n + 3);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n')
            out[o++] = '\r';
        out[o++] = s[i];
    }
    if (o < 2 || out[o - 1] != '\n') {
        out[o++] = '\r';
        out[o++] = '\n';
    }
    out[o] = '\0';
    *ret_cte = "8bit";
    return out;
}

static char *mail_base64_body(dk_arena *a, const char *s)
{
    size_t n = strlen(s), extra = 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
            extra++;
    char *crlf = dk_arena_alloc(a, n + extra + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
            crlf[k++] = '\r';
        crlf[k++] = s[i];
    }
    size_t lines = k / 57 + 1;
    char *out = dk_arena_alloc(a, lines * 78 + 1);
    size_t o = 0;
    for (size_t pos = 0; pos < k; pos += 57) {
        size_t chunk = k - pos < 57 ? k - pos : 57;
        o += (size_t)EVP_EncodeBlock((unsigned char *)out + o, (const unsigned char *)crlf + pos,
                                     (int)chunk);
        out[o++] = '\r';
        out[o++] = '\n';
    }
    out[o] = '\0';
    return out;
}

char *dk_mail_compose(dk_arena *a, const dk_mail_sender *from, const dk_mail *m, size_t *ret_len)
{
    if (!dk_mail_mailbox_ok(m->to))
        return NULL;
    char date[64];
    dk_mail_date(dk_now_ms(), date);
    unsigned char rnd[16];
    dk_random_bytes(rnd, sizeof rnd);
    char id[33];
    dk_hex(rnd, sizeof rnd, id);
    char *msg =
        dk_arena_printf(a, "Date: %s\r\nFrom: %s\r\nTo: %s\r\nMessage-ID: <%s@%s>\r\n%s", date,
                        from->header, m->to, id, from->msgid_domain,
                        dk_mail_subject(a, "[Docket]", dk_mail_one_line(a, m->subject, 240)));
    for (const char *const *h = m->headers; h && *h; h++)
        msg = dk_arena_printf(a, "%s%s\r\n", msg, dk_mail_one_line(a, *h, 900));
    msg = dk_arena_printf(a, "%sMIME-Version: 1.0\r\nAuto-Submitted: auto-generated\r\n", msg);
    const char *tcte = NULL, *hcte = NULL;
    char *text = mail_body(a, m->text, &tcte);
    if (!m->html) {
        msg = dk_arena_printf(a,
                              "%sContent-Type: text/plain; charset=utf-8\r\n"
                              "Content-Transfer-Encoding: %s\r\n\r\n%s",
                              msg, tcte, text);
    } else {
        char *html = mail_body(a, m->html, &hcte);
        char boundary[48];
        snprintf(boundary, sizeof boundary, "=_docket_%.24s", id);
        msg = dk_arena_printf(a,
                              "%sContent-Type: multipart/alternative; boundary=\"%s\"\r\n\r\n"
                              "This is a MIME message.\r\n"
                              "--%s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                              "Content-Transfer-Encoding: %s\r\n\r\n%s"
                              "--%s\r\nContent-Type: text/html; charset=utf-8\r\n"
                              "Content-Transfer-Encoding: %s\r\n\r\n%s"
                              "--%s--\r\n",
                              msg, boundary, boundary, tcte, text, boundary, hcte, html, boundary);
    }
    if (ret_len)
        *ret_len = strlen(msg);
    return msg;
}

char *dk_mail_html_escape(dk_arena *a, const char *s)
{
    size_t n = 0;
    for (const char *p = s; *p; p++)
        n += strchr("&<>\"'", *p) ? 6 : 1;
    char *out = dk_arena_alloc(a, n + 1), *o = out;
    for (const char *p = s; *p; p++) {
        const char *rep = NULL;
        switch (*p) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '"':
            rep = "&quot;";
            break;
        case '\'':
            rep = "&#39;";
            break;
        default:
            *o++ = *p;
            continue;
        }
        size_t k = strlen(rep);
        memcpy(o, rep, k);
        o += k;
    }
    *o = '\0';
    return out;
}
