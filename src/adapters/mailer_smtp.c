/* mailer_smtp.c — the mailer port over SMTP with the libcurl easy API (one conversation per
 * message). A URL with credentials gets CURLUSESSL_ALL: smtps://, or STARTTLS that must succeed
 * on smtp:// — a server (or a man in the middle) that strips STARTTLS gets no password. Without
 * credentials STARTTLS is used when offered (CURLUSESSL_TRY). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "core/alloc.h"
#include "core/common.h"
#include "core/str.h"
#include "ports/mailer.h"
#include "core/trace.h"
#include "adapters/mailer.h"
#include "core/banned.h"

typedef struct mailer_smtp {
    char *url;
    long use_ssl;
    int64_t timeout_ms;
} mailer_smtp;

static pthread_once_t mailer_smtp_once = PTHREAD_ONCE_INIT;
static CURLcode mailer_smtp_global_rc = CURLE_FAILED_INIT;

static void mailer_smtp_global_init(void)
{
    mailer_smtp_global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* True when the URL's authority carries user information ("user[:password]@host"). */
static bool mailer_smtp_has_credentials(const char *url)
{
    const char *auth = strstr(url, "://");
    if (!auth)
        return false;
    auth += 3;
    size_t n = strcspn(auth, "/?#");
    const char *at = memchr(auth, '@', n);
    return at != NULL;
}

dk_status dk_mailer_smtp_new(const char *url, int64_t timeout_ms, void **ret)
{
    if (!url || (strncmp(url, "smtp://", 7) != 0 && strncmp(url, "smtps://", 8) != 0) ||
        timeout_ms < 1)
        return DK_E_VALIDATION;
    pthread_once(&mailer_smtp_once, mailer_smtp_global_init);
    if (mailer_smtp_global_rc != CURLE_OK)
        return DK_E_INTERNAL;
    mailer_smtp *m = DK_NEW(mailer_smtp);
    m->url = dk_strdup(url);
    m->use_ssl = mailer_smtp_has_credentials(url) ? (long)CURLUSESSL_ALL : (long)CURLUSESSL_TRY;
    m->timeout_ms = timeout_ms;
    *ret = m;
    return DK_OK;
}

static void mailer_smtp_free(void *h)
{
    mailer_smtp *m = h;
    if (!m)
        return;
    dk_free(m->url);
    dk_free(m);
}

typedef struct mailer_smtp_upload {
    const char *p;
    size_t left;
} mailer_smtp_upload;

static size_t mailer_smtp_read(char *buf, size_t size, size_t n, void *ud)
{
    mailer_smtp_upload *u = ud;
    size_t k = DK_MIN(size * n, u->left);
    memcpy(buf, u->p, k);
    u->p += k;
    u->left -= k;
    return k;
}

static int mailer_smtp_progress(void *ud, curl_off_t dlt, curl_off_t dln, curl_off_t ult,
                                curl_off_t uln)
{
    (void)dlt, (void)dln, (void)ult, (void)uln;
    const atomic_bool *cancel = ud;
    return cancel && atomic_load(cancel) ? 1 : 0;
}

static dk_status mailer_smtp_send(void *h, const char *envelope_from, const char *rcpt,
                                  const char *message, size_t len, const atomic_bool *cancel,
                                  char *why, size_t why_cap)
{
    mailer_smtp *m = h;
    char from[320], to[320];
    if (snprintf(from, sizeof from, "<%s>", envelope_from) >= (int)sizeof from ||
        snprintf(to, sizeof to, "<%s>", rcpt) >= (int)sizeof to) {
        snprintf(why, why_cap, "address too long");
        return DK_E_VALIDATION;
    }
    mailer_smtp_upload up = {.p = message, .left = len};
    CURL *c = curl_easy_init();
    struct curl_slist *rcpts = curl_slist_append(NULL, to);
    bool ok = c && rcpts && curl_easy_setopt(c, CURLOPT_URL, m->url) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "smtp,smtps") == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_PROXY, "") == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)m->timeout_ms) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)m->timeout_ms) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, mailer_smtp_progress) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_XFERINFODATA, (void *)cancel) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_USE_SSL, m->use_ssl) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_MAIL_FROM, from) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpts) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_UPLOAD, 1L) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_READFUNCTION, mailer_smtp_read) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_READDATA, &up) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len) == CURLE_OK;
    dk_status st = DK_E_INTERNAL;
    if (!ok) {
        snprintf(why, why_cap, "could not set up the SMTP call");
        goto done;
    }
    dk_span *sp = dk_span_start("SMTP send", DK_SPAN_CLIENT);
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK)
        dk_span_error(sp, curl_easy_strerror(rc));
    dk_span_end(sp);
    long code = 0;
    if (rc == CURLE_OK) {
        st = DK_OK;
    } else if (rc == CURLE_ABORTED_BY_CALLBACK && cancel && atomic_load(cancel)) {
        snprintf(why, why_cap, "abandoned");
        st = DK_E_UNAVAILABLE;
    } else if (curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code > 0) {
        snprintf(why, why_cap, "SMTP %ld: %s", code, curl_easy_strerror(rc));
        st = DK_E_UNAVAILABLE;
    } else {
        snprintf(why, why_cap, "curl: %s", curl_easy_strerror(rc));
        st = DK_E_UNAVAILABLE;
    }
done:
    curl_slist_free_all(rcpts);
    if (c)
        curl_easy_cleanup(c);
    return st;
}

const struct dk_mailer_ops dk_mailer_smtp_ops = {
    .name = "smtp",
    .send = mailer_smtp_send,
    .free = mailer_smtp_free,
};
