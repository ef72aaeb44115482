import assert from "node:assert/strict";
import { HitBatch, HITS_KEPT, HITS_MS } from "../../src/edge/hits.ts";
import { type RequestEntry, RequestLog } from "../../src/http/request_log.ts";
import type { Shareable } from "../../src/http/responses.ts";

const T0 = 1_800_000_000_000;

function shared(bytes: number, kind = "file", route = "/file/:h2/:hash"): Shareable {
  return {
    route,
    kind,
    outcome: "hit",
    etag: `"e${bytes}"`,
    body: new Uint8Array(bytes),
    headers: { etag: `"e${bytes}"`, "content-length": String(bytes) },
    notModified: { etag: `"e${bytes}"` },
  };
}

/** A batch that records into an array, with the kinds it was given. */
function recording() {
  const recorded: { entry: RequestEntry; kind?: string }[] = [];
  const batch = new HitBatch((entry, kind) => recorded.push({ entry, kind }));
  return { batch, recorded };
}

Deno.test("hits are recorded when drained, in the order they came, as the entries the edge records", () => {
  const { batch, recorded } = recording();
  const file = shared(3960);
  const manifest = shared(200, "package", "/package/:mpy/:name/:version.json");
  const started = performance.now();
  batch.add(file, "GET", "/file/ab/abcdef12", "10.0.0.7", 200, T0, started);
  batch.add(manifest, "HEAD", "/package/6/x/latest.json", "10.0.0.8", 200, T0 + 1, started);
  batch.add(file, "GET", "/file/ab/abcdef12?x=1", "10.0.0.9", 304, T0 + 2, started);
  assert.equal(recorded.length, 0, "recorded before a drain");
  assert.equal(batch.waiting, 3);
  batch.drain();
  assert.equal(batch.waiting, 0);
  assert.deepEqual(recorded.map((r) => [r.entry.client, r.entry.method, r.entry.path, r.entry.status, r.kind]), [
    ["10.0.0.7", "GET", "/file/ab/abcdef12", 200, "file"],
    ["10.0.0.8", "HEAD", "/package/6/x/latest.json", 200, "package"],
    ["10.0.0.9", "GET", "/file/ab/abcdef12?x=1", 304, "file"],
  ]);
  const [first, head, notModified] = recorded.map((r) => r.entry);
  assert.equal(first.time, T0);
  assert.equal(first.route, "/file/:h2/:hash");
  assert.equal(first.cache, "hit");
  assert.equal(first.bytes, 3960);
  assert.equal(head.bytes, 0, "a HEAD sends no body");
  assert.equal(notModified.bytes, 0, "a 304 sends no body");
  assert.ok(first.duration_ms >= 0 && first.duration_ms < 60_000, String(first.duration_ms));
  batch.drain();
  assert.equal(recorded.length, 3, "a second drain recorded again");
});

Deno.test("a batch drains itself when full, and within its delay when not", async () => {
  const { batch, recorded } = recording();
  const file = shared(10);
  for (let i = 0; i < HITS_KEPT - 1; i++) batch.add(file, "GET", `/f/${i}`, "c", 200, T0 + i, performance.now());
  assert.equal(recorded.length, 0);
  batch.add(file, "GET", "/f/last", "c", 200, T0, performance.now());
  assert.equal(recorded.length, HITS_KEPT, "a full batch waited");
  assert.equal(recorded.at(-1)?.entry.path, "/f/last");
  batch.add(file, "GET", "/f/later", "c", 200, T0, performance.now());
  await new Promise((resolve) => setTimeout(resolve, HITS_MS * 5));
  assert.equal(recorded.length, HITS_KEPT + 1, "a hit waited past the delay");
  assert.equal(batch.waiting, 0);
});

Deno.test("a sink that fails loses only its own record; the batch goes on and does not throw", () => {
  const kept: string[] = [];
  const batch = new HitBatch((entry) => {
    if (entry.path === "/bad") throw new Error("stdout closed");
    kept.push(entry.path);
  });
  for (const path of ["/a", "/bad", "/b"]) batch.add(shared(1), "GET", path, "c", 200, T0, performance.now());
  batch.drain();
  assert.deepEqual(kept, ["/a", "/b"]);
  assert.equal(batch.waiting, 0);
});

Deno.test("a request log with a batch to catch up keeps the order the requests came in, and reads include the batch", () => {
  const log = new RequestLog(10);
  const batch = new HitBatch((entry) => log.add(entry));
  log.catchUp = () => batch.drain();
  const entry = (path: string): RequestEntry => ({
    time: T0,
    client: "c",
    method: "GET",
    path,
    route: "/x",
    status: 200,
    bytes: 0,
    duration_ms: 1,
  });
  log.add(entry("/miss-1"));
  batch.add(shared(1), "GET", "/hit-1", "c", 200, T0, performance.now());
  batch.add(shared(1), "GET", "/hit-2", "c", 200, T0, performance.now());
  // The next record of another kind brings the waiting hits in first.
  log.add(entry("/miss-2"));
  assert.deepEqual(log.query().map((e) => e.path), ["/miss-2", "/hit-2", "/hit-1", "/miss-1"]);
  // A read brings them in too.
  batch.add(shared(1), "GET", "/hit-3", "c", 200, T0, performance.now());
  assert.equal(log.query({ limit: 1 })[0].path, "/hit-3");
  batch.add(shared(1), "GET", "/hit-4", "c", 200, T0, performance.now());
  assert.deepEqual(log.take().map((e) => e.path).slice(-1), ["/hit-4"]);
  assert.equal(batch.waiting, 0);
});
