/**
 * The in-memory ring buffer of recent requests behind `GET /_/requests`.
 * @module
 */

/** One served request. */
export interface RequestEntry {
  /** When the request arrived: ms since the epoch here, an ISO time in query results. */
  time: number | string;
  client: string;
  method: string;
  path: string;
  /** The matched route pattern, or `unmatched`. */
  route: string;
  status: number;
  /** Body bytes sent. */
  bytes: number;
  duration_ms: number;
  /** hit, miss, stale, error, ... where a cache was involved. */
  cache?: string;
  upstream_ms?: number;
  error_id?: string;
  /**
   * Set when another mipserver asked ({@linkcode isPeer}): a site gateway's or a chained server's own fetch, not a
   * device's. The install records leave it out of installs and devices.
   */
  peer?: true;
  /**
   * Set by the manifest routes (`ctx.meta.manifest`): which manifest was asked for, as the install records name it, so
   * they need not read it back from the path. Not kept by the ring, the log line or the metrics.
   */
  manifest?: ManifestFacts;
}

/**
 * Whether a `User-Agent` is another mipserver's (every upstream request of this server says `mipserver`): a site
 * gateway fetching from its central server. A device could send it too; it would only hide its own installs.
 */
export function isPeer(userAgent: string | null | undefined): boolean {
  return userAgent !== null && userAgent !== undefined && userAgent.startsWith("mipserver");
}

/** Which manifest a request asked for, as the install records name it. */
export interface ManifestFacts {
  /** The package: an index name, or `{host}:{owner}/{repo}[/{folder}]` for a repository. */
  package: string;
  /** The version or ref asked for (`latest` included). */
  requested: string | null;
  mpy: string | null;
  profile: string | null;
}

/** Filters for {@linkcode RequestLog.query}. */
export interface RequestQuery {
  /** Exact client address. */
  ip?: string;
  /** Substring of the path. */
  path?: string;
  /** Exact status, or a class such as 4 for 4xx. */
  status?: number;
  /** At most this many entries (newest first). */
  limit?: number;
}

/**
 * The most characters of a path a ring slot keeps. A head handed over to `Deno.serve` may carry a path of about
 * 100 KB, so a longer path is kept as its first `PATH_KEPT` characters followed by `...` (a copy: the ring holds
 * nothing of the request's own string). Every slot then holds at most this much path, whatever clients send.
 */
export const PATH_KEPT = 2048;

/** `path` as the ring keeps it: as it is, or cut to {@linkcode PATH_KEPT} characters and `...` in a fresh string. */
function keptPath(path: string): string {
  if (path.length <= PATH_KEPT) return path;
  // A slice would keep the whole long string alive behind it; bytes decoded afresh do not.
  return new TextDecoder().decode(new TextEncoder().encode(`${path.slice(0, PATH_KEPT)}...`));
}

/** Strings an {@linkcode Interned} keeps at most; it starts afresh beyond. */
export const INTERNED_MAX = 4096;
/** The longest string an {@linkcode Interned} keeps a copy of (a device's path is far shorter). */
export const INTERNED_LENGTH = 256;

/**
 * One copy of each recent client address and path. A busy server sees the same few again and again, each as a new
 * string read from the request; the ring keeps the copy it already has, so what it holds is not new memory that the
 * garbage collector must move on (a cost per request otherwise, and a heap that grows between full collections).
 * Bounded whatever clients send: at most {@linkcode INTERNED_MAX} strings of at most {@linkcode INTERNED_LENGTH}
 * characters; a longer one is used as it is.
 */
export class Interned {
  #strings = new Map<string, string>();

  /** How many strings are kept. */
  get size(): number {
    return this.#strings.size;
  }

  /** The kept copy of `s`, keeping `s` if there is none. */
  of(s: string): string {
    if (s.length > INTERNED_LENGTH) return s;
    const known = this.#strings.get(s);
    if (known !== undefined) return known;
    if (this.#strings.size >= INTERNED_MAX) this.#strings.clear();
    this.#strings.set(s, s);
    return s;
  }
}

/**
 * A slot of the ring: the fields of one entry (but `manifest`, which is for the install records), written over in
 * place when the ring comes round. Every field is present (undefined where the entry has none), so all slots share one
 * shape.
 */
type Slot = { [K in keyof Required<Omit<RequestEntry, "manifest">>]: RequestEntry[K] };

/**
 * A fixed-size ring buffer of request entries. Entries are copied into slots the ring owns (client and path
 * interned, a path cut to {@linkcode PATH_KEPT} characters), so the entry a request made is garbage at once, whatever
 * the ring's size, and the ring's memory is bounded by its capacity whatever clients send.
 */
export class RequestLog {
  #slots: Slot[];
  #next = 0;
  #size = 0;
  #interned = new Interned();
  /**
   * Hears every entry added, kept or not (the install records, `src/fleet/`): every request this thread answered or
   * an edge worker thread handed over lands here. It must only take the entry, never work on it.
   */
  listener?: (entry: RequestEntry) => void;
  /**
   * Brings in the entries waiting elsewhere to be added (a batch of cache hits, `src/edge/hits.ts`): called before an
   * entry is added and before the entries are read, so that the order and the contents are as if every entry were
   * added at once. It adds them with {@linkcode RequestLog.add} (which does not call it again meanwhile).
   */
  catchUp?: () => void;
  #catchingUp = false;

  constructor(capacity: number) {
    this.#slots = [];
    for (let i = 0; i < Math.max(0, capacity); i++) {
      this.#slots.push({
        time: 0,
        client: "",
        method: "",
        path: "",
        route: "",
        status: 0,
        bytes: 0,
        duration_ms: 0,
        cache: undefined,
        upstream_ms: undefined,
        error_id: undefined,
        peer: undefined,
      });
    }
  }

  /** How many entries the buffer keeps. */
  get capacity(): number {
    return this.#slots.length;
  }

  /** Adds an entry, evicting the oldest once full. */
  add(entry: RequestEntry): void {
    this.#caughtUp();
    this.listener?.(entry);
    if (this.#slots.length === 0) return;
    const slot = this.#slots[this.#next];
    slot.time = entry.time;
    slot.client = this.#interned.of(entry.client);
    slot.method = entry.method;
    slot.path = this.#interned.of(keptPath(entry.path));
    slot.route = entry.route;
    slot.status = entry.status;
    slot.bytes = entry.bytes;
    slot.duration_ms = entry.duration_ms;
    slot.cache = entry.cache;
    slot.upstream_ms = entry.upstream_ms;
    slot.error_id = entry.error_id;
    slot.peer = entry.peer;
    this.#next = (this.#next + 1) % this.#slots.length;
    this.#size = Math.min(this.#size + 1, this.#slots.length);
  }

  /** The entries kept, oldest first, leaving the buffer empty (to hand them to another thread's buffer). */
  take(): RequestEntry[] {
    this.#caughtUp();
    const out: RequestEntry[] = [];
    for (let i = this.#size; i >= 1; i--) out.push(this.#entry(i));
    this.#size = 0;
    this.#next = 0;
    return out;
  }

  #caughtUp(): void {
    if (this.catchUp === undefined || this.#catchingUp) return;
    this.#catchingUp = true;
    try {
      this.catchUp();
    } finally {
      this.#catchingUp = false;
    }
  }

  /** A copy of the `i`th newest entry (1 is the newest), without the fields it does not have. */
  #entry(i: number): RequestEntry {
    const slot = this.#slots[(this.#next - i + this.#slots.length) % this.#slots.length];
    const entry: RequestEntry = {
      time: slot.time,
      client: slot.client,
      method: slot.method,
      path: slot.path,
      route: slot.route,
      status: slot.status,
      bytes: slot.bytes,
      duration_ms: slot.duration_ms,
    };
    if (slot.cache !== undefined) entry.cache = slot.cache;
    if (slot.upstream_ms !== undefined) entry.upstream_ms = slot.upstream_ms;
    if (slot.error_id !== undefined) entry.error_id = slot.error_id;
    if (slot.peer) entry.peer = true;
    return entry;
  }

  /** Entries matching every given filter, newest first. */
  query(q: RequestQuery = {}): RequestEntry[] {
    this.#caughtUp();
    const out: RequestEntry[] = [];
    const limit = q.limit ?? Infinity;
    for (let i = 1; i <= this.#size && out.length < limit; i++) {
      const e = this.#slots[(this.#next - i + this.#slots.length) % this.#slots.length];
      if (q.ip !== undefined && e.client !== q.ip) continue;
      if (q.path !== undefined && !e.path.includes(q.path)) continue;
      if (q.status !== undefined) {
        if (q.status < 10 ? Math.floor(e.status / 100) !== q.status : e.status !== q.status) continue;
      }
      const entry = this.#entry(i);
      if (typeof entry.time === "number") entry.time = new Date(entry.time).toISOString();
      out.push(entry);
    }
    return out;
  }
}
