import assert from "node:assert/strict";
import { DURATION_BUCKETS, methodLabel, Metrics, RequestTally } from "../../src/http/metrics.ts";
import { createApp } from "../../src/app.ts";
import { memoryLogger } from "../../src/log.ts";
import { tempDir, testConfig } from "../helpers.ts";
import { Counter, Gauge, Histogram, MAX_SERIES, Registry } from "../../src/http/prometheus.ts";

Deno.test("a tally sorts durations into buckets; take hands its figures over and starts afresh", () => {
  const tally = new RequestTally();
  tally.observe("/file/:h2/:hash", "GET", 200, 0.0004, 100);
  tally.observe("/file/:h2/:hash", "GET", 200, 0.002, 50);
  tally.observe("/file/:h2/:hash", "HEAD", 200, 99, 0);
  tally.edgeHit("file", 100);
  const taken = tally.take()!;
  assert.deepEqual(taken.requests.sort(), [["/file/:h2/:hash", "GET", 200, 2], ["/file/:h2/:hash", "HEAD", 200, 1]]);
  const [route, bytes, buckets, sum] = taken.routes[0];
  assert.equal(route, "/file/:h2/:hash");
  assert.equal(bytes, 150);
  assert.equal(buckets.length, DURATION_BUCKETS.length + 1);
  assert.equal(buckets[0], 1, "0.4 ms belongs in the 0.5 ms bucket");
  assert.equal(buckets[DURATION_BUCKETS.indexOf(0.0025)], 1);
  assert.equal(buckets[DURATION_BUCKETS.length], 1, "99 s belongs in +Inf");
  assert.equal(sum, 0.0004 + 0.002 + 99);
  assert.deepEqual(taken.edgeHits, [["file", 1, 100]]);
  assert.equal(tally.take(), undefined, "take did not start afresh");
});

Deno.test("figures tallied in another thread add up in /metrics, edge hits as cache hits", async () => {
  const metrics = new Metrics();
  metrics.observe("/index.json", "GET", 200, 0.003, 10);
  const worker = new RequestTally();
  worker.observe("/index.json", "GET", 200, 0.0001, 10);
  worker.observe("/index.json", "GET", 304, 0.0001, 0);
  worker.edgeHit("index", 10);
  worker.edgeHit("index", 0);
  metrics.add(structuredClone(worker.take()!));
  const text = (await metrics.render()).text;
  assert.match(text, /mipserver_http_requests_total\{route="\/index.json",method="GET",status="200"\} 2/);
  assert.match(text, /mipserver_http_requests_total\{route="\/index.json",method="GET",status="304"\} 1/);
  assert.match(text, /mipserver_http_response_bytes_total\{route="\/index.json"\} 20/);
  assert.match(text, /# TYPE mipserver_http_request_duration_seconds histogram/);
  assert.match(text, /mipserver_http_request_duration_seconds_bucket\{le="0.0005",route="\/index.json"\} 2/);
  assert.match(text, /mipserver_http_request_duration_seconds_bucket\{le="0.005",route="\/index.json"\} 3/);
  assert.match(text, /mipserver_http_request_duration_seconds_bucket\{le="\+Inf",route="\/index.json"\} 3/);
  assert.match(text, /mipserver_http_request_duration_seconds_count\{route="\/index.json"\} 3/);
  assert.match(text, /mipserver_http_request_duration_seconds_sum\{route="\/index.json"\} 0.0032/);
  assert.match(text, /mipserver_cache_requests_total\{kind="index",outcome="hit"\} 2/);
  assert.match(text, /mipserver_cache_bytes_total\{from="cache"\} 10/);
});

Deno.test("the method label comes from a closed set: 2,000 made-up methods and a 10 KB one add one OTHER series", async () => {
  const metrics = new Metrics();
  metrics.observe("unmatched", "GET", 404, 0.001, 9);
  for (let i = 0; i < 2000; i++) metrics.observe("unmatched", `M${i}X`, 404, 0.001, 9);
  metrics.observe("unmatched", "X".repeat(10_000), 404, 0.001, 9);
  // The same through a worker thread's tally, as the edge threads hand their figures over.
  const worker = new RequestTally();
  for (let i = 0; i < 2000; i++) worker.observe("unmatched", `W${i}`, 404, 0.001, 9);
  metrics.add(structuredClone(worker.take()!));
  const text = (await metrics.render()).text;
  const series = text.split("\n").filter((l) => l.startsWith("mipserver_http_requests_total{"));
  assert.deepEqual(series.sort(), [
    'mipserver_http_requests_total{route="unmatched",method="GET",status="404"} 1',
    'mipserver_http_requests_total{route="unmatched",method="OTHER",status="404"} 4001',
  ]);
  assert.ok(!text.includes("XXXXXXXX"), "the 10 KB method name is not kept");
  assert.ok(text.length < 10_000, `the page stays small (${text.length} characters)`);
});

Deno.test("every known method keeps its name; lower case and odd spellings are OTHER", () => {
  for (const m of ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"]) {
    assert.equal(methodLabel(m), m);
  }
  for (const m of ["get", "PROPFIND", "", "GET ", "G\nET"]) assert.equal(methodLabel(m), "OTHER");
});

Deno.test("the registry writes prom-client's text format: help, type, labels escaped, histograms cumulative", async () => {
  const registry = new Registry();
  const c = new Counter({
    name: "t_total",
    help: "A \\ counter\nwith two lines.",
    labelNames: ["a"],
    registers: [registry],
  });
  c.inc({ a: 'say "hi"\n' });
  c.inc({ a: 'say "hi"\n' }, 2);
  assert.throws(() => c.inc({ a: "x" }, -1), /only go up/);
  const g = new Gauge({ name: "t_gauge", help: "A gauge.", registers: [registry] });
  g.set(5);
  g.dec(2);
  const h = new Histogram({
    name: "t_seconds",
    help: "A histogram.",
    labelNames: ["h"],
    buckets: [1, 0.1],
    registers: [registry],
  });
  h.observe({ h: "x" }, 0.05);
  h.observe({ h: "x" }, 0.5);
  h.observe({ h: "x" }, 7);
  new Counter({
    name: "t_collected_total",
    help: "Filled at scrape time.",
    labelNames: ["k"],
    registers: [registry],
    collect() {
      this.reset();
      this.inc({ k: "v" }, 42);
    },
  });
  assert.throws(() => new Gauge({ name: "t_gauge", help: "again", registers: [registry] }), /already registered/);
  assert.equal(
    await registry.metrics(),
    [
      "# HELP t_total A \\\\ counter\\nwith two lines.",
      "# TYPE t_total counter",
      't_total{a="say \\"hi\\"\\n"} 3',
      "",
      "# HELP t_gauge A gauge.",
      "# TYPE t_gauge gauge",
      "t_gauge 3",
      "",
      "# HELP t_seconds A histogram.",
      "# TYPE t_seconds histogram",
      't_seconds_bucket{h="x",le="0.1"} 1',
      't_seconds_bucket{h="x",le="1"} 2',
      't_seconds_bucket{h="x",le="+Inf"} 3',
      't_seconds_sum{h="x"} 7.55',
      't_seconds_count{h="x"} 3',
      "",
      "# HELP t_collected_total Filled at scrape time.",
      "# TYPE t_collected_total counter",
      't_collected_total{k="v"} 42',
      "",
    ].join("\n"),
  );
});

Deno.test("a labelled metric keeps at most MAX_SERIES series; the rest count under OTHER", async () => {
  const registry = new Registry();
  const c = new Counter({ name: "t_hosts_total", help: "By host.", labelNames: ["host"], registers: [registry] });
  for (let i = 0; i < MAX_SERIES + 500; i++) c.inc({ host: `h${i}` });
  const lines = (await registry.metrics()).split("\n").filter((l) => l.startsWith("t_hosts_total{"));
  assert.equal(lines.length, MAX_SERIES + 1);
  assert.ok(lines.includes('t_hosts_total{host="OTHER"} 500'));
});

Deno.test("over HTTP: 2,000 made-up methods and a 10 KB method leave /metrics with a bounded set of series", async () => {
  const app = await createApp({ config: testConfig({ cache: { dir: tempDir() } }), logger: memoryLogger() });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (r, i) => app.handler(r, i));
  const base = `http://127.0.0.1:${server.addr.port}`;
  try {
    const send = async (method: string) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
      await conn.write(new TextEncoder().encode(`${method} /healthz HTTP/1.0\r\n\r\n`));
      const buf = new Uint8Array(256);
      while ((await conn.read(buf)) !== null);
      conn.close();
    };
    for (let i = 0; i < 2000; i += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, j) => send(`MADEUP${i + j}`)));
    }
    await send("M".repeat(10_000));
    const text = await (await fetch(`${base}/metrics`)).text();
    const series = text.split("\n").filter((l) => l.startsWith("mipserver_http_requests_total{"));
    assert.ok(series.length <= 3, series.join("\n"));
    assert.match(text, /mipserver_http_requests_total\{route="\/healthz",method="OTHER",status="\d+"\} (\d+)/);
    const other = series.filter((l) => l.includes('method="OTHER"')).map((l) => Number(l.split(" ")[1]));
    assert.ok(other.reduce((a, b) => a + b, 0) >= 2000, "the made-up methods were counted, as OTHER");
    assert.ok(!text.includes("MMMMMMMM") && !text.includes("MADEUP"));
  } finally {
    await server.shutdown();
    await app.idle();
  }
});

Deno.test("past the series cap, a series already counted keeps its route; only new ones count under OTHER", () => {
  const tally = new RequestTally();
  tally.observe("/kept", "GET", 200, 0.001, 1);
  for (let i = 0; i < MAX_SERIES + 10; i++) tally.observe(`/r${i}`, "GET", 200, 0.001, 1);
  tally.observe("/kept", "GET", 200, 0.001, 1);
  const taken = tally.take()!;
  const kept = taken.requests.find(([route]) => route === "/kept");
  assert.equal(kept?.[3], 2, "the second /kept request went to OTHER");
  assert.ok(taken.requests.some(([route]) => route === "OTHER"));
  assert.ok(taken.requests.length <= MAX_SERIES + 1);
});
