/* test_blob_fs.c — the filesystem adapter of the blob port in a throwaway directory: put, get,
 * replace, delete (twice), keys that would leave the directory, the size cap of get, file
 * modes, no temporary file left behind, and empty key directories removed. */
#include "testutil.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/arena.h"
#include "ports/blob.h"
#include "adapters/blob.h"
#include "core/banned.h"

static const struct dk_blob_ops *ops = &dk_blob_fs_ops;

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static void test_put_get_replace_delete(void **state)
{
    (void)state;
    char *root = dk_test_tmpdir("blob-fs");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/objects", root);
    dk_blob_options o = {.dir = dir};
    dk_blob *b = NULL;
    dk_blob_err err = {""};
    assert_int_equal(ops->open(&o, &b, &err), DK_OK);
    assert_int_equal(ops->ping(b, &err), DK_OK);
    dk_arena *a = dk_arena_new();
    char *data = NULL;
    size_t len = 0;

    assert_int_equal(ops->get(b, a, "avatars/u1/k.png", 100, &data, &len, &err), DK_E_NOT_FOUND);
    assert_int_equal(ops->put(b, "avatars/u1/k.png", "hello", 5, "image/png", &err), DK_OK);
    assert_int_equal(ops->get(b, a, "avatars/u1/k.png", 100, &data, &len, &err), DK_OK);
    assert_int_equal(len, 5);
    assert_memory_equal(data, "hello", 5);
    /* replaced whole */
    assert_int_equal(ops->put(b, "avatars/u1/k.png", "bye", 3, "image/png", &err), DK_OK);
    assert_int_equal(ops->get(b, a, "avatars/u1/k.png", 100, &data, &len, &err), DK_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(data, "bye", 3);
    /* larger than asked for */
    assert_int_equal(ops->get(b, a, "avatars/u1/k.png", 2, &data, &len, &err), DK_E_TOO_LARGE);

    char path[4200];
    snprintf(path, sizeof path, "%s/avatars/u1/k.png", dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    snprintf(path, sizeof path, "%s/avatars/u1", dir);
    assert_int_equal(count_entries(path), 1); /* no temporary file left */

    assert_int_equal(ops->put(b, "avatars/u1/other.png", "x", 1, NULL, &err), DK_OK);
    assert_int_equal(ops->del(b, "avatars/u1/k.png", &err), DK_OK);
    assert_int_equal(ops->del(b, "avatars/u1/k.png", &err), DK_OK); /* absent: fine */
    assert_int_equal(count_entries(path), 1);
    assert_int_equal(ops->del(b, "avatars/u1/other.png", &err), DK_OK);
    /* the empty directories of the key went, the store's own stays */
    assert_int_equal(count_entries(path), -1);
    assert_int_equal(count_entries(dir), 0);

    dk_arena_free(a);
    ops->close(b);
    free(root);
}

static void test_keys_never_leave_the_directory(void **state)
{
    (void)state;
    char *root = dk_test_tmpdir("blob-fs-keys");
    dk_blob_options o = {.dir = root};
    dk_blob *b = NULL;
    dk_blob_err err = {""};
    assert_int_equal(ops->open(&o, &b, &err), DK_OK);
    const char *bad[] = {"",     "/etc/passwd", "../x",    "a/../../x", "a/./b",
                         "a//b", "a/",          "A/b",     "a b",       "a\\b",
                         "..",   ".",           "a/%2e/b", "a/\xc3\xa9"};
    dk_arena *a = dk_arena_new();
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *data = NULL;
        size_t len = 0;
        assert_false(dk_blob_key_valid(bad[i]));
        assert_int_equal(ops->put(b, bad[i], "x", 1, NULL, &err), DK_E_BAD_REQUEST);
        assert_int_equal(ops->get(b, a, bad[i], 10, &data, &len, &err), DK_E_BAD_REQUEST);
        assert_int_equal(ops->del(b, bad[i], &err), DK_E_BAD_REQUEST);
    }
    char long_key[260];
    memset(long_key, 'a', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = '\0';
    assert_false(dk_blob_key_valid(long_key));
    assert_true(dk_blob_key_valid("avatars/01a250fa-0d55-7194-a4eb-42848de711dd/ab12.png"));
    assert_int_equal(count_entries(root), 0);
    dk_arena_free(a);
    ops->close(b);
    free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_replace_delete),
        cmocka_unit_test(test_keys_never_leave_the_directory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
