/**
 * cache.max_size never evicts what a pin needs: the files a pinned release's manifests list, from the first request and
 * after a restart (read back from the cached manifests before the limit is applied).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { createApp } from "../../src/app.ts";
import { memoryLogger } from "../../src/log.ts";
import { standardIndex } from "../fixtures/index_fixture.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { tempDir, testConfig } from "../helpers.ts";

Deno.test("cache.max_size keeps the files of pinned releases, also across a restart; other files are evicted", async () => {
  const index = await standardIndex();
  const up = new FakeUpstream(index.root).start();
  const cacheDir = tempDir();
  const onDisk = (h: string) => {
    try {
      return Deno.readDirSync(join(cacheDir, "files", h.slice(0, 2))).some((e) => e.name === h);
    } catch {
      return false;
    }
  };
  const pinnedPy = index.hashes.get("py/hello/1.0/hello.py")!;
  const pinned6 = index.hashes.get("6/hello/1.0/hello.mpy")!;
  const others = ["py/hello/1.1/hello.py", "6/hello/1.1/hello.mpy", "py/bigmod/1.0/bigmod.py"].map((k) =>
    index.hashes.get(k)!
  );
  // Room for the pinned files and a little more: any other file has to evict something.
  const size = (h: string) => Deno.statSync(join(index.root, "file", h.slice(0, 2), h)).size;
  const limit = size(pinnedPy) + size(pinned6) + 16;
  try {
    const config = testConfig({
      cache: { dir: cacheDir, max_size: limit, memory: 0 },
      upstreams: { index: up.url, retries: 0 },
      pins: { hello: "1.0" },
      policy: {},
    });
    const app = await createApp({ config, logger: memoryLogger() });
    const get = (path: string) => app.handler(new Request(`http://gw${path}`));
    // A device installs the pinned hello (latest → 1.0) as py and mpy: its files are cached.
    for (const mpy of ["py", "6"]) {
      const manifest = await (await get(`/package/${mpy}/hello/latest.json`)).json();
      assert.equal(manifest.version, "1.0");
      for (const [, h] of manifest.hashes) assert.equal((await get(`/file/${h.slice(0, 2)}/${h}`)).status, 200);
    }
    // Other files go through the same small cache: each is served and evicted in turn, the pinned ones stay.
    for (const h of others) assert.equal((await get(`/file/${h.slice(0, 2)}/${h}`)).status, 200);
    await app.idle();
    assert.ok(onDisk(pinnedPy) && onDisk(pinned6), "the pinned release's files stay");
    assert.ok(others.slice(0, 2).every((h) => !onDisk(h)), "unpinned files were evicted");
    // Another file lands in the cache while the server is down (newer than the pinned ones, which are now the least
    // recently used), so the restart has to evict to fit the limit.
    const extra = others[0];
    Deno.mkdirSync(join(cacheDir, "files", extra.slice(0, 2)), { recursive: true });
    Deno.copyFileSync(
      join(index.root, "file", extra.slice(0, 2), extra),
      join(cacheDir, "files", extra.slice(0, 2), extra),
    );
    // A restart with the same limit: they are read back from the cached manifests and kept.
    const again = await createApp({ config, logger: memoryLogger() });
    await again.idle();
    assert.ok(onDisk(pinnedPy) && onDisk(pinned6), "the pinned release's files stay after a restart");
    assert.ok(!onDisk(extra), "the unpinned file went instead");
  } finally {
    await up.stop();
  }
});
