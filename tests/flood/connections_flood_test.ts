/**
 * Connections: a client that opens connections and sends nothing holds at most `server.max_connections` of them,
 * over all threads; one more is answered 503 with Retry-After and closed, and a slot freed is taken again.
 */
import assert from "node:assert/strict";
import { Front } from "../../src/edge/front.ts";
import { encodeFields } from "../../src/edge/h1.ts";
import { serveApp } from "../e2e/tools.ts";

/** Reads what the server sends until it closes, or `ms` pass (then undefined: the connection is being held). */
async function closedWith(conn: Deno.Conn, ms: number): Promise<string | undefined> {
  const chunks: string[] = [];
  const buf = new Uint8Array(4096);
  const timer = new Promise<"held">((r) => setTimeout(() => r("held"), ms));
  for (;;) {
    const n = await Promise.race([conn.read(buf).catch(() => null), timer]);
    if (n === "held") return undefined;
    if (n === null) return chunks.join("");
    chunks.push(new TextDecoder().decode(buf.subarray(0, n)));
  }
}

Deno.test("front: past maxConnections a connection is answered 503 and closed; a freed slot is taken again", async () => {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => new Response("x"));
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const full: number[] = [];
  const body = new TextEncoder().encode("ok");
  const front = new Front({
    listener,
    handover: server.addr as Deno.NetAddr,
    answer: () => ({ status: 200, fields: encodeFields([], body.length), body }),
    maxConnections: 4,
    onFull: (refused) => full.push(refused),
  });
  const port = (listener.addr as Deno.NetAddr).port;
  const conns: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 4; i++) conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(front.connections, 4);
    // A flood of 200 more: each is refused at once, none is held.
    for (let i = 0; i < 200; i++) {
      const extra = await Deno.connect({ hostname: "127.0.0.1", port });
      const text = await closedWith(extra, 2000);
      extra.close();
      assert.ok(text !== undefined, `connection ${i} past the limit was held`);
      assert.match(text, /^HTTP\/1\.0 503 Service Unavailable\r\n/);
      assert.match(text, /\r\nRetry-After: 1\r\n/);
      assert.match(text, /Too many connections/);
    }
    assert.equal(front.refused, 200);
    assert.equal(front.connections, 4);
    assert.deepEqual(full, [1], "heard once a minute, not per connection");
    // One held connection goes: the next one is served.
    conns.pop()!.close();
    await new Promise((r) => setTimeout(r, 50));
    const next = await Deno.connect({ hostname: "127.0.0.1", port });
    await next.write(new TextEncoder().encode("GET /x HTTP/1.0\r\nHost: a\r\n\r\n"));
    const answer = await closedWith(next, 5000);
    next.close();
    assert.match(answer ?? "", /^HTTP\/1\.[01] 200 /);
  } finally {
    for (const c of conns) c.close();
    await front.shutdown();
    await server.shutdown();
  }
});

Deno.test("server.max_connections holds over the worker threads together", async () => {
  const served = await serveApp({ server: { max_connections: 16 }, cache: { dir: Deno.makeTempDirSync() } });
  const conns: Deno.Conn[] = [];
  try {
    let refused = 0;
    for (let i = 0; i < 60; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: served.port });
      const text = await closedWith(conn, 150);
      if (text === undefined) conns.push(conn);
      else {
        assert.match(text, /^HTTP\/1\.0 503 /);
        refused++;
        conn.close();
      }
    }
    // Each of the two threads holds its share, 8; the kernel may give one thread more than its share to refuse.
    assert.ok(conns.length <= 16, `${conns.length} connections held`);
    assert.equal(conns.length + refused, 60);
    await served.flush();
    assert.ok(served.lines.some((l) => l.includes("Too many connections open")), "logged");
  } finally {
    for (const c of conns) c.close();
    await served.stop();
  }
});
