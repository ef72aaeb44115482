/**
 * `mipserver lock` and `policy.lock`, against the fake index and GitHub: the lock of a package with dependencies,
 * stable across runs; lock mode refusing other versions, packages and variants (403), `latest` resolving to the
 * locked version; upstream re-publishing changed bytes (locked bytes served from the cache or by hash, else 502
 * LOCK MISMATCH, never the changed bytes).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type App, createApp } from "../../src/app.ts";
import { createLock } from "../../src/bundle/lock.ts";
import { formatLock, type LockFile, lockProtects, lockWarmList, parseLock } from "../../src/packages/lock_file.ts";
import { sha256Hex } from "../../src/store/hash.ts";
import { memoryLogger } from "../../src/log.ts";
import { main } from "../../src/main.ts";
import { mpyCrossPath } from "../e2e/tools.ts";
import { standardIndex } from "../fixtures/index_fixture.ts";
import { startUpstreams, type Upstreams } from "../fixtures/upstreams.ts";
import { tempDir, testConfig } from "../helpers.ts";

const dec = new TextDecoder();
const TARGETS = { esp32: { march: "xtensawin" } };
const PACKAGES = { sensorkit: { source: "github:acme/sensorkit" } };

async function makeApp(up: Upstreams, extra: Record<string, unknown> = {}): Promise<{
  app: App;
  logger: ReturnType<typeof memoryLogger>;
  get(path: string): Promise<Response>;
}> {
  const logger = memoryLogger("debug");
  const app = await createApp({
    config: testConfig({
      cache: { dir: tempDir() },
      upstreams: up.upstreams,
      packages: PACKAGES,
      targets: TARGETS,
      mpy_cross: { path: mpyCrossPath() },
      ...extra,
    }),
    logger,
  });
  const get = (path: string) => app.handler(new Request(`http://gw${path}`, { headers: { host: "gw" } }));
  return { app, logger, get };
}

async function lockWith(app: App, specs: string[]): Promise<LockFile> {
  const lock = await createLock(specs, {
    resolver: app.resolver,
    named: app.named,
    mpy: String(app.compiler.version!.major),
    profiles: app.compiler.profiles(),
  });
  await app.idle();
  return lock;
}

async function json(res: Response): Promise<Record<string, unknown>> {
  const text = await res.text();
  assert.equal(res.status, 200, text);
  return JSON.parse(text);
}

async function refused(res: Response, status: number, pattern: RegExp): Promise<void> {
  const text = await res.text();
  assert.equal(res.status, status, text);
  assert.match(text, pattern);
}

function writeLock(lock: LockFile): string {
  const path = join(tempDir(), "fleet.lock");
  Deno.writeTextFileSync(path, formatLock(lock));
  return path;
}

Deno.test("lock records every file of a package and its dependencies, for py, the mpy version and each profile; stable across runs", async () => {
  const up = await startUpstreams();
  try {
    const first = await makeApp(up);
    const lock = await lockWith(first.app, ["sensorkit"]);
    assert.deepEqual(Object.keys(lock.packages).sort(), [
      "hello",
      "repo:github/acme/helpers/main/package.json",
      "sensorkit",
    ]);
    assert.equal(lock.mpy, "6");
    assert.deepEqual(lock.profiles, ["esp32"]);
    const hello = lock.packages.hello;
    assert.equal(hello.kind, "index");
    assert.equal(hello.version, "1.1");
    const sensorkit = lock.packages.sensorkit;
    assert.equal(sensorkit.kind, "named");
    assert.equal(sensorkit.ref, "HEAD");
    assert.equal(sensorkit.version, "1.1-dev");
    assert.deepEqual(sensorkit.deps, ["hello", "repo:github/acme/helpers/main/package.json"]);
    for (const pkg of Object.values(lock.packages)) {
      assert.deepEqual(Object.keys(pkg.files).sort(), ["6", "py", "t/esp32/6"]);
    }
    assert.deepEqual(Object.keys(sensorkit.files.py).sort(), ["sensorkit/__init__.py", "sensorkit/util.py"]);
    assert.deepEqual(Object.keys(sensorkit.files["t/esp32/6"]).sort(), [
      "sensorkit/__init__.mpy",
      "sensorkit/util.mpy",
    ]);
    // Every hash is the full sha256 of the bytes a device gets.
    const index = await standardIndex();
    const helloMpy = index.files.get(index.hashes.get("6/hello/1.1/hello.mpy")!)!;
    assert.equal(hello.files["6"]["hello.mpy"], await sha256Hex(helloMpy));
    for (const pkg of Object.values(lock.packages)) {
      for (const files of Object.values(pkg.files)) {
        for (const hash of Object.values(files)) {
          // Without a lock, index files are served by the short hash the index names them by.
          const asked = pkg.kind === "index" ? hash.slice(0, 8) : hash;
          const res = await first.get(`/file/${hash.slice(0, 2)}/${asked}`);
          assert.equal(await sha256Hex(new Uint8Array(await res.arrayBuffer())), hash);
        }
      }
    }
    // A second run on another cache gives the same text; the text is sorted and reads back unchanged.
    const text = formatLock(lock);
    const second = await makeApp(up);
    assert.equal(formatLock(await lockWith(second.app, ["sensorkit"])), text);
    assert.equal(formatLock(parseLock(text, "test")), text);
    assert.match(text, /^\{\n {2}"lock": 1,\n {2}"mpy": "6",\n {2}"packages": \{\n {4}"hello": \{/);
    // warm --from and the eviction hook read the same lock.
    assert.deepEqual(lockWarmList(lock), {
      specs: ["hello@1.1", "sensorkit@HEAD"],
      mpy: ["py", "6"],
      profiles: ["esp32"],
    });
    const protects = lockProtects(lock);
    const h = hello.files.py["hello.py"];
    assert.ok(protects(`files/${h.slice(0, 2)}/${h}`) && protects(`files/${h.slice(0, 2)}/${h.slice(0, 8)}`));
    assert.ok(!protects(`files/${h.slice(0, 2)}/${"0".repeat(64)}`) && !protects("index/x/index.json"));
  } finally {
    await up.stop();
  }
});

Deno.test("lock reads a PyPI package's latest as the release it is now", async () => {
  const up = await startUpstreams();
  try {
    const { app } = await makeApp(up, { packages: { sensorlib: { source: "pypi:sensorlib" } } });
    const lock = await lockWith(app, ["sensorlib"]);
    const entry = lock.packages.sensorlib;
    assert.equal(entry.kind, "named");
    assert.notEqual(entry.version, "latest");
    assert.equal(entry.ref, entry.version, "a fixed release, not whatever latest is later");
  } finally {
    await up.stop();
  }
});

Deno.test("lock refuses a closure asking for two versions of one package, and a package upstream does not have", async () => {
  const up = await startUpstreams();
  try {
    const { app } = await makeApp(up);
    await assert.rejects(
      lockWith(app, ["hello@1.0", "hello@1.1"]),
      /Conflicting versions of hello in the closure: 1\.1/,
    );
    await assert.rejects(lockWith(app, ["nosuchpkg"]), /Cannot lock nosuchpkg \(py\): 404/);
  } finally {
    await up.stop();
  }
});

Deno.test("lock mode: latest is the locked version; other versions, packages, variants and files are 403", async () => {
  const up = await startUpstreams();
  try {
    const maker = await makeApp(up);
    const lock = await lockWith(maker.app, ["hello@1.0", "sensorkit@v1.0"]);
    assert.equal(lock.packages.hello.version, "1.0");
    const path = writeLock(lock);
    const { get, app } = await makeApp(up, { policy: { lock: path } });
    try {
      const latest = await json(await get("/package/6/hello/latest.json"));
      assert.equal(latest.version, "1.0");
      assert.deepEqual(latest.hashes, [["hello.mpy", lock.packages.hello.files["6"]["hello.mpy"]]]);
      assert.equal((await json(await get("/package/py/hello/1.0.json"))).version, "1.0");
      await refused(
        await get("/package/6/hello/1.1.json"),
        403,
        /hello 1\.1 is not allowed: the lock file .* locks hello at 1\.0/,
      );
      await refused(
        await get("/package/6/mathx/latest.json"),
        403,
        /Package mathx is not allowed: it is not in the lock file/,
      );
      await refused(await get("/package/5/hello/latest.json"), 403, /has no hashes for variant 5/);
      // The named package at its locked ref, its repository dependency, and the same through a profile.
      const sk = await json(await get("/t/esp32/package/6/sensorkit/latest.json"));
      assert.equal(sk.version, "1.0");
      assert.deepEqual(sk.hashes, Object.entries(lock.packages.sensorkit.files["t/esp32/6"]).sort());
      await refused(await get("/package/6/sensorkit/main.json"), 403, /not allowed/);
      const dep = await json(await get("/t/esp32/repo/6/github/acme/helpers/main/package.json"));
      assert.deepEqual(
        dep.hashes,
        Object.entries(lock.packages["repo:github/acme/helpers/main/package.json"].files["t/esp32/6"]),
      );
      await refused(await get("/repo/6/github/acme/cyca/main/package.json"), 403, /not in the lock file/);
      // Ad-hoc mirror installs are outside the lock.
      await refused(
        await get("/github/acme/helpers/main/package.json"),
        403,
        /no package in the lock file .* depends on it/,
      );
      // Files: locked bytes only.
      const h = lock.packages.hello.files.py["hello.py"];
      const file = await get(`/file/${h.slice(0, 2)}/${h}`);
      assert.equal(await sha256Hex(new Uint8Array(await file.arrayBuffer())), h);
      const index = await standardIndex();
      const other = index.hashes.get("py/hello/1.1/hello.py")!;
      await refused(await get(`/file/${other.slice(0, 2)}/${other}`), 403, /lists no such file/);
      // index.json lists the locked packages at their locked versions.
      const listed = (await json(await get("/index.json"))).packages as {
        name: string;
        version: string;
        versions: Record<string, string[]>;
      }[];
      assert.deepEqual(listed.map((p) => `${p.name}@${p.version}`).sort(), ["hello@1.0", "sensorkit@1.0"]);
      assert.deepEqual(listed.find((p) => p.name === "hello")!.versions, { "6": ["1.0"], py: ["1.0"] });
    } finally {
      await app.idle();
    }
  } finally {
    await up.stop();
  }
});

Deno.test("lock mode: an index release re-published with changed bytes is served as locked, from the cache or by hash; else 502 LOCK MISMATCH", async () => {
  const up = await startUpstreams();
  try {
    const index = await standardIndex();
    const maker = await makeApp(up);
    const cacheDir = maker.app.store.location;
    const lock = await lockWith(maker.app, ["hello"]);
    const path = writeLock(lock);
    const locked = lock.packages.hello.files["6"]["hello.mpy"];
    // Upstream re-publishes 1.1 with other bytes.
    const changed = new TextEncoder().encode("M\x06\x00\x1fchanged bytes");
    const changedHash = (await sha256Hex(changed)).slice(0, 8);
    const republished = JSON.stringify({ v: 1, version: "1.1", hashes: [["hello.mpy", changedHash]] });
    for (const v of ["1.1", "latest"]) up.index.overrides.set(`/package/6/hello/${v}.json`, { body: republished });
    up.index.overrides.set(`/file/${changedHash.slice(0, 2)}/${changedHash}`, { body: changed });

    const check = async (app: App, get: (p: string) => Promise<Response>) => {
      const m = await json(await get("/package/6/hello/latest.json"));
      assert.deepEqual(m.hashes, [["hello.mpy", locked]]);
      const res = await get(`/file/${locked.slice(0, 2)}/${locked}`);
      const body = new Uint8Array(await res.arrayBuffer());
      assert.equal(res.status, 200);
      assert.equal(await sha256Hex(body), locked, "the locked bytes, never the changed ones");
      await refused(await get(`/file/${changedHash.slice(0, 2)}/${changedHash}`), 403, /lists no such file/);
      await app.idle();
    };
    // The same cache the lock was made on: from the cache.
    const cached = await makeApp(up, { policy: { lock: path }, cache: { dir: cacheDir } });
    await check(cached.app, cached.get);
    // A new cache: the old file is still upstream under its hash.
    const fresh = await makeApp(up, { policy: { lock: path } });
    await check(fresh.app, fresh.get);
    // A new cache and the old file gone upstream: 502 LOCK MISMATCH, for the manifest and the file.
    const short = index.hashes.get("6/hello/1.1/hello.mpy")!;
    up.index.overrides.set(`/file/${short.slice(0, 2)}/${short}`, { status: 404 });
    const gone = await makeApp(up, { policy: { lock: path } });
    await refused(await gone.get("/package/6/hello/latest.json"), 502, /LOCK MISMATCH/);
    await refused(await gone.get(`/file/${locked.slice(0, 2)}/${locked}`), 502, /LOCK MISMATCH/);
    assert.ok(gone.logger.lines.some((l) => l.includes("LOCK MISMATCH")));
    await gone.app.idle();
  } finally {
    await up.stop();
  }
});

Deno.test("lock mode: with upstream down, a locked index package is served from the lock and the cached files", async () => {
  const up = await startUpstreams();
  try {
    const maker = await makeApp(up);
    const lock = await lockWith(maker.app, ["hello"]);
    const path = writeLock(lock);
    await up.index.stop();
    // The index's manifests of hello gone from the cache too: only the lock and the cached files are left.
    const manifests: string[] = [];
    for await (const key of maker.app.store.keys("index")) if (key.includes("/hello/")) manifests.push(key);
    assert.ok(manifests.length > 0);
    await maker.app.store.remove(manifests);
    const { app, get, logger } = await makeApp(up, {
      policy: { lock: path },
      cache: { dir: maker.app.store.location },
    });
    for (const variant of ["py", "6"]) {
      const m = await json(await get(`/package/${variant}/hello/latest.json`));
      assert.deepEqual(m, { v: 1, version: "1.1", hashes: Object.entries(lock.packages.hello.files[variant]) });
      const [[, hash]] = m.hashes as [string, string][];
      const res = await get(`/file/${hash.slice(0, 2)}/${hash}`);
      assert.equal(await sha256Hex(new Uint8Array(await res.arrayBuffer())), hash);
    }
    assert.ok(logger.lines.some((l) => l.includes("Serving a locked manifest from the lock alone")));
    await app.idle();
  } finally {
    await up.stop();
  }
});

Deno.test("lock mode: a named package whose branch changes keeps serving the locked bytes from the cache; a cache without them answers 502 LOCK MISMATCH", async () => {
  const up = await startUpstreams();
  try {
    const maker = await makeApp(up);
    const cacheDir = maker.app.store.location;
    const lock = await lockWith(maker.app, ["sensorkit"]);
    const path = writeLock(lock);
    for (const ref of ["main", "HEAD"]) {
      Deno.writeTextFileSync(
        join(up.githubRoot, `acme/sensorkit/${ref}/sensorkit/util.py`),
        "def scale(x):\n    return x * 1000\n",
      );
    }
    const cached = await makeApp(up, { policy: { lock: path }, cache: { dir: cacheDir, ttl: "1ms" } });
    for (const variant of ["py", "6"]) {
      const m = await json(await cached.get(`/package/${variant}/sensorkit/latest.json`));
      await cached.app.idle(); // the stale manifest is rebuilt from the changed branch meanwhile
      const again = await json(await cached.get(`/package/${variant}/sensorkit/latest.json`));
      assert.deepEqual(again.hashes, m.hashes);
      assert.deepEqual(m.hashes, Object.entries(lock.packages.sensorkit.files[variant]).sort());
      for (const [, hash] of m.hashes as [string, string][]) {
        const res = await cached.get(`/file/${hash.slice(0, 2)}/${hash}`);
        assert.equal(res.status, 200);
        const body = new Uint8Array(await res.arrayBuffer());
        assert.equal(await sha256Hex(body), hash);
        assert.doesNotMatch(dec.decode(body), /1000/);
      }
    }
    assert.ok(cached.logger.lines.some((l) => l.includes("LOCK MISMATCH: upstream differs from the lock")));
    const fresh = await makeApp(up, { policy: { lock: path } });
    await refused(
      await fresh.get("/package/py/sensorkit/latest.json"),
      502,
      /LOCK MISMATCH: sensorkit 1\.1-dev: sensorkit\/util\.py/,
    );
    await fresh.app.idle();
  } finally {
    await up.stop();
  }
});

Deno.test("mipserver lock writes the lock file; a server with policy.lock reads it; a broken lock file stops the start", async () => {
  const up = await startUpstreams();
  try {
    const dir = tempDir();
    const config = join(dir, "config.yaml");
    Deno.writeTextFileSync(
      config,
      JSON.stringify({
        cache: { dir: join(dir, "cache") },
        upstreams: up.upstreams,
        mpy_cross: { path: mpyCrossPath() },
        log: { level: "warn" },
      }),
    );
    const out = join(dir, "fleet.lock");
    assert.equal(await main(["lock", "--config", config, "--output", out, "hello@1.0", "mathx"]), 0);
    const lock = parseLock(Deno.readTextFileSync(out), out);
    assert.deepEqual(Object.keys(lock.packages), ["hello", "mathx"]);
    assert.equal(lock.packages.hello.version, "1.0");
    assert.deepEqual(lock.roots, ["hello@1.0", "mathx"]);
    assert.equal(await main(["lock", "--config", config, "--output", join(dir, "x.lock"), "nosuchpkg"]), 1);
    assert.throws(() => Deno.statSync(join(dir, "x.lock")), Deno.errors.NotFound);
    assert.equal(await main(["lock", "--config", config]), 2);
    // warm --from a lock file that cannot be read stops with the reason.
    assert.equal(await main(["warm", "--config", config, "--from", join(dir, "missing.lock")]), 2);

    const logger = memoryLogger();
    const ok = await createApp({ config: testConfig({ cache: { dir: tempDir() }, policy: { lock: out } }), logger });
    assert.ok(ok.resolver);
    Deno.writeTextFileSync(out, `{"lock": 1, "mpy": "6"}`);
    await assert.rejects(
      createApp({ config: testConfig({ cache: { dir: tempDir() }, policy: { lock: out } }), logger }),
      /Cannot read the lock file .*fleet\.lock: profiles/,
    );
  } finally {
    await up.stop();
  }
});

Deno.test("lock mode with cache.max_size: what the lock names is never evicted, what it does not name goes first", async () => {
  const up = await startUpstreams();
  try {
    const cacheDir = tempDir();
    const maker = await makeApp(up, { cache: { dir: cacheDir } });
    const lock = await lockWith(maker.app, ["hello@1.0"]);
    // Fill the cache with files the lock does not name (bigmod is about 40 KB of source).
    const index = await standardIndex();
    const others = ["py/bigmod/1.0/bigmod.py", "py/hello/1.1/hello.py", "py/mathx/0.2/mathx/__init__.py"]
      .map((k) => index.hashes.get(k)).filter((h): h is string => h !== undefined);
    assert.ok(others.length >= 2, "fixture files to fill the cache with");
    for (const h of others) assert.equal((await maker.get(`/file/${h.slice(0, 2)}/${h}`)).status, 200);
    await maker.app.idle();
    const locked = [...new Set(Object.values(lock.packages.hello.files).flatMap((f) => Object.values(f)))];
    const onDisk = (h: string) => {
      try {
        return [...Deno.readDirSync(join(cacheDir, "files", h.slice(0, 2)))].some((e) => h.startsWith(e.name));
      } catch {
        return false;
      }
    };
    assert.ok(locked.every(onDisk), "the lock's files were cached while locking");
    assert.ok(others.every(onDisk));
    // A server under the lock with a limit below even the locked files: every unlocked file goes at start, the locked
    // ones stay although they alone exceed it.
    const { app, get } = await makeApp(up, {
      cache: { dir: cacheDir, max_size: 64 },
      policy: { lock: writeLock(lock) },
    });
    try {
      assert.ok(locked.every(onDisk), "no locked object was evicted");
      assert.ok(!others.some(onDisk), "the unlocked objects were evicted to fit the limit");
      const health = await json(await get("/healthz"));
      assert.ok((health.cache as { evictions: number }).evictions >= others.length);
      const h = lock.packages.hello.files.py["hello.py"];
      const file = await get(`/file/${h.slice(0, 2)}/${h}`);
      assert.equal(await sha256Hex(new Uint8Array(await file.arrayBuffer())), h);
    } finally {
      await app.idle();
    }
  } finally {
    await up.stop();
  }
});

Deno.test("warm --from a lock fills another cache with exactly what the lock needs; served from it with upstream gone", async () => {
  const up = await startUpstreams();
  const dir = tempDir();
  const writeConfig = (name: string, cache: string, extra: Record<string, unknown> = {}) => {
    const path = join(dir, name);
    Deno.writeTextFileSync(
      path,
      JSON.stringify({
        cache: { dir: join(dir, cache) },
        upstreams: up.upstreams,
        mpy_cross: { path: mpyCrossPath() },
        log: { level: "warn" },
        ...extra,
      }),
    );
    return path;
  };
  const out = join(dir, "fleet.lock");
  let stopped = false;
  try {
    assert.equal(await main(["lock", "--config", writeConfig("a.yaml", "a"), "--output", out, "hello@1.0"]), 0);
    const lock = parseLock(Deno.readTextFileSync(out), out);
    assert.equal(await main(["warm", "--config", writeConfig("b.yaml", "b"), "--from", out]), 0);
    await up.stop();
    stopped = true;
    // A server on the warmed cache, upstreams gone: the locked release installs as py and as .mpy.
    const app = await createApp({
      config: testConfig({
        cache: { dir: join(dir, "b") },
        upstreams: { ...up.upstreams, retries: 0, connect_timeout: "1s" },
        mpy_cross: { path: mpyCrossPath() },
        policy: { lock: out },
      }),
      logger: memoryLogger(),
    });
    const get = (path: string) => app.handler(new Request(`http://gw${path}`));
    for (const mpy of ["py", lock.mpy]) {
      const manifest = await json(await get(`/package/${mpy}/hello/latest.json`));
      assert.equal(manifest.version, "1.0");
      for (const [dest, h] of manifest.hashes as [string, string][]) {
        const res = await get(`/file/${h.slice(0, 2)}/${h}`);
        assert.equal(res.status, 200, `${dest} from the warmed cache`);
        assert.equal(await sha256Hex(new Uint8Array(await res.arrayBuffer())), lock.packages.hello.files[mpy][dest]);
      }
    }
    await app.idle();
  } finally {
    if (!stopped) await up.stop();
  }
});
