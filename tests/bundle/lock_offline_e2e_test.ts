/**
 * End-to-end, with the real mpy-cross and the real MicroPython mip, the office-to-ship story with a lock: at the
 * office, warm, lock and export; on the ship (`cache.offline: true`, upstreams that do not answer), import the bundle
 * from the USB stick and set `policy.lock` to the lock that came by e-mail. Named packages (read by the lock at a
 * branch, held by the bundle as `latest`), index packages (a dependency asked for as `latest`, and one by version) and
 * a compiled profile all install; what the lock leaves out stays refused. Then the same, signed: the ship trusts the
 * office's key (and another), requires signatures, imports and serves with the signed lock, and /healthz shows who
 * signed it.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { startUpstreams } from "../fixtures/upstreams.ts";
import { freePort, tempDir } from "../helpers.ts";
import { micropythonPath, mipInstall, mpyCrossPath, runIn, runTool, serveApp } from "../e2e/tools.ts";
import { readSigningKey } from "../../src/packages/signing.ts";
import { cli, configFile } from "./helpers.ts";
import { keygen, mipserver, opensslVerifies } from "./signing_helpers.ts";

const PACKAGES = ["hello@1.0", "sensorkit", "fastmath"];

Deno.test("a lock by e-mail and a bundle by USB: an offline ship installs the locked packages with the real mip", async () => {
  const up = await startUpstreams();
  const office = tempDir("mipserver-office-");
  const officeConfig = configFile({
    cache: { dir: office },
    upstreams: up.upstreams,
    packages: { sensorkit: { source: "github:acme/sensorkit" }, fastmath: { source: "github:acme/fastmath" } },
    targets: { x64: { march: "x64" } },
    mpy_cross: { path: mpyCrossPath() },
  });
  const out = tempDir("mipserver-office-out-");
  const bundle = join(out, "fleet.tar.gz");
  const lock = join(out, "fleet.lock");
  try {
    assert.equal(await cli("warm", "--config", officeConfig, "--profile", "x64", ...PACKAGES), 0);
    assert.equal(await cli("lock", "--config", officeConfig, "--output", lock, ...PACKAGES), 0);
    assert.equal(await cli("export", "--config", officeConfig, "--output", bundle, ...PACKAGES), 0);
  } finally {
    await up.stop();
  }

  const ship = tempDir("mipserver-ship-");
  const dead = `http://127.0.0.1:${freePort()}`;
  const shipConfig = {
    cache: { dir: ship, offline: true },
    upstreams: { index: `${dead}/pi/v2`, github: dead, gitlab: dead, pypi: `${dead}/pypi`, pypi_files: dead },
    // The ship's config names the same packages as the office's, as the walkthrough says.
    packages: { sensorkit: { source: "github:acme/sensorkit" }, fastmath: { source: "github:acme/fastmath" } },
    mpy_cross: { path: mpyCrossPath() },
  };
  assert.equal(await cli("import", "--config", configFile(shipConfig), bundle), 0);

  // Without the lock, then with it, then with it on a ship whose config names no packages: the same answers for what
  // each allows.
  const rounds: [Record<string, unknown>, { lock?: string }][] = [
    [shipConfig, {}],
    [shipConfig, { lock }],
    [{ ...shipConfig, packages: {} }, { lock }],
  ];
  for (const [config, policy] of rounds) {
    const { base, stop, lines } = await serveApp({ ...config, policy }, { workers: 0 });
    try {
      for (const path of ["/package/6/sensorkit/latest.json", "/t/x64/package/6/fastmath/latest.json"]) {
        const res = await fetch(`${base}${path}`);
        const text = await res.text();
        assert.equal(res.status, 200, `${JSON.stringify(policy)} ${path}: ${text}\n${lines.join("\n")}`);
      }
      const t = tempDir("mip-target-");
      await mipInstall(base, t, "sensorkit");
      assert.equal(
        await runIn(t, "import sensorkit; print(sensorkit.VERSION, sensorkit.read())"),
        policy.lock ? "1.1-dev (42, 'hello 1.0')" : "1.1-dev (42, 'hello 1.1')",
      );
      const sources = tempDir("mip-target-");
      await mipInstall(base, sources, "sensorkit", ["--no-mpy"]);
      assert.ok(Deno.statSync(join(sources, "sensorkit/util.py")).isFile);
      const native = tempDir("mip-target-");
      await mipInstall(`${base}/t/x64`, native, "fastmath");
      assert.equal(await runIn(native, "import fastmath; print(fastmath.nsum(10), fastmath.vdouble(21))"), "45 42");
      const old = tempDir("mip-target-");
      await mipInstall(base, old, "hello@1.0");
      assert.equal(await runIn(old, "import hello; print(hello.hi())"), "hello 1.0");
      if (policy.lock) {
        // hello is locked at 1.0: its latest is 1.0; mathx is not in the lock.
        const latest = tempDir("mip-target-");
        await mipInstall(base, latest, "hello");
        assert.equal(await runIn(latest, "import hello; print(hello.hi())"), "hello 1.0");
        const refused = await runTool(micropythonPath(), [
          "-m",
          "mip",
          "install",
          "--target",
          latest,
          "--index",
          base,
          "mathx",
        ], {
          cwd: latest,
          env: { HOME: latest },
        });
        assert.match(refused.stdout + refused.stderr, /Package not found|Error 4\d\d/);
      }
    } finally {
      await stop();
    }
  }
});

Deno.test("the walkthrough signed: keygen, lock --sign and export --sign at the office; the ship checks both and installs with the real mip", async () => {
  const up = await startUpstreams();
  const office = tempDir("mipserver-office-");
  const named = { sensorkit: { source: "github:acme/sensorkit" }, fastmath: { source: "github:acme/fastmath" } };
  const officeConfig = configFile({
    cache: { dir: office },
    upstreams: up.upstreams,
    packages: named,
    targets: { x64: { march: "x64" } },
    mpy_cross: { path: mpyCrossPath() },
  });
  const out = tempDir("mipserver-office-out-");
  const bundle = join(out, "fleet.tar.gz");
  const lock = join(out, "fleet.lock");
  const key = await keygen();
  const other = await keygen();
  try {
    assert.equal((await mipserver("warm", "--config", officeConfig, "--profile", "x64", ...PACKAGES)).code, 0);
    const locked = await mipserver("lock", "--config", officeConfig, "--sign", key.path, "--output", lock, ...PACKAGES);
    assert.equal(locked.code, 0, locked.stderr);
    const exported = await mipserver(
      "export",
      "--config",
      officeConfig,
      "--sign",
      key.path,
      "--output",
      bundle,
      ...PACKAGES,
    );
    assert.equal(exported.code, 0, exported.stderr);
  } finally {
    await up.stop();
  }
  assert.equal(await opensslVerifies(lock, key.publicKey), true);

  const ship = tempDir("mipserver-ship-");
  const dead = `http://127.0.0.1:${freePort()}`;
  const policy = { lock, trusted_keys: [other.publicKey, key.publicKey], require_signed: true };
  const shipConfig = {
    cache: { dir: ship, offline: true },
    upstreams: { index: `${dead}/pi/v2`, github: dead, gitlab: dead, pypi: `${dead}/pypi`, pypi_files: dead },
    mpy_cross: { path: mpyCrossPath() },
    policy,
  };
  const imported = await mipserver("import", "--config", configFile(shipConfig), bundle);
  assert.equal(imported.code, 0, imported.stderr);
  assert.match(imported.stdout, /; signed by key [0-9a-f]{16} at /);
  const { base, stop } = await serveApp(shipConfig, { workers: 0 });
  try {
    const t = tempDir("mip-target-");
    await mipInstall(base, t, "sensorkit");
    assert.equal(
      await runIn(t, "import sensorkit; print(sensorkit.VERSION, sensorkit.read())"),
      "1.1-dev (42, 'hello 1.0')",
    );
    const native = tempDir("mip-target-");
    await mipInstall(`${base}/t/x64`, native, "fastmath");
    assert.equal(await runIn(native, "import fastmath; print(fastmath.nsum(10), fastmath.vdouble(21))"), "45 42");
    const health = await (await fetch(`${base}/healthz`)).json();
    assert.equal(health.lock.signed.key_id, (await readSigningKey(key.path)).keyId);
    assert.match(health.lock.signed.signed_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  } finally {
    await stop();
  }
});
