/**
 * An edge worker thread (started by `listen.ts`): it listens on the server's port beside its siblings
 * (SO_REUSEPORT, so the kernel spreads connections over them), answers the cache hits its edge keeps, and hands
 * every other request to the main thread, which owns the cache, the upstreams and the compiler. The requests it
 * answers itself go to the main thread in batches, to be logged and counted there.
 *
 * Its edge is assembled as the main thread's is (`assemble.ts`); only its parts differ: what the edge does not keep
 * is asked of the main thread (`protocol.ts`), and its records and log lines are sent there.
 * @module
 */
/// <reference lib="deno.worker" />
import { createLogger } from "../log.ts";
import { RequestTally } from "../http/metrics.ts";
import { RequestLog } from "../http/request_log.ts";
import type { ClientInfo } from "../http/server.ts";
import type { Shareable } from "../http/responses.ts";
import { type AssembledEdge, assembleEdge } from "./assemble.ts";
import type { PlainRequest } from "./h1.ts";
import type { Missed } from "./plain.ts";
import type { ForwardedMessage, FromWorker, ToWorker } from "./protocol.ts";

/**
 * The requests answered here go to the main thread this often (ms): log lines, the newest requests, figures. Short
 * batches keep little alive between them; at 100 ms the 99th-percentile latency at one connection was about 2 ms,
 * at 20 ms about 0.6 ms, with the same throughput.
 */
const BATCH_MS = 20;
/** Log lines waiting before a batch goes early. */
const BATCH_LINES = 4096;

const post = (message: FromWorker, transfer: Transferable[] = []) => self.postMessage(message, transfer);

/** This thread's edge, once started. */
let edge: AssembledEdge | undefined;
let nextId = 0;
const pending = new Map<number, (reply: Extract<ToWorker, { type: "response" }>) => void>();
let lines: string[] = [];
let recent = new RequestLog(0);
const tally = new RequestTally();
let timer: ReturnType<typeof setTimeout> | undefined;

function flush(): void {
  edge?.drain();
  if (timer !== undefined) clearTimeout(timer);
  timer = undefined;
  const figures = tally.take();
  if (figures === undefined && lines.length === 0) return;
  post({ type: "served", batch: { lines: lines.join("\n"), recent: recent.take(), tally: figures } });
  lines = [];
}

type Reply = Extract<ToWorker, { type: "response" }>;

/** Hands a request to the main thread; request bodies are not sent, since no route takes one. */
function ask(request: ForwardedMessage & { client: string }): Promise<Reply> {
  const id = nextId++;
  post({ type: "request", id, ...request });
  return new Promise((resolve) => pending.set(id, resolve));
}

/** {@linkcode ask} for a `Deno.serve` request. */
async function forward(request: Request, info?: ClientInfo, share?: (shared: Shareable) => void): Promise<Response> {
  const reply = await ask({
    method: request.method,
    url: request.url,
    headers: [...request.headers],
    client: info?.remoteAddr.hostname ?? "unknown",
  });
  if (reply.shared && share) share(reply.shared);
  return new Response(reply.body, { status: reply.status, headers: reply.headers });
}

/** A request the edge does not keep an answer for goes to the main thread. */
async function miss(request: PlainRequest, client: Deno.NetAddr): Promise<Missed> {
  const reply = await ask({
    method: request.method,
    url: `http://${request.host}${request.target}`,
    headers: request.headers,
    client: client.hostname,
  });
  return {
    status: reply.status,
    headers: reply.headers,
    body: reply.body === null ? null : new Uint8Array(reply.body),
    shared: reply.shared,
  };
}

/** Sends what this thread logged and recorded to the main thread soon, or now when much is waiting. */
function sendSoon(): void {
  if (lines.length >= BATCH_LINES) flush();
  else timer ??= setTimeout(flush, BATCH_MS);
}

function start(message: Extract<ToWorker, { type: "start" }>): void {
  recent = new RequestLog(message.log.requestsKept);
  const logger = createLogger({
    level: message.log.level,
    format: message.log.format,
    write: (line) => lines.push(line),
  });
  try {
    edge = assembleEdge({
      listener: Deno.listen({ hostname: message.hostname, port: message.port, reusePort: true }),
      handler: forward,
      miss,
      logger,
      requestLog: recent,
      metrics: tally,
      noted: sendSoon,
      windowMs: message.windowMs,
      maxBytes: message.maxBytes,
      headTimeoutMs: message.headTimeoutMs,
      idleTimeoutMs: message.idleTimeoutMs,
      maxConnections: message.maxConnections,
    });
    post({ type: "listening" });
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
      await edge?.shutdown();
      flush();
      post({ type: "done", id: message.id });
      break;
  }
};
