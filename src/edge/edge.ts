/**
 * The edge: the first thing a request meets. It repeats recent cache-hit answers without routing, awaiting or
 * touching the cache, which is what makes a busy gateway fast; everything else goes on to the full handler.
 *
 * A handler marks an answer shareable only when it is an unchanged cache hit (`serveObject`). The edge keeps such
 * an answer for a short window (one second by default, never longer than `cache.ttl`), keyed by Host, path and
 * query (manifests embed the Host in absolute URLs). Whatever the edge answers in that window is what the full
 * handler would have answered up to a second earlier: when a manifest goes stale, a refresh lands or the policy
 * changes, devices see it at most a window later. Only GET and HEAD are repeated; If-None-Match gets its 304.
 * @module
 */
import { KINDS_KEPT } from "./h1.ts";
import { isPeer, type RequestEntry } from "../http/request_log.ts";
import { representationResponse, type Shareable } from "../http/responses.ts";
import type { ClientInfo, Recorder, ServeHandler } from "../http/server.ts";
import { roundMs, splitUrl } from "../http/server.ts";

/** How long an answer is repeated by default, in ms. */
export const EDGE_WINDOW_MS = 1000;

/** What an {@linkcode EdgeCache} is built from. */
export interface EdgeCacheOptions {
  /** How long an answer is repeated, in ms. 0 turns the edge off. */
  windowMs: number;
  /**
   * Most bytes held at once, as {@linkcode entryCost} counts them (keys, bodies, headers, the response bytes made
   * from them); the oldest answers go first. One answer may cost at most an eighth of it.
   */
  maxBytes: number;
  /** The clock, in ms (default: `Date.now`). */
  now?: () => number;
}

/** What an entry costs beyond its key, body and headers: the Map slot, the entry and answer objects. */
export const ENTRY_OVERHEAD = 1024;

/**
 * The bytes an entry holds, as counted against the budget: the key (Host, path and query, up to the 8 KiB a head
 * may have), the body, the header text, and the response bytes made from them (`KINDS_KEPT` copies of the body and
 * headers, `h1.ts`), plus a fixed overhead for the objects around them. An upper bound rather than a measurement: the
 * body may be shared with the memory cache, and not every kind of response is made.
 */
export function entryCost(key: string, shared: Shareable): number {
  let headers = 0;
  for (const fields of [shared.headers, shared.notModified]) {
    for (const name in fields) headers += name.length + fields[name].length + 4;
  }
  return key.length + (1 + KINDS_KEPT) * (shared.body.byteLength + headers) + ENTRY_OVERHEAD;
}

interface Entry {
  shared: Shareable;
  until: number;
  cost: number;
}

/**
 * The answers the edge may repeat, each for `windowMs`, within a byte budget that counts keys too. Entries leave in
 * the order they came (every window is as long), so the expired ones are always the oldest: each `put` and `get`
 * drops those first, and an expired answer does not linger until the budget pushes it out.
 */
export class EdgeCache {
  #o: EdgeCacheOptions;
  #now: () => number;
  #entries = new Map<string, Entry>();
  #bytes = 0;

  constructor(options: EdgeCacheOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  /** How many answers are kept. */
  get size(): number {
    return this.#entries.size;
  }

  /** Bytes held, as {@linkcode entryCost} counts them. */
  get bytes(): number {
    return this.#bytes;
  }

  /** The answer kept for `key`, if its window is still open. */
  get(key: string): Shareable | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    const now = this.#now();
    if (now < entry.until) return entry.shared;
    this.#expire(now);
    return undefined;
  }

  /** Keeps `shared` for `key` for one window from now, unless the edge is off or the answer costs too much. */
  put(key: string, shared: Shareable): void {
    if (this.#o.windowMs <= 0) return;
    const cost = entryCost(key, shared);
    if (cost > this.#o.maxBytes / 8) return;
    const now = this.#now();
    const old = this.#entries.get(key);
    if (old) this.#delete(key, old);
    this.#expire(now);
    this.#entries.set(key, { shared, until: now + this.#o.windowMs, cost });
    this.#bytes += cost;
    for (const [k, e] of this.#entries) {
      if (this.#bytes <= this.#o.maxBytes) break;
      this.#delete(k, e);
    }
  }

  /** Drops the entries whose window has closed: the oldest ones. */
  #expire(now: number): void {
    for (const [k, e] of this.#entries) {
      if (now < e.until) break;
      this.#delete(k, e);
    }
  }

  #delete(key: string, entry: Entry): void {
    this.#entries.delete(key);
    this.#bytes -= entry.cost;
  }
}

/**
 * The edge's key of a request: its Host, then its path and query as sent. The worker threads' own connections
 * (`front.ts`) and `Deno.serve` requests both key by it, so they share one {@linkcode EdgeCache}.
 */
export function edgeKey(host: string | null, pathAndQuery: string): string {
  return `${host ?? ""} ${pathAndQuery}`;
}

/** The request log entry of an answer the edge gave from `shared`. */
export function hitEntry(
  shared: Shareable,
  request: {
    method: string;
    path: string;
    client: string;
    status: number;
    time: number;
    durationMs: number;
    peer?: boolean;
  },
): RequestEntry {
  const { method, status } = request;
  const entry: RequestEntry = {
    time: request.time,
    client: request.client,
    method,
    path: request.path,
    route: shared.route,
    status,
    bytes: method === "HEAD" || status === 304 ? 0 : shared.body.byteLength,
    duration_ms: roundMs(request.durationMs),
    cache: "hit",
  };
  if (request.peer) entry.peer = true;
  return entry;
}

/** What {@linkcode createEdgeHandler} needs. */
export interface EdgeOptions {
  cache: EdgeCache;
  /** Records the requests the edge answers itself (the handler records the others). */
  record: Recorder;
  /** The wall clock for log times (default: `Date.now`). */
  now?: () => number;
}

/**
 * Puts the edge in front of `handler`: a GET or HEAD whose answer is kept is answered at once and recorded as a
 * cache hit; any other request goes to `handler`, which hands back a shareable answer for the edge to keep.
 */
export function createEdgeHandler(handler: ServeHandler, options: EdgeOptions): ServeHandler {
  const { cache, record } = options;
  const now = options.now ?? Date.now;
  return (request, info) => {
    const method = request.method;
    if (method !== "GET" && method !== "HEAD") return handler(request, info);
    const started = performance.now();
    const { pathname, search } = splitUrl(request.url);
    const path = pathname + search;
    const key = edgeKey(request.headers.get("host"), path);
    const shared = cache.get(key);
    if (shared === undefined) return handler(request, info, (s) => cache.put(key, s));
    const response = representationResponse(request, shared);
    const client = (info as ClientInfo | undefined)?.remoteAddr.hostname ?? "unknown";
    const durationMs = performance.now() - started;
    const peer = isPeer(request.headers.get("user-agent"));
    const entry = hitEntry(shared, { method, path, client, status: response.status, time: now(), durationMs, peer });
    record(entry, shared.kind);
    return Promise.resolve(response);
  };
}
