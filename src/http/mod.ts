/**
 * The request room: `Request` in, `Response` out, no sockets.
 *
 * - `router.ts` is the route table (strict parameters, 404/405, HEAD wherever GET works).
 * - `server.ts` turns the router into a handler: known errors become their status, every answer gets a
 *   Content-Length, and every request is logged and counted.
 * - `errors.ts` is the one map from an error (the domain errors of `../errors.ts`, {@linkcode HttpError}) to a status,
 *   headers and body.
 * - `responses.ts` builds device-safe answers (Content-Length, ETag, conditional requests).
 * - `request_log.ts` and `metrics.ts` keep what was answered, bounded; `prometheus.ts` writes the metrics text.
 *
 * The connection room, `src/edge/`, puts this handler on the network.
 * @module
 */
export { createHandler, type ServeHandler } from "./server.ts";
export { Router } from "./router.ts";
