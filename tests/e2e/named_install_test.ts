/**
 * End-to-end: the real MicroPython unix port runs the real `mip` and installs named packages by name through
 * mipserver, from a fake GitHub, GitLab, PyPI and a local folder; then every upstream goes down and the same
 * installs work from the cache. Pins and `policy.unlisted: deny` are checked the way a device sees them.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { startUpstreams } from "../fixtures/upstreams.ts";
import { tempDir } from "../helpers.ts";
import { micropythonPath, mipInstall, runIn, runTool, serveApp } from "./tools.ts";

Deno.test("real mip installs named GitHub, GitLab, PyPI and local packages by name, then from the cache", async () => {
  const up = await startUpstreams();
  const local = tempDir("mipserver-local-");
  Deno.writeTextFileSync(join(local, "localmod.py"), "def where():\n    return 'from a local folder'\n");
  const { app, base, flush, stop } = await serveApp({
    cache: { dir: tempDir() },
    upstreams: up.upstreams,
    packages: {
      sensorkit: { source: "github:acme/sensorkit" },
      glpkg: { source: "gitlab:grp/glpkg" },
      sensorlib: { source: "pypi:sensorlib" },
      tinywheel: { source: "pypi:tinywheel" },
      localmod: { source: `local:${local}` },
    },
  });
  try {
    const installAll = async () => {
      const t = tempDir("mip-target-");
      await mipInstall(base, t, "sensorkit");
      await mipInstall(base, t, "glpkg");
      await mipInstall(base, t, "sensorlib");
      await mipInstall(base, t, "tinywheel");
      await mipInstall(base, t, "localmod");
      assert.equal(
        await runIn(t, "import sensorkit, glpkg; print(sensorkit.VERSION, sensorkit.read(), glpkg.where())"),
        "1.1-dev (42, 'hello 1.1') from gitlab",
      );
      assert.equal(
        await runIn(t, "import sensorlib, tinywheel, localmod; print(sensorlib.level(1), tinywheel.tiny())"),
        "4 tiny from a wheel",
      );
      assert.equal(await runIn(t, "import localmod; print(localmod.where())"), "from a local folder");
      assert.ok(Deno.statSync(join(t, "helpers.mpy")).isFile, "the github: dependency was installed, compiled");
      const tagged = tempDir("mip-target-");
      await mipInstall(base, tagged, "sensorkit@v1.0");
      await mipInstall(base, tagged, "sensorlib@0.2.0");
      assert.equal(
        await runIn(tagged, "import sensorkit, sensorlib; print(sensorkit.VERSION, sensorlib.level(1))"),
        "1.0 2",
      );
    };
    await installAll();
    await app.idle();
    await up.stop();
    await installAll();
    await flush();
    const failures = app.requestLog.query({ limit: 1000 }).filter((e) => e.status !== 200);
    assert.deepEqual(failures, []);
  } finally {
    await stop();
    await up.stop();
  }
});

Deno.test("real mip with pins and policy.unlisted deny: pinned latest, closure allowed, the rest refused", async () => {
  const up = await startUpstreams();
  const { app, base, flush, stop } = await serveApp({
    cache: { dir: tempDir() },
    upstreams: up.upstreams,
    packages: { sensorkit: { source: "github:acme/sensorkit" } },
    pins: { hello: "1.0" },
    policy: { unlisted: "deny" },
  });
  try {
    const t = tempDir("mip-target-");
    await mipInstall(base, t, "sensorkit");
    assert.equal(await runIn(t, "import sensorkit; print(sensorkit.read())"), "(42, 'hello 1.0')");
    const denied = await runTool(
      micropythonPath(),
      ["-m", "mip", "install", "--target", t, "--index", base, "bigmod"],
      {
        cwd: t,
        env: { HOME: t },
      },
    );
    assert.match(denied.stdout, /Package not found/, denied.stdout);
    assert.throws(() => Deno.statSync(join(t, "bigmod.mpy")));
    await flush();
    assert.ok(app.requestLog.query({ status: 403 }).length > 0);
  } finally {
    await stop();
    await up.stop();
  }
});
