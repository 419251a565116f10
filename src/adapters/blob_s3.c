/* blob_s3.c — the object-storage port over the S3 API: PUT, GET, DELETE object and HEAD bucket,
 * signed with AWS Signature Version 4 by libcurl (CURLOPT_AWS_SIGV4), path-style
 * (endpoint/bucket/key) or virtual-host style (bucket.endpoint-host/key). Each operation is
 * tried up to max_attempts times when the store answers 5xx or 429 (SlowDown, throttling) or
 * cannot be reached in time, with an exponential backoff and jitter between attempts; then it
 * fails DK_E_UNAVAILABLE. A refusal (403: wrong key or secret, no permission; 404 on the
 * bucket) is DK_E_FORBIDDEN at once, with S3's error code in the reason. Easy handles are kept
 * in a small pool so connections are reused; the adapter is thread-safe. */
#include "adapters/blob_s3.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/crypto.h"
#include "ports/blob.h"
#include "core/trace.h"
#include "adapters/blob.h"
#include "core/str.h"
#include "core/banned.h"

#define S3_POOL_MAX     16
#define S3_ERR_BODY_MAX (16u * 1024u)
#define S3_HOST_MAX     255
#define S3_HEADERS_MAX  16

struct dk_blob {
    char *base;   /* scheme://host[:port] the requests go to (with the bucket when virtual) */
    char *prefix; /* "/bucket" (path style) or "" (virtual) */
    char *bucket, *region, *access_key, *secret, *token;
    int connect_timeout_ms, timeout_ms, max_attempts, backoff_ms;
    pthread_mutex_t lock;
    CURL *idle[S3_POOL_MAX];
    int nidle;
};

static void s3_errf(dk_blob_err *err, const char *fmt, ...) DK_PRINTF(2, 3);
static void s3_errf(dk_blob_err *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->text, sizeof err->text, fmt, ap);
    va_end(ap);
}

/* ---------- libcurl, once per process ---------- */

static pthread_once_t s3_once = PTHREAD_ONCE_INIT;
static CURLcode s3_global_rc = CURLE_FAILED_INIT;

static void s3_global_init(void)
{
    s3_global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---------- the request builder ---------- */

struct s3_pair {
    const char *name, *value;
};

static int s3_pair_cmp(const void *x, const void *y)
{
    const struct s3_pair *a = x, *b = y;
    int c = strcmp(a->name, b->name);
    return c ? c : strcmp(a->value, b->value);
}

char *dk_s3_canonical_query(dk_arena *a, const dk_s3_param *params, size_t n)
{
    if (n == 0)
        return dk_arena_strdup(a, "");
    struct s3_pair *pairs = dk_arena_alloc(a, n * sizeof *pairs);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        pairs[i].name = dk_percent_encode(a, params[i].name, "");
        pairs[i].value = dk_percent_encode(a, params[i].value ? params[i].value : "", "");
        total += strlen(pairs[i].name) + strlen(pairs[i].value) + 2;
    }
    qsort(pairs, n, sizeof *pairs, s3_pair_cmp);
    char *out = dk_arena_alloc(a, total + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        o += (size_t)snprintf(out + o, total + 1 - o, "%s%s=%s", i ? "&" : "", pairs[i].name,
                              pairs[i].value);
    }
    return out;
}

dk_status dk_s3_setup(void *easy, dk_arena *a, const dk_s3_request *r,
                      struct curl_slist **ret_headers)
{
    CURL *h = easy;
    const char *qs = dk_s3_canonical_query(a, r->query, r->nquery);
    const char *url = dk_arena_printf(a, "%s%s%s%s", r->url_base, r->path, *qs ? "?" : "", qs);
    struct curl_slist *hl = NULL, *t = NULL;
    bool ok = true;
#define S3_ADD(line)                                                                               \
    do {                                                                                           \
        t = curl_slist_append(hl, (line));                                                         \
        if (!t)                                                                                    \
            ok = false;                                                                            \
        else                                                                                       \
            hl = t;                                                                                \
    } while (0)
    for (size_t i = 0; i < r->nheaders; i++)
        S3_ADD(r->headers[i]);
    if (r->content_sha256) {
        unsigned char d[32];
        char hex[65];
        dk_sha256(r->body ? r->body : "", r->body_len, d);
        dk_hex(d, sizeof d, hex);
        S3_ADD(dk_arena_printf(a, "x-amz-content-sha256: %s", hex));
    }
    if (r->session_token && *r->session_token)
        S3_ADD(dk_arena_printf(a, "x-amz-security-token: %s", r->session_token));
    if (r->amz_date)
        S3_ADD(dk_arena_printf(a, "X-Amz-Date: %s", r->amz_date));
#undef S3_ADD
    if (!ok) {
        curl_slist_free_all(hl);
        return DK_E_INTERNAL;
    }
    const char *provider = dk_arena_printf(a, "aws:amz:%s:%s", r->region, r->service);
    CURLcode rc = CURLE_OK;
#define S3_OPT(opt, val)                                                                           \
    do {                                                                                           \
        if (rc == CURLE_OK)                                                                        \
            rc = curl_easy_setopt(h, opt, val);                                                    \
    } while (0)
    S3_OPT(CURLOPT_URL, url);
    S3_OPT(CURLOPT_NOSIGNAL, 1L);
    S3_OPT(CURLOPT_PROTOCOLS_STR, "http,https");
    S3_OPT(CURLOPT_USERNAME, r->access_key_id);
    S3_OPT(CURLOPT_PASSWORD, r->secret_access_key);
    S3_OPT(CURLOPT_AWS_SIGV4, provider);
    if (strcmp(r->method, "HEAD") == 0) {
        S3_OPT(CURLOPT_NOBODY, 1L);
    } else if (strcmp(r->method, "PUT") == 0 || strcmp(r->method, "POST") == 0) {
        S3_OPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
        S3_OPT(CURLOPT_POSTFIELDS, r->body ? (const char *)r->body : "");
        if (strcmp(r->method, "PUT") == 0)
            S3_OPT(CURLOPT_CUSTOMREQUEST, "PUT");
    } else if (strcmp(r->method, "GET") != 0) {
        S3_OPT(CURLOPT_CUSTOMREQUEST, r->method);
    }
    S3_OPT(CURLOPT_HTTPHEADER, hl);
#undef S3_OPT
    if (rc != CURLE_OK) {
        curl_slist_free_all(hl);
        return DK_E_INTERNAL;
    }
    *ret_headers = hl;
    return DK_OK;
}

/* ---------- the adapter ---------- */

typedef struct s3_resp {
    long status;
    char *buf; /* malloc'd; the body up to cap bytes */
    size_t len, cap;
    bool overflow;
} s3_resp;

static size_t s3_write(char *data, size_t size, size_t nmemb, void *ctx)
{
    s3_resp *r = ctx;
    size_t n = size * nmemb;
    if (r->len + n > r->cap) {
        r->overflow = true;
        return 0; /* ends the transfer */
    }
    if (!r->buf)
        r->buf = dk_malloc(r->cap + 1);
    memcpy(r->buf + r->len, data, n);
    r->len += n;
    r->buf[r->len] = '\0';
    return n;
}

static CURL *s3_acquire(dk_blob *b)
{
    CURL *c = NULL;
    pthread_mutex_lock(&b->lock);
    if (b->nidle > 0)
        c = b->idle[--b->nidle];
    pthread_mutex_unlock(&b->lock);
    if (c) {
        curl_easy_reset(c); /* options go; live connections stay */
        return c;
    }
    return curl_easy_init();
}

static void s3_release(dk_blob *b, CURL *c)
{
    pthread_mutex_lock(&b->lock);
    if (b->nidle < S3_POOL_MAX) {
        b->idle[b->nidle++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&b->lock);
    if (c)
        curl_easy_cleanup(c);
}

/* The text of <tag>...</tag> in an S3 error document (a flat, known shape: Code, Message). */
static void s3_xml_field(const char *xml, const char *tag, char *out, size_t cap)
{
    out[0] = '\0';
    if (!xml)
        return;
    char open[32], close[32];
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    const char *s = strstr(xml, open);
    if (!s)
        return;
    s += strlen(open);
    const char *e = strstr(s, close);
    if (!e)
        return;
    size_t n = (size_t)(e - s);
    if (n >= cap)
        n = cap - 1;
    for (size_t i = 0; i < n; i++)
        out[i] = (s[i] >= 32 && s[i] < 127) ? s[i] : ' ';
    out[n] = '\0';
}

static void s3_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static bool s3_retryable_curl(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return true;
    default:
        return false;
    }
}

/* One operation: method on the object key (NULL: the bucket), with retries. resp gets the final
 * answer's status and body (the caller frees resp->buf). Returns DK_OK when a response arrived
 * (any status the caller then judges), DK_E_UNAVAILABLE when none did or the store kept
 * answering 5xx/429, DK_E_TOO_LARGE when the body passed body_cap. */
static dk_status s3_call(dk_blob *b, const char *method, const char *key, const void *body,
                         size_t len, const char *content_type, size_t body_cap, int attempts,
                         s3_resp *resp, dk_blob_err *err)
{
    if (s3_global_rc != CURLE_OK) {
        s3_errf(err, "libcurl failed to initialise");
        return DK_E_INTERNAL;
    }
    dk_arena *a = dk_arena_new();
    const char *path =
        key ? dk_arena_printf(a, "%s/%s", b->prefix, key) : (*b->prefix ? b->prefix : "/");
    const char *hdrs[2];
    size_t nh = 0;
    if (content_type)
        hdrs[nh++] = dk_arena_printf(a, "Content-Type: %s", content_type);
    dk_s3_request r = {
        .method = method,
        .url_base = b->base,
        .path = path,
        .headers = hdrs,
        .nheaders = nh,
        .body = body,
        .body_len = len,
        .content_sha256 = true,
        .region = b->region,
        .service = "s3",
        .access_key_id = b->access_key,
        .secret_access_key = b->secret,
        .session_token = b->token,
    };
    dk_status st = DK_E_UNAVAILABLE;
    int backoff = b->backoff_ms;
    for (int attempt = 1; attempt <= attempts; attempt++) {
        if (attempt > 1) {
            unsigned char rnd;
            dk_fast_random(&rnd, 1);
            s3_sleep_ms(backoff / 2 + (int)((long)(backoff / 2 + 1) * rnd / 256));
            backoff = backoff * 2 > 10000 ? 10000 : backoff * 2;
        }
        dk_free(resp->buf);
        *resp = (s3_resp){.cap = body_cap};
        CURL *h = s3_acquire(b);
        if (!h) {
            s3_errf(err, "libcurl: no handle");
            st = DK_E_INTERNAL;
            break;
        }
        struct curl_slist *hl = NULL;
        char errbuf[CURL_ERROR_SIZE] = "";
        if (dk_s3_setup(h, a, &r, &hl) != DK_OK ||
            curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, s3_write) != CURLE_OK ||
            curl_easy_setopt(h, CURLOPT_WRITEDATA, resp) != CURLE_OK ||
            curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf) != CURLE_OK ||
            curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)b->connect_timeout_ms) !=
                CURLE_OK ||
            curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)b->timeout_ms) != CURLE_OK) {
            curl_slist_free_all(hl);
            s3_release(b, h);
            s3_errf(err, "libcurl: cannot set the request up");
            st = DK_E_INTERNAL;
            break;
        }
        dk_span *sp = dk_span_http("S3", method);
        CURLcode rc = curl_easy_perform(h);
        long status = 0;
        (void)curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        dk_span_http_end(sp, rc == CURLE_OK, status);
        (void)curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
        curl_slist_free_all(hl);
        s3_release(b, h);
        resp->status = status;
        if (rc == CURLE_WRITE_ERROR && resp->overflow) {
            s3_errf(err, "s3 %s %s: the response is larger than %zu bytes", method,
                    key ? key : b->bucket, body_cap);
            st = DK_E_TOO_LARGE;
            break;
        }
        if (rc != CURLE_OK) {
            s3_errf(err, "s3 %s %s: %s (attempt %d of %d)", method, key ? key : b->bucket,
                    errbuf[0] ? errbuf : curl_easy_strerror(rc), attempt, attempts);
            st = s3_retryable_curl(rc) ? DK_E_UNAVAILABLE : DK_E_INTERNAL;
            if (st != DK_E_UNAVAILABLE)
                break;
            continue;
        }
        if (status >= 500 || status == 429) {
            char code[64];
            s3_xml_field(resp->buf, "Code", code, sizeof code);
            s3_errf(err, "s3 %s %s: HTTP %ld%s%s (attempt %d of %d)", method, key ? key : b->bucket,
                    status, code[0] ? " " : "", code, attempt, attempts);
            st = DK_E_UNAVAILABLE;
            continue;
        }
        st = DK_OK;
        break;
    }
    dk_arena_free(a);
    return st;
}

/* Judges a final answer that is not a success: refusals say what S3 said, and how to fix. */
static dk_status s3_refusal(dk_blob *b, const char *method, const char *key, const s3_resp *resp,
                            dk_blob_err *err)
{
    char code[64], msg[160];
    s3_xml_field(resp->buf, "Code", code, sizeof code);
    s3_xml_field(resp->buf, "Message", msg, sizeof msg);
    const char *what = key ? key : b->bucket;
    if (resp->status == 403 || resp->status == 401) {
        s3_errf(err,
                "s3 %s %s: the store refused our credentials (HTTP %ld %s%s%s); check "
                "s3.access_key_id and s3.secret_access_key (AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY) and the region",
                method, what, resp->status, code[0] ? code : "", msg[0] ? ": " : "", msg);
        return DK_E_FORBIDDEN;
    }
    if (resp->status == 404 && (!key || strcmp(code, "NoSuchBucket") == 0)) {
        s3_errf(err, "s3 %s: the bucket %s does not exist at the endpoint (%s)", method, b->bucket,
                code[0] ? code : "HTTP 404");
        return DK_E_FORBIDDEN;
    }
    if (resp->status == 404) {
        s3_errf(err, "s3 %s %s: no such object", method, what);
        return DK_E_NOT_FOUND;
    }
    s3_errf(err, "s3 %s %s: HTTP %ld %s%s%s", method, what, resp->status, code, msg[0] ? ": " : "",
            msg);
    return DK_E_INTERNAL;
}

static bool s3_bucket_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < 3 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '.' ||
              s[i] == '-'))
            return false;
    return s[0] != '.' && s[0] != '-' && s[n - 1] != '.' && s[n - 1] != '-';
}

static void s3_close(dk_blob *b)
{
    if (!b)
        return;
    for (int i = 0; i < b->nidle; i++)
        curl_easy_cleanup(b->idle[i]);
    pthread_mutex_destroy(&b->lock);
    dk_free(b->base);
    dk_free(b->prefix);
    dk_free(b->bucket);
    dk_free(b->region);
    dk_free(b->access_key);
    if (b->secret) {
        memset(b->secret, 0, strlen(b->secret));
        dk_free(b->secret);
    }
    if (b->token) {
        memset(b->token, 0, strlen(b->token));
        dk_free(b->token);
    }
    dk_free(b);
}

static dk_status s3_open(const dk_blob_options *o, dk_blob **ret, dk_blob_err *err)
{
    pthread_once(&s3_once, s3_global_init);
    const char *ep = o->endpoint ? o->endpoint : "";
    size_t scheme = strncmp(ep, "https://", 8) == 0 ? 8 : strncmp(ep, "http://", 7) == 0 ? 7 : 0;
    if (!scheme) {
        s3_errf(err, "s3.endpoint must be an http:// or https:// URL (scheme://host[:port])");
        return DK_E_INTERNAL;
    }
    const char *host = ep + scheme;
    size_t hn = strcspn(host, "/?#");
    if (hn == 0 || hn > S3_HOST_MAX || strspn(host + hn, "/") != strlen(host + hn) ||
        memchr(host, '@', hn)) {
        s3_errf(err, "s3.endpoint must be scheme://host[:port] without a path or credentials");
        return DK_E_INTERNAL;
    }
    if (!o->bucket || !s3_bucket_valid(o->bucket)) {
        s3_errf(err, "s3.bucket must be a bucket name (3-63 of a-z 0-9 . -)");
        return DK_E_INTERNAL;
    }
    if (!o->access_key_id || !*o->access_key_id || !o->secret_access_key ||
        !*o->secret_access_key) {
        s3_errf(err, "S3 needs credentials: s3.access_key_id and s3.secret_access_key "
                     "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)");
        return DK_E_FORBIDDEN;
    }
    const char *style = o->url_style && *o->url_style ? o->url_style : "auto";
    bool virt;
    if (strcmp(style, "virtual") == 0) {
        virt = true;
    } else if (strcmp(style, "path") == 0) {
        virt = false;
    } else {
        /* auto: virtual-host on AWS (path style is deprecated there) unless the bucket name
         * has dots (a TLS name mismatch); path elsewhere (MinIO and friends) */
        size_t hostlen = strcspn(host, ":/");
        virt = hostlen >= 13 && strncmp(host + hostlen - 13, "amazonaws.com", 13) == 0 &&
               !strchr(o->bucket, '.');
    }
    if (virt && strchr(o->bucket, '.') && scheme == 8) {
        s3_errf(err, "s3.url_style virtual with a dotted bucket name breaks TLS; use path");
        return DK_E_INTERNAL;
    }
    dk_blob *b = DK_NEW(dk_blob);
    pthread_mutex_init(&b->lock, NULL);
    char *hostport = dk_strndup(host, hn);
    char *sch = dk_strndup(ep, scheme);
    size_t blen = scheme + strlen(o->bucket) + 1 + hn + 1;
    b->base = dk_malloc(blen);
    if (virt) {
        snprintf(b->base, blen, "%s%s.%s", sch, o->bucket, hostport);
        b->prefix = dk_strdup("");
    } else {
        snprintf(b->base, blen, "%s%s", sch, hostport);
        size_t pl = strlen(o->bucket) + 2;
        b->prefix = dk_malloc(pl);
        snprintf(b->prefix, pl, "/%s", o->bucket);
    }
    dk_free(hostport);
    dk_free(sch);
    b->bucket = dk_strdup(o->bucket);
    b->region = dk_strdup(o->region && *o->region ? o->region : "us-east-1");
    b->access_key = dk_strdup(o->access_key_id);
    b->secret = dk_strdup(o->secret_access_key);
    b->token = o->session_token && *o->session_token ? dk_strdup(o->session_token) : NULL;
    b->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 1000;
    b->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 5000;
    b->max_attempts = o->max_attempts > 0 ? o->max_attempts : 3;
    b->backoff_ms = o->backoff_ms > 0 ? o->backoff_ms : 100;
    *ret = b;
    return DK_OK;
}

static dk_status s3_key_check(const char *key, dk_blob_err *err)
{
    if (dk_blob_key_valid(key))
        return DK_OK;
    s3_errf(err, "invalid object key");
    return DK_E_BAD_REQUEST;
}

static dk_status s3_put(dk_blob *b, const char *key, const void *data, size_t len,
                        const char *content_type, dk_blob_err *err)
{
    dk_status st = s3_key_check(key, err);
    if (st != DK_OK)
        return st;
    s3_resp resp = {0};
    st = s3_call(b, "PUT", key, data, len, content_type ? content_type : "application/octet-stream",
                 S3_ERR_BODY_MAX, b->max_attempts, &resp, err);
    if (st == DK_OK && resp.status != 200)
        st = s3_refusal(b, "PUT", key, &resp, err);
    if (st == DK_E_NOT_FOUND)
        st = DK_E_INTERNAL;
    dk_free(resp.buf);
    return st;
}

static dk_status s3_get(dk_blob *b, dk_arena *a, const char *key, size_t max, char **ret_data,
                        size_t *ret_len, dk_blob_err *err)
{
    dk_status st = s3_key_check(key, err);
    if (st != DK_OK)
        return st;
    s3_resp resp = {0};
    st = s3_call(b, "GET", key, NULL, 0, NULL, max > S3_ERR_BODY_MAX ? max : S3_ERR_BODY_MAX,
                 b->max_attempts, &resp, err);
    if (st == DK_OK && resp.status == 200 && resp.len > max) {
        s3_errf(err, "object %s is larger than %zu bytes", key, max);
        st = DK_E_TOO_LARGE;
    } else if (st == DK_OK && resp.status == 200) {
        char *out = dk_arena_alloc(a, resp.len + 1);
        if (resp.len)
            memcpy(out, resp.buf, resp.len);
        *ret_data = out;
        *ret_len = resp.len;
    } else if (st == DK_OK) {
        st = s3_refusal(b, "GET", key, &resp, err);
    }
    dk_free(resp.buf);
    return st;
}

static dk_status s3_del(dk_blob *b, const char *key, dk_blob_err *err)
{
    dk_status st = s3_key_check(key, err);
    if (st != DK_OK)
        return st;
    s3_resp resp = {0};
    st = s3_call(b, "DELETE", key, NULL, 0, NULL, S3_ERR_BODY_MAX, b->max_attempts, &resp, err);
    if (st == DK_OK && resp.status != 204 && resp.status != 200) {
        st = s3_refusal(b, "DELETE", key, &resp, err);
        if (st == DK_E_NOT_FOUND)
            st = DK_OK; /* already gone */
    }
    dk_free(resp.buf);
    return st;
}

/* A GET of a key that is not there: 404 NoSuchKey proves the endpoint, the bucket and the
 * signature (credentials) in one request, with S3's error document when something is wrong
 * (a HEAD answer has none). Under avatars/ so a policy scoped to that prefix allows it. */
#define S3_PROBE_KEY "avatars/docket-probe"

static dk_status s3_ping(dk_blob *b, dk_blob_err *err)
{
    s3_resp resp = {0};
    dk_status st = s3_call(b, "GET", S3_PROBE_KEY, NULL, 0, NULL, S3_ERR_BODY_MAX, 1, &resp, err);
    if (st == DK_OK && resp.status != 200) {
        st = s3_refusal(b, "GET", S3_PROBE_KEY, &resp, err);
        if (st == DK_E_NOT_FOUND)
            st = DK_OK;
    }
    dk_free(resp.buf);
    return st;
}

const struct dk_blob_ops dk_blob_s3_ops = {
    .name = "s3",
    .open = s3_open,
    .close = s3_close,
    .put = s3_put,
    .get = s3_get,
    .del = s3_del,
    .ping = s3_ping,
};
