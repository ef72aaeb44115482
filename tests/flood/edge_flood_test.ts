/** Flood suite (see `flood.ts`): the edge cache, per thread at most `min(16 MiB, cache.memory / 4)` bytes. */
import assert from "node:assert/strict";
import { createApp } from "../../src/app.ts";
import { sha256Hex } from "../../src/store/hash.ts";
import { createEdgeHandler, EDGE_WINDOW_MS, EdgeCache, entryCost } from "../../src/edge/edge.ts";
import { configSettings } from "../../src/edge/listen.ts";
import { createRecorder } from "../../src/http/server.ts";
import type { Shareable } from "../../src/http/responses.ts";
import { memoryLogger } from "../../src/log.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { tempDir, testConfig } from "../helpers.ts";
import { assertAtMost } from "./flood.ts";

function answer(bytes: number): Shareable {
  return {
    route: "/file/:h2/:hash",
    kind: "file",
    outcome: "hit",
    etag: '"e"',
    body: new Uint8Array(bytes),
    headers: { etag: '"e"', "content-length": String(bytes) },
    notModified: { etag: '"e"' },
  };
}

Deno.test("edge cache: 60,000 unique keys of up to 8 KiB stay within the budget cache.memory gives it", () => {
  const maxBytes = configSettings(testConfig({ cache: { memory: "8MiB" } })).maxBytes;
  assert.equal(maxBytes, 2 * 1024 * 1024, "the edge's budget is a quarter of cache.memory");
  assert.equal(
    configSettings(testConfig({ cache: { memory: "1GiB" } })).maxBytes,
    16 * 1024 * 1024,
    "capped at 16 MiB",
  );
  const cache = new EdgeCache({ windowMs: EDGE_WINDOW_MS, maxBytes, now: () => 1_800_000_000_000 });
  const padding = "q".repeat(8000);
  const bodies = [answer(0), answer(300), answer(5000)];
  let most = 0;
  for (let i = 0; i < 60_000; i++) {
    // Keys as a head may carry them: Host, path and a query of up to 8 KiB, all unique.
    cache.put(`gw${i} /file/ab/abcdef12?${padding.slice(0, (i * 7919) % 8000)}${i}`, bodies[i % 3]);
    most = Math.max(most, cache.bytes);
  }
  assertAtMost(most, maxBytes, "edge cache bytes");
  // Even the smallest entry costs its overhead: the count is bounded as well.
  assertAtMost(cache.size, Math.floor(maxBytes / entryCost("", answer(0))), "edge cache entries");
  assert.ok(cache.size > 100, "the edge kept next to nothing");
});

Deno.test("edge cache over the handler: 3,000 unique Host headers on a cached file keep it within its budget", async () => {
  const body = new TextEncoder().encode("print('flood')\n".repeat(40));
  const hash = (await sha256Hex(body)).slice(0, 8);
  const path = `/file/${hash.slice(0, 2)}/${hash}`;
  const up = new FakeUpstream(tempDir()).start();
  up.overrides.set(path, { body });
  const logger = memoryLogger("warn");
  const config = testConfig({ cache: { dir: tempDir(), memory: "1MiB" }, upstreams: { index: up.url, retries: 0 } });
  const app = await createApp({ config, logger });
  const { maxBytes, windowMs } = configSettings(config);
  const cache = new EdgeCache({ windowMs, maxBytes });
  const edge = createEdgeHandler(app.handler, {
    cache,
    record: createRecorder({ logger, requestLog: app.requestLog, metrics: app.metrics }),
  });
  const info = { remoteAddr: { hostname: "10.0.0.7" } };
  try {
    let most = 0;
    const label = "h".repeat(60);
    for (let i = 0; i < 3000; i++) {
      // A client may send any Host it likes; each one is a key of its own (manifests embed the Host).
      const host = `${label}.${label}.${label}.${label}.${label}.${label}.x${i}`;
      const res = await edge(new Request(`http://gw${path}`, { headers: { host } }), info);
      assert.equal(res.status, 200);
      await res.body?.cancel();
      most = Math.max(most, cache.bytes);
    }
    assertAtMost(most, maxBytes, "edge cache bytes");
    assert.ok(cache.size > 10, "the edge kept next to nothing");
  } finally {
    await app.idle();
    await app.close();
    await up.stop();
  }
});
