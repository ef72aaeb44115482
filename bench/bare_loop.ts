/**
 * The reference for `bench/gc.sh`: the least a Deno program can do per `Connection: close` request. It accepts,
 * reads once, writes a fixed answer of `BYTES` body bytes (the bench's `.mpy` file size) in one write and closes,
 * with nothing kept between connections. Whatever V8 collects or promotes here is Deno's own cost per connection.
 *
 * Usage: deno run --allow-net bench/bare_loop.ts PORT BYTES
 * @module
 */
const port = Number(Deno.args[0]);
const bytes = Number(Deno.args[1]);
if (!Number.isInteger(port) || !Number.isInteger(bytes) || bytes < 0) {
  console.error("Usage: deno run --allow-net bench/bare_loop.ts PORT BYTES");
  Deno.exit(2);
}
const head = new TextEncoder().encode(
  `HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: ${bytes}\r\nconnection: close\r\n\r\n`,
);
const answer = new Uint8Array(head.length + bytes).fill(0x4d);
answer.set(head);

async function serve(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(1024);
  try {
    if (await conn.read(buf)) await conn.write(answer);
  } catch {
    // The client went away: nothing to answer.
  }
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

for await (const conn of Deno.listen({ hostname: "127.0.0.1", port })) serve(conn);
