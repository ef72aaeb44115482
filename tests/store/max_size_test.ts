import assert from "node:assert/strict";
import { join } from "node:path";
import { createApp } from "../../src/app.ts";
import { sha256Hex } from "../../src/store/hash.ts";
import { memoryLogger } from "../../src/log.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { tempDir, testConfig } from "../helpers.ts";

Deno.test("cache.max_size through the app: LRU eviction, /healthz and /metrics figures, evicted files fetched again", async () => {
  const root = tempDir();
  const files: { hash: string; body: Uint8Array }[] = [];
  for (let i = 0; i < 4; i++) {
    const body = new TextEncoder().encode(`x = ${i}\n`.padEnd(400, "#"));
    const hash = (await sha256Hex(body)).slice(0, 8);
    Deno.mkdirSync(join(root, "file", hash.slice(0, 2)), { recursive: true });
    Deno.writeFileSync(join(root, "file", hash.slice(0, 2), hash), body);
    files.push({ hash, body });
  }
  const up = new FakeUpstream(root).start();
  try {
    const config = testConfig({
      cache: { dir: tempDir(), max_size: "1KiB", memory: 0 },
      upstreams: { index: up.url, retries: 0 },
    });
    assert.equal(config.cache.max_size, 1024);
    const app = await createApp({ config, logger: memoryLogger() });
    const get = (path: string) => app.handler(new Request(`http://gw${path}`));
    const file = async (i: number) => {
      const { hash, body } = files[i];
      const res = await get(`/file/${hash.slice(0, 2)}/${hash}`);
      assert.equal(res.status, 200);
      assert.deepEqual(new Uint8Array(await res.arrayBuffer()), body);
    };
    await file(0);
    await file(1);
    await file(0); // 1 is now the least recently used
    await file(2); // 1 goes
    const health = await (await get("/healthz")).json();
    assert.deepEqual(
      [health.cache.size_bytes, health.cache.objects, health.cache.evictions, health.cache.max_bytes],
      [800, 2, 1, 1024],
    );
    const metrics = await (await get("/metrics")).text();
    assert.match(metrics, /^mipserver_cache_bytes 800$/m);
    assert.match(metrics, /^mipserver_cache_objects 2$/m);
    assert.match(metrics, /^mipserver_cache_evictions_total 1$/m);
    const count = (i: number) => up.count(files[i].hash);
    assert.deepEqual([count(0), count(1), count(2)], [1, 1, 1]);
    await file(1); // evicted: fetched again (and 0, now least recently used, goes)
    assert.equal(count(1), 2);
    await file(2);
    assert.equal(count(2), 1, "a kept file is not fetched again");
    await app.idle();
  } finally {
    await up.stop();
  }
});
