import assert from "node:assert/strict";
import { join } from "node:path";
import { createApp } from "../../src/app.ts";
import { sha256Hex } from "../../src/store/hash.ts";
import { memoryLogger } from "../../src/log.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { buildIndex, type BuiltIndex, standardIndex } from "../fixtures/index_fixture.ts";
import { tempDir, testConfig } from "../helpers.ts";

const T0 = 1_800_000_000_000;

async function setup(overrides: Record<string, unknown> = {}, index?: BuiltIndex) {
  const idx = index ?? await standardIndex();
  const up = new FakeUpstream(idx.root).start();
  let clock = T0;
  const logger = memoryLogger();
  const { upstreams, cache, ...rest } = overrides as { upstreams?: object; cache?: object };
  const config = testConfig({
    cache: { dir: tempDir(), ...cache },
    upstreams: { index: up.url, retries: 0, ...upstreams },
    ...rest,
  });
  const app = await createApp({ config, logger, now: () => clock });
  return {
    app,
    up,
    idx,
    logger,
    config,
    tick: (ms: number) => (clock += ms),
    get: (path: string, init?: RequestInit) => app.handler(new Request(`http://gw${path}`, init)),
    async close() {
      await app.idle();
      await up.stop();
    },
  };
}

type Env = Awaited<ReturnType<typeof setup>>;

async function withEnv(overrides: Record<string, unknown>, fn: (env: Env) => Promise<void>, index?: BuiltIndex) {
  const env = await setup(overrides, index);
  try {
    await fn(env);
  } finally {
    await env.close();
  }
}

const text = async (res: Response) => new TextDecoder().decode(await res.arrayBuffer());
const logged = (env: Env, pattern: RegExp) => env.logger.lines.some((l) => pattern.test(l));

Deno.test("manifest, file and index.json pass through, with Content-Length, ETag and Cache-Control", async () => {
  await withEnv({}, async (env) => {
    const res = await env.get("/package/6/hello/latest.json");
    assert.equal(res.status, 200);
    const manifest = JSON.parse(await text(res));
    assert.equal(manifest.version, "1.1");
    assert.equal(res.headers.get("cache-control"), "public, max-age=60");
    assert.ok(res.headers.get("etag"));
    const [[path, h]] = manifest.hashes;
    assert.equal(path, "hello.mpy");
    const file = await env.get(`/file/${h.slice(0, 2)}/${h}`);
    assert.equal(file.status, 200);
    const bytes = new Uint8Array(await file.arrayBuffer());
    assert.deepEqual(bytes, env.idx.files.get(h));
    assert.equal(file.headers.get("content-length"), String(bytes.length));
    assert.equal(file.headers.get("cache-control"), "public, max-age=31536000, immutable");
    assert.equal(bytes[0], "M".charCodeAt(0));
    const index = await env.get("/index.json");
    assert.deepEqual(JSON.parse(await text(index)).packages.map((p: { name: string }) => p.name), [
      "hello",
      "mathx",
      "bigmod",
    ]);
    const pinned = JSON.parse(await text(await env.get("/package/py/hello/1.0.json")));
    assert.equal(pinned.version, "1.0");
    assert.equal(pinned.hashes[0][0], "hello.py");
  });
});

Deno.test("a second request is a cache hit with no upstream request; the log and metrics say so", async () => {
  await withEnv({}, async (env) => {
    const h = env.idx.hashes.get("6/mathx/0.2/mathx/ops.mpy")!;
    const path = `/file/${h.slice(0, 2)}/${h}`;
    await text(await env.get(path));
    await text(await env.get(path));
    assert.equal(env.up.count(path), 1);
    const entries = env.app.requestLog.query({ path });
    assert.deepEqual(entries.map((e) => e.cache), ["hit", "miss"]);
    assert.equal(typeof entries[1].upstream_ms, "number");
    const metrics = await text(await env.get("/metrics"));
    assert.match(metrics, /mipserver_cache_requests_total\{kind="file",outcome="hit"\} 1/);
    assert.match(metrics, /mipserver_cache_requests_total\{kind="file",outcome="miss"\} 1/);
    assert.match(metrics, /mipserver_cache_bytes_total\{from="cache"\} \d+/);
    assert.match(metrics, /mipserver_upstream_requests_total\{host="127\.0\.0\.1:\d+",status="200"\} \d+/);
  });
});

Deno.test("If-None-Match with the ETag gets 304 without a body; HEAD gets the headers", async () => {
  await withEnv({}, async (env) => {
    const first = await env.get("/package/6/hello/latest.json");
    const etag = first.headers.get("etag")!;
    await text(first);
    const again = await env.get("/package/6/hello/latest.json", { headers: { "if-none-match": etag } });
    assert.equal(again.status, 304);
    assert.equal(again.headers.get("etag"), etag);
    assert.equal(await text(again), "");
    const head = await env.get("/package/6/hello/latest.json", { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("etag"), etag);
    await head.body?.cancel();
  });
});

Deno.test("malformed parameters get 400 with a reason; unknown packages 404", async () => {
  await withEnv({}, async (env) => {
    const cases: [string, number, RegExp][] = [
      ["/package/six/hello/latest.json", 400, /Invalid mpy "six"/],
      ["/package/6/hel%20lo/latest.json", 400, /Invalid name/],
      ["/package/6/hello/1%200.json", 400, /Invalid version/],
      ["/package/6/hello/..x.json", 404, /hello version \.\.x/],
      ["/file/ab/ABCDEF12", 400, /Invalid hash/],
      ["/file/ab/abc", 400, /Invalid hash/],
      [`/file/ab/${"a".repeat(65)}`, 400, /Invalid hash/],
      ["/file/cd/abcdef12", 400, /Invalid h2 "cd": must be the first two characters/],
      ["/file/a/abcdef12", 400, /Invalid h2/],
      ["/package/6/nosuchpkg/latest.json", 404, /nosuchpkg/],
      ["/file/ab/abcdef12", 404, /Not found upstream/],
    ];
    for (const [path, status, reason] of cases) {
      const res = await env.get(path);
      assert.equal(res.status, status, path);
      assert.match(await text(res), reason, path);
    }
  });
});

Deno.test("hostile paths get 4xx and never read a file outside the cache", async () => {
  await withEnv({}, async (env) => {
    const secret = join(env.config.cache.dir!, "..", "secret-outside");
    Deno.writeTextFileSync(secret, "TOP SECRET");
    const hostile = [
      "/file/../../secret-outside",
      "/file/%2e%2e/secret-outside",
      "/file/ab/%2e%2e%2fsecret-outside",
      "/file/ab/..%2f..%2fsecret-outside",
      "/file/ab/ab%00cd",
      "/package/6/..%2f..%2f..%2fsecret-outside/latest.json",
      "/package/6/%2e%2e/latest.json",
      `/package/6/${"x".repeat(5000)}/latest.json`,
      `/file/ab/${"a".repeat(5000)}`,
      "/file/zz/zz000000",
      "/t/x64/../../secret-outside",
      "/t/a%2fb/index.json",
      "/t/nosuch/index.json",
      "/t/x64/package/6/%2e%2e/latest.json",
      "/repo/6/github/acme/kit/main/..%2f..%2fsecret-outside",
      "/repo/6/github/acme/kit/main/x.py",
      "/url/file/etc/passwd",
      "/url/http/127.0.0.1:1/%2e%2e/secret-outside",
      "/url/http/evil.example/x.py",
      "/github/acme/kit/..%2f..%2f/package.json",
      `/github/acme/kit/main/${"a".repeat(5000)}.py`,
    ];
    for (const path of hostile) {
      const res = await env.get(path);
      const body = await text(res);
      assert.ok(res.status >= 400 && res.status < 500, `${path} got ${res.status}`);
      assert.ok(!body.includes("TOP SECRET"), path);
    }
    assert.deepEqual(env.up.log, [], "a hostile request reached upstream");
  });
});

Deno.test("latest.json is fresh for cache.ttl, then served stale while a background refresh runs", async () => {
  const idx = await buildIndex();
  await withEnv({ cache: { ttl: "10m" } }, async (env) => {
    const path = "/package/6/hello/latest.json";
    assert.equal(JSON.parse(await text(await env.get(path))).version, "1.1");
    env.tick(9 * 60_000);
    assert.equal(JSON.parse(await text(await env.get(path))).version, "1.1");
    assert.equal(env.up.count(path), 1, "fresh copy re-fetched");
    env.up.overrides.set(path, { body: JSON.stringify({ v: 1, hashes: [], version: "2.0" }) });
    env.tick(2 * 60_000);
    const stale = await env.get(path);
    assert.equal(JSON.parse(await text(stale)).version, "1.1", "stale copy not served at once");
    assert.equal(env.app.requestLog.query({ path })[0].cache, "stale");
    await env.app.idle();
    assert.equal(env.up.count(path), 2);
    const refreshed = await env.get(path);
    assert.equal(JSON.parse(await text(refreshed)).version, "2.0");
    assert.equal(env.app.requestLog.query({ path })[0].cache, "hit");
  }, idx);
});

Deno.test("stale-if-error: when upstream fails, the stale copy keeps being served with no time limit", async () => {
  await withEnv({}, async (env) => {
    const path = "/package/6/hello/latest.json";
    await text(await env.get(path));
    await text(await env.get("/index.json"));
    await env.up.stop();
    for (const days of [1, 30, 365]) {
      env.tick(days * 86_400_000);
      const res = await env.get(path);
      assert.equal(res.status, 200);
      assert.equal(JSON.parse(await text(res)).version, "1.1");
      assert.equal((await env.get("/index.json")).status, 200);
      await env.app.idle();
    }
    assert.ok(logged(env, /Refresh failed; serving the stale copy/));
    env.up.start();
  });
});

Deno.test("cache.offline never contacts upstream: cached objects are served, others are 503", async () => {
  await withEnv({}, async (env) => {
    await text(await env.get("/package/6/hello/latest.json"));
    await env.app.idle();
    const requestsBefore = env.up.log.length;
    const offline = await createApp({
      config: testConfig({ cache: { dir: env.config.cache.dir, offline: true }, upstreams: { index: env.up.url } }),
      logger: memoryLogger(),
      now: () => T0 + 365 * 86_400_000,
    });
    const get = (path: string) => offline.handler(new Request(`http://gw${path}`));
    const cached = await get("/package/6/hello/latest.json");
    assert.equal(cached.status, 200);
    const manifest = JSON.parse(await text(cached));
    const h = manifest.hashes[0][1];
    assert.equal((await get(`/file/${h.slice(0, 2)}/${h}`)).status, 200, "prefetched file missing offline");
    const missing = await get("/package/6/mathx/latest.json");
    assert.equal(missing.status, 503);
    assert.match(await text(missing), /[Oo]ffline: mathx latest \(6\) was not imported.*[Oo]ffline and not cached/);
    const index = await get("/index.json");
    assert.equal(index.status, 503);
    assert.match(await text(index), /[Oo]ffline: index.json was not imported.*[Oo]ffline and not cached/);
    await offline.idle();
    assert.equal(env.up.log.length, requestsBefore, "offline server contacted upstream");
  });
});

Deno.test("an upstream 404 is remembered for cache.negative_ttl", async () => {
  await withEnv({ cache: { negative_ttl: "1m" } }, async (env) => {
    const path = "/package/6/ghost/latest.json";
    assert.equal((await env.get(path)).status, 404);
    assert.equal((await env.get(path)).status, 404);
    assert.equal(env.up.count(path), 1);
    env.tick(61_000);
    assert.equal((await env.get(path)).status, 404);
    assert.equal(env.up.count(path), 2);
  });
});

Deno.test("1,000 concurrent cold requests for one file make exactly one upstream request", async () => {
  await withEnv({ cache: { prefetch: false } }, async (env) => {
    env.up.delay = 200;
    const h = env.idx.hashes.get("6/bigmod/1.0/bigmod.mpy")!;
    const path = `/file/${h.slice(0, 2)}/${h}`;
    const responses = await Promise.all(Array.from({ length: 1000 }, () => env.get(path)));
    const bodies = await Promise.all(responses.map((r) => r.arrayBuffer()));
    assert.ok(responses.every((r) => r.status === 200));
    assert.ok(bodies.every((b) => b.byteLength === env.idx.files.get(h)!.length));
    assert.equal(env.up.count(path), 1);
  });
});

Deno.test("a hash mismatch is a 502, nothing is stored, and it is logged loudly", async () => {
  await withEnv({}, async (env) => {
    const h = env.idx.hashes.get("6/hello/1.1/hello.mpy")!;
    const path = `/file/${h.slice(0, 2)}/${h}`;
    env.up.overrides.set(path, { body: "tampered bytes" });
    const res = await env.get(path);
    assert.equal(res.status, 502);
    assert.match(await text(res), /Hash mismatch/);
    assert.equal(await env.app.store.has(`files/${h.slice(0, 2)}/${h}`), false);
    assert.ok(env.logger.lines.some((l) => l.includes('"level":"error"') && l.includes("HASH MISMATCH")));
    env.up.overrides.delete(path);
    const good = await env.get(path);
    assert.equal(good.status, 200);
    assert.equal((await sha256Hex(new Uint8Array(await good.arrayBuffer())))!.slice(0, 8), h);
  });
});

Deno.test("an upstream response over upstreams.max_size is refused", async () => {
  await withEnv({ upstreams: { max_size: "10KiB" }, cache: { prefetch: false } }, async (env) => {
    const h = env.idx.hashes.get("6/bigmod/1.0/bigmod.mpy")!;
    const res = await env.get(`/file/${h.slice(0, 2)}/${h}`);
    assert.equal(res.status, 502);
    assert.match(await text(res), /larger than 10240 bytes/);
  });
});

Deno.test("a slow upstream hits the timeouts: 503 with Retry-After, naming the upstream", async () => {
  await withEnv({ upstreams: { connect_timeout: "200ms", timeout: "5s" } }, async (env) => {
    env.up.delay = 1000;
    const res = await env.get("/package/6/hello/latest.json");
    assert.equal(res.status, 503);
    assert.equal(res.headers.get("retry-after"), "10");
    assert.match(await text(res), new RegExp(`did not answer within 200ms: ${env.up.url.replaceAll(".", "\\.")}`));
  });
  await withEnv({ upstreams: { connect_timeout: "5s", timeout: "300ms" } }, async (env) => {
    env.up.trickle = 100;
    const res = await env.get("/package/6/hello/latest.json");
    assert.equal(res.status, 503);
    assert.match(await text(res), /timed out after 300ms/);
  });
});

Deno.test("5xx answers are retried with backoff; upstream failing or down is a 503 naming it; a refusal is a 502", async () => {
  await withEnv({ upstreams: { retries: 2 } }, async (env) => {
    const path = "/package/6/hello/latest.json";
    env.up.overrides.set(path, { failTimes: 2, status: 503 });
    const res = await env.get(path);
    assert.equal(res.status, 200);
    await text(res);
    assert.equal(env.up.count(path), 3);
    env.up.overrides.set("/package/6/mathx/latest.json", { failTimes: 5, status: 500 });
    const failed = await env.get("/package/6/mathx/latest.json");
    assert.equal(failed.status, 503);
    assert.equal(failed.headers.get("retry-after"), "10");
    assert.match(await text(failed), /answered 500/);
    await env.up.stop();
    const down = await env.get("/package/6/bigmod/latest.json");
    assert.equal(down.status, 503);
    assert.match(await text(down), /Cannot reach upstream http:\/\/127\.0\.0\.1:\d+\/pi\/v2\/package/);
    assert.equal(env.app.requestLog.query({ path: "bigmod" })[0].cache, "error");
    env.up.start();
  });
  // A fresh server (the failures above opened the breaker): one request each, no retries.
  await withEnv({ upstreams: { retries: 0 } }, async (env) => {
    // Upstream's own Retry-After and plain-text reason are passed on (a central mipserver's, to a site).
    env.up.overrides.set("/package/6/hello/2.0.json", {
      status: 503,
      body: "Cannot reach upstream https://micropython.org/pi/v2/x: connection refused\nmore",
      headers: { "content-type": "text/plain; charset=utf-8", "retry-after": "7" },
    });
    const told = await env.get("/package/6/hello/2.0.json");
    assert.equal(told.status, 503);
    assert.equal(told.headers.get("retry-after"), "7");
    assert.match(
      await text(told),
      /answered 503: .*\(Cannot reach upstream https:\/\/micropython\.org\/pi\/v2\/x: connection refused\)/,
    );
    // A refusal (a token missing or wrong) will not pass by waiting: 502.
    env.up.overrides.set("/package/6/mathx/1.0.json", { failTimes: 5, status: 403 });
    const refused = await env.get("/package/6/mathx/1.0.json");
    assert.equal(refused.status, 502);
    assert.equal(refused.headers.get("retry-after"), null);
    assert.match(await text(refused), /answered 403/);
  });
});

Deno.test("upstream redirects are followed on the server, at most 5", async () => {
  await withEnv({}, async (env) => {
    const h = env.idx.hashes.get("6/hello/1.0/hello.mpy")!;
    env.up.overrides.set("/package/6/hello/latest.json", { redirect: `${env.up.url}/package/6/hello/1.0.json` });
    const res = await env.get("/package/6/hello/latest.json");
    assert.equal(res.status, 200);
    assert.equal(JSON.parse(await text(res)).hashes[0][1], h);
    for (let i = 0; i < 7; i++) env.up.overrides.set(`/loop${i}`, { redirect: `/pi/v2/loop${i + 1}`, status: 301 });
    env.up.overrides.set("/package/6/mathx/latest.json", { redirect: "/pi/v2/loop0" });
    const loop = await env.get("/package/6/mathx/latest.json");
    assert.equal(loop.status, 502);
    assert.match(await text(loop), /More than 5 redirects/);
  });
});

Deno.test("invalid JSON from upstream is a 502 and is not cached", async () => {
  await withEnv({}, async (env) => {
    env.up.overrides.set("/package/6/hello/latest.json", { body: "{not json" });
    const res = await env.get("/package/6/hello/latest.json");
    assert.equal(res.status, 502);
    assert.match(await text(res), /invalid JSON/);
    env.up.overrides.delete("/package/6/hello/latest.json");
    assert.equal((await env.get("/package/6/hello/latest.json")).status, 200);
  });
});

Deno.test("several indexes: the first that has a package wins, index.json merges them", async () => {
  const fork = await buildIndex([{
    name: "hello",
    description: "the fork's hello",
    versions: [{ version: "9.9", files: { "hello.py": `def hi():\n    return "forked"\n` } }],
  }]);
  const official = await standardIndex();
  const up2 = new FakeUpstream(fork.root).start();
  const up3 = new FakeUpstream(official.root).start();
  try {
    const app = await createApp({
      config: testConfig({ cache: { dir: tempDir() }, upstreams: { index: [up2.url, up3.url], retries: 0 } }),
      logger: memoryLogger(),
    });
    const res = await app.handler(new Request("http://gw/package/6/hello/latest.json"));
    assert.equal(JSON.parse(await text(res)).version, "9.9");
    const m = await app.handler(new Request("http://gw/package/6/mathx/latest.json"));
    assert.equal(JSON.parse(await text(m)).version, "0.2");
    const index = JSON.parse(await text(await app.handler(new Request("http://gw/index.json"))));
    assert.deepEqual(
      index.packages.map((p: { name: string; version: string }) => `${p.name}@${p.version}`),
      ["hello@9.9", "mathx@0.2", "bigmod@1.0"],
    );
    const h = official.hashes.get("6/mathx/0.2/mathx/ops.mpy")!;
    assert.equal((await app.handler(new Request(`http://gw/file/${h.slice(0, 2)}/${h}`))).status, 200);
    const forked = fork.hashes.get("6/hello/9.9/hello.mpy")!;
    assert.equal((await app.handler(new Request(`http://gw/file/${forked.slice(0, 2)}/${forked}`))).status, 200);
    await app.idle();
  } finally {
    await up2.stop();
    await up3.stop();
  }
});

Deno.test("prefetch: once a manifest is fetched its files are cached, so installs survive the uplink dropping", async () => {
  await withEnv({}, async (env) => {
    const manifest = JSON.parse(await text(await env.get("/package/6/mathx/latest.json")));
    await env.app.idle();
    await env.up.stop();
    for (const [, h] of manifest.hashes) {
      const res = await env.get(`/file/${h.slice(0, 2)}/${h}`);
      assert.equal(res.status, 200);
      assert.deepEqual(new Uint8Array(await res.arrayBuffer()), env.idx.files.get(h));
    }
    env.up.start();
  });
});

Deno.test("with prefetch off, files are fetched only when asked for", async () => {
  await withEnv({ cache: { prefetch: false } }, async (env) => {
    await text(await env.get("/package/6/mathx/latest.json"));
    await env.app.idle();
    assert.equal(env.up.count("/file/"), 0);
  });
});
