/**
 * The on-disk object store under `cache.dir`. Keys are slash-separated names of safe characters (`isSafeKey` in
 * `packages/names.ts`, which also encodes any other name into such a key); every write goes
 * to a temp file in the same file system, is fsynced, then renamed into place, so a crash never leaves a partial
 * object under a real key. Leftover temp files are removed when the store opens. A small in-memory set of hot
 * objects (least recently used out first) spares the disk on repeated hits.
 * @module
 */
import { dirname, join, resolve, sep } from "node:path";
import { isSafeKey } from "../packages/names.ts";
import { etagOf } from "./hash.ts";

export { isSafeKey };

/** A stored object. */
export interface StoredObject {
  body: Uint8Array;
  /** When it was stored (ms since the epoch, from the injected clock). */
  storedAt: number;
  /** A strong ETag for the body. */
  etag: string;
}

/** Options for a {@linkcode DiskStore}. */
export interface StoreOptions {
  /** Clock for `storedAt` (default `Date.now`). */
  now?: () => number;
  /** Bytes of hot objects kept in memory (default 64 MiB). */
  memoryBytes?: number;
}

/** Content and metadata store on the file system. */
export class DiskStore {
  /** The cache folder. */
  readonly root: string;
  #tmp: string;
  #now: () => number;
  #memory = new Map<string, StoredObject>();
  #memoryBytes = 0;
  #memoryBudget: number;

  constructor(root: string, options: StoreOptions = {}) {
    this.root = resolve(root);
    this.#tmp = join(this.root, "tmp");
    this.#now = options.now ?? Date.now;
    this.#memoryBudget = options.memoryBytes ?? 64 * 1024 * 1024;
  }

  /** Creates the folder and removes temp files a crash left behind. Returns how many were removed. */
  async open(): Promise<number> {
    await Deno.mkdir(this.#tmp, { recursive: true });
    let removed = 0;
    for await (const entry of Deno.readDir(this.#tmp)) {
      await Deno.remove(join(this.#tmp, entry.name), { recursive: true });
      removed++;
    }
    return removed;
  }

  #path(key: string): string {
    if (!isSafeKey(key)) throw new Error(`Unsafe cache key ${JSON.stringify(key)}`);
    const path = resolve(this.root, key);
    if (!path.startsWith(this.root + sep)) throw new Error(`Cache key escapes the cache: ${key}`);
    return path;
  }

  /** Reads an object, from memory when hot. */
  async get(key: string): Promise<StoredObject | undefined> {
    const hot = this.#memory.get(key);
    if (hot) {
      this.#memory.delete(key);
      this.#memory.set(key, hot);
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
    const object = { body, storedAt, etag: await etagOf(body) };
    this.#remember(key, object);
    return object;
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

  /** Stores an object atomically (temp file, fsync, rename) and returns it as stored. */
  async put(key: string, body: Uint8Array): Promise<StoredObject> {
    const path = this.#path(key);
    const storedAt = this.#now();
    await Deno.mkdir(dirname(path), { recursive: true });
    const tmp = join(this.#tmp, `${crypto.randomUUID()}.part`);
    try {
      const file = await Deno.open(tmp, { write: true, createNew: true, mode: 0o644 });
      try {
        let off = 0;
        while (off < body.length) off += await file.write(body.subarray(off));
        await file.syncData();
      } finally {
        file.close();
      }
      const when = new Date(storedAt);
      await Deno.utime(tmp, when, when);
      await Deno.rename(tmp, path);
    } catch (e) {
      await Deno.remove(tmp).catch(() => {});
      throw e;
    }
    const object = { body, storedAt, etag: await etagOf(body) };
    this.#forget(key);
    this.#remember(key, object);
    return object;
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

  /** Lists keys under a prefix (for maintenance and tests). */
  async *keys(prefix = ""): AsyncGenerator<string> {
    const start = prefix ? this.#path(prefix) : this.root;
    const walk = async function* (dir: string, rel: string): AsyncGenerator<string> {
      let entries: Deno.DirEntry[];
      try {
        entries = await Array.fromAsync(Deno.readDir(dir));
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return;
        throw e;
      }
      for (const entry of entries) {
        const childRel = rel ? `${rel}/${entry.name}` : entry.name;
        if (entry.isDirectory) {
          if (childRel !== "tmp") yield* walk(join(dir, entry.name), childRel);
        } else {
          yield childRel;
        }
      }
    };
    yield* walk(start, prefix);
  }

  #remember(key: string, object: StoredObject): void {
    const size = object.body.byteLength;
    if (size > this.#memoryBudget / 8) return;
    this.#memory.set(key, object);
    this.#memoryBytes += size;
    for (const [oldKey, old] of this.#memory) {
      if (this.#memoryBytes <= this.#memoryBudget) break;
      this.#memory.delete(oldKey);
      this.#memoryBytes -= old.body.byteLength;
    }
  }

  #forget(key: string): void {
    const old = this.#memory.get(key);
    if (old) {
      this.#memory.delete(key);
      this.#memoryBytes -= old.body.byteLength;
    }
  }
}
