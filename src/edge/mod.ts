/**
 * The connection room: everything that sees sockets and bytes, and nothing that knows packages.
 *
 * - `listen.ts` puts a handler on the port: by default the main thread's own front, or edge worker threads beside it
 *   (`server.workers`), replacing one that dies.
 * - `edge_worker.ts` is one such thread: it answers repeated cache hits itself and forwards the rest;
 *   `protocol.ts` holds the messages between it and the main thread.
 * - `assemble.ts` puts one thread's edge together (cache, hit batch, front, handover `Deno.serve`), the same way for
 *   the main thread and the worker threads.
 * - `cpus.ts` says what `server.workers: auto` means, within a container's CPU limit.
 * - `front.ts` reads a thread's own connections, keeps their head and idle deadlines, and hands anything it does not
 *   read to `Deno.serve`; `slots.ts` holds its open connections without a hash table, for the GC's sake.
 * - `h1.ts` is the strict HTTP/1 head reader and the one-write response encoder `front.ts` uses.
 * - `plain.ts` is the edge for the requests `front.ts` reads: kept answers at once, the rest to a miss function.
 * - `edge.ts` is the bounded cache of recent hit answers, shared by both paths.
 * - `hits.ts` records the hits `plain.ts` answers, in batches.
 *
 * The request room next door, `src/http/`, holds the router, responses, the request log and metrics: it turns a
 * `Request` into a `Response` and never touches a socket.
 * @module
 */
export { autoWorkers } from "./cpus.ts";
export { configSettings, listen, type Listener, type ListenOptions } from "./listen.ts";
