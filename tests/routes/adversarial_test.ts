/**
 * Hostile upstreams (tests/fixtures/adversarial.ts): every case gets its clear answer, the refusals of unsafe
 * manifests are logged, and nothing a refused answer came from is cached.
 */
import assert from "node:assert/strict";
import { createApp } from "../../src/app.ts";
import { sha256Hex } from "../../src/store/hash.ts";
import { DiskStore } from "../../src/store/disk/mod.ts";
import { memoryLogger } from "../../src/log.ts";
import { startAdversarial } from "../fixtures/adversarial.ts";
import { tempDir, testConfig } from "../helpers.ts";

Deno.test("adversarial upstreams: each hostile case gets its status and reason, logged, nothing cached", async () => {
  const adv = await startAdversarial();
  const dir = tempDir();
  const logger = memoryLogger();
  const app = await createApp({
    config: testConfig({ cache: { dir, prefetch: false }, upstreams: adv.upstreams }),
    logger,
  });
  try {
    for (const c of adv.cases) {
      const res = await app.handler(new Request(`http://gw${c.path}`, { headers: { host: "gw" } }));
      const body = await res.text();
      assert.equal(res.status, c.status, `${c.what}: ${body}`);
      assert.match(body, c.reason, c.what);
    }
    await app.idle();
    const refusals = logger.lines.filter((l) => l.includes("Refused an unsafe manifest"));
    assert.equal(refusals.length, adv.cases.filter((c) => c.reason.source.startsWith("Refused")).length);
    const keys = await Array.fromAsync(new DiskStore(dir).keys());
    const hostile = keys.filter((k) => k.includes("/evil/") || /\/package\//.test(k) || k.startsWith("files/"));
    assert.deepEqual(hostile, [], "nothing from a refused answer is cached");
    assert.equal(adv.elsewhere.log.length, 0, "a host that is not an allowed upstream is never contacted");
  } finally {
    await app.idle();
    await adv.stop();
  }
});

Deno.test("an unsafe index manifest cached before the check existed is refused when served from the cache", async () => {
  const adv = await startAdversarial();
  const dir = tempDir();
  const id = (await sha256Hex(new TextEncoder().encode(adv.index.url))).slice(0, 16);
  const store = new DiskStore(dir);
  await store.open();
  const legacy = JSON.stringify({ v: 1, version: "1.0", hashes: [["x\\..\\..\\boot.py", "abcd1234"]] });
  await store.put(`index/${id}/package/6/legacy/1.0.json`, new TextEncoder().encode(legacy));
  const app = await createApp({
    config: testConfig({ cache: { dir }, upstreams: adv.upstreams }),
    logger: memoryLogger(),
  });
  try {
    const res = await app.handler(new Request("http://gw/package/6/legacy/1.0.json"));
    assert.equal(res.status, 502);
    assert.match(await res.text(), /Refused package legacy 1\.0 \(6\).*"x\\\\\.\.\\\\\.\.\\\\boot\.py".*backslash/);
    assert.equal(adv.index.count("legacy"), 0, "answered from the cache");
  } finally {
    await app.idle();
    await adv.stop();
  }
});
