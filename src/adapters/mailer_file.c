/* mailer_file.c — the mailer port into a directory: each message becomes one RFC 5322 .eml
 * file, <ms since the epoch>-<16 hex random>.eml, mode 0600. It is written under a hidden
 * temporary name (".tmp-…"), fsynced and renamed, so a reader never sees half a message; the
 * envelope goes in X-Envelope-From / X-Envelope-To headers in front of the message. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/crypto.h"
#include "core/timeutil.h"
#include "ports/mailer.h"
#include "adapters/mailer.h"
#include "core/banned.h"

typedef struct mailer_file {
    char *dir;
} mailer_file;

static int mailer_file_mkdir_p(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0700) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    return mkdir(buf, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

dk_status dk_mailer_file_new(const char *dir, void **ret)
{
    if (!dir || !*dir || mailer_file_mkdir_p(dir) != 0)
        return DK_E_VALIDATION;
    mailer_file *m = DK_NEW(mailer_file);
    m->dir = dk_strdup(dir);
    *ret = m;
    return DK_OK;
}

static void mailer_file_free(void *h)
{
    mailer_file *m = h;
    if (!m)
        return;
    dk_free(m->dir);
    dk_free(m);
}

static bool mailer_file_write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return false;
        p += k;
        n -= (size_t)k;
    }
    return true;
}

static dk_status mailer_file_send(void *h, const char *envelope_from, const char *rcpt,
                                  const char *message, size_t len, const atomic_bool *cancel,
                                  char *why, size_t why_cap)
{
    (void)cancel;
    mailer_file *m = h;
    for (const char *p = rcpt; *p; p++)
        if ((unsigned char)*p < 0x20) {
            snprintf(why, why_cap, "invalid recipient");
            return DK_E_VALIDATION;
        }
    unsigned char rnd[8];
    dk_random_bytes(rnd, sizeof rnd);
    char hex[17];
    dk_hex(rnd, sizeof rnd, hex);
    char tmp[4200], final[4200], head[800];
    long long ms = (long long)dk_now_ms();
    if (snprintf(tmp, sizeof tmp, "%s/.tmp-%lld-%s", m->dir, ms, hex) >= (int)sizeof tmp ||
        snprintf(final, sizeof final, "%s/%lld-%s.eml", m->dir, ms, hex) >= (int)sizeof final ||
        snprintf(head, sizeof head, "X-Envelope-From: <%s>\r\nX-Envelope-To: <%s>\r\n",
                 envelope_from, rcpt) >= (int)sizeof head) {
        snprintf(why, why_cap, "path or address too long");
        return DK_E_VALIDATION;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(why, why_cap, "cannot create a mail file: %s", strerror(errno));
        return DK_E_UNAVAILABLE;
    }
    bool ok = mailer_file_write_all(fd, head, strlen(head)) &&
              mailer_file_write_all(fd, message, len) && fsync(fd) == 0;
    int err = errno;
    ok = close(fd) == 0 && ok;
    if (ok && rename(tmp, final) != 0) {
        err = errno;
        ok = false;
    }
    if (!ok) {
        (void)unlink(tmp);
        snprintf(why, why_cap, "cannot write a mail file: %s", strerror(err));
        return DK_E_UNAVAILABLE;
    }
    return DK_OK;
}

const struct dk_mailer_ops dk_mailer_file_ops = {
    .name = "file",
    .send = mailer_file_send,
    .free = mailer_file_free,
};
