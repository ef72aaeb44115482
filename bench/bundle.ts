/**
 * Export and import figures: builds a cache of SIZE_MB (default 200) MiB of incompressible files in the layout the
 * index proxy writes (PACKAGES packages of FILES files each), then runs `mipserver export` and `mipserver import` as
 * separate processes, timing each and sampling its peak resident memory (VmHWM) from /proc, next to an idle server's.
 * Then serves the imported cache and times offline answers: an imported manifest, and misses (what no bundle holds)
 * against an upstream that refuses connections and one that accepts them and never answers (connect timeout 2 s).
 *
 *   deno run -A --frozen bench/bundle.ts
 *
 * Environment: SIZE_MB (default 200), PACKAGES (default 200), KEEP=1 keeps the folders (printed).
 */
import { join } from "node:path";
import { stringify } from "yaml";
import { sha256Hex } from "../src/store/hash.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const SIZE_MB = Number(Deno.env.get("SIZE_MB") ?? 200);
const PACKAGES = Number(Deno.env.get("PACKAGES") ?? 200);
const FILES = 10;
const INDEX = "http://127.0.0.1:9/pi/v2"; // nothing listens there: export and import never need upstream
const enc = new TextEncoder();

/** Writes a cache of about SIZE_MB MiB under `dir`, as warmed from INDEX. */
async function buildCache(dir: string): Promise<number> {
  const id = (await sha256Hex(enc.encode(INDEX))).slice(0, 16);
  const fileSize = Math.floor((SIZE_MB * 1048576) / (PACKAGES * FILES));
  const index = [];
  let total = 0;
  for (let p = 0; p < PACKAGES; p++) {
    const name = `pkg${String(p).padStart(4, "0")}`;
    const hashes: [string, string][] = [];
    for (let f = 0; f < FILES; f++) {
      const bytes = new Uint8Array(fileSize);
      for (let off = 0; off < bytes.length; off += 65536) crypto.getRandomValues(bytes.subarray(off, off + 65536));
      const h = (await sha256Hex(bytes)).slice(0, 8);
      await Deno.mkdir(join(dir, "files", h.slice(0, 2)), { recursive: true });
      await Deno.writeFile(join(dir, "files", h.slice(0, 2), h), bytes);
      hashes.push([`${name}/m${f}.mpy`, h]);
      total += bytes.length;
    }
    const manifest = JSON.stringify({ v: 1, hashes, version: "1.0" });
    const pkgDir = join(dir, "index", id, "package", "6", name);
    await Deno.mkdir(pkgDir, { recursive: true });
    await Deno.writeTextFile(join(pkgDir, "latest.json"), manifest);
    await Deno.writeTextFile(join(pkgDir, "1.0.json"), manifest);
    index.push({ name, version: "1.0", description: "bench", author: "", license: "", versions: { "6": ["1.0"] } });
  }
  await Deno.writeTextFile(join(dir, "index", id, "index.json"), JSON.stringify({ v: 2, updated: 0, packages: index }));
  return total;
}

function config(cacheDir: string, port = 18891, upstreams: Record<string, unknown> = { index: INDEX }): string {
  const path = join(Deno.makeTempDirSync({ prefix: "mipserver-bench-config-" }), "config.yaml");
  Deno.writeTextFileSync(
    path,
    stringify({
      server: { port, workers: 0 },
      cache: { dir: cacheDir },
      upstreams: { retries: 0, ...upstreams },
      log: { level: "warn" },
    }),
  );
  return path;
}

function peakKiB(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    return Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** Runs `deno run src/main.ts ARGS` and returns its exit code, seconds and peak RSS (MiB). */
async function measure(args: string[]): Promise<{ code: number; seconds: number; peakMiB: number; out: string }> {
  const started = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--frozen", join(ROOT, "src/main.ts"), ...args],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let peak = 0;
  const timer = setInterval(() => (peak = Math.max(peak, peakKiB(child.pid))), 20);
  const out = await child.output();
  clearInterval(timer);
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { code: out.code, seconds: (performance.now() - started) / 1000, peakMiB: peak / 1024, out: text.trim() };
}

/** Starts a server (workers: 0) on `cacheDir`, waits until it answers /healthz, runs `work` and stops it. */
async function withServer<T>(
  cacheDir: string,
  upstreams: Record<string, unknown> | undefined,
  work: (base: string, pid: number) => Promise<T>,
): Promise<T> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--frozen",
      join(ROOT, "src/main.ts"),
      "--config",
      config(cacheDir, port, upstreams),
      "--host",
      "127.0.0.1",
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    for (let i = 0; i < 300; i++) {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/healthz`);
        await res.body?.cancel();
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    return await work(`http://127.0.0.1:${port}`, child.pid);
  } finally {
    child.kill("SIGTERM");
    await child.status;
  }
}

/** The resident memory of an idle server (workers: 0) on the same cache, a second after it answers /healthz. */
function idleMiB(cacheDir: string): Promise<number> {
  return withServer(cacheDir, undefined, async (_base, pid) => {
    await new Promise((r) => setTimeout(r, 1000));
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
  });
}

/** Status and milliseconds of GET `path` on `base`. */
async function timed(base: string, path: string): Promise<string> {
  const started = performance.now();
  const res = await fetch(`${base}${path}`);
  await res.arrayBuffer();
  return `${res.status} in ${(performance.now() - started).toFixed(0)} ms`;
}

/**
 * How soon a server on the imported cache `ship` answers offline: an imported manifest, then misses one after the
 * other, with `upstream` as every upstream (connect timeout 2 s). The first miss finds upstream unreachable; later
 * ones wait at most the imported layer's deadline (DOWN_DEADLINE_MS) for it.
 */
function offlineAnswers(ship: string, upstream: string): Promise<string[]> {
  const upstreams = { index: `${upstream}/pi/v2`, github: upstream, gitlab: upstream, connect_timeout: "2s" };
  return withServer(ship, upstreams, async (base) => {
    const out = [`imported manifest ${await timed(base, "/package/6/pkg0000/latest.json")}`];
    for (let i = 1; i <= 3; i++) out.push(`miss ${i} ${await timed(base, `/package/6/nosuch${i}/latest.json`)}`);
    return out;
  });
}

const work = Deno.makeTempDirSync({ prefix: "mipserver-bench-bundle-" });
const office = join(work, "office");
const ship = join(work, "ship");
const bundle = join(work, "fleet.tar.gz");
console.log(`building a ${SIZE_MB} MiB cache (${PACKAGES} packages x ${FILES} files) in ${office} ...`);
const bytes = await buildCache(office);
const idle = await idleMiB(office);
const exp = await measure(["export", "--config", config(office), "--output", bundle]);
if (exp.code !== 0) throw new Error(`export failed: ${exp.out}`);
const imp = await measure(["import", "--config", config(ship), bundle]);
if (imp.code !== 0) throw new Error(`import failed: ${imp.out}`);
const bundleMiB = Deno.statSync(bundle).size / 1048576;
const rev = new TextDecoder().decode(
  (await new Deno.Command("git", { args: ["-C", ROOT, "rev-parse", "--short", "HEAD"], stdout: "piped" }).output())
    .stdout,
).trim();
console.log(
  `mipserver ${rev}, ${navigator.hardwareConcurrency} cores; cache ${(bytes / 1048576).toFixed(0)} MiB in ${
    PACKAGES * FILES
  } files; bundle ${bundleMiB.toFixed(1)} MiB`,
);
console.log("| step   | seconds | peak RSS (MiB) | above idle server (MiB) |");
console.log("|--------|---------|----------------|-------------------------|");
console.log(`| idle   |       - | ${idle.toFixed(1).padStart(14)} |                       - |`);
for (const [name, r] of [["export", exp], ["import", imp]] as const) {
  console.log(
    `| ${name} | ${r.seconds.toFixed(1).padStart(7)} | ${r.peakMiB.toFixed(1).padStart(14)} | ${
      (r.peakMiB - idle).toFixed(1).padStart(23)
    } |`,
  );
}
// Upstream gone: a port nothing listens on (refused at once), and a listener that is never accepted from (the
// kernel completes the handshake; no answer ever comes).
const sink = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const refused = await offlineAnswers(ship, "http://127.0.0.1:9");
const swallowed = await offlineAnswers(ship, `http://127.0.0.1:${(sink.addr as Deno.NetAddr).port}`);
sink.close();
console.log(`offline answers, upstream refusing:  ${refused.join(", ")}`);
console.log(`offline answers, upstream swallowing: ${swallowed.join(", ")}`);
if (Deno.env.get("KEEP") !== "1") await Deno.remove(work, { recursive: true });
else console.log(`kept ${work}`);
