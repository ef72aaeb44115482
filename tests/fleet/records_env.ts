/**
 * In-process install records: an app over a fake upstream index, a controlled clock, devices by address. Each setup
 * runs on one of the records' engines: SQLite in the cache dir, or PostgreSQL (a fresh database on the real server
 * of tests/fixtures/postgres.ts), so one suite checks both.
 */
import assert from "node:assert/strict";
import { createApp } from "../../src/app.ts";
import { memoryLogger } from "../../src/log.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { standardIndex } from "../fixtures/index_fixture.ts";
import { type FreshDatabase, sharedPostgres } from "../fixtures/postgres.ts";
import { tempDir, testConfig } from "../helpers.ts";
import { serve } from "./tools.ts";

/** The clock the records start at. */
export const T0 = Date.parse("2026-03-01T12:00:00Z");
/** A loopback admin client. */
export const LOCAL = { remoteAddr: { hostname: "127.0.0.1", port: 1 } };

/** The records' engines every engine-neutral fleet test runs on. */
export const ENGINES = ["sqlite", "postgres"] as const;
export type Engine = typeof ENGINES[number];

/** A fresh PostgreSQL database on the shared test server. */
export async function freshDatabase(): Promise<FreshDatabase> {
  return await (await sharedPostgres()).database();
}

/**
 * `overrides` with the records on `engine`: for PostgreSQL, `audit.database` set to `db` (its password given as
 * `PGPASSWORD`, see {@linkcode setup}).
 */
export function onEngine(
  overrides: Record<string, unknown>,
  db: FreshDatabase | undefined,
  withPassword = false,
): Record<string, unknown> {
  if (!db) return overrides;
  const audit = (overrides.audit ?? {}) as Record<string, unknown>;
  return { ...overrides, audit: { ...audit, database: withPassword ? db.urlWithPassword : db.url } };
}

/** An app on a fake upstream index and a controlled clock, called in-process as devices at addresses would call it. */
export async function setup(overrides: Record<string, unknown> = {}, dir = tempDir(), engine: Engine = "sqlite") {
  const idx = await standardIndex();
  const up = new FakeUpstream(idx.root).start();
  let clock = T0;
  const logger = memoryLogger();
  const db = engine === "postgres" ? await freshDatabase() : undefined;
  const make = (o: Record<string, unknown> = overrides) =>
    createApp({
      config: testConfig(onEngine({ cache: { dir }, upstreams: { index: up.url, retries: 0 }, ...o }, db)),
      logger,
      now: () => clock,
      env: db ? { PGPASSWORD: db.password } : {},
    });
  const app = await make();
  const env = {
    app,
    up,
    idx,
    dir,
    logger,
    make,
    engine,
    /** The PostgreSQL database (undefined on SQLite). */
    db,
    tick: (ms: number) => (clock += ms),
    /** The records' engine of the current app. */
    get records() {
      return env.app.fleet.records!;
    },
    /** A device request from `device`, body read in full (as mip does). */
    async device(device: string, path: string, headers: Record<string, string> = {}) {
      const res = await env.app.handler(new Request(`http://gw${path}`, { headers }), {
        remoteAddr: { hostname: device, port: 9 },
      });
      const body = new Uint8Array(await res.arrayBuffer());
      return { status: res.status, body };
    },
    /** Installs `name` as mip does: the manifest, then each listed file. `skip` leaves files out. */
    async install(
      device: string,
      name: string,
      opts: { skip?: (path: string) => boolean; mpy?: string; headers?: Record<string, string> } = {},
    ) {
      const m = await env.device(
        device,
        `/package/${opts.mpy ?? "6"}/${name}.json`.replace(/\/([^/]+)\.json$/, "/$1.json"),
        opts.headers,
      );
      assert.equal(m.status, 200);
      const manifest = JSON.parse(new TextDecoder().decode(m.body));
      for (const [path, hash] of manifest.hashes) {
        if (opts.skip?.(path)) continue;
        const f = await env.device(device, `/file/${hash.slice(0, 2)}/${hash}`, opts.headers);
        assert.equal(f.status, 200);
      }
      return manifest;
    },
    async admin(path: string) {
      const res = await env.app.handler(new Request(`http://gw${path}`), LOCAL);
      return { status: res.status, type: res.headers.get("content-type"), text: await res.text() };
    },
    async installs(query = "") {
      const r = await env.admin(`/_/installs${query}`);
      assert.equal(r.status, 200, r.text);
      return JSON.parse(r.text).installs as Record<string, unknown>[];
    },
    async close() {
      await env.app.close();
      await up.stop();
    },
  };
  return env;
}

/**
 * A server (the production listener, {@linkcode serve}) on the standard fixture index, with the records on `engine`
 * (PostgreSQL: a fresh database, the password in its URL) and `extra` merged into its config.
 */
export async function serveOnEngine(engine: Engine, extra: Record<string, unknown> = {}, hostname?: string) {
  const idx = await standardIndex();
  const up = new FakeUpstream(idx.root).start();
  const db = engine === "postgres" ? await freshDatabase() : undefined;
  const config = { cache: { dir: tempDir() }, upstreams: { index: up.url, retries: 0 }, ...extra };
  const server = await serve(onEngine(config, db, true), hostname);
  return { idx, up, server };
}
