/* cpus.c — usable CPUs from affinity and the cgroup CPU quota (see cpus.h). */
#include "core/cpus.h"

#include <math.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/banned.h"

#define CPUS_PATH_MAX 4096

/* The first line of a small file, without its newline; false when unreadable. */
static bool cpus_read_line(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    bool ok = fgets(buf, (int)n, f) != NULL;
    fclose(f);
    if (ok)
        buf[strcspn(buf, "\n")] = '\0';
    return ok;
}

static bool cpus_parse_long(const char *s, long *ret)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || (*end != '\0' && *end != ' '))
        return false;
    *ret = v;
    return true;
}

/* cgroup v2: "max 100000" (none) or "150000 100000" in dir/cpu.max. */
static double cpus_v2_quota(const char *dir)
{
    char path[CPUS_PATH_MAX], line[128];
    int pl = snprintf(path, sizeof path, "%s/cpu.max", dir);
    if (pl < 0 || (size_t)pl >= sizeof path || !cpus_read_line(path, line, sizeof line))
        return 0;
    char *sp = strchr(line, ' ');
    long quota, period;
    if (!sp || strncmp(line, "max", 3) == 0 || !cpus_parse_long(line, &quota) ||
        !cpus_parse_long(sp + 1, &period) || quota <= 0 || period <= 0)
        return 0;
    return (double)quota / (double)period;
}

/* cgroup v1: cpu.cfs_quota_us (-1: none) over cpu.cfs_period_us in dir. */
static double cpus_v1_quota(const char *dir)
{
    char path[CPUS_PATH_MAX], line[64];
    long quota, period;
    int pl = snprintf(path, sizeof path, "%s/cpu.cfs_quota_us", dir);
    if (pl < 0 || (size_t)pl >= sizeof path || !cpus_read_line(path, line, sizeof line) ||
        !cpus_parse_long(line, &quota) || quota <= 0)
        return 0;
    pl = snprintf(path, sizeof path, "%s/cpu.cfs_period_us", dir);
    if (pl < 0 || (size_t)pl >= sizeof path || !cpus_read_line(path, line, sizeof line) ||
        !cpus_parse_long(line, &period) || period <= 0)
        return 0;
    return (double)quota / (double)period;
}

static double cpus_min(double a, double b)
{
    if (a <= 0)
        return b;
    if (b <= 0)
        return a;
    return a < b ? a : b;
}

/* The tightest quota from base+cg up to base itself. */
static double cpus_walk(const char *base, const char *cg, double (*read)(const char *))
{
    char rel[CPUS_PATH_MAX], dir[CPUS_PATH_MAX];
    snprintf(rel, sizeof rel, "%s", cg);
    double best = 0;
    for (;;) {
        size_t n = strlen(rel);
        while (n > 0 && rel[n - 1] == '/')
            rel[--n] = '\0';
        snprintf(dir, sizeof dir, "%s%s", base, rel);
        best = cpus_min(best, read(dir));
        char *slash = strrchr(rel, '/');
        if (n == 0 || !slash)
            break;
        *slash = '\0';
    }
    return best;
}

double dk_cpu_quota(const char *cgroup_root, const char *proc_self_cgroup)
{
    double best = 0;
    const char *line = proc_self_cgroup ? proc_self_cgroup : "";
    char base[CPUS_PATH_MAX], cg[CPUS_PATH_MAX];
    while (*line) {
        size_t n = strcspn(line, "\n");
        /* hierarchy-id:controllers:path */
        const char *c1 = memchr(line, ':', n);
        const char *c2 = c1 ? memchr(c1 + 1, ':', n - (size_t)(c1 - line) - 1) : NULL;
        if (c2) {
            size_t clen = (size_t)(c2 - c1 - 1);
            snprintf(cg, sizeof cg, "%.*s", (int)(n - (size_t)(c2 - line) - 1), c2 + 1);
            if (clen == 0 && strncmp(line, "0:", 2) == 0) {
                best = cpus_min(best, cpus_walk(cgroup_root, cg, cpus_v2_quota));
            } else {
                /* v1: a controller list that names cpu ("cpu", "cpu,cpuacct") */
                char ctl[256];
                snprintf(ctl, sizeof ctl, ",%.*s,", (int)clen, c1 + 1);
                if (strstr(ctl, ",cpu,")) {
                    snprintf(base, sizeof base, "%s/%.*s", cgroup_root, (int)clen, c1 + 1);
                    best = cpus_min(best, cpus_walk(base, cg, cpus_v1_quota));
                    snprintf(base, sizeof base, "%s/cpu", cgroup_root);
                    best = cpus_min(best, cpus_walk(base, cg, cpus_v1_quota));
                }
            }
        }
        line += n;
        if (*line == '\n')
            line++;
    }
    return best;
}

int dk_cpu_count(void)
{
    long n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = CPU_COUNT(&set);
    if (n <= 0)
        n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n <= 0)
        n = 1;
    char text[8192] = "";
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (f) {
        size_t got = fread(text, 1, sizeof text - 1, f);
        text[got] = '\0';
        fclose(f);
    }
    double quota = dk_cpu_quota("/sys/fs/cgroup", text);
    if (quota > 0) {
        long q = (long)ceil(quota);
        if (q < n)
            n = q < 1 ? 1 : q;
    }
    return (int)n;
}
