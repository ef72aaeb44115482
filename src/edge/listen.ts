/**
 * Puts the handler on the network, with the edge in front of it. With `workers` 0 (the default), this thread serves
 * alone through its own edge (`assemble.ts`): kept cache hits in one write each, everything else through the
 * handler. With `workers` > 0, that many edge worker threads (`edge_worker.ts`) share the port through SO_REUSEPORT
 * and answer repeated cache hits in parallel, while this thread answers what they forward (`protocol.ts`); a worker
 * that dies is replaced. If the threads cannot listen (no SO_REUSEPORT, or Deno run without `--unstable-net`), this
 * thread serves alone and says why.
 * @module
 */
import type { Logger } from "../log.ts";
import type { Metrics } from "../http/metrics.ts";
import type { RequestLog } from "../http/request_log.ts";
import { createRecorder, type ServeHandler } from "../http/server.ts";
import { forEdge, type Shareable } from "../http/responses.ts";
import { assembleEdge } from "./assemble.ts";
import { createEdgeHandler, EDGE_WINDOW_MS, EdgeCache } from "./edge.ts";
import { HEAD_TIMEOUT_MS, IDLE_TIMEOUT_MS, MAX_CONNECTIONS } from "./front.ts";
import { forwardedRequest, type FromWorker, type ToWorker, type WorkerLog } from "./protocol.ts";

/** What {@linkcode listen} needs. */
export interface ListenOptions {
  hostname: string;
  port: number;
  /** Edge worker threads; 0 serves from this thread only. */
  workers: number;
  handler: ServeHandler;
  logger: Logger;
  /** Where the requests the edge answers are logged and counted, as the handler does for the others. */
  requestLog: RequestLog;
  metrics: Metrics;
  /** Writes log lines the edge workers formatted (newline-separated, no trailing newline). */
  write: (lines: string) => void;
  log: WorkerLog;
  /** How long the edge repeats a cache hit, in ms. */
  windowMs: number;
  /** The edge's byte budget per thread. */
  maxBytes: number;
  /** How long a client may take to send a request head, in ms (`server.head_timeout`; default 30 s). */
  headTimeoutMs?: number;
  /** How long an idle keep-alive connection stays open, in ms (`server.idle_timeout`; default 60 s). */
  idleTimeoutMs?: number;
  /** Connections open at once at most, over all threads (`server.max_connections`; default 4,096). */
  maxConnections?: number;
  /**
   * Whether this thread reads its connections itself (default true); false puts the edge on a plain `Deno.serve`,
   * without the connection deadlines (tests compare the two).
   */
  front?: boolean;
  /** How long to wait for the worker threads to listen, in ms (default 10 s). */
  startTimeout?: number;
  /** How long shutdown waits for requests under way in the worker threads, in ms (default 30 s). */
  stopTimeout?: number;
  /** The worker threads' module (default: `edge_worker.ts`; tests pass one that fails on purpose). */
  workerModule?: URL;
}

/** A running server. */
export interface Listener {
  /** The threads accepting connections: 0 when this thread serves alone. */
  workers: number;
  /** Resolves once every worker thread has handed over the requests it answered so far (log, buffer, metrics). */
  flush(): Promise<void>;
  /** Stops accepting, lets requests under way finish, and resolves when everything has stopped. */
  shutdown(): Promise<void>;
  /** Resolves when the server has stopped. */
  finished: Promise<void>;
}

const WORKER_URL = new URL("./edge_worker.ts", import.meta.url);
/** A worker thread that fails is replaced after this pause (ms), so one that fails at once cannot spin. */
const RESTART_DELAY_MS = 250;

/** What {@linkcode configSettings} reads of the configuration (handed down as plain values). */
export interface ListenerConfig {
  cache: { ttl: number; memory: number };
  server: { head_timeout: number; idle_timeout: number; max_connections: number };
  log: { level: WorkerLog["level"]; format: WorkerLog["format"]; requests_kept: number };
}

/**
 * The listener settings a configuration gives: the edge's window (a second at most, never past `cache.ttl`), its
 * per-thread byte budget, and how the worker threads log.
 */
export function configSettings(
  config: ListenerConfig,
): Required<
  Pick<ListenOptions, "windowMs" | "maxBytes" | "log" | "headTimeoutMs" | "idleTimeoutMs" | "maxConnections">
> {
  return {
    windowMs: Math.min(EDGE_WINDOW_MS, config.cache.ttl),
    maxBytes: Math.min(16 * 1024 * 1024, config.cache.memory / 4),
    headTimeoutMs: config.server.head_timeout,
    idleTimeoutMs: config.server.idle_timeout,
    maxConnections: config.server.max_connections,
    log: { level: config.log.level, format: config.log.format, requestsKept: config.log.requests_kept },
  };
}

/**
 * Listens on `hostname:port`. Throws when the address cannot be listened on (in use, not permitted) before any
 * thread starts, so a second mipserver on the same port fails instead of sharing it.
 */
export async function listen(options: ListenOptions): Promise<Listener> {
  if (options.workers > 0) {
    // A plain bind first: it fails while anything else holds the port, SO_REUSEPORT or not.
    Deno.listen({ hostname: options.hostname, port: options.port }).close();
    try {
      return await startWorkers(options);
    } catch (e) {
      const error = e instanceof Error ? e.message : String(e);
      options.logger.warn("Cannot serve from worker threads; the main thread serves alone", {
        error,
        hint: "set server.workers: 0 to serve from the main thread on purpose",
      });
    }
  }
  return options.front === false ? await serveAlone(options) : await serveFront(options);
}

/** Binds with `bind`, retrying a moment while worker threads that were just stopped still hold the port. */
async function bindSoon<T>(options: ListenOptions, bind: () => T): Promise<T> {
  for (let attempt = 1;; attempt++) {
    try {
      return bind();
    } catch (e) {
      if (options.workers === 0 || !(e instanceof Deno.errors.AddrInUse) || attempt === 40) throw e;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

/** This thread serves alone through `Deno.serve`, the edge in front of the handler. */
async function serveAlone(options: ListenOptions): Promise<Listener> {
  const cache = new EdgeCache({ windowMs: options.windowMs, maxBytes: options.maxBytes });
  const handler = createEdgeHandler(options.handler, { cache, record: createRecorder(options) });
  const server = await bindSoon(
    options,
    () => Deno.serve({ hostname: options.hostname, port: options.port, onListen: () => {} }, handler),
  );
  return {
    workers: 0,
    flush: () => Promise.resolve(),
    shutdown: () => server.shutdown(),
    finished: server.finished,
  };
}

/**
 * This thread serves alone, reading its connections itself (`front.ts`): kept answers go out in one write, other
 * plain requests go to the handler, and odd connections to a `Deno.serve` on loopback with the same edge in front.
 */
async function serveFront(options: ListenOptions): Promise<Listener> {
  const listener = await bindSoon(options, () => Deno.listen({ hostname: options.hostname, port: options.port }));
  const edge = assembleEdge({
    listener,
    handler: options.handler,
    logger: options.logger,
    requestLog: options.requestLog,
    metrics: options.metrics,
    windowMs: options.windowMs,
    maxBytes: options.maxBytes,
    headTimeoutMs: options.headTimeoutMs,
    idleTimeoutMs: options.idleTimeoutMs,
    maxConnections: options.maxConnections,
  });
  let finish!: () => void;
  const finished = new Promise<void>((resolve) => (finish = resolve));
  return {
    workers: 0,
    flush: () => Promise.resolve(edge.drain()),
    shutdown: () => edge.shutdown().then(finish),
    finished,
  };
}

async function startWorkers(options: ListenOptions): Promise<Listener> {
  const { logger } = options;
  const stopTimeout = options.stopTimeout ?? 30_000;
  const workers = new Set<Worker>();
  /** Requests to worker threads (flush, stop) waiting for their `done`, by id. */
  const asks = new Map<number, { worker: Worker; done: () => void }>();
  let nextAsk = 0;
  let stopping = false;

  /** Sends a request to every worker thread; true once each is done, false if some are not within `timeoutMs`. */
  const askAll = async (message: (id: number) => ToWorker, timeoutMs: number): Promise<boolean> => {
    const ids: number[] = [];
    const answered = Promise.all([...workers].map((worker) =>
      new Promise<void>((done) => {
        const id = nextAsk++;
        ids.push(id);
        asks.set(id, { worker, done });
        worker.postMessage(message(id));
      })
    )).then(() => true);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
    const result = await Promise.race([answered, late]);
    clearTimeout(timer);
    for (const id of ids) asks.delete(id);
    return result;
  };

  const answer = async (worker: Worker, message: Extract<FromWorker, { type: "request" }>) => {
    let shared: Shareable | undefined;
    const request = forwardedRequest(message);
    const response = await options.handler(request, { remoteAddr: { hostname: message.client } }, (s) => {
      shared = forEdge(s);
    });
    const body = response.body === null ? null : await response.arrayBuffer();
    const reply: ToWorker = {
      type: "response",
      id: message.id,
      status: response.status,
      headers: [...response.headers],
      body,
      shared,
    };
    worker.postMessage(reply, body ? [body] : []);
  };

  const spawn = (index: number): Promise<void> =>
    new Promise((resolve, reject) => {
      const worker = new Worker(options.workerModule ?? WORKER_URL, { type: "module", name: `edge-${index}` });
      workers.add(worker);
      let listening = false;
      const timer = setTimeout(() => {
        if (!listening) reject(new Error(`Worker thread edge-${index} did not start listening in time`));
      }, options.startTimeout ?? 10_000);
      worker.onmessage = (event: MessageEvent<FromWorker>) => {
        const message = event.data;
        switch (message.type) {
          case "listening":
            listening = true;
            clearTimeout(timer);
            resolve();
            break;
          case "failed":
            clearTimeout(timer);
            reject(new Error(message.message));
            break;
          case "request":
            answer(worker, message).catch((e) => {
              logger.error("Cannot answer a request for a worker thread", { error: (e as Error).message });
              worker.postMessage(
                { type: "response", id: message.id, status: 500, headers: [], body: null } satisfies ToWorker,
              );
            });
            break;
          case "served": {
            const { lines, recent, tally } = message.batch;
            if (lines) options.write(lines);
            for (const entry of recent) options.requestLog.add(entry);
            if (tally) options.metrics.add(tally);
            break;
          }
          case "done":
            asks.get(message.id)?.done();
            break;
        }
      };
      worker.onerror = (event) => {
        event.preventDefault();
        workers.delete(worker);
        worker.terminate();
        // A failed thread answers nothing more: what it was asked counts as done.
        for (const ask of asks.values()) if (ask.worker === worker) ask.done();
        clearTimeout(timer);
        reject(new Error(event.message));
        if (listening && !stopping) {
          logger.error("A worker thread failed; starting another", { worker: `edge-${index}`, error: event.message });
          setTimeout(() => {
            if (stopping) return;
            spawn(index).catch((e) => logger.error("Cannot restart a worker thread", { error: (e as Error).message }));
          }, RESTART_DELAY_MS);
        }
      };
      worker.postMessage(
        {
          type: "start",
          hostname: options.hostname,
          port: options.port,
          windowMs: options.windowMs,
          maxBytes: options.maxBytes,
          headTimeoutMs: options.headTimeoutMs ?? HEAD_TIMEOUT_MS,
          idleTimeoutMs: options.idleTimeoutMs ?? IDLE_TIMEOUT_MS,
          // Each thread takes its share of the connections (the kernel spreads them across the threads' sockets).
          maxConnections: Math.ceil((options.maxConnections ?? MAX_CONNECTIONS) / options.workers),
          log: options.log,
        } satisfies ToWorker,
      );
    });

  try {
    await Promise.all(Array.from({ length: options.workers }, (_, i) => spawn(i)));
  } catch (e) {
    for (const worker of workers) worker.terminate();
    throw e;
  }

  let finish!: () => void;
  const finished = new Promise<void>((resolve) => (finish = resolve));
  return {
    workers: options.workers,
    finished,
    async flush() {
      // A thread that fails meanwhile never answers; do not wait for it for long.
      await askAll((id) => ({ type: "flush", id }), 1000);
    },
    async shutdown() {
      stopping = true;
      if (!(await askAll((id) => ({ type: "stop", id }), stopTimeout))) {
        logger.warn("Worker threads still busy at shutdown; stopping them", { waited_ms: stopTimeout });
      }
      for (const worker of workers) worker.terminate();
      finish();
    },
  };
}
