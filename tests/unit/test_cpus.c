/* test_cpus.c — the cgroup CPU quota read from a cgroup tree written here (v2 cpu.max with
 * nested limits, "max", v1 cfs files under cpu and cpu,cpuacct, missing and malformed files)
 * and dk_cpu_count on this machine (between 1 and the CPUs online). */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cpus.h"
#include "core/banned.h"

static void put(const char *root, const char *rel, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    /* mkdir -p of the parent */
    for (char *p = path + strlen(root) + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            (void)mkdir(path, 0755);
            *p = '/';
        }
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_v2(void **state)
{
    (void)state;
    char *root = dk_test_tmpdir("cpus_v2");
    /* no files at all: no quota */
    assert_true(dk_cpu_quota(root, "0::/\n") == 0);
    put(root, "cpu.max", "max 100000\n");
    assert_true(dk_cpu_quota(root, "0::/\n") == 0);
    put(root, "cpu.max", "250000 100000\n");
    assert_true(dk_cpu_quota(root, "0::/\n") == 2.5);
    /* nested: the pod's limit above the container's: the tightest wins */
    put(root, "kubepods/pod1/cpu.max", "150000 100000\n");
    put(root, "kubepods/pod1/ctr/cpu.max", "max 100000\n");
    assert_true(dk_cpu_quota(root, "0::/kubepods/pod1/ctr\n") == 1.5);
    put(root, "kubepods/pod1/ctr/cpu.max", "50000 100000\n");
    assert_true(dk_cpu_quota(root, "0::/kubepods/pod1/ctr\n") == 0.5);
    /* malformed files are ignored */
    put(root, "kubepods/pod1/ctr/cpu.max", "lots\n");
    put(root, "kubepods/pod1/cpu.max", "100000 0\n");
    assert_true(dk_cpu_quota(root, "0::/kubepods/pod1/ctr/\n") == 2.5);
    assert_true(dk_cpu_quota(root, "") == 0);
    assert_true(dk_cpu_quota(root, NULL) == 0);
    free(root);
}

static void test_v1(void **state)
{
    (void)state;
    char *root = dk_test_tmpdir("cpus_v1");
    const char *cg = "12:memory:/x\n4:cpu,cpuacct:/kubepods/pod2\n1:name=systemd:/\n";
    assert_true(dk_cpu_quota(root, cg) == 0);
    put(root, "cpu,cpuacct/kubepods/pod2/cpu.cfs_quota_us", "-1\n");
    put(root, "cpu,cpuacct/kubepods/pod2/cpu.cfs_period_us", "100000\n");
    assert_true(dk_cpu_quota(root, cg) == 0);
    put(root, "cpu,cpuacct/kubepods/pod2/cpu.cfs_quota_us", "300000\n");
    assert_true(dk_cpu_quota(root, cg) == 3.0);
    /* inside a container the mount root is the container's own cgroup */
    char *ctr = dk_test_tmpdir("cpus_v1_ctr");
    put(ctr, "cpu/cpu.cfs_quota_us", "200000\n");
    put(ctr, "cpu/cpu.cfs_period_us", "100000\n");
    assert_true(dk_cpu_quota(ctr, "3:cpu:/kubepods/pod3/abc\n") == 2.0);
    /* a v1 line for other controllers only */
    assert_true(dk_cpu_quota(ctr, "3:cpuacct:/\n5:cpuset:/\n") == 0);
    free(ctr);
    free(root);
}

static void test_count(void **state)
{
    (void)state;
    int n = dk_cpu_count();
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    assert_true(n >= 1);
    assert_true(n <= (online > 0 ? online : 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v2),
        cmocka_unit_test(test_v1),
        cmocka_unit_test(test_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
