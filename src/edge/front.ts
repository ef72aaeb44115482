/**
 * The edge worker threads' own connection loop. `Deno.serve` sends a response's head and body in two writes once
 * they pass its 512-byte write buffer, so every `.mpy` file costs two send calls; here the two go out in one. The
 * loop reads plain GET and HEAD requests itself (`h1.ts`) and writes each answer in one buffer. A connection that
 * carries anything else (a body, an upgrade, an absolute URL, odd bytes, a head too long, a second Host) is handed
 * over as it is, unread bytes included, to a `Deno.serve` on loopback, which answers it and the rest of that
 * connection exactly as it answers any connection.
 *
 * Every connection, read here or handed over, has two deadlines: a client that has started a request head must
 * finish it within the head timeout (counted from the connection's start for its first request), and a keep-alive
 * connection with nothing under way is closed after the idle timeout. For a handed-over connection, which this loop
 * no longer parses, the relay watches the bytes: a request starts with the client's first byte after an answer (or
 * the hand-over), its head ends at the first blank line, and an answer is any byte from the server; bytes the
 * client sends after a head and before its answer (a body, a pipelined request) are due a head timeout from the
 * first of them, so a body sent slowly to a server that waits for it is cut off too. One sweep per
 * front closes the connections past their deadline, so the fast path pays a clock read, not a timer. An answer being
 * written must make progress within the idle timeout, so a client that stops reading does not hold it either.
 * @module
 */
import { type Answer, dateLine, encodeFields, type PlainRequest, readHead, responseBytes } from "./h1.ts";
import { type Slot, Slots } from "./slots.ts";

const FAILED_BODY = new TextEncoder().encode("Internal server error\n");
/** The answer when answering failed. */
const FAILED: Answer = {
  status: 500,
  fields: encodeFields([["content-type", "text/plain; charset=utf-8"]], FAILED_BODY.length),
  body: FAILED_BODY,
};

/** The size of a connection's first read buffer: a device's head and then some. */
const BUFFER_SIZE = 1025;
/** Read buffers kept for the next connections (at most this many, 1 KiB each). */
const BUFFERS_KEPT = 256;
const BUFFERS: Uint8Array[] = [];

/** What a {@linkcode Front} needs. */
export interface FrontOptions {
  /** Where clients connect. */
  listener: Deno.Listener;
  /** Answers a plain request. If it throws, the client gets a 500 and the connection is closed. */
  answer: (request: PlainRequest, client: Deno.NetAddr) => Answer | Promise<Answer>;
  /** Hears why an answer failed. */
  onError?: (error: unknown) => void;
  /** The `Deno.serve` on loopback that takes every connection this loop does not read itself. */
  handover: Deno.NetAddr;
  /**
   * How long a client may take to send a request head, in ms (default 30 s): from the connection's start for its
   * first request, from the first byte of each later one.
   */
  headTimeoutMs?: number;
  /** How long a keep-alive connection may wait for its next request, in ms (default 60 s). */
  idleTimeoutMs?: number;
  /** Longest request head read here (default 8 KiB); a longer one goes to the handover server. */
  maxHead?: number;
  /** The wall clock for the Date header (default: `Date.now`). */
  now?: () => number;
  /**
   * Connections open at once at most (default {@linkcode MAX_CONNECTIONS}); one more is answered 503 and closed at
   * once, so a flood of connections holds no more than this many buffers and deadlines.
   */
  maxConnections?: number;
  /** Hears that a connection was refused for `maxConnections` (at most once a minute; `refused` counts them all). */
  onFull?: (refused: number) => void;
}

interface Open {
  conn: Deno.Conn;
  /** Answering a request: shutdown lets it finish. */
  busy: boolean;
  /** Handed over: the handover server finishes it. */
  handedOver: boolean;
  /** When the connection is closed unless something happens first (`Date.now()` ms; 0: no deadline). */
  deadline: number;
  /** Where it is held in `Front.#open`. */
  slot: Slot;
}

/** The default head timeout, in ms. */
export const HEAD_TIMEOUT_MS = 30_000;
/** The default idle keep-alive timeout, in ms. */
export const IDLE_TIMEOUT_MS = 60_000;
/** The default most connections open at once (`server.max_connections`). */
export const MAX_CONNECTIONS = 4096;
/** The answer to a connection past `maxConnections`. */
const FULL = new TextEncoder().encode(
  "HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 38\r\nRetry-After: 1\r\n" +
    "Connection: close\r\n\r\nToo many connections; try again soon.\n",
);

/** Serves the connections of one listener until {@linkcode Front.shutdown}. */
export class Front {
  #o: FrontOptions;
  #date: () => Uint8Array;
  /** Open connections: slots rather than a Set, which under per-request connections costs the GC dearly (`slots.ts`). */
  #open = new Slots<Open>();
  /** Connections being served; `#drained` hears when none are left. */
  #active = 0;
  #drained?: () => void;
  #clients = new Map<number, Deno.NetAddr>();
  #stopping = false;
  #accepting: Promise<void>;
  #headMs: number;
  #idleMs: number;
  #max: number;
  #refused = 0;
  #lastFull = -Infinity;
  #sweeper: ReturnType<typeof setInterval>;

  constructor(options: FrontOptions) {
    this.#o = options;
    this.#date = dateLine(options.now);
    this.#headMs = options.headTimeoutMs ?? HEAD_TIMEOUT_MS;
    this.#idleMs = options.idleTimeoutMs ?? IDLE_TIMEOUT_MS;
    this.#max = Math.max(1, options.maxConnections ?? MAX_CONNECTIONS);
    // A deadline is kept to within a quarter of the shorter timeout (between 10 ms and a second).
    const tick = Math.max(10, Math.min(1000, Math.min(this.#headMs, this.#idleMs) / 4));
    this.#sweeper = setInterval(() => this.#sweep(), tick);
    Deno.unrefTimer(this.#sweeper);
    this.#accepting = this.#accept();
  }

  /** Closes the connections past their deadline. */
  #sweep(): void {
    const now = Date.now();
    for (const open of this.#open) {
      if (open.deadline !== 0 && now >= open.deadline) {
        open.deadline = 0;
        close(open.conn);
      }
    }
  }

  /**
   * The client behind a handed-over connection, by the loopback port the handover server sees it come from (its
   * remote port), while the connection lasts.
   */
  clientOf(port: number): Deno.NetAddr | undefined {
    return this.#clients.get(port);
  }

  /** Connections open now, handed-over ones included. */
  get connections(): number {
    return this.#open.size;
  }

  /** Connections refused since start because `maxConnections` were open. */
  get refused(): number {
    return this.#refused;
  }

  /** Stops accepting, closes idle connections, lets answers under way finish, and resolves when all are closed. */
  async shutdown(): Promise<void> {
    this.#stopping = true;
    try {
      this.#o.listener.close();
    } catch { /* already closed */ }
    for (const open of this.#open) if (!open.busy && !open.handedOver) close(open.conn);
    await this.#accepting;
    // The sweep goes on until the last connection is gone: a client that stops reading an answer under way is cut off
    // by its deadline, so it cannot hold the shutdown.
    if (this.#active > 0) await new Promise<void>((resolve) => (this.#drained = resolve));
    clearInterval(this.#sweeper);
  }

  async #accept(): Promise<void> {
    while (!this.#stopping) {
      let conn: Deno.Conn;
      try {
        conn = await this.#o.listener.accept();
      } catch (e) {
        if (this.#stopping || e instanceof Deno.errors.BadResource) return;
        // Out of file descriptors and the like: the connections open now go on; try again in a moment.
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      if (this.#open.size >= this.#max) {
        this.#refuse(conn);
        continue;
      }
      this.#active++;
      this.#serve(conn);
    }
  }

  /** Answers a connection past `maxConnections` with a 503 and closes it, without reading it. */
  #refuse(conn: Deno.Conn): void {
    this.#refused++;
    // The answer fits a new socket's send buffer: the write does not wait for the client.
    conn.write(FULL).catch(() => {}).finally(() => close(conn));
    const now = Date.now();
    if (now - this.#lastFull >= 60_000) {
      this.#lastFull = now;
      this.#o.onFull?.(this.#refused);
    }
  }

  /** Serves one connection until it closes; never rejects. */
  async #serve(conn: Deno.Conn): Promise<void> {
    // The first request's head is due a head timeout after the connection starts.
    const open: Open = { conn, busy: false, handedOver: false, deadline: Date.now() + this.#headMs, slot: -1 };
    open.slot = this.#open.add(open);
    const maxHead = this.#o.maxHead ?? 8192;
    // A device's head is a few hundred bytes: start small (a buffer from the pool), grow up to `maxHead`.
    let buf = BUFFERS.pop() ?? new Uint8Array(BUFFER_SIZE);
    /** Answers written; from the second on, Nagle's algorithm could hold one back behind the last (pipelining). */
    let answered = 0;
    let fill = 0;
    /** Waiting for a request after an answer, with no byte of it read yet: the idle deadline applies. */
    let idle = false;
    try {
      for (;;) {
        if (fill > 0) {
          // The next request has begun: its head is due a head timeout from now.
          if (idle) {
            idle = false;
            open.deadline = Date.now() + this.#headMs;
          }
          const head = readHead(buf, fill, maxHead);
          if (head.kind === "other") {
            open.handedOver = true;
            await this.#handOver(open, buf.slice(0, fill));
            return;
          }
          if (head.kind === "plain") {
            const request = head.request;
            let keepAlive = request.keepAlive;
            open.busy = true;
            open.deadline = 0;
            let bytes: Uint8Array;
            try {
              // A kept answer comes back at once, not as a promise: no turn of the event loop is spent on it.
              const given = this.#o.answer(request, conn.remoteAddr as Deno.NetAddr);
              bytes = responseBytes(request, given instanceof Promise ? await given : given, this.#date());
            } catch (e) {
              this.#o.onError?.(e);
              keepAlive = false;
              bytes = responseBytes({ method: request.method, minor: request.minor, keepAlive }, FAILED, this.#date());
            }
            if (answered++ === 1) (conn as Deno.TcpConn).setNoDelay?.(true);
            // Most answers go out in one write; a large one to a slow client takes more.
            open.deadline = Date.now() + this.#idleMs;
            const written = await conn.write(bytes);
            if (written < bytes.length) await this.#write(open, bytes.subarray(written));
            open.deadline = 0;
            open.busy = false;
            buf.copyWithin(0, request.length, fill);
            fill -= request.length;
            if (!keepAlive || this.#stopping) return;
            open.deadline = Date.now() + this.#idleMs;
            idle = true;
            continue;
          }
        }
        if (this.#stopping) return;
        if (fill === buf.length) {
          const bigger = new Uint8Array(Math.min(buf.length * 2, maxHead + 1));
          bigger.set(buf);
          buf = bigger;
        }
        const n = await conn.read(fill === 0 ? buf : buf.subarray(fill));
        if (n === null) return;
        fill += n;
      }
    } catch {
      // A connection reset, or closed by shutdown or a deadline: nothing more to send.
    } finally {
      this.#open.remove(open.slot);
      close(conn);
      // Nothing refers to the buffer now (requests hold strings read from it): the next connection may take it.
      if (buf.length === BUFFER_SIZE && BUFFERS.length < BUFFERS_KEPT) BUFFERS.push(buf);
      if (--this.#active === 0) this.#drained?.();
    }
  }

  /**
   * Writes an answer. A client that stops reading cannot hold the connection: each write must make progress within the
   * idle timeout (a large answer to a slow but reading client goes on as long as it moves).
   */
  async #write(open: Open, bytes: Uint8Array): Promise<void> {
    for (let at = 0; at < bytes.length;) {
      open.deadline = Date.now() + this.#idleMs;
      at += await open.conn.write(bytes.subarray(at));
    }
    open.deadline = 0;
  }

  /**
   * Relays `open.conn` to the handover server, `head` (what was read so far) first, until either side is done. The
   * relay keeps the connection's deadlines: see the module doc.
   */
  async #handOver(open: Open, head: Uint8Array): Promise<void> {
    const { conn } = open;
    const { hostname, port: serverPort } = this.#o.handover;
    const server = await Deno.connect({ hostname, port: serverPort });
    const port = (server.localAddr as Deno.NetAddr).port;
    this.#clients.set(port, conn.remoteAddr as Deno.NetAddr);
    // The head under way keeps the deadline it has; `blank` finds where it ends. Then the server is at work (no
    // deadline) until it answers; then the client may idle until its next request's first byte starts a head.
    const blank = new BlankLine();
    let state: "head" | "working" | "answered" = "head";
    const fromClient = (bytes: Uint8Array) => {
      if (state === "working") {
        // More from the client before the answer (a body, a pipelined request): due a head timeout from its start.
        if (open.deadline === 0) open.deadline = Date.now() + this.#headMs;
        return;
      }
      if (state === "answered") {
        state = "head";
        blank.reset();
        open.deadline = Date.now() + this.#headMs;
      }
      if (blank.in(bytes)) {
        state = "working";
        open.deadline = 0;
      }
    };
    const fromServer = () => {
      state = "answered";
      open.deadline = Date.now() + this.#idleMs;
    };
    fromClient(head);
    try {
      await writeAll(server, head);
      // The client's further bytes go on; when it stops sending, the server hears so and may still answer. When the
      // client's side fails (a reset), the server's side is closed, which ends the relay below.
      copy(conn, server, fromClient).then(() => server.closeWrite()).catch(() => close(server));
      // The server's answers go back until it closes the connection, which ends this one too.
      await copy(server, conn, fromServer);
    } finally {
      this.#clients.delete(port);
      close(server);
    }
  }
}

/** Finds the blank line that ends a request head (CRLF CRLF, or bare LFs as `Deno.serve` also takes), across reads. */
class BlankLine {
  #lf = false;

  /** Starts looking for a new head. */
  reset(): void {
    this.#lf = false;
  }

  /** Whether `bytes`, following what was seen since the last reset, complete a blank line. */
  in(bytes: Uint8Array): boolean {
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i];
      if (b === 10) {
        if (this.#lf) return true;
        this.#lf = true;
      } else if (b !== 13) {
        this.#lf = false;
      }
    }
    return false;
  }
}

function close(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch { /* already closed */ }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

async function copy(from: Deno.Conn, to: Deno.Conn, seen: (bytes: Uint8Array) => void): Promise<void> {
  const buf = new Uint8Array(32 * 1024);
  for (;;) {
    const n = await from.read(buf);
    if (n === null) return;
    seen(buf.subarray(0, n));
    await writeAll(to, buf.subarray(0, n));
  }
}
