/**
 * The object store on disk under `cache.dir`, today's layout: every write goes to a temp file in `tmp/` on the same
 * file system, is fsynced, renamed into place, and the folder is fsynced, so a crash or power cut never leaves a
 * partial object under a real key nor loses a finished one. A write that fails (a full, read-only or broken disk) still
 * returns the object, kept in memory only, and its cause is logged once until writes work again. Opening removes what
 * an earlier run left (temp files of processes that are gone, see `tmp_owner.ts`; probe files; stray hidden and empty
 * content files); a content file whose bytes do not match its name is removed when read, so it is fetched afresh.
 *
 * Counted objects (`isObjectKey`) are evicted least recently used first to stay within `maxBytes`, never a protected
 * one. Use order survives a restart through the files' access times, stamped at most once per `touchEvery`; freshness
 * is the modification time. A small in-memory set of hot objects spares the disk on repeated hits.
 * @module
 */
import { dirname, join, relative, resolve, sep } from "node:path";
import type { Logger } from "../../log.ts";
import { FILE_KEY, isObjectKey, isStoreKey } from "../keys.ts";
import { sha256Hex } from "../hash.ts";
import { Holds, objectToStore, WriteFailures } from "../common.ts";
import {
  type GetOptions,
  type ListPage,
  type ObjectInfo,
  type ObjectStore,
  type PutOptions,
  type StoredObject,
  type StoreStats,
  underPrefix,
} from "../object_store.ts";
import { causeOf, denoFs, type StoreFs } from "./fs.ts";
import { TmpOwner } from "./tmp_owner.ts";

const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/** Top-level folders whose files are objects or manifests this store wrote (and may clean up). */
const OWNED = new Set(["files", "compiled", "mirror", "index", "named"]);
/** Top-level folders that hold no objects. */
const NOT_OBJECTS = new Set(["tmp", "locks"]);

/** Options for a {@linkcode DiskStore}. */
export interface StoreOptions {
  /** Clock for `storedAt` and use stamps (default `Date.now`). */
  now?: () => number;
  /** Bytes of hot objects kept in memory, keys and a fixed overhead each included (default 64 MiB). */
  memoryBytes?: number;
  /** The most bytes of objects kept on disk (default: no limit). */
  maxBytes?: number | null;
  /** Objects that must never be evicted (the lock, pins); more can be set later through `protect`. */
  protect?: (key: string) => boolean;
  /** How often at most an object's use is stamped on disk, in ms (default one minute). */
  touchEvery?: number;
  /** Where write failures and damaged objects are reported. */
  logger?: Logger;
  /** The file system writes go through (default: the real one). */
  fs?: StoreFs;
}

interface Use {
  size: number;
  /** When its use was last stamped on disk. */
  stamped: number;
}

/** Content and metadata store on the file system. */
export class DiskStore implements ObjectStore {
  readonly kind = "disk";
  /** The cache folder. */
  readonly root: string;
  protect: (key: string) => boolean;
  #tmp: string;
  #owner?: Promise<TmpOwner>;
  #now: () => number;
  #fs: StoreFs;
  #logger?: Logger;
  #memory = new Map<string, StoredObject>();
  #memoryBytes = 0;
  #memoryBudget: number;
  #max: number | null;
  #touchEvery: number;
  /** Objects in least-recently-used order (only with a size limit). */
  #uses?: Map<string, Use>;
  #bytes = 0;
  #objects = 0;
  #reserved = 0;
  #evictions = 0;
  #holds = new Holds();
  #failures: WriteFailures;
  #pending = new Set<Promise<unknown>>();
  /** Victims picked by the eviction under way, until their files are removed. */
  #evicted = new Map<string, Use>();

  constructor(root: string, options: StoreOptions = {}) {
    this.root = resolve(root);
    this.#tmp = join(this.root, "tmp");
    this.#now = options.now ?? Date.now;
    this.#memoryBudget = options.memoryBytes ?? 64 * 1024 * 1024;
    this.#max = options.maxBytes ?? null;
    this.#touchEvery = options.touchEvery ?? 60_000;
    this.#logger = options.logger;
    this.#failures = new WriteFailures(
      {
        failed: "Cannot store in the cache; serving without storing (logged once per cause)",
        worksAgain: "Cache writes work again",
        limit: "cache.max_size",
      },
      this.#logger,
      () => this.#max,
    );
    this.#fs = options.fs ?? denoFs;
    this.protect = options.protect ?? (() => false);
    if (this.#max !== null) this.#uses = new Map();
  }

  /** This process's claim on `tmp/`, taken once and kept for the life of the process. */
  #claim(): Promise<TmpOwner> {
    this.#owner ??= TmpOwner.claim(this.root);
    return this.#owner;
  }

  /**
   * Creates the folder, removes what an earlier run left behind (temp files of processes that are gone, probe files,
   * stray hidden files and empty content files in the object folders), counts the stored objects and, with a size limit, evicts the least
   * recently used until they fit. Returns how many leftovers were removed.
   */
  async open(): Promise<number> {
    await Deno.mkdir(this.#tmp, { recursive: true });
    const owner = await this.#claim();
    let removed = 0;
    const verdicts = new Map<string, boolean>();
    for await (const entry of Deno.readDir(this.#tmp)) {
      if (!(await owner.isLeftover(entry.name, verdicts))) continue;
      await Deno.remove(join(this.#tmp, entry.name), { recursive: true }).catch(() => {});
      removed++;
    }
    await owner.sweepOwners();
    this.#bytes = 0;
    this.#objects = 0;
    const found: [string, Use][] = [];
    for await (const entry of Deno.readDir(this.root)) {
      if (entry.isFile && entry.name.startsWith(".healthz-")) {
        await Deno.remove(join(this.root, entry.name));
        removed++;
      } else if (entry.isDirectory && OWNED.has(entry.name)) {
        removed += await this.#scan(join(this.root, entry.name), entry.name, found);
      }
    }
    if (this.#uses) {
      found.sort((a, b) => a[1].stamped - b[1].stamped);
      this.#uses = new Map(found);
      // A limit lowered since the last run applies at once, not at the next write.
      // Protected objects alone may exceed it: then everything else goes.
      const victims = this.#makeRoom("", 0, true);
      if (victims && victims.length > 0) {
        await this.#removeEvicted(victims);
        this.#logger?.info("Evicted cache objects to fit cache.max_size", { objects: victims.length });
      }
    }
    return removed;
  }

  async #scan(dir: string, rel: string, found: [string, Use][]): Promise<number> {
    let removed = 0;
    for await (const entry of Deno.readDir(dir)) {
      const path = join(dir, entry.name);
      const key = `${rel}/${entry.name}`;
      if (entry.isDirectory) {
        if (isStoreKey(key)) removed += await this.#scan(path, key, found);
        continue;
      }
      if (!entry.isFile) continue;
      // Another process on the same cache (a running server) may evict or replace a file meanwhile: gone is fine.
      const stat = await Deno.stat(path).catch((e) => {
        if (e instanceof Deno.errors.NotFound) return undefined;
        throw e;
      });
      if (stat === undefined) continue;
      const content = FILE_KEY.exec(key);
      if (!isStoreKey(key) || (content && stat.size === 0 && !EMPTY_SHA256.startsWith(content[1]))) {
        await Deno.remove(path).catch((e) => {
          if (!(e instanceof Deno.errors.NotFound)) throw e;
        });
        removed++;
        continue;
      }
      if (!isObjectKey(key)) continue;
      this.#bytes += stat.size;
      this.#objects++;
      if (this.#uses) {
        found.push([key, { size: stat.size, stamped: stat.atime?.getTime() ?? stat.mtime?.getTime() ?? 0 }]);
      }
    }
    return removed;
  }

  get location(): string {
    return this.root;
  }

  #path(key: string): string {
    if (!isStoreKey(key)) throw new Error(`Unsafe cache key ${JSON.stringify(key)}`);
    const path = resolve(this.root, key);
    if (!path.startsWith(this.root + sep)) throw new Error(`Cache key escapes the cache: ${key}`);
    return path;
  }

  /**
   * The hot objects kept in memory and the bytes they are counted for (key, body and {@linkcode HOT_ENTRY_OVERHEAD}
   * each), at most `memoryBytes`.
   */
  get hot(): { objects: number; bytes: number } {
    return { objects: this.#memory.size, bytes: this.#memoryBytes };
  }

  /** Reads an object, from memory when hot (unless `direct`). */
  async get(key: string, options?: GetOptions): Promise<StoredObject | undefined> {
    const hot = options?.direct ? undefined : this.#memory.get(key);
    if (hot) {
      this.#memory.delete(key);
      this.#memory.set(key, hot);
      this.#used(key, hot);
      return hot;
    }
    const path = this.#path(key);
    let body: Uint8Array;
    let storedAt: number;
    try {
      const file = await Deno.open(path);
      try {
        const stat = await file.stat();
        body = new Uint8Array(stat.size);
        let off = 0;
        while (off < body.length) {
          const n = await file.read(body.subarray(off));
          if (n === null) break;
          off += n;
        }
        body = body.subarray(0, off);
        storedAt = stat.mtime?.getTime() ?? 0;
      } finally {
        file.close();
      }
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
    const digest = await sha256Hex(body);
    const content = FILE_KEY.exec(key);
    if (content && !digest.startsWith(content[1])) {
      this.#logger?.warn("Removed a damaged cache file; it is fetched again", { key, bytes: body.byteLength });
      await this.remove([key]);
      return undefined;
    }
    const object = { body, storedAt, etag: etagFromDigest(digest) };
    if (!options?.direct) this.#remember(key, object);
    this.#used(key, object);
    return object;
  }

  /** Streams an object's bytes from its file, in pieces, without keeping them. */
  async read(key: string): Promise<ReadableStream<Uint8Array> | undefined> {
    const hot = this.#memory.get(key);
    if (hot) return new Blob([hot.body as Uint8Array<ArrayBuffer>]).stream();
    let file: Deno.FsFile;
    try {
      file = await Deno.open(this.#path(key));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
    const buffer = new Uint8Array(64 * 1024);
    return new ReadableStream({
      async pull(controller) {
        const n = await file.read(buffer);
        if (n === null) {
          file.close();
          controller.close();
        } else controller.enqueue(buffer.slice(0, n));
      },
      cancel() {
        file.close();
      },
    }, { highWaterMark: 0 });
  }

  /** An object's size and times, from its file. */
  async stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const info = await Deno.stat(this.#path(key));
      if (!info.isFile) return undefined;
      const storedAt = info.mtime?.getTime() ?? 0;
      return { size: info.size, storedAt, lastRead: Math.max(storedAt, info.atime?.getTime() ?? 0) };
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
  }

  /** Whether an object exists (memory or disk). */
  async has(key: string): Promise<boolean> {
    if (this.#memory.has(key)) return true;
    try {
      await Deno.stat(this.#path(key));
      return true;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return false;
      throw e;
    }
  }

  /**
   * Stores an object atomically (temp file, fsync, rename, directory fsync) and returns it as stored. When it cannot
   * be written (a full or failing disk, larger than the size limit, or the limit is taken by protected objects) it is
   * returned with `uncached: true` and kept in memory only; the cause is logged once until writes work again.
   */
  async put(key: string, body: Uint8Array, options?: PutOptions): Promise<StoredObject> {
    const path = this.#path(key);
    const { object } = await objectToStore(key, body, options, this.#now);
    const counted = isObjectKey(key);
    const release = this.hold(key);
    let reserved = 0;
    try {
      if (counted && this.#max !== null) {
        if (body.byteLength > this.#max) return this.#notStored(key, object, "too-large", undefined);
        const victims = this.#makeRoom(key, body.byteLength);
        if (!victims) return this.#notStored(key, object, "protected", undefined);
        reserved = body.byteLength;
        this.#reserved += reserved;
        await this.#removeEvicted(victims);
      }
      let oldSize: number | undefined;
      try {
        oldSize = await this.#write(path, object);
      } catch (e) {
        return this.#notStored(key, object, causeOf(e), e);
      }
      if (counted) {
        this.#bytes += body.byteLength - (oldSize ?? 0);
        if (oldSize === undefined) this.#objects++;
        this.#uses?.delete(key);
        this.#uses?.set(key, { size: body.byteLength, stamped: object.storedAt });
      }
      this.#failures.works();
    } finally {
      this.#reserved -= reserved;
      release();
    }
    this.#forget(key);
    this.#remember(key, object);
    return object;
  }

  /** Writes one object; returns the size of the object it replaced, if any. */
  async #write(path: string, object: StoredObject): Promise<number | undefined> {
    const dir = dirname(path);
    const created = await this.#ensureDir(dir);
    const tmp = join(this.#tmp, (await this.#claim()).name("part"));
    let oldSize: number | undefined;
    try {
      await this.#fs.writeNew(tmp, object.body);
      await this.#fs.setTimes(tmp, object.storedAt, object.storedAt);
      oldSize = await sizeOf(path);
      await this.#fs.rename(tmp, path);
    } catch (e) {
      await this.#fs.remove(tmp).catch(() => {});
      throw e;
    }
    // The rename (and any folder just made) is only durable once the folders holding them are flushed. The object is
    // in place either way, so a failed flush is reported, not undone.
    try {
      for (const d of [dir, ...created.map(dirname)]) await this.#fs.syncDir(d);
    } catch (e) {
      this.#failed(
        relative(this.root, path),
        e,
        causeOf(e),
        "Cannot flush a cache folder; a power cut may lose writes",
      );
    }
    return oldSize;
  }

  /** Makes `dir` and its missing parents under the root; returns the folders it made, deepest first. */
  async #ensureDir(dir: string): Promise<string[]> {
    const missing: string[] = [];
    for (let d = dir; d.startsWith(this.root + sep); d = dirname(d)) {
      if ((await sizeOf(d)) !== undefined) break;
      missing.push(d);
    }
    if (missing.length > 0) await this.#fs.mkdir(dir);
    return missing;
  }

  /**
   * Picks and unaccounts least recently used objects until `size` more bytes fit, synchronously (so concurrent writes
   * never pick the same victim nor miss each other's room); undefined when only protected objects are left.
   */
  #makeRoom(key: string, size: number, asMuchAsCan = false): string[] | undefined {
    const max = this.#max!;
    const uses = this.#uses!;
    const replaced = uses.get(key)?.size ?? 0;
    const victims: string[] = [];
    let iterator = uses.keys();
    while (this.#bytes + this.#reserved + size - replaced > max) {
      let victim: string | undefined;
      for (const k of iterator) {
        if (k !== key && !this.#isProtected(k)) {
          victim = k;
          break;
        }
      }
      if (victim === undefined) {
        if (asMuchAsCan) return victims;
        // Put back what was picked: nothing is evicted for an object that cannot be stored anyway.
        for (const v of victims.reverse()) this.#restore(v);
        return undefined;
      }
      const use = uses.get(victim)!;
      uses.delete(victim);
      this.#bytes -= use.size;
      this.#objects--;
      this.#evictions++;
      this.#evicted.set(victim, use);
      victims.push(victim);
      iterator = uses.keys();
    }
    return victims;
  }

  #restore(victim: string): void {
    const use = this.#evicted.get(victim)!;
    this.#evicted.delete(victim);
    // Back at the least recently used end, where it was picked from.
    this.#uses = new Map([[victim, use], ...this.#uses!]);
    this.#bytes += use.size;
    this.#objects++;
    this.#evictions--;
  }

  async #removeEvicted(victims: string[]): Promise<void> {
    for (const v of victims) {
      this.#evicted.delete(v);
      this.#forget(v);
    }
    const failed = (v: string, e: unknown) =>
      this.#failed(v, e, `evict:${causeOf(e)}`, "Cannot remove an evicted cache object");
    await Promise.all(victims.map((v) => this.#fs.remove(this.#path(v)).catch((e) => failed(v, e))));
  }

  #isProtected(key: string): boolean {
    return this.#holds.has(key) || this.protect(key);
  }

  /**
   * Protects `key` from eviction until the returned function is called (for work in flight that will need it).
   * Holds nest: the key stays protected until every hold is released.
   */
  hold(key: string): () => void {
    return this.#holds.hold(key);
  }

  /**
   * Removes objects (and manifests) by key, from disk and memory, for purging a release. Missing keys are skipped;
   * protection does not apply (the caller decided). Returns how many were on disk and are now gone.
   */
  async remove(keys: Iterable<string>): Promise<number> {
    let removed = 0;
    for (const key of keys) {
      const path = this.#path(key);
      this.#forget(key);
      const size = await sizeOf(path);
      if (size === undefined) continue;
      await this.#fs.remove(path);
      removed++;
      if (isObjectKey(key)) {
        this.#bytes -= size;
        this.#objects--;
        this.#uses?.delete(key);
      }
    }
    return removed;
  }

  /** The store's figures: stored bytes and objects, evictions, the limit and failed writes. */
  stats(): StoreStats {
    return {
      sizeBytes: this.#bytes,
      objects: this.#objects,
      evictions: this.#evictions,
      maxBytes: this.#max,
      writeErrors: this.#failures.count,
    };
  }

  /**
   * Tells whether a file can be created in the cache (in `tmp/`, so a probe a crash leaves behind is removed at the
   * next start); the probe is removed whatever happens.
   */
  async writable(): Promise<boolean> {
    const probe = join(this.#tmp, (await this.#claim()).name("healthz"));
    try {
      await Deno.mkdir(this.#tmp, { recursive: true });
      await Deno.writeTextFile(probe, "ok");
      return true;
    } catch {
      return false;
    } finally {
      await Deno.remove(probe).catch(() => {});
    }
  }

  /** Resolves once the use stamps written in the background so far are on disk (for tests and shutdown). */
  async flush(): Promise<void> {
    await Promise.allSettled([...this.#pending]);
  }

  /** Writes the pending use stamps and gives back this store's claim on `tmp/` (its owner file). */
  async close(): Promise<void> {
    await this.flush();
    const owner = this.#owner;
    this.#owner = undefined;
    if (owner) await (await owner).release();
  }

  /**
   * Marks the objects under `prefix` (those `select` keeps) as expired: their time stamp goes to 0, so the cache
   * re-reads them on next use while still serving them (see `FreshCache`). Returns how many were marked.
   */
  async expire(prefix: string, select: (key: string) => boolean = () => true): Promise<number> {
    let n = 0;
    for await (const key of this.keys(prefix)) {
      if (!select(key)) continue;
      try {
        await Deno.utime(this.#path(key), 0, 0);
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) continue;
        throw e;
      }
      this.#forget(key);
      n++;
    }
    return n;
  }

  /** Every key under `prefix`, walked folder by folder (in no particular order). */
  async *keys(prefix = ""): AsyncGenerator<string> {
    const p = prefix.replace(/\/$/, "");
    if (p !== "") {
      if ((await this.stat(p).catch(() => undefined)) !== undefined) yield p;
      if (NOT_OBJECTS.has(p.split("/")[0])) return;
    }
    yield* this.#walk(p === "" ? this.root : this.#dirPath(p), p);
  }

  /** The folder a prefix names (a prefix of one segment is a folder, not a key). */
  #dirPath(prefix: string): string {
    if (!prefix.split("/").every((s) => isStoreKey(`x/${s}`))) throw new Error(`Unsafe cache prefix ${prefix}`);
    return join(this.root, prefix);
  }

  async *#walk(dir: string, rel: string): AsyncGenerator<string> {
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(dir));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return;
      throw e;
    }
    for (const entry of entries) {
      const child = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory) {
        if (rel !== "" || !NOT_OBJECTS.has(entry.name)) yield* this.#walk(join(dir, entry.name), child);
      } else if (entry.isFile && rel !== "" && isStoreKey(child)) {
        yield child;
      }
    }
  }

  /** One page of the keys under `prefix`, in code-unit order (each page walks the prefix's folder). */
  async list(prefix: string, options: { after?: string; limit?: number } = {}): Promise<ListPage> {
    const limit = options.limit ?? 1000;
    const after = options.after;
    const all: string[] = [];
    for await (const key of this.keys(prefix)) {
      if (underPrefix(key, prefix) && (after === undefined || key > after)) all.push(key);
    }
    all.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const keys = all.slice(0, limit);
    return all.length > limit ? { keys, next: keys.at(-1) } : { keys };
  }

  /** Every stored file's bytes and count, metadata included (a walk of the folder). */
  async usage(): Promise<{ bytes: number; objects: number }> {
    let bytes = 0;
    let objects = 0;
    for await (const key of this.keys()) {
      const info = await this.stat(key).catch(() => undefined);
      if (!info) continue; // removed meanwhile
      bytes += info.size;
      objects++;
    }
    return { bytes, objects };
  }

  /** Records a use: moves the object to the recent end and, at most once per `touchEvery`, stamps it on disk. */
  #used(key: string, object: StoredObject): void {
    const use = this.#uses?.get(key);
    if (!use) return;
    this.#uses!.delete(key);
    this.#uses!.set(key, use);
    const now = this.#now();
    if (now - use.stamped < this.#touchEvery) return;
    use.stamped = now;
    const task = this.#fs.setTimes(this.#path(key), now, object.storedAt).catch(() => {});
    this.#pending.add(task);
    task.finally(() => this.#pending.delete(task));
  }

  #notStored(key: string, object: StoredObject, cause: string, error: unknown): StoredObject {
    this.#failed(key, error, cause);
    const uncached = { ...object, uncached: true };
    this.#forget(key);
    this.#remember(key, uncached);
    return uncached;
  }

  /** Counts a failed write and logs its cause the first time it is seen since writes last worked. */
  #failed(key: string, error: unknown, cause = causeOf(error), message?: string): void {
    this.#failures.failed(key, error, cause, message);
  }

  #remember(key: string, object: StoredObject): void {
    const cost = hotCost(key, object);
    if (cost > this.#memoryBudget / 8) return;
    // Two reads of one key may both have missed memory: the second replaces the first, counted once.
    this.#forget(key);
    this.#memory.set(key, object);
    this.#memoryBytes += cost;
    for (const [oldKey, old] of this.#memory) {
      if (this.#memoryBytes <= this.#memoryBudget) break;
      this.#memory.delete(oldKey);
      this.#memoryBytes -= hotCost(oldKey, old);
    }
  }

  #forget(key: string): void {
    const old = this.#memory.get(key);
    if (old) {
      this.#memory.delete(key);
      this.#memoryBytes -= hotCost(key, old);
    }
  }
}

/**
 * What a hot object costs beyond its key and body: the Map slot, the object and its ETag. Counted so that many tiny
 * objects cannot grow the hot set past its budget (empty files cost no body bytes at all).
 */
export const HOT_ENTRY_OVERHEAD = 256;

/** The bytes a hot object is counted for against `memoryBytes`: its key, its body and {@linkcode HOT_ENTRY_OVERHEAD}. */
function hotCost(key: string, object: StoredObject): number {
  return key.length + object.body.byteLength + HOT_ENTRY_OVERHEAD;
}

/** A strong ETag from a body's hex sha256: quoted, cut to 32 hex characters (as `etagOf`). */
function etagFromDigest(digest: string): string {
  return `"${digest.slice(0, 32)}"`;
}

/** The size of the file at `path`, or undefined when there is none. */
async function sizeOf(path: string): Promise<number | undefined> {
  try {
    return (await Deno.stat(path)).size;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}
