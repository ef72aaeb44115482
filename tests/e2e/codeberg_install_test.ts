/**
 * End-to-end with the real MicroPython mip and a fake Codeberg (Forgejo's raw API layout): a named `codeberg:` package
 * installs by name and by tag, compiled, with its `codeberg:`, `github:` and index dependencies; URL installs of the
 * `/codeberg/...` mirror (sources) and of `/t/{profile}/codeberg/...` (compiled) take everything from mipserver; then
 * every upstream goes down and the same installs work from the cache. A lock of codeberg packages' closure (a
 * `/repo/` dependency manifest and a single-module `/codeberg/` mirror file among it) is warmed, exported, imported
 * into an instance whose upstreams do not answer, and installed there under `policy.lock`.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { parseLock } from "../../src/packages/lock_file.ts";
import { parseMpyHeader } from "../../src/compile/mpy_header.ts";
import { main } from "../../src/main.ts";
import { configFile } from "../bundle/helpers.ts";
import { codebergTree, FakeForgejo } from "../fixtures/codeberg_fixture.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { startUpstreams } from "../fixtures/upstreams.ts";
import { filesBelow, freePort, tempDir } from "../helpers.ts";
import { micropythonPath, mipInstall, mpyCrossPath, runIn, runTool, serveApp } from "./tools.ts";

const SING = "import birdkit; print(birdkit.VERSION, birdkit.sing())";
const MPY_FILES = ["birdkit/__init__.mpy", "birdkit/song.mpy", "feathers.mpy", "hello.mpy", "helpers.mpy"];

Deno.test("real mip installs a named codeberg: package, /codeberg/ and /t/{profile}/codeberg/ URLs, then from the cache", async () => {
  const up = await startUpstreams();
  const forgejo = new FakeForgejo(codebergTree()).start();
  // The index a URL-installing device was given (micropython.org in real life): nothing may be asked of it.
  const trap = new FakeUpstream(tempDir("mipserver-trap-")).start();
  const { app, base, flush, stop } = await serveApp({
    cache: { dir: tempDir() },
    upstreams: { ...up.upstreams, codeberg: forgejo.url },
    packages: { birdkit: { source: "codeberg:flock/birdkit" } },
    targets: { lan: {} },
    mpy_cross: { path: mpyCrossPath() },
  });
  try {
    const installAll = async () => {
      const named = tempDir("mip-target-");
      await mipInstall(base, named, "birdkit");
      assert.deepEqual(filesBelow(named), MPY_FILES);
      for (const f of filesBelow(named)) assert.equal(parseMpyHeader(Deno.readFileSync(join(named, f)))?.major, 6, f);
      assert.equal(await runIn(named, SING), "0.3-dev ('tweet 0.3-dev', 7, 4, 'hello 1.1')");

      const tagged = tempDir("mip-target-");
      await mipInstall(base, tagged, "birdkit@v0.2");
      assert.equal(await runIn(tagged, SING), "0.2 ('tweet 0.2', 7, 4, 'hello 1.1')");

      const plain = tempDir("mip-target-");
      await mipInstall(trap.url, plain, `${base}/codeberg/flock/birdkit/main`);
      assert.deepEqual(filesBelow(plain), [
        "birdkit/__init__.py",
        "birdkit/song.py",
        "feathers.py",
        "hello.py",
        "helpers.py",
      ]);
      assert.equal(await runIn(plain, SING), "0.3-dev ('tweet 0.3-dev', 7, 4, 'hello 1.1')");

      const compiled = tempDir("mip-target-");
      await mipInstall(trap.url, compiled, `${base}/t/lan/codeberg/flock/birdkit/v0.2`);
      assert.deepEqual(filesBelow(compiled), MPY_FILES);
      assert.equal(await runIn(compiled, SING), "0.2 ('tweet 0.2', 7, 4, 'hello 1.1')");
    };
    await installAll();
    assert.equal(trap.log.length, 0, `the device's own index was asked: ${trap.log.join(", ")}`);
    assert.ok(forgejo.log.includes("/api/v1/repos/flock/birdkit/raw/package.json?ref=HEAD"), forgejo.log.join(", "));
    assert.ok(forgejo.log.includes("/api/v1/repos/flock/birdkit/raw/package.json?ref=v0.2"));

    await app.idle();
    await forgejo.stop();
    await up.stop();
    await installAll();
    await flush();
    const failures = app.requestLog.query({ limit: 1000 }).filter((e) => e.status !== 200);
    assert.deepEqual(failures, []);

    // A device asking for a codeberg: package the server does not know hears so, as from any index.
    const t = tempDir("mip-target-");
    const r = await runTool(micropythonPath(), ["-m", "mip", "install", "--target", t, "--index", base, "nosuchbird"], {
      cwd: t,
      env: { HOME: t },
    });
    assert.match(r.stdout, /Package not found/, r.stdout);
  } finally {
    await stop();
    await forgejo.stop();
    await up.stop();
    await trap.stop();
  }
});

Deno.test("a lock with a codeberg: package: warmed, exported, imported offline and installed under policy.lock", async () => {
  const up = await startUpstreams();
  const forgejo = new FakeForgejo(codebergTree()).start();
  const dir = tempDir("mipserver-codeberg-lock-");
  const lockPath = join(dir, "fleet.lock");
  const bundle = join(dir, "fleet.tar.gz");
  const office = configFile({
    cache: { dir: join(dir, "office") },
    upstreams: { ...up.upstreams, codeberg: forgejo.url },
    packages: { birdkit: { source: "codeberg:flock/birdkit", ref: "v0.2" }, nest: { source: "codeberg:flock/nest" } },
    targets: { lan: {} },
    mpy_cross: { path: mpyCrossPath() },
    log: { level: "warn" },
  });
  try {
    assert.equal(await main(["lock", "--config", office, "--output", lockPath, "birdkit", "nest"]), 0);
    const lock = parseLock(Deno.readTextFileSync(lockPath), lockPath);
    assert.deepEqual(Object.keys(lock.packages).sort(), [
      "birdkit",
      "hello",
      "nest",
      "repo:codeberg/flock/feathers/main/package.json",
      "repo:github/acme/helpers/main/package.json",
    ]);
    assert.equal(lock.packages.birdkit.kind, "named");
    assert.equal(lock.packages.birdkit.version, "0.2");
    assert.equal(lock.packages["repo:codeberg/flock/feathers/main/package.json"].kind, "repo");
    assert.deepEqual(Object.keys(lock.packages.birdkit.files).sort(), ["6", "py", "t/lan/6"]);
    assert.deepEqual(lock.packages.birdkit.deps, [
      "hello",
      "repo:codeberg/flock/feathers/main/package.json",
      "repo:github/acme/helpers/main/package.json",
    ]);
    assert.deepEqual(lock.packages.nest.deps, ["mirror:/codeberg/flock/solo/main/solo.py"]);
    assert.equal(await main(["warm", "--config", office, "--from", lockPath]), 0);
    assert.equal(await main(["export", "--config", office, "--output", bundle]), 0);
  } finally {
    await forgejo.stop();
    await up.stop();
  }

  // The ship: another cache, upstreams that do not answer, no named packages configured, only the lock.
  const dead = `http://127.0.0.1:${freePort()}`;
  const ship = {
    cache: { dir: join(dir, "ship") },
    upstreams: {
      index: `${dead}/pi/v2`,
      github: dead,
      gitlab: dead,
      codeberg: dead,
      pypi: `${dead}/pypi`,
      pypi_files: dead,
    },
    mpy_cross: { path: mpyCrossPath() },
    policy: { lock: lockPath },
  };
  assert.equal(await main(["import", "--config", configFile(ship), bundle]), 0);
  const { base, stop } = await serveApp(ship);
  try {
    for (
      const [index, extra, suffix] of [[base, [], "mpy"], [base, ["--no-mpy"], "py"], [`${base}/t/lan`, [], "mpy"]]
    ) {
      const t = tempDir("mip-target-");
      await mipInstall(index as string, t, "birdkit", extra as string[]);
      assert.equal(await runIn(t, SING), "0.2 ('tweet 0.2', 7, 4, 'hello 1.1')", `${index} ${extra}`);
      assert.ok(Deno.statSync(join(t, `feathers.${suffix}`)).isFile, "the codeberg: dependency, from the bundle");
      await mipInstall(index as string, t, "nest", extra as string[]);
      assert.equal(await runIn(t, "import nest; print(nest.home())"), "solo from codeberg");
      assert.ok(Deno.statSync(join(t, "solo.py")).isFile, "a single-module codeberg: dependency, mirrored raw");
    }
    const refused = await fetch(`${base}/codeberg/flock/feathers/main/feathers.py`);
    assert.equal(refused.status, 403, "the lock allows only what it names");
    await refused.body?.cancel();
  } finally {
    await stop();
  }
});
