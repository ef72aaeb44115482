import assert from "node:assert/strict";
import { DURATION_BUCKETS, Metrics, RequestTally } from "../../src/http/metrics.ts";

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
