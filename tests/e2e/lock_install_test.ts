/**
 * End-to-end with the real MicroPython mip: a server with `policy.lock` installs the locked versions (by name, by
 * the locked version, `--no-mpy`, and under a profile), refuses another version, and keeps installing the locked
 * bytes after upstream changes them; a server with `policy.block` installs the newest unblocked release and refuses
 * a blocked package.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { createApp } from "../../src/app.ts";
import { createLock } from "../../src/bundle/lock.ts";
import { formatLock } from "../../src/packages/lock_file.ts";
import { memoryLogger } from "../../src/log.ts";
import { startUpstreams } from "../fixtures/upstreams.ts";
import { tempDir, testConfig } from "../helpers.ts";
import { micropythonPath, mipInstall, mpyCrossPath, runIn, runTool, serveApp } from "./tools.ts";

async function mipFails(index: string, spec: string): Promise<string> {
  const target = tempDir("mip-target-");
  const r = await runTool(micropythonPath(), ["-m", "mip", "install", "--target", target, "--index", index, spec], {
    cwd: target,
    env: { HOME: target },
  });
  const out = r.stdout + r.stderr;
  assert.match(out, /Package not found|Error 4\d\d|Error 5\d\d/, out);
  return out;
}

Deno.test("real mip under policy.lock installs only the locked versions and bytes", async () => {
  const up = await startUpstreams();
  const cacheDir = tempDir();
  const config = {
    cache: { dir: cacheDir },
    upstreams: up.upstreams,
    packages: { sensorkit: { source: "github:acme/sensorkit" } },
    targets: { unix: { march: "x64" } },
    mpy_cross: { path: mpyCrossPath() },
  };
  const maker = await createApp({ config: testConfig(config), logger: memoryLogger() });
  const lock = await createLock(["hello@1.0", "sensorkit"], {
    resolver: maker.resolver,
    named: maker.named,
    mpy: String(maker.compiler.version!.major),
    profiles: maker.compiler.profiles(),
  });
  await maker.idle();
  const lockPath = join(tempDir(), "fleet.lock");
  Deno.writeTextFileSync(lockPath, formatLock(lock));
  // Upstream changes the branch after the lock was made.
  for (const ref of ["main", "HEAD"]) {
    Deno.writeTextFileSync(
      join(up.githubRoot, `acme/sensorkit/${ref}/sensorkit/util.py`),
      "def scale(x):\n    return x * 1000\n",
    );
  }
  const { app, base, stop } = await serveApp({
    ...config,
    cache: { dir: cacheDir, ttl: "1ms" },
    policy: { lock: lockPath },
  }, { workers: 0 });
  try {
    // The stale manifests the lock was made from are rebuilt from the changed branch first.
    for (const path of ["/package/py/", "/package/6/", "/t/unix/package/6/"]) {
      assert.equal((await fetch(`${base}${path}sensorkit/latest.json`)).status, 200);
    }
    await app.idle();
    for (const [index, extra] of [[base, []], [base, ["--no-mpy"]], [`${base}/t/unix`, []]] as const) {
      const t = tempDir("mip-target-");
      await mipInstall(index, t, "sensorkit", [...extra]);
      assert.equal(
        await runIn(t, "import sensorkit, hello; print(sensorkit.VERSION, sensorkit.read())"),
        "1.1-dev (42, 'hello 1.0')",
        "the locked hello (1.0, a dependency asked for as latest) and the locked util.py (not the changed one)",
      );
      const suffix = extra.length ? "py" : "mpy";
      assert.ok(Deno.statSync(join(t, `hello.${suffix}`)).isFile);
    }
    const pinned = tempDir("mip-target-");
    await mipInstall(base, pinned, "hello@1.0");
    assert.equal(await runIn(pinned, "import hello; print(hello.hi())"), "hello 1.0");
    await mipFails(base, "hello@1.1");
    await mipFails(base, "mathx");
  } finally {
    await stop();
    await up.stop();
  }
});

Deno.test("real mip under policy.block installs the newest unblocked release and refuses a blocked package", async () => {
  const up = await startUpstreams();
  const { base, stop } = await serveApp({
    cache: { dir: tempDir() },
    upstreams: up.upstreams,
    policy: { block: ["hello@1.1", "mathx"] },
  }, { workers: 0 });
  try {
    const t = tempDir("mip-target-");
    await mipInstall(base, t, "hello");
    assert.equal(await runIn(t, "import hello; print(hello.hi())"), "hello 1.0");
    await mipFails(base, "hello@1.1");
    await mipFails(base, "mathx");
  } finally {
    await stop();
    await up.stop();
  }
});
