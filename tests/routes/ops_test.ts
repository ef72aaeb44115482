import assert from "node:assert/strict";
import { join } from "node:path";
import { createApp } from "../../src/app.ts";
import { memoryLogger } from "../../src/log.ts";
import { VERSION } from "../../src/version.ts";
import { tempDir, testConfig } from "../helpers.ts";

async function app(overrides: Record<string, unknown> = {}, now = () => Date.now()) {
  const logger = memoryLogger();
  const config = testConfig({ cache: { dir: tempDir() }, ...overrides });
  return { ...(await createApp({ config, logger, now })), logger, config };
}

const client = (hostname: string) => ({ remoteAddr: { hostname, port: 5555 } });

Deno.test("/healthz reports version, uptime and a writable cache dir, and no paths", async () => {
  let t = 1_000_000;
  const a = await app({}, () => t);
  t += 42_000;
  const res = await a.handler(new Request("http://gw/healthz"));
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/json");
  const body = await res.json();
  assert.equal(body.version, VERSION);
  assert.equal(body.uptime_seconds, 42);
  assert.equal(body.cache.writable, true);
  assert.deepEqual(
    [body.cache.size_bytes, body.cache.objects, body.cache.evictions, body.cache.max_bytes],
    [0, 0, 0, null],
  );
  const text = JSON.stringify(body);
  assert.ok(!text.includes(a.config.cache.dir!) && !/"\//.test(text), `an absolute path in /healthz: ${text}`);
  const left = [...Deno.readDirSync(a.config.cache.dir!)].filter((e) => e.name.startsWith(".healthz"));
  assert.deepEqual(left, [], "the probe file was left behind");
});

Deno.test("/healthz says so when the cache dir is not writable", async () => {
  const dir = join(tempDir(), "cache");
  const a = await app({ cache: { dir } });
  Deno.removeSync(dir, { recursive: true });
  Deno.writeTextFileSync(dir, "now a file, not a folder");
  const body = await (await a.handler(new Request("http://gw/healthz"))).json();
  assert.equal(body.cache.writable, false);
});

Deno.test("/echo shows the request with Authorization and Cookie redacted", async () => {
  const a = await app({ server: { admin_from: ["192.168.4.0/24"] } });
  const res = await a.handler(
    new Request("http://gw/echo?a=1&a=2&b=x", {
      headers: { Authorization: "Bearer secret-token", Cookie: "session=abc", "X-Device": "esp32-17" },
    }),
    client("192.168.4.7"),
  );
  assert.equal(res.status, 200);
  const text = await res.text();
  assert.ok(!text.includes("secret-token") && !text.includes("session=abc"), text);
  const body = JSON.parse(text);
  assert.equal(body.client, "192.168.4.7");
  assert.equal(body.method, "GET");
  assert.equal(body.url, "http://gw/echo?a=1&a=2&b=x");
  assert.equal(body.headers.authorization, "[redacted]");
  assert.equal(body.headers.cookie, "[redacted]");
  assert.equal(body.headers["x-device"], "esp32-17");
  assert.deepEqual(body.query, { a: ["1", "2"], b: ["x"] });
});

Deno.test("/_/requests lists requests newest first and filters them", async () => {
  const a = await app({ server: { admin_from: ["10.0.0.0/8"] } });
  await a.handler(new Request("http://gw/healthz"), client("10.0.0.1"));
  await a.handler(new Request("http://gw/nope"), client("10.0.0.2"));
  await a.handler(new Request("http://gw/echo?x=1"), client("10.0.0.1"));
  const get = async (q: string) => {
    const res = await a.handler(new Request(`http://gw/_/requests${q}`), client("10.9.9.9"));
    assert.equal(res.status, 200);
    return (await res.json()).requests as { path: string; status: number; client: string }[];
  };
  assert.deepEqual((await get("")).map((r) => r.path), ["/echo?x=1", "/nope", "/healthz"]);
  assert.deepEqual((await get("?ip=10.0.0.1")).map((r) => r.path), ["/echo?x=1", "/healthz"]);
  assert.deepEqual((await get("?status=404")).map((r) => r.path), ["/nope"]);
  assert.deepEqual((await get("?status=4xx")).map((r) => r.path), ["/nope"]);
  assert.deepEqual((await get("?path=ech")).map((r) => r.path), ["/echo?x=1"]);
  assert.equal((await get("?limit=2")).length, 2);
  const entry = (await get("?path=healthz&ip=10.0.0.1"))[0] as unknown as Record<string, unknown>;
  for (const key of ["time", "client", "method", "path", "status", "bytes", "duration_ms"]) {
    assert.ok(key in entry, `entry lacks ${key}`);
  }
});

Deno.test("/_/requests rejects bad filters with 400 and a reason", async () => {
  const a = await app();
  for (
    const [q, reason] of [["?status=abc", /Invalid status/], ["?limit=0", /Invalid limit/], [
      "?limit=-3",
      /Invalid limit/,
    ], ["?colour=red", /Unknown filter "colour"/]] as const
  ) {
    const res = await a.handler(new Request(`http://gw/_/requests${q}`));
    assert.equal(res.status, 400, q);
    assert.match(await res.text(), reason);
  }
});

Deno.test("/metrics exposes request counts by route and status and durations", async () => {
  const a = await app();
  await a.handler(new Request("http://gw/healthz"));
  await a.handler(new Request("http://gw/healthz"));
  await a.handler(new Request("http://gw/missing"));
  const res = await a.handler(new Request("http://gw/metrics"));
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type")!, /^text\/plain/);
  const text = await res.text();
  assert.match(text, /mipserver_http_requests_total\{route="\/healthz",method="GET",status="200"\} 2/);
  assert.match(text, /mipserver_http_requests_total\{route="unmatched",method="GET",status="404"\} 1/);
  assert.match(text, /mipserver_http_request_duration_seconds_count\{route="\/healthz"\} 2/);
  assert.match(text, /mipserver_http_response_bytes_total\{route="\/healthz"\} \d+/);
});

Deno.test("every request is logged as one line with status, bytes and duration", async () => {
  const a = await app();
  await a.handler(new Request("http://gw/healthz"), client("10.1.1.1"));
  const lines = a.logger.lines.map((l) => JSON.parse(l));
  const line = lines.find((l) => l.msg === "GET /healthz 200");
  assert.ok(line, JSON.stringify(lines));
  assert.equal(line.client, "10.1.1.1");
  assert.equal(line.route, "/healthz");
  assert.ok(line.bytes > 0);
  assert.equal(typeof line.duration_ms, "number");
});

Deno.test("HEAD answers with GET's headers", async () => {
  const a = await app();
  const get = await a.handler(new Request("http://gw/echo"));
  const head = await a.handler(new Request("http://gw/echo", { method: "HEAD" }));
  assert.equal(head.status, 200);
  assert.equal(head.headers.get("content-type"), get.headers.get("content-type"));
  assert.ok(Number(head.headers.get("content-length")) > 0);
  await get.body?.cancel();
  await head.body?.cancel();
});
