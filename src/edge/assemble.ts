/**
 * One thread's edge, put together in one place for the main thread (`listen.ts`) and the worker threads
 * (`edge_worker.ts`): the cache of recent hits (`edge.ts`), the batch that records them (`hits.ts`), the front that
 * reads the listener's connections (`front.ts`, `plain.ts`) and the loopback `Deno.serve` it hands odd ones to, with
 * the same edge in front of the same handler. The threads differ only in the parts they pass in.
 * @module
 */
import type { Logger } from "../log.ts";
import type { Metrics } from "../http/metrics.ts";
import type { RequestLog } from "../http/request_log.ts";
import { createRecorder, type Recorder, type ServeHandler } from "../http/server.ts";
import type { Shareable } from "../http/responses.ts";
import { createEdgeHandler, EdgeCache } from "./edge.ts";
import { Front } from "./front.ts";
import { HitBatch } from "./hits.ts";
import { type Miss, type Missed, plainAnswerer } from "./plain.ts";
import { forwardedRequest } from "./protocol.ts";

/** What {@linkcode assembleEdge} puts together. */
export interface EdgeParts {
  /** Where clients connect, bound by the caller (a plain bind on the main thread, SO_REUSEPORT on a worker). */
  listener: Deno.Listener;
  /** Answers what the edge does not, for the connections handed over to `Deno.serve`. */
  handler: ServeHandler;
  /** Answers what the edge does not, for the requests the front reads (default: `handler`, as the client sent it). */
  miss?: Miss;
  /** With `requestLog` and `metrics`: where the requests the edge answers are logged, kept and counted. */
  logger: Logger;
  /** Also brings in the hits still waiting (`catchUp`) before it takes any other record. */
  requestLog: RequestLog;
  metrics: Pick<Metrics, "observe" | "edgeHit">;
  /** Hears each request the edge recorded and each line it logged (a worker thread sends them on soon). */
  noted?: () => void;
  /** How long the edge repeats a cache hit, in ms. */
  windowMs: number;
  /** The edge's byte budget. */
  maxBytes: number;
  /** The front's head deadline, in ms (default: `front.ts`'s). */
  headTimeoutMs?: number;
  /** The front's idle keep-alive deadline, in ms (default: `front.ts`'s). */
  idleTimeoutMs?: number;
  /** Connections this thread holds open at most (default: `front.ts`'s). */
  maxConnections?: number;
}

/** A thread's edge, serving from the moment {@linkcode assembleEdge} returns. */
export interface AssembledEdge {
  /** Records the hits the front answered and has not recorded yet. */
  drain(): void;
  /** Stops accepting, lets answers under way finish, records the last hits, and resolves when all has stopped. */
  shutdown(): Promise<void>;
}

/** A {@linkcode Miss} that asks `handler`, the request rebuilt as its client sent it. */
export function handlerMiss(handler: ServeHandler): Miss {
  return async (request, client): Promise<Missed> => {
    let shared: Shareable | undefined;
    const forwarded = forwardedRequest({
      method: request.method,
      url: `http://${request.host}${request.target}`,
      headers: request.headers,
    });
    const response = await handler(forwarded, { remoteAddr: client }, (s) => (shared = s));
    const body = response.body === null ? null : new Uint8Array(await response.arrayBuffer());
    return { status: response.status, headers: response.headers, body, shared };
  };
}

/**
 * Puts an edge on `parts.listener`: kept answers go out in one write each, other plain requests to `miss`, and
 * connections the front does not read to a `Deno.serve` on loopback, with the same edge in front of `handler`.
 * Closes the listener and throws when that `Deno.serve` cannot start.
 */
export function assembleEdge(parts: EdgeParts): AssembledEdge {
  const { logger, noted } = parts;
  const cache = new EdgeCache({ windowMs: parts.windowMs, maxBytes: parts.maxBytes });
  const recordNow = createRecorder(parts);
  const record: Recorder = noted === undefined ? recordNow : (entry, kind) => {
    recordNow(entry, kind);
    noted();
  };
  const edge = createEdgeHandler(parts.handler, { cache, record });
  const ref: { front?: Front } = {};
  let server: Deno.HttpServer;
  try {
    // Connections the front does not read come here; their handler sees the client behind the relay.
    server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (request, info) => edge(request, { remoteAddr: ref.front?.clientOf(info.remoteAddr.port) ?? info.remoteAddr }),
    );
  } catch (e) {
    parts.listener.close();
    throw e;
  }
  // Hits are recorded in batches; the request log brings them in before any other record, and a flush before a read.
  const hits = new HitBatch(record);
  const catchUp = () => hits.drain();
  parts.requestLog.catchUp = catchUp;
  const front = ref.front = new Front({
    listener: parts.listener,
    handover: server.addr as Deno.NetAddr,
    answer: plainAnswerer(cache, hits, parts.miss ?? handlerMiss(parts.handler)),
    headTimeoutMs: parts.headTimeoutMs,
    idleTimeoutMs: parts.idleTimeoutMs,
    maxConnections: parts.maxConnections,
    onFull: (refused) => {
      logger.warn("Too many connections open; new ones are refused", { refused });
      noted?.();
    },
    onError: (e) => {
      logger.error("Cannot answer a request", { error: e instanceof Error ? (e.stack ?? e.message) : String(e) });
      noted?.();
    },
  });
  let stopped: Promise<void> | undefined;
  return {
    drain: () => hits.drain(),
    shutdown: () =>
      stopped ??= Promise.all([front.shutdown(), server.shutdown()]).then(async () => {
        await server.finished;
        hits.drain();
        if (parts.requestLog.catchUp === catchUp) parts.requestLog.catchUp = undefined;
      }),
  };
}
