/**
 * The one storage interface: what every backend (disk, memory, and the shared ones to come) offers the rooms above it,
 * which know nothing of where the bytes live. `tests/store/` runs the same compliance cases against each backend.
 * @module
 */
import { BadUpstream } from "../errors.ts";

/** A stored object. */
export interface StoredObject {
  body: Uint8Array;
  /** When it was stored (ms since the epoch, from the store's clock); 0 once marked expired. */
  storedAt: number;
  /** A strong ETag for the body: its quoted sha256, cut to 32 hex characters. */
  etag: string;
  /** True when it could not be stored (a failing store, over the size limit) and lives in memory only. */
  uncached?: boolean;
}

/** What {@linkcode ObjectStore.stat} tells of an object without reading it. */
export interface ObjectInfo {
  size: number;
  /** When it was stored (ms since the epoch); 0 once marked expired. */
  storedAt: number;
  /** When it was last read, as far as the store keeps track (at least `storedAt`, at most a minute or so late). */
  lastRead: number;
}

/** One page of a listing. */
export interface ListPage {
  /** Keys in code-unit order. */
  keys: string[];
  /** Pass as `after` for the next page; absent on the last one. */
  next?: string;
}

/** The store's figures, for `/healthz` and `/metrics`. */
export interface StoreStats {
  /** Bytes of stored objects that count toward the limit (manifests and metadata aside). */
  sizeBytes: number;
  /** Stored objects that count toward the limit. */
  objects: number;
  /** Objects evicted to stay within `maxBytes` since the store opened. */
  evictions: number;
  /** The size limit in bytes, or null for none. */
  maxBytes: number | null;
  /** Writes that failed (the object was served from memory) since the store opened. */
  writeErrors: number;
}

/** Options of {@linkcode ObjectStore.put}. */
export interface PutOptions {
  /**
   * The body's expected lowercase hex sha256 (or a prefix of it): a body that does not match is refused with a
   * {@linkcode HashMismatch} and nothing is stored.
   */
  sha256?: string;
  /** The stored time to keep instead of now (a copy of an object another tier stored). */
  storedAt?: number;
}

/** Options of {@linkcode ObjectStore.get}. */
export interface GetOptions {
  /**
   * Read from the store itself, not from the in-memory hot set, and do not keep the answer there: for documents
   * another process may replace (the imported layer's catalog) and for one-off walks (export, purge).
   */
  direct?: boolean;
}

/** A body that does not match the hash it was put with; nothing was stored. */
export class HashMismatch extends BadUpstream {
  constructor(key: string, expected: string, actual: string) {
    super(`Refused to store ${key}: its sha256 is ${actual}, expected ${expected}`);
  }
}

/**
 * Objects by key. Keys are `/`-separated safe segments with at least one folder (`isStoreKey`); the layout is spelled
 * in `keys.ts` alone. A put is atomic: a reader sees the old object or the new one whole, never a part, and a put
 * that fails (or a process that dies during one) leaves the old object as it was.
 */
export interface ObjectStore {
  /** The backend's name, as `/healthz` shows it (`disk`, `memory`, ...). */
  readonly kind: string;
  /** Where the objects are, for logs and the status page (a folder, a bucket URL). */
  readonly location: string;
  /**
   * Objects that must never be evicted, asked before each eviction (the lock, pins); objects held through
   * {@linkcode ObjectStore.hold} or being written are protected as well.
   */
  protect: (key: string) => boolean;
  /** Prepares the store (folders, leftovers of a crash, counts, the size limit); returns how many leftovers went. */
  open(): Promise<number>;
  /** Reads an object, or undefined when there is none. */
  get(key: string, options?: GetOptions): Promise<StoredObject | undefined>;
  /** Streams an object's bytes without keeping them (large files for export), or undefined when there is none. */
  read(key: string): Promise<ReadableStream<Uint8Array> | undefined>;
  /** Whether {@linkcode ObjectStore.get} finds the object (one kept in memory only, `uncached`, may count). */
  has(key: string): Promise<boolean>;
  /** A stored object's size, when it was stored and last read, or undefined when none is stored. */
  stat(key: string): Promise<ObjectInfo | undefined>;
  /**
   * Stores an object and returns it as stored. When it cannot be stored (a failing backend, larger than the size
   * limit, or the limit is taken by protected objects) it is returned with `uncached: true`, kept in memory only, and
   * the cause is logged once until writes work again. A body that does not match `options.sha256` throws.
   */
  put(key: string, body: Uint8Array, options?: PutOptions): Promise<StoredObject>;
  /** Removes objects (protection does not apply: the caller decided); returns how many existed. */
  remove(keys: Iterable<string>): Promise<number>;
  /**
   * One page of the keys under `prefix` (the key itself or keys below it, whole segments: `named/a` does not list
   * `named/ab/...`; `""` lists everything), in code-unit order, after the key `after`, at most `limit` (default 1,000).
   */
  list(prefix: string, options?: { after?: string; limit?: number }): Promise<ListPage>;
  /** Every key under `prefix`, page by page. */
  keys(prefix?: string): AsyncGenerator<string>;
  /**
   * Marks the objects under `prefix` (those `select` keeps) as expired (`storedAt` 0), so they are fetched again on
   * next use while still served meanwhile. Returns how many were marked.
   */
  expire(prefix: string, select?: (key: string) => boolean): Promise<number>;
  /** Protects `key` from eviction until the returned function is called. Holds nest. */
  hold(key: string): () => void;
  /** Counted objects, evictions, the limit and failed writes. */
  stats(): StoreStats;
  /** Every stored object, metadata included: bytes and count (a walk; the caller decides how often). */
  usage(): Promise<{ bytes: number; objects: number }>;
  /** Whether the store takes writes now (a probe that leaves nothing behind). */
  writable(): Promise<boolean>;
  /** Resolves once background bookkeeping (use stamps) is written. */
  flush(): Promise<void>;
  /** Writes what is pending and lets go of what the store holds (files, connections); open again to reuse it. */
  close(): Promise<void>;
}

/** Every key under `prefix` of `store`, page by page through {@linkcode ObjectStore.list}. */
export async function* allKeys(store: Pick<ObjectStore, "list">, prefix = ""): AsyncGenerator<string> {
  let after: string | undefined;
  while (true) {
    const page = await store.list(prefix, { after });
    yield* page.keys;
    if (page.next === undefined) return;
    after = page.next;
  }
}

/** Whether `key` is `prefix` or below it, in whole segments (`""` holds every key). */
export function underPrefix(key: string, prefix: string): boolean {
  if (prefix === "") return true;
  const p = prefix.endsWith("/") ? prefix.slice(0, -1) : prefix;
  return key === p || key.startsWith(p + "/");
}
