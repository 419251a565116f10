/* test_blob_s3.c — the S3 adapter's request builder against AWS's published Signature Version 4
 * vectors, through the real code path: dk_s3_setup configures a libcurl handle, libcurl signs
 * (CURLOPT_AWS_SIGV4) and sends the request to a capture server on 127.0.0.1 (CURLOPT_CONNECT_TO
 * keeps the vector's Host), and the Authorization header that arrived is compared with the
 * vector's. Vectors: the aws-sig-v4-test-suite cases (credentials AKIDEXAMPLE, service
 * "service", 2015-08-30) whose canonical query string must be sorted and RFC 3986-encoded, the
 * session-token case, and the S3 "GET Object" example of the S3 API reference (Signature
 * Calculations for the Authorization Header, single chunk: virtual-host style, Range and
 * x-amz-content-sha256). Also the canonical query of the suite's .creq files on its own, and
 * that the adapter itself addresses virtual-host and path-style URLs as configured. */
#include "testutil.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "adapters/blob_s3.h"
#include "core/arena.h"
#include "ports/blob.h"
#include "adapters/blob.h"
#include "core/banned.h"

/* ---------- a one-request-at-a-time capture server ---------- */

struct capture {
    int fd;
    int port;
    pthread_t thread;
    int answer_status; /* what to answer */
    char request[16384];
    /* more than one connection: statuses[i] answers the i-th (a 503 with a SlowDown body) */
    int nstatuses;
    int statuses[8];
    int served;
};

static void capture_one(struct capture *c, int status);

static void *capture_main(void *arg)
{
    struct capture *c = arg;
    if (c->nstatuses == 0) {
        capture_one(c, c->answer_status);
        return NULL;
    }
    for (int i = 0; i < c->nstatuses; i++) {
        capture_one(c, c->statuses[i]);
        c->served++;
    }
    return NULL;
}

static void capture_one(struct capture *c, int status)
{
    int conn = accept(c->fd, NULL, NULL);
    if (conn < 0)
        return;
    size_t len = 0;
    c->request[0] = '\0';
    while (len + 1 < sizeof c->request) {
        ssize_t r = recv(conn, c->request + len, sizeof c->request - 1 - len, 0);
        if (r <= 0)
            break;
        len += (size_t)r;
        c->request[len] = '\0';
        char *end = strstr(c->request, "\r\n\r\n");
        if (!end)
            continue;
        /* the body, when there is one */
        const char *cl = strcasestr(c->request, "\r\nContent-Length:");
        size_t body = cl ? strtoul(cl + 17, NULL, 10) : 0;
        if (len >= (size_t)(end + 4 - c->request) + body)
            break;
    }
    static const char slow[] = "<Error><Code>SlowDown</Code><Message>Reduce your request "
                               "rate.</Message></Error>";
    const char *body = status == 503 ? slow : "";
    char resp[512];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s", status,
                     strlen(body), body);
    (void)send(conn, resp, (size_t)n, MSG_NOSIGNAL);
    close(conn);
}

static void capture_start_seq(struct capture *c, int status, const int *seq, int nseq)
{
    memset(c, 0, sizeof *c);
    c->answer_status = status;
    for (int i = 0; i < nseq; i++)
        c->statuses[c->nstatuses++] = seq[i];
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(c->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(c->fd, (struct sockaddr *)&sa, &sl), 0);
    c->port = ntohs(sa.sin_port);
    assert_int_equal(listen(c->fd, 4), 0);
    assert_int_equal(pthread_create(&c->thread, NULL, capture_main, c), 0);
}

static void capture_start(struct capture *c, int status)
{
    capture_start_seq(c, status, NULL, 0);
}

static void capture_stop(struct capture *c)
{
    pthread_join(c->thread, NULL);
    close(c->fd);
}

/* The value of a header in the captured request ("" when absent), into out. */
static const char *captured_header(const struct capture *c, const char *name, char *out, size_t cap)
{
    char pat[128];
    snprintf(pat, sizeof pat, "\r\n%s:", name);
    const char *p = strcasestr(c->request, pat);
    out[0] = '\0';
    if (!p)
        return out;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    size_t n = strcspn(p, "\r\n");
    if (n >= cap)
        n = cap - 1;
    memcpy(out, p, n);
    out[n] = '\0';
    return out;
}

/* Runs r through dk_s3_setup and libcurl against the capture server (the URL's host:80 goes to
 * it); returns the Authorization header that arrived. */
static const char *sign_via_curl(const dk_s3_request *r, const char *host, char *out, size_t cap,
                                 struct capture *c)
{
    capture_start(c, 200);
    dk_arena *a = dk_arena_new();
    CURL *h = curl_easy_init();
    assert_non_null(h);
    struct curl_slist *hl = NULL;
    assert_int_equal(dk_s3_setup(h, a, r, &hl), DK_OK);
    char connect_to[300];
    snprintf(connect_to, sizeof connect_to, "%s:80:127.0.0.1:%d", host, c->port);
    struct curl_slist *ct = curl_slist_append(NULL, connect_to);
    assert_int_equal(curl_easy_setopt(h, CURLOPT_CONNECT_TO, ct), CURLE_OK);
    assert_int_equal(curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L), CURLE_OK);
    CURLcode rc = curl_easy_perform(h);
    assert_int_equal(rc, CURLE_OK);
    curl_easy_cleanup(h);
    curl_slist_free_all(hl);
    curl_slist_free_all(ct);
    dk_arena_free(a);
    capture_stop(c);
    return captured_header(c, "Authorization", out, cap);
}

/* ---------- the aws-sig-v4-test-suite cases ---------- */

#define SUITE_KEY    "AKIDEXAMPLE"
#define SUITE_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define SUITE_DATE   "20150830T123600Z"
#define SUITE_HOST   "example.amazonaws.com"
#define SUITE_AUTHZ                                                                                \
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
#define UNRESERVED "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

struct suite_case {
    const char *name;
    dk_s3_param query[3];
    size_t nquery;
    const char *canonical_query; /* line 3 of the case's .creq */
    const char *session_token;
    const char *authorization; /* the case's .authz */
};

static const struct suite_case suite[] = {
    {"get-vanilla",
     {{0}},
     0,
     "",
     NULL,
     SUITE_AUTHZ "SignedHeaders=host;x-amz-date, "
                 "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
    {"get-vanilla-query-order-key-case",
     {{"Param2", "value2"}, {"Param1", "value1"}},
     2,
     "Param1=value1&Param2=value2",
     NULL,
     SUITE_AUTHZ "SignedHeaders=host;x-amz-date, "
                 "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"},
    {"get-vanilla-query-order-value",
     {{"Param1", "value2"}, {"Param1", "value1"}},
     2,
     "Param1=value1&Param1=value2",
     NULL,
     SUITE_AUTHZ "SignedHeaders=host;x-amz-date, "
                 "Signature=5772eed61e12b33fae39ee5e7012498b51d56abc0abb7c60486157bd471c4694"},
    {"get-vanilla-query-order-encoded",
     {{"Param-3", "Value3"}, {"Param", "Value2"}, {"\xe1\x88\xb4", "Value1"}},
     3,
     "%E1%88%B4=Value1&Param=Value2&Param-3=Value3",
     NULL,
     SUITE_AUTHZ "SignedHeaders=host;x-amz-date, "
                 "Signature=371d3713e185cc334048618a97f809c9ffe339c62934c032af5a0e595648fcac"},
    {"get-vanilla-query-unreserved",
     {{UNRESERVED, UNRESERVED}},
     1,
     UNRESERVED "=" UNRESERVED,
     NULL,
     SUITE_AUTHZ "SignedHeaders=host;x-amz-date, "
                 "Signature=9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197"},
    {"get-vanilla-utf8-query",
     {{"\xe1\x88\xb4", "bar"}},
     1,
     "%E1%88%B4=bar",
     NULL,
     SUITE_AUTHZ "SignedHeaders=host;x-amz-date, "
                 "Signature=2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"},
    {"get-vanilla-with-session-token",
     {{0}},
     0,
     "",
     "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267",
     SUITE_AUTHZ "SignedHeaders=host;x-amz-date;x-amz-security-token, "
                 "Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"},
};

static void test_canonical_query_matches_the_suite(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    for (size_t i = 0; i < sizeof suite / sizeof suite[0]; i++) {
        const char *got = dk_s3_canonical_query(a, suite[i].query, suite[i].nquery);
        if (strcmp(got, suite[i].canonical_query) != 0)
            fail_msg("%s: canonical query %s, want %s", suite[i].name, got,
                     suite[i].canonical_query);
    }
    /* reserved characters are encoded, space as %20 (never '+'), hex upper-case */
    dk_s3_param p[] = {{"prefix", "a b+c/d"}, {"delimiter", "/"}, {"a", NULL}};
    assert_string_equal(dk_s3_canonical_query(a, p, 3), "a=&delimiter=%2F&prefix=a%20b%2Bc%2Fd");
    dk_arena_free(a);
}

static void test_signature_matches_the_suite(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof suite / sizeof suite[0]; i++) {
        dk_s3_request r = {
            .method = "GET",
            .url_base = "http://" SUITE_HOST,
            .path = "/",
            .query = suite[i].query,
            .nquery = suite[i].nquery,
            .content_sha256 = false, /* the generic suite signs no payload header */
            .region = "us-east-1",
            .service = "service",
            .access_key_id = SUITE_KEY,
            .secret_access_key = SUITE_SECRET,
            .session_token = suite[i].session_token,
            .amz_date = SUITE_DATE,
        };
        struct capture c;
        char got[512];
        sign_via_curl(&r, SUITE_HOST, got, sizeof got, &c);
        if (strcmp(got, suite[i].authorization) != 0)
            fail_msg("%s:\n got  %s\n want %s", suite[i].name, got, suite[i].authorization);
        /* the query went out in canonical order and encoding: what was signed was sent */
        char line[512];
        snprintf(line, sizeof line, "GET /%s%s HTTP/1.1\r\n", *suite[i].canonical_query ? "?" : "",
                 suite[i].canonical_query);
        if (strncmp(c.request, line, strlen(line)) != 0)
            fail_msg("%s: request line %.120s", suite[i].name, c.request);
    }
}

/* The S3 API reference's "Example: GET Object": the first 10 bytes of test.txt from
 * examplebucket, virtual-host style, x-amz-content-sha256 of the empty body. */
static void test_signature_matches_the_s3_get_object_example(void **state)
{
    (void)state;
    const char *hdrs[] = {"Range: bytes=0-9"};
    dk_s3_request r = {
        .method = "GET",
        .url_base = "http://examplebucket.s3.amazonaws.com",
        .path = "/test.txt",
        .headers = hdrs,
        .nheaders = 1,
        .content_sha256 = true,
        .region = "us-east-1",
        .service = "s3",
        .access_key_id = "AKIAIOSFODNN7EXAMPLE",
        .secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        .amz_date = "20130524T000000Z",
    };
    struct capture c;
    char got[512], sha[128];
    sign_via_curl(&r, "examplebucket.s3.amazonaws.com", got, sizeof got, &c);
    /* libcurl separates the three parts with ", " where the example has ","; the parts are
     * what the example signs */
    assert_string_equal(
        got, "AWS4-HMAC-SHA256 "
             "Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
             "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
             "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    assert_string_equal(captured_header(&c, "x-amz-content-sha256", sha, sizeof sha),
                        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

/* ---------- the adapter's addressing ---------- */

static void check_addressing(const char *style, const char *endpoint_host, const char *want_line,
                             const char *want_host)
{
    struct capture c;
    capture_start(&c, 404); /* "no such key": the probe's success */
    char endpoint[128];
    snprintf(endpoint, sizeof endpoint, "http://%s:%d", endpoint_host, c.port);
    dk_blob_options o = {
        .endpoint = endpoint,
        .bucket = "avatars",
        .region = "eu-west-3",
        .url_style = style,
        .access_key_id = "AKID",
        .secret_access_key = "secret",
        .connect_timeout_ms = 2000,
        .timeout_ms = 5000,
        .max_attempts = 1,
    };
    dk_blob *b = NULL;
    dk_blob_err err = {""};
    assert_int_equal(dk_blob_s3_ops.open(&o, &b, &err), DK_OK);
    assert_int_equal(dk_blob_s3_ops.ping(b, &err), DK_OK);
    dk_blob_s3_ops.close(b);
    capture_stop(&c);
    if (strncmp(c.request, want_line, strlen(want_line)) != 0)
        fail_msg("%s: request line %.100s", style, c.request);
    char host[128], want[128], auth[512];
    snprintf(want, sizeof want, "%s:%d", want_host, c.port);
    assert_string_equal(captured_header(&c, "Host", host, sizeof host), want);
    captured_header(&c, "Authorization", auth, sizeof auth);
    assert_non_null(strstr(auth, "/eu-west-3/s3/aws4_request, SignedHeaders="
                                 "host;x-amz-content-sha256;x-amz-date, Signature="));
}

static void test_path_and_virtual_host_style(void **state)
{
    (void)state;
    /* libcurl resolves *.localhost to the loopback address itself */
    check_addressing("path", "s3.localhost", "GET /avatars/avatars/docket-probe HTTP/1.1",
                     "s3.localhost");
    check_addressing("virtual", "s3.localhost", "GET /avatars/docket-probe HTTP/1.1",
                     "avatars.s3.localhost");
    check_addressing("auto", "s3.localhost", "GET /avatars/avatars/docket-probe HTTP/1.1",
                     "s3.localhost");
}

static void test_open_refuses_bad_settings(void **state)
{
    (void)state;
    dk_blob_options base = {.endpoint = "http://127.0.0.1:9",
                            .bucket = "avatars",
                            .access_key_id = "k",
                            .secret_access_key = "s"};
    struct {
        const char *endpoint, *bucket, *key, *secret;
    } bad[] = {
        {"ftp://x", "avatars", "k", "s"},       {"http://", "avatars", "k", "s"},
        {"http://h/path", "avatars", "k", "s"}, {"http://u:p@h", "avatars", "k", "s"},
        {"http://h", "Bad_Bucket", "k", "s"},   {"http://h", "ab", "k", "s"},
        {"http://h", "avatars", "", "s"},       {"http://h", "avatars", "k", ""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dk_blob_options o = base;
        o.endpoint = bad[i].endpoint;
        o.bucket = bad[i].bucket;
        o.access_key_id = bad[i].key;
        o.secret_access_key = bad[i].secret;
        dk_blob *b = NULL;
        dk_blob_err err = {""};
        if (dk_blob_s3_ops.open(&o, &b, &err) == DK_OK)
            fail_msg("case %zu accepted", i);
        assert_true(err.text[0] != '\0');
    }
}

/* Nobody listens: every attempt fails to connect, and the operation reports the store as
 * unavailable after max_attempts (with the backoff between them). */
static void test_unreachable_store_is_unavailable(void **state)
{
    (void)state;
    struct capture c;
    capture_start(&c, 200);
    int port = c.port;
    /* free the port again: connect now fails */
    shutdown(c.fd, SHUT_RDWR);
    close(c.fd);
    pthread_join(c.thread, NULL);
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", port);
    dk_blob_options o = {.endpoint = endpoint,
                         .bucket = "avatars",
                         .url_style = "path",
                         .access_key_id = "k",
                         .secret_access_key = "s",
                         .connect_timeout_ms = 500,
                         .timeout_ms = 1000,
                         .max_attempts = 3,
                         .backoff_ms = 20};
    dk_blob *b = NULL;
    dk_blob_err err = {""};
    assert_int_equal(dk_blob_s3_ops.open(&o, &b, &err), DK_OK);
    assert_int_equal(dk_blob_s3_ops.put(b, "avatars/x/y.png", "abc", 3, "image/png", &err),
                     DK_E_UNAVAILABLE);
    assert_non_null(strstr(err.text, "attempt 3 of 3"));
    assert_int_equal(dk_blob_s3_ops.put(b, "../etc/passwd", "abc", 3, "image/png", &err),
                     DK_E_BAD_REQUEST);
    dk_blob_s3_ops.close(b);
}

static dk_blob *open_at(int port, int attempts)
{
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", port);
    dk_blob_options o = {.endpoint = endpoint,
                         .bucket = "avatars",
                         .url_style = "path",
                         .access_key_id = "k",
                         .secret_access_key = "s",
                         .connect_timeout_ms = 1000,
                         .timeout_ms = 2000,
                         .max_attempts = attempts,
                         .backoff_ms = 20};
    dk_blob *b = NULL;
    dk_blob_err err = {""};
    assert_int_equal(dk_blob_s3_ops.open(&o, &b, &err), DK_OK);
    return b;
}

/* 503 SlowDown and 500 are retried (with the backoff between), and the operation succeeds
 * once the store answers; a store that keeps failing is unavailable after max_attempts; a 403
 * is not retried. */
static void test_retries_on_5xx_and_throttling(void **state)
{
    (void)state;
    dk_blob_err err = {""};
    struct capture c;
    const int recover[] = {503, 500, 200};
    capture_start_seq(&c, 0, recover, 3);
    dk_blob *b = open_at(c.port, 3);
    assert_int_equal(dk_blob_s3_ops.put(b, "avatars/u/k.png", "abc", 3, "image/png", &err), DK_OK);
    dk_blob_s3_ops.close(b);
    capture_stop(&c);
    assert_int_equal(c.served, 3);

    const int down[] = {503, 503, 429};
    capture_start_seq(&c, 0, down, 3);
    b = open_at(c.port, 3);
    assert_int_equal(dk_blob_s3_ops.del(b, "avatars/u/k.png", &err), DK_E_UNAVAILABLE);
    assert_non_null(strstr(err.text, "HTTP 429"));
    assert_non_null(strstr(err.text, "attempt 3 of 3"));
    dk_blob_s3_ops.close(b);
    capture_stop(&c);

    const int refused[] = {403};
    capture_start_seq(&c, 0, refused, 1);
    b = open_at(c.port, 3);
    assert_int_equal(dk_blob_s3_ops.put(b, "avatars/u/k.png", "abc", 3, "image/png", &err),
                     DK_E_FORBIDDEN);
    assert_non_null(strstr(err.text, "s3.secret_access_key"));
    dk_blob_s3_ops.close(b);
    capture_stop(&c);
    assert_int_equal(c.served, 1);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canonical_query_matches_the_suite),
        cmocka_unit_test(test_signature_matches_the_suite),
        cmocka_unit_test(test_signature_matches_the_s3_get_object_example),
        cmocka_unit_test(test_path_and_virtual_host_style),
        cmocka_unit_test(test_open_refuses_bad_settings),
        cmocka_unit_test(test_unreachable_store_is_unavailable),
        cmocka_unit_test(test_retries_on_5xx_and_throttling),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
