/**
 * Device-safe responses: every body is sent whole with a Content-Length, never chunked, because the mip client
 * speaks HTTP/1.0 and reads until the connection closes.
 * @module
 */

import type { Served } from "../cache/served.ts";

const encoder = new TextEncoder();

/**
 * A served object as a route sent it: the answer itself (its bytes, ETag, kind and, for a manifest, what it says) with
 * the route that gave it and its 200 and 304 headers. The install records read it; a cache hit is also what the edge
 * repeats for a moment.
 */
export interface Shareable extends Served {
  /** The route pattern that gave it (the edge's repeats are recorded under it). */
  route: string;
  /** Headers of the 200 answer, Content-Length included. */
  headers: Record<string, string>;
  /** Headers of the 304 answer to a matching If-None-Match. */
  notModified: Record<string, string>;
}

/**
 * What of a {@linkcode Shareable} goes to an edge worker thread: all but the parsed manifest, which the edge never
 * reads and a message between threads would copy whole.
 */
export function forEdge(shared: Shareable): Shareable {
  if (shared.manifest === undefined) return shared;
  const { manifest: _, ...rest } = shared;
  return rest;
}

/** An error with an HTTP status; its message is sent to the client as plain text. */
export class HttpError extends Error {
  /** The status code to answer with. */
  readonly status: number;
  /** Extra response headers (e.g. `Allow`). */
  readonly headers: Record<string, string>;
  /** True when upstream could not be reached at all (no answer, a timeout, or its circuit breaker open). */
  readonly unreachable: boolean;
  constructor(status: number, message: string, headers: Record<string, string> = {}, unreachable = false) {
    super(message);
    this.name = "HttpError";
    this.status = status;
    this.headers = headers;
    this.unreachable = unreachable;
  }
}

/** Builds a response from bytes with an exact Content-Length. Headers are passed as a plain object (hot path). */
export function bytesResponse(
  body: Uint8Array,
  init: { status?: number; headers?: Record<string, string>; contentType?: string } = {},
): Response {
  const headers: Record<string, string> = { ...init.headers, "content-length": String(body.byteLength) };
  if (init.contentType) headers["content-type"] = init.contentType;
  return new Response(body as Uint8Array<ArrayBuffer>, { status: init.status ?? 200, headers });
}

/** A plain-text response (a trailing newline is added). */
export function textResponse(status: number, text: string, headers?: Record<string, string>): Response {
  return bytesResponse(encoder.encode(`${text}\n`), {
    status,
    headers,
    contentType: "text/plain; charset=utf-8",
  });
}

/** A JSON response. */
export function jsonResponse(
  value: unknown,
  init: { status?: number; headers?: Record<string, string>; pretty?: boolean } = {},
): Response {
  const body = JSON.stringify(value, null, init.pretty ? 2 : undefined);
  return bytesResponse(encoder.encode(body), {
    status: init.status,
    headers: init.headers,
    contentType: "application/json",
  });
}

/** Whether an If-None-Match header value names `etag` (weak or strong, one of a list, or `*`). */
export function etagMatches(ifNoneMatch: string | null, etag: string): boolean {
  if (!ifNoneMatch) return false;
  return ifNoneMatch.split(",").some((t) => {
    const tag = t.trim();
    return tag === "*" || tag === etag || tag === `W/${etag}`;
  });
}

/**
 * The answer to `request` for a cached representation: 304 with its `notModified` headers when If-None-Match names
 * its ETag, else its whole body with its headers.
 */
export function representationResponse(request: Request, rep: Shareable): Response {
  if (etagMatches(request.headers.get("if-none-match"), rep.etag)) {
    return new Response(null, { status: 304, headers: rep.notModified });
  }
  return new Response(rep.body as Uint8Array<ArrayBuffer>, { headers: rep.headers });
}

/** Returns `response` with a Content-Length, buffering a streamed body if it has none. */
export async function withContentLength(response: Response): Promise<Response> {
  if (response.headers.has("content-length") || response.body === null) return response;
  const body = new Uint8Array(await response.arrayBuffer());
  const headers = new Headers(response.headers);
  headers.delete("transfer-encoding");
  headers.set("content-length", String(body.byteLength));
  return new Response(body, { status: response.status, statusText: response.statusText, headers });
}
