/**
 * Conformance over a large generated index in the official micropython-lib layout (tests/fixtures/conformance_index.ts):
 * every package, latest and every version, `.mpy` and `.py`, is installed by the real MicroPython mip once straight
 * from a static server and once through mipserver, and the installed trees must be the same, byte for byte; then the
 * static server stops and every install through mipserver must still give the same trees, from the cache.
 *
 * mip runs many installs per MicroPython process (a script calling `mip.install` in a loop), a few processes at once.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { buildConformanceIndex, type ConformancePackage } from "../fixtures/conformance_index.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { tempDir } from "../helpers.ts";
import { micropythonPath, runTool, serveApp } from "./tools.ts";

/** One mip install: where, what, which version (null: latest), `.mpy` or `.py`. */
interface Job {
  target: string;
  name: string;
  version: string | null;
  mpy: boolean;
}

const BATCH = 160;
const PARALLEL = 2;

/** The installs for every package: latest as .mpy and .py, every version as .mpy, the oldest as .py. */
function jobsFor(packages: ConformancePackage[]): Omit<Job, "target">[] {
  const jobs: Omit<Job, "target">[] = [];
  for (const p of packages) {
    jobs.push({ name: p.name, version: null, mpy: true }, { name: p.name, version: null, mpy: false });
    for (const v of p.versions) jobs.push({ name: p.name, version: v, mpy: true });
    if (p.versions.length > 0) jobs.push({ name: p.name, version: p.versions[0], mpy: false });
  }
  return jobs;
}

// mip reports failure by printing (this release prints "Package may be partially installed" and returns; older ones
// raise): a job succeeded when its output says "Done" and nothing failed.
const SCRIPT = `
import sys, json, mip
spec = json.load(open(sys.argv[1]))
for i, job in enumerate(spec["jobs"]):
    print("BEGIN", i)
    try:
        mip.install(job["name"], index=spec["index"], target=job["target"], version=job["version"], mpy=job["mpy"])
    except Exception as e:
        print("FAILED", repr(e))
print("BEGIN end")
`;

/** Runs every job against `index` with the real mip; returns, per job, whether mip said it succeeded. */
async function installAll(
  index: string,
  jobs: Omit<Job, "target">[],
  root: string,
): Promise<Job[] & { ok: boolean[] }> {
  const work = tempDir("mip-conformance-run-");
  const script = join(work, "batch.py");
  Deno.writeTextFileSync(script, SCRIPT);
  const full: Job[] = jobs.map((j, i) => ({ ...j, target: join(root, String(i)) }));
  const ok = new Array<boolean>(full.length).fill(false);
  const batches: number[] = [];
  for (let start = 0; start < full.length; start += BATCH) batches.push(start);
  const runBatch = async (start: number) => {
    const slice = full.slice(start, start + BATCH);
    const spec = join(work, `jobs-${start}.json`);
    Deno.writeTextFileSync(spec, JSON.stringify({ index, jobs: slice }));
    const r = await runTool(micropythonPath(), [script, spec], { cwd: work, env: { HOME: work } });
    const parts = r.stdout.split(/^BEGIN /m).slice(1);
    for (const part of parts) {
      const m = /^(\d+)\n/.exec(part);
      if (!m) continue;
      ok[start + Number(m[1])] = /^Done$/m.test(part) &&
        !/Package not found|Error \d+ requesting|File not found|partially installed|^FAILED/m.test(part);
    }
    if (r.code !== 0) throw new Error(`micropython exited ${r.code}:\n${r.stdout.slice(-2000)}\n${r.stderr}`);
  };
  const queue = [...batches];
  await Promise.all(Array.from({ length: PARALLEL }, async () => {
    while (queue.length > 0) await runBatch(queue.shift()!);
  }));
  Deno.removeSync(work, { recursive: true });
  return Object.assign(full, { ok });
}

/** Every file below `dir` with its bytes, by relative path; empty when `dir` does not exist. */
function tree(dir: string, prefix = "", out = new Map<string, Uint8Array>()): Map<string, Uint8Array> {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(join(dir, prefix))];
  } catch {
    return out;
  }
  for (const e of entries) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory) tree(dir, rel, out);
    else out.set(rel, Deno.readFileSync(join(dir, rel)));
  }
  return out;
}

function sameTree(a: Map<string, Uint8Array>, b: Map<string, Uint8Array>): boolean {
  if (a.size !== b.size) return false;
  for (const [path, bytes] of a) {
    const other = b.get(path);
    if (!other || other.length !== bytes.length || !other.every((x, i) => x === bytes[i])) return false;
  }
  return true;
}

const describe = (j: Job) => `${JSON.stringify(j.name)}@${j.version ?? "latest"} (${j.mpy ? "mpy" : "py"})`;

/** The jobs whose install through mipserver failed or differs from the direct one. */
function differences(direct: Job[] & { ok: boolean[] }, through: Job[] & { ok: boolean[] }): string[] {
  const out: string[] = [];
  for (let i = 0; i < direct.length; i++) {
    if (!through.ok[i]) {
      out.push(`${describe(direct[i])}: install failed`);
      continue;
    }
    const [want, got] = [tree(direct[i].target), tree(through[i].target)];
    if (!sameTree(want, got)) {
      out.push(`${describe(direct[i])}: installed tree differs: [${[...want.keys()]}] vs [${[...got.keys()]}]`);
    }
  }
  return out;
}

/** Lines saying how many installs differ and which (the first 40, then the distinct package names). */
function report(what: string, diffs: string[], total: number): string[] {
  if (diffs.length === 0) return [];
  const names = [...new Set(diffs.map((d) => /^("(?:[^"\\]|\\.)*")@/.exec(d)?.[1]))];
  return [
    `${diffs.length} of ${total} installs ${what}, of ${names.length} packages:`,
    ...diffs.slice(0, 40),
    ...(diffs.length > 40 ? [`... and ${diffs.length - 40} more; packages: ${names.join(" ")}`] : []),
  ];
}

Deno.test("conformance: every package of a large official-layout index installs through mipserver exactly as directly, then from the cache", async () => {
  const idx = await buildConformanceIndex(Number(Deno.env.get("MIPSERVER_CONFORMANCE_PACKAGES") ?? 320));
  const jobs = jobsFor(idx.packages);
  const statics = new FakeUpstream(idx.root).start();
  // Thousands of small files: removed at the end, so later tests do not wait behind their writeback.
  const dirs = [idx.root, tempDir("mip-conformance-cache-"), tempDir("mip-direct-"), tempDir("mip-through-")];
  dirs.push(tempDir("mip-cached-"));
  const { app, base, stop } = await serveApp({
    cache: { dir: dirs[1] },
    upstreams: { index: statics.url, retries: 0 },
  });
  try {
    const direct = await installAll(statics.url, jobs, dirs[2]);
    const failedDirect = direct.filter((_, i) => !direct.ok[i]).map(describe);
    assert.deepEqual(failedDirect, [], "the fixture itself must install straight from the static server");
    for (const [i, job] of direct.entries()) {
      assert.ok(tree(job.target).size > 0, `${describe(job)} installed nothing directly (#${i})`);
    }

    const staticIndex = JSON.parse(Deno.readTextFileSync(join(idx.root, "index.json")));
    const res = await fetch(`${base}/index.json`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), staticIndex, "/index.json lists exactly what the upstream index lists");

    const through = await installAll(base, jobs, dirs[3]);
    const diffs = differences(direct, through);

    await app.idle();
    await statics.stop();
    const cached = await installAll(base, jobs, dirs[4]);
    const cachedDiffs = differences(direct, cached);

    const failed = [...report("differ through mipserver", diffs, jobs.length)];
    failed.push(...report("differ from the cache with the static server stopped", cachedDiffs, jobs.length));
    assert.ok(diffs.length === 0 && cachedDiffs.length === 0, failed.join("\n"));
  } finally {
    await stop();
    await statics.stop();
    for (const dir of dirs) Deno.removeSync(dir, { recursive: true });
  }
});
