import assert from "node:assert/strict";
import { autoWorkers, cgroupCpus } from "../../src/edge/cpus.ts";

Deno.test("auto means one worker thread per CPU, at most 4, and none on a single CPU", () => {
  assert.deepEqual([1, 2, 3, 4, 16].map((cpus) => autoWorkers(cpus, undefined)), [0, 2, 3, 4, 4]);
});

Deno.test("auto keeps within a container's CPU limit: cgroup v2 cpu.max, or the cgroup v1 CFS quota", () => {
  const files = (entries: Record<string, string>) => (path: string) => entries[path];
  // cgroup v2, limit on the container's own cgroup as it sees it (a cgroup namespace: "0::/").
  assert.equal(cgroupCpus(files({ "/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "200000 100000\n" })), 2);
  assert.equal(
    cgroupCpus(files({ "/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "max 100000\n" })),
    undefined,
  );
  // cgroup v2 without a namespace: the process's cgroup and those above it; the lowest quota counts.
  const nested = files({
    "/proc/self/cgroup": "0::/system.slice/mipserver.service\n",
    "/sys/fs/cgroup/system.slice/mipserver.service/cpu.max": "max 100000",
    "/sys/fs/cgroup/system.slice/cpu.max": "150000 100000",
  });
  assert.equal(cgroupCpus(nested), 1.5);
  // cgroup v1: the CFS quota over its period; -1 is no limit.
  const v1 = (quota: string) =>
    files({
      "/proc/self/cgroup": "4:cpu,cpuacct:/docker/abc\n",
      "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": quota,
      "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
    });
  assert.equal(cgroupCpus(v1("300000\n")), 3);
  assert.equal(cgroupCpus(v1("-1\n")), undefined);
  assert.equal(cgroupCpus(files({})), undefined, "nothing readable is no limit");
  // The limit counts as the CPUs when lower, rounded down.
  assert.equal(autoWorkers(16, 2), 2);
  assert.equal(autoWorkers(16, 1.5), 0);
  assert.equal(autoWorkers(2, 8), 2);
  assert.equal(autoWorkers(16, cgroupCpus(nested)), 0);
});
