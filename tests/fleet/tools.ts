/**
 * Helpers for the fleet tests: a server on the network (edge worker threads in front, as in production), mip's own
 * requests captured on their way to it, and replays of them from other loopback addresses (127.0.0.2, ...).
 */
import assert from "node:assert/strict";
import { serveApp, type ServedApp } from "../e2e/tools.ts";

/** A running server: its app, its port, every log line written (main thread and worker threads). */
export type Served = ServedApp;

/** Serves an app for `config` on `hostname` (default every interface) with two edge worker threads, recording. */
export function serve(config: Record<string, unknown>, hostname = "0.0.0.0"): Promise<Served> {
  return serveApp(config, { hostname, record: true });
}

/**
 * A relay in front of `port` that keeps the head of every request passing through it: point mip at it to learn
 * the exact requests mip sends.
 */
export function captureProxy(port: number): { url: string; heads: string[]; stop(): Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const heads: string[] = [];
  const tasks: Promise<void>[] = [];
  const relay = async (conn: Deno.Conn) => {
    const upstream = await Deno.connect({ hostname: "127.0.0.1", port });
    const buf = new Uint8Array(65536);
    let head = "";
    const dec = new TextDecoder();
    const toServer = (async () => {
      while (true) {
        const n = await conn.read(buf).catch(() => null);
        if (n === null) break;
        if (!head.includes("\r\n\r\n")) {
          head += dec.decode(buf.subarray(0, n));
          if (head.includes("\r\n\r\n")) heads.push(head.slice(0, head.indexOf("\r\n\r\n") + 4));
        }
        await upstream.write(buf.slice(0, n));
      }
      await upstream.closeWrite().catch(() => {});
    })();
    await upstream.readable.pipeTo(conn.writable).catch(() => {});
    await toServer;
    try {
      upstream.close();
    } catch { /* closed */ }
  };
  const accepting = (async () => {
    for await (const conn of listener) tasks.push(relay(conn));
  })();
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    heads,
    async stop() {
      listener.close();
      await accepting.catch(() => {});
      await Promise.allSettled(tasks);
    },
  };
}

const REPLAY = `
import json, socket, sys
job = json.loads(sys.stdin.read())
out = []
for source, head in job["jobs"]:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.connect(("127.0.0.1", job["port"]))
    s.sendall(head.encode("latin-1"))
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    line = data.split(b"\\r\\n", 1)[0].decode("latin-1")
    out.append({"status": int(line.split(" ")[1]), "bytes": len(data)})
print(json.dumps(out))
`;

/**
 * Sends each `[source, head]`, one connection each, from a socket bound to that source address (any of 127.0.0.0/8
 * reaches a server on 127.0.0.1); returns each answer's status.
 */
export async function replayFromMany(port: number, jobs: [string, string][]): Promise<number[]> {
  const child = new Deno.Command("python3", { args: ["-c", REPLAY], stdin: "piped", stdout: "piped", stderr: "piped" })
    .spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(JSON.stringify({ port, jobs })));
  await writer.close();
  const out = await child.output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return (JSON.parse(new TextDecoder().decode(out.stdout)) as { status: number }[]).map((r) => r.status);
}

/** Sends each request head, one connection each, from a socket bound to `source`; returns each answer's status. */
export function replayFrom(source: string, port: number, heads: string[]): Promise<number[]> {
  return replayFromMany(port, heads.map((head) => [source, head]));
}

/** The path a request head asks for. */
export function pathOf(head: string): string {
  return head.split(" ")[1];
}

/** This machine's first non-loopback IPv4 address (a test of LAN clients needs one). */
export function lanAddress(): string {
  const found = Deno.networkInterfaces().find((i) => i.family === "IPv4" && !i.address.startsWith("127."));
  if (!found) throw new Error("This machine has no non-loopback IPv4 address to test LAN clients from");
  return found.address;
}

/** Waits until `check` holds (polling), or fails with `what`. */
export async function until(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`Timed out waiting: ${what}`);
}
