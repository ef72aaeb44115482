import assert from "node:assert/strict";
import { createApp } from "../../src/app.ts";
import { createEdgeHandler, EDGE_WINDOW_MS, EdgeCache, entryCost } from "../../src/edge/edge.ts";
import type { Shareable } from "../../src/http/responses.ts";
import { createRecorder } from "../../src/http/server.ts";
import { memoryLogger } from "../../src/log.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { buildIndex } from "../fixtures/index_fixture.ts";
import { tempDir, testConfig } from "../helpers.ts";

const T0 = 1_800_000_000_000;

function shared(bytes: number, route = "/file/:h2/:hash"): Shareable {
  const body = new Uint8Array(bytes);
  return {
    route,
    kind: "file",
    outcome: "hit",
    etag: `"e${bytes}"`,
    body,
    headers: { etag: `"e${bytes}"`, "content-length": String(bytes) },
    notModified: { etag: `"e${bytes}"` },
  };
}

Deno.test("the edge cache keeps an answer for its window only", () => {
  let clock = T0;
  const cache = new EdgeCache({ windowMs: 1000, maxBytes: 1 << 20, now: () => clock });
  cache.put("gw /a", shared(10));
  assert.equal(cache.get("gw /a")?.body.byteLength, 10);
  clock += 999;
  assert.ok(cache.get("gw /a"), "gone before its window closed");
  clock += 1;
  assert.equal(cache.get("gw /a"), undefined, "kept past its window");
  assert.equal(cache.size, 0);
  assert.equal(cache.bytes, 0);
});

Deno.test("the edge cache keeps to its byte budget, oldest first, and refuses answers over an eighth of it", () => {
  const one = entryCost("gw /0", shared(1000));
  const cache = new EdgeCache({ windowMs: 1000, maxBytes: one * 8, now: () => T0 });
  for (let i = 0; i < 10; i++) cache.put(`gw /${i}`, shared(1000));
  assert.equal(cache.bytes, one * 8);
  assert.equal(cache.get("gw /0"), undefined, "the oldest answer was kept over budget");
  assert.equal(cache.get("gw /1"), undefined);
  assert.ok(cache.get("gw /9"));
  cache.put("gw /big", shared(1001));
  assert.equal(cache.get("gw /big"), undefined, "an answer over an eighth of the budget was kept");
  cache.put("gw /9", shared(500));
  assert.equal(cache.bytes, one * 7 + entryCost("gw /9", shared(500)), "replacing an answer kept the old one's cost");
});

Deno.test("the edge cache counts keys, headers and the response bytes it makes, not bodies alone", () => {
  const body = shared(100);
  const key = `gw /file/ab/abcd?${"q".repeat(8000)}`;
  const cost = entryCost(key, body);
  assert.ok(cost >= key.length + 3 * 100, `cost ${cost} leaves out the key or the made response bytes`);
  const cache = new EdgeCache({ windowMs: 1000, maxBytes: 1 << 20, now: () => T0 });
  // Thousands of unique query strings on one cached file: the keys, not the shared body, take the memory.
  for (let i = 0; i < 5000; i++) cache.put(`${key}${i}`, body);
  let keyBytes = 0;
  for (let i = 4999; i >= 0 && cache.get(`${key}${i}`); i--) keyBytes += key.length;
  assert.ok(cache.bytes <= 1 << 20, `${cache.bytes} bytes held`);
  assert.ok(keyBytes <= 1 << 20, `the keys alone hold ${keyBytes} bytes, over the 1 MiB budget`);
  assert.equal(cache.size, Math.floor((1 << 20) / cost));
});

Deno.test("expired answers leave the edge cache at the next put or get, not when the budget needs room", () => {
  let clock = T0;
  const cache = new EdgeCache({ windowMs: 1000, maxBytes: 1 << 20, now: () => clock });
  for (let i = 0; i < 100; i++) cache.put(`gw /${i}?${i}`, shared(10));
  assert.equal(cache.size, 100);
  clock += 1000;
  cache.put("gw /new", shared(10));
  assert.equal(cache.size, 1, "expired answers lingered");
  assert.equal(cache.bytes, entryCost("gw /new", shared(10)));
  for (let i = 0; i < 10; i++) cache.put(`gw /${i}`, shared(10));
  clock += 1000;
  assert.equal(cache.get("gw /9"), undefined);
  assert.equal(cache.size, 0, "a get left expired answers behind");
  assert.equal(cache.bytes, 0);
});

Deno.test("a window of 0 turns the edge off", () => {
  const cache = new EdgeCache({ windowMs: 0, maxBytes: 1 << 20, now: () => T0 });
  cache.put("gw /a", shared(10));
  assert.equal(cache.size, 0);
});

/** An app on a fake index, with the edge in front of it, both on one test clock. */
async function setup(ttl = "10m", maxBytes = 1 << 20) {
  const idx = await buildIndex();
  const up = new FakeUpstream(idx.root).start();
  let clock = T0;
  const now = () => clock;
  const logger = memoryLogger();
  const config = testConfig({ cache: { dir: tempDir(), ttl }, upstreams: { index: up.url, retries: 0 } });
  const app = await createApp({ config, logger, now });
  const cache = new EdgeCache({ windowMs: EDGE_WINDOW_MS, maxBytes, now });
  let handled = 0;
  const counted: typeof app.handler = (request, info, share) => {
    handled++;
    return app.handler(request, info, share);
  };
  const record = createRecorder({ logger, requestLog: app.requestLog, metrics: app.metrics });
  const edge = createEdgeHandler(counted, { cache, record, now });
  const info = { remoteAddr: { hostname: "10.0.0.7" } };
  return {
    app,
    up,
    idx,
    cache,
    logger,
    get handled() {
      return handled;
    },
    tick: (ms: number) => (clock += ms),
    get: async (path: string, init?: RequestInit) => await edge(new Request(`http://gw${path}`, init), info),
    async close() {
      await app.idle();
      await up.stop();
    },
  };
}

const text = async (res: Response) => new TextDecoder().decode(await res.arrayBuffer());

Deno.test("the edge repeats a cache hit without the handler, and logs and counts it as a hit", async () => {
  const env = await setup();
  try {
    const path = "/package/6/hello/latest.json";
    const first = await env.get(path); // miss: fetched, not shareable
    const body = await text(first);
    assert.equal(env.cache.size, 0, "a miss was kept by the edge");
    const second = await env.get(path); // hit from the cache: now kept by the edge
    assert.equal(await text(second), body);
    assert.equal(env.cache.size, 1);
    assert.equal(env.handled, 2);

    const third = await env.get(path);
    assert.equal(env.handled, 2, "the handler was asked again inside the window");
    assert.equal(third.status, 200);
    assert.equal(await text(third), body);
    for (const name of ["etag", "cache-control", "content-type", "content-length"]) {
      assert.equal(third.headers.get(name), second.headers.get(name), `${name} differs from the handler's`);
    }
    assert.equal(env.up.count(path), 1);

    const entry = env.app.requestLog.query({ path })[0];
    assert.equal(entry.cache, "hit");
    assert.equal(entry.client, "10.0.0.7");
    assert.equal(entry.route, "/package/:mpy/:name/:version.json");
    assert.equal(entry.bytes, body.length);
    assert.equal(env.app.requestLog.query({ path }).length, 3, "every request is in the request log");
    assert.ok(env.logger.lines.filter((l) => l.includes(`GET ${path} 200`)).length === 3);
    const metrics = (await env.app.metrics.render()).text;
    assert.match(metrics, /mipserver_cache_requests_total\{kind="manifest",outcome="hit"\} 2/);
    assert.match(
      metrics,
      /mipserver_http_requests_total\{route="\/package\/:mpy\/:name\/:version.json",method="GET",status="200"\} 3/,
    );
    assert.match(
      metrics,
      /mipserver_http_request_duration_seconds_count\{route="\/package\/:mpy\/:name\/:version.json"\} 3/,
    );
  } finally {
    await env.close();
  }
});

Deno.test("the edge answers If-None-Match with 304 and HEAD without a body", async () => {
  const env = await setup();
  try {
    const path = "/package/6/hello/latest.json";
    await text(await env.get(path));
    const hit = await env.get(path);
    const etag = hit.headers.get("etag")!;
    await hit.body?.cancel();
    const before = env.handled;
    const notModified = await env.get(path, { headers: { "if-none-match": `W/${etag}` } });
    assert.equal(notModified.status, 304);
    assert.equal(notModified.body, null);
    assert.equal(notModified.headers.get("etag"), etag);
    const head = await env.get(path, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(env.handled, before, "the handler answered what the edge keeps");
    assert.equal(env.app.requestLog.query({ path })[0].bytes, 0, "a HEAD answer counted body bytes");
    assert.equal(env.app.requestLog.query({ path })[1].bytes, 0, "a 304 counted body bytes");
    await head.body?.cancel();
  } finally {
    await env.close();
  }
});

Deno.test("the edge keys on Host and path: another Host or query goes to the handler", async () => {
  const env = await setup();
  try {
    const path = "/package/6/hello/latest.json";
    await text(await env.get(path));
    await text(await env.get(path));
    const before = env.handled;
    await text(await env.get(path, { headers: { host: "other.lan" } }));
    await text(await env.get(`${path}?x=1`));
    assert.equal(env.handled, before + 2);
  } finally {
    await env.close();
  }
});

Deno.test("after its window the edge asks again, so a stale manifest is refreshed as without the edge", async () => {
  const env = await setup("10m");
  try {
    const path = "/package/6/hello/latest.json";
    await text(await env.get(path));
    await text(await env.get(path));
    env.up.overrides.set(path, { body: JSON.stringify({ v: 1, hashes: [], version: "2.0" }) });
    env.tick(11 * 60_000);
    const before = env.handled;
    const stale = await env.get(path);
    assert.equal(env.handled, before + 1, "the edge answered past its window");
    assert.equal(JSON.parse(await text(stale)).version, "1.1");
    assert.equal(env.app.requestLog.query({ path })[0].cache, "stale");
    assert.equal(env.cache.size, 0, "a stale answer was kept by the edge");
    await env.app.idle();
    assert.equal(JSON.parse(await text(await env.get(path))).version, "2.0", "the refresh was not served");
  } finally {
    await env.close();
  }
});

Deno.test("errors, misses and other methods are never kept by the edge", async () => {
  const env = await setup();
  try {
    for (let i = 0; i < 2; i++) {
      assert.equal((await env.get("/package/6/nosuchpkg/latest.json")).status, 404);
      assert.equal((await env.get("/file/zz/zzzz")).status, 400);
      assert.equal((await env.get("/index.json", { method: "POST" })).status, 405);
    }
    assert.equal(env.cache.size, 0);
    assert.equal(env.handled, 6);
  } finally {
    await env.close();
  }
});

Deno.test("thousands of unique query strings on a cached /file/ keep the edge within its budget", async () => {
  const maxBytes = 512 * 1024;
  const env = await setup("10m", maxBytes);
  try {
    const [hash] = env.idx.files.keys();
    const path = `/file/${hash.slice(0, 2)}/${hash}`;
    await text(await env.get(path));
    assert.equal((await env.get(path)).status, 200);
    const padding = "p".repeat(4000);
    let most = 0;
    for (let i = 0; i < 3000; i++) {
      const res = await env.get(`${path}?${padding}${i}`);
      assert.equal(res.status, 200);
      await res.body?.cancel();
      most = Math.max(most, env.cache.bytes);
    }
    assert.ok(most <= maxBytes, `the edge held ${most} bytes against a budget of ${maxBytes}`);
    const keys = env.cache.size * (padding.length + path.length);
    assert.ok(keys <= maxBytes, `${env.cache.size} answers kept: their keys alone take ${keys} bytes`);
    assert.ok(env.cache.size > 10, "the edge kept next to nothing");
  } finally {
    await env.close();
  }
});
