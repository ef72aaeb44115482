/**
 * The PostgreSQL tables under a flood a hostile client can make: rotating devices asking for unique paths, loose file
 * requests that belong to no install, failed installs from a missing package. The row cap holds after every batch
 * (plus that batch), request rows go before installs, failed installs before ones that worked, the newest installs
 * stay; and without the cap the same flood grows the tables past it (so the cap is what holds them).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { memoryLogger } from "../../src/log.ts";
import { BYTES_PER_ROW, PostgresRecords, type PostgresRecordsOptions } from "../../src/records/postgres/mod.ts";
import { type Batch, emptyBatch, type InstallWrite } from "../../src/records/records.ts";
import { type FreshDatabase, sharedPostgres } from "../fixtures/postgres.ts";
import { tempDir } from "../helpers.ts";

const T0 = Date.parse("2026-03-01T12:00:00Z");
const CAP = 3000;

function open(db: FreshDatabase, o: Partial<PostgresRecordsOptions> = {}): PostgresRecords {
  return PostgresRecords.open({
    url: db.url,
    env: { PGPASSWORD: db.password },
    outboxPath: join(tempDir(), "records-outbox.sqlite"),
    site: "office",
    logger: memoryLogger(),
    now: () => T0,
    maxBytes: 64 << 20,
    maxRows: CAP,
    maxDevices: 1_000_000,
    keepDevices: {},
    windowMs: 30_000,
    ...o,
  });
}

function install(id: number, device: string, at: number, failed = false): InstallWrite {
  return {
    row: {
      id,
      device,
      package: failed ? "nosuch" : "sensorkit",
      version: failed ? null : "1.4.2",
      mpy: "6",
      profile: null,
      status: failed ? "failed" : "complete",
      files_listed: failed ? 0 : 1,
      files_served: failed ? 0 : 1,
      bytes: 500,
      started_at: at,
      finished_at: at + 100,
      error: failed ? "404 on /package/6/nosuch/latest.json" : null,
    },
    requests: 2,
    listed: failed ? [] : ["file:aa"],
    served: failed ? [] : ["file:aa"],
    unknown: false,
  };
}

/** One batch of the flood: 400 rotating devices, each with a unique path, a loose file, a failed install. */
function floodBatch(b: number, firstId: number): Batch {
  const batch = emptyBatch();
  const at = T0 + b * 60_000;
  for (let i = 0; i < 400; i++) {
    const device = `127.${b}.${i >> 8}.${i & 255}`;
    batch.requests.push({
      time: at,
      device,
      method: "GET",
      path: `/index.json/${b}/${i}`,
      status: 200,
      cache: "hit",
      count: 1,
      bytes: 10,
    });
    batch.requests.push({
      time: at,
      device,
      method: "GET",
      path: `/file/ab/${b}x${i}`,
      status: 200,
      cache: "hit",
      count: 1,
      bytes: 10,
      file: `file:${b}x${i}`,
      at,
      last: at,
    });
    batch.traffic.push({ time: at, device, status: 404, count: 3, bytes: 30 });
    batch.files.push({ device, file: `file:${b}x${i}`, time: at });
    if (i % 4 === 0) batch.installs.push(install(firstId + i / 4, device, at + i, true));
    batch.seen.push({ device, time: at });
  }
  batch.requestCount = 400 * 6;
  return batch;
}

async function rows(db: FreshDatabase): Promise<Record<string, number>> {
  const pg = await sharedPostgres();
  const out = await pg.psql(
    `select (select count(*) from mipserver.installs) || ',' || (select count(*) from mipserver.requests) || ',' ||
      (select count(*) from mipserver.traffic) || ',' || (select count(*) from mipserver.loose) || ',' ||
      (select count(*) from mipserver.device_files)`,
    db.name,
  );
  const [installs, requests, traffic, loose, files] = out.trim().split(",").map(Number);
  return { installs, requests, traffic, loose, files, total: installs + requests + traffic + loose + files };
}

Deno.test("the row cap holds under a flood from rotating devices; request rows and failed installs go first, the good install stays", async () => {
  const pg = await sharedPostgres();
  const db = await pg.database();
  const control = await pg.database();
  const logger = memoryLogger();
  const records = open(db, { logger });
  // Control: the same flood with a cap far above it.
  const unbounded = open(control, { maxRows: 10_000_000 });
  try {
    const good = emptyBatch();
    good.installs.push(install(1, "10.0.0.1", T0 - 1000));
    good.files.push({ device: "10.0.0.1", file: "file:aa", time: T0 - 950 });
    good.seen.push({ device: "10.0.0.1", time: T0 - 950 });
    records.write(good);
    let id = 2;
    for (let b = 0; b < 12; b++) {
      for (const r of [records, unbounded]) r.write(floodBatch(b, id));
      id += 100;
      await records.settle(30_000);
      const n = await rows(db);
      // Within the cap, plus one batch (2,100 rows) the next count may find.
      assert.ok(n.total <= CAP + 2100, `batch ${b}: ${JSON.stringify(n)}`);
    }
    await unbounded.settle(30_000);
    const c = await rows(control);
    assert.ok(c.total > 5 * CAP, `without the cap: ${JSON.stringify(c)}`);
    const figures = records.figures();
    assert.ok(figures.rows_dropped > 0);
    assert.equal(figures.max_rows, CAP);
    // The install that worked is kept through a flood of failed ones.
    assert.deepEqual((await records.installs({ limit: 1, status: "complete" })).map((i) => i.device), ["10.0.0.1"]);
    assert.equal(logger.lines.filter((l) => l.includes("reached their row cap")).length, 1, "one warning a minute");
  } finally {
    await records.close();
    await unbounded.close();
  }
});

Deno.test("the default row cap is audit.max_size / 64: as many installs as SQLite keeps in the same budget", async () => {
  const db = await (await sharedPostgres()).database();
  const records = open(db, { maxRows: undefined, maxBytes: 64 << 20 });
  try {
    assert.equal(records.maxRows, (64 << 20) / BYTES_PER_ROW);
  } finally {
    await records.close();
  }
});

Deno.test("hostile text reaches the database (a NUL in a manifest's file name); a batch it refuses three times is set aside, not in the way", async () => {
  const db = await (await sharedPostgres()).database();
  const logger = memoryLogger();
  const records = open(db, { logger, retryMs: [20, 50] });
  try {
    const nul = emptyBatch();
    const i = install(1, "10.0.9.1", T0);
    i.listed = ["file:a\u0000b"];
    nul.installs.push(i);
    nul.seen.push({ device: "10.0.9.1", time: T0 });
    records.write(nul);
    // Then a batch the database cannot take (a count past its integer column), and a good one behind it.
    const poison = emptyBatch();
    poison.traffic.push({ time: T0, device: "10.0.9.2", status: 404, count: 3_000_000_000, bytes: 1 });
    poison.requestCount = 7;
    records.write(poison);
    const good = emptyBatch();
    good.installs.push(install(2, "10.0.9.3", T0 + 1000));
    records.write(good);
    const end = Date.now() + 15_000;
    while (records.figures().database!.waiting_batches > 0 && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(records.figures().database!.waiting_batches, 0);
    assert.deepEqual((await records.installs({ limit: 5 })).map((r) => r.device), ["10.0.9.3", "10.0.9.1"]);
    assert.equal(records.figures().database!.requests_refused, 7);
    assert.equal(logger.lines.filter((l) => l.includes("set aside")).length, 1);
  } finally {
    await records.close();
  }
});
