/**
 * `policy.block`: a blocked release is 410 everywhere, cached or not (its manifests, and its files unless an
 * unblocked release uses the same bytes); `latest` falls back to the newest unblocked release.
 */
import assert from "node:assert/strict";
import { type App, createApp } from "../../src/app.ts";
import { createLock } from "../../src/bundle/lock.ts";
import { formatLock } from "../../src/packages/lock_file.ts";
import { compareVersions, newestUnblocked } from "../../src/packages/block_list.ts";
import { memoryLogger } from "../../src/log.ts";
import { join } from "node:path";
import { mpyCrossPath } from "../e2e/tools.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { buildIndex, type BuiltIndex, STANDARD_PACKAGES, TWOFILE } from "../fixtures/index_fixture.ts";
import { startUpstreams, type Upstreams } from "../fixtures/upstreams.ts";
import { tempDir, testConfig } from "../helpers.ts";

const PACKAGES = [...STANDARD_PACKAGES, TWOFILE];

let built: Promise<BuiltIndex> | undefined;

interface Env {
  up: Upstreams;
  index: FakeUpstream;
  built: BuiltIndex;
  cacheDir: string;
  app(extra?: Record<string, unknown>): Promise<{ app: App; get(path: string): Promise<Response> }>;
  stop(): Promise<void>;
}

async function setup(): Promise<Env> {
  built ??= buildIndex(PACKAGES);
  const b = await built;
  const up = await startUpstreams();
  const index = new FakeUpstream(b.root).start();
  const cacheDir = tempDir();
  const apps: App[] = [];
  return {
    up,
    index,
    built: b,
    cacheDir,
    async app(extra = {}) {
      const app = await createApp({
        config: testConfig({
          cache: { dir: cacheDir },
          upstreams: { ...up.upstreams, index: index.url },
          packages: { sensorkit: { source: "github:acme/sensorkit" } },
          mpy_cross: { path: mpyCrossPath() },
          ...extra,
        }),
        logger: memoryLogger(),
      });
      apps.push(app);
      return { app, get: (path) => app.handler(new Request(`http://gw${path}`, { headers: { host: "gw" } })) };
    },
    async stop() {
      for (const app of apps) await app.idle();
      await Promise.all([up.stop(), index.stop()]);
    },
  };
}

async function expect(res: Response, status: number, pattern?: RegExp): Promise<string> {
  const text = await res.text();
  assert.equal(res.status, status, text);
  if (pattern) assert.match(text, pattern);
  return text;
}

const file = (hash: string) => `/file/${hash.slice(0, 2)}/${hash}`;

Deno.test("versions compare part by part; the newest unblocked one is picked", () => {
  assert.ok(compareVersions("1.10", "1.9") > 0);
  assert.ok(compareVersions("1.0-rc1", "1.0") < 0);
  assert.ok(compareVersions("1.0.1", "1.0") > 0);
  assert.ok(compareVersions("v2.0", "1.5") > 0);
  assert.equal(compareVersions("1.0", "1.0"), 0);
  assert.equal(newestUnblocked(["1.9", "1.10", "1.2"], (v) => v === "1.10"), "1.9");
  assert.equal(newestUnblocked(["1.0"], () => true), undefined);
});

Deno.test("a blocked release is 410 even when cached; latest falls back; only files no unblocked release uses are 410", async () => {
  const env = await setup();
  try {
    const h = (key: string) => env.built.hashes.get(key)!;
    // Cached first, without a block.
    const open = await env.app();
    for (const mpy of ["6", "py"]) {
      const m = JSON.parse(await expect(await open.get(`/package/${mpy}/twofile/latest.json`), 200));
      assert.equal(m.version, "2.0");
      for (const [, hash] of m.hashes) await expect(await open.get(file(hash)), 200);
    }
    await open.app.idle();

    const { get } = await env.app({ policy: { block: ["twofile@2.0"] } });
    await expect(
      await get("/package/6/twofile/2.0.json"),
      410,
      /twofile 2\.0 is blocked by policy\.block \(twofile@2\.0\)/,
    );
    for (const mpy of ["6", "py"]) {
      const latest = JSON.parse(await expect(await get(`/package/${mpy}/twofile/latest.json`), 200));
      assert.equal(latest.version, "1.0", "latest falls back to the newest unblocked release");
    }
    await expect(
      await get(file(h("6/twofile/2.0/tf/b.mpy"))),
      410,
      /belongs only to releases blocked by policy\.block/,
    );
    await expect(await get(file(h("py/twofile/2.0/tf/b.py"))), 410);
    assert.equal(h("6/twofile/2.0/tf/a.mpy"), h("6/twofile/1.0/tf/a.mpy"), "the fixture shares a.mpy");
    await expect(await get(file(h("6/twofile/2.0/tf/a.mpy"))), 200);
    await expect(await get(file(h("6/twofile/1.0/tf/b.mpy"))), 200);
    await expect(await get("/package/6/hello/latest.json"), 200);
    const listed = JSON.parse(await expect(await get("/index.json"), 200)).packages as {
      name: string;
      version: string;
      versions: Record<string, string[]>;
    }[];
    const twofile = listed.find((p) => p.name === "twofile")!;
    assert.equal(twofile.version, "1.0");
    assert.deepEqual(twofile.versions, { "6": ["1.0"], py: ["1.0"] });
  } finally {
    await env.stop();
  }
});

Deno.test("blocking a whole package refuses every release and its files; a named release is 410 with no fallback", async () => {
  const env = await setup();
  try {
    const h = (key: string) => env.built.hashes.get(key)!;
    const { get } = await env.app({ policy: { block: ["mathx", "sensorkit@1.1-dev"] } });
    await expect(await get("/package/6/mathx/latest.json"), 410, /mathx is blocked by policy\.block \(mathx\)/);
    await expect(await get("/package/py/mathx/0.2.json"), 410);
    await expect(await get(file(h("6/mathx/0.2/mathx/ops.mpy"))), 410);
    const names = (JSON.parse(await expect(await get("/index.json"), 200)).packages as { name: string }[])
      .map((p) => p.name);
    assert.ok(!names.includes("mathx") && names.includes("hello"), names.join(","));

    // sensorkit's default branch states version 1.1-dev: blocked; the v1.0 tag is not.
    await expect(await get("/package/py/sensorkit/latest.json"), 410, /sensorkit 1\.1-dev is blocked/);
    const v10 = JSON.parse(await expect(await get("/package/py/sensorkit/v1.0.json"), 200));
    const util = v10.hashes.find(([d]: string[]) => d === "sensorkit/util.py")[1];
    const init = v10.hashes.find(([d]: string[]) => d === "sensorkit/__init__.py")[1];
    await expect(await get(file(util)), 200);
    await expect(await get(file(init)), 200);
    // The blocked build's own __init__.py (it states another VERSION) is refused; util.py, the same bytes, is not.
    const head = JSON.parse(Deno.readTextFileSync(join(env.cacheDir, "named/sensorkit/py/_/HEAD.json")));
    const headInit = head.hashes.find(([d]: string[]) => d === "sensorkit/__init__.py")[1];
    assert.notEqual(headInit, init);
    await expect(await get(file(headInit)), 410);
  } finally {
    await env.stop();
  }
});

Deno.test("a lock whose version is blocked answers 410", async () => {
  const env = await setup();
  try {
    const maker = await env.app();
    const lock = await createLock(["twofile"], {
      resolver: maker.app.resolver,
      named: maker.app.named,
      mpy: "6",
      profiles: [],
    });
    await maker.app.idle();
    const path = join(tempDir(), "fleet.lock");
    Deno.writeTextFileSync(path, formatLock(lock));
    const { get } = await env.app({ policy: { lock: path, block: ["twofile@2.0"] } });
    await expect(await get("/package/6/twofile/latest.json"), 410, /twofile 2\.0 is blocked/);
  } finally {
    await env.stop();
  }
});
