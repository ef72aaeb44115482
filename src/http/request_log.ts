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

/** A fixed-size ring buffer of request entries. */
export class RequestLog {
  #entries: (RequestEntry | undefined)[];
  #next = 0;
  #size = 0;
  /**
   * Hears every entry added, kept or not (the install records, `src/fleet/`): every request this thread answered or
   * an edge worker thread handed over lands here. It must only take the entry, never work on it.
   */
  listener?: (entry: RequestEntry) => void;

  constructor(capacity: number) {
    this.#entries = new Array(Math.max(0, capacity));
  }

  /** How many entries the buffer keeps. */
  get capacity(): number {
    return this.#entries.length;
  }

  /** Adds an entry, evicting the oldest once full. */
  add(entry: RequestEntry): void {
    this.listener?.(entry);
    if (this.#entries.length === 0) return;
    this.#entries[this.#next] = entry;
    this.#next = (this.#next + 1) % this.#entries.length;
    this.#size = Math.min(this.#size + 1, this.#entries.length);
  }

  /** The entries kept, oldest first, leaving the buffer empty (to hand them to another thread's buffer). */
  take(): RequestEntry[] {
    const out: RequestEntry[] = [];
    for (let i = this.#size; i >= 1; i--) {
      out.push(this.#entries[(this.#next - i + this.#entries.length) % this.#entries.length]!);
    }
    this.#entries.fill(undefined);
    this.#size = 0;
    this.#next = 0;
    return out;
  }

  /** Entries matching every given filter, newest first. */
  query(q: RequestQuery = {}): RequestEntry[] {
    const out: RequestEntry[] = [];
    const limit = q.limit ?? Infinity;
    for (let i = 1; i <= this.#size && out.length < limit; i++) {
      const e = this.#entries[(this.#next - i + this.#entries.length) % this.#entries.length]!;
      if (q.ip !== undefined && e.client !== q.ip) continue;
      if (q.path !== undefined && !e.path.includes(q.path)) continue;
      if (q.status !== undefined) {
        if (q.status < 10 ? Math.floor(e.status / 100) !== q.status : e.status !== q.status) continue;
      }
      out.push(typeof e.time === "number" ? { ...e, time: new Date(e.time).toISOString() } : e);
    }
    return out;
  }
}
