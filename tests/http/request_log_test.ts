import assert from "node:assert/strict";
import { type RequestEntry, RequestLog } from "../../src/http/request_log.ts";

function entry(i: number, extra: Partial<RequestEntry> = {}): RequestEntry {
  return {
    time: new Date(i * 1000).toISOString(),
    client: i % 2 ? "10.0.0.1" : "10.0.0.2",
    method: "GET",
    path: `/file/${i}`,
    route: "/file",
    status: i % 3 === 0 ? 404 : 200,
    bytes: i,
    duration_ms: 1,
    ...extra,
  };
}

Deno.test("the ring buffer keeps the newest entries, newest first", () => {
  const log = new RequestLog(3);
  for (let i = 1; i <= 5; i++) log.add(entry(i));
  assert.deepEqual(log.query().map((e) => e.bytes), [5, 4, 3]);
});

Deno.test("filters combine: ip, path substring, exact status, status class, limit", () => {
  const log = new RequestLog(100);
  for (let i = 1; i <= 12; i++) log.add(entry(i));
  log.add(entry(13, { status: 502, path: "/package/6/x/latest.json" }));
  assert.deepEqual(log.query({ ip: "10.0.0.2" }).map((e) => e.bytes), [12, 10, 8, 6, 4, 2]);
  assert.deepEqual(log.query({ path: "/file/1" }).map((e) => e.bytes), [12, 11, 10, 1]);
  assert.deepEqual(log.query({ status: 404 }).map((e) => e.bytes), [12, 9, 6, 3]);
  assert.deepEqual(log.query({ status: 5 }).map((e) => e.bytes), [13]);
  assert.deepEqual(log.query({ status: 2, ip: "10.0.0.1", limit: 2 }).map((e) => e.bytes), [11, 7]);
  assert.deepEqual(log.query({ path: "latest" }).map((e) => e.status), [502]);
});

Deno.test("a zero-capacity log keeps nothing", () => {
  const log = new RequestLog(0);
  log.add(entry(1));
  assert.deepEqual(log.query(), []);
});

Deno.test("the ring keeps copies of its entries, with only the fields they had, and take empties it", () => {
  const log = new RequestLog(2);
  const first = entry(1, { cache: "hit", upstream_ms: 3 });
  log.add(first);
  log.add(entry(2, { error_id: "abcd1234" }));
  first.path = "/changed";
  const [newest, older] = log.query();
  assert.deepEqual(Object.keys(newest).sort(), [...Object.keys(entry(2)), "error_id"].sort());
  assert.equal(older.path, "/file/1");
  assert.equal(older.cache, "hit");
  assert.equal(older.upstream_ms, 3);
  assert.equal("error_id" in older, false);
  // Slots are reused when the ring comes round: what was read before does not change.
  log.add(entry(3));
  assert.equal(older.path, "/file/1");
  assert.deepEqual(log.take().map((e) => e.bytes), [2, 3]);
  assert.deepEqual(log.query(), []);
  log.add(entry(4));
  assert.deepEqual(log.query().map((e) => e.bytes), [4]);
});

Deno.test("interning is bounded whatever clients send: a count cap, and long strings are not kept", async () => {
  const { Interned, INTERNED_LENGTH, INTERNED_MAX } = await import("../../src/http/request_log.ts");
  const interned = new Interned();
  const a = interned.of(["/file/", "ab"].join(""));
  assert.equal(interned.of(`/file/${"ab"}`), a);
  for (let i = 0; i < 3 * INTERNED_MAX; i++) interned.of(`/file/${i}`);
  assert.ok(interned.size <= INTERNED_MAX, `${interned.size} kept`);
  const before = interned.size;
  for (let i = 0; i < 100; i++) {
    assert.equal(interned.of(`/${"x".repeat(INTERNED_LENGTH)}${i}`).length, INTERNED_LENGTH + 1 + String(i).length);
  }
  assert.equal(interned.size, before, "long strings are used as they are, not kept");
});
