/**
 * The per-host circuit breaker: the state machine with an injected clock, and a whole app in front of a dead
 * upstream, which is contacted N times and then left alone until the open period is over (one probe).
 */
import assert from "node:assert/strict";
import { createApp } from "../../src/app.ts";
import { memoryLogger } from "../../src/log.ts";
import { Breakers } from "../../src/upstream/breaker.ts";
import { tempDir, testConfig } from "../helpers.ts";

Deno.test("a breaker opens after N consecutive failures, lets one probe through after the period, and closes on an answer", () => {
  let t = 0;
  const changes: string[] = [];
  const b = new Breakers({
    failures: 3,
    openFor: 30_000,
    now: () => t,
    onChange: (h, f, to) => changes.push(`${h} ${f}>${to}`),
  });
  assert.equal(b.admit("a"), undefined);
  b.failure("a", false);
  b.failure("a", false);
  b.success("a"); // an answer in between resets the count
  b.failure("a", false);
  b.failure("a", false);
  assert.equal(b.state("a"), "closed");
  b.failure("a", true);
  assert.equal(b.state("a"), "open");
  assert.deepEqual(b.admit("a"), { until: 30_000, lastTimeout: true, lastError: "" });
  assert.equal(b.admit("b"), undefined, "other hosts are not affected");
  t = 29_999;
  assert.ok(b.admit("a"));
  t = 30_000;
  assert.equal(b.state("a"), "half-open");
  assert.equal(b.admit("a"), undefined, "the first request after the period is the probe");
  assert.deepEqual(b.admit("a"), { until: 0, lastTimeout: true, lastError: "" }, "only one probe at a time");
  b.failure("a", false, "Cannot reach it");
  assert.equal(b.state("a"), "open", "a failed probe opens the breaker again");
  assert.deepEqual(b.admit("a"), { until: 60_000, lastTimeout: false, lastError: "Cannot reach it" });
  t = 60_000;
  assert.equal(b.admit("a"), undefined);
  b.success("a");
  assert.equal(b.state("a"), "closed");
  assert.equal(b.admit("a"), undefined);
  assert.deepEqual(changes, [
    "a closed>open",
    "a open>half-open",
    "a half-open>open",
    "a open>half-open",
    "a half-open>closed",
  ]);
});

Deno.test("failures: 0 turns breakers off", () => {
  const b = new Breakers({ failures: 0, openFor: 1000 });
  for (let i = 0; i < 100; i++) b.failure("a", false);
  assert.equal(b.admit("a"), undefined);
  assert.equal(b.state("a"), "closed");
});

/** An upstream that answers 503 (or 200 once `up` is set) and counts requests. */
function flakyUpstream() {
  const state = { hits: 0, up: false };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    state.hits++;
    if (!state.up) return new Response("down", { status: 503 });
    const path = new URL(req.url).pathname;
    if (path.endsWith("/package/6/hello/latest.json")) {
      return Response.json({ v: 1, hashes: [], version: "1.0" });
    }
    return new Response("not found", { status: 404 });
  });
  return { state, url: `http://127.0.0.1:${server.addr.port}/pi/v2`, host: `127.0.0.1:${server.addr.port}`, server };
}

Deno.test("a dead upstream is contacted N times, then answered 503 at once until one probe after open_for; /healthz and /metrics show it", async () => {
  const up = flakyUpstream();
  let clock = 1_800_000_000_000;
  const logger = memoryLogger();
  const config = testConfig({
    cache: { dir: tempDir(), prefetch: false },
    upstreams: { index: up.url, retries: 1, breaker: { failures: 4, open_for: "30s" } },
  });
  const app = await createApp({ config, logger, now: () => clock });
  const get = (path: string) => app.handler(new Request(`http://gw${path}`));
  const text = async (res: Response) => new TextDecoder().decode(await res.arrayBuffer());
  const health = async () => (await (await get("/healthz")).json()).upstreams.breakers[up.host];
  const gauge = async () => {
    const m = new RegExp(`mipserver_upstream_breaker_state\\{host="${up.host.replace(/\./g, "\\.")}"\\} (\\d)`)
      .exec(await text(await get("/metrics")));
    return m ? Number(m[1]) : undefined;
  };
  try {
    assert.equal(await health(), "closed");
    assert.equal(await gauge(), 0);
    // Two requests, each two attempts (retries: 1): four failures open the breaker.
    for (let i = 0; i < 2; i++) {
      const res = await get(`/package/6/pkg${i}/latest.json`);
      // Upstream failing (5xx) is a 503: the server cannot answer for now.
      assert.equal(res.status, 503);
      assert.equal(res.headers.get("retry-after"), "10");
      assert.match(await text(res), /Upstream answered 503/);
    }
    assert.equal(up.state.hits, 4);
    assert.equal(await health(), "open");
    assert.equal(await gauge(), 2);
    // While open: 503 at once, naming the breaker, without contacting the upstream or waiting for a backoff; the
    // client is told to come back when the breaker lets a probe through.
    for (let i = 0; i < 20; i++) {
      const res = await get(`/package/6/other${i}/latest.json`);
      assert.equal(res.status, 503);
      assert.equal(res.headers.get("retry-after"), "30");
      assert.match(
        await text(res),
        /not contacted for another 30s \(circuit breaker open\).*Last failure: .*answered 503/,
      );
    }
    assert.ok(!logger.lines.some((l) => /retrying.*other\d/.test(l)), "no retries while open");
    assert.equal(up.state.hits, 4);
    // After open_for: half-open; one probe goes out; it fails, so the breaker opens again.
    clock += 30_000;
    assert.equal(await health(), "half-open");
    assert.equal(await gauge(), 1);
    assert.equal((await get("/package/6/probe1/latest.json")).status, 503);
    assert.equal(up.state.hits, 5, "one probe attempt, no retry while the breaker is open again");
    assert.equal(await health(), "open");
    // The upstream comes back; the next probe succeeds and closes the breaker.
    up.state.up = true;
    assert.equal((await get("/package/6/hello/latest.json")).status, 503, "still open: not contacted");
    assert.equal(up.state.hits, 5);
    clock += 30_000;
    const ok = await get("/package/6/hello/latest.json");
    assert.equal(ok.status, 200, await text(ok.clone()));
    assert.equal(up.state.hits, 6);
    assert.equal(await health(), "closed");
    assert.equal(await gauge(), 0);
    assert.ok(logger.lines.some((l) => /circuit breaker changed.*"to":"open"/i.test(l)), logger.lines.join("\n"));
  } finally {
    await app.idle();
    await up.server.shutdown();
  }
});

Deno.test("only configured hosts are labelled in /metrics and /healthz, without credentials", async () => {
  const config = testConfig({
    cache: { dir: tempDir() },
    upstreams: { index: "https://user:secret@index.example/pi/v2" },
    policy: { allow_hosts: ["files.example.com"] },
  });
  const app = await createApp({ config, logger: memoryLogger() });
  const health = await (await app.handler(new Request("http://gw/healthz"))).json();
  const hosts = Object.keys(health.upstreams.breakers).sort();
  assert.deepEqual(hosts, [
    "codeberg.org",
    "files.example.com",
    "files.pythonhosted.org",
    "gitlab.com",
    "index.example",
    "pypi.org",
    "raw.githubusercontent.com",
  ]);
  const metrics = new TextDecoder().decode(await (await app.handler(new Request("http://gw/metrics"))).arrayBuffer());
  const labelled = [...metrics.matchAll(/mipserver_upstream_breaker_state\{host="([^"]+)"\}/g)].map((m) => m[1]).sort();
  assert.deepEqual(labelled, hosts);
  assert.doesNotMatch(JSON.stringify(health) + metrics, /secret/);
});
