/** Placing file requests several replicas answered in their installs, as pure functions (the engine runs them). */
import assert from "node:assert/strict";
import {
  CLOCK_SKEW_MS,
  type MergeInstall,
  type MergeLoose,
  place,
  summarize,
} from "../../src/records/postgres/merge.ts";

const install = (id: number, device: string, started: number, listed: string[]): MergeInstall => ({
  id,
  device,
  listed,
  own_served: [],
  unknown: false,
  error: null,
  started_at: started,
  own_finished: started,
});

let looseId = 0;
const loose = (device: string, file: string, at: number, status = 200, install: number | null = null): MergeLoose => ({
  id: ++looseId,
  device,
  file,
  path: `/file/${file.slice(5, 7)}/${file.slice(5)}`,
  status,
  at,
  last: at,
  count: 1,
  bytes: 100,
  install,
});

/** The placement, as [request id, install id] pairs. */
const placed = (installs: MergeInstall[], requests: MergeLoose[], windowMs = 30_000) =>
  [...place(installs, requests, windowMs)].sort((a, b) => a[0] - b[0]);

Deno.test("a file goes to the install of the same device that lists it; the install adds up what it was served", () => {
  const a = install(1, "10.0.0.1", 1000, ["file:aa", "file:bb"]);
  const other = install(2, "10.0.0.2", 1000, ["file:bb"]);
  const fa = loose("10.0.0.1", "file:aa", 1100);
  const fb = loose("10.0.0.1", "file:bb", 1200);
  assert.deepEqual(placed([a, other], [fa, fb]), [[fa.id, 1], [fb.id, 1]]);
  const sum = summarize(a, [fa, fb], () => undefined);
  assert.deepEqual(sum, {
    extra_served: ["file:aa", "file:bb"],
    extra_bytes: 200,
    extra_requests: 2,
    extra_finished: 1200,
    extra_error: null,
    status: "complete",
    files_served: 2,
  });
  assert.equal(summarize(other, [], () => undefined).status, "partial");
});

Deno.test("not placed: a file before the install (beyond the clock skew), after its window, or that it does not list", () => {
  const a = install(1, "10.0.0.1", 100_000, ["file:aa"]);
  const early = loose("10.0.0.1", "file:aa", 100_000 - CLOCK_SKEW_MS - 1);
  const late = loose("10.0.0.1", "file:aa", 100_000 + 30_001);
  const unlisted = loose("10.0.0.1", "file:zz", 100_100);
  assert.deepEqual(placed([a], [early, late, unlisted]).map(([, i]) => i), [null, null, null]);
  // Within the skew: a replica's clock a little behind.
  assert.deepEqual(placed([a], [loose("10.0.0.1", "file:aa", 100_000 - 500)]).map(([, i]) => i), [1]);
});

Deno.test("a file keeps its install open for the next; the newest install not yet served a file takes it", () => {
  const first = install(1, "10.0.0.1", 0, ["file:aa", "file:bb", "file:cc"]);
  // Each file within the window of the one before, the last only through the others.
  const files = [loose("10.0.0.1", "file:cc", 50_000), loose("10.0.0.1", "file:bb", 25_000)];
  files.push(loose("10.0.0.1", "file:aa", 20_000));
  assert.ok(placed([first], files).every(([, i]) => i === 1));
  // Two installs listing the same file: the newer one that lacks it takes it; the older keeps the one it had.
  const older = install(2, "10.0.0.2", 0, ["file:aa"]);
  const newer = install(3, "10.0.0.2", 10_000, ["file:aa"]);
  const one = loose("10.0.0.2", "file:aa", 500);
  const two = loose("10.0.0.2", "file:aa", 10_500);
  assert.deepEqual(placed([older, newer], [one, two]), [[one.id, 2], [two.id, 3]]);
});

Deno.test("a half that comes late moves a file to the install it belongs to; one placed outside the set stays", () => {
  // Replica A had the device's first mathx install (one file left out); replica B answered a second install's
  // manifest, A its files. Before B's half arrived, the file went to the first install; once it is there, it moves.
  const partial = install(1, "10.0.0.1", 0, ["file:aa", "file:bb"]);
  const a = loose("10.0.0.1", "file:aa", 10);
  const bFile = loose("10.0.0.1", "file:bb", 5010, 200, 1);
  assert.deepEqual(placed([partial], [a, bFile]), [[a.id, 1], [bFile.id, 1]]);
  const second = install(2, "10.0.0.1", 5000, ["file:aa", "file:bb"]);
  const aAgain = loose("10.0.0.1", "file:aa", 5005);
  assert.deepEqual(
    Object.fromEntries(place([partial, second], [a, aAgain, bFile], 30_000)),
    { [a.id]: 1, [aAgain.id]: 2, [bFile.id]: 2 },
  );
  assert.equal(summarize(partial, [a], () => undefined).status, "partial");
  assert.equal(summarize(second, [aAgain, bFile], () => undefined).status, "complete");
  // A request placed in an install the merge did not read (older than its horizon) is left where it is.
  assert.deepEqual(placed([second], [loose("10.0.0.1", "file:aa", 5100, 200, 99)]), []);
});

Deno.test("the status counts files the device had before the install started, and a failed file fails it", () => {
  const i = install(1, "10.0.0.1", 5000, ["file:aa", "file:bb"]);
  const fa = loose("10.0.0.1", "file:aa", 5100);
  assert.equal(summarize(i, [fa], (f) => (f === "file:bb" ? 1000 : undefined)).status, "complete");
  assert.equal(summarize(i, [fa], (f) => (f === "file:bb" ? 6000 : undefined)).status, "partial");
  const failed = summarize(i, [fa, loose("10.0.0.1", "file:bb", 5200, 404)], () => 0);
  assert.equal(failed.status, "failed");
  assert.equal(failed.extra_error, "404 on /file/bb/bb");
  assert.equal(failed.files_served, 1);
});
