import assert from "node:assert/strict";
import { Metrics } from "../../src/http/metrics.ts";
import { RequestLog } from "../../src/http/request_log.ts";
import { HttpError } from "../../src/http/responses.ts";
import { Router } from "../../src/http/router.ts";
import { createHandler } from "../../src/http/server.ts";
import { memoryLogger } from "../../src/log.ts";
import { parseRaw, rawRequest } from "../helpers.ts";

function setup() {
  const logger = memoryLogger();
  const requestLog = new RequestLog(10);
  const router = new Router()
    .get("/boom", () => {
      throw new TypeError("kaboom at depth");
    })
    .get("/teapot", () => {
      throw new HttpError(418, "Short and stout");
    })
    .get("/stream", () =>
      new Response(
        new ReadableStream({
          start(c) {
            c.enqueue(new TextEncoder().encode("part one, "));
            c.enqueue(new TextEncoder().encode("part two"));
            c.close();
          },
        }),
      ))
    .get("/big", () => new Response("x".repeat(200_000)));
  const handler = createHandler(router, { logger, requestLog, metrics: new Metrics() });
  return { handler, logger, requestLog };
}

Deno.test("an unexpected error is a 500 with an error id that is logged, and serving goes on", async () => {
  const { handler, logger, requestLog } = setup();
  const res = await handler(new Request("http://gw/boom"));
  assert.equal(res.status, 500);
  const text = await res.text();
  const id = /error id ([0-9a-f]{8})/.exec(text)?.[1];
  assert.ok(id, text);
  assert.ok(!text.includes("kaboom"), "internal details leaked to the client");
  const logged = logger.lines.map((l) => JSON.parse(l)).find((l) => l.level === "error");
  assert.equal(logged.error_id, id);
  assert.match(logged.error, /kaboom at depth/);
  assert.equal(requestLog.query()[0].error_id, id);
  const next = await handler(new Request("http://gw/stream"));
  assert.equal(next.status, 200);
  await next.body?.cancel();
});

Deno.test("an HttpError becomes its status with its message", async () => {
  const { handler } = setup();
  const res = await handler(new Request("http://gw/teapot"));
  assert.equal(res.status, 418);
  assert.equal(await res.text(), "Short and stout\n");
  assert.equal(res.headers.get("content-length"), "16");
});

Deno.test("a streamed body is buffered so it carries a Content-Length", async () => {
  const { handler } = setup();
  const res = await handler(new Request("http://gw/stream"));
  assert.equal(res.headers.get("content-length"), "18");
  assert.equal(await res.text(), "part one, part two");
});

Deno.test("over a real socket, HTTP/1.0 requests get Content-Length bodies, never chunked", async () => {
  const { handler } = setup();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (r, info) => handler(r, info));
  try {
    for (const path of ["/stream", "/big", "/teapot", "/boom", "/nowhere"]) {
      const raw = await rawRequest(server.addr.port, `GET ${path} HTTP/1.0\r\nHost: gw\r\n\r\n`);
      const { statusLine, headers, body } = parseRaw(raw);
      assert.match(statusLine, /^HTTP\/1\.[01] \d{3}/, path);
      assert.ok(!headers.has("transfer-encoding"), `${path} was chunked`);
      assert.equal(Number(headers.get("content-length")), new TextEncoder().encode(body).length, path);
    }
    const big = parseRaw(await rawRequest(server.addr.port, "GET /big HTTP/1.0\r\nHost: gw\r\n\r\n"));
    assert.equal(big.body.length, 200_000);
    const head = parseRaw(await rawRequest(server.addr.port, "HEAD /stream HTTP/1.0\r\nHost: gw\r\n\r\n"));
    assert.equal(head.headers.get("content-length"), "18");
    assert.equal(head.body, "");
    const http11 = parseRaw(
      await rawRequest(server.addr.port, "GET /stream HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"),
    );
    assert.ok(!http11.headers.has("transfer-encoding"), "HTTP/1.1 response was chunked");
    assert.equal(http11.body, "part one, part two");
  } finally {
    await server.shutdown();
  }
});
