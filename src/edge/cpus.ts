/**
 * What `server.workers: auto` stands for: the CPUs this process may use, within a container's CPU limit (cgroup v2
 * or v1) when one is set.
 * @module
 */

/** Reads a text file; undefined when it cannot be read (absent, or not permitted). */
export type ReadText = (path: string) => string | undefined;

function readText(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return undefined;
  }
}

/**
 * The CPUs a container's limit allows this process, if one is set: the smallest quota over its cgroup and the
 * cgroups above it (cgroup v2 `cpu.max`, "max" or `<quota> <period>`), else the cgroup v1 CFS quota
 * (`cpu.cfs_quota_us` / `cpu.cfs_period_us`, -1 for none). Undefined when there is no limit or nothing can be read.
 */
export function cgroupCpus(read: ReadText = readText): number | undefined {
  let limit: number | undefined;
  const keep = (quota: number, period: number) => {
    if (quota > 0 && period > 0) limit = Math.min(limit ?? Infinity, quota / period);
  };
  const own = /^0::(\/\S*)$/m.exec(read("/proc/self/cgroup") ?? "")?.[1] ?? "/";
  const dirs = ["/sys/fs/cgroup"];
  for (let path = own; path !== "/" && path !== ""; path = path.slice(0, path.lastIndexOf("/")) || "/") {
    dirs.push(`/sys/fs/cgroup${path}`);
  }
  for (const dir of dirs) {
    const [quota, period] = (read(`${dir}/cpu.max`) ?? "").trim().split(/\s+/);
    if (quota && quota !== "max") keep(Number(quota), Number(period));
  }
  if (limit !== undefined) return limit;
  for (const dir of ["/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu"]) {
    const quota = read(`${dir}/cpu.cfs_quota_us`);
    if (quota === undefined) continue;
    keep(Number(quota.trim()), Number((read(`${dir}/cpu.cfs_period_us`) ?? "").trim()));
    break;
  }
  return limit;
}

/**
 * The worker count `auto` stands for: one per CPU, at most 4, none on a single CPU. A container's CPU limit
 * (`cgroupCpus`) counts as the number of CPUs when it is lower, rounded down (1.5 CPUs: none).
 */
export function autoWorkers(
  cpus: number = navigator.hardwareConcurrency ?? 1,
  limit: number | undefined = cgroupCpus(),
): number {
  const usable = limit === undefined ? cpus : Math.min(cpus, Math.floor(limit));
  return usable < 2 ? 0 : Math.min(usable, 4);
}
