/**
 * An object store in memory: for tests, and the model the other backends are held to (the compliance suite in
 * `tests/store/` runs against it like any other). Same rules as the disk: counted objects (`isObjectKey`) are evicted
 * least recently used first within `maxBytes`, never a protected one; a put is all or nothing.
 * @module
 */
import { FILE_KEY, isObjectKey, isStoreKey } from "../keys.ts";
import { sha256Hex } from "../hash.ts";
import { Holds, objectToStore } from "../common.ts";
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

/** Options for a {@linkcode MemoryStore}. */
export interface MemoryStoreOptions {
  /** Clock for `storedAt` and reads (default `Date.now`). */
  now?: () => number;
  /** The most bytes of counted objects kept (default: no limit). */
  maxBytes?: number | null;
  /** Objects that must never be evicted. */
  protect?: (key: string) => boolean;
  /**
   * Called after a put's checks and before it takes effect: a test throws here to stand for a crash between writing
   * and committing, which must leave the old object as it was.
   */
  beforeCommit?: (key: string) => void | Promise<void>;
}

interface Entry {
  object: StoredObject;
  lastRead: number;
}

/** Objects in a `Map`. */
export class MemoryStore implements ObjectStore {
  readonly kind = "memory";
  readonly location = "memory";
  protect: (key: string) => boolean;
  #now: () => number;
  #max: number | null;
  #beforeCommit?: (key: string) => void | Promise<void>;
  /** Every object; counted ones also in `#uses`, least recently used first. */
  #objects = new Map<string, Entry>();
  #uses = new Map<string, number>();
  #bytes = 0;
  #evictions = 0;
  #writeErrors = 0;
  #holds = new Holds();

  constructor(options: MemoryStoreOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#max = options.maxBytes ?? null;
    this.protect = options.protect ?? (() => false);
    this.#beforeCommit = options.beforeCommit;
  }

  open(): Promise<number> {
    return Promise.resolve(0);
  }

  #check(key: string): void {
    if (!isStoreKey(key)) throw new Error(`Unsafe cache key ${JSON.stringify(key)}`);
  }

  async get(key: string, _options?: GetOptions): Promise<StoredObject | undefined> {
    this.#check(key);
    const entry = this.#objects.get(key);
    if (!entry) return undefined;
    const content = FILE_KEY.exec(key);
    if (content && !(await sha256Hex(entry.object.body)).startsWith(content[1])) {
      await this.remove([key]);
      return undefined;
    }
    entry.lastRead = this.#now();
    if (this.#uses.has(key)) {
      const size = this.#uses.get(key)!;
      this.#uses.delete(key);
      this.#uses.set(key, size);
    }
    return entry.object;
  }

  async read(key: string): Promise<ReadableStream<Uint8Array> | undefined> {
    const object = await this.get(key);
    return object ? new Blob([object.body as Uint8Array<ArrayBuffer>]).stream() : undefined;
  }

  has(key: string): Promise<boolean> {
    this.#check(key);
    return Promise.resolve(this.#objects.has(key));
  }

  stat(key: string): Promise<ObjectInfo | undefined> {
    this.#check(key);
    const entry = this.#objects.get(key);
    if (!entry) return Promise.resolve(undefined);
    const { body, storedAt } = entry.object;
    return Promise.resolve({ size: body.byteLength, storedAt, lastRead: Math.max(storedAt, entry.lastRead) });
  }

  async put(key: string, body: Uint8Array, options?: PutOptions): Promise<StoredObject> {
    this.#check(key);
    const { object } = await objectToStore(key, body.slice(), options, this.#now);
    const counted = isObjectKey(key);
    const release = this.hold(key);
    try {
      if (counted && this.#max !== null) {
        if (body.byteLength > this.#max || !this.#makeRoom(key, body.byteLength)) {
          this.#writeErrors++;
          return { ...object, uncached: true };
        }
      }
      await this.#beforeCommit?.(key);
      const old = this.#objects.get(key);
      this.#objects.set(key, { object, lastRead: object.storedAt });
      if (counted) {
        this.#bytes += body.byteLength - (old?.object.body.byteLength ?? 0);
        this.#uses.delete(key);
        this.#uses.set(key, body.byteLength);
      }
      return object;
    } finally {
      release();
    }
  }

  /** Evicts least recently used unprotected objects until `size` more bytes fit; false when they cannot. */
  #makeRoom(key: string, size: number): boolean {
    const replaced = this.#uses.get(key) ?? 0;
    let need = this.#bytes + size - replaced - this.#max!;
    if (need <= 0) return true;
    const victims: string[] = [];
    for (const [k, s] of this.#uses) {
      if (need <= 0) break;
      if (k === key || this.#holds.has(k) || this.protect(k)) continue;
      victims.push(k);
      need -= s;
    }
    if (need > 0) return false;
    for (const v of victims) {
      this.#forget(v);
      this.#evictions++;
    }
    return true;
  }

  #forget(key: string): boolean {
    const entry = this.#objects.get(key);
    if (!entry) return false;
    this.#objects.delete(key);
    if (this.#uses.delete(key)) this.#bytes -= entry.object.body.byteLength;
    return true;
  }

  remove(keys: Iterable<string>): Promise<number> {
    let n = 0;
    for (const key of keys) {
      this.#check(key);
      if (this.#forget(key)) n++;
    }
    return Promise.resolve(n);
  }

  list(prefix: string, options: { after?: string; limit?: number } = {}): Promise<ListPage> {
    const limit = options.limit ?? 1000;
    const all = [...this.#objects.keys()]
      .filter((k) => underPrefix(k, prefix) && (options.after === undefined || k > options.after))
      .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const keys = all.slice(0, limit);
    return Promise.resolve(all.length > limit ? { keys, next: keys.at(-1) } : { keys });
  }

  async *keys(prefix = ""): AsyncGenerator<string> {
    yield* (await this.list(prefix, { limit: Infinity })).keys;
  }

  async expire(prefix: string, select: (key: string) => boolean = () => true): Promise<number> {
    let n = 0;
    for await (const key of this.keys(prefix)) {
      const entry = this.#objects.get(key);
      if (!entry || !select(key)) continue;
      entry.object = { ...entry.object, storedAt: 0 };
      n++;
    }
    return n;
  }

  hold(key: string): () => void {
    return this.#holds.hold(key);
  }

  stats(): StoreStats {
    return {
      sizeBytes: this.#bytes,
      objects: this.#uses.size,
      evictions: this.#evictions,
      maxBytes: this.#max,
      writeErrors: this.#writeErrors,
    };
  }

  usage(): Promise<{ bytes: number; objects: number }> {
    let bytes = 0;
    for (const { object } of this.#objects.values()) bytes += object.body.byteLength;
    return Promise.resolve({ bytes, objects: this.#objects.size });
  }

  writable(): Promise<boolean> {
    return Promise.resolve(true);
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
