/* test_http_client.c — the libcurl http client adapter with many long-lived streams open (the
 * gateway's case): calls that end soon keep reusing one kept-alive connection while more
 * streams than the keep-alive allowance stay open, the streams deliver and end on cancel, and a cancel or
 * resume for a call that has finished is ignored; a paused stream costs no CPU. The upstream is a small HTTP/1.1 server on
 * a thread of this test, which counts the connections it accepts. */
#include "testutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/arena.h"
#include "adapters/http_client.h"
#include "core/banned.h"

#define NSTREAMS     40
#define NSHORT       20
#define MAXCONN      (NSTREAMS + 2 * NSHORT + 8)
#define FLOOD_CHUNKS 200 /* of 1000 bytes */

/* ---------- the upstream ---------- */

typedef struct upstream {
    int listener, port;
    atomic_bool stop;
    atomic_int accepted;
    pthread_t thread;
} upstream;

typedef struct upconn {
    int fd;
    char buf[2048];
    size_t len;
    bool streaming;
} upconn;

static void up_send(int fd, const char *s)
{
    size_t n = strlen(s), off = 0;
    while (off < n) {
        ssize_t w = send(fd, s + off, n - off, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        off += (size_t)w;
    }
}

/* Answers each request head in c's buffer: /stream with an event stream that stays open,
 * anything else with a small keep-alive answer. */
static void up_serve(upconn *c)
{
    char *end;
    while (!c->streaming && (end = strstr(c->buf, "\r\n\r\n"))) {
        if (strncmp(c->buf, "GET /flood", 10) == 0) {
            /* an event stream with 200 KB ready at once: more than the client buffers before
             * it streams (64 KiB), so the rest waits in the socket while the reader pauses */
            up_send(c->fd, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n");
            static char chunk[1024 + 16];
            int n = snprintf(chunk, sizeof chunk, "%x\r\n", 1000);
            memset(chunk + n, 'x', 1000);
            memcpy(chunk + n + 1000, "\r\n", 3);
            for (int i = 0; i < FLOOD_CHUNKS; i++)
                up_send(c->fd, chunk);
            c->streaming = true;
        } else if (strncmp(c->buf, "GET /stream", 11) == 0) {
            up_send(c->fd, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n7\r\n: hi\r\n\n\r\n");
            c->streaming = true;
        } else {
            up_send(c->fd,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok");
        }
        size_t used = (size_t)(end + 4 - c->buf);
        memmove(c->buf, c->buf + used, c->len - used + 1);
        c->len -= used;
    }
}

static void *up_main(void *arg)
{
    upstream *u = arg;
    upconn conns[MAXCONN];
    int n = 0;
    while (!atomic_load(&u->stop)) {
        struct pollfd pfd[MAXCONN + 1];
        pfd[0] = (struct pollfd){.fd = u->listener, .events = POLLIN};
        for (int i = 0; i < n; i++)
            pfd[i + 1] = (struct pollfd){.fd = conns[i].fd, .events = POLLIN};
        if (poll(pfd, (nfds_t)n + 1, 20) <= 0)
            continue;
        if ((pfd[0].revents & POLLIN) && n < MAXCONN) {
            int fd = accept(u->listener, NULL, NULL);
            if (fd >= 0) {
                atomic_fetch_add(&u->accepted, 1);
                conns[n++] = (upconn){.fd = fd};
            }
        }
        for (int i = n - 1; i >= 0; i--) {
            if (!(pfd[i + 1].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            upconn *c = &conns[i];
            ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len, 0);
            if (r <= 0) {
                close(c->fd);
                conns[i] = conns[--n];
                continue;
            }
            c->len += (size_t)r;
            c->buf[c->len] = '\0';
            up_serve(c);
        }
    }
    for (int i = 0; i < n; i++)
        close(conns[i].fd);
    return NULL;
}

static void up_start(upstream *u)
{
    memset(u, 0, sizeof *u);
    u->listener = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(u->listener >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(u->listener, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(u->listener, 128), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(u->listener, (struct sockaddr *)&a, &al), 0);
    u->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&u->thread, NULL, up_main, u), 0);
}

static void up_stop(upstream *u)
{
    atomic_store(&u->stop, true);
    pthread_join(u->thread, NULL);
    close(u->listener);
}

/* ---------- calls ---------- */

typedef struct tcall {
    dk_http_call call;
    atomic_int headers, dones;
    atomic_size_t bytes;
} tcall;

static void t_headers(dk_http_call *call)
{
    tcall *t = call->ctx;
    atomic_fetch_add(&t->headers, 1);
}

static dk_http_data_action t_data(dk_http_call *call, const char *data, size_t len)
{
    (void)data;
    tcall *t = call->ctx;
    atomic_fetch_add(&t->bytes, len);
    return DK_HTTP_DATA_OK;
}

/* Takes nothing while `hold` is set: the call pauses. */
static atomic_bool hold;
static dk_http_data_action t_data_held(dk_http_call *call, const char *data, size_t len)
{
    if (atomic_load(&hold))
        return DK_HTTP_DATA_PAUSE;
    return t_data(call, data, len);
}

static void t_done(dk_http_call *call)
{
    tcall *t = call->ctx;
    atomic_fetch_add(&t->dones, 1);
}

static void t_init(tcall *t, const char *url, bool stream)
{
    memset(t, 0, sizeof *t);
    t->call.arena = dk_arena_new();
    t->call.method = "GET";
    t->call.url = url;
    t->call.connect_timeout_ms = 2000;
    t->call.timeout_ms = stream ? 0 : 5000;
    t->call.headers_timeout_ms = stream ? 5000 : 0;
    t->call.long_lived = stream;
    if (stream) {
        t->call.on_headers = t_headers;
        t->call.on_data = t_data;
    }
    t->call.done = t_done;
    t->call.ctx = t;
}

/* Waits up to ms for *v to reach want. */
static bool wait_int(atomic_int *v, int want, int ms)
{
    for (int i = 0; i < ms / 5 && atomic_load(v) < want; i++)
        dk_test_sleep_ms(5);
    return atomic_load(v) >= want;
}

static void test_short_calls_keep_their_connection_beside_many_streams(void **state)
{
    (void)state;
    upstream u;
    up_start(&u);
    char stream_url[64], short_url[64];
    snprintf(stream_url, sizeof stream_url, "http://127.0.0.1:%d/stream", u.port);
    snprintf(short_url, sizeof short_url, "http://127.0.0.1:%d/short", u.port);

    /* a keep-alive allowance far below the streams open: only idle connections count */
    dk_http_client_options o = {.max_connections = 4};
    dk_http_client *cl = NULL;
    assert_int_equal(dk_http_client_curl_ops.open(&o, &cl), DK_OK);

    static tcall streams[NSTREAMS];
    for (int i = 0; i < NSTREAMS; i++) {
        t_init(&streams[i], stream_url, true);
        assert_int_equal(dk_http_client_curl_ops.submit(cl, &streams[i].call), DK_OK);
    }
    for (int i = 0; i < NSTREAMS; i++) {
        assert_true(wait_int(&streams[i].headers, 1, 10000));
        assert_int_equal(streams[i].call.status, 200);
        assert_int_equal(atomic_load(&streams[i].dones), 0);
    }
    assert_int_equal(atomic_load(&u.accepted), NSTREAMS);

    /* one after the other: each finds the previous one's connection kept; short calls, then
     * long-lived ones that end soon (they have their own pool, beside the open streams) */
    for (int i = 0; i < 2 * NSHORT; i++) {
        tcall t;
        t_init(&t, short_url, i >= NSHORT);
        assert_int_equal(dk_http_client_curl_ops.submit(cl, &t.call), DK_OK);
        assert_true(wait_int(&t.dones, 1, 10000));
        assert_int_equal(t.call.error, DK_OK);
        assert_int_equal(t.call.status, 200);
        assert_int_equal(t.call.response_len, 2); /* small and whole: not streamed */
        assert_false(t.call.streamed);
        assert_memory_equal(t.call.response, "ok", 2);
        /* finished: a late cancel or resume is ignored (no second done) */
        dk_http_client_curl_ops.cancel(cl, &t.call);
        dk_http_client_curl_ops.resume(cl, &t.call);
        dk_test_sleep_ms(i == 0 ? 50 : 0);
        assert_int_equal(atomic_load(&t.dones), 1);
        dk_arena_free(t.call.arena);
    }
    assert_int_equal(atomic_load(&u.accepted), NSTREAMS + 2);

    /* the streams are still open, with what came with their headers delivered; cancel ends
     * each exactly once */
    for (int i = 0; i < NSTREAMS; i++) {
        assert_int_equal(atomic_load(&streams[i].dones), 0);
        assert_true(atomic_load(&streams[i].bytes) > 0);
        assert_true(streams[i].call.streamed);
        dk_http_client_curl_ops.cancel(cl, &streams[i].call);
    }
    for (int i = 0; i < NSTREAMS; i++) {
        assert_true(wait_int(&streams[i].dones, 1, 10000));
        assert_true(streams[i].call.cancelled);
        assert_int_equal(streams[i].call.error, DK_E_UNAVAILABLE);
    }
    for (int i = 0; i < NSTREAMS; i++)
        dk_http_client_curl_ops.cancel(cl, &streams[i].call); /* after done: ignored */
    dk_test_sleep_ms(50);
    for (int i = 0; i < NSTREAMS; i++) {
        assert_int_equal(atomic_load(&streams[i].dones), 1);
        dk_arena_free(streams[i].call.arena);
    }
    dk_http_client_curl_ops.close(cl);
    up_stop(&u);
}

/* Closing the client fails the streams still open, once each, as the port says. */
static void test_close_ends_open_streams(void **state)
{
    (void)state;
    upstream u;
    up_start(&u);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/stream", u.port);
    dk_http_client *cl = NULL;
    assert_int_equal(dk_http_client_curl_ops.open(NULL, &cl), DK_OK);
    static tcall streams[4];
    for (int i = 0; i < 4; i++) {
        t_init(&streams[i], url, true);
        assert_int_equal(dk_http_client_curl_ops.submit(cl, &streams[i].call), DK_OK);
    }
    for (int i = 0; i < 4; i++)
        assert_true(wait_int(&streams[i].headers, 1, 10000));
    dk_http_client_curl_ops.close(cl);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(atomic_load(&streams[i].dones), 1);
        assert_int_equal(streams[i].call.error, DK_E_UNAVAILABLE); /* "the client closed" */
        assert_false(streams[i].call.cancelled);
        dk_arena_free(streams[i].call.arena);
    }
    up_stop(&u);
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* A stream paused by its reader, with its socket still readable, costs no CPU (the client
 * stops watching the socket instead of spinning on it), and gets everything after resume. */
static void test_paused_stream_does_not_spin(void **state)
{
    (void)state;
    upstream u;
    up_start(&u);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/flood", u.port);
    dk_http_client *cl = NULL;
    assert_int_equal(dk_http_client_curl_ops.open(NULL, &cl), DK_OK);
    static tcall t;
    t_init(&t, url, true);
    t.call.on_data = t_data_held;
    atomic_store(&hold, true);
    assert_int_equal(dk_http_client_curl_ops.submit(cl, &t.call), DK_OK);
    assert_true(wait_int(&t.headers, 1, 10000));
    dk_test_sleep_ms(100); /* the rest is in the socket by now */
    double c0 = cpu_seconds();
    dk_test_sleep_ms(400);
    double used = cpu_seconds() - c0;
    assert_true(used < 0.2); /* a spinning loop would take the whole 0.4 s */
    assert_int_equal(atomic_load(&t.bytes), 0);
    atomic_store(&hold, false);
    dk_http_client_curl_ops.resume(cl, &t.call);
    for (int i = 0; i < 2000 && atomic_load(&t.bytes) < FLOOD_CHUNKS * 1000; i++)
        dk_test_sleep_ms(5);
    assert_int_equal(atomic_load(&t.bytes), FLOOD_CHUNKS * 1000);
    assert_int_equal(atomic_load(&t.dones), 0);
    dk_http_client_curl_ops.cancel(cl, &t.call);
    assert_true(wait_int(&t.dones, 1, 10000));
    dk_arena_free(t.call.arena);
    dk_http_client_curl_ops.close(cl);
    up_stop(&u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_short_calls_keep_their_connection_beside_many_streams),
        cmocka_unit_test(test_close_ends_open_streams),
        cmocka_unit_test(test_paused_stream_does_not_spin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
