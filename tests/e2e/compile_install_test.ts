/**
 * End-to-end: named GitHub packages install as `.mpy` compiled by the real mpy-cross, and a package with
 * `@micropython.native`/`@micropython.viper` code runs natively on the real MicroPython unix port (x64) when installed
 * through the `/t/x64` profile; without a profile it falls back to the source and still runs.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { parseMpyHeader } from "../../src/compile/mpy_header.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { standardIndex } from "../fixtures/index_fixture.ts";
import { buildGithub } from "../fixtures/repo_fixture.ts";
import { tempDir } from "../helpers.ts";
import { mipInstall, mpyCrossPath, runIn, serveApp } from "./tools.ts";

Deno.test("real mip installs compiled .mpy packages; native code runs through the x64 profile", async () => {
  const idx = await standardIndex();
  const index = new FakeUpstream(idx.root).start();
  const github = new FakeUpstream(buildGithub(), "").start();
  const { base, stop } = await serveApp({
    cache: { dir: tempDir() },
    upstreams: { index: index.url, github: github.url, retries: 0 },
    packages: { sensorkit: { source: "github:acme/sensorkit" }, fastmath: { source: "github:acme/fastmath" } },
    targets: { x64: { march: "x64" } },
    mpy_cross: { path: mpyCrossPath() },
  });
  try {
    const t = tempDir("mip-target-");
    await mipInstall(base, t, "sensorkit");
    for (const f of ["sensorkit/__init__.mpy", "sensorkit/util.mpy"]) {
      assert.equal(parseMpyHeader(Deno.readFileSync(join(t, f)))?.major, 6, f);
    }
    assert.throws(() => Deno.statSync(join(t, "sensorkit/__init__.py")), "no source installed beside the .mpy");
    assert.equal(await runIn(t, "import sensorkit; print(sensorkit.read())"), "(42, 'hello 1.1')");

    const native = tempDir("mip-target-");
    await mipInstall(`${base}/t/x64`, native, "fastmath");
    const header = parseMpyHeader(Deno.readFileSync(join(native, "fastmath.mpy")));
    assert.equal(header?.arch, 2, "x64 native code in the .mpy");
    assert.equal(await runIn(native, "import fastmath; print(fastmath.nsum(10), fastmath.vdouble(21))"), "45 42");

    const portable = tempDir("mip-target-");
    await mipInstall(base, portable, "fastmath");
    assert.ok(Deno.statSync(join(portable, "fastmath.py")).isFile, "no profile: the source");
    assert.equal(await runIn(portable, "import fastmath; print(fastmath.nsum(10), fastmath.vdouble(21))"), "45 42");
  } finally {
    await stop();
    await Promise.all([index.stop(), github.stop()]);
  }
});
