/**
 * End to end, replicas on one bucket as a central site runs them: a real SeaweedFS, three mipserver processes
 * (`deno run src/main.ts --config ...`, credentials in the environment, each with its own cache.dir as local tier) and a
 * real nginx in front that spreads requests round robin over them and tries another replica when one fails
 * (`proxy_next_upstream error timeout http_502 http_503`). One set-up, five cases in order: each object fetched once
 * between them under concurrent load; real mip installs through nginx byte-identical to a single box's, a compiled
 * profile included; a replica killed with SIGKILL in the middle of a slow fill; a purge on one replica seen by the
 * others; S3 stopped and started again. A missing weed, nginx, mpy-cross or micropython fails the test.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { parseMpyHeader } from "../../src/compile/mpy_header.ts";
import { S3Client } from "../../src/store/s3/client.ts";
import { S3Store } from "../../src/store/s3/mod.ts";
import { sha256Hex } from "../../src/store/hash.ts";
import { fileKey } from "../../src/store/keys.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { bigModule, buildIndex, type FixturePackage, STANDARD_PACKAGES } from "../fixtures/index_fixture.ts";
import { buildGithub } from "../fixtures/repo_fixture.ts";
import { type Seaweed, startSeaweed } from "../fixtures/seaweed.ts";
import { filesBelow, freePort, tempDir } from "../helpers.ts";
import { micropythonPath, mipInstall, mpyCrossPath, runIn, runTool, serveApp, type ServedApp } from "./tools.ts";

const MAIN = new URL("../../src/main.ts", import.meta.url).pathname;
const ROOT = new URL("../../", import.meta.url).pathname;
const DENO_FLAGS = ["--allow-net", "--allow-read", "--allow-write", "--allow-env", "--allow-run", "--allow-sys"];
const NGINX = existsSync("/usr/sbin/nginx") ? "/usr/sbin/nginx" : "nginx";
/** The compile profile the installs go through (`/t/x64/...`): the unix port runs x64 code. */
const PROFILE = "x64";
/** How long a fill lease lasts unrenewed (cache.s3.lease_ttl, shorter than its 30 s default to keep the test short). */
const LEASE_TTL_MS = 10_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Five packages of three files each: with their manifests, the 20 objects of the load case. */
const SPREAD: FixturePackage[] = Array.from({ length: 5 }, (_, i) => ({
  name: `spread${i}`,
  description: "replicas fixture",
  versions: [{
    version: "1.0",
    files: {
      [`spread${i}/__init__.py`]: `# spread${i}\nfrom .a import A\nfrom .b import B\n`,
      [`spread${i}/a.py`]: `A = "spread${i} a"\n`,
      [`spread${i}/b.py`]: `B = ${i * 1000 + 7}\n`,
    },
  }],
}));
/** Named packages from the fixture GitHub: built and compiled by the server (for the profile too), once. */
const NAMED = { sensorkit: { source: "github:acme/sensorkit" }, fastmath: { source: "github:acme/fastmath" } };
/** The object whose fill is slow when a replica is killed. */
const SLOW: FixturePackage = {
  name: "slowpkg",
  description: "a file worth trickling",
  versions: [{ version: "1.0", files: { "slowpkg.py": bigModule(60_000) } }],
};

// ---------------------------------------------------------------------------------------------------------------
// Processes: each started through a small shell that waits for it (so its exit is seen at once, as the shell's) and
// stops it when our end of the shell's stdin closes, so nothing outlives the test process however that ends. Stopped
// by its own PID in the test's finally. (Deno does not let a test read /proc/<pid>/ without --allow-all, so the shell
// reports the process's end rather than /proc.)

const GUARD = `
exec 3<&0 </dev/null
"$0" "$@" >>"$GUARD_LOG" 2>&1 &
w=$!
echo "$w" >"$GUARD_PID"
(while read -r _ <&3; do :; done; kill -TERM "$w" 2>/dev/null) &
r=$!
exec 3<&-
wait "$w"
s=$?
kill "$r" 2>/dev/null
exit "$s"
`;

/** A process run under {@linkcode GUARD}. */
class Guarded {
  #shell: Deno.ChildProcess;
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #exited = false;
  private constructor(readonly pid: number, readonly log: string, shell: Deno.ChildProcess) {
    this.#shell = shell;
    this.#stdin = shell.stdin.getWriter();
    shell.status.then(() => this.#exited = true);
  }

  static async start(cmd: string, args: string[], env: Record<string, string>, log: string): Promise<Guarded> {
    const pidFile = `${log}.pid`;
    const shell = new Deno.Command("sh", {
      args: ["-c", GUARD, cmd, ...args],
      env: { ...env, GUARD_LOG: log, GUARD_PID: pidFile },
      cwd: ROOT,
      stdin: "piped",
      stdout: "null",
      stderr: "null",
    }).spawn();
    for (let i = 0; i < 400; i++) {
      const text = await Deno.readTextFile(pidFile).catch(() => "");
      if (text.endsWith("\n")) return new Guarded(Number(text.trim()), log, shell);
      await sleep(25);
    }
    shell.kill("SIGKILL");
    await shell.status;
    throw new Error(`${cmd} did not start`);
  }

  /** Whether the process is still running. */
  get running(): boolean {
    return !this.#exited;
  }

  /** The last lines the process wrote. */
  tail(lines = 30): string {
    try {
      return Deno.readTextFileSync(this.log).trimEnd().split("\n").slice(-lines).join("\n");
    } catch {
      return "(no output)";
    }
  }

  /** Sends `signal` to the process, waits until it is gone (SIGKILL after 10 s) and for its shell. */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<void> {
    if (this.#exited) return;
    const kill = (sig: Deno.Signal) => {
      try {
        if (!this.#exited) Deno.kill(this.pid, sig);
      } catch {
        // gone already
      }
    };
    kill(signal);
    const killer = setTimeout(() => kill("SIGKILL"), 10_000);
    await this.#shell.status;
    clearTimeout(killer);
    await this.#stdin.close().catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The replicas and nginx.

interface Replica {
  name: string;
  port: number;
  base: string;
  config: string;
  /** Its local tier (cache.dir). */
  cacheDir: string;
  process: Guarded;
}

function s3Env(s3: Seaweed): Record<string, string> {
  return { AWS_ACCESS_KEY_ID: s3.accessKey, AWS_SECRET_ACCESS_KEY: s3.secretKey, NO_COLOR: "1" };
}

/** Writes a replica's configuration: the shared bucket, its own port and cache folder, the fixture upstream. */
function writeReplicaConfig(dir: string, port: number, s3: Seaweed, index: string, github: string): string {
  const config = join(dir, "config.yaml");
  Deno.writeTextFileSync(
    config,
    [
      `server: {host: 127.0.0.1, port: ${port}, workers: 0}`,
      `cache: {dir: ./cache, store: s3, s3: {endpoint: "${s3.endpoint}", region: ${s3.region}, bucket: ${s3.bucket},` +
      ` prefix: "", path_style: true, lease_ttl: ${LEASE_TTL_MS / 1000}s}}`,
      `upstreams: {index: "${index}", github: "${github}", retries: 0}`,
      `packages: ${JSON.stringify(NAMED)}`,
      `targets: {${PROFILE}: {march: ${PROFILE}}}`,
      `mpy_cross: {path: "${mpyCrossPath()}"}`,
      `audit: {enabled: false}`,
      `log: {level: info}`,
      "",
    ].join("\n"),
  );
  return config;
}

async function startReplica(name: string, dir: string, port: number, config: string, s3: Seaweed): Promise<Replica> {
  const process = await Guarded.start(
    Deno.execPath(),
    ["run", ...DENO_FLAGS, "--frozen", MAIN, "--config", config],
    s3Env(s3),
    join(dir, `${name}.${Date.now()}.log`),
  );
  const replica = { name, port, base: `http://127.0.0.1:${port}`, config, cacheDir: join(dir, "cache"), process };
  try {
    await waitUp(replica.base, () => process.running, () => process.tail());
  } catch (e) {
    await process.stop();
    throw e;
  }
  return replica;
}

/** Waits until `base`/healthz answers (up to 90 s: three replicas start at once on a small machine). */
async function waitUp(base: string, running: () => boolean, tail: () => string): Promise<void> {
  const deadline = Date.now() + 90_000;
  while (true) {
    try {
      const res = await fetch(`${base}/healthz`);
      await res.body?.cancel();
      return;
    } catch {
      if (!running()) {
        await sleep(200); // what it wrote last reaches its log
        throw new Error(`${base} exited at start:\n${tail()}`);
      }
      if (Date.now() > deadline) throw new Error(`${base} did not answer within 90 s:\n${tail()}`);
      await sleep(100);
    }
  }
}

/** nginx round robin over the replicas; a replica that fails or answers 502/503 has the request tried on another. */
function nginxConfig(dir: string, port: number, replicas: number[]): string {
  return `pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log;
daemon off;
worker_processes 1;
events { worker_connections 1024; }
http {
  log_format replicas '$request_uri $status $upstream_addr';
  access_log ${dir}/nginx-access.log replicas;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  upstream replicas {
${replicas.map((p) => `    server 127.0.0.1:${p} max_fails=0;`).join("\n")}
    keepalive 16;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_next_upstream error timeout http_502 http_503;
      proxy_next_upstream_tries 3;
      proxy_connect_timeout 2s;
      # A fill waits out a dead replica's lease (cache.s3.lease_ttl) before it takes it over.
      proxy_read_timeout 120s;
    }
  }
}
`;
}

// ---------------------------------------------------------------------------------------------------------------
// Reading answers and figures.

interface Answer {
  status: number;
  body: Uint8Array;
}

async function get(url: string, client?: Deno.HttpClient): Promise<Answer> {
  const res = await fetch(url, client ? { client } : {});
  return { status: res.status, body: new Uint8Array(await res.arrayBuffer()) };
}

const text = (a: Answer) => new TextDecoder().decode(a.body);

interface StoreFacts {
  store: string;
  shared: { reachable: boolean; errors: number; refused: number; eventsApplied: number };
  leases: { taken: number; waited: number; served: number; takenOver: number; lost: number; gaveUp: number };
}

async function facts(r: Replica): Promise<StoreFacts> {
  const res = await fetch(`${r.base}/healthz`);
  return (await res.json()).cache as StoreFacts;
}

/** The sum of a counter's samples in a replica's /metrics whose labels include `labels`. */
async function metric(base: string, name: string, labels = ""): Promise<number> {
  const body = await (await fetch(`${base}/metrics`)).text();
  let sum = 0;
  for (const line of body.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (labels && !line.includes(labels)) continue;
    sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

/** Polls `check` every 200 ms until it is true or `ms` have passed; returns its last answer. */
async function until(ms: number, check: () => Promise<boolean> | boolean): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (true) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await sleep(200);
  }
}

/** A deterministic shuffle (so a failure can be replayed). */
function shuffled<T>(items: T[], seed = 7): T[] {
  const out = [...items];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) % 2147483648;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/** Whether a replica's local tier (its cache.dir on disk) holds the content file named `hash`. */
function localFile(r: Replica, hash: string): boolean {
  return existsSync(join(r.cacheDir, fileKey(hash)));
}

/** Every file of an install folder with its bytes. */
function installed(dir: string): Map<string, Uint8Array> {
  return new Map(filesBelow(dir).map((f) => [f, Deno.readFileSync(join(dir, f))]));
}

// ---------------------------------------------------------------------------------------------------------------

Deno.test({
  name: "3 replicas behind nginx on one SeaweedFS bucket: one fetch per object, mip installs, SIGKILL, purge, S3 down",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    micropythonPath(); // a missing tool fails here, before anything starts
    const idx = await buildIndex([...STANDARD_PACKAGES, ...SPREAD, SLOW]);
    const up = new FakeUpstream(idx.root).start();
    const github = new FakeUpstream(buildGithub(), "").start();
    const work = tempDir("mipserver-replicas-");
    Deno.chmodSync(work, 0o755); // nginx workers run unprivileged when the master runs as root
    let s3: Seaweed | undefined;
    const replicas: Replica[] = [];
    let nginx: Guarded | undefined;
    let direct: ServedApp | undefined;
    const weedLog = () => {
      try {
        return Deno.readTextFileSync(join(s3!.dir, "weed.log")).trimEnd().split("\n").slice(-30).join("\n");
      } catch {
        return "(none)";
      }
    };
    const diagnostics = () =>
      [
        ...replicas.map((r) => `--- ${r.name} (${r.base}):\n${r.process.tail()}`),
        `--- nginx:\n${nginx?.tail() ?? ""}`,
        `--- weed:\n${weedLog()}`,
        `--- upstream counts: ${JSON.stringify([...up.counts])}`,
      ].join("\n");
    try {
      s3 = await startSeaweed();
      const ports = [freePort(), freePort(), freePort()];
      const configs = ports.map((port, i) => {
        const dir = join(work, `r${i}`);
        Deno.mkdirSync(dir);
        return writeReplicaConfig(dir, port, s3!, up.url, github.url);
      });
      // Started at once; those that came up are stopped in the finally even when another did not.
      const started = await Promise.allSettled(
        ports.map((port, i) => startReplica(`r${i}`, join(work, `r${i}`), port, configs[i], s3!)),
      );
      for (const r of started) if (r.status === "fulfilled") replicas.push(r.value);
      const failed = started.find((r) => r.status === "rejected");
      if (failed) {
        console.error(`--- weed:\n${weedLog()}`);
        throw failed.reason;
      }
      for (const r of replicas) assert.equal((await facts(r)).store, "s3", `${r.name} runs on the shared store`);
      const nginxPort = freePort();
      Deno.writeTextFileSync(join(work, "nginx.conf"), nginxConfig(work, nginxPort, ports));
      const check = await runTool(NGINX, ["-t", "-c", join(work, "nginx.conf")]);
      assert.equal(check.code, 0, check.stderr);
      nginx = await Guarded.start(NGINX, ["-c", join(work, "nginx.conf")], {}, join(work, "nginx.out"));
      const front = `http://127.0.0.1:${nginxPort}`;
      await waitUp(front, () => nginx!.running, () => nginx!.tail());
      const fixtureManifest = (mpy: string, name: string) =>
        Deno.readFileSync(join(idx.root, "package", mpy, name, "latest.json"));
      const filePath = (h: string) => `/file/${h.slice(0, 2)}/${h}`;
      const filesOf = (name: string) => [...idx.hashes].filter(([k]) => k.startsWith(`6/${name}/`)).map(([, h]) => h);

      const steps: [string, () => Promise<void>][] = [];
      const step = (name: string, fn: () => Promise<void>) => steps.push([name, fn]);

      step(
        "120 requests over 20 objects from 30 clients through nginx: 20 upstream fetches, every body right",
        async () => {
          const objects = SPREAD.flatMap((p) => [
            { path: `/package/6/${p.name}/latest.json`, bytes: fixtureManifest("6", p.name) },
            ...filesOf(p.name).map((h) => ({ path: filePath(h), bytes: idx.files.get(h)! })),
          ]);
          assert.equal(objects.length, 20);
          assert.equal(new Set(objects.map((o) => o.path)).size, 20, "20 different objects");
          const queue = shuffled(objects.flatMap((o) => Array(6).fill(o) as (typeof o)[]));
          assert.equal(queue.length, 120);
          up.delay = 300; // fills overlap, so requests for one object reach several replicas while it is being filled
          const before = new Map(up.counts);
          const answers: { path: string; ok: boolean; detail: string }[] = [];
          await Promise.all(Array.from({ length: 30 }, async () => {
            const client = Deno.createHttpClient({}); // each client its own connections
            try {
              for (let o = queue.shift(); o; o = queue.shift()) {
                const a = await get(`${front}${o.path}`, client);
                const ok = a.status === 200 && a.body.length === o.bytes.length &&
                  a.body.every((b, i) => b === o.bytes[i]);
                answers.push({ path: o.path, ok, detail: `${a.status} ${a.body.length} B` });
              }
            } finally {
              client.close();
            }
          }));
          up.delay = 0;
          assert.equal(answers.length, 120);
          const wrong = answers.filter((a) => !a.ok);
          assert.deepEqual(wrong, [], "every answer is 200 with the fixture's bytes");
          for (const o of objects) {
            assert.equal((up.counts.get(o.path) ?? 0) - (before.get(o.path) ?? 0), 1, `${o.path} fetched once`);
          }
          const fetched = [...up.counts].reduce((n, [p, c]) => n + c - (before.get(p) ?? 0), 0);
          assert.equal(fetched, 20, `upstream saw 20 requests in all: ${JSON.stringify([...up.counts])}`);
          // Round robin really spread them: every replica answered some, and objects were answered by several.
          const log = Deno.readTextFileSync(join(work, "nginx-access.log")).trim().split("\n").map((l) => l.split(" "));
          const byObject = new Map<string, Set<string>>();
          for (const [uri, , addr] of log) {
            if (!objects.some((o) => o.path === uri)) continue;
            byObject.set(uri, (byObject.get(uri) ?? new Set()).add(addr));
          }
          const addrs = new Set([...byObject.values()].flatMap((s) => [...s]));
          assert.equal(addrs.size, 3, `every replica answered: ${[...addrs]}`);
          assert.ok([...byObject.values()].some((s) => s.size > 1), "requests for one object reached several replicas");
        },
      );

      step(
        "real mip through nginx installs what a single box installs, byte for byte, the x64 profile included",
        async () => {
          direct = await serveApp({
            cache: { dir: tempDir("mipserver-single-") },
            upstreams: { index: up.url, github: github.url, retries: 0 },
            packages: NAMED,
            targets: { [PROFILE]: { march: PROFILE } },
            mpy_cross: { path: mpyCrossPath() },
            audit: { enabled: false },
          }, { workers: 0 });
          const compiled = (base: string) => metric(base, "mipserver_compiles_total", 'result="compiled"');
          const compiledBefore = await Promise.all(replicas.map((r) => compiled(r.base)));
          // Index packages as the index has them; named ones built and compiled by the server, for the profile too.
          const installs = [
            ["", ["hello", "mathx", "bigmod", "sensorkit"]],
            [`/t/${PROFILE}`, ["hello", "sensorkit", "fastmath"]],
          ] as const;
          const trees: Map<string, Uint8Array>[] = [];
          for (const [suffix, specs] of installs) {
            const viaNginx = tempDir("mip-nginx-");
            const viaDirect = tempDir("mip-single-");
            for (const spec of specs) {
              await mipInstall(`${front}${suffix}`, viaNginx, spec);
              await mipInstall(`${direct.base}${suffix}`, viaDirect, spec);
            }
            const a = installed(viaNginx);
            const b = installed(viaDirect);
            assert.deepEqual([...a.keys()], [...b.keys()], `the same files (${suffix || "no profile"})`);
            for (const [f, bytes] of a) assert.deepEqual(bytes, b.get(f), `${suffix} ${f}: the same bytes`);
            trees.push(a);
            if (suffix) {
              // The profile's own compile: native code for x64, which the unix port runs.
              assert.equal(parseMpyHeader(a.get("fastmath.mpy")!)?.arch, 2, "x64 native code in fastmath.mpy");
              assert.equal(
                await runIn(viaNginx, "import fastmath; print(fastmath.nsum(10), fastmath.vdouble(21))"),
                "45 42",
              );
            }
            assert.equal(await runIn(viaNginx, "import sensorkit; print(sensorkit.read())"), "(42, 'hello 1.1')");
          }
          assert.ok(trees[0].has("sensorkit/__init__.mpy") && trees[1].has("sensorkit/util.mpy"), "named: .mpy");
          // Compiled once between the replicas: as many compiles as the single box made.
          const compiledAfter = await Promise.all(replicas.map((r) => compiled(r.base)));
          const replicaCompiles = compiledAfter.reduce((n, c, i) => n + c - compiledBefore[i], 0);
          const directCompiles = await compiled(direct.base);
          assert.ok(directCompiles >= 5, `the single box compiled ${directCompiles} files`);
          assert.equal(replicaCompiles, directCompiles, "each file compiled once across the replicas");
        },
      );

      step(
        "a replica killed with SIGKILL in a slow fill: every client answered, at most 2 fetches, bucket whole, lease gone",
        async () => {
          const hash = filesOf("slowpkg")[0];
          const path = filePath(hash);
          const bytes = idx.files.get(hash)!;
          const taken = await Promise.all(replicas.map(async (r) => (await facts(r)).leases.taken));
          up.delay = 1_500; // the first fill is slow: headers after 1.5 s, then the body in 10 pieces 300 ms apart
          up.trickle = 300;
          const clients = Array.from({ length: 9 }, async () => {
            const client = Deno.createHttpClient({});
            try {
              return await get(`${front}${path}`, client);
            } finally {
              client.close();
            }
          });
          assert.ok(await until(20_000, () => (up.counts.get(path) ?? 0) >= 1), "the fill reached upstream");
          const now = await Promise.all(replicas.map(async (r) => (await facts(r)).leases.taken));
          const holders = replicas.filter((_, i) => now[i] > taken[i]);
          assert.equal(holders.length, 1, `one replica holds the fill's lease: ${now} after ${taken}`);
          const [holder] = holders;
          assert.equal(up.counts.get(path), 1, "killed while its fetch runs");
          await holder.process.stop("SIGKILL");
          const client = new S3Client({
            endpoint: s3!.endpoint,
            region: s3!.region,
            bucket: s3!.bucket,
            pathStyle: true,
            accessKeyId: s3!.accessKey,
            secretAccessKey: s3!.secretKey,
          });
          const head = await client.request("HEAD", fileKey(hash), { accept: [404] });
          assert.equal(head.status, 404, "killed in the middle of its fill: nothing stored yet");
          const answers = await Promise.all(clients);
          up.delay = 0;
          up.trickle = 0;
          for (const a of answers) {
            assert.equal(a.status, 200, text(a));
            assert.deepEqual(a.body, bytes, "the right bytes");
          }
          const fetches = up.counts.get(path)!;
          assert.ok(fetches <= 2, `fetched ${fetches} times`);
          // The survivors waited out the dead replica's lease and one of them took it over.
          const survivors = replicas.filter((r) => r !== holder);
          const takenOver = (await Promise.all(survivors.map(facts))).reduce((n, f) => n + f.leases.takenOver, 0);
          assert.equal(takenOver, 1, "one survivor took the expired lease over");
          // Nothing corrupt in the bucket: the object as a store reads it, and every content file, hash to their names.
          const store = new S3Store({
            endpoint: s3!.endpoint,
            region: s3!.region,
            bucket: s3!.bucket,
            prefix: "",
            pathStyle: true,
            accessKeyId: s3!.accessKey,
            secretAccessKey: s3!.secretKey,
          });
          const object = await store.get(fileKey(hash));
          assert.ok(object, "the object is in the bucket");
          assert.ok((await sha256Hex(object.body)).startsWith(hash), "it hashes to its name");
          assert.deepEqual(object.body, bytes);
          await store.close();
          let files = 0;
          for await (const o of client.objects("files/")) {
            const body = (await client.request("GET", o.key)).body;
            assert.ok((await sha256Hex(body)).startsWith(o.key.split("/").at(-1)!), `${o.key} hashes to its name`);
            files++;
          }
          assert.ok(files >= 20, `${files} content files in the bucket`);
          // The lease is gone once its lifetime is over (the survivor that took it over released it).
          const leases = async () => (await client.list("locks/leases/")).objects.map((o) => o.key);
          assert.ok(
            await until(LEASE_TTL_MS + 15_000, async () => (await leases()).length === 0),
            `leases left: ${await leases()}`,
          );
          // The killed replica starts again on its local tier and serves the object from the bucket.
          const i = replicas.indexOf(holder);
          replicas[i] = await startReplica(holder.name, join(work, holder.name), holder.port, holder.config, s3!);
          const again = await get(`${replicas[i].base}${path}`);
          assert.equal(again.status, 200);
          assert.deepEqual(again.body, bytes);
          assert.equal(up.counts.get(path), fetches, "read from the bucket, not fetched again");
        },
      );

      step("a purge on one replica (mipserver purge as a command) is seen by the others within 10 s", async () => {
        const name = "spread1";
        const manifest = `/package/6/${name}/latest.json`;
        const hashes = filesOf(name);
        // Every replica holds the package in its local tier.
        for (const r of replicas) {
          for (const p of [manifest, ...hashes.map(filePath)]) assert.equal((await get(`${r.base}${p}`)).status, 200);
          for (const h of hashes) assert.ok(localFile(r, h), `${r.name} holds ${h} locally`);
        }
        const applied = await Promise.all(replicas.map(async (r) => (await facts(r)).shared.eventsApplied));
        const purge = await runTool(
          Deno.execPath(),
          ["run", ...DENO_FLAGS, "--frozen", MAIN, "purge", "--config", replicas[0].config, name],
          { cwd: ROOT, env: s3Env(s3!) },
        );
        assert.equal(purge.code, 0, purge.stdout + purge.stderr);
        assert.match(purge.stdout, new RegExp(`Purged ${name}: 1 manifests, 3 objects`));
        // Each running replica (r0's too: the command wrote to its folder, not to its memory) applies the purge.
        for (const [i, r] of replicas.entries()) {
          const seen = await until(
            10_000,
            async () => (await facts(r)).shared.eventsApplied > applied[i] && hashes.every((h) => !localFile(r, h)),
          );
          assert.ok(seen, `${r.name} still holds the purged files after 10 s`);
        }
        // Gone everywhere: the next request for it goes upstream, once between the replicas.
        const counts = [manifest, ...hashes.map(filePath)].map((p) => up.counts.get(p) ?? 0);
        const m = await get(`${replicas[1].base}${manifest}`);
        assert.equal(m.status, 200);
        assert.deepEqual(m.body, fixtureManifest("6", name));
        for (const [i, h] of hashes.entries()) {
          const f = await get(`${replicas[2].base}${filePath(h)}`);
          assert.equal(f.status, 200);
          assert.deepEqual(f.body, idx.files.get(h));
          assert.equal(up.counts.get(filePath(h)), counts[i + 1] + 1, `${h} fetched again, once`);
        }
        assert.equal(up.counts.get(manifest), counts[0] + 1, "the manifest fetched again, once");
      });

      step(
        "S3 hanging (weed stopped with SIGSTOP: connections accepted, never answered): local hits do not wait for it",
        async () => {
          const manifest = "/package/6/spread2/latest.json";
          const file = filePath(filesOf("spread2")[0]);
          for (const r of replicas) {
            for (const p of [manifest, file]) assert.equal((await get(`${r.base}${p}`)).status, 200, `${r.name} ${p}`);
          }
          Deno.kill(s3!.pid, "SIGSTOP");
          try {
            await sleep(1_000); // past any "looked at S3 a moment ago" a replica may remember
            // A hit that waited for S3 would wait for the S3 client's timeout (upstreams.timeout, 60 s); 15 s is ample
            // for an answer from the local tier on any machine, and far below that.
            const answers = await Promise.all(replicas.flatMap((r) =>
              [manifest, file].map(async (p) => {
                try {
                  const res = await fetch(`${r.base}${p}`, { signal: AbortSignal.timeout(15_000) });
                  return `${r.name} ${p}: ${res.status} ${(await res.arrayBuffer()).byteLength} B`;
                } catch (e) {
                  return `${r.name} ${p}: no answer (${(e as Error).name})`;
                }
              })
            ));
            const expected = replicas.flatMap((r) =>
              [[manifest, fixtureManifest("6", "spread2")], [file, idx.files.get(filesOf("spread2")[0])!]].map(
                ([p, bytes]) => `${r.name} ${p}: 200 ${(bytes as Uint8Array).length} B`,
              )
            );
            assert.deepEqual(answers, expected, "every local hit answered while S3 hangs");
          } finally {
            Deno.kill(s3!.pid, "SIGCONT");
          }
        },
      );

      step(
        "S3 stopped: cached objects served, misses 503 with a reason; S3 back: the replicas resume by themselves",
        async () => {
          const cached = [`/package/6/spread0/latest.json`, ...filesOf("spread0").map(filePath)];
          const expected = [fixtureManifest("6", "spread0"), ...filesOf("spread0").map((h) => idx.files.get(h)!)];
          for (const r of replicas) for (const p of cached) assert.equal((await get(`${r.base}${p}`)).status, 200);
          const miss = "/package/py/spread4/latest.json";
          assert.equal(up.counts.get(miss), undefined, "never asked for before");
          await s3!.halt();
          for (let round = 0; round < 2; round++) {
            for (const [i, p] of cached.entries()) {
              for (const base of [front, ...replicas.map((r) => r.base)]) {
                const a = await get(`${base}${p}`);
                assert.equal(a.status, 200, `${base}${p}: ${text(a)}`);
                assert.deepEqual(a.body, expected[i]);
              }
            }
          }
          for (const base of [front, ...replicas.map((r) => r.base)]) {
            const a = await get(`${base}${miss}`);
            assert.equal(a.status, 503, `${base}${miss}: ${text(a)}`);
            assert.match(text(a), /S3 store|shared store/, "the answer names the store");
          }
          assert.equal(up.counts.get(miss), undefined, "a miss is not fetched while the store is down");
          for (const r of replicas) {
            assert.equal((await facts(r)).shared.reachable, false, `${r.name} knows S3 is down`);
          }
          await s3!.restart();
          let last: Answer | undefined;
          const back = await until(60_000, async () => (last = await get(`${front}${miss}`)).status === 200);
          assert.ok(back, `no answer after S3 came back: ${last?.status} ${last && text(last)}`);
          assert.deepEqual(last!.body, fixtureManifest("py", "spread4"));
          for (const r of replicas) {
            const ok = await until(60_000, async () => (last = await get(`${r.base}${miss}`)).status === 200);
            assert.ok(ok, `${r.name} did not resume: ${last?.status} ${last && text(last)}`);
            assert.deepEqual(last!.body, fixtureManifest("py", "spread4"));
            assert.equal((await facts(r)).shared.reachable, true, `${r.name} reaches S3 again`);
          }
          assert.equal(up.counts.get(miss), 1, "fetched once between the replicas after S3 came back");
        },
      );

      for (const [name, fn] of steps) {
        await t.step(name, async () => {
          try {
            await fn();
          } catch (e) {
            console.error(diagnostics());
            throw e;
          }
        });
      }
    } finally {
      await nginx?.stop("SIGQUIT");
      await Promise.all(replicas.map((r) => r.process.stop()));
      await direct?.stop();
      await up.stop();
      await github.stop();
      await s3?.stop();
    }
  },
});
