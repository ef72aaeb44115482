/**
 * Compile figures: cold compile latency per source size (mpy-cross run directly, side by side with a cold
 * `/package/6/...` request that compiles through mipserver), and cached-compile requests per second with wrk.
 *
 *   deno run -A --frozen bench/compile.ts            (needs `make install`; wrk for the requests-per-second part)
 *
 * Environment: DURATION (wrk seconds, default 10), CONNECTIONS (default 64), RUNS (cold samples, default 5).
 */
import { join } from "node:path";
import { createApp } from "../src/app.ts";
import { configSchema } from "../src/config/schema.ts";
import { MpyCross } from "../src/compile/mpy_cross.ts";
import { createLogger } from "../src/log.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const MPY_CROSS = Deno.env.get("MIPSERVER_TEST_MPY_CROSS") ?? join(ROOT, ".tools/venv/bin/mpy-cross");
const DURATION = Number(Deno.env.get("DURATION") ?? 10);
const CONNECTIONS = Number(Deno.env.get("CONNECTIONS") ?? 64);
const RUNS = Number(Deno.env.get("RUNS") ?? 5);
const SIZES = [1_000, 10_000, 50_000, 200_000];

/** Python source of about `bytes` bytes: many small functions, as real modules are. */
function source(bytes: number, salt: number): string {
  const parts = [`# salt ${salt}\n`];
  let size = parts[0].length;
  for (let i = 0; size < bytes; i++) {
    const f =
      `def f${i}(x, y=${i}):\n    if x > y:\n        return [x * ${i}, y, "s${i}"]\n    return {"k": x + ${i}}\n\n\n`;
    parts.push(f);
    size += f.length;
  }
  return parts.join("");
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const dir = Deno.makeTempDirSync({ prefix: "mipserver-bench-compile-" });
const packages: Record<string, { source: string }> = {};
for (const size of SIZES) {
  for (let run = 0; run < RUNS; run++) {
    const pkg = join(dir, "pkgs", `s${size}r${run}`);
    Deno.mkdirSync(pkg, { recursive: true });
    Deno.writeTextFileSync(join(pkg, `mod${size}.py`), source(size, run));
    packages[`s${size}r${run}`] = { source: `local:${pkg}` };
  }
}
const config = configSchema.parse({
  cache: { dir: join(dir, "cache") },
  upstreams: { index: "http://127.0.0.1:9/none", retries: 0 },
  packages,
  mpy_cross: { path: MPY_CROSS },
  log: { level: "error" },
});
const app = await createApp({ config, logger: createLogger({ level: "error", format: "text" }) });
const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (r, i) => app.handler(r, i));
const base = `http://127.0.0.1:${server.addr.port}`;
const tool = new MpyCross({ path: MPY_CROSS, timeout: 60_000, concurrency: 1 });
const version = await tool.version();

console.log(`mpy-cross: ${version.text}`);
console.log(`\nCold compile latency, median of ${RUNS} (ms)`);
console.log("source size | mpy-cross alone | mipserver cold /package/6 | mipserver /package/py (no compile)");
for (const size of SIZES) {
  const direct: number[] = [];
  const viaServer: number[] = [];
  const noCompile: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const bytes = new TextEncoder().encode(source(size, 1000 + run));
    let t0 = performance.now();
    await tool.compile(bytes, `mod${size}.py`, []);
    direct.push(performance.now() - t0);
    t0 = performance.now();
    await (await fetch(`${base}/package/py/s${size}r${run}/latest.json`)).arrayBuffer();
    noCompile.push(performance.now() - t0);
    t0 = performance.now();
    const res = await fetch(`${base}/package/6/s${size}r${run}/latest.json`);
    await res.arrayBuffer();
    viaServer.push(performance.now() - t0);
  }
  console.log(
    `${String(size).padStart(11)} | ${median(direct).toFixed(1).padStart(15)} | ${
      median(viaServer).toFixed(1).padStart(25)
    } | ${median(noCompile).toFixed(1).padStart(8)}`,
  );
}

const manifest = await (await fetch(`${base}/package/6/s10000r0/latest.json`)).json();
const [, hash] = manifest.hashes[0];
const hasWrk = await new Deno.Command("sh", { args: ["-c", "command -v wrk"], stdout: "null" }).output();
console.log(`\nCached compiled requests per second (wrk, ${CONNECTIONS} connections, ${DURATION}s)`);
if (hasWrk.code !== 0) {
  console.log("wrk not found (apt-get install wrk): skipped");
} else {
  console.log("path | requests/s | p50 | p99");
  for (const path of ["/package/6/s10000r0/latest.json", `/file/${hash.slice(0, 2)}/${hash}`]) {
    const out = await new Deno.Command("wrk", {
      args: ["-t2", `-c${CONNECTIONS}`, `-d${DURATION}s`, "--latency", `${base}${path}`],
      stdout: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    const rps = /Requests\/sec:\s+([\d.]+)/.exec(text)?.[1] ?? "?";
    const p50 = /50%\s+(\S+)/.exec(text)?.[1] ?? "?";
    const p99 = /99%\s+(\S+)/.exec(text)?.[1] ?? "?";
    console.log(`${path} | ${rps} | ${p50} | ${p99}`);
  }
  console.log(`compiler runs during the wrk phase: none expected (total runs: ${app.compiler.runs})`);
}
await server.shutdown();
await app.idle();
Deno.removeSync(dir, { recursive: true });
