/**
 * The settings the listener takes from the configuration reach it: `server.head_timeout`, `server.idle_timeout` and
 * `log.requests_kept`, through the production path (`configSettings(config)` into `listen`, as main.ts does), on the
 * main thread alone (`server.workers: 0`, the default) and in edge worker threads (2). How the deadlines behave is
 * tested on the front itself (front_test.ts); here, that the configured values are the ones in force.
 *
 * Each test sets one timeout short (300 ms) and the other long (10 s), so a connection closed at the short one cannot
 * be the long one's doing nor the defaults' (30 s, 60 s), and the connection the short one does not apply to is shown
 * still open well past it. The waits are limits of "not closed yet" and "closed by then", seconds apart from either
 * timeout, not measurements.
 */
import assert from "node:assert/strict";
import { serveApp, type ServedApp } from "../e2e/tools.ts";
import { tempDir } from "../helpers.ts";
import { Client } from "./client.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Sends a keep-alive GET /healthz on `client` and reads its answer: whether the connection still serves. */
async function serves(client: Client): Promise<boolean> {
  try {
    await client.send("GET /healthz HTTP/1.1\r\nHost: gw.lan\r\n\r\n");
  } catch {
    return false;
  }
  const res = await client.response();
  return res !== undefined && / 200 /.test(res.head.split("\r\n")[0]) && JSON.parse(res.body).status === "ok";
}

/** A server on a fresh cache whose upstreams refuse connections (nothing here needs them), with `settings`. */
function serve(settings: Record<string, unknown>, workers: number): Promise<ServedApp> {
  const dead = "http://127.0.0.1:9";
  return serveApp({
    cache: { dir: tempDir("mipserver-settings-") },
    upstreams: {
      index: `${dead}/pi/v2`,
      github: dead,
      gitlab: dead,
      pypi: `${dead}/pypi`,
      pypi_files: dead,
      retries: 0,
    },
    ...settings,
  }, { workers });
}

for (const workers of [0, 2]) {
  const where = workers === 0 ? "the main thread" : `${workers} edge worker threads`;

  Deno.test(`server.head_timeout from the config (${where}): a silent connection is closed at it, an idle keep-alive one is not`, async () => {
    const { port, stop } = await serve({ server: { head_timeout: "300ms", idle_timeout: "10s" } }, workers);
    const silent = await Client.open(port);
    const idle = await Client.open(port);
    try {
      assert.ok(await serves(idle), "the keep-alive connection's first request");
      assert.ok(
        await silent.closedWithin(5000),
        "a connection that sent nothing stayed open past a 300 ms head_timeout",
      );
      // Past three head timeouts since its answer, the idle connection (10 s idle_timeout) still serves.
      await sleep(1000);
      assert.ok(await serves(idle), "an idle keep-alive connection was closed at the head_timeout");
    } finally {
      silent.close();
      idle.close();
      await stop();
    }
  });

  Deno.test(`server.idle_timeout from the config (${where}): an idle keep-alive connection is closed at it, a new one is not`, async () => {
    const { port, stop } = await serve({ server: { head_timeout: "10s", idle_timeout: "300ms" } }, workers);
    const silent = await Client.open(port);
    const idle = await Client.open(port);
    try {
      assert.ok(await serves(idle), "the keep-alive connection's first request");
      assert.ok(await idle.closedWithin(5000), "an idle keep-alive connection stayed open past a 300 ms idle_timeout");
      // A connection that has not sent its first request is due the head_timeout (10 s), not the idle one.
      await sleep(1000);
      assert.ok(await serves(silent), "a connection waiting for its first request was closed at the idle_timeout");
    } finally {
      silent.close();
      idle.close();
      await stop();
    }
  });

  Deno.test(`log.requests_kept from the config (${where}): /_/requests keeps the newest 5 of 20`, async () => {
    const { base, stop } = await serve({ log: { requests_kept: 5 } }, workers);
    try {
      const paths = Array.from({ length: 20 }, (_, i) => `/nosuch-${String(i).padStart(2, "0")}`);
      for (const path of paths) {
        const res = await fetch(`${base}${path}`);
        await res.body?.cancel();
        assert.equal(res.status, 404, path);
      }
      const kept = await (await fetch(`${base}/_/requests?limit=1000`)).json();
      assert.deepEqual(kept.requests.map((r: { path: string }) => r.path), paths.slice(15).reverse());
      // Not merely shown 5 (a limit is cut to the ring's size): the older ones are gone, a filter finds none.
      const oldest = await (await fetch(`${base}/_/requests?path=/nosuch-00`)).json();
      assert.equal(oldest.count, 0, JSON.stringify(oldest));
      const newest = await (await fetch(`${base}/_/requests?path=/nosuch-19`)).json();
      assert.equal(newest.count, 1, JSON.stringify(newest));
    } finally {
      await stop();
    }
  });
}
