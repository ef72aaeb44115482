/**
 * Flood suite (see `flood.ts`): the request ring behind `/_/requests`, `log.requests_kept` slots of at most
 * `PATH_KEPT` path characters each, and its interned strings.
 */
import assert from "node:assert/strict";
import { Interned, INTERNED_LENGTH, INTERNED_MAX, PATH_KEPT, RequestLog } from "../../src/http/request_log.ts";
import { serveApp } from "../e2e/tools.ts";
import { assertAtMost, flood } from "./flood.ts";

Deno.test("request ring over HTTP: 300 unique 60 KB paths keep requests_kept entries of PATH_KEPT characters", async () => {
  const kept = 100;
  const server = await serveApp({ cache: { dir: Deno.makeTempDirSync() }, log: { requests_kept: kept } }, {
    workers: 0,
  });
  try {
    const padding = "p".repeat(60_000);
    // A head over 8 KiB is handed over to the loopback Deno.serve, which takes paths this long.
    await flood(300, 10, async (i) => {
      const res = await fetch(`${server.base}/flood/${i}/${padding}`);
      assert.equal(res.status, 414, "a path segment over 1 KiB is refused");
      await res.body?.cancel();
    });
    const answer = await fetch(`${server.base}/_/requests?limit=${kept}`);
    assert.equal(answer.status, 200);
    const entries = (await answer.json()).requests as { path: string }[];
    assertAtMost(entries.length, kept, "entries in the ring");
    assert.equal(entries.length, kept, "the ring did not fill");
    const longest = Math.max(...entries.map((e) => e.path.length));
    assertAtMost(longest, PATH_KEPT + 3, "characters of a kept path");
    const flooded = entries.filter((e) => e.path.startsWith("/flood/"));
    assert.ok(flooded.length >= kept - 1, "the flood's requests were not kept");
    assert.ok(flooded.every((e) => e.path.endsWith("...")), "a cut path does not say it was cut");
  } finally {
    await server.stop();
  }
});

Deno.test("request ring: 50,000 unique clients and paths, long and short, leave a fixed ring and a bounded intern", () => {
  const log = new RequestLog(1000);
  const long = "x".repeat(100_000);
  for (let i = 0; i < 50_000; i++) {
    log.add({
      time: i,
      client: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
      method: "GET",
      path: i % 10 === 0 ? `/file/${i}/${long}` : `/file/ab/${i}`,
      route: "/file/:h2/:hash",
      status: 404,
      bytes: 0,
      duration_ms: 0.1,
    });
  }
  const entries = log.query();
  assert.equal(log.capacity, 1000);
  assert.equal(entries.length, 1000);
  let chars = 0;
  for (const e of entries) chars += e.path.length + e.client.length;
  assertAtMost(chars, 1000 * (PATH_KEPT + 3 + 15), "characters held by the ring's paths and clients");

  const interned = new Interned();
  for (let i = 0; i < 50_000; i++) interned.of(`/file/ab/${i}`);
  assertAtMost(interned.size, INTERNED_MAX, "interned strings");
  interned.of("y".repeat(INTERNED_LENGTH + 1));
  assertAtMost(interned.size, INTERNED_MAX, "interned strings after a long one");
});
