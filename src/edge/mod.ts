/**
 * The connection room: everything that sees sockets and bytes, and nothing that knows packages.
 *
 * - `listen.ts` puts a handler on the port, starts the edge worker threads and replaces one that dies.
 * - `edge_worker.ts` is one such thread: it answers repeated cache hits itself and forwards the rest.
 * - `front.ts` reads a thread's own connections and hands anything it does not read to `Deno.serve`.
 * - `h1.ts` is the strict HTTP/1 head reader and the one-write response encoder `front.ts` uses.
 * - `edge.ts` is the bounded cache of recent hit answers, shared by both paths.
 *
 * The request room next door, `src/http/`, holds the router, responses, the request log and metrics: it turns a
 * `Request` into a `Response` and never touches a socket.
 * @module
 */
export { autoWorkers, configSettings, listen, type Listener, type ListenOptions } from "./listen.ts";
