/* blob_fs.c — the object-storage port on a local directory (the embedded default:
 * <storage.data_dir>/objects). An object is a file at <dir>/<key>; the key is checked
 * (dk_blob_key_valid) so no path ever leaves the directory, and it is made by the caller, never
 * taken from user input. A put writes a temporary file in the object's directory, syncs it and
 * renames it over the key: readers see the old object or the new one, never a part, and a crash
 * leaves at worst a ".tmp-" file. Files are 0600, directories 0700. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/crypto.h"
#include "core/str.h"
#include "ports/blob.h"
#include "adapters/blob.h"
#include "core/banned.h"

struct dk_blob {
    char *dir;
};

#define BLOB_KEY_MAX 200

bool dk_blob_key_valid(const char *key)
{
    if (!key)
        return false;
    size_t n = strlen(key);
    if (n == 0 || n > BLOB_KEY_MAX || key[0] == '/' || key[n - 1] == '/')
        return false;
    const char *seg = key;
    for (size_t i = 0; i <= n; i++) {
        char c = key[i];
        if (c == '/' || c == '\0') {
            size_t len = (size_t)(key + i - seg);
            bool dots = true;
            for (size_t k = 0; k < len; k++)
                if (seg[k] != '.')
                    dots = false;
            if (len == 0 || dots)
                return false;
            seg = key + i + 1;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static void blob_fs_errf(dk_blob_err *err, const char *fmt, ...) DK_PRINTF(2, 3);
static void blob_fs_errf(dk_blob_err *err, const char *fmt, ...)
{
    if (!err)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->text, sizeof err->text, fmt, ap);
    va_end(ap);
}

static void blob_fs_err(dk_blob_err *err, const char *what, const char *key, int e)
{
    if (err)
        blob_fs_errf(err, "%s %s: %s", what, key, strerror(e));
}

/* An error of the disk (full, read-only, I/O) is the store being unavailable; a path that
 * cannot exist is ours. */
static dk_status blob_fs_status(int e)
{
    return e == ENOENT                   ? DK_E_NOT_FOUND
           : (e == EACCES || e == EPERM) ? DK_E_FORBIDDEN
           : (e == ENOSPC || e == EROFS || e == EIO || e == EDQUOT || e == EMFILE || e == ENFILE)
               ? DK_E_UNAVAILABLE
               : DK_E_INTERNAL;
}

/* mkdir -p of path's parent directories inside the store (the store's own dir exists). */
static int blob_fs_mkdirs(const struct dk_blob *b, const char *path)
{
    char tmp[PATH_MAX];
    if (dk_strlcpy(tmp, path, sizeof tmp) >= sizeof tmp)
        return ENAMETOOLONG;
    size_t base = strlen(b->dir);
    for (char *p = tmp + base + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
            return errno;
        *p = '/';
    }
    return 0;
}

static dk_status blob_fs_path(const struct dk_blob *b, const char *key, char *out, size_t cap,
                              dk_blob_err *err)
{
    if (!dk_blob_key_valid(key)) {
        if (err)
            blob_fs_errf(err, "invalid object key");
        return DK_E_BAD_REQUEST;
    }
    int n = snprintf(out, cap, "%s/%s", b->dir, key);
    if (n < 0 || (size_t)n >= cap) {
        if (err)
            blob_fs_errf(err, "object path too long");
        return DK_E_INTERNAL;
    }
    return DK_OK;
}

static dk_status blob_fs_open(const dk_blob_options *opt, dk_blob **ret, dk_blob_err *err)
{
    if (!opt->dir || !*opt->dir) {
        if (err)
            blob_fs_errf(err, "no directory for objects");
        return DK_E_INTERNAL;
    }
    /* mkdir -p: the data directory itself may not exist yet (PostgreSQL, a given secret) */
    char tmp[PATH_MAX];
    if (dk_strlcpy(tmp, opt->dir, sizeof tmp) >= sizeof tmp) {
        blob_fs_err(err, "too long:", opt->dir, ENAMETOOLONG);
        return DK_E_INTERNAL;
    }
    for (char *p = tmp + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST) {
            blob_fs_err(err, "cannot create", tmp, errno);
            return DK_E_INTERNAL;
        }
        *p = c;
        if (!c)
            break;
    }
    struct stat st;
    if (stat(opt->dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        blob_fs_err(err, "not a directory:", opt->dir, ENOTDIR);
        return DK_E_INTERNAL;
    }
    struct dk_blob *b = DK_NEW(struct dk_blob);
    b->dir = dk_strdup(opt->dir);
    size_t n = strlen(b->dir);
    while (n > 1 && b->dir[n - 1] == '/')
        b->dir[--n] = '\0';
    *ret = b;
    return DK_OK;
}

static void blob_fs_close(dk_blob *b)
{
    if (!b)
        return;
    dk_free(b->dir);
    dk_free(b);
}

static int blob_fs_write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static dk_status blob_fs_put(dk_blob *b, const char *key, const void *data, size_t len,
                             const char *content_type, dk_blob_err *err)
{
    (void)content_type; /* the key says what it is */
    char path[PATH_MAX], tmp[PATH_MAX + 32];
    dk_status st = blob_fs_path(b, key, path, sizeof path, err);
    if (st != DK_OK)
        return st;
    int e = blob_fs_mkdirs(b, path);
    if (e) {
        blob_fs_err(err, "cannot create the directory of", key, e);
        return blob_fs_status(e);
    }
    unsigned char rnd[8];
    char hex[17];
    dk_random_bytes(rnd, sizeof rnd);
    dk_hex(rnd, sizeof rnd, hex);
    const char *slash = strrchr(path, '/');
    snprintf(tmp, sizeof tmp, "%.*s/.tmp-%s", (int)(slash - path), path, hex);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        e = errno;
        blob_fs_err(err, "cannot write", key, e);
        return blob_fs_status(e);
    }
    e = blob_fs_write_all(fd, data, len);
    if (!e && fsync(fd) != 0)
        e = errno;
    if (close(fd) != 0 && !e)
        e = errno;
    if (!e && rename(tmp, path) != 0)
        e = errno;
    if (e) {
        (void)unlink(tmp);
        blob_fs_err(err, "cannot write", key, e);
        return blob_fs_status(e);
    }
    /* the rename is durable once the directory is synced */
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    return DK_OK;
}

static dk_status blob_fs_get(dk_blob *b, dk_arena *a, const char *key, size_t max, char **ret_data,
                             size_t *ret_len, dk_blob_err *err)
{
    char path[PATH_MAX];
    dk_status st = blob_fs_path(b, key, path, sizeof path, err);
    if (st != DK_OK)
        return st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        int e = errno;
        blob_fs_err(err, "cannot read", key, e);
        return blob_fs_status(e);
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        blob_fs_err(err, "not a file:", key, EINVAL);
        return DK_E_INTERNAL;
    }
    if ((uint64_t)sb.st_size > max) {
        close(fd);
        if (err)
            blob_fs_errf(err, "object %s is larger than %zu bytes", key, max);
        return DK_E_TOO_LARGE;
    }
    size_t size = (size_t)sb.st_size, got = 0;
    char *buf = dk_arena_alloc(a, size + 1);
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            close(fd);
            blob_fs_err(err, "cannot read", key, e);
            return blob_fs_status(e);
        }
        got += (size_t)r;
    }
    close(fd);
    *ret_data = buf;
    *ret_len = size;
    return DK_OK;
}

static dk_status blob_fs_del(dk_blob *b, const char *key, dk_blob_err *err)
{
    char path[PATH_MAX];
    dk_status st = blob_fs_path(b, key, path, sizeof path, err);
    if (st != DK_OK)
        return st;
    if (unlink(path) != 0 && errno != ENOENT) {
        int e = errno;
        blob_fs_err(err, "cannot delete", key, e);
        return blob_fs_status(e);
    }
    /* empty directories of the key go too (a deleted user's), up to the store's own */
    size_t base = strlen(b->dir);
    for (char *slash = strrchr(path, '/'); slash && (size_t)(slash - path) > base;
         slash = strrchr(path, '/')) {
        *slash = '\0';
        if (rmdir(path) != 0)
            break; /* not empty (or gone): stop */
    }
    return DK_OK;
}

static dk_status blob_fs_ping(dk_blob *b, dk_blob_err *err)
{
    if (access(b->dir, W_OK | X_OK) != 0) {
        int e = errno;
        blob_fs_err(err, "cannot write to", b->dir, e);
        return blob_fs_status(e) == DK_E_NOT_FOUND ? DK_E_UNAVAILABLE : blob_fs_status(e);
    }
    return DK_OK;
}

const struct dk_blob_ops dk_blob_fs_ops = {
    .name = "filesystem",
    .open = blob_fs_open,
    .close = blob_fs_close,
    .put = blob_fs_put,
    .get = blob_fs_get,
    .del = blob_fs_del,
    .ping = blob_fs_ping,
};
