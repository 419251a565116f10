/* users_http.c — the users.directory port over HTTP (libcurl easy API, blocking).
 * Each call takes a CURL easy handle from a small mutex-guarded pool (a new one when the pool
 * is empty) and hands it back afterwards: the handle keeps its connections alive, so calls
 * reuse them. Connect and whole-call times are bounded; bodies over UH_BODY_CAP are refused.
 * Several base URLs are used round-robin; a failure before the request was sent moves the call
 * to the next base once, and the base that failed is skipped for UH_DOWN_MS while another one
 * answers. Proxies from the environment are ignored: this is service-to-service traffic inside
 * the cluster. */
#include "adapters/users_http.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/token.h"
#include "core/trace.h"
#include "core/str.h"
#include "core/banned.h"

#define UH_MAX_BASES          16
#define UH_MAX_BASE_LEN       512
#define UH_MAX_CALLER_LEN     64
#define UH_POOL_MAX           16
#define UH_BODY_CAP           (64 * 1024)
#define UH_DEFAULT_CONNECT_MS 1000
#define UH_DEFAULT_TIMEOUT_MS 5000
#define UH_DOWN_MS            2000
#define UH_PREFIX             "/internal/v1/users"

struct dk_users_http {
    char *bases[UH_MAX_BASES]; /* without a trailing '/' */
    int nbases;
    atomic_uint next;                         /* round-robin cursor */
    _Atomic int64_t down_until[UH_MAX_BASES]; /* dk_mono_ms() before which a base is skipped */
    const dk_tokens *tokens;
    char *subject; /* "service:<caller>" */
    long connect_timeout_ms;
    long timeout_ms;

    pthread_mutex_t lock;
    CURL *idle[UH_POOL_MAX];
    int nidle;
};

/* --- libcurl, once per process ----------------------------------------------------------------*/

static pthread_once_t users_http_once = PTHREAD_ONCE_INIT;
static CURLcode users_http_global_rc = CURLE_FAILED_INIT;

static void users_http_global_init(void)
{
    users_http_global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* --- construction ---------------------------------------------------------------------------- */

static bool users_http_caller_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > UH_MAX_CALLER_LEN)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* One base: http(s)://authority[/path], printable ASCII without spaces, query or fragment. */
static bool users_http_base_ok(const char *s, size_t n)
{
    size_t skip;
    if (n > 7 && strncasecmp(s, "http://", 7) == 0)
        skip = 7;
    else if (n > 8 && strncasecmp(s, "https://", 8) == 0)
        skip = 8;
    else
        return false;
    if (n > UH_MAX_BASE_LEN || s[skip] == '/')
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= 0x20 || s[i] >= 0x7f || s[i] == '?' || s[i] == '#')
            return false;
    return true;
}

void dk_users_http_free(dk_users_http *h)
{
    if (!h)
        return;
    for (int i = 0; i < h->nidle; i++)
        curl_easy_cleanup(h->idle[i]);
    for (int i = 0; i < h->nbases; i++)
        dk_free(h->bases[i]);
    dk_free(h->subject);
    pthread_mutex_destroy(&h->lock);
    dk_free(h);
}

dk_status dk_users_http_new(const char *base_urls, const dk_tokens *tokens, const char *caller,
                            int connect_timeout_ms, int timeout_ms, dk_users_http **ret)
{
    if (!base_urls || !tokens || !ret || !users_http_caller_ok(caller))
        return DK_E_VALIDATION;
    pthread_once(&users_http_once, users_http_global_init);
    if (users_http_global_rc != CURLE_OK)
        return DK_E_INTERNAL;

    dk_users_http *h = DK_NEW(dk_users_http);
    pthread_mutex_init(&h->lock, NULL);
    atomic_init(&h->next, 0);
    h->tokens = tokens;
    size_t clen = strlen(caller);
    h->subject = dk_malloc(sizeof "service:" + clen);
    memcpy(h->subject, "service:", sizeof "service:" - 1);
    memcpy(h->subject + sizeof "service:" - 1, caller, clen + 1);
    h->connect_timeout_ms = connect_timeout_ms > 0 ? connect_timeout_ms : UH_DEFAULT_CONNECT_MS;
    h->timeout_ms = timeout_ms > 0 ? timeout_ms : UH_DEFAULT_TIMEOUT_MS;

    const char *p = base_urls;
    for (;;) {
        const char *end = p + strcspn(p, ",");
        const char *b = p, *e = end;
        while (b < e && (*b == ' ' || *b == '\t'))
            b++;
        while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        while (e > b && e[-1] == '/')
            e--;
        if (h->nbases >= UH_MAX_BASES || !users_http_base_ok(b, (size_t)(e - b))) {
            dk_users_http_free(h);
            return DK_E_VALIDATION;
        }
        atomic_init(&h->down_until[h->nbases], 0);
        h->bases[h->nbases++] = dk_strndup(b, (size_t)(e - b));
        if (*end == '\0')
            break;
        p = end + 1;
    }
    *ret = h;
    return DK_OK;
}

/* --- handles --------------------------------------------------------------------------------- */

static CURL *users_http_acquire(dk_users_http *h)
{
    CURL *c = NULL;
    pthread_mutex_lock(&h->lock);
    if (h->nidle > 0)
        c = h->idle[--h->nidle];
    pthread_mutex_unlock(&h->lock);
    if (c) {
        curl_easy_reset(c); /* options go, live connections and the DNS cache stay */
        return c;
    }
    return curl_easy_init();
}

static void users_http_release(dk_users_http *h, CURL *c)
{
    pthread_mutex_lock(&h->lock);
    if (h->nidle < UH_POOL_MAX) {
        h->idle[h->nidle++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&h->lock);
    if (c)
        curl_easy_cleanup(c);
}

/* --- SIGPIPE ----------------------------------------------------------------------------------
 * With CURLOPT_NOSIGNAL libcurl leaves signals alone and sends with MSG_NOSIGNAL, but its own
 * documentation admits corner cases. As in the Redis adapters: block SIGPIPE on this thread
 * around each transfer and swallow one left pending, without touching the process's
 * dispositions. */

static void users_http_sigpipe_block(sigset_t *old)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, old);
}

static void users_http_sigpipe_restore(const sigset_t *old)
{
    if (sigismember(old, SIGPIPE))
        return; /* the caller blocks SIGPIPE itself: leave its pending set alone */
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
        const struct timespec zero = {0, 0};
        while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR) {
        }
    }
    pthread_sigmask(SIG_SETMASK, old, NULL);
}

/* --- bases ----------------------------------------------------------------------------------- */

/* The first base from `from` on (round-robin order) that is not `except` and not marked down;
 * when every candidate is down, the first candidate anyway. */
static int users_http_pick(dk_users_http *h, unsigned from, int except, int64_t now)
{
    int fallback = -1;
    for (int k = 0; k < h->nbases; k++) {
        int i = (int)((from + (unsigned)k) % (unsigned)h->nbases);
        if (i == except)
            continue;
        if (fallback < 0)
            fallback = i;
        if (atomic_load_explicit(&h->down_until[i], memory_order_relaxed) <= now)
            return i;
    }
    return fallback;
}

/* --- one exchange ---------------------------------------------------------------------------- */

struct users_http_body {
    char *p;
    size_t len;
    size_t cap;
    bool too_large;
};

static size_t users_http_write(char *data, size_t size, size_t n, void *userdata)
{
    struct users_http_body *b = userdata;
    size_t add = size * n;
    if (add > UH_BODY_CAP - b->len) {
        b->too_large = true;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (b->len + add + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + add + 1)
            cap *= 2;
        b->p = dk_realloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, add);
    b->len += add;
    b->p[b->len] = '\0';
    return add;
}

/* A failure that happened before the request left: another base may take it. */
static bool users_http_not_sent(CURL *c, CURLcode rc)
{
    if (rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_COULDNT_CONNECT ||
        rc == CURLE_SSL_CONNECT_ERROR)
        return true;
    if (rc != CURLE_OPERATION_TIMEDOUT)
        return false;
    long sent = 0;
    return curl_easy_getinfo(c, CURLINFO_REQUEST_SIZE, &sent) == CURLE_OK && sent == 0;
}

static dk_status users_http_transport_status(CURLcode rc, const struct users_http_body *b)
{
    if (b->too_large)
        return DK_E_INTERNAL;
    switch (rc) {
    case CURLE_OUT_OF_MEMORY:
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_FAILED_INIT:
    case CURLE_WRITE_ERROR:
    case CURLE_FILESIZE_EXCEEDED:
        return DK_E_INTERNAL;
    default:
        return DK_E_UNAVAILABLE; /* connect, resolve, timeout, reset, empty or broken reply */
    }
}

static dk_status users_http_setopts(dk_users_http *h, CURL *c, const char *url, const char *method,
                                    const char *body, size_t body_len, struct curl_slist *headers,
                                    struct users_http_body *resp)
{
    bool ok = curl_easy_setopt(c, CURLOPT_URL, url) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, h->connect_timeout_ms) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, h->timeout_ms) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_PROXY, "") == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)UH_BODY_CAP) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_USERAGENT, "docket") == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, users_http_write) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_WRITEDATA, resp) == CURLE_OK;
    if (ok && body) {
        ok = curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len) == CURLE_OK &&
             curl_easy_setopt(c, CURLOPT_POSTFIELDS, body) == CURLE_OK;
    }
    if (ok && strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
        ok = curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method) == CURLE_OK;
    return ok ? DK_OK : DK_E_INTERNAL;
}

/* Sends one request to the next base (failing over once) and returns the HTTP status and the
 * body (NUL-terminated, in the arena; "" when none). Non-2xx statuses are the caller's. */
static dk_status users_http_call(dk_users_http *h, dk_arena *a, const char *method,
                                 const char *path, const char *body, size_t body_len,
                                 long *ret_http, char **ret_body, size_t *ret_len)
{
    char *token = NULL;
    dk_status st = dk_tokens_issue(h->tokens, a, h->subject, "service", "service", &token);
    if (st != DK_OK)
        return st;
    const char *rid = dk_log_request_id();
    char fresh[DK_UUID_LEN];
    if (!dk_request_id_valid(rid)) {
        dk_uuid7(fresh);
        rid = fresh;
    }
    struct curl_slist *headers = NULL, *tmp;
    char tp[DK_TRACEPARENT_LEN];
    const char *lines[] = {
        dk_arena_printf(a, "Authorization: Bearer %s", token),
        dk_arena_printf(a, "X-Request-Id: %s", rid),
        /* the caller's trace goes on into users */
        dk_trace_current_traceparent(tp) ? dk_arena_printf(a, "traceparent: %s", tp) : NULL,
        "Accept: application/json", body ? "Content-Type: application/json" : NULL,
        "Expect:", /* no 100-continue round trip */
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        if (!lines[i])
            continue;
        tmp = curl_slist_append(headers, lines[i]);
        if (!tmp) {
            curl_slist_free_all(headers);
            return DK_E_INTERNAL;
        }
        headers = tmp;
    }

    CURL *c = users_http_acquire(h);
    if (!c) {
        curl_slist_free_all(headers);
        return DK_E_INTERNAL;
    }
    struct users_http_body resp = {0};
    unsigned start = atomic_fetch_add_explicit(&h->next, 1, memory_order_relaxed);
    int base = users_http_pick(h, start, -1, dk_mono_ms());
    long http = 0;
    for (int attempt = 0;; attempt++) {
        char *url = dk_arena_printf(a, "%s%s", h->bases[base], path);
        resp.len = 0;
        resp.too_large = false;
        if (attempt > 0)
            curl_easy_reset(c);
        st = users_http_setopts(h, c, url, method, body, body_len, headers, &resp);
        if (st != DK_OK)
            break;
        sigset_t old;
        users_http_sigpipe_block(&old);
        dk_span *sp = dk_span_http("users", method);
        CURLcode rc = curl_easy_perform(c);
        users_http_sigpipe_restore(&old);
        long sp_status = 0;
        (void)curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &sp_status);
        dk_span_http_end(sp, rc == CURLE_OK, sp_status);
        if (rc == CURLE_OK) {
            (void)curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &http);
            break;
        }
        st = users_http_transport_status(rc, &resp);
        if (!users_http_not_sent(c, rc))
            break;
        int64_t now = dk_mono_ms();
        atomic_store_explicit(&h->down_until[base], now + UH_DOWN_MS, memory_order_relaxed);
        if (attempt > 0 || h->nbases < 2)
            break;
        base = users_http_pick(h, (unsigned)base + 1, base, now);
    }
    users_http_release(h, c);
    curl_slist_free_all(headers);
    if (st == DK_OK) {
        *ret_http = http;
        *ret_body = resp.len ? dk_arena_strndup(a, resp.p, resp.len) : dk_arena_strdup(a, "");
        *ret_len = resp.len;
    }
    dk_free(resp.p);
    return st;
}

/* The status of an answer that is not the expected success. */
static dk_status users_http_http_status(long http)
{
    if (http >= 500 && http <= 599)
        return DK_E_UNAVAILABLE;
    if (http == 404)
        return DK_E_NOT_FOUND;
    if (http == 409)
        return DK_E_CONFLICT;
    return DK_E_INTERNAL;
}

static const char *users_http_member(dk_arena *a, const json_t *o, const char *key, bool required,
                                     bool *ok)
{
    const json_t *v = json_object_get(o, key);
    if (json_is_string(v))
        return dk_arena_strndup(a, json_string_value(v), json_string_length(v));
    if (required || (v && !json_is_null(v)))
        *ok = false;
    return NULL;
}

/* The contract's {user} object into a dk_user whose strings live in the arena. */
static dk_status users_http_user_parse(dk_arena *a, const char *body, size_t len, dk_user *ret)
{
    json_error_t err;
    json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);
    if (!json_is_object(o)) {
        json_decref(o);
        return DK_E_INTERNAL;
    }
    bool ok = true;
    dk_user u = {0};
    u.id = users_http_member(a, o, "id", true, &ok);
    u.email = users_http_member(a, o, "email", true, &ok);
    u.name = users_http_member(a, o, "name", true, &ok);
    u.role = users_http_member(a, o, "role", true, &ok);
    u.avatar_url = users_http_member(a, o, "avatar_url", false, &ok);
    const char *created = users_http_member(a, o, "created_at", true, &ok);
    const char *updated = users_http_member(a, o, "updated_at", true, &ok);
    json_t *ev = json_object_get(o, "email_verified"), *mfa = json_object_get(o, "mfa_enabled");
    /* absent from a users service older than the flags: false */
    if ((ev && !json_is_boolean(ev)) || (mfa && !json_is_boolean(mfa)))
        ok = false;
    u.email_verified = json_is_true(ev);
    u.mfa_enabled = json_is_true(mfa);
    json_decref(o);
    if (!ok || !dk_time_parse(created, &u.created_at) || !dk_time_parse(updated, &u.updated_at))
        return DK_E_INTERNAL;
    *ret = u;
    return DK_OK;
}

/* A call whose success is `want` with a user in the body. */
static dk_status users_http_user_call(dk_users_http *h, dk_arena *a, const char *method,
                                      const char *path, const char *body, size_t body_len,
                                      long want, dk_user *ret)
{
    long http;
    char *resp;
    size_t len;
    dk_status st = users_http_call(h, a, method, path, body, body_len, &http, &resp, &len);
    if (st != DK_OK)
        return st;
    if (http != want && !(want == 201 && http == 200))
        return users_http_http_status(http);
    return users_http_user_parse(a, resp, len, ret);
}

/* --- the port -------------------------------------------------------------------------------- */

DK_MUSTCHECK static dk_status users_http_create(void *handle, dk_arena *a, const char *email,
                                                const char *name, dk_user *ret_user)
{
    dk_users_http *h = handle;
    if (!h || !a || !email || !name || !ret_user)
        return DK_E_INTERNAL;
    json_t *req = json_pack("{s:s,s:s}", "email", email, "name", name);
    if (!req)
        return DK_E_INTERNAL; /* not UTF-8 */
    size_t len;
    char *body = dk_json_render(a, req, &len);
    json_decref(req);
    return users_http_user_call(h, a, "POST", UH_PREFIX, body, len, 201, ret_user);
}

DK_MUSTCHECK static dk_status users_http_find_by_email(void *handle, dk_arena *a, const char *email,
                                                       dk_user *ret_user)
{
    dk_users_http *h = handle;
    if (!h || !a || !email || !ret_user)
        return DK_E_INTERNAL;
    char *path =
        dk_arena_printf(a, UH_PREFIX "/by-email?email=%s", dk_percent_encode(a, email, ""));
    return users_http_user_call(h, a, "GET", path, NULL, 0, 200, ret_user);
}

DK_MUSTCHECK static dk_status users_http_get(void *handle, dk_arena *a, const char *id,
                                             dk_user *ret_user)
{
    dk_users_http *h = handle;
    if (!h || !a || !id || !ret_user)
        return DK_E_INTERNAL;
    if (!*id)
        return DK_E_NOT_FOUND;
    char *path = dk_arena_printf(a, UH_PREFIX "/%s", dk_percent_encode(a, id, ""));
    return users_http_user_call(h, a, "GET", path, NULL, 0, 200, ret_user);
}

DK_MUSTCHECK static dk_status users_http_remove(void *handle, const char *id)
{
    dk_users_http *h = handle;
    if (!h || !id)
        return DK_E_INTERNAL;
    if (!*id)
        return DK_E_NOT_FOUND;
    dk_arena *a = dk_arena_new();
    char *path = dk_arena_printf(a, UH_PREFIX "/%s", dk_percent_encode(a, id, ""));
    long http;
    char *resp;
    size_t len;
    dk_status st = users_http_call(h, a, "DELETE", path, NULL, 0, &http, &resp, &len);
    if (st == DK_OK && http != 204 && http != 200)
        st = users_http_http_status(http);
    dk_arena_free(a);
    return st;
}

DK_MUSTCHECK static dk_status users_http_mark_verified(void *handle, dk_arena *a, const char *id,
                                                       const char *email)
{
    dk_users_http *h = handle;
    if (!h || !a || !id || !email)
        return DK_E_INTERNAL;
    if (!*id)
        return DK_E_NOT_FOUND;
    json_t *req = json_pack("{s:s}", "email", email);
    if (!req)
        return DK_E_INTERNAL;
    size_t len;
    char *body = dk_json_render(a, req, &len);
    json_decref(req);
    dk_user u;
    char *path = dk_arena_printf(a, UH_PREFIX "/%s/email-verified", dk_percent_encode(a, id, ""));
    return users_http_user_call(h, a, "POST", path, body, len, 200, &u);
}

DK_MUSTCHECK static dk_status users_http_set_mfa(void *handle, dk_arena *a, const char *id,
                                                 bool enabled)
{
    dk_users_http *h = handle;
    if (!h || !a || !id)
        return DK_E_INTERNAL;
    if (!*id)
        return DK_E_NOT_FOUND;
    const char *body = enabled ? "{\"enabled\":true}" : "{\"enabled\":false}";
    dk_user u;
    char *path = dk_arena_printf(a, UH_PREFIX "/%s/mfa", dk_percent_encode(a, id, ""));
    return users_http_user_call(h, a, "PUT", path, body, strlen(body), 200, &u);
}

const struct dk_users_directory_ops dk_users_directory_http_ops = {
    .mark_email_verified = users_http_mark_verified,
    .set_mfa_enabled = users_http_set_mfa,
    .create = users_http_create,
    .find_by_email = users_http_find_by_email,
    .get = users_http_get,
    .remove = users_http_remove,
};

/* --- other internal paths: the account deletion guard ---------------------------------------- */

dk_status dk_users_http_get_status(dk_users_http *h, dk_arena *a, const char *path, long *ret_http)
{
    char *body = NULL;
    size_t len = 0;
    return users_http_call(h, a, "GET", path, NULL, 0, ret_http, &body, &len);
}

static dk_status users_http_guard_may_delete(void *handle, dk_arena *a, const char *user_id)
{
    if (!dk_uuid_valid(user_id))
        return DK_E_INTERNAL;
    long http = 0;
    dk_status st = dk_users_http_get_status(
        handle, a, dk_arena_printf(a, "/internal/v1/tasks/accounts/%s/deletable", user_id), &http);
    if (st != DK_OK)
        return st;
    return http == 204 ? DK_OK : users_http_http_status(http);
}

const struct dk_account_guard_ops dk_account_guard_http_ops = {
    .may_delete = users_http_guard_may_delete,
};
