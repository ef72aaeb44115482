/**
 * Cached fetching with freshness rules, shared by every source: immutable objects are fetched once; mutable ones are
 * fresh for `ttl`, then served stale while one background refresh runs (stale-while-revalidate) and kept serving
 * for as long as upstream fails (stale-if-error). Upstream 404s are remembered for `negativeTtl`. Concurrent misses
 * for one key share one fetch (single-flight), and a miss looks at the store again inside the flight it starts, so a
 * fetch that finished between its first look and its start is never repeated: one object, one upstream fetch.
 * Offline, upstream is never contacted.
 * @module
 */
import { fromUpstream, NotFound } from "../errors.ts";
import type { Logger } from "../log.ts";
import { SingleFlight } from "./single_flight.ts";
import type { ObjectStore, StoredObject } from "../store/object_store.ts";
import { type Lease, type Leases, soloLeases } from "../store/lease.ts";
import type { Served } from "./served.ts";

/**
 * How long a cached object stays fresh: `false` for good (content-addressed files, commits), `true` for `cache.ttl`,
 * or a number of ms of its own (version tags: `cache.tag_ttl`).
 */
export type Mutability = boolean | number;

/** What a loader returns: the fetched bytes and the upstream time. */
export interface Load {
  body: Uint8Array;
  ms: number;
}

/** The counters a {@linkcode FreshCache} adds to (the server's metrics have them). */
export interface CacheCounters {
  /** Answers by kind of object and how they were answered (hit, miss, stale, offline, negative, error). */
  cache: { inc(labels: { kind: string; outcome: string }): void };
  /** Bytes served from the cache (`from: "cache"`) and fetched from upstream (`from: "upstream"`). */
  cacheBytes: { inc(labels: { from: "cache" | "upstream" }, n: number): void };
}

/** What a {@linkcode FreshCache} is built from. */
export interface FreshCacheOptions {
  store: ObjectStore;
  /** Who fills what among the processes sharing the store (default: this one alone). */
  leases?: Leases;
  logger: Logger;
  metrics?: CacheCounters;
  now?: () => number;
  /** Freshness of mutable objects, in ms. */
  ttl: number;
  /** How long an upstream 404 is remembered, in ms. */
  negativeTtl: number;
  /** Never contact upstream. */
  offline: boolean;
}

/** Most upstream 404s remembered at once; the oldest is forgotten first (bounds memory under junk requests). */
export const NEGATIVE_LIMIT = 10_000;
/**
 * Most characters the remembered 404s hold at once, keys and messages together plus {@linkcode NEGATIVE_OVERHEAD}
 * each; the oldest is forgotten first. A message names the URL that was not found, which a redirect may make long.
 */
export const NEGATIVE_MAX_CHARS = 4 * 1024 * 1024;
/** What a remembered 404 costs beyond its key and message, counted against {@linkcode NEGATIVE_MAX_CHARS}. */
export const NEGATIVE_OVERHEAD = 64;

/** The cost of one remembered 404, as {@linkcode NEGATIVE_MAX_CHARS} counts it. */
const negativeCost = (key: string, message: string) => key.length + message.length + NEGATIVE_OVERHEAD;

/** What one flight for a key gave: the object, and whether (and how long) upstream was asked for it. */
interface Fetched {
  object: StoredObject;
  fromUpstream: boolean;
  ms: number;
}

/** The cache every source reads through. */
export class FreshCache {
  #o: FreshCacheOptions;
  #now: () => number;
  #flights = new SingleFlight<Fetched>();
  #negative = new Map<string, { until: number; message: string }>();
  #negativeChars = 0;
  #background = new Set<Promise<unknown>>();

  #leases: Leases;

  constructor(options: FreshCacheOptions) {
    this.#o = options;
    this.#leases = options.leases ?? soloLeases;
    this.#now = options.now ?? Date.now;
  }

  /** Whether upstream is never contacted. */
  get offline(): boolean {
    return this.#o.offline;
  }

  /** Whether background work (refreshes, tracked tasks) is under way. */
  get busy(): boolean {
    return this.#background.size > 0;
  }

  /** Resolves once the background work under way now has settled. */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.#background]);
  }

  /** Keeps `task` in the background set until it settles. */
  track(task: Promise<unknown>): void {
    this.#background.add(task);
    task.finally(() => this.#background.delete(task));
  }

  /**
   * Answers `key` from the cache, or from `load` on a miss. `kind` labels metrics (index, manifest, file, ...);
   * `mutable` objects follow the TTL rules (`cache.ttl`, or their own ttl in ms), the others are kept for good.
   */
  async get(kind: string, key: string, mutable: Mutability, load: () => Promise<Load>): Promise<Served> {
    const metrics = this.#o.metrics;
    const entry = await this.#o.store.get(key);
    if (entry) {
      // storedAt 0: marked expired (ObjectStore.expire), re-read even when kept for good otherwise.
      // A number is a ttl of its own, 0 included (always re-read); only `false` is for good.
      const ttl = mutable === true ? this.#o.ttl : mutable === false ? Infinity : mutable;
      const fresh = entry.storedAt !== 0 && this.#now() - entry.storedAt < ttl;
      if (!fresh && !this.#o.offline) this.#refresh(kind, key, entry.storedAt, load);
      const outcome = fresh || this.#o.offline ? "hit" : "stale";
      metrics?.cache.inc({ kind, outcome });
      metrics?.cacheBytes.inc({ from: "cache" }, entry.body.byteLength);
      return { body: entry.body, etag: entry.etag, outcome, kind };
    }
    if (this.#o.offline) {
      metrics?.cache.inc({ kind, outcome: "offline" });
      throw new NotFound(`Offline and not cached: ${key.replace(/^index\/[0-9a-f]+\//, "")}`);
    }
    const negative = this.#negative.get(key);
    if (negative && negative.until > this.#now()) {
      metrics?.cache.inc({ kind, outcome: "negative" });
      throw new NotFound(negative.message);
    }
    try {
      const fetched = await this.#flights.run(key, () => this.#miss(key, load));
      if (!fetched.fromUpstream) {
        metrics?.cache.inc({ kind, outcome: "hit" });
        metrics?.cacheBytes.inc({ from: "cache" }, fetched.object.body.byteLength);
        return { body: fetched.object.body, etag: fetched.object.etag, outcome: "hit", kind };
      }
      metrics?.cache.inc({ kind, outcome: "miss" });
      const { body, etag } = fetched.object;
      return { body, etag, outcome: "miss", kind, upstreamMs: Math.round(fetched.ms) };
    } catch (e) {
      metrics?.cache.inc({ kind, outcome: "error" });
      throw fromUpstream(e);
    }
  }

  /** How many upstream 404s are remembered, and the characters they hold as {@linkcode NEGATIVE_MAX_CHARS} counts. */
  get notFound(): { entries: number; chars: number } {
    return { entries: this.#negative.size, chars: this.#negativeChars };
  }

  /**
   * Forgets remembered upstream "not found" answers, so objects that appeared by other means (a bundle import) are
   * served at once: all of them, or those whose cache key `match` accepts.
   * @param match Which cache keys to forget (default: every one).
   * @returns How many were forgotten.
   */
  forgetNotFound(match?: (key: string) => boolean): number {
    if (!match) {
      const n = this.#negative.size;
      this.#negative.clear();
      this.#negativeChars = 0;
      return n;
    }
    let n = 0;
    for (const key of [...this.#negative.keys()]) {
      if (match(key)) {
        this.#forgetNotFound(key);
        n++;
      }
    }
    return n;
  }

  /**
   * One flight for a missing key: look at the store again (a flight that ended after the caller's first look stored
   * it), honour a "not found" remembered meanwhile, else load and store. Runs with the key held against eviction.
   */
  async #miss(key: string, load: () => Promise<Load>): Promise<Fetched> {
    const release = this.#o.store.hold(key);
    let lease: Lease | undefined;
    try {
      const stored = await this.#o.store.get(key);
      if (stored) return { object: stored, fromUpstream: false, ms: 0 };
      const negative = this.#negative.get(key);
      if (negative && negative.until > this.#now()) throw new NotFound(negative.message);
      if (this.#leases.shared) {
        // Another process sharing the store may be filling it: wait for its object rather than fetch it again.
        const there = () => this.#o.store.get(key, { direct: true });
        lease = await this.#leases.acquire(key, async () => (await there()) !== undefined);
        const filled = await there();
        if (filled) return { object: filled, fromUpstream: false, ms: 0 };
      }
      let loaded: Load;
      try {
        loaded = await load();
      } catch (e) {
        const err = fromUpstream(e);
        if (err instanceof NotFound) this.#rememberNotFound(key, err.message);
        throw err;
      }
      this.#forgetNotFound(key);
      this.#o.metrics?.cacheBytes.inc({ from: "upstream" }, loaded.body.byteLength);
      return { object: await this.#o.store.put(key, loaded.body), fromUpstream: true, ms: loaded.ms };
    } finally {
      await lease?.release().catch(() => {});
      release();
    }
  }

  #rememberNotFound(key: string, message: string): void {
    this.#forgetNotFound(key);
    this.#negative.set(key, { until: this.#now() + this.#o.negativeTtl, message });
    this.#negativeChars += negativeCost(key, message);
    for (const oldest of this.#negative.keys()) {
      if (this.#negative.size <= NEGATIVE_LIMIT && this.#negativeChars <= NEGATIVE_MAX_CHARS) break;
      this.#forgetNotFound(oldest);
    }
  }

  #forgetNotFound(key: string): void {
    const entry = this.#negative.get(key);
    if (entry === undefined) return;
    this.#negative.delete(key);
    this.#negativeChars -= negativeCost(key, entry.message);
  }

  #refresh(kind: string, key: string, storedAt: number, load: () => Promise<Load>): void {
    if (this.#flights.has(key)) return;
    const task = this.#flights.run(key, async () => {
      const release = this.#o.store.hold(key);
      let lease: Lease | undefined;
      try {
        if (this.#leases.shared) {
          // Another process sharing the store may have refreshed it already, or be refreshing it now.
          const newer = async () => {
            const shared = await this.#o.store.get(key, { direct: true });
            return shared !== undefined && shared.storedAt > storedAt ? shared : undefined;
          };
          const found = await newer();
          if (found) return { object: found, fromUpstream: false, ms: 0 };
          lease = await this.#leases.acquire(key, async () => (await newer()) !== undefined);
          const after = await newer();
          if (after) return { object: after, fromUpstream: false, ms: 0 };
        }
        const loaded = await load();
        this.#o.metrics?.cacheBytes.inc({ from: "upstream" }, loaded.body.byteLength);
        return { object: await this.#o.store.put(key, loaded.body), fromUpstream: true, ms: loaded.ms };
      } finally {
        await lease?.release().catch(() => {});
        release();
      }
    }).then(
      () => this.#o.logger.debug("Refreshed a stale object", { kind, key }),
      (e) => {
        const message = e instanceof Error ? e.message : String(e);
        this.#o.logger.warn("Refresh failed; serving the stale copy", { kind, key, error: message });
      },
    );
    this.track(task);
  }
}
