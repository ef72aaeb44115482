/**
 * Prometheus metrics, one registry per server instance, written by the small exposition in `prometheus.ts`.
 * Per-request figures are first gathered in a {@linkcode RequestTally}: plain maps that are cheap to add to on the
 * hot path and to send between threads, read only when `/metrics` is scraped.
 *
 * Labels come from closed sets: the route is a router pattern (or `unmatched`/`invalid`), the method one of
 * {@linkcode HTTP_METHODS} or `OTHER`, the status a number from 100 to 599 (else 0). A client cannot add series.
 * @module
 */
import * as client from "./prometheus.ts";
import { type Breakers, STATE_VALUES } from "../upstream/breaker.ts";

/** Request duration buckets, in seconds. */
export const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** The methods counted by name in the `method` label; any other method a client sends counts as `OTHER`. */
export const HTTP_METHODS: ReadonlySet<string> = new Set([
  "GET",
  "HEAD",
  "POST",
  "PUT",
  "DELETE",
  "PATCH",
  "OPTIONS",
  "CONNECT",
  "TRACE",
]);

/** `method` if it is one of {@linkcode HTTP_METHODS}, else `OTHER`. */
export function methodLabel(method: string): string {
  return HTTP_METHODS.has(method) ? method : client.OTHER;
}

/** `status` if it is an HTTP status code (100 to 599), else 0. */
function statusLabel(status: number): number {
  return Number.isInteger(status) && status >= 100 && status <= 599 ? status : 0;
}

/** A tally's figures as plain arrays, to send to another thread or add to another tally. */
export interface TallySnapshot {
  /** route, method, status, requests */
  requests: [string, string, number, number][];
  /** route, body bytes, requests per duration bucket (the last one is +Inf), sum of durations in seconds */
  routes: [string, number, number[], number][];
  /** kind of cached object, hits the edge answered, their body bytes */
  edgeHits: [string, number, number][];
}

interface RouteFigures {
  bytes: number;
  buckets: number[];
  sum: number;
}

/** Per-request figures: requests by route, method and status; bytes and durations by route; edge hits by kind. */
export class RequestTally {
  #requests = new Map<string, [string, string, number, number]>();
  #routes = new Map<string, RouteFigures>();
  #edge = new Map<string, [string, number, number]>();
  /** The series counted last, by the route, method and status it was asked for. */
  #last?: { route: string; method: string; status: number; row: [string, string, number, number] };

  /** Counts one served request. */
  observe(route: string, method: string, status: number, seconds: number, bytes: number): void {
    this.#count(route, method, status, 1);
    const figures = this.#route(route);
    figures.bytes += bytes;
    figures.sum += seconds;
    let i = 0;
    while (i < DURATION_BUCKETS.length && seconds > DURATION_BUCKETS[i]) i++;
    figures.buckets[i]++;
  }

  /** Counts `n` requests (default 1) the edge answered from a kept cache hit of `kind`, with their body bytes. */
  edgeHit(kind: string, bytes: number, n = 1): void {
    const hits = this.#edge.get(kind);
    if (hits) {
      hits[1] += n;
      hits[2] += bytes;
    } else this.#edge.set(kind, [kind, n, bytes]);
  }

  /** Adds another tally's figures. */
  add(snapshot: TallySnapshot): void {
    for (const [route, method, status, n] of snapshot.requests) this.#count(route, method, status, n);
    for (const [route, bytes, buckets, sum] of snapshot.routes) {
      const figures = this.#route(route);
      figures.bytes += bytes;
      figures.sum += sum;
      for (let i = 0; i < buckets.length; i++) figures.buckets[i] += buckets[i];
    }
    for (const [kind, n, bytes] of snapshot.edgeHits) this.edgeHit(kind, bytes, n);
  }

  /** The figures so far. */
  snapshot(): TallySnapshot {
    return {
      requests: [...this.#requests.values()].map((r) => [...r]),
      routes: [...this.#routes].map(([route, f]) => [route, f.bytes, [...f.buckets], f.sum]),
      edgeHits: [...this.#edge.values()].map((e) => [...e]),
    };
  }

  /** The figures so far, starting afresh; undefined when nothing was counted. */
  take(): TallySnapshot | undefined {
    if (this.#requests.size === 0 && this.#edge.size === 0) return undefined;
    const snapshot = this.snapshot();
    this.#requests.clear();
    this.#last = undefined;
    this.#routes.clear();
    this.#edge.clear();
    return snapshot;
  }

  #count(rawRoute: string, rawMethod: string, rawStatus: number, n: number): void {
    let route = rawRoute;
    // A busy server counts the same few series over and over: the last one is found without building its key.
    const last = this.#last;
    if (last !== undefined && last.route === route && last.method === rawMethod && last.status === rawStatus) {
      last.row[3] += n;
      return;
    }
    const method = methodLabel(rawMethod);
    const status = statusLabel(rawStatus);
    let key = `${route} ${method} ${status}`;
    // Past the cap, only series already counted go on under their own route.
    if (this.#requests.size >= client.MAX_SERIES && !this.#requests.has(key)) {
      route = client.OTHER;
      key = `${route} ${method} ${status}`;
    }
    let row = this.#requests.get(key);
    if (row) row[3] += n;
    else this.#requests.set(key, row = [route, method, status, n]);
    this.#last = { route: rawRoute, method: rawMethod, status: rawStatus, row };
  }

  #route(route: string): RouteFigures {
    if (this.#routes.size >= client.MAX_SERIES && !this.#routes.has(route)) route = client.OTHER;
    let figures = this.#routes.get(route);
    if (!figures) {
      figures = { bytes: 0, buckets: new Array(DURATION_BUCKETS.length + 1).fill(0), sum: 0 };
      this.#routes.set(route, figures);
    }
    return figures;
  }
}

/** The request duration histogram, read from a tally at scrape time (buckets are tallied already). */
class TallyHistogram implements client.Metric {
  readonly name = "mipserver_http_request_duration_seconds";
  readonly help = "Time from request to response headers, by route pattern.";
  #tally: RequestTally;

  constructor(tally: RequestTally) {
    this.#tally = tally;
  }

  render(): Promise<string> {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    for (const [route, , buckets, sum] of this.#tally.snapshot().routes) {
      const label = client.formatLabels([["route", route]]);
      let cumulative = 0;
      buckets.forEach((n, i) => {
        cumulative += n;
        const le = i < DURATION_BUCKETS.length ? client.formatValue(DURATION_BUCKETS[i]) : "+Inf";
        lines.push(`${this.name}_bucket${client.formatLabels([["le", le], ["route", route]])} ${cumulative}`);
      });
      lines.push(`${this.name}_sum${label} ${client.formatValue(sum)}`);
      lines.push(`${this.name}_count${label} ${cumulative}`);
    }
    return Promise.resolve(lines.join("\n"));
  }
}

/** The metrics a server exposes at `GET /metrics`. Later modules add their own series to `registry`. */
export class Metrics {
  /** The registry behind `/metrics`. */
  readonly registry: client.Registry = new client.Registry();
  /** Requests by route, method and status. */
  readonly requests: client.Counter<"route" | "method" | "status">;
  /** Response body bytes by route. */
  readonly bytes: client.Counter<"route">;
  /** Cache lookups by kind of object and outcome (hit, miss, stale, error, offline, negative). */
  readonly cache: client.Counter<"kind" | "outcome">;
  /** Bytes served from the cache and fetched from upstream. */
  readonly cacheBytes: client.Counter<"from">;
  /** Upstream attempts by host and status (or `error`). */
  readonly upstream: client.Counter<"host" | "status">;
  /** Upstream attempt durations by host. */
  readonly upstreamDuration: client.Histogram<"host">;
  /** The mpy-cross in use: 1 with its version labels, 0 when it is missing. */
  readonly compiler: client.Gauge<"path" | "version" | "mpy">;
  /** Per-file compile outcomes: compiled, cached, fallback (served as source), failed (422). */
  readonly compiles: client.Counter<"result">;

  // Per-request figures, read when /metrics is scraped.
  #tally = new RequestTally();
  /** Edge hits by kind, and their bytes, not yet added to `cache` and `cacheBytes` (they are at scrape time). */
  #edgeHits = new Map<string, number>();
  #edgeBytes = 0;

  constructor() {
    const tally = this.#tally;
    const edgeHits = this.#edgeHits;
    const takeEdgeBytes = () => {
      const bytes = this.#edgeBytes;
      this.#edgeBytes = 0;
      return bytes;
    };
    this.requests = new client.Counter({
      name: "mipserver_http_requests_total",
      help: "HTTP requests served, by route pattern, method and status.",
      labelNames: ["route", "method", "status"],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [route, method, status, n] of tally.snapshot().requests) {
          this.inc({ route, method, status: String(status) }, n);
        }
      },
    });
    this.registry.registerMetric(new TallyHistogram(tally));
    this.bytes = new client.Counter({
      name: "mipserver_http_response_bytes_total",
      help: "Response body bytes sent, by route pattern.",
      labelNames: ["route"],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [route, bytes] of tally.snapshot().routes) this.inc({ route }, bytes);
      },
    });
    this.cache = new client.Counter({
      name: "mipserver_cache_requests_total",
      help: "Cache lookups by kind (index, manifest, file) and outcome (hit, miss, stale, error, offline, negative).",
      labelNames: ["kind", "outcome"],
      registers: [this.registry],
      collect() {
        for (const [kind, n] of edgeHits) this.inc({ kind, outcome: "hit" }, n);
        edgeHits.clear();
      },
    });
    this.cacheBytes = new client.Counter({
      name: "mipserver_cache_bytes_total",
      help: "Bytes of objects served from the cache (from=cache) and fetched from upstream (from=upstream).",
      labelNames: ["from"],
      registers: [this.registry],
      collect() {
        const bytes = takeEdgeBytes();
        if (bytes > 0) this.inc({ from: "cache" }, bytes);
      },
    });
    this.upstream = new client.Counter({
      name: "mipserver_upstream_requests_total",
      help: "Upstream HTTP attempts by host and status (error: no answer).",
      labelNames: ["host", "status"],
      registers: [this.registry],
    });
    this.upstreamDuration = new client.Histogram({
      name: "mipserver_upstream_request_duration_seconds",
      help: "Upstream attempt durations to response headers, by host.",
      labelNames: ["host"],
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [this.registry],
    });
    this.compiler = new client.Gauge({
      name: "mipserver_mpy_cross_info",
      help:
        "The mpy-cross compilers found at start: 1 when it runs (labels: path, version line, .mpy version), else 0.",
      labelNames: ["path", "version", "mpy"],
      registers: [this.registry],
    });
    this.compiles = new client.Counter({
      name: "mipserver_compiles_total",
      help: "Per-file compile outcomes: compiled, cached, fallback (served as .py), failed (answered 422).",
      labelNames: ["result"],
      registers: [this.registry],
    });
  }

  /**
   * Exposes the cache store's figures, read at scrape time: `mipserver_cache_bytes` and `mipserver_cache_objects`
   * (gauges) and `mipserver_cache_evictions_total` (a counter). Call once.
   */
  watchCacheStore(read: () => { sizeBytes: number; objects: number; evictions: number }): void {
    new client.Gauge({
      name: "mipserver_cache_bytes",
      help: "Bytes of objects stored in the cache (manifests and metadata aside).",
      registers: [this.registry],
      collect() {
        this.set(read().sizeBytes);
      },
    });
    new client.Gauge({
      name: "mipserver_cache_objects",
      help: "Objects stored in the cache (manifests and metadata aside).",
      registers: [this.registry],
      collect() {
        this.set(read().objects);
      },
    });
    new client.Counter({
      name: "mipserver_cache_evictions_total",
      help: "Objects evicted from the cache to stay within cache.max_size.",
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(read().evictions);
      },
    });
  }

  /**
   * Exposes the shared store's figures (`cache.store: s3`): whether it answered, its failed and refused calls, the
   * other replicas' events applied, and the fill leases (taken, waited, served by another replica, taken over, lost,
   * given up). Returns what counts each request to it (method, status and duration). Call once.
   */
  watchSharedStore(
    read: () => { reachable: boolean; errors: number; refused: number; eventsApplied: number },
    leases: () => Record<"taken" | "waited" | "served" | "takenOver" | "lost" | "gaveUp", number>,
  ): (method: string, status: number, seconds: number) => void {
    const requests = new client.Counter({
      name: "mipserver_store_shared_requests_total",
      help: "Requests to the shared store (S3) by method and status (0: no answer).",
      labelNames: ["method", "status"],
      registers: [this.registry],
    });
    const duration = new client.Histogram({
      name: "mipserver_store_shared_request_duration_seconds",
      help: "Shared store (S3) request durations to response headers, by method.",
      labelNames: ["method"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [this.registry],
    });
    new client.Gauge({
      name: "mipserver_store_shared_up",
      help: "1 when the shared store (S3) answered its last call, else 0.",
      registers: [this.registry],
      collect() {
        this.set(read().reachable ? 1 : 0);
      },
    });
    for (
      const [name, help, pick] of [
        ["mipserver_store_shared_errors_total", "Calls to the shared store that failed.", () => read().errors],
        [
          "mipserver_store_shared_refused_total",
          "Calls refused at once while the shared store counted as down.",
          () => read().refused,
        ],
        [
          "mipserver_store_shared_events_total",
          "Other replicas' removals and expiries applied to this replica's local tier.",
          () => read().eventsApplied,
        ],
      ] as const
    ) {
      new client.Counter({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.reset();
          this.inc(pick());
        },
      });
    }
    new client.Counter({
      name: "mipserver_store_leases_total",
      help: "Fill leases by outcome: taken, waited, served (another replica filled it), taken_over, lost, gave_up.",
      labelNames: ["outcome"],
      registers: [this.registry],
      collect() {
        this.reset();
        const s = leases();
        const rows: [string, number][] = [
          ["taken", s.taken],
          ["waited", s.waited],
          ["served", s.served],
          [
            "taken_over",
            s.takenOver,
          ],
          ["lost", s.lost],
          ["gave_up", s.gaveUp],
        ];
        for (const [outcome, n] of rows) this.inc({ outcome }, n);
      },
    });
    // Methods and statuses are a closed set (S3's few verbs, HTTP statuses): a bounded label set.
    return (method, status, seconds) => {
      requests.inc({ method, status: String(status) });
      duration.observe({ method }, seconds);
    };
  }

  /**
   * Exposes `mipserver_upstream_breaker_state{host}` for each of `hosts` (the configured set only, so a closed label
   * set), read at scrape time. Call once.
   */
  watchBreakers(breakers: Breakers, hosts: Iterable<string>): void {
    const list = [...hosts].sort();
    new client.Gauge({
      name: "mipserver_upstream_breaker_state",
      help:
        "Circuit breaker state per configured upstream host: 0 closed, 1 half-open (probing), 2 open (not contacted).",
      labelNames: ["host"],
      registers: [this.registry],
      collect() {
        for (const host of list) this.set({ host }, STATE_VALUES[breakers.state(host)]);
      },
    });
  }

  /** Records one served request. */
  observe(route: string, method: string, status: number, seconds: number, bytes: number): void {
    this.#tally.observe(route, method, status, seconds, bytes);
  }

  /**
   * Records `n` requests (default 1) the edge answered from a kept cache hit of `kind`: cache hits, served from the
   * cache.
   */
  edgeHit(kind: string, bytes: number, n = 1): void {
    // Counted here and added to the counters at scrape time: no label lookup on the hot path.
    this.#edgeHits.set(kind, (this.#edgeHits.get(kind) ?? 0) + n);
    this.#edgeBytes += bytes;
  }

  /** Adds figures tallied elsewhere (an edge worker thread). */
  add(snapshot: TallySnapshot): void {
    this.#tally.add({ ...snapshot, edgeHits: [] });
    for (const [kind, n, bytes] of snapshot.edgeHits) this.edgeHit(kind, bytes, n);
  }

  /** The exposition text and its content type. */
  async render(): Promise<{ text: string; contentType: string }> {
    return { text: await this.registry.metrics(), contentType: this.registry.contentType };
  }
}
