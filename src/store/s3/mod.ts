/**
 * The object store in an S3 bucket, shared by replicas: objects under `{prefix}{key}`, each with its stored time as
 * user metadata (`x-amz-meta-stored-at`) so every replica reads the same freshness; expiring rewrites that metadata in
 * place (a copy onto itself). A put is one PUT, atomic by S3's rules; a failed one returns the object `uncached`.
 * Opening checks that the bucket answers and honours `If-None-Match: *`, which leases across replicas rely on.
 *
 * The size limit, use order and holds are this process's own (as the memory store keeps them): counts are built at
 * open from a listing of the counted folders, in Last-Modified order, and kept up to date by this process's writes.
 * @module
 */
import { createHash } from "node:crypto";
import type { Logger } from "../../log.ts";
import { FILE_KEY, isObjectKey, isSafeKey, isStoreKey } from "../keys.ts";
import { sha256Hex } from "../hash.ts";
import { Holds, objectToStore, WriteFailures } from "../common.ts";
import {
  allKeys,
  type GetOptions,
  type ListPage,
  type ObjectInfo,
  type ObjectStore,
  type PutOptions,
  type StoredObject,
  type StoreStats,
  underPrefix,
} from "../object_store.ts";
import { S3Client, S3Error } from "./client.ts";
import { uriEncode } from "./sigv4.ts";

/** Where the bucket is, the keys to it and the store's own limits. */
export interface S3StoreOptions {
  /** The service's URL; null for AWS itself. */
  endpoint: string | null;
  region: string;
  bucket: string;
  /** Prepended to every key (`mipserver/`); `""` for the whole bucket. */
  prefix: string;
  /** Address the bucket in the path rather than the host name (most self-hosted services want this). */
  pathStyle: boolean;
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  /** Clock for `storedAt` and reads (default `Date.now`). */
  now?: () => number;
  /** The most bytes of counted objects this process keeps in the bucket (default: no limit). */
  maxBytes?: number | null;
  /** Objects that must never be evicted. */
  protect?: (key: string) => boolean;
  /** Where write failures and damaged objects are reported. */
  logger?: Logger;
  /** How long one request attempt may take, in ms (default 30 s). */
  timeoutMs?: number;
  /** How many times a failed request is tried again (default 3). */
  retries?: number;
  /** The fetch requests go through (default: the global one). */
  fetch?: typeof fetch;
  /** Told of every request attempt: its method, status (0: no answer) and seconds to the headers. */
  onRequest?: (method: string, status: number, seconds: number) => void;
}

/** The user metadata holding an object's stored time (ms since the epoch; 0 once expired). */
const STORED_AT = "x-amz-meta-stored-at";
/** Top-level folders whose objects may count toward the size limit. */
const COUNTED = ["files/", "compiled/", "mirror/"];
/** Top-level folders that hold no objects: leases and probes. */
const NOT_OBJECTS = new Set(["locks", "tmp"]);
/** Probes older than this are leftovers of a process that died during one. */
const PROBE_AGE = 10 * 60_000;
/** Read times kept in memory at most (the oldest go first). */
const READS_KEPT = 50_000;

/** Content and metadata store in an S3 bucket. */
export class S3Store implements ObjectStore {
  readonly kind = "s3";
  readonly location: string;
  /** The client the store's requests go through (leases use the same bucket). */
  readonly client: S3Client;
  protect: (key: string) => boolean;
  #prefix: string;
  #now: () => number;
  #max: number | null;
  #logger?: Logger;
  /** Counted objects and their sizes, least recently used first. */
  #uses = new Map<string, number>();
  /** When objects were last read by this process. */
  #reads = new Map<string, number>();
  #bytes = 0;
  #reserved = 0;
  #evictions = 0;
  #holds = new Holds();
  #failures: WriteFailures;

  /** What every key of this store is put after in the bucket (`""` or a folder ending in `/`). */
  get keyPrefix(): string {
    return this.#prefix;
  }

  constructor(options: S3StoreOptions) {
    this.client = new S3Client(options);
    const prefix = options.prefix.replace(/^\/+/, "");
    this.#prefix = prefix === "" || prefix.endsWith("/") ? prefix : `${prefix}/`;
    if (this.#prefix !== "" && !isSafeKey(this.#prefix.slice(0, -1))) {
      throw new Error(`Unsafe S3 store prefix ${JSON.stringify(options.prefix)}`);
    }
    this.location = `s3://${options.bucket}/${this.#prefix} at ${this.client.endpoint}`;
    this.#now = options.now ?? Date.now;
    this.#max = options.maxBytes ?? null;
    this.#logger = options.logger;
    this.#failures = new WriteFailures(
      {
        failed: "Cannot store in the S3 store; serving without storing (logged once per cause)",
        worksAgain: "S3 store writes work again",
        limit: "the size limit",
        fields: { store: this.location },
      },
      this.#logger,
      () => this.#max,
    );
    this.protect = options.protect ?? (() => false);
  }

  /**
   * Checks that the bucket answers and honours conditional writes (throwing when not), removes probes an earlier
   * process left, counts the counted objects and, with a size limit, evicts the least recently modified until they
   * fit. Returns how many leftovers were removed.
   */
  async open(): Promise<number> {
    try {
      await this.client.list(this.#prefix, { maxKeys: 1 });
    } catch (e) {
      if (e instanceof S3Error && e.code === "NoSuchBucket") {
        throw new S3Error(
          `S3 bucket ${this.client.bucket} does not exist at ${this.client.endpoint}`,
          e.status,
          e.code,
        );
      }
      throw e;
    }
    const probe = `${this.#prefix}locks/probe-${crypto.randomUUID()}`;
    if (!(await checkConditionalWrites(this.client, probe))) {
      throw new Error(
        `The S3 store at ${this.location} ignores If-None-Match: *; replicas cannot share it safely`,
      );
    }
    let removed = 0;
    for (const folder of ["tmp/", "locks/probe-"]) {
      for await (const o of this.client.objects(this.#prefix + folder)) {
        if (this.#now() - o.lastModified < PROBE_AGE) continue;
        await this.client.request("DELETE", o.key);
        removed++;
      }
    }
    // Without a size limit nothing is counted (the bucket is bounded by its own rules, a replica's local tier by
    // cache.max_size): no listing of the bucket at start, no key per object in memory.
    if (this.#max === null) return removed;
    const found: { key: string; size: number; at: number }[] = [];
    for (const folder of COUNTED) {
      for await (const o of this.client.objects(this.#prefix + folder)) {
        const key = o.key.slice(this.#prefix.length);
        if (isStoreKey(key) && isObjectKey(key)) found.push({ key, size: o.size, at: o.lastModified });
      }
    }
    found.sort((a, b) => a.at - b.at);
    this.#uses = new Map(found.map((o) => [o.key, o.size]));
    this.#bytes = found.reduce((sum, o) => sum + o.size, 0);
    if (this.#max !== null) {
      // A limit lowered since the last run applies at once; protected objects alone may exceed it.
      const victims = this.#makeRoom("", 0, true) ?? [];
      if (victims.length > 0) {
        await this.#removeEvicted(victims);
        this.#logger?.info("Evicted S3 objects to fit the size limit", { objects: victims.length });
      }
    }
    return removed;
  }

  #check(key: string): string {
    if (!isStoreKey(key)) throw new Error(`Unsafe cache key ${JSON.stringify(key)}`);
    return this.#prefix + key;
  }

  /** Reads an object; a content file whose bytes do not match its name is removed and reads as missing. */
  async get(key: string, _options?: GetOptions): Promise<StoredObject | undefined> {
    const answer = await this.client.request("GET", this.#check(key), { accept: [404] });
    if (answer.status === 404) return undefined;
    const body = answer.body;
    const digest = await sha256Hex(body);
    const content = FILE_KEY.exec(key);
    if (content && !digest.startsWith(content[1])) {
      this.#logger?.warn("Removed a damaged S3 object; it is fetched again", { key, bytes: body.byteLength });
      await this.remove([key]);
      return undefined;
    }
    this.#used(key);
    return { body, storedAt: storedAtOf(answer.headers), etag: `"${digest.slice(0, 32)}"` };
  }

  /** Streams an object's body from the bucket without keeping it. */
  async read(key: string): Promise<ReadableStream<Uint8Array> | undefined> {
    const stream = await this.client.stream(this.#check(key));
    if (stream) this.#used(key);
    return stream;
  }

  async has(key: string): Promise<boolean> {
    const answer = await this.client.request("HEAD", this.#check(key), { accept: [404] });
    return answer.status !== 404;
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    const answer = await this.client.request("HEAD", this.#check(key), { accept: [404] });
    if (answer.status === 404) return undefined;
    const storedAt = storedAtOf(answer.headers);
    const size = Number(answer.headers.get("content-length") ?? 0);
    return { size, storedAt, lastRead: Math.max(storedAt, this.#reads.get(key) ?? 0) };
  }

  /**
   * Stores an object with one PUT (its payload hash and MD5 signed and checked by S3). When it cannot be stored (the
   * bucket fails, it is larger than the limit, or the limit is taken by protected objects) it is returned with
   * `uncached: true`; the cause is logged once until writes work again.
   */
  async put(key: string, body: Uint8Array, options?: PutOptions): Promise<StoredObject> {
    const full = this.#check(key);
    const { object, digest } = await objectToStore(key, body, options, this.#now);
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
      try {
        await this.client.request("PUT", full, {
          body,
          payloadHash: digest,
          headers: {
            "content-type": "application/octet-stream",
            "content-md5": createHash("md5").update(body).digest("base64"),
            [STORED_AT]: String(object.storedAt),
          },
        });
      } catch (e) {
        return this.#notStored(key, object, causeOf(e), e);
      }
      if (counted && this.#max !== null) {
        this.#bytes += body.byteLength - (this.#uses.get(key) ?? 0);
        this.#uses.delete(key);
        this.#uses.set(key, body.byteLength);
      }
      this.#reads.delete(key);
      this.#failures.works();
      return object;
    } finally {
      this.#reserved -= reserved;
      release();
    }
  }

  /**
   * Picks and unaccounts least recently used unprotected objects until `size` more bytes fit, synchronously (so
   * concurrent puts never pick the same victim); undefined when only protected objects are left, unless `partial`.
   */
  #makeRoom(key: string, size: number, partial = false): string[] | undefined {
    let need = this.#bytes + this.#reserved + size - (this.#uses.get(key) ?? 0) - this.#max!;
    if (need <= 0) return [];
    const victims: string[] = [];
    for (const [k, s] of this.#uses) {
      if (need <= 0) break;
      if (k === key || this.#holds.has(k) || this.protect(k)) continue;
      victims.push(k);
      need -= s;
    }
    if (need > 0 && !partial) return undefined;
    for (const v of victims) {
      this.#bytes -= this.#uses.get(v)!;
      this.#uses.delete(v);
      this.#reads.delete(v);
      this.#evictions++;
    }
    return victims;
  }

  async #removeEvicted(victims: string[]): Promise<void> {
    await Promise.all(
      victims.map((v) =>
        this.client.request("DELETE", this.#prefix + v).catch((e) =>
          this.#failed(v, e, `evict:${causeOf(e)}`, "Cannot remove an evicted S3 object")
        )
      ),
    );
  }

  /** Removes objects (protection does not apply); returns how many existed. */
  async remove(keys: Iterable<string>): Promise<number> {
    const all = [...keys].map((key) => [key, this.#check(key)]);
    let removed = 0;
    await pool(all, 8, async ([key, full]) => {
      const head = await this.client.request("HEAD", full, { accept: [404] });
      this.#forget(key);
      if (head.status === 404) return;
      await this.client.request("DELETE", full);
      removed++;
    });
    return removed;
  }

  #forget(key: string): void {
    const size = this.#uses.get(key);
    if (size !== undefined) {
      this.#bytes -= size;
      this.#uses.delete(key);
    }
    this.#reads.delete(key);
  }

  /**
   * One page of the keys under `prefix` (ListObjectsV2 below `{prefix}/`, and the key `prefix` itself), in code-unit
   * order, following continuation tokens until `limit` keys are found.
   */
  async list(prefix: string, options: { after?: string; limit?: number } = {}): Promise<ListPage> {
    const limit = options.limit ?? 1000;
    const after = options.after;
    const p = prefix.replace(/\/$/, "");
    if (p !== "" && !isSafeKey(p)) throw new Error(`Unsafe cache prefix ${JSON.stringify(prefix)}`);
    if (p !== "" && NOT_OBJECTS.has(p.split("/")[0])) return { keys: [] };
    const keys: string[] = [];
    if (limit <= 0) return { keys };
    if (isStoreKey(p) && (after === undefined || p > after) && (await this.has(p))) keys.push(p);
    const below = this.#prefix + (p === "" ? "" : `${p}/`);
    let token: string | undefined;
    let more = true;
    while (keys.length < limit && more) {
      const page = await this.client.list(below, {
        startAfter: token === undefined && after !== undefined ? this.#prefix + after : undefined,
        token,
        maxKeys: Math.min(1000, limit - keys.length),
      });
      for (const o of page.objects) {
        const key = o.key.slice(this.#prefix.length);
        if (!isStoreKey(key) || !underPrefix(key, p) || NOT_OBJECTS.has(key.split("/")[0])) continue;
        if (after === undefined || key > after) keys.push(key);
      }
      token = page.next;
      more = token !== undefined;
    }
    return more ? { keys, next: keys.at(-1) } : { keys };
  }

  keys(prefix = ""): AsyncGenerator<string> {
    return allKeys(this, prefix);
  }

  /**
   * Marks the objects under `prefix` (those `select` keeps) as expired: their stored time becomes 0 through a copy
   * onto themselves that replaces the metadata, so every replica sees it. Returns how many were marked.
   */
  async expire(prefix: string, select: (key: string) => boolean = () => true): Promise<number> {
    const chosen: string[] = [];
    for await (const key of this.keys(prefix)) if (select(key)) chosen.push(key);
    let n = 0;
    await pool(chosen, 8, async (key) => {
      const full = this.#prefix + key;
      const answer = await this.client.request("PUT", full, {
        headers: {
          "x-amz-copy-source": `/${uriEncode(this.client.bucket)}/${uriEncode(full, true)}`,
          "x-amz-metadata-directive": "REPLACE",
          "content-type": "application/octet-stream",
          [STORED_AT]: "0",
        },
        accept: [404],
      });
      if (answer.status !== 404) n++;
    });
    return n;
  }

  hold(key: string): () => void {
    return this.#holds.hold(key);
  }

  /**
   * This process's count of the counted objects (kept only with a size limit: 0 without one), its evictions, the
   * limit and failed writes.
   */
  stats(): StoreStats {
    return {
      sizeBytes: this.#bytes,
      objects: this.#uses.size,
      evictions: this.#evictions,
      maxBytes: this.#max,
      writeErrors: this.#failures.count,
    };
  }

  /** Every object under the prefix, metadata included (leases and probes aside): a listing of the bucket. */
  async usage(): Promise<{ bytes: number; objects: number }> {
    let bytes = 0;
    let objects = 0;
    for await (const o of this.client.objects(this.#prefix)) {
      const key = o.key.slice(this.#prefix.length);
      if (!isStoreKey(key) || NOT_OBJECTS.has(key.split("/")[0])) continue;
      bytes += o.size;
      objects++;
    }
    return { bytes, objects };
  }

  /** Whether a probe object can be written and removed (under `tmp/`, swept at the next open if left). */
  async writable(): Promise<boolean> {
    const probe = `${this.#prefix}tmp/probe-${crypto.randomUUID()}`;
    try {
      await this.client.request("PUT", probe, { body: new TextEncoder().encode("ok") });
      await this.client.request("DELETE", probe);
      return true;
    } catch {
      await this.client.request("DELETE", probe).catch(() => {});
      return false;
    }
  }

  /** Nothing is written in the background. */
  flush(): Promise<void> {
    return Promise.resolve();
  }

  /** Nothing is held between requests. */
  close(): Promise<void> {
    return Promise.resolve();
  }

  #used(key: string): void {
    const size = this.#uses.get(key);
    if (size !== undefined) {
      this.#uses.delete(key);
      this.#uses.set(key, size);
    }
    this.#reads.delete(key);
    this.#reads.set(key, this.#now());
    if (this.#reads.size > READS_KEPT) this.#reads.delete(this.#reads.keys().next().value!);
  }

  #notStored(key: string, object: StoredObject, cause: string, error: unknown): StoredObject {
    this.#failed(key, error, cause);
    return { ...object, uncached: true };
  }

  /** Counts a failed write and logs its cause the first time it is seen since writes last worked. */
  #failed(key: string, error: unknown, cause = causeOf(error), message?: string): void {
    this.#failures.failed(key, error, cause, message);
  }
}

/**
 * Whether the bucket honours `If-None-Match: *` on PUT: writes the probe `key` twice with it and expects the second to
 * be refused with 412, then removes the probe. Request failures are thrown.
 */
export async function checkConditionalWrites(client: S3Client, key: string): Promise<boolean> {
  const probe = () =>
    client.request("PUT", key, {
      body: new TextEncoder().encode("probe"),
      headers: { "if-none-match": "*", "content-type": "text/plain" },
      accept: [409, 412],
    });
  try {
    const first = await probe();
    if (first.status >= 300) return false;
    return (await probe()).status === 412;
  } finally {
    await client.request("DELETE", key).catch(() => {});
  }
}

/** An object's stored time from its metadata, else its Last-Modified time. */
function storedAtOf(headers: Headers): number {
  const meta = headers.get(STORED_AT);
  if (meta !== null && /^\d+$/.test(meta)) return Number(meta);
  return Date.parse(headers.get("last-modified") ?? "") || 0;
}

/** A short name for why a request failed, to log each cause once. */
function causeOf(e: unknown): string {
  if (e instanceof S3Error) return e.status === 0 ? "unreachable" : `s3-${e.status}${e.code ? `-${e.code}` : ""}`;
  return e instanceof Error ? e.name : "Error";
}

/** Runs `work` over `items`, at most `width` at once. */
async function pool<T>(items: T[], width: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(width, items.length) }, async () => {
    while (next < items.length) await work(items[next++]);
  });
  await Promise.all(lanes);
}
