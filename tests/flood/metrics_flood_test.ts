/**
 * Flood suite (see `flood.ts`): metric label sets. Labels come from closed sets, and as a backstop every metric keeps
 * at most `MAX_SERIES` label sets (further ones count under `OTHER`); the one label an outsider can vary, the upstream
 * `host` (a `policy.allow_hosts` entry without a port allows every port), is flooded over HTTP.
 */
import assert from "node:assert/strict";
import { createApp } from "../../src/app.ts";
import { HTTP_METHODS, RequestTally } from "../../src/http/metrics.ts";
import { Counter, Gauge, Histogram, MAX_SERIES, Registry } from "../../src/http/prometheus.ts";
import { memoryLogger } from "../../src/log.ts";
import { freePort, tempDir, testConfig } from "../helpers.ts";
import { assertAtMost, flood } from "./flood.ts";

/** The number of label sets of `name` in an exposition text (a histogram's by its `_count` lines). */
function seriesOf(text: string, name: string): number {
  return text.split("\n").filter((l) => l.startsWith(`${name}{`)).length;
}

Deno.test("metric labels: 20,000 unique values leave every kind of metric with MAX_SERIES + 1 label sets", async () => {
  const registry = new Registry();
  const counter = new Counter({ name: "f_c", help: "c", labelNames: ["k"], registers: [registry] });
  const gauge = new Gauge({ name: "f_g", help: "g", labelNames: ["k", "j"], registers: [registry] });
  const histogram = new Histogram({ name: "f_h", help: "h", labelNames: ["k"], buckets: [1], registers: [registry] });
  for (let i = 0; i < 20_000; i++) {
    counter.inc({ k: `v${i}` });
    gauge.set({ k: `v${i}`, j: `w${i}` }, i);
    histogram.observe({ k: `v${i}` }, 0.5);
  }
  const text = await registry.metrics();
  assert.equal(seriesOf(text, "f_c"), MAX_SERIES + 1);
  assert.equal(seriesOf(text, "f_g"), MAX_SERIES + 1);
  assert.equal(seriesOf(text, "f_h_count"), MAX_SERIES + 1);
  assert.match(text, /^f_c\{k="OTHER"\} 19000$/m, "the values past the cap were not counted under OTHER");
});

Deno.test("metric labels: a request tally flooded with 20,000 routes keeps a bounded set of rows", () => {
  const tally = new RequestTally();
  for (let i = 0; i < 20_000; i++) {
    tally.observe(`/route/${i}`, `M${i}`, 100 + (i % 600), 0.001, 1);
    tally.edgeHit("file", 1);
  }
  const { requests, routes, edgeHits } = tally.snapshot();
  // Past the cap only OTHER rows are added, one per method label and status label: closed sets.
  assertAtMost(requests.length, MAX_SERIES + (HTTP_METHODS.size + 1) * 501, "request rows");
  assertAtMost(routes.length, MAX_SERIES + 1, "route rows");
  assert.equal(edgeHits.length, 1);
});

Deno.test("metric labels over HTTP: 1,200 unique upstream ports on an allowed host are one host label", async () => {
  // Every port of 127.0.0.1 may be asked for; nothing listens on most of them, so each attempt fails at once.
  const config = testConfig({
    cache: { dir: tempDir() },
    upstreams: { index: "http://127.0.0.1:9/none", retries: 0, breaker: { failures: 0 } },
    policy: { allow_hosts: ["127.0.0.1"] },
  });
  const app = await createApp({ config, logger: memoryLogger("error") });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (r, i) => app.handler(r, i));
  const base = `http://127.0.0.1:${server.addr.port}`;
  try {
    const first = freePort();
    await flood(1200, 20, async (i) => {
      const port = 1024 + ((first + i * 53) % 64_000);
      const res = await fetch(`${base}/url/http/127.0.0.1:${port}/flood.py`);
      assert.notEqual(res.status, 500);
      await res.body?.cancel();
    });
    const text = await (await fetch(`${base}/metrics`)).text();
    const hosts = new Set(
      text.split("\n").filter((l) => l.startsWith("mipserver_upstream_requests_total{")).map((l) =>
        /host="([^"]*)"/.exec(l)![1]
      ),
    );
    // Labelled by the configured host an attempt belongs to: every port of 127.0.0.1 is the one label (MAX_SERIES is
    // the cap behind it, tested above).
    assert.ok(hosts.has("127.0.0.1"), [...hosts].join(", "));
    assertAtMost(hosts.size, 2, `upstream host labels (${[...hosts].join(", ")})`);
    assertAtMost(seriesOf(text, "mipserver_upstream_requests_total"), MAX_SERIES + 1, "upstream request series");
    assertAtMost(
      seriesOf(text, "mipserver_upstream_request_duration_seconds_count"),
      MAX_SERIES + 1,
      "upstream duration series",
    );
  } finally {
    await server.shutdown();
    await app.idle();
    await app.close();
  }
});
