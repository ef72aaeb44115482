import assert from "node:assert/strict";
import { createApp } from "../../src/app.ts";
import { listen, type Listener, type ListenOptions } from "../../src/edge/listen.ts";
import { Metrics } from "../../src/http/metrics.ts";
import { RequestLog } from "../../src/http/request_log.ts";
import { Router } from "../../src/http/router.ts";
import { createHandler } from "../../src/http/server.ts";
import { memoryLogger } from "../../src/log.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { buildIndex } from "../fixtures/index_fixture.ts";
import { freePort, parseRaw, rawRequest, tempDir, testConfig } from "../helpers.ts";

/** A real app on a fake index, put on a free port by `listen` with `workers` edge threads. */
async function serve(workers: number, extra: Partial<ListenOptions> = {}) {
  workers = extra.workers ?? workers;
  const idx = await buildIndex();
  const up = new FakeUpstream(idx.root).start();
  const logger = memoryLogger();
  const config = testConfig({ cache: { dir: tempDir() }, upstreams: { index: up.url, retries: 0 } });
  const started: { listener?: Listener } = {};
  const app = await createApp({ config, logger, gather: () => started.listener?.flush() ?? Promise.resolve() });
  let handled = 0;
  const written: string[] = [];
  const port = freePort();
  const listener = started.listener = await listen({
    hostname: "127.0.0.1",
    port,
    workers,
    handler: (request, info, share) => {
      handled++;
      return app.handler(request, info, share);
    },
    logger,
    requestLog: app.requestLog,
    metrics: app.metrics,
    write: (lines) => written.push(...lines.split("\n")),
    log: { level: "info", format: "text", requestsKept: 100 },
    windowMs: 60_000,
    maxBytes: 1 << 20,
    ...extra,
  });
  return {
    app,
    up,
    port,
    listener,
    logger,
    written,
    get handled() {
      return handled;
    },
    url: (path: string) => `http://127.0.0.1:${port}${path}`,
    async close() {
      await listener.shutdown();
      await listener.finished;
      await app.idle();
      await up.stop();
    },
  };
}

Deno.test("edge worker threads answer repeated hits; every request is logged, kept and counted", async () => {
  const env = await serve(2);
  try {
    assert.equal(env.listener.workers, 2);
    const path = "/package/6/hello/latest.json";
    const bodies = new Set<string>();
    const n = 40;
    for (let i = 0; i < n; i++) {
      const res = await fetch(env.url(path));
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("content-type"), "application/json");
      bodies.add(await res.text());
    }
    assert.equal(bodies.size, 1);
    assert.ok(env.handled < n / 2, `the main thread handled ${env.handled} of ${n} requests`);
    assert.equal(env.up.count(path), 1);

    // A device's request: HTTP/1.0, Host without the port, read until close.
    const raw = parseRaw(await rawRequest(env.port, `GET ${path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n`));
    assert.match(raw.statusLine, /^HTTP\/1\.[01] 200/);
    assert.equal(raw.headers.get("content-length"), String(raw.body.length));
    assert.equal(raw.headers.get("transfer-encoding"), undefined);
    assert.equal(raw.body, [...bodies][0]);
    // Without waiting for the next batch: flush hands over what the threads answered so far.
    await env.listener.flush();
    assert.equal(env.app.requestLog.query({ path }).length, n + 1, "flush left requests behind");
  } finally {
    await env.close();
  }
  // Shut down: the workers' last batches have reached this thread.
  const total = 40 + 1;
  const kept = env.app.requestLog.query({ path: "/package/6/hello/latest.json" });
  assert.equal(kept.length, total, "requests missing from the request buffer");
  const logged = [...env.written, ...env.logger.lines].filter((l) =>
    l.includes("GET /package/6/hello/latest.json 200")
  );
  assert.equal(logged.length, total, "requests missing from the log");
  const metrics = (await env.app.metrics.render()).text;
  assert.match(
    metrics,
    new RegExp(
      `mipserver_http_requests_total\\{route="/package/:mpy/:name/:version.json",method="GET",status="200"\\} ${total}`,
    ),
  );
  const hits = Number(/mipserver_cache_requests_total\{kind="manifest",outcome="hit"\} (\d+)/.exec(metrics)?.[1]);
  assert.equal(hits, total - 1, "edge hits are not counted as cache hits");
});

Deno.test("a second server on the same port fails instead of sharing it", async () => {
  const env = await serve(2);
  try {
    await assert.rejects(
      () => listen({ ...optionsOf(env.port), workers: 2 }),
      (e: Error) => e instanceof Deno.errors.AddrInUse,
    );
  } finally {
    await env.close();
  }
});

function optionsOf(port: number): ListenOptions {
  const logger = memoryLogger();
  return {
    hostname: "127.0.0.1",
    port,
    workers: 0,
    handler: createHandler(new Router(), { logger, requestLog: new RequestLog(1), metrics: new Metrics() }),
    logger,
    requestLog: new RequestLog(1),
    metrics: new Metrics(),
    write: () => {},
    log: { level: "info", format: "text", requestsKept: 1 },
    windowMs: 1000,
    maxBytes: 1 << 20,
  };
}

Deno.test("when the worker threads cannot start, the main thread serves alone and says why", async () => {
  const env = await serve(2, { startTimeout: 0 });
  try {
    assert.equal(env.listener.workers, 0);
    assert.ok(env.logger.lines.some((l) => /Cannot serve from worker threads/.test(l)), env.logger.lines.join("\n"));
    const res = await fetch(env.url("/index.json"));
    assert.equal(res.status, 200);
    await res.body?.cancel();
  } finally {
    await env.close();
  }
});

/** A server with one route, `/held`, whose answers wait until `release()`; `arrived` resolves once one is waiting. */
async function serveHeld(extra: Partial<ListenOptions>) {
  const logger = memoryLogger();
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let started!: () => void;
  const arrived = new Promise<void>((resolve) => (started = resolve));
  const router = new Router().get("/held", async () => {
    started();
    await gate;
    return new Response("done");
  });
  const options = optionsOf(freePort());
  const listener = await listen({
    ...options,
    logger,
    handler: createHandler(router, { logger, requestLog: options.requestLog, metrics: options.metrics }),
    ...extra,
  });
  return { listener, logger, arrived, release, url: `http://127.0.0.1:${options.port}/held` };
}

Deno.test("shutdown lets a request under way in a worker thread finish", async () => {
  const { listener, arrived, release, url } = await serveHeld({ workers: 2 });
  const pending = fetch(url);
  await arrived;
  const stopped = listener.shutdown();
  let stoppedYet = false;
  stopped.then(() => (stoppedYet = true));
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(stoppedYet, false, "shutdown did not wait for the request under way");
  release();
  const res = await pending;
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "done");
  await stopped;
  await listener.finished;
  await assert.rejects(() => fetch(url), "still listening after shutdown");
});

Deno.test("shutdown stops worker threads whose requests do not finish in time, and says so", async () => {
  const { listener, logger, arrived, release, url } = await serveHeld({ workers: 1, stopTimeout: 200 });
  const pending = fetch(url).then((r) => r.text(), (e: Error) => e);
  await arrived;
  await listener.shutdown();
  await listener.finished;
  assert.ok(logger.lines.some((l) => /Worker threads still busy at shutdown/.test(l)), logger.lines.join("\n"));
  assert.ok(await pending instanceof Error, "the stuck request was answered after its thread was stopped");
  release();
});

Deno.test("a worker thread that fails is replaced, and serving goes on", async () => {
  const marker = `${tempDir()}/failed`;
  const module = new URL(`../fixtures/failing_edge_worker.ts?marker=${encodeURIComponent(marker)}`, import.meta.url);
  // Under load, type-checking the fixture module alone can take longer than the default 10 s start timeout.
  const env = await serve(1, { workerModule: module, startTimeout: 60_000 });
  try {
    assert.equal(env.listener.workers, 1);
    const failed = () => env.logger.lines.some((l) => /A worker thread failed; starting another/.test(l));
    for (let i = 0; i < 100 && !failed(); i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(failed(), `no failure logged:\n${env.logger.lines.join("\n")}`);
    assert.match(env.logger.lines.find((l) => /A worker thread failed/.test(l))!, /Deliberate failure/);
    let res: Response | undefined;
    for (let i = 0; i < 100 && !res; i++) {
      try {
        res = await fetch(env.url("/index.json"));
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    assert.equal(res?.status, 200, "nothing served after the replacement");
    await res?.body?.cancel();
    assert.ok(env.handled >= 1, "the replacement did not hand the request to the main thread");
  } finally {
    await env.close();
  }
});

Deno.test("/_/requests and /metrics include what the worker threads answered a moment ago", async () => {
  const env = await serve(2);
  try {
    const path = "/package/6/hello/latest.json";
    for (let i = 0; i < 5; i++) await (await fetch(env.url(path))).body?.cancel();
    const listed = await (await fetch(env.url(`/_/requests?path=${encodeURIComponent(path)}`))).json();
    assert.equal(listed.count, 5, JSON.stringify(listed));
    const metrics = await (await fetch(env.url("/metrics"))).text();
    assert.match(
      metrics,
      /mipserver_http_requests_total\{route="\/package\/:mpy\/:name\/:version.json",method="GET",status="200"\} 5/,
    );
  } finally {
    await env.close();
  }
});

Deno.test("hits the main thread's front records in batches keep their order among the other requests, and every read sees them", async () => {
  const env = await serve(0);
  try {
    const manifest = "/package/6/hello/latest.json";
    // A miss, then hits of the same manifest (batched), then a miss of another path (recorded at once).
    await (await fetch(env.url(manifest))).body?.cancel();
    for (let i = 0; i < 3; i++) await (await fetch(env.url(manifest))).body?.cancel();
    await (await fetch(env.url("/index.json"))).body?.cancel();
    const order = env.app.requestLog.query().map((e) => `${e.path} ${e.cache ?? "-"}`);
    assert.deepEqual(order.slice(0, 5), [
      "/index.json miss",
      `${manifest} hit`,
      `${manifest} hit`,
      `${manifest} hit`,
      `${manifest} miss`,
    ]);
    const lines = env.logger.lines.map((l) => JSON.parse(l)).filter((l) => /^GET /.test(l.msg)).map((l) => l.msg);
    assert.deepEqual(lines.slice(-2), ["GET /package/6/hello/latest.json 200", "GET /index.json 200"]);
    // More hits, read at once through /metrics and /_/requests (no wait for the batch's delay).
    for (let i = 0; i < 4; i++) await (await fetch(env.url(manifest))).body?.cancel();
    const metrics = await (await fetch(env.url("/metrics"))).text();
    assert.match(
      metrics,
      /mipserver_http_requests_total\{route="\/package\/:mpy\/:name\/:version.json",method="GET",status="200"\} 8/,
    );
    const listed = await (await fetch(env.url(`/_/requests?path=${encodeURIComponent(manifest)}`))).json();
    assert.equal(listed.count, 8);
  } finally {
    await env.close();
  }
});

Deno.test("methods a Request cannot carry (TRACE, TRACK) get the router's answer through a worker thread", async () => {
  const env = await serve(2);
  try {
    for (const method of ["TRACE", "TRACK"]) {
      const raw = parseRaw(await rawRequest(env.port, `${method} /index.json HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n`));
      assert.match(raw.statusLine, / 405 /, `${method}: ${raw.statusLine}`);
      assert.equal(raw.headers.get("allow"), "GET, HEAD");
    }
    const unknown = parseRaw(await rawRequest(env.port, "TRACE /nothing-here HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"));
    assert.match(unknown.statusLine, / 404 /);
    assert.ok(!env.logger.lines.some((l) => /"level":"error"/.test(l)), env.logger.lines.join("\n"));
    assert.equal(env.app.requestLog.query({ status: 405 }).length, 2);
  } finally {
    await env.close();
  }
});

Deno.test("the main thread's front and worker threads give the same answers as Deno.serve, header for header: odd Hosts, hostile paths, odd requests", async () => {
  const h = "Host: gw.lan\r\n";
  const requests = [
    ...["a b", "x:99999", "[::1", "gw.lan", "GW.LAN:18891", "a/b", "gw.lan "].flatMap((host) =>
      ["/index.json", "/package/6/hello/latest.json"].map((path) => `GET ${path} HTTP/1.0\r\nHost: ${host}\r\n\r\n`)
    ),
    ...[
      "/file/../index.json",
      "/file/%2e%2e/index.json",
      "/package/6/%2e%2e/latest.json",
      "/package/6/a%2fb/latest.json",
      "/package/6/hello/..%2f..%2fetc.json",
      "/./index.json",
      "//index.json",
      "/index.json?x=../..",
      "/file/ab/abcd%00",
      `/package/6/${"x".repeat(5000)}/latest.json`,
      "/package/6/hello/latest.json#frag",
      "/package/py/hello/latest.json",
      "/nothing-here",
    ].map((path) => `GET ${path} HTTP/1.0\r\n${h}\r\n`),
    `HEAD /index.json HTTP/1.0\r\n${h}\r\n`,
    `HEAD /package/6/hello/latest.json HTTP/1.1\r\n${h}Connection: close\r\n\r\n`,
    `GET /index.json HTTP/1.0\r\n${h}If-None-Match: *\r\n\r\n`,
    `GET /package/6/hello/latest.json HTTP/1.1\r\n${h}If-None-Match: "nope"\r\nIf-None-Match: *\r\nConnection: close\r\n\r\n`,
    `POST /index.json HTTP/1.0\r\n${h}Content-Length: 3\r\n\r\nabc`,
    `POST /index.json HTTP/1.1\r\n${h}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n`,
    `DELETE /file/ab/abcd HTTP/1.0\r\n${h}\r\n`,
    // Keep-alive and pipelining: several answers on one connection, the last one closing it.
    `GET /index.json HTTP/1.1\r\n${h}\r\nHEAD /index.json HTTP/1.1\r\n${h}\r\nGET /nothing HTTP/1.1\r\n${h}Connection: close\r\n\r\n`,
    `GET /index.json HTTP/1.0\r\n${h}Connection: keep-alive\r\n\r\nGET /package/6/hello/latest.json HTTP/1.0\r\n${h}\r\n`,
    // A plain request, then one that is not: the connection is handed over halfway.
    `GET /index.json HTTP/1.1\r\n${h}\r\nPOST /index.json HTTP/1.1\r\n${h}Content-Length: 2\r\nConnection: close\r\n\r\nhi`,
    // Requests the worker threads do not read themselves.
    `get /index.json HTTP/1.0\r\n${h}\r\n`,
    `GET http://gw.lan/index.json HTTP/1.1\r\n${h}Connection: close\r\n\r\n`,
    `GET /index.json HTTP/1.0\n${h.replace("\r", "")}\n`,
    `GET /index.json HTTP/1.0\r\n${h}${h}\r\n`,
    `GET /index.json HTTP/1.0\r\n\r\n`,
    `GET /index.json HTTP/1.1\r\n${h}Expect: 100-continue\r\nConnection: close\r\n\r\n`,
    `GET /index.json HTTP/1.1\r\n${h}Content-Length: 0\r\nConnection: close\r\n\r\n`,
    `GET /index.json HTTP/1.0\r\n${h}X-Folded: a\r\n  b\r\n\r\n`,
    `GET /index.json HTTP/1.0\r\n${h}X-Name: caf\u00e9\r\n\r\n`,
    `GET /index.json HTTP/1.0\r\n${h}X-Long: ${"y".repeat(10_000)}\r\n\r\n`,
    `GET /index.json HTTP/2.0\r\n${h}\r\n`,
    `\r\nGET /index.json HTTP/1.0\r\n${h}\r\n`,
  ];
  // Everything the client reads, but the Date lines, which tell the time, and the order of header lines, which
  // carries no meaning (a forwarded answer's headers come back in Headers order, sorted).
  const normal = (raw: string) =>
    raw.replace(/^date: .*\r\n/gim, "").replace(
      /(HTTP\/1\.[01] \d{3}[^\r]*\r\n)((?:[^\r\n]+\r\n)*)\r\n/g,
      (_, status: string, fields: string) =>
        `${status}${fields.split("\r\n").filter(Boolean).sort().join("\r\n")}\r\n\r\n`,
    );
  const answers = async (extra: Partial<ListenOptions>) => {
    const env = await serve(0, extra);
    try {
      const out: string[] = [];
      for (const request of requests) out.push(normal(await rawRequest(env.port, request)));
      assert.ok(!env.logger.lines.some((l) => /"level":"error"/.test(l)), env.logger.lines.join("\n"));
      return out;
    } finally {
      await env.close();
    }
  };
  // The reference: Deno.serve alone, the edge in front. Then the main thread's own front, then two threads.
  const alone = await answers({ front: false });
  const differ: string[] = [];
  for (const [name, extra] of [["main front", {}], ["threads", { workers: 2 }]] as const) {
    const got = await answers(extra);
    differ.push(...requests.flatMap((r, i) =>
      got[i] === alone[i] ? [] : [
        `${JSON.stringify(r.slice(0, 80))}:\n  Deno.serve: ${JSON.stringify(alone[i].slice(0, 300))}\n  ${name}: ${
          JSON.stringify(got[i].slice(0, 300))
        }`,
      ]
    ));
  }
  assert.deepEqual(differ, []);
  const statuses = alone.map((a) => a.split("\r\n")[0]);
  assert.ok(statuses.some((s) => / 400 /.test(s)), `an invalid Host was not refused: ${statuses.join(", ")}`);
  assert.ok(statuses.some((s) => / 200 /.test(s)), `nothing was served: ${statuses.join(", ")}`);
});

/** Sends `text` a byte every `everyMs` until the connection fails. */
async function drip(conn: Deno.Conn, text: string, everyMs: number): Promise<void> {
  for (const byte of new TextEncoder().encode(text)) {
    await new Promise((r) => setTimeout(r, everyMs));
    try {
      await conn.write(new Uint8Array([byte]));
    } catch {
      return;
    }
  }
}

/** Whether the server closes `conn` within `ms`, after reading whatever it sends first. */
async function closedWithin(conn: Deno.Conn, ms: number): Promise<boolean> {
  const buf = new Uint8Array(65536);
  const deadline = Date.now() + ms;
  for (;;) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((resolve) => (timer = setTimeout(() => resolve("late"), deadline - Date.now())));
    const read = conn.read(buf).catch(() => null);
    const n = await Promise.race([read, late]);
    clearTimeout(timer);
    if (n === "late") return false;
    if (n === null) return true;
  }
}

for (const [mode, workers] of [["the main thread", 0], ["worker threads", 2]] as const) {
  Deno.test(`slowloris connections to ${mode} are closed on every path: read here or handed over`, async () => {
    const env = await serve(workers, { headTimeoutMs: 400, idleTimeoutMs: 400 });
    const h = "Host: gw.lan\r\n";
    const pad = `X-Pad: ${"p".repeat(200)}\r\n\r\n`;
    // What each connection sends at once, then a byte at a time.
    const cases: [string, string, string][] = [
      ["nothing", "", ""],
      ["a plain head, slowly", "", `GET /index.json HTTP/1.1\r\n${h}${pad}`],
      ["a non-ASCII byte", `GET /index.json HTTP/1.1\r\nX-Name: caf\u00e9\r\n`, `${h}${pad}`],
      ["a lower-case method", `get /index.json HTTP/1.1\r\n${h}`, pad],
      ["a body header", `POST /index.json HTTP/1.1\r\n${h}Content-Length: 300\r\n`, pad],
      ["a head over 8 KiB", `GET /index.json HTTP/1.1\r\n${h}X-Long: ${"y".repeat(9000)}`, `\r\n${pad}`],
      ["idle after a handed-over answer", `get /index.json HTTP/1.1\r\n${h}\r\n`, ""],
      ["idle after an answer", `GET /index.json HTTP/1.1\r\n${h}\r\n`, ""],
    ];
    const conns: Deno.Conn[] = [];
    try {
      const dripping: Promise<void>[] = [];
      for (const [, first, rest] of cases) {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: env.port });
        conns.push(conn);
        if (first) await conn.write(new TextEncoder().encode(first));
        dripping.push(drip(conn, rest, 50));
      }
      const closed = await Promise.all(conns.map((conn) => closedWithin(conn, 5000)));
      assert.deepEqual(cases.filter((_, i) => !closed[i]).map(([name]) => name), [], "connections left open");
      for (const conn of conns) conn.close();
      await Promise.all(dripping);
    } finally {
      for (const conn of conns) {
        try {
          conn.close();
        } catch { /* closed */ }
      }
      await env.close();
    }
  });
}
