/**
 * Flood suite (see `flood.ts`): the cache's memory. The negative cache (`NEGATIVE_LIMIT` entries and
 * `NEGATIVE_MAX_CHARS`), the single-flight and background maps (what is under way, nothing after), the hot objects
 * (`cache.memory`, keys and overhead counted, also when a full disk keeps every object in memory) and the prefetch
 * queue (`PREFETCH_QUEUE_LIMIT`).
 */
import assert from "node:assert/strict";
import { FreshCache, NEGATIVE_LIMIT, NEGATIVE_MAX_CHARS, NEGATIVE_OVERHEAD } from "../../src/cache/fresh_cache.ts";
import { SingleFlight } from "../../src/cache/single_flight.ts";
import { DiskStore, HOT_ENTRY_OVERHEAD } from "../../src/store/disk/mod.ts";
import { denoFs, type StoreFs } from "../../src/store/disk/fs.ts";
import { NotFound } from "../../src/errors.ts";
import { memoryLogger } from "../../src/log.ts";
import { IndexService, PREFETCH_QUEUE_LIMIT } from "../../src/packages/index_service.ts";
import { type Fetcher, UpstreamError } from "../../src/upstream/fetcher.ts";
import { tempDir } from "../helpers.ts";
import { assertAtMost, flood } from "./flood.ts";

const enc = new TextEncoder();

async function openStore(options: ConstructorParameters<typeof DiskStore>[1] = {}): Promise<DiskStore> {
  const store = new DiskStore(tempDir(), { logger: memoryLogger("error"), ...options });
  await store.open();
  return store;
}

function freshCache(store: DiskStore): FreshCache {
  return new FreshCache({ store, logger: memoryLogger("error"), ttl: 60_000, negativeTtl: 60_000, offline: false });
}

/** A load that finds nothing upstream, saying so with `url` (which a redirect may have made long). */
const notFound = (url: string) => () =>
  Promise.reject(new UpstreamError("not_found", url, `Not found upstream: ${url}`));

Deno.test("negative cache: 12,000 unique upstream 404s remember at most NEGATIVE_LIMIT, the oldest forgotten", async () => {
  const cache = freshCache(await openStore());
  const key = (i: number) => `index/0123456789abcdef/package/6/flood-${i}/latest.json`;
  let most = 0;
  await flood(NEGATIVE_LIMIT + 2000, 50, async (i) => {
    await assert.rejects(cache.get("manifest", key(i), true, notFound(`http://up/flood-${i}`)), NotFound);
    most = Math.max(most, cache.notFound.entries);
  });
  assertAtMost(most, NEGATIVE_LIMIT, "remembered 404s");
  assert.equal(cache.notFound.entries, NEGATIVE_LIMIT);
  // The oldest was forgotten: upstream is asked again. The newest is still remembered: it is not.
  let asked = 0;
  const count = () => (asked++, notFound("http://up/again")());
  await assert.rejects(cache.get("manifest", key(0), true, count), NotFound);
  await assert.rejects(cache.get("manifest", key(NEGATIVE_LIMIT + 1999), true, count), NotFound);
  assert.equal(asked, 1);
});

Deno.test("negative cache: 404s with 4 KB URLs are bounded by NEGATIVE_MAX_CHARS before the count", async () => {
  const cache = freshCache(await openStore());
  const long = "r".repeat(4000);
  let most = 0;
  await flood(3000, 50, async (i) => {
    const key = `mirror/url/http/up/flood-${i}.py`;
    await assert.rejects(cache.get("mirror", key, true, notFound(`http://up/${long}/${i}`)), NotFound);
    most = Math.max(most, cache.notFound.chars);
  });
  assertAtMost(most, NEGATIVE_MAX_CHARS, "characters of remembered 404s");
  assert.ok(cache.notFound.entries < 3000, "every 404 is still remembered");
  assert.ok(cache.notFound.chars > NEGATIVE_MAX_CHARS - 5000 - NEGATIVE_OVERHEAD, "the budget was not used");
});

Deno.test("single-flight: 20,000 unique keys hold 20,000 flights while under way and none once settled", async () => {
  const flights = new SingleFlight<number>();
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const runs: Promise<number>[] = [];
  for (let i = 0; i < 20_000; i++) {
    runs.push(flights.run(`k${i}`, async () => {
      await held;
      if (i % 2) throw new Error("upstream failed");
      return i;
    }));
    // A second caller of a key under way joins its flight.
    if (i % 100 === 0) runs.push(flights.run(`k${i}`, () => Promise.resolve(-1)));
  }
  assert.equal(flights.size, 20_000);
  release();
  await Promise.allSettled(runs);
  assert.equal(flights.size, 0, "settled flights stayed in the map");
});

Deno.test("cache background set: 10,000 tracked tasks leave it empty once settled", async () => {
  const cache = freshCache(await openStore());
  for (let i = 0; i < 10_000; i++) {
    cache.track(i % 2 ? Promise.resolve(i) : Promise.reject(new Error("refresh failed")).catch(() => {}));
  }
  assert.ok(cache.busy);
  await cache.settle();
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(cache.busy, false, "settled background tasks stayed in the set");
});

Deno.test("hot objects: with a full disk, 20,000 unique small objects stay within cache.memory, keys counted", async () => {
  const full: StoreFs = {
    ...denoFs,
    writeNew: () => Promise.reject(Object.assign(new Error("No space left on device"), { code: "ENOSPC" })),
  };
  const memoryBytes = 1024 * 1024;
  const store = await openStore({ memoryBytes, fs: full });
  let most = 0;
  await flood(20_000, 20, async (i) => {
    // Empty files and one-byte files, each under its own key: bodies alone would cost next to nothing.
    const object = await store.put(`mirror/url/http/up/flood/${i}.py`, enc.encode(i % 2 ? "x" : ""));
    assert.equal(object.uncached, true);
    most = Math.max(most, store.hot.bytes);
  });
  assertAtMost(most, memoryBytes, "hot object bytes");
  assertAtMost(store.hot.objects, Math.floor(memoryBytes / HOT_ENTRY_OVERHEAD), "hot objects");
  assert.ok(store.hot.objects > 1000, "the hot set kept next to nothing");
});

Deno.test("prefetch queue: 20 manifest misses listing 100,000 unique files queue at most PREFETCH_QUEUE_LIMIT", async () => {
  const store = await openStore();
  const cache = freshCache(store);
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  const hex = (n: number) => n.toString(16).padStart(8, "0");
  let files = 0;
  const fetcher = {
    async get(url: string) {
      const m = /\/package\/6\/flood(\d+)\/latest\.json$/.exec(url);
      if (m) {
        const first = Number(m[1]) * 5000;
        const hashes = Array.from({ length: 5000 }, (_, i) => [`f${first + i}.mpy`, hex(first + i)]);
        return { body: enc.encode(JSON.stringify({ v: 1, version: "1.0", hashes })), url, ms: 1 };
      }
      // Upstream is slow to send files: the queue fills while the manifests keep coming.
      files++;
      await gate;
      throw new UpstreamError("not_found", url, `Not found upstream: ${url}`);
    },
  } as unknown as Fetcher;
  const index = new IndexService({
    indexes: ["http://up/pi/v2"],
    cache,
    fetcher,
    logger: memoryLogger("error"),
    prefetch: true,
  });
  await index.init();
  let most = 0;
  for (let n = 0; n < 20; n++) {
    const served = await index.manifest("6", `flood${n}`, "latest");
    assert.equal(served.outcome, "miss");
    most = Math.max(most, index.prefetchWaiting);
  }
  assertAtMost(most, PREFETCH_QUEUE_LIMIT, "file hashes waiting to be prefetched");
  assert.equal(most, PREFETCH_QUEUE_LIMIT);
  open();
  await index.idle();
  assertAtMost(files, PREFETCH_QUEUE_LIMIT + 4, "prefetched files");
});
