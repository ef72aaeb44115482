import assert from "node:assert/strict";
import { Front } from "../../src/edge/front.ts";
import { type Answer, encodeFields, type PlainRequest } from "../../src/edge/h1.ts";
import { Client } from "./client.ts";

const enc = new TextEncoder();

function textAnswer(status: number, text: string): Answer {
  const body = enc.encode(text);
  return { status, fields: encodeFields([["content-type", "text/plain"]], body.length), body };
}

/**
 * A front on a free port whose plain answers say which request they answer, and a Deno.serve on loopback that
 * takes what the front hands over and says so, with the client the front says is behind the relay.
 */
function start(
  options: {
    answer?: (r: PlainRequest) => Answer | Promise<Answer>;
    headTimeoutMs?: number;
    idleTimeoutMs?: number;
    onError?: (e: unknown) => void;
  } = {},
) {
  const seen: PlainRequest[] = [];
  const handedOver: { method: string; body: string; client?: Deno.NetAddr }[] = [];
  const ref: { front?: Front } = {};
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request, info) => {
    const client = ref.front?.clientOf(info.remoteAddr.port);
    handedOver.push({ method: request.method, body: await request.text().catch(() => ""), client });
    return new Response(`handed over ${request.method}`);
  });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const front = ref.front = new Front({
    listener,
    handover: server.addr as Deno.NetAddr,
    headTimeoutMs: options.headTimeoutMs,
    idleTimeoutMs: options.idleTimeoutMs,
    onError: options.onError,
    answer: (request) => {
      seen.push(request);
      return options.answer?.(request) ?? textAnswer(200, `${request.method} ${request.target}`);
    },
  });
  const port = (listener.addr as Deno.NetAddr).port;
  return {
    front,
    seen,
    handedOver,
    port,
    async stop() {
      await Promise.all([front.shutdown(), server.shutdown()]);
    },
  };
}

const H = "Host: gw.lan\r\n";

Deno.test("front: one keep-alive connection carries several requests, each answered in turn", async () => {
  const env = start();
  const client = await Client.open(env.port);
  try {
    for (const target of ["/a", "/b?x=1", "/c"]) {
      await client.send(`GET ${target} HTTP/1.1\r\n${H}\r\n`);
      const res = await client.response();
      assert.match(res!.head, /^HTTP\/1\.1 200 OK\r\n/);
      assert.match(res!.head, /\r\ndate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT/);
      assert.equal(res!.body, `GET ${target}`);
    }
    assert.deepEqual(env.seen.map((r) => r.target), ["/a", "/b?x=1", "/c"]);
    assert.equal(env.handedOver.length, 0);
  } finally {
    client.close();
    await env.stop();
  }
});

Deno.test("front: pipelined requests in one write are answered in order; Connection: close ends it", async () => {
  const env = start();
  const client = await Client.open(env.port);
  try {
    await client.send(
      `GET /1 HTTP/1.1\r\n${H}\r\nHEAD /2 HTTP/1.1\r\n${H}\r\nGET /3 HTTP/1.1\r\n${H}Connection: close\r\n\r\n`,
    );
    assert.equal((await client.response())!.body, "GET /1");
    const head = await client.response(true);
    assert.match(head!.head, /content-length: 7/);
    const last = await client.response();
    assert.equal(last!.body, "GET /3");
    assert.match(last!.head, /\r\nconnection: close/);
    assert.ok(await client.closedWithin(2000), "the connection stayed open after Connection: close");
  } finally {
    client.close();
    await env.stop();
  }
});

Deno.test("front: an HTTP/1.0 request (a device's) is answered and the connection closed; a head may arrive in pieces", async () => {
  const env = start();
  const client = await Client.open(env.port);
  try {
    for (const ch of `GET /file/ab/abcd HTTP/1.0\r\n${H}\r\n`) {
      await client.send(ch);
      await new Promise((r) => setTimeout(r, 1));
    }
    const res = await client.response();
    assert.match(res!.head, /^HTTP\/1\.0 200 OK\r\n/);
    assert.doesNotMatch(res!.head, /connection:/);
    assert.equal(res!.body, "GET /file/ab/abcd");
    assert.ok(await client.closedWithin(2000), "the connection stayed open after an HTTP/1.0 answer");
  } finally {
    client.close();
    await env.stop();
  }
});

Deno.test("front: other requests go to the handover server with their bodies, from the client they came from", async () => {
  const env = start();
  const client = await Client.open(env.port);
  try {
    // A plain request first: the front answers it; then a POST: the rest of the connection is handed over.
    await client.send(`GET /first HTTP/1.1\r\n${H}\r\nPOST /x HTTP/1.1\r\n${H}Content-Length: 5\r\n\r\nhello`);
    assert.equal((await client.response())!.body, "GET /first");
    assert.equal((await client.response())!.body, "handed over POST");
    // Still the same connection, now served by the handover server, plain requests and all.
    await client.send(`GET /after HTTP/1.1\r\n${H}Connection: close\r\n\r\n`);
    assert.equal((await client.response())!.body, "handed over GET");
    assert.ok(await client.closedWithin(2000));
    assert.deepEqual(env.seen.map((r) => r.target), ["/first"]);
    assert.deepEqual(env.handedOver.map((h) => [h.method, h.body]), [["POST", "hello"], ["GET", ""]]);
    const mine = client.conn.localAddr as Deno.NetAddr;
    for (const h of env.handedOver) assert.deepEqual([h.client?.hostname, h.client?.port], [mine.hostname, mine.port]);
    assert.equal(env.front.clientOf(mine.port), undefined, "a relay's client outlived its connection");
  } finally {
    client.close();
    await env.stop();
  }
});

Deno.test("front: a handed-over connection ends when its client goes, whether it closes or resets", async () => {
  const env = start();
  const settled = async () => {
    for (let i = 0; i < 100 && env.front.connections > 0; i++) await new Promise((r) => setTimeout(r, 20));
    return env.front.connections;
  };
  try {
    // Closes: the client sends a POST, reads its answer and closes.
    const closing = await Client.open(env.port);
    await closing.send(`POST /a HTTP/1.1\r\n${H}Content-Length: 1\r\n\r\nx`);
    assert.equal((await closing.response())!.body, "handed over POST");
    closing.close();
    assert.equal(await settled(), 0, "a relay outlived a client that closed");
    // Resets: the client sends a POST and resets the connection (SO_LINGER 0, which Deno cannot set; python can).
    const reset = new Deno.Command("python3", {
      args: [
        "-c",
        `import socket, struct, time
s = socket.create_connection(("127.0.0.1", ${env.port}))
s.sendall(b"POST /b HTTP/1.1\\r\\nHost: gw.lan\\r\\nContent-Length: 1\\r\\n\\r\\nx")
time.sleep(0.3)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()`,
      ],
    });
    const { code, stderr } = await reset.output();
    assert.equal(code, 0, new TextDecoder().decode(stderr));
    assert.equal(env.handedOver.at(-1)?.body, "x", "the POST was not handed over");
    assert.equal(await settled(), 0, "a relay outlived a client that reset");
  } finally {
    await env.stop();
  }
});

Deno.test("front: a head that stops arriving is dropped after the head timeout; idle connections are not", async () => {
  const env = start({ headTimeoutMs: 200 });
  const partial = await Client.open(env.port);
  const idle = await Client.open(env.port);
  try {
    await partial.send(`GET /slow HTTP/1.1\r\n${H}`);
    await idle.send(`GET /ok HTTP/1.1\r\n${H}\r\n`);
    assert.equal((await idle.response())!.body, "GET /ok");
    assert.ok(await partial.closedWithin(3000), "a half-sent head held its connection");
    assert.equal(await idle.closedWithin(400), false, "an idle keep-alive connection was dropped");
    assert.equal(env.seen.length, 1);
  } finally {
    partial.close();
    idle.close();
    await env.stop();
  }
});

/** Sends `text` a byte every `everyMs` until the connection fails; resolves when it stops. */
async function drip(client: Client, text: string, everyMs: number): Promise<void> {
  for (const ch of text) {
    await new Promise((r) => setTimeout(r, everyMs));
    try {
      await client.send(ch);
    } catch {
      return;
    }
  }
}

Deno.test("front: a head sent a byte at a time is dropped at the head timeout, though each byte comes in time", async () => {
  const env = start({ headTimeoutMs: 300 });
  const slow = await Client.open(env.port);
  try {
    const dripping = drip(slow, `GET /slow HTTP/1.1\r\n${H}X-Pad: ${"p".repeat(100)}\r\n\r\n`, 50);
    assert.ok(await slow.closedWithin(3000), "a head trickling in held its connection past the head timeout");
    slow.close();
    await dripping;
    assert.equal(env.seen.length, 0);
  } finally {
    slow.close();
    await env.stop();
  }
});

Deno.test("front: a connection that sends nothing is dropped at the head timeout", async () => {
  const env = start({ headTimeoutMs: 200 });
  const silent = await Client.open(env.port);
  try {
    assert.ok(await silent.closedWithin(3000), "a silent connection stayed open");
    assert.equal(env.front.connections, 0);
  } finally {
    silent.close();
    await env.stop();
  }
});

Deno.test("front: an idle keep-alive connection is closed after the idle timeout; a busy one stays", async () => {
  const env = start({ idleTimeoutMs: 300 });
  const idle = await Client.open(env.port);
  const busy = await Client.open(env.port);
  try {
    await idle.send(`GET /a HTTP/1.1\r\n${H}\r\n`);
    assert.equal((await idle.response())!.body, "GET /a");
    for (let i = 0; i < 8; i++) {
      await busy.send(`GET /b${i} HTTP/1.1\r\n${H}\r\n`);
      assert.equal((await busy.response())!.body, `GET /b${i}`, "a connection in use was closed");
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(await idle.closedWithin(3000), "an idle keep-alive connection stayed open");
  } finally {
    idle.close();
    busy.close();
    await env.stop();
  }
});

Deno.test("front: handed-over connections keep both deadlines: a slow head, a slow body, an idle connection", async () => {
  const env = start({ headTimeoutMs: 300, idleTimeoutMs: 300 });
  const clients: Client[] = [];
  const open = async () => {
    const c = await Client.open(env.port);
    clients.push(c);
    return c;
  };
  try {
    // A non-ASCII byte hands the head over before it ends; the rest trickles in.
    const utf8 = await open();
    await utf8.send(`GET /x HTTP/1.1\r\nX-Name: caf\u00e9\r\n`);
    const a = drip(utf8, `${H}X-Pad: ${"p".repeat(100)}\r\n\r\n`, 50);
    // A head over 8 KiB is handed over unfinished.
    const long = await open();
    await long.send(`GET /x HTTP/1.1\r\n${H}X-Long: ${"y".repeat(9000)}`);
    const b = drip(long, `${"y".repeat(100)}\r\n\r\n`, 50);
    // A body announced and sent slowly, to a server that reads it.
    const body = await open();
    await body.send(`POST /x HTTP/1.1\r\n${H}Content-Length: 100\r\n\r\n`);
    const c = drip(body, "z".repeat(100), 50);
    // A lower-case method, answered; then the connection idles.
    const idle = await open();
    await idle.send(`get /x HTTP/1.1\r\n${H}\r\n`);
    assert.equal((await idle.response())!.body, "handed over get");
    // A lower-case method answered; then the next head trickles in.
    const next = await open();
    await next.send(`get /x HTTP/1.1\r\n${H}\r\n`);
    assert.equal((await next.response())!.body, "handed over get");
    const d = drip(next, `get /y HTTP/1.1\r\n${H}X-Pad: ${"p".repeat(100)}\r\n\r\n`, 50);
    const names = ["non-ASCII head", "long head", "slow body", "idle after an answer", "slow second head"];
    const closed = await Promise.all(clients.map((client) => client.closedWithin(4000)));
    assert.deepEqual(
      names.filter((_, i) => !closed[i]),
      [],
      "handed-over connections outlived their deadlines",
    );
    for (const client of clients) client.close();
    await Promise.all([a, b, c, d]);
    assert.equal(env.front.connections, 0);
  } finally {
    for (const client of clients) client.close();
    await env.stop();
  }
});

Deno.test("front: a failed answer gets a 500, is reported, closes its connection, and the front goes on", async () => {
  const errors: unknown[] = [];
  const env = start({
    answer: (r) => {
      if (r.target === "/boom") throw new Error("Deliberate failure");
      return textAnswer(200, "fine");
    },
    onError: (e) => errors.push(e),
  });
  const bad = await Client.open(env.port);
  const good = await Client.open(env.port);
  try {
    await bad.send(`GET /boom HTTP/1.1\r\n${H}\r\nGET /next HTTP/1.1\r\n${H}\r\n`);
    const res = await bad.response();
    assert.match(res!.head, /^HTTP\/1\.1 500 Internal Server Error\r\n/);
    assert.match(res!.head, /\r\nconnection: close\r?$/m);
    assert.equal(res!.body, "Internal server error\n");
    assert.ok(await bad.closedWithin(2000), "the connection stayed open after a failed answer");
    assert.deepEqual(errors.map((e) => (e as Error).message), ["Deliberate failure"]);
    await good.send(`GET /x HTTP/1.0\r\n${H}\r\n`);
    assert.equal((await good.response())!.body, "fine");
  } finally {
    bad.close();
    good.close();
    await env.stop();
  }
});

Deno.test("front: a large body goes out whole", async () => {
  const big = "0123456789abcdef".repeat(256 * 1024); // 4 MiB, more than one write takes
  const env = start({ answer: () => textAnswer(200, big) });
  const client = await Client.open(env.port);
  try {
    await client.send(`GET /big HTTP/1.0\r\n${H}\r\n`);
    const res = await client.response();
    assert.equal(res!.body.length, big.length);
    assert.equal(res!.body, big);
  } finally {
    client.close();
    await env.stop();
  }
});

/** A front with a 300 ms idle timeout that answers 16 MiB (more than the socket buffers hold), and a client for it. */
async function largeAnswerClient() {
  const big = "0123456789abcdef".repeat(1024 * 1024);
  const env = start({ answer: () => textAnswer(200, big), idleTimeoutMs: 300 });
  return { env, client: await Client.open(env.port) };
}

Deno.test("front: a client that stops reading a large answer is disconnected after the idle timeout", async () => {
  const { env, client } = await largeAnswerClient();
  try {
    await client.send(`GET /big HTTP/1.0\r\n${H}\r\n`);
    // The client reads nothing: the answer's writes stall.
    let open = env.front.connections;
    for (let i = 0; i < 60 && open > 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      open = env.front.connections;
    }
    assert.equal(open, 0, "a client that reads nothing held its connection past the idle timeout");
  } finally {
    client.close();
    await env.stop();
  }
});

Deno.test("front: a client that stops reading an answer under way cannot hold a shutdown past the idle timeout", async () => {
  const { env, client } = await largeAnswerClient();
  try {
    await client.send(`GET /big HTTP/1.0\r\n${H}\r\n`);
    for (let i = 0; i < 50 && env.front.connections === 0; i++) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 50)); // the answer's writes are under way, and stall
    let stopped = false;
    const stopping = env.stop().then(() => (stopped = true));
    for (let i = 0; i < 50 && !stopped; i++) await new Promise((r) => setTimeout(r, 100));
    assert.ok(stopped, "shutdown still waited for a client that reads nothing, 5 s after its 300 ms idle timeout");
    await stopping;
  } finally {
    client.close();
  }
});

Deno.test("front: shutdown closes idle connections, lets an answer under way finish, then stops listening", async () => {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let arrived!: () => void;
  const waiting = new Promise<void>((resolve) => (arrived = resolve));
  const env = start({
    answer: async (r) => {
      if (r.target === "/held") {
        arrived();
        await gate;
      }
      return textAnswer(200, `done ${r.target}`);
    },
  });
  const idle = await Client.open(env.port);
  const busy = await Client.open(env.port);
  try {
    await idle.send(`GET /first HTTP/1.1\r\n${H}\r\n`);
    assert.equal((await idle.response())!.body, "done /first");
    await busy.send(`GET /held HTTP/1.1\r\n${H}\r\n`);
    await waiting;
    let stopped = false;
    const stopping = env.stop().then(() => (stopped = true));
    assert.ok(await idle.closedWithin(2000), "an idle connection stayed open through shutdown");
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(stopped, false, "shutdown did not wait for the answer under way");
    release();
    const res = await busy.response();
    assert.equal(res!.body, "done /held");
    assert.ok(await busy.closedWithin(2000), "the connection stayed open after its last answer");
    await stopping;
    await assert.rejects(() => Client.open(env.port), "still listening after shutdown");
  } finally {
    idle.close();
    busy.close();
  }
});
