/**
 * The edge worker threads' own connection loop. `Deno.serve` sends a response's head and body in two writes once
 * they pass its 512-byte write buffer, so every `.mpy` file costs two send calls; here the two go out in one. The
 * loop reads plain GET and HEAD requests itself (`h1.ts`) and writes each answer in one buffer. A connection that
 * carries anything else (a body, an upgrade, an absolute URL, odd bytes, a head too long, a second Host) is handed
 * over as it is, unread bytes included, to a `Deno.serve` on loopback, which answers it and the rest of that
 * connection exactly as it answers every connection when there are no worker threads.
 * @module
 */
import { type Answer, dateLine, encodeFields, type PlainRequest, readHead, responseBytes } from "./h1.ts";

const FAILED_BODY = new TextEncoder().encode("Internal server error\n");
/** The answer when answering failed. */
const FAILED: Answer = {
  status: 500,
  fields: encodeFields([["content-type", "text/plain; charset=utf-8"]], FAILED_BODY.length),
  body: FAILED_BODY,
};

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
  /** How long a client may take to send a request head it has started, in ms (default 30 s). */
  headTimeoutMs?: number;
  /** Longest request head read here (default 8 KiB); a longer one goes to the handover server. */
  maxHead?: number;
  /** The wall clock for the Date header (default: `Date.now`). */
  now?: () => number;
}

interface Open {
  conn: Deno.Conn;
  /** Answering a request: shutdown lets it finish. */
  busy: boolean;
  /** Handed over: the handover server finishes it. */
  handedOver: boolean;
}

/** Serves the connections of one listener until {@linkcode Front.shutdown}. */
export class Front {
  #o: FrontOptions;
  #date: () => Uint8Array;
  #open = new Set<Open>();
  #running = new Set<Promise<void>>();
  #clients = new Map<number, Deno.NetAddr>();
  #stopping = false;
  #accepting: Promise<void>;

  constructor(options: FrontOptions) {
    this.#o = options;
    this.#date = dateLine(options.now);
    this.#accepting = this.#accept();
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

  /** Stops accepting, closes idle connections, lets answers under way finish, and resolves when all are closed. */
  async shutdown(): Promise<void> {
    this.#stopping = true;
    try {
      this.#o.listener.close();
    } catch { /* already closed */ }
    for (const open of this.#open) if (!open.busy && !open.handedOver) close(open.conn);
    await this.#accepting;
    while (this.#running.size > 0) await Promise.all(this.#running);
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
      const running: Promise<void> = this.#serve(conn).finally(() => this.#running.delete(running));
      this.#running.add(running);
    }
  }

  async #serve(conn: Deno.Conn): Promise<void> {
    const open: Open = { conn, busy: false, handedOver: false };
    this.#open.add(open);
    const maxHead = this.#o.maxHead ?? 8192;
    let buf = new Uint8Array(Math.min(maxHead, 4096) + 1);
    let fill = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      (conn as Deno.TcpConn).setNoDelay?.(true);
      for (;;) {
        if (fill > 0) {
          const head = readHead(buf, fill, maxHead);
          if (head.kind === "other") {
            open.handedOver = true;
            await this.#handOver(conn, buf.subarray(0, fill));
            return;
          }
          if (head.kind === "plain") {
            let request = head.request;
            open.busy = true;
            let answer: Answer;
            try {
              answer = await this.#o.answer(request, conn.remoteAddr as Deno.NetAddr);
            } catch (e) {
              this.#o.onError?.(e);
              answer = FAILED;
              request = { ...request, keepAlive: false };
            }
            await writeAll(conn, responseBytes(request, answer, this.#date()));
            open.busy = false;
            buf.copyWithin(0, request.length, fill);
            fill -= request.length;
            if (!request.keepAlive || this.#stopping) return;
            continue;
          }
        }
        if (this.#stopping) return;
        if (fill === buf.length) {
          const bigger = new Uint8Array(Math.min(buf.length * 2, maxHead + 1));
          bigger.set(buf);
          buf = bigger;
        }
        if (fill > 0) timer = setTimeout(() => close(conn), this.#o.headTimeoutMs ?? 30_000);
        const n = await conn.read(buf.subarray(fill));
        clearTimeout(timer);
        if (n === null) return;
        fill += n;
      }
    } catch {
      // A connection reset, or closed by shutdown or the head timeout: nothing more to send.
    } finally {
      clearTimeout(timer);
      this.#open.delete(open);
      close(conn);
    }
  }

  /** Relays `conn` to the handover server, `head` (what was read so far) first, until either side is done. */
  async #handOver(conn: Deno.Conn, head: Uint8Array): Promise<void> {
    const { hostname, port: serverPort } = this.#o.handover;
    const server = await Deno.connect({ hostname, port: serverPort });
    const port = (server.localAddr as Deno.NetAddr).port;
    this.#clients.set(port, conn.remoteAddr as Deno.NetAddr);
    try {
      await writeAll(server, head);
      // The client's further bytes go on; when it stops sending, the server hears so and may still answer. When the
      // client's side fails (a reset), the server's side is closed, which ends the relay below.
      copy(conn, server).then(() => server.closeWrite()).catch(() => close(server));
      // The server's answers go back until it closes the connection, which ends this one too.
      await copy(server, conn);
    } finally {
      this.#clients.delete(port);
      close(server);
    }
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

async function copy(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(32 * 1024);
  for (;;) {
    const n = await from.read(buf);
    if (n === null) return;
    await writeAll(to, buf.subarray(0, n));
  }
}
