/**
 * End-to-end: the real MicroPython unix port runs the real `mip` against mipserver, which proxies a fake upstream
 * index built with the real mpy-cross. Then the upstream goes down and the same installs work from the cache.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { standardIndex } from "../fixtures/index_fixture.ts";
import { buildGithub, buildGitlab } from "../fixtures/repo_fixture.ts";
import { tempDir } from "../helpers.ts";
import { mipInstall, runIn, serveApp } from "./tools.ts";

Deno.test("real mip installs through mipserver, then again from the cache with the upstream down", async () => {
  const idx = await standardIndex();
  const up = new FakeUpstream(idx.root).start();
  const { app, base: index, flush, stop } = await serveApp({
    cache: { dir: tempDir() },
    upstreams: { index: up.url, retries: 0 },
  });
  try {
    const installAll = async () => {
      const mpy = tempDir("mip-target-");
      await mipInstall(index, mpy, "hello");
      await mipInstall(index, mpy, "bigmod");
      await mipInstall(index, mpy, "mathx");
      const src = tempDir("mip-target-");
      await mipInstall(index, src, "mathx", ["--no-mpy"]);
      const pinned = tempDir("mip-target-");
      await mipInstall(index, pinned, "hello@1.0");
      return { mpy, src, pinned };
    };
    const check = async ({ mpy, src, pinned }: { mpy: string; src: string; pinned: string }) => {
      assert.ok(Deno.statSync(join(mpy, "hello.mpy")).isFile);
      assert.ok(Deno.statSync(join(mpy, "mathx", "ops.mpy")).isFile);
      assert.ok(Deno.statSync(join(mpy, "bigmod.mpy")).size >= 30_000, "bigmod.mpy should be 30 KB or more");
      assert.equal(await runIn(mpy, "import hello; print(hello.hi())"), "hello 1.1");
      assert.equal(await runIn(mpy, "import mathx; print(mathx.add(2, 3), mathx.mul(4, 5))"), "5 20");
      const big = await runIn(mpy, "import bigmod; print(bigmod.count(), bigmod.checksum())");
      assert.match(big, /^\d{3,} \d{5,}$/);
      assert.ok(Deno.statSync(join(src, "mathx", "ops.py")).isFile);
      assert.equal(await runIn(src, "import mathx; print(mathx.add(1, 1))"), "2");
      assert.equal(await runIn(pinned, "import hello; print(hello.hi())"), "hello 1.0");
    };

    await check(await installAll());
    const upstreamRequests = up.log.length;
    assert.ok(upstreamRequests > 0);

    await app.idle();
    await up.stop();
    await check(await installAll());

    await flush();
    const devices = app.requestLog.query({ limit: 1000 });
    assert.ok(devices.every((e) => e.status === 200), JSON.stringify(devices.filter((e) => e.status !== 200)));
    assert.ok(devices.some((e) => e.cache === "stale" || e.cache === "hit"));
  } finally {
    await stop();
    await up.stop();
  }
});

Deno.test("real mip installs an ad-hoc GitHub URL and a GitLab URL through mipserver, deps included, then from cache", async () => {
  const idx = await standardIndex();
  const up = new FakeUpstream(idx.root).start();
  const github = new FakeUpstream(buildGithub(), "").start();
  const gitlab = new FakeUpstream(buildGitlab(), "").start();
  const { app, base, flush, stop } = await serveApp({
    cache: { dir: tempDir() },
    upstreams: { index: up.url, github: github.url, gitlab: gitlab.url, retries: 0 },
  });
  try {
    const installAndRun = async () => {
      const target = tempDir("mip-target-");
      await mipInstall(base, target, `${base}/github/acme/sensorkit/main`);
      await mipInstall(base, target, `${base}/gitlab/grp/glpkg/main`);
      assert.equal(
        await runIn(target, "import sensorkit, glpkg; print(sensorkit.VERSION, sensorkit.read(), glpkg.where())"),
        "1.1-dev (42, 'hello 1.1') from gitlab",
      );
      const pinned = tempDir("mip-target-");
      await mipInstall(base, pinned, `${base}/github/acme/sensorkit/v1.0`);
      assert.equal(await runIn(pinned, "import sensorkit; print(sensorkit.VERSION)"), "1.0");
    };
    await installAndRun();
    await app.idle();
    await Promise.all([up.stop(), github.stop(), gitlab.stop()]);
    await installAndRun();
    await flush();
    const failures = app.requestLog.query({ limit: 1000 }).filter((e) => e.status !== 200);
    assert.deepEqual(failures, []);
  } finally {
    await stop();
    await Promise.all([up.stop(), github.stop(), gitlab.stop()]);
  }
});
