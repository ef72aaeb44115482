/**
 * Turns a {@linkcode Router} into a `Deno.serve` handler: known errors become their status, unknown ones a 500
 * with an error id that is also logged, every response gets a Content-Length, and every request is logged,
 * kept in the request ring buffer and counted in the metrics.
 * @module
 */
import type { Logger } from "../log.ts";
import type { Metrics } from "./metrics.ts";
import type { RequestEntry, RequestLog } from "./request_log.ts";
import { HttpError, textResponse, withContentLength } from "./responses.ts";
import type { Router } from "./router.ts";

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

/** Creates the request handler. */
export function createHandler(router: Router, deps: HandlerDeps): ServeHandler {
  const now = deps.now ?? Date.now;
  return async (request, info) => {
    const arrived = now();
    const started = performance.now();
    const url = new URL(request.url);
    const client = info?.remoteAddr.hostname ?? "unknown";
    const meta: Record<string, unknown> = {};
    const match = router.match(request.method, url.pathname);
    let response: Response;
    let errorId: string | undefined;
    try {
      if ("error" in match) throw match.error;
      response = await withContentLength(await match.handler({ request, url, params: match.params, client, meta }));
    } catch (e) {
      if (e instanceof HttpError) {
        response = textResponse(e.status, e.message, e.headers);
      } else {
        errorId = crypto.randomUUID().slice(0, 8);
        deps.logger.error("Unexpected error while handling a request", {
          error_id: errorId,
          method: request.method,
          path: url.pathname,
          error: e instanceof Error ? (e.stack ?? e.message) : String(e),
        });
        response = textResponse(500, `Internal server error (error id ${errorId})`);
      }
    }
    const seconds = (performance.now() - started) / 1000;
    const bytes = request.method === "HEAD" ? 0 : Number(response.headers.get("content-length") ?? 0);
    const entry: RequestEntry = {
      time: new Date(arrived).toISOString(),
      client,
      method: request.method,
      path: url.pathname + url.search,
      route: match.route,
      status: response.status,
      bytes,
      duration_ms: Math.round(seconds * 100_000) / 100,
      ...meta,
      ...(errorId ? { error_id: errorId } : {}),
    };
    deps.requestLog.add(entry);
    deps.metrics.observe(match.route, request.method, response.status, seconds, bytes);
    const { time: _time, method, path, status, ...fields } = entry;
    deps.logger.info(`${method} ${path} ${status}`, fields);
    return response;
  };
}
