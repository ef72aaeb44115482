/** The merge of an install's halves written by different replicas, as pure functions (the engine runs them in SQL). */
import assert from "node:assert/strict";
import {
  claim,
  CLOCK_SKEW_MS,
  type MergeInstall,
  type MergeLoose,
  restatus,
} from "../../src/records/postgres/merge.ts";

const install = (id: number, device: string, started: number, listed: string[], own: string[] = []): MergeInstall => ({
  id,
  device,
  listed,
  own_served: own,
  extra_served: [],
  unknown: false,
  error: null,
  started_at: started,
  own_finished: started,
  extra_finished: 0,
  extra_bytes: 0,
  extra_requests: 0,
  status: "partial",
  files_served: own.length,
});

let looseId = 0;
const loose = (device: string, file: string, at: number): MergeLoose => ({
  id: ++looseId,
  device,
  file,
  at,
  last: at,
  count: 1,
  bytes: 100,
});

Deno.test("a file another replica served goes to the install of the same device that lists it, and completes it", () => {
  const a = install(1, "10.0.0.1", 1000, ["file:a", "file:b"], ["file:a"]);
  const other = install(2, "10.0.0.2", 1000, ["file:b"]);
  const l = loose("10.0.0.1", "file:b", 1200);
  const { claimed, changed } = claim([a, other], [l], 30_000);
  assert.deepEqual(claimed, [l.id]);
  assert.deepEqual([...changed], [a]);
  assert.deepEqual(a.extra_served, ["file:b"]);
  assert.equal(a.extra_bytes, 100);
  assert.equal(a.extra_requests, 1);
  assert.equal(a.extra_finished, 1200);
  assert.ok(restatus(a, () => undefined));
  assert.equal(a.status, "complete");
  assert.equal(a.files_served, 2);
  assert.equal(other.status, "partial");
});

Deno.test("not placed: a file before the install (beyond the clock skew), after its window, or that it does not list", () => {
  const a = install(1, "10.0.0.1", 100_000, ["file:a"]);
  const early = loose("10.0.0.1", "file:a", 100_000 - CLOCK_SKEW_MS - 1);
  const late = loose("10.0.0.1", "file:a", 100_000 + 30_001);
  const unlisted = loose("10.0.0.1", "file:z", 100_100);
  assert.deepEqual(claim([a], [early, late, unlisted], 30_000).claimed, []);
  // Within the skew: a replica's clock a little behind.
  assert.equal(claim([a], [loose("10.0.0.1", "file:a", 100_000 - 500)], 30_000).claimed.length, 1);
});

Deno.test("files that keep an install open are placed in any order; the newest install not yet served a file takes it", () => {
  const first = install(1, "10.0.0.1", 0, ["file:a", "file:b", "file:c"]);
  // Each file within the window of the one before, the last two only through the first: placed once that one is.
  const files = [
    loose("10.0.0.1", "file:c", 50_000),
    loose("10.0.0.1", "file:b", 25_000),
    loose("10.0.0.1", "file:a", 20_000),
  ];
  const { claimed } = claim([first], files, 30_000);
  assert.equal(claimed.length, 3);
  assert.deepEqual([...first.extra_served].sort(), ["file:a", "file:b", "file:c"]);
  // Two installs listing the same file: the newer one that lacks it takes it.
  const older = install(2, "10.0.0.2", 0, ["file:a"], ["file:a"]);
  const newer = install(3, "10.0.0.2", 1000, ["file:a"]);
  claim([older, newer], [loose("10.0.0.2", "file:a", 1500)], 30_000);
  assert.deepEqual([older.extra_served, newer.extra_served], [[], ["file:a"]]);
});

Deno.test("the status counts files the device had before the install started, and a failure wins", () => {
  const i = install(1, "10.0.0.1", 5000, ["file:a", "file:b"], ["file:a"]);
  restatus(i, (f) => (f === "file:b" ? 1000 : undefined));
  assert.equal(i.status, "complete");
  assert.equal(i.files_served, 1);
  restatus(i, (f) => (f === "file:b" ? 6000 : undefined));
  assert.equal(i.status, "partial", "served after the install started is not earlier");
  i.error = "404 on /file/bb/bb";
  restatus(i, () => 0);
  assert.equal(i.status, "failed");
});
