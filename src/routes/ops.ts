/**
 * Operational routes: `/healthz` (open: status, version, uptime, the lock's signer and figures, no paths), and the
 * admin routes `/echo`, `/_/requests` and `/metrics`, which the handler lets through only with the admin key
 * (`src/fleet/access.ts`).
 * @module
 */
import type { Metrics } from "../http/metrics.ts";
import type { RequestLog, RequestQuery } from "../http/request_log.ts";
import { bytesResponse, HttpError, jsonResponse } from "../http/responses.ts";
import type { Router } from "../http/router.ts";
import type { LockFacts } from "../packages/lock_file.ts";
import { NotFound } from "../errors.ts";

/** What the operational routes read. */
export interface OpsDeps {
  version: string;
  /** The cache store's figures, shown under `cache` in /healthz. */
  cacheStats?: () => { sizeBytes: number; objects: number; evictions: number; maxBytes: number | null };
  /** Tells whether the cache can be written to, leaving nothing behind (`ObjectStore.writable`). */
  writable: () => Promise<boolean>;
  /** Which store the cache is in and, when shared, its figures and the fill leases' (no credentials). */
  storeFacts?: () => Record<string, unknown>;
  requestLog: RequestLog;
  metrics: Metrics;
  /** Milliseconds since the server started. */
  uptime: () => number;
  /** Extra facts for /healthz from other modules (upstreams, compiler). */
  health?: () => Record<string, unknown>;
  /** Gathers requests answered elsewhere (edge worker threads) before /_/requests or /metrics is read. */
  gather?: () => Promise<void>;
  /** `policy.lock`: the lock in force's figures and signer (no path), shown under `lock` in /healthz. */
  lock?: () => LockFacts;
  /** The text of the lock in force (signature included), served as `/lock.json` for sites that follow it. */
  lockText?: () => string | undefined;
}

/** Headers whose values /echo never shows. */
export const REDACTED_HEADERS = new Set(["authorization", "proxy-authorization", "cookie", "set-cookie"]);

function parseRequestQuery(params: URLSearchParams, capacity: number): RequestQuery {
  const query: RequestQuery = { limit: 100 };
  for (const [key, value] of params) {
    switch (key) {
      case "ip":
        query.ip = value;
        break;
      case "path":
        query.path = value;
        break;
      case "status": {
        const m = /^([1-5])(?:xx|\d\d)$/i.exec(value);
        if (!m) {
          throw new HttpError(400, `Invalid status ${JSON.stringify(value)}: expected a status such as 404 or 4xx`);
        }
        query.status = /xx$/i.test(value) ? Number(m[1]) : Number(value);
        break;
      }
      case "limit": {
        const n = /^\d{1,9}$/.test(value) ? Number(value) : NaN;
        if (!(n >= 1)) throw new HttpError(400, `Invalid limit ${JSON.stringify(value)}: expected a whole number >= 1`);
        query.limit = Math.min(n, Math.max(capacity, 1));
        break;
      }
      default:
        throw new HttpError(400, `Unknown filter ${JSON.stringify(key)}: use ip, path, status or limit`);
    }
  }
  return query;
}

/** The cache figures /healthz shows: stored bytes and objects, evictions and the size limit (null: none). */
function cacheFigures(stats: ReturnType<NonNullable<OpsDeps["cacheStats"]>> | undefined): Record<string, unknown> {
  if (!stats) return {};
  return { size_bytes: stats.sizeBytes, objects: stats.objects, evictions: stats.evictions, max_bytes: stats.maxBytes };
}

/** Adds the operational routes to `router`. */
export function addOpsRoutes(router: Router, deps: OpsDeps): void {
  router.get("/healthz", async () =>
    jsonResponse({
      status: "ok",
      version: deps.version,
      uptime_seconds: Math.floor(deps.uptime() / 1000),
      cache: {
        writable: await deps.writable(),
        ...cacheFigures(deps.cacheStats?.()),
        ...deps.storeFacts?.(),
      },
      ...deps.health?.(),
      ...(deps.lock ? { lock: deps.lock() } : {}),
    }, { headers: { "cache-control": "no-store" } }));

  // The lock in force, byte for byte as read, so a site's policy.lock_url can check its signature.
  router.get("/lock.json", () => {
    const text = deps.lockText?.();
    if (text === undefined) throw new NotFound("This server follows no lock (policy.lock)");
    return bytesResponse(new TextEncoder().encode(text), {
      contentType: "application/json",
      headers: { "cache-control": "no-store" },
    });
  });

  router.get("/echo", ({ request, url, client }) => {
    const headers: Record<string, string> = {};
    for (const [name, value] of request.headers) {
      headers[name] = REDACTED_HEADERS.has(name) ? "[redacted]" : value;
    }
    const query: Record<string, string[]> = {};
    for (const [key, value] of url.searchParams) (query[key] ??= []).push(value);
    return jsonResponse({ client, method: request.method, url: request.url, path: url.pathname, headers, query }, {
      pretty: true,
      headers: { "cache-control": "no-store" },
    });
  });

  router.get("/_/requests", async ({ url }) => {
    const query = parseRequestQuery(url.searchParams, deps.requestLog.capacity);
    await deps.gather?.();
    const entries = deps.requestLog.query(query);
    return jsonResponse({ count: entries.length, requests: entries }, {
      pretty: true,
      headers: { "cache-control": "no-store" },
    });
  });

  router.get("/metrics", async () => {
    await deps.gather?.();
    const { text, contentType } = await deps.metrics.render();
    return bytesResponse(new TextEncoder().encode(text), {
      contentType,
      headers: { "cache-control": "no-store" },
    });
  });
}
