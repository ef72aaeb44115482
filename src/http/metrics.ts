/**
 * Prometheus metrics (prom-client), one registry per server instance.
 * @module
 */
import client from "prom-client";

/** The metrics a server exposes at `GET /metrics`. Later modules add their own series to `registry`. */
export class Metrics {
  /** The registry behind `/metrics`. */
  readonly registry: client.Registry = new client.Registry();
  /** Requests by route, method and status. */
  readonly requests: client.Counter<"route" | "method" | "status">;
  /** Request durations by route. */
  readonly duration: client.Histogram<"route">;
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

  // Per-request counts are kept in plain maps on the hot path and handed to prom-client when it is scraped.
  #requestCounts = new Map<string, { labels: { route: string; method: string; status: string }; n: number }>();
  #byteCounts = new Map<string, number>();

  constructor() {
    const requestCounts = this.#requestCounts;
    const byteCounts = this.#byteCounts;
    this.requests = new client.Counter({
      name: "mipserver_http_requests_total",
      help: "HTTP requests served, by route pattern, method and status.",
      labelNames: ["route", "method", "status"],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const { labels, n } of requestCounts.values()) this.inc(labels, n);
      },
    });
    this.duration = new client.Histogram({
      name: "mipserver_http_request_duration_seconds",
      help: "Time from request to response headers, by route pattern.",
      labelNames: ["route"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [this.registry],
    });
    this.bytes = new client.Counter({
      name: "mipserver_http_response_bytes_total",
      help: "Response body bytes sent, by route pattern.",
      labelNames: ["route"],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [route, n] of byteCounts) this.inc({ route }, n);
      },
    });
    this.cache = new client.Counter({
      name: "mipserver_cache_requests_total",
      help: "Cache lookups by kind (index, manifest, file) and outcome (hit, miss, stale, error, offline, negative).",
      labelNames: ["kind", "outcome"],
      registers: [this.registry],
    });
    this.cacheBytes = new client.Counter({
      name: "mipserver_cache_bytes_total",
      help: "Bytes of objects served from the cache (from=cache) and fetched from upstream (from=upstream).",
      labelNames: ["from"],
      registers: [this.registry],
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

  /** Records one served request. */
  observe(route: string, method: string, status: number, seconds: number, bytes: number): void {
    const key = `${route} ${method} ${status}`;
    const count = this.#requestCounts.get(key);
    if (count) count.n++;
    else this.#requestCounts.set(key, { labels: { route, method, status: String(status) }, n: 1 });
    this.#byteCounts.set(route, (this.#byteCounts.get(route) ?? 0) + bytes);
    this.duration.observe({ route }, seconds);
  }

  /** The exposition text and its content type. */
  async render(): Promise<{ text: string; contentType: string }> {
    return { text: await this.registry.metrics(), contentType: this.registry.contentType };
  }
}
