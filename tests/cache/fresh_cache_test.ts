import assert from "node:assert/strict";
import { FreshCache, type Load } from "../../src/cache/fresh_cache.ts";
import { sha256Hex } from "../../src/store/hash.ts";
import { DiskStore } from "../../src/store/disk/mod.ts";
import type { StoredObject } from "../../src/store/object_store.ts";
import { NotFound } from "../../src/errors.ts";
import { memoryLogger } from "../../src/log.ts";
import { IndexService } from "../../src/packages/index_service.ts";
import { Fetcher } from "../../src/upstream/fetcher.ts";
import { tempDir } from "../helpers.ts";

const enc = new TextEncoder();

/** A promise with its resolve function, to hold a step until the test lets it go. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

/**
 * A store whose next `get` is held after its disk look, until the test opens the gate: the look has happened (and
 * found nothing) but the caller has not moved on yet, the window issue 13 describes.
 */
class HeldStore extends DiskStore {
  holdNextGet?: Promise<void>;
  override async get(key: string): Promise<StoredObject | undefined> {
    const hold = this.holdNextGet;
    this.holdNextGet = undefined;
    const found = await super.get(key);
    if (hold) await hold;
    return found;
  }
}

/** A local upstream in pi/v2 layout that counts requests and holds file answers while `fileGate` is set. */
function upstream(files: Map<string, Uint8Array>, manifest: unknown) {
  const counts = new Map<string, number>();
  const state: { fileGate?: Promise<void>; arrived?: () => void } = {};
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    counts.set(path, (counts.get(path) ?? 0) + 1);
    if (path === "/pi/v2/package/py/demo/1.0.json") return new Response(JSON.stringify(manifest));
    const m = /^\/pi\/v2\/file\/[0-9a-f]{2}\/([0-9a-f]{8})$/.exec(path);
    const body = m && files.get(m[1]);
    if (!body) return new Response("not found", { status: 404 });
    state.arrived?.();
    if (state.fileGate) await state.fileGate;
    return new Response(body as Uint8Array<ArrayBuffer>);
  });
  return { server, counts, state, url: `http://127.0.0.1:${server.addr.port}/pi/v2` };
}

Deno.test("one object, one fetch: a file asked for while its prefetch finishes is not fetched again", async () => {
  const source = enc.encode("print('one fetch')\n");
  const hash = (await sha256Hex(source)).slice(0, 8);
  const up = upstream(new Map([[hash, source]]), { v: 1, version: "1.0", hashes: [["demo.py", hash]], deps: [] });
  const logger = memoryLogger();
  try {
    const store = new HeldStore(tempDir());
    await store.open();
    const cache = new FreshCache({ store, logger, ttl: 60_000, negativeTtl: 60_000, offline: false });
    const fetcher = new Fetcher({ connectTimeout: 5000, timeout: 5000, retries: 0, maxSize: 1 << 20, logger });
    const index = new IndexService({ indexes: [up.url], cache, fetcher, logger, prefetch: true });
    await index.init();
    const held = gate();
    up.state.fileGate = held.promise;
    const arrived = new Promise<void>((r) => (up.state.arrived = r));
    // The manifest is fetched; its prefetch asks upstream for the file, whose answer is held.
    await index.manifest("py", "demo", "1.0");
    await arrived;
    // A device asks for the same file: its disk look finds nothing, and it is held right after that look.
    const afterLook = gate();
    store.holdNextGet = afterLook.promise;
    const device = index.file(hash);
    // The upstream answers, the prefetch stores the file and its flight ends; then the device moves on.
    held.open();
    await index.idle();
    afterLook.open();
    const served = await device;
    assert.deepEqual(served.body, source);
    assert.equal(up.counts.get(`/pi/v2/file/${hash.slice(0, 2)}/${hash}`), 1, "the file was fetched twice");
  } finally {
    await up.server.shutdown();
  }
});

Deno.test("a miss whose disk look came before the flight for its key ended does not load again", async () => {
  const store = new HeldStore(tempDir());
  await store.open();
  const cache = new FreshCache({ store, logger: memoryLogger(), ttl: 60_000, negativeTtl: 60_000, offline: false });
  let loads = 0;
  const held = gate();
  const load = async (): Promise<Load> => {
    loads++;
    await held.promise;
    return { body: enc.encode("x"), ms: 1 };
  };
  const first = cache.get("file", "compiled/aa/aa-r", false, load);
  const lateLook = gate();
  store.holdNextGet = lateLook.promise;
  const second = cache.get("file", "compiled/aa/aa-r", false, load);
  held.open();
  await first;
  lateLook.open();
  const results = await Promise.all([first, second]);
  assert.equal(loads, 1);
  assert.deepEqual(results.map((r) => r.outcome), ["miss", "hit"]);
});

Deno.test("forgetNotFound: a remembered 404 is forgotten (all, or by key), so an imported object is served at once", async () => {
  const store = new DiskStore(tempDir());
  await store.open();
  const cache = new FreshCache({ store, logger: memoryLogger(), ttl: 60_000, negativeTtl: 60_000, offline: false });
  let loads = 0;
  const missing = () => {
    loads++;
    return Promise.reject(new NotFound("Not upstream"));
  };
  for (const key of ["files/aa/aaaa1111", "files/bb/bbbb2222"]) {
    await assert.rejects(() => cache.get("file", key, false, missing), /Not upstream/);
    await assert.rejects(() => cache.get("file", key, false, missing), /Not upstream/);
  }
  assert.equal(loads, 2, "404s are remembered");
  // An import writes the objects straight into the store, then forgets what was not found.
  const a = enc.encode("a");
  await store.put("files/aa/aaaa1111", a);
  assert.equal(cache.forgetNotFound((key) => key === "files/bb/bbbb2222"), 1);
  let fetched = 0;
  const found = () => (fetched++, Promise.resolve({ body: enc.encode("b"), ms: 0 }));
  assert.equal((await cache.get("file", "files/bb/bbbb2222", false, found)).outcome, "miss");
  assert.equal(fetched, 1);
  assert.equal((await cache.get("file", "files/aa/aaaa1111", false, missing)).outcome, "hit");
  await assert.rejects(() => cache.get("file", "files/cc/cccc3333", false, missing));
  assert.equal(cache.forgetNotFound(), 2, "aaaa1111 (found in the store, its 404 still remembered) and cccc3333");
  assert.equal(cache.forgetNotFound(), 0);
});

Deno.test("a ttl of its own is honoured to 0 (always re-read, e.g. cache.tag_ttl: 0); false alone keeps for good", async () => {
  let clock = 1_000_000;
  const store = new DiskStore(tempDir(), { now: () => clock });
  await store.open();
  const cache = new FreshCache({
    store,
    logger: memoryLogger(),
    now: () => clock,
    ttl: 60_000,
    negativeTtl: 60_000,
    offline: false,
  });
  const load = () => Promise.resolve({ body: enc.encode("v"), ms: 0 });
  for (const [mutable, later, outcome] of [[0, 1, "stale"], [5_000, 1_000, "hit"], [5_000, 6_000, "stale"]] as const) {
    const key = `mirror/t/${mutable}-${later}`;
    assert.equal((await cache.get("raw", key, mutable, load)).outcome, "miss");
    clock += later;
    assert.equal((await cache.get("raw", key, mutable, load)).outcome, outcome, `ttl ${mutable} after ${later} ms`);
  }
  const kept = "mirror/t/kept";
  await cache.get("raw", kept, false, load);
  clock += 10 * 86_400_000;
  assert.equal((await cache.get("raw", kept, false, load)).outcome, "hit");
  while (cache.busy) await new Promise((r) => setTimeout(r, 5));
});
