/**
 * An edge worker thread (started by `listen.ts`): it listens on the server's port beside its siblings
 * (SO_REUSEPORT, so the kernel spreads connections over them), answers the cache hits its edge keeps, and hands
 * every other request to the main thread, which owns the cache, the upstreams and the compiler. The requests it
 * answers itself go to the main thread in batches, to be logged and counted there.
 * @module
 */
/// <reference lib="deno.worker" />
import { createLogger } from "../log.ts";
import { createEdgeHandler, EdgeCache } from "./edge.ts";
import type { ToMain, ToWorker } from "./listen.ts";
import { RequestTally } from "./metrics.ts";
import { RequestLog } from "./request_log.ts";
import { type ClientInfo, createRecorder, type Shared } from "./server.ts";

/**
 * The requests answered here go to the main thread this often (ms): log lines, the newest requests, figures. Short
 * batches keep little alive between them; at 100 ms the 99th-percentile latency at one connection was about 2 ms,
 * at 20 ms about 0.6 ms, with the same throughput.
 */
const BATCH_MS = 20;
/** Log lines waiting before a batch goes early. */
const BATCH_LINES = 4096;

const post = (message: ToMain, transfer: Transferable[] = []) => self.postMessage(message, transfer);

let server: Deno.HttpServer | undefined;
let nextId = 0;
const pending = new Map<number, (reply: Extract<ToWorker, { type: "response" }>) => void>();
let lines: string[] = [];
let recent = new RequestLog(0);
const tally = new RequestTally();
let timer: ReturnType<typeof setTimeout> | undefined;

function flush(): void {
  if (timer !== undefined) clearTimeout(timer);
  timer = undefined;
  const figures = tally.take();
  if (figures === undefined && lines.length === 0) return;
  post({ type: "served", batch: { lines: lines.join("\n"), recent: recent.take(), tally: figures } });
  lines = [];
}

/** Hands a request to the main thread; request bodies are not sent, since no route takes one. */
function forward(request: Request, info?: ClientInfo, share?: (shared: Shared) => void): Promise<Response> {
  const id = nextId++;
  post({
    type: "request",
    id,
    method: request.method,
    url: request.url,
    headers: [...request.headers],
    client: info?.remoteAddr.hostname ?? "unknown",
  });
  return new Promise((resolve) => {
    pending.set(id, (reply) => {
      if (reply.shared && share) share(reply.shared);
      resolve(new Response(reply.body, { status: reply.status, headers: reply.headers }));
    });
  });
}

function start(message: Extract<ToWorker, { type: "start" }>): void {
  const cache = new EdgeCache({ windowMs: message.windowMs, maxBytes: message.maxBytes });
  recent = new RequestLog(message.log.requestsKept);
  const logger = createLogger({
    level: message.log.level,
    format: message.log.format,
    write: (line) => lines.push(line),
  });
  const record = createRecorder({ logger, requestLog: recent, metrics: tally });
  const handler = createEdgeHandler(forward, {
    cache,
    record: (entry, kind) => {
      record(entry, kind);
      if (lines.length >= BATCH_LINES) flush();
      else timer ??= setTimeout(flush, BATCH_MS);
    },
  });
  try {
    server = Deno.serve({
      hostname: message.hostname,
      port: message.port,
      reusePort: true,
      onListen: () => post({ type: "listening" }),
    }, handler);
  } catch (e) {
    post({ type: "failed", message: e instanceof Error ? e.message : String(e) });
  }
}

self.onmessage = async (event: MessageEvent<ToWorker>) => {
  const message = event.data;
  switch (message.type) {
    case "start":
      start(message);
      break;
    case "response": {
      const resolve = pending.get(message.id);
      pending.delete(message.id);
      resolve?.(message);
      break;
    }
    case "flush":
      flush();
      post({ type: "done", id: message.id });
      break;
    case "stop":
      if (server) {
        await server.shutdown();
        await server.finished;
      }
      flush();
      post({ type: "done", id: message.id });
      break;
  }
};
