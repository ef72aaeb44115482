/**
 * End-to-end: the real MicroPython mip installs repository URLs through mipserver on an isolated network. The
 * device's own index is a trap (a local server standing in for micropython.org that answers nothing and counts what
 * it is asked): a URL install must get every file and every dependency, index names included, from mipserver. Under
 * `/t/{profile}/...` the same URL install gets compiled `.mpy` files. Then every upstream goes down and both installs
 * work from the cache. A dependency cycle is refused before the device can loop on it.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { startUpstreams } from "../fixtures/upstreams.ts";
import { writeDepGraphs } from "../fixtures/deps_fixture.ts";
import { filesBelow, tempDir } from "../helpers.ts";
import { micropythonPath, mipInstall, runIn, runTool, serveApp } from "../e2e/tools.ts";

Deno.test("real mip: a URL install takes its index dependencies from mipserver, never from the device's index; /t/{profile} compiles", async () => {
  const up = await startUpstreams();
  writeDepGraphs(up.githubRoot, up.github.url);
  // The index the device was given (micropython.org in real life): nothing may be asked of it.
  const trap = new FakeUpstream(tempDir("mipserver-trap-")).start();
  const { app, base, flush, stop, lines } = await serveApp({
    cache: { dir: tempDir() },
    upstreams: up.upstreams,
    targets: { lan: {} },
  });
  try {
    const install = async () => {
      const plain = tempDir("mip-target-");
      await mipInstall(trap.url, plain, `${base}/github/acme/sensorkit/v1.0`);
      assert.deepEqual(filesBelow(plain), [
        "hello.py",
        "helpers.py",
        "sensorkit/__init__.py",
        "sensorkit/util.py",
      ]);
      assert.equal(
        await runIn(plain, "import sensorkit; print(sensorkit.VERSION, sensorkit.read())"),
        "1.0 (42, 'hello 1.1')",
      );

      const compiled = tempDir("mip-target-");
      await mipInstall(trap.url, compiled, `${base}/t/lan/github/acme/sensorkit/v1.0`);
      assert.deepEqual(filesBelow(compiled), [
        "hello.mpy",
        "helpers.mpy",
        "sensorkit/__init__.mpy",
        "sensorkit/util.mpy",
      ]);
      for (const f of filesBelow(compiled)) {
        assert.equal(Deno.readFileSync(join(compiled, f))[0], "M".charCodeAt(0), `${f} is an .mpy file`);
      }
      assert.equal(
        await runIn(compiled, "import sensorkit; print(sensorkit.VERSION, sensorkit.read())"),
        "1.0 (42, 'hello 1.1')",
      );
    };
    await install();
    assert.equal(trap.log.length, 0, `the device's own index was asked: ${trap.log.join(", ")}`);
    // The index dependency came from the upstream index through mipserver as source, and was compiled here for the
    // profile (the index's own .mpy manifest is not needed).
    assert.ok(up.index.count("/package/py/hello/latest.json") > 0, up.index.log.join(", "));
    assert.ok(lines.some((l) => /Built a manifest.*"name":"hello".*"profile":"lan"/.test(l)), "compiled for lan");

    // A cycle is answered at once with a clear error; the device stops instead of looping.
    const t = tempDir("mip-target-");
    const cycle = await runTool(micropythonPath(), [
      "-m",
      "mip",
      "install",
      "--target",
      t,
      "--index",
      trap.url,
      `${base}/github/acme/loopa/main`,
    ], { cwd: t, env: { HOME: t } });
    assert.doesNotMatch(cycle.stdout, /Done/, cycle.stdout);
    assert.match(cycle.stdout, /Package not found: .*\/github\/acme\/loopa\/main\/package\.json/, cycle.stdout);
    await flush();
    const refused = app.requestLog.query({ path: "loopa" });
    assert.equal(refused.length, 1);
    assert.equal(refused[0].status, 502);

    await app.idle();
    await up.stop();
    await install();
    assert.equal(trap.log.length, 0);
  } finally {
    await stop();
    await up.stop();
    await trap.stop();
  }
});
