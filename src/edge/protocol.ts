/**
 * What the main thread and its edge worker threads say to each other (`listen.ts` on one side, `edge_worker.ts` on
 * the other), and how a request a worker forwards is rebuilt to read exactly as its client sent it.
 * @module
 */
import type { LogLevel } from "../log.ts";
import type { TallySnapshot } from "../http/metrics.ts";
import type { RequestEntry } from "../http/request_log.ts";
import { splitUrl } from "../http/server.ts";
import type { Shareable } from "../http/responses.ts";

/** How edge workers write request log lines, as the main logger would. */
export interface WorkerLog {
  level: LogLevel;
  format: "text" | "json";
  /** Requests each worker keeps between batches for `/_/requests`. */
  requestsKept: number;
}

/** What an edge worker sends about the requests it answered since its last batch. */
export interface WorkerBatch {
  /** Formatted log lines, newline-separated ("" for none). */
  lines: string;
  /** The newest requests, oldest first. */
  recent: RequestEntry[];
  tally?: TallySnapshot;
}

/** A request a worker thread hands to the main thread (no body: no route takes one). */
export interface ForwardedMessage {
  method: string;
  url: string;
  headers: [string, string][];
}

/** Messages from the main thread to an edge worker. */
export type ToWorker =
  | {
    type: "start";
    hostname: string;
    port: number;
    windowMs: number;
    maxBytes: number;
    headTimeoutMs: number;
    idleTimeoutMs: number;
    /** This thread's share of `server.max_connections`. */
    maxConnections: number;
    log: WorkerLog;
  }
  | {
    type: "response";
    id: number;
    status: number;
    headers: [string, string][];
    body: ArrayBuffer | null;
    shared?: Shareable;
  }
  | { type: "flush"; id: number }
  | { type: "stop"; id: number };

/** Messages from an edge worker to the main thread. */
export type FromWorker =
  | { type: "listening" }
  | { type: "failed"; message: string }
  | ({ type: "request"; id: number; client: string } & ForwardedMessage)
  | { type: "served"; batch: WorkerBatch }
  | { type: "done"; id: number };

/** Methods a client may send but a `Request` cannot carry (the fetch standard forbids them). */
const FORBIDDEN_METHODS = new Set(["CONNECT", "TRACE", "TRACK"]);

/**
 * Rebuilds a request an edge worker forwarded so that it reads exactly as the client sent it, and the handler answers
 * it as it would have on the thread that received it:
 * - `new Request` normalizes the URL (`/file/../x` becomes `/x`) and refuses one that a Host such as `a b` makes
 *   invalid, while the router must see the path as sent to refuse such paths (400): `url` reads as received.
 * - `new Request` upper-cases the methods the fetch standard names (`get` becomes `GET`), while the router answers
 *   `get` with 405, as it does on the thread that received it: `method` reads as sent.
 * - CONNECT, TRACE and TRACK cannot be given to `new Request`, yet a client can send them and the router answers them
 *   (404 or 405) like any method it does not serve: the request is built as a GET.
 */
export function forwardedRequest(message: ForwardedMessage): Request {
  const forbidden = FORBIDDEN_METHODS.has(message.method.toUpperCase());
  let url = message.url;
  if (!URL.canParse(url)) {
    const { pathname, search } = splitUrl(url);
    url = `http://invalid-host.invalid${pathname}${search}`;
  }
  const request = new Request(url, { method: forbidden ? "GET" : message.method, headers: message.headers });
  if (request.url !== message.url) Object.defineProperty(request, "url", { value: message.url });
  if (request.method !== message.method) Object.defineProperty(request, "method", { value: message.method });
  return request;
}
