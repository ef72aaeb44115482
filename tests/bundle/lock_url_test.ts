/**
 * `policy.lock_url`: a site follows its central server's signed lock (`/lock.json`). The site serves only what the
 * central lock holds; a lock the site's keys do not trust keeps the one before in force (said in /healthz); a new
 * trusted lock comes into force at the next read (every cache.ttl); a site restarted while the central server is down
 * keeps the lock it last took; one that never took a lock refuses to start, saying why.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type App, createApp } from "../../src/app.ts";
import { memoryLogger } from "../../src/log.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { standardIndex } from "../fixtures/index_fixture.ts";
import { tempDir, testConfig } from "../helpers.ts";
import { mpyCrossPath } from "../e2e/tools.ts";
import { keygen, mipserver } from "./signing_helpers.ts";

Deno.test({
  name: "policy.lock_url: a site follows the central server's signed lock, refuses an untrusted one, keeps its copy",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const idx = await standardIndex();
    const index = new FakeUpstream(idx.root).start();
    const dir = tempDir("mipserver-lockurl-");
    const officeConfig = join(dir, "office.yaml");
    Deno.writeTextFileSync(
      officeConfig,
      JSON.stringify({ cache: { dir: join(dir, "office") }, upstreams: { index: index.url, retries: 0 } }),
    );
    const [key, stranger] = [await keygen(), await keygen()];
    const lock = async (spec: string, by: { path: string }, name: string) => {
      const out = join(dir, name);
      const r = await mipserver("lock", "--config", officeConfig, "--output", out, "--sign", by.path, spec);
      assert.equal(r.code, 0, r.stderr);
      return out;
    };
    const lock10 = await lock("hello@1.0", key, "10.lock");
    const lock11 = await lock("hello@1.1", key, "11.lock");
    const byStranger = await lock("hello@1.1", stranger, "stranger.lock");
    // The central server follows its lock file (it trusts both keys) and serves it as /lock.json.
    const centralLock = join(dir, "central.lock");
    Deno.copyFileSync(lock10, centralLock);
    const central = await createApp({
      config: testConfig({
        cache: { dir: join(dir, "central") },
        upstreams: { index: index.url, retries: 0 },
        mpy_cross: { path: mpyCrossPath() },
        policy: { lock: centralLock, trusted_keys: [key.publicKey, stranger.publicKey] },
        audit: { enabled: false },
      }),
      logger: memoryLogger("warn"),
    });
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, central.handler);
    const lockUrl = `http://127.0.0.1:${server.addr.port}/lock.json`;
    const siteDir = join(dir, "site");
    const site = (cacheDir = siteDir) =>
      createApp({
        config: testConfig({
          cache: { dir: cacheDir, ttl: "1s" },
          upstreams: { index: index.url, retries: 0 },
          mpy_cross: { path: mpyCrossPath() },
          policy: { lock_url: lockUrl, trusted_keys: [key.publicKey], require_signed: true },
          audit: { enabled: false },
        }),
        logger: memoryLogger("info"),
      });
    const version = async (app: App) => {
      const res = await app.handler(new Request("http://gw/package/6/hello/latest.json", { headers: { host: "gw" } }));
      return res.status === 200 ? (await res.json()).version : `${res.status}`;
    };
    const healthLock = async (app: App) =>
      (await (await app.handler(new Request("http://gw/healthz", { headers: { host: "gw" } }))).json()).lock;
    const until = async (what: string, test: () => Promise<boolean>) => {
      for (let i = 0; i < 100; i++) {
        if (await test()) return;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.fail(`${what} did not happen within 10 s`);
    };
    let s1: App | undefined;
    let s2: App | undefined;
    try {
      // /lock.json is the central lock byte for byte (its signature included).
      const served = await fetch(lockUrl);
      assert.equal(await served.text(), Deno.readTextFileSync(lock10));
      s1 = await site();
      assert.equal(await version(s1), "1.0", "the site serves the central lock's release");
      assert.equal((await healthLock(s1)).packages, 1);
      // The status page says which lock is in force and who signed it.
      const page = await (await s1.handler(new Request("http://gw/", { headers: { host: "gw" } }))).text();
      assert.match(
        page,
        new RegExp(`<span id="lock">1 packages, signed by key <code>${(await healthLock(s1)).signed.key_id}`),
      );
      // The central server takes a lock signed by a key the site does not trust: the site keeps 1.0 and says why.
      Deno.copyFileSync(byStranger, centralLock);
      assert.equal(await central.lock!.reload(), true);
      await until("the refusal", async () => (await healthLock(s1!)).reload?.refused === "untrusted");
      assert.equal(await version(s1), "1.0");
      // A new lock signed by the trusted key comes into force at the next read.
      Deno.copyFileSync(lock11, centralLock);
      assert.equal(await central.lock!.reload(), true);
      await until("the new lock", async () => (await version(s1!)) === "1.1");
      await s1.close();
      s1 = undefined;
      // The central server stops: a site restarted on its cache keeps the lock it last took.
      await server.shutdown();
      s2 = await site();
      assert.equal(await version(s2), "1.1");
      // A site that never took a lock cannot start without one, and says so.
      await assert.rejects(site(join(dir, "new-site")), /Cannot fetch the lock from .*no copy of it is kept/);
    } finally {
      await s1?.close();
      await s2?.close();
      await server.shutdown().catch(() => {});
      await central.close();
      await index.stop();
    }
  },
});

Deno.test("policy.lock and policy.lock_url together are refused", () => {
  assert.throws(
    () => testConfig({ policy: { lock: "/x.lock", lock_url: "http://central:18891/lock.json" } }),
    /policy.lock and policy.lock_url are both set/,
  );
});
