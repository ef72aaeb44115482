/**
 * Two tiers for replicas that share a bucket: a bounded local store (each replica's `cache.dir`) in front of a shared
 * one (S3), which is the truth. Hits are served from the local tier and never wait on the shared one; a local miss
 * reads the shared tier and keeps a copy with the shared stored time, so every replica judges freshness alike; a
 * `direct` read (a refresh, a fill under its lease) asks the shared tier first. Puts go to the shared tier, then the
 * local one.
 *
 * Removals and expiries are published as event objects under `events/` that every replica polls (every
 * {@linkcode EVENT_POLL_MS}) and applies to its local tier, so a purge on one replica reaches all within seconds.
 * When the shared tier keeps failing, it counts as down for a while ({@linkcode SharedBreaker}): misses answer 503 at
 * once, local hits go on, and the first call after the pause tries again, so replicas resume without a restart.
 * @module
 */
import { Unavailable } from "../../errors.ts";
import type { Logger } from "../../log.ts";
import type {
  GetOptions,
  ListPage,
  ObjectInfo,
  ObjectStore,
  PutOptions,
  StoredObject,
  StoreStats,
} from "../object_store.ts";
import { HashMismatch } from "../object_store.ts";

/** How often a replica looks for other replicas' removals and expiries. */
export const EVENT_POLL_MS = 3_000;
/** How long an event is kept in the bucket (a replica stopped longer than this may keep a purged local copy). */
export const EVENT_KEEP_MS = 60 * 60_000;
/** Most keys one event names; a larger purge writes several. */
const EVENT_KEYS = 1_000;

/** Options of a {@linkcode TieredStore}. */
export interface TieredOptions {
  now?: () => number;
  logger?: Logger;
  /** Failures in a row after which the shared tier counts as down (default 3). */
  failures?: number;
  /** How long it counts as down before the next try, in ms (default 5 s). */
  downFor?: number;
  /** This replica's name in the events it writes. */
  replica?: string;
}

/** The figures of the shared tier for `/healthz` and `/metrics`. */
export interface SharedFigures {
  /** Whether the shared tier answered its last call. */
  reachable: boolean;
  /** Calls to it that failed since start. */
  errors: number;
  /** Calls refused at once while it counted as down. */
  refused: number;
  /** Other replicas' events applied to the local tier. */
  eventsApplied: number;
}

/** Counts failures in a row; past the limit, calls fail at once until the pause is over. */
class SharedBreaker {
  #failures = 0;
  #openUntil = 0;
  errors = 0;
  refused = 0;
  lastError = "";
  constructor(readonly limit: number, readonly pause: number, readonly now: () => number) {}

  get down(): boolean {
    return this.#openUntil > this.now();
  }

  get reachable(): boolean {
    return this.#failures === 0;
  }

  async call<T>(what: string, work: () => Promise<T>): Promise<T> {
    if (this.down) {
      this.refused++;
      throw new Unavailable(`The shared store is down (${this.lastError}); ${what} is not in this replica's cache`);
    }
    try {
      const out = await work();
      this.#failures = 0;
      return out;
    } catch (e) {
      if (!(e instanceof Unavailable)) throw e;
      this.errors++;
      this.lastError = e.message;
      if (++this.#failures >= this.limit) this.#openUntil = this.now() + this.pause;
      throw e;
    }
  }
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A local tier in front of a shared store. */
export class TieredStore implements ObjectStore {
  readonly kind: string;
  readonly location: string;
  #local: ObjectStore;
  #shared: ObjectStore;
  #breaker: SharedBreaker;
  #now: () => number;
  #logger?: Logger;
  #replica: string;
  #seen = "";
  #poller?: ReturnType<typeof setInterval>;
  #polling?: Promise<void>;
  #eventsApplied = 0;
  #protect: (key: string) => boolean = () => false;

  constructor(local: ObjectStore, shared: ObjectStore, options: TieredOptions = {}) {
    this.#local = local;
    this.#shared = shared;
    this.kind = shared.kind;
    this.location = `${shared.location}, local tier ${local.location}`;
    this.#now = options.now ?? Date.now;
    this.#logger = options.logger;
    this.#replica = options.replica ?? crypto.randomUUID().slice(0, 8);
    this.#breaker = new SharedBreaker(options.failures ?? 3, options.downFor ?? 5_000, this.#now);
  }

  get protect(): (key: string) => boolean {
    return this.#protect;
  }

  set protect(test: (key: string) => boolean) {
    this.#protect = test;
    this.#local.protect = test;
    this.#shared.protect = test;
  }

  /** The shared tier's figures. */
  shared(): SharedFigures {
    return {
      reachable: this.#breaker.reachable,
      errors: this.#breaker.errors,
      refused: this.#breaker.refused,
      eventsApplied: this.#eventsApplied,
    };
  }

  /**
   * Opens both tiers. A shared tier that cannot be reached at all does not stop the start: the replica serves its
   * local tier, misses answer 503, and the shared tier is opened (its checks included) once it answers. One that
   * answers with a refusal (no bucket, bad keys, no conditional writes) does stop it.
   */
  async open(): Promise<number> {
    let removed = await this.#local.open();
    // Events of the kept window apply at start: a replica that was stopped during a purge drops its copies too.
    this.#seen = eventKey(this.#now() - EVENT_KEEP_MS, "");
    try {
      removed += await this.#openShared();
    } catch (e) {
      if (!unreachable(e)) throw e;
      this.#logger?.error("The shared store cannot be reached; serving this replica's local tier until it can", {
        store: this.#shared.location,
        error: (e as Error).message,
      });
    }
    this.#poller = setInterval(() => {
      this.#polling ??= (this.#sharedOpen ? this.poll() : this.#openShared().then(() => {
        this.#logger?.info("The shared store answers again; opened", { store: this.#shared.location });
      })).catch(() => {}).finally(() => (this.#polling = undefined));
    }, EVENT_POLL_MS);
    Deno.unrefTimer(this.#poller);
    return removed;
  }

  #sharedOpen = false;

  async #openShared(): Promise<number> {
    const removed = await this.#breaker.call("the shared store", () => this.#shared.open());
    this.#sharedOpen = true;
    await this.poll();
    return removed;
  }

  async get(key: string, options?: GetOptions): Promise<StoredObject | undefined> {
    if (!options?.direct) {
      const local = await this.#local.get(key);
      if (local) return local;
    }
    let shared: StoredObject | undefined;
    try {
      shared = await this.#breaker.call(key, () => this.#shared.get(key, { direct: true }));
    } catch (e) {
      // A refresh, a fill or a document read that cannot reach the shared tier goes on with what this replica has
      // (a fill then fails on its lease, which needs the shared tier: a 503 naming it).
      if (options?.direct) return await this.#local.get(key);
      throw e;
    }
    if (!shared) {
      if (options?.direct) await this.#local.remove([key]); // gone from the truth: purged elsewhere
      return undefined;
    }
    await this.#keepLocally(key, shared);
    return shared;
  }

  async #keepLocally(key: string, object: StoredObject): Promise<void> {
    await this.#local.put(key, object.body, { storedAt: object.storedAt }).catch((e) =>
      this.#logger?.warn("Cannot keep a shared object in the local tier", { key, error: (e as Error).message })
    );
  }

  async read(key: string): Promise<ReadableStream<Uint8Array> | undefined> {
    return await this.#local.read(key) ?? await this.#breaker.call(key, () => this.#shared.read(key));
  }

  async has(key: string): Promise<boolean> {
    return await this.#local.has(key) || await this.#breaker.call(key, () => this.#shared.has(key));
  }

  /** The shared tier's answer, or this replica's while the shared tier cannot be reached. */
  async stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      return await this.#breaker.call(key, () => this.#shared.stat(key));
    } catch {
      return await this.#local.stat(key);
    }
  }

  async put(key: string, body: Uint8Array, options?: PutOptions): Promise<StoredObject> {
    let stored: StoredObject;
    try {
      stored = await this.#breaker.call(key, () => this.#shared.put(key, body, options));
    } catch (e) {
      if (e instanceof HashMismatch) throw e;
      // The shared tier is down: this replica serves it from its local tier; the others fetch it themselves.
      const local = await this.#local.put(key, body, options);
      return { ...local, uncached: true };
    }
    if (!stored.uncached) await this.#keepLocally(key, stored);
    return stored;
  }

  async remove(keys: Iterable<string>): Promise<number> {
    const list = [...keys];
    const n = await this.#breaker.call("a removal", () => this.#shared.remove(list));
    await this.#local.remove(list);
    await this.#publish({ remove: list });
    return n;
  }

  list(prefix: string, options?: { after?: string; limit?: number }): Promise<ListPage> {
    return this.#breaker.call("a listing", () => this.#shared.list(prefix, options));
  }

  async *keys(prefix = ""): AsyncGenerator<string> {
    yield* this.#shared.keys(prefix);
  }

  async expire(prefix: string, select: (key: string) => boolean = () => true): Promise<number> {
    const chosen: string[] = [];
    const n = await this.#breaker.call("an expiry", () =>
      this.#shared.expire(prefix, (key) => {
        if (!select(key)) return false;
        chosen.push(key);
        return true;
      }));
    for (const key of chosen) await this.#local.expire(key);
    await this.#publish({ expire: chosen });
    return n;
  }

  hold(key: string): () => void {
    const a = this.#local.hold(key);
    const b = this.#shared.hold(key);
    return () => {
      a();
      b();
    };
  }

  /** The local tier's figures (its size limit is `cache.max_size`). */
  stats(): StoreStats {
    return this.#local.stats();
  }

  /** This replica's local tier (a walk of its folder); the bucket, which may be large, is not listed for it. */
  usage(): Promise<{ bytes: number; objects: number }> {
    return this.#local.usage();
  }

  async writable(): Promise<boolean> {
    return await this.#local.writable() && await this.#breaker.call("a probe", () => this.#shared.writable())
      .catch(() => false);
  }

  async flush(): Promise<void> {
    await this.#local.flush();
    await this.#shared.flush();
  }

  async close(): Promise<void> {
    clearInterval(this.#poller);
    await this.#polling;
    await this.#local.close();
    await this.#shared.close();
  }

  /** Writes events naming removed or expired keys, for the other replicas. */
  async #publish(event: { remove?: string[]; expire?: string[] }): Promise<void> {
    const keys = event.remove ?? event.expire ?? [];
    for (let i = 0; i < keys.length; i += EVENT_KEYS) {
      const part = keys.slice(i, i + EVENT_KEYS);
      const body = enc.encode(JSON.stringify(event.remove ? { remove: part } : { expire: part }));
      const key = eventKey(this.#now(), this.#replica);
      await this.#breaker.call("an event", () => this.#shared.put(key, body)).catch((e) =>
        this.#logger?.warn("Cannot tell the other replicas of a change; their copies expire on their own", {
          error: (e as Error).message,
        })
      );
    }
  }

  /** Applies the other replicas' events written since the last look to the local tier; drops expired events. */
  async poll(): Promise<void> {
    let after = this.#seen;
    const old = eventKey(this.#now() - EVENT_KEEP_MS, "");
    while (true) {
      const page = await this.#breaker.call("events", () => this.#shared.list("events", { after }));
      for (const key of page.keys) {
        after = key;
        if (key < old) {
          await this.#shared.remove([key]).catch(() => {});
          continue;
        }
        if (key.endsWith(`-${this.#replica}-e`)) continue;
        const object = await this.#shared.get(key, { direct: true });
        if (!object) continue;
        let doc: { remove?: string[]; expire?: string[] };
        try {
          doc = JSON.parse(dec.decode(object.body));
        } catch {
          continue;
        }
        if (Array.isArray(doc.remove)) await this.#local.remove(doc.remove.filter((k) => typeof k === "string"));
        for (const k of Array.isArray(doc.expire) ? doc.expire : []) {
          if (typeof k === "string") await this.#local.expire(k);
        }
        this.#eventsApplied++;
      }
      if (page.next === undefined) break;
    }
    this.#seen = after;
  }
}

/** Whether an error says the shared store could not be reached at all (no answer), rather than refused. */
function unreachable(e: unknown): boolean {
  return e instanceof Unavailable && (e as { status?: unknown }).status === 0;
}

/** An event's key: its time (sortable), the replica that wrote it and a random part. */
function eventKey(time: number, replica: string): string {
  const t = String(Math.max(0, Math.floor(time))).padStart(15, "0");
  return replica === "" ? `events/${t}` : `events/${t}-${crypto.randomUUID().slice(0, 8)}-${replica}-e`;
}
