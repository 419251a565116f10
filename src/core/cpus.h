/* cpus.h — how many CPUs this process may really use: the CPUs it may run on (affinity, which a
 * cpuset narrows), capped by the CFS quota of its cgroup (a Kubernetes CPU limit, cgroup v2
 * cpu.max or v1 cpu.cfs_quota_us), rounded up. A pod limited to 2 CPUs on a 32-vCPU node gets
 * 2, not 32: thread pools, database pools and hash workers are sized from this. Reads /proc
 * and /sys on each call (cheap; called at start-up); thread-safe; never fails (at least 1). */
#ifndef DK_CORE_CPUS_H
#define DK_CORE_CPUS_H

/* The CPUs to size pools for (>= 1). */
int dk_cpu_count(void);

/* The cgroup CPU quota in CPUs (e.g. 1.5), or 0 when there is none. cgroup_root is where the
 * cgroup file systems are mounted (/sys/fs/cgroup); proc_self_cgroup is the text of
 * /proc/self/cgroup. The tightest limit on the path from this cgroup to the root wins. */
double dk_cpu_quota(const char *cgroup_root, const char *proc_self_cgroup);

#endif
