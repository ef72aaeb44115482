/**
 * Replicas sharing one S3 bucket (a real SeaweedFS), in one process: each object fetched once between them (leases),
 * the same stored time on both, a purge on one seen by the other within seconds, and S3 stopped (local hits go on,
 * misses answer 503 at once).
 */
import assert from "node:assert/strict";
import { type App, createApp } from "../../src/app.ts";
import { memoryLogger } from "../../src/log.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { standardIndex } from "../fixtures/index_fixture.ts";
import { startSeaweed } from "../fixtures/seaweed.ts";
import { mpyCrossPath } from "../e2e/tools.ts";
import { tempDir, testConfig } from "../helpers.ts";
import { cli, configFile } from "../bundle/helpers.ts";
import { EVENT_POLL_MS } from "../../src/store/tiered/mod.ts";

/** A named package from a local folder: its .py files are compiled by the replicas (once between them). */
const TOOLKIT = (() => {
  const dir = tempDir("mipserver-toolkit-");
  Deno.writeTextFileSync(
    `${dir}/package.json`,
    JSON.stringify({ version: "0.3", urls: [["toolkit/a.py", "a.py"], ["toolkit/b.py", "b.py"]] }),
  );
  Deno.writeTextFileSync(`${dir}/a.py`, "def a():\n    return 'a'\n");
  Deno.writeTextFileSync(`${dir}/b.py`, "def b():\n    return 'b'\n");
  return dir;
})();

async function replica(
  s3: { endpoint: string; bucket: string; accessKey: string; secretKey: string },
  index: string,
  prefix: string,
  dir = tempDir("mipserver-replica-"),
): Promise<{ app: App; get: (path: string) => Promise<Response>; lines: string[]; dir: string }> {
  const logger = memoryLogger("info");
  const app = await createApp({
    config: testConfig({
      server: { port: 18891, public_url: "http://gw" },
      cache: {
        dir,
        store: "s3",
        s3: { endpoint: s3.endpoint, bucket: s3.bucket, prefix },
      },
      upstreams: { index, retries: 0 },
      targets: { lan: {} },
      packages: { toolkit: { source: `local:${TOOLKIT}` } },
      mpy_cross: { path: mpyCrossPath() },
      audit: { enabled: false },
    }),
    logger,
    env: { AWS_ACCESS_KEY_ID: s3.accessKey, AWS_SECRET_ACCESS_KEY: s3.secretKey },
  });
  const get = (path: string) => app.handler(new Request(`http://gw${path}`, { headers: { host: "gw" } }));
  return { app, get, lines: logger.lines, dir };
}

Deno.test({
  name: "replicas on one bucket: one upstream fetch and one compile per object between them, same bytes, same age",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const s3 = await startSeaweed();
    const idx = await standardIndex();
    const up = new FakeUpstream(idx.root).start();
    up.delay = 150; // a slow upstream, so the replicas' misses overlap
    const a = await replica(s3, up.url, "fleet/");
    const b = await replica(s3, up.url, "fleet/");
    try {
      const paths = [
        "/package/6/hello/latest.json",
        "/package/6/mathx/latest.json",
        "/t/lan/package/6/hello/latest.json",
        "/package/6/toolkit/latest.json",
        "/t/lan/package/6/toolkit/latest.json",
      ];
      const answers = await Promise.all(
        [...paths, ...paths, ...paths].map((p, i) =>
          (i % 2 ? a : b).get(p).then(async (r) => [p, r.status, await r.text()])
        ),
      );
      for (const [p, status, body] of answers) assert.equal(status, 200, `${p}: ${body}`);
      for (const p of paths) {
        const bodies = new Set(answers.filter(([q]) => q === p).map(([, , body]) => body));
        assert.equal(bodies.size, 1, `${p}: one body on both replicas`);
      }
      assert.equal(up.counts.get("/package/6/hello/latest.json"), 1, "hello fetched once between two replicas");
      assert.equal(up.counts.get("/package/6/mathx/latest.json"), 1);
      // Files: each replica asks for every file; upstream sees each once.
      const manifest = JSON.parse(answers.find(([p]) => p === paths[0])![2] as string);
      for (const [, h] of manifest.hashes) {
        const [ra, rb] = await Promise.all([
          a.get(`/file/${h.slice(0, 2)}/${h}`),
          b.get(`/file/${h.slice(0, 2)}/${h}`),
        ]);
        assert.equal(ra.status, 200);
        assert.deepEqual(new Uint8Array(await ra.arrayBuffer()), new Uint8Array(await rb.arrayBuffer()));
        assert.equal(up.counts.get(`/file/${h.slice(0, 2)}/${h}`), 1, `file ${h} fetched once`);
      }
      const leases = (await (await a.get("/healthz")).json()).cache;
      assert.equal(leases.store, "s3");
      assert.equal(leases.shared.reachable, true);
      assert.ok(!JSON.stringify(leases).includes(s3.secretKey), "no credentials in /healthz");
      assert.ok(leases.leases.taken >= 3, JSON.stringify(leases.leases));
      const metrics = await (await a.get("/metrics")).text();
      assert.match(metrics, /mipserver_store_shared_requests_total\{method="PUT",status="200"\} [1-9]/);
      assert.match(metrics, /mipserver_store_shared_request_duration_seconds_count\{method="GET"\} [1-9]/);
      assert.match(metrics, /mipserver_store_leases_total\{outcome="taken"\} [1-9]/);
      assert.match(metrics, /mipserver_store_shared_up 1/);
      assert.ok(!metrics.includes(s3.secretKey));
      // Compiled once between them: the compiles both replicas ran add up to the compiled objects in the bucket.
      const compiled = async (r: typeof a) =>
        Number(
          /mipserver_compiles_total\{result="compiled"\} (\d+)/.exec(await (await r.get("/metrics")).text())?.[1] ?? 0,
        );
      const objects = (await Array.fromAsync(a.app.store.keys("compiled"))).length;
      assert.ok(objects > 0, "something was compiled for the lan profile");
      assert.equal((await compiled(a)) + (await compiled(b)), objects);
      // The same stored time on both: what one fetched is as fresh on the other.
      const key = (await Array.fromAsync(a.app.store.keys("index"))).find((k) => k.endsWith("hello/latest.json"))!;
      assert.equal((await a.app.store.get(key))!.storedAt, (await b.app.store.get(key))!.storedAt);
    } finally {
      await a.app.close();
      await b.app.close();
      await up.stop();
      await s3.stop();
    }
  },
});

Deno.test({
  name:
    "replicas on one bucket: a purge on one is seen by the other; S3 down: local hits go on, misses answer 503 naming the store, fast",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const s3 = await startSeaweed();
    const idx = await standardIndex();
    const up = new FakeUpstream(idx.root).start();
    const a = await replica(s3, up.url, "");
    const b = await replica(s3, up.url, "");
    try {
      const manifest = await (await a.get("/package/6/hello/latest.json")).json();
      const [, h] = manifest.hashes[0];
      const file = `/file/${h.slice(0, 2)}/${h}`;
      assert.equal((await b.get(file)).status, 200);
      assert.equal(up.counts.get(file), 1);
      // Purge the file on A (what `mipserver purge` does through the store): B drops its local copy within seconds.
      const key = `files/${h.slice(0, 2)}/${h}`;
      assert.equal(await a.app.store.remove([key]), 1);
      const deadline = Date.now() + EVENT_POLL_MS * 3 + 2_000;
      while (Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 250));
        // B's local tier no longer has it: a read goes to S3, which has not got it either.
        if (!(await b.app.store.has(key))) break;
      }
      assert.equal(await b.app.store.has(key), false, "B still holds the purged file after 10 s");
      // S3 stops: B's local hits go on; a miss answers 503 naming the store, and fast once it is known down.
      const local = "/package/6/hello/latest.json";
      assert.equal((await b.get(local)).status, 200);
      await s3.stop();
      assert.equal((await b.get(local)).status, 200, "a local hit never waits on S3");
      for (let i = 0; i < 5; i++) {
        const r = await b.get(`/package/6/mathx/latest.json`);
        const text = await r.text();
        assert.equal(r.status, 503, text);
        assert.match(text, /S3 store|shared store/);
      }
      // Known down: the later misses were refused without a call to S3 (no timeout waited for).
      const shared = (await (await b.get("/healthz")).json()).cache.shared;
      assert.equal(shared.reachable, false);
      assert.ok(shared.refused > 0, `refused ${shared.refused}`);
      // A replica (re)started while S3 is down starts on its local tier: hits served, misses 503, the cause logged.
      const c = await replica(s3, up.url, "", b.dir);
      try {
        assert.equal((await c.get(local)).status, 200);
        const miss = await c.get("/package/6/mathx/latest.json");
        assert.equal(miss.status, 503, await miss.text());
        assert.ok(c.lines.some((l) => l.includes("The shared store cannot be reached")), c.lines.join("\n"));
      } finally {
        await c.app.close();
      }
    } finally {
      await a.app.close().catch(() => {});
      await b.app.close().catch(() => {});
      await up.stop();
      await s3.stop();
    }
  },
});

Deno.test({
  name: "warm, export, import and purge work on an S3-configured cache; a replica serves what was imported",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const s3 = await startSeaweed();
    const idx = await standardIndex();
    const up = new FakeUpstream(idx.root).start();
    const saved = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"].map((k) => [k, Deno.env.get(k)] as const);
    Deno.env.set("AWS_ACCESS_KEY_ID", s3.accessKey);
    Deno.env.set("AWS_SECRET_ACCESS_KEY", s3.secretKey);
    const shared = (prefix: string, extra: Record<string, unknown> = {}) =>
      configFile({
        cache: {
          dir: tempDir("mipserver-s3-cmd-"),
          store: "s3",
          s3: { endpoint: s3.endpoint, bucket: s3.bucket, prefix },
          ...extra,
        },
        upstreams: { index: up.url, retries: 0 },
        mpy_cross: { path: mpyCrossPath() },
      });
    let site: Awaited<ReturnType<typeof replica>> | undefined;
    try {
      // The office warms into its bucket prefix and exports from it.
      const office = shared("office/");
      assert.equal(await cli("warm", "--config", office, "hello"), 0);
      const bundle = `${tempDir("mipserver-s3-bundle-")}/hello.tar.gz`;
      assert.equal(await cli("export", "--config", office, "--output", bundle, "hello"), 0);
      // The site imports into its own prefix; a replica of the site (another cache.dir) serves it offline.
      const siteConfig = shared("site/");
      assert.equal(await cli("import", "--config", siteConfig, bundle), 0);
      const fetchedBefore = up.counts.get("/package/6/hello/latest.json");
      site = await replica(s3, `http://127.0.0.1:1/nothing`, "site/");
      const res = await site.get("/package/6/hello/latest.json");
      const manifest = await res.json();
      assert.equal(res.status, 200, JSON.stringify(manifest));
      const [, h] = manifest.hashes[0];
      const file = await site.get(`/file/${h.slice(0, 2)}/${h}`);
      assert.equal(file.status, 200);
      assert.deepEqual(new Uint8Array(await file.arrayBuffer()), idx.files.get(h));
      assert.equal(up.counts.get("/package/6/hello/latest.json"), fetchedBefore, "served from the bucket");
      // Purge on the office prefix removes the office's hello objects from the bucket.
      const office2 = await replica(s3, up.url, "office/");
      try {
        const helloKeys = async () =>
          (await Array.fromAsync(office2.app.store.keys(""))).filter((k) => /hello/.test(k) || k.startsWith("files/"));
        assert.ok((await helloKeys()).length >= 3, `before the purge: ${await helloKeys()}`);
        assert.equal(await cli("purge", "--config", office, "hello"), 0);
        assert.deepEqual(await helloKeys(), [], "the office's hello objects are gone from the bucket");
      } finally {
        await office2.app.close();
      }
    } finally {
      for (const [k, v] of saved) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
      await site?.app.close();
      await up.stop();
      await s3.stop();
    }
  },
});
