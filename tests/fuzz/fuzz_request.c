/* The whole request path: raw bytes on a TCP connection to a real `docket all` (libmicrohttpd,
 * the connection guard, the router, the edge checks and every service's handlers, on SQLite in
 * memory and the in-process cache and bus), started once in this process from src/main.c.
 * The text "TOKEN" in an input is replaced by a valid access token (a user registered at
 * start), so inputs reach the authenticated handlers. The oracle: no crash, no sanitizer
 * report, and never a 500. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fuzz.h"

int docket_main(int argc, char **argv);

static int port;
static char token[1024];

static void *server_main(void *arg)
{
    char **argv = arg;
    int argc = 0;
    while (argv[argc])
        argc++;
    int rc = docket_main(argc, argv);
    fprintf(stderr, "fuzz_request: docket stopped (exit %d)\n", rc);
    abort();
    return NULL;
}

static int connect_local(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Sends req, reads the reply until the server closes or quiet_ms pass without a byte. With
 * half_close the sending side is shut once req is out, so an incomplete request ends at once
 * instead of waiting for quiet_ms (offloaded routes — sign-ins — then answer 499, as they do
 * for a client that has gone). */
static size_t exchange(const char *req, size_t len, char *out, size_t cap, int quiet_ms,
                       bool half_close)
{
    int fd = connect_local();
    if (fd < 0)
        return 0;
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    if (half_close)
        shutdown(fd, SHUT_WR);
    size_t got = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, quiet_ms) <= 0)
            break;
        ssize_t n = recv(fd, out + got, cap - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
        if (got >= cap - 1)
            break;
    }
    out[got] = '\0';
    close(fd);
    return got;
}

static void json_field(const char *reply, const char *name, char *out, size_t cap)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", name);
    const char *p = strstr(reply, pat);
    out[0] = '\0';
    if (!p)
        return;
    p += strlen(pat);
    size_t n = strcspn(p, "\"");
    if (n >= cap)
        n = cap - 1;
    memcpy(out, p, n);
    out[n] = '\0';
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static char dir[] = "/tmp/docket-fuzz-request-XXXXXX";
    if (!mkdtemp(dir))
        abort();
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    if (bind(s, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(s, (struct sockaddr *)&sa, &sl) != 0)
        abort();
    port = ntohs(sa.sin_port);
    close(s);
    static char a_port[32], a_dir[300];
    snprintf(a_port, sizeof a_port, "--server.port=%d", port);
    snprintf(a_dir, sizeof a_dir, "--storage.data_dir=%s", dir);
    static char *args[] = {"docket",
                           "all",
                           a_port,
                           "--server.host=127.0.0.1",
                           a_dir,
                           "--log.level=error",
                           "--server.header_timeout=1s",
                           "--auth.argon2_memory_kib=1024",
                           "--auth.argon2_iterations=1",
                           "--rate_limiting.enabled=false",
                           "--gateway.rate_limit_rps=0",
                           "--server.max_connections_per_ip=0",
                           "--server.threads=4",
                           NULL};
    pthread_t th;
    if (pthread_create(&th, NULL, server_main, args) != 0)
        abort();
    pthread_detach(th);
    char reply[65536];
    for (int i = 0; i < 500; i++) {
        static const char health[] = "GET /health HTTP/1.1\r\nHost: f\r\nConnection: close\r\n\r\n";
        if (exchange(health, sizeof health - 1, reply, sizeof reply, 1000, false) > 0 &&
            strncmp(reply, "HTTP/1.1 200", 12) == 0)
            break;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    static const char body[] = "{\"email\":\"fuzz@example.com\",\"password\":\"fuzzing pass\","
                               "\"name\":\"Fuzz\"}";
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "POST /api/v1/auth/register HTTP/1.1\r\nHost: f\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     sizeof body - 1, body);
    (void)exchange(req, (size_t)n, reply, sizeof reply, 2000, false);
    n = snprintf(req, sizeof req,
                 "POST /api/v1/auth/login HTTP/1.1\r\nHost: f\r\nConnection: close\r\n"
                 "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                 sizeof body - 1, body);
    (void)exchange(req, (size_t)n, reply, sizeof reply, 2000, false);
    json_field(reply, "access_token", token, sizeof token);
    if (!token[0]) {
        fprintf(stderr, "fuzz_request: no token from login: %.300s\n", reply);
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 64 * 1024)
        return 0;
    /* "TOKEN" → a valid access token */
    size_t cap = size + 16 * strlen(token) + 1, len = 0;
    char *req = malloc(cap);
    for (size_t i = 0; i < size;) {
        if (i + 5 <= size && memcmp(data + i, "TOKEN", 5) == 0 && len + strlen(token) < cap) {
            memcpy(req + len, token, strlen(token));
            len += strlen(token);
            i += 5;
        } else {
            req[len++] = (char)data[i++];
        }
    }
    static char reply[1 << 20];
    size_t got = exchange(req, len, reply, sizeof reply, 300, true);
    free(req);
    /* every status line in the reply (pipelined requests): never a 500 */
    for (const char *p = reply; got && (p = strstr(p, "HTTP/1.1 500")) != NULL; p += 12) {
        if (p == reply || p[-1] == '\n') {
            fprintf(stderr, "fuzz_request: a 500 for this input:\n%.*s\n--- reply:\n%.2000s\n",
                    (int)(size < 2000 ? size : 2000), (const char *)data, reply);
            abort();
        }
    }
    return 0;
}
