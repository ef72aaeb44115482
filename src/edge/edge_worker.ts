/**
 * An edge worker thread (started by `listen.ts`): it listens on the server's port beside its siblings
 * (SO_REUSEPORT, so the kernel spreads connections over them), answers the cache hits its edge keeps, and hands
 * every other request to the main thread, which owns the cache, the upstreams and the compiler. The requests it
 * answers itself go to the main thread in batches, to be logged and counted there.
 *
 * Its connections are read by `front.ts`, which writes each answer in one send; connections it does not read
 * (anything but plain GET and HEAD requests) go to this thread's `Deno.serve` on loopback, with the same edge in
 * front of the same forwarding.
 * @module
 */
/// <reference lib="deno.worker" />
import { createLogger } from "../log.ts";
import { createEdgeHandler, EdgeCache } from "./edge.ts";
import { Front } from "./front.ts";
import type { PlainRequest } from "./h1.ts";
import { HitBatch } from "./hits.ts";
import { type Missed, plainAnswerer } from "./plain.ts";
import type { ToMain, ToWorker } from "./listen.ts";
import { RequestTally } from "../http/metrics.ts";
import { RequestLog } from "../http/request_log.ts";
import { type ClientInfo, createRecorder, type Recorder, type Shared } from "../http/server.ts";

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
let front: Front | undefined;
let nextId = 0;
const pending = new Map<number, (reply: Extract<ToWorker, { type: "response" }>) => void>();
let lines: string[] = [];
let recent = new RequestLog(0);
const tally = new RequestTally();
let timer: ReturnType<typeof setTimeout> | undefined;
/** The hits this thread's front answered and has not recorded yet (`hits.ts`). */
let hits: HitBatch | undefined;

function flush(): void {
  hits?.drain();
  if (timer !== undefined) clearTimeout(timer);
  timer = undefined;
  const figures = tally.take();
  if (figures === undefined && lines.length === 0) return;
  post({ type: "served", batch: { lines: lines.join("\n"), recent: recent.take(), tally: figures } });
  lines = [];
}

type Reply = Extract<ToWorker, { type: "response" }>;

/** Hands a request to the main thread; request bodies are not sent, since no route takes one. */
function ask(request: { method: string; url: string; headers: [string, string][]; client: string }): Promise<Reply> {
  const id = nextId++;
  post({ type: "request", id, ...request });
  return new Promise((resolve) => pending.set(id, resolve));
}

/** {@linkcode ask} for a `Deno.serve` request. */
async function forward(request: Request, info?: ClientInfo, share?: (shared: Shared) => void): Promise<Response> {
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

function start(message: Extract<ToWorker, { type: "start" }>): void {
  const cache = new EdgeCache({ windowMs: message.windowMs, maxBytes: message.maxBytes });
  recent = new RequestLog(message.log.requestsKept);
  const logger = createLogger({
    level: message.log.level,
    format: message.log.format,
    write: (line) => lines.push(line),
  });
  const record = createRecorder({ logger, requestLog: recent, metrics: tally });
  const sendSoon = () => {
    if (lines.length >= BATCH_LINES) flush();
    else timer ??= setTimeout(flush, BATCH_MS);
  };
  const edgeRecord: Recorder = (entry, kind) => {
    record(entry, kind);
    sendSoon();
  };
  const handler = createEdgeHandler(forward, { cache, record: edgeRecord });
  const batch = hits = new HitBatch(edgeRecord);
  recent.catchUp = () => batch.drain();
  try {
    const listener = Deno.listen({ hostname: message.hostname, port: message.port, reusePort: true });
    // Connections the front does not read come here; their handler sees the client behind the relay.
    server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (request, info) => handler(request, { remoteAddr: front?.clientOf(info.remoteAddr.port) ?? info.remoteAddr }),
    );
    front = new Front({
      listener,
      handover: server.addr as Deno.NetAddr,
      answer: plainAnswerer(cache, hits, miss),
      headTimeoutMs: message.headTimeoutMs,
      idleTimeoutMs: message.idleTimeoutMs,
      maxConnections: message.maxConnections,
      onFull: (refused) => {
        logger.warn("Too many connections open; new ones are refused", { refused });
        sendSoon();
      },
      onError: (e) => {
        logger.error("Cannot answer a request", { error: e instanceof Error ? (e.stack ?? e.message) : String(e) });
        sendSoon();
      },
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
      await Promise.all([front?.shutdown(), server?.shutdown()]);
      await server?.finished;
      flush();
      post({ type: "done", id: message.id });
      break;
  }
};
