/**
 * Turns a {@linkcode Router} into a `Deno.serve` handler: known errors become their status, unknown ones a 500
 * with an error id that is also logged, every response gets a Content-Length, and every request is logged,
 * kept in the request ring buffer and counted in the metrics. The cache-hit path is hot, so this avoids work
 * a hit does not need: the URL is parsed only when a handler asks for it, and a response that already has a
 * Content-Length is passed through without an extra await.
 * @module
 */
import type { Logger } from "../log.ts";
import type { Metrics } from "./metrics.ts";
import type { RequestEntry, RequestLog } from "./request_log.ts";
import { HttpError, textResponse, withContentLength } from "./responses.ts";
import type { RouteContext, Router } from "./router.ts";

/** The part of `Deno.ServeHandlerInfo` the handler uses; tests may omit it. */
export interface ClientInfo {
  remoteAddr: { hostname: string; port?: number };
}

/** What the handler needs besides the router. */
export interface HandlerDeps {
  logger: Logger;
  requestLog: RequestLog;
  metrics: Metrics;
  /** The wall clock for log times (default: `Date.now`). */
  now?: () => number;
}

/** A request handler in the shape `Deno.serve` takes. */
export type ServeHandler = (request: Request, info?: ClientInfo) => Promise<Response>;

/** Splits an absolute request URL into its raw path and query without a full URL parse. */
export function splitUrl(url: string): { pathname: string; search: string } {
  const start = url.indexOf("/", url.indexOf("//") + 2);
  if (start < 0) return { pathname: "/", search: "" };
  const hash = url.indexOf("#", start);
  const end = hash < 0 ? url.length : hash;
  const q = url.indexOf("?", start);
  return q < 0 || q > end
    ? { pathname: url.slice(start, end), search: "" }
    : { pathname: url.slice(start, q), search: url.slice(q, end) };
}

/** Creates the request handler. */
export function createHandler(router: Router, deps: HandlerDeps): ServeHandler {
  const now = deps.now ?? Date.now;

  const finish = (
    request: Request,
    pathname: string,
    search: string,
    client: string,
    route: string,
    started: number,
    arrived: number,
    meta: Record<string, unknown>,
    response: Response,
    errorId?: string,
  ): Response => {
    const seconds = (performance.now() - started) / 1000;
    const bytes = request.method === "HEAD" ? 0 : Number(response.headers.get("content-length") ?? 0);
    const entry: RequestEntry = {
      time: arrived,
      client,
      method: request.method,
      path: pathname + search,
      route,
      status: response.status,
      bytes,
      duration_ms: Math.round(seconds * 100_000) / 100,
      ...meta,
    };
    if (errorId) entry.error_id = errorId;
    deps.requestLog.add(entry);
    deps.metrics.observe(route, request.method, response.status, seconds, bytes);
    deps.logger.info(`${entry.method} ${entry.path} ${entry.status}`, {
      client,
      route,
      bytes,
      duration_ms: entry.duration_ms,
      ...meta,
      error_id: errorId,
    });
    return response;
  };

  const fail = (request: Request, pathname: string, e: unknown): { response: Response; errorId?: string } => {
    if (e instanceof HttpError) return { response: textResponse(e.status, e.message, e.headers) };
    const errorId = crypto.randomUUID().slice(0, 8);
    deps.logger.error("Unexpected error while handling a request", {
      error_id: errorId,
      method: request.method,
      path: pathname,
      error: e instanceof Error ? (e.stack ?? e.message) : String(e),
    });
    return { response: textResponse(500, `Internal server error (error id ${errorId})`), errorId };
  };

  return async (request, info) => {
    const arrived = now();
    const started = performance.now();
    const { pathname, search } = splitUrl(request.url);
    const client = info?.remoteAddr.hostname ?? "unknown";
    const meta: Record<string, unknown> = {};
    const match = router.match(request.method, pathname);
    if ("error" in match) {
      const { response } = fail(request, pathname, match.error);
      return finish(request, pathname, search, client, match.route, started, arrived, meta, response);
    }
    let url: URL | undefined;
    const ctx: RouteContext = {
      request,
      get url() {
        return (url ??= new URL(request.url));
      },
      params: match.params,
      client,
      meta,
    };
    try {
      let response = await match.handler(ctx);
      if (!response.headers.has("content-length") && response.body !== null) {
        response = await withContentLength(response);
      }
      return finish(request, pathname, search, client, match.route, started, arrived, meta, response);
    } catch (e) {
      const { response, errorId } = fail(request, pathname, e);
      return finish(request, pathname, search, client, match.route, started, arrived, meta, response, errorId);
    }
  };
}
