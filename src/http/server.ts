/**
 * Turns a {@linkcode Router} into a `Deno.serve` handler: known errors become their status, unknown ones a 500
 * with an error id that is also logged, every response gets a Content-Length, and every request is logged,
 * kept in the request ring buffer and counted in the metrics. The cache-hit path is hot, so this avoids work
 * a hit does not need: the URL is parsed only when a handler asks for it, and a response that already has a
 * Content-Length is passed through without an extra await. Answers the edge repeats (`edge.ts`) go through the
 * same {@linkcode Recorder}, so the log and the metrics see every request.
 * @module
 */
import type { Logger } from "../log.ts";
import type { Metrics } from "./metrics.ts";
import { isPeer, type RequestEntry, type RequestLog } from "./request_log.ts";
import { answerFor } from "./errors.ts";
import { type Shareable, textResponse, withContentLength } from "./responses.ts";
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
  /**
   * Admin access (`src/fleet/access.ts`): asked about the path as sent and the route it matched (`isAdmin`) before the handler runs; a Response refuses.
   * Admin answers are never handed to the edge.
   */
  access?: {
    isAdmin(pathname: string): boolean;
    /** `inProcess`: the call came with no connection (`info` absent: a test or a call inside the process). */
    check(request: Request, client: string, inProcess: boolean): Response | undefined;
  };
  /**
   * The client a request stands for, from the connection's address (trusted proxies' `X-Forwarded-For`). When set,
   * no answer is handed to the edge, so every request reaches this handler and is judged by its forwarded address.
   */
  clientOf?: (socket: string, request: Request) => string;
  /**
   * Hears every request this handler answered, with its response (not to be consumed; clone it to read it) and, when
   * the route answered with a cached object, that object as sent (`RouteContext.answer`).
   */
  tap?: (entry: RequestEntry, response: Response, answer: Shareable | undefined) => void;
}

/**
 * A request handler in the shape `Deno.serve` takes. `share`, when given, hears the reusable form of the answer
 * when it is an unchanged cache hit (see `edge.ts`).
 */
export type ServeHandler = (
  request: Request,
  info?: ClientInfo,
  share?: (shared: Shareable) => void,
) => Promise<Response>;

/**
 * Records one served request: the request ring buffer, the metrics and one log line. `edgeKind` is set for
 * answers the edge repeated without asking the cache, so they still count as cache hits of that kind.
 */
export type Recorder = (entry: RequestEntry, edgeKind?: string) => void;

/** Where a {@linkcode Recorder} puts a request: a {@linkcode Metrics} or a worker thread's tally, and so on. */
export interface RecorderSinks {
  logger: Logger;
  requestLog: Pick<RequestLog, "add">;
  metrics: Pick<Metrics, "observe" | "edgeHit">;
}

/** Creates the {@linkcode Recorder} every served request goes through, whichever thread answered it. */
export function createRecorder(sinks: RecorderSinks): Recorder {
  return (entry, edgeKind) => {
    sinks.requestLog.add(entry);
    sinks.metrics.observe(entry.route, entry.method, entry.status, entry.duration_ms / 1000, entry.bytes);
    if (edgeKind !== undefined) sinks.metrics.edgeHit(edgeKind, entry.bytes);
    sinks.logger.info(`${entry.method} ${entry.path} ${entry.status}`, {
      client: entry.client,
      route: entry.route,
      bytes: entry.bytes,
      duration_ms: entry.duration_ms,
      cache: entry.cache,
      upstream_ms: entry.upstream_ms,
      error_id: entry.error_id,
    });
  };
}

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

/** Rounds a duration in ms to hundredths, as request entries carry it. */
export function roundMs(ms: number): number {
  return Math.round(ms * 100) / 100;
}

/** Creates the request handler. */
export function createHandler(router: Router, deps: HandlerDeps): ServeHandler {
  const now = deps.now ?? Date.now;
  const record = createRecorder(deps);

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
    answer?: Shareable,
  ): Response => {
    const bytes = request.method === "HEAD" ? 0 : Number(response.headers.get("content-length") ?? 0);
    const entry: RequestEntry = {
      time: arrived,
      client,
      method: request.method,
      path: pathname + search,
      route,
      status: response.status,
      bytes,
      duration_ms: roundMs(performance.now() - started),
      ...meta,
    };
    if (errorId) entry.error_id = errorId;
    if (isPeer(request.headers.get("user-agent"))) entry.peer = true;
    deps.tap?.(entry, response, answer);
    record(entry);
    return response;
  };

  const fail = (request: Request, pathname: string, e: unknown): { response: Response; errorId?: string } => {
    const known = answerFor(e);
    if (known) return { response: textResponse(known.status, known.text, known.headers) };
    const errorId = crypto.randomUUID().slice(0, 8);
    deps.logger.error("Unexpected error while handling a request", {
      error_id: errorId,
      method: request.method,
      path: pathname,
      error: e instanceof Error ? (e.stack ?? e.message) : String(e),
    });
    return { response: textResponse(500, `Internal server error (error id ${errorId})`), errorId };
  };

  return async (request, info, share) => {
    const arrived = now();
    const started = performance.now();
    const { pathname, search } = splitUrl(request.url);
    const socket = info?.remoteAddr.hostname ?? "unknown";
    const client = deps.clientOf ? deps.clientOf(socket, request) : socket;
    const meta: Record<string, unknown> = {};
    const match = router.match(request.method, pathname);
    // Judged by the path as sent and by the route it matched: the router decodes segments, so `/%5F/...` reaches the
    // `/_/...` routes and must need the key as well.
    const admin = deps.access !== undefined && (deps.access.isAdmin(pathname) || deps.access.isAdmin(match.route));
    if (admin) {
      const refused = deps.access!.check(request, client, info === undefined);
      if (refused) return finish(request, pathname, search, client, "admin", started, arrived, meta, refused);
    }
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
      route: match.route,
      client,
      meta,
    };
    try {
      let response = await match.handler(ctx);
      if (!response.headers.has("content-length") && response.body !== null) {
        response = await withContentLength(response);
      }
      if (
        share && ctx.shareable && !admin && !deps.clientOf && (response.status === 200 || response.status === 304)
      ) {
        share(ctx.shareable);
      }
      return finish(
        request,
        pathname,
        search,
        client,
        match.route,
        started,
        arrived,
        meta,
        response,
        undefined,
        ctx.answer,
      );
    } catch (e) {
      const { response, errorId } = fail(request, pathname, e);
      return finish(request, pathname, search, client, match.route, started, arrived, meta, response, errorId);
    }
  };
}
