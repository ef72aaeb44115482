/**
 * The install records under floods a hostile client can send: unique query strings, unique paths, rotating source
 * addresses across 127.0.0.0/8, more than a batch can hold, and a database pushed past `audit.max_size`. Each test
 * asserts the bound and fails on code without it. Also: what a legitimate install costs on disk, and a database of
 * the first layout opened by this code.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { dirname, join } from "node:path";
import { AuditDb, type Enforced, type InstallRow } from "../../src/records/sqlite/audit_db.ts";
import { SqliteRecords } from "../../src/records/sqlite/mod.ts";
import {
  FAILED_INSTALLS_PER_MINUTE,
  InstallRecorder,
  MAX_PENDING,
  MAX_PENDING_BYTES,
} from "../../src/fleet/installs.ts";
import { MAX_RECORDED_PATH, recordedPath } from "../../src/records/paths.ts";
import { Stats } from "../../src/fleet/stats.ts";
import { memoryLogger } from "../../src/log.ts";
import { tempDir } from "../helpers.ts";
import { ENGINES, serveOnEngine, setup, T0 } from "./records_env.ts";
import { replayFromMany } from "./tools.ts";

const hex = (n: number) => {
  const bytes = crypto.getRandomValues(new Uint8Array(Math.ceil(n / 2)));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("").slice(0, n);
};

Deno.test("recorded paths are canonical: no query string, segments decoded, at most MAX_RECORDED_PATH", () => {
  assert.equal(recordedPath("/package/6/hello/latest.json?a=1"), "/package/6/hello/latest.json");
  assert.equal(recordedPath("/package/6/hello/latest.json#x"), "/package/6/hello/latest.json");
  assert.equal(recordedPath("/package/6/%68ello/latest.json"), "/package/6/hello/latest.json");
  // What would change the path's meaning stays encoded.
  assert.equal(recordedPath("/github/a/b/main/x%2Fy%3Fz.py"), "/github/a/b/main/x%2Fy%3Fz.py");
  assert.equal(recordedPath("/file/ab/%zz"), "/file/ab/%25zz");
  const long = recordedPath(`/github/a/b/main/${"x".repeat(5000)}`);
  assert.equal(long.length, MAX_RECORDED_PATH);
  assert.ok(long.endsWith("..."));
});

Deno.test("a flood of unique query strings and unique paths keeps no row per path; real installs in it are whole", async () => {
  const env = await setup();
  try {
    const device = "10.7.0.1";
    // 4,000 requests for one manifest, each with its own 7 KB query string.
    const query = hex(7000);
    for (let i = 0; i < 4000; i++) {
      assert.equal((await env.device(device, `/package/6/hello/latest.json?${i}=${query}`)).status, 200);
    }
    // 3,000 unique package names (404) and 3,000 unique file hashes (404), over three minutes.
    for (let i = 0; i < 3000; i++) {
      if (i % 1000 === 0) env.tick(60_000);
      assert.equal((await env.device(device, `/package/6/nosuch${i}-${hex(8)}/latest.json`)).status, 404);
      const hash = hex(64);
      assert.equal((await env.device(device, `/file/${hash.slice(0, 2)}/${hash}`)).status, 404);
    }
    // A real install from another device in the middle of it.
    const manifest = await env.install("10.7.0.2", "mathx/latest");
    const installs = await env.installs("?limit=10000");
    const real = installs.filter((i) => i.device === "10.7.0.2");
    assert.deepEqual(real.map((i) => [i.package, i.version, i.status, i.files_served]), [[
      "mathx",
      manifest.version,
      "complete",
      manifest.hashes.length,
    ]]);
    const failed = installs.filter((i) => i.device === device && i.status === "failed");
    assert.ok(
      failed.length <= 3 * FAILED_INSTALLS_PER_MINUTE,
      `${failed.length} failed installs from 3,000 unknown packages in three minutes`,
    );
    assert.ok(failed.length > 0, "failed installs are still recorded, within the bound");
    assert.ok(failed.every((i) => String(i.error).length < 200), "errors are short");
    const db = new AuditDb(join(env.dir, "audit.sqlite"));
    try {
      // Every request is counted, per device, minute and status.
      assert.equal(db.requestCount(), 4000 + 6000 + 1 + manifest.hashes.length);
      const traffic = db.traffic(1000).filter((r) => r.device === device);
      assert.ok(traffic.length <= 8, `${traffic.length} count rows for one device over four minutes`);
      // No request row per path: the manifest requests are in the installs, the 404s in the counts.
      assert.deepEqual(db.requests(10_000).filter((r) => r.device === device), []);
      assert.ok(db.usedBytes() < 1024 * 1024, `${db.usedBytes()} bytes after 10,000 requests`);
    } finally {
      db.close();
    }
  } finally {
    await env.close();
  }
});

for (const engine of ENGINES) {
  Deno.test(`[${engine}] rotating source addresses across 127.0.0.0/8 are bounded by audit.max_devices; named devices stay`, async () => {
    const { up, server } = await serveOnEngine(engine, {
      audit: { max_devices: 50 },
      devices: { "127.9.0.1": "bench-board" },
    }, "127.0.0.1");
    try {
      const head = (path: string) => `GET ${path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`;
      const jobs: [string, string][] = [["127.9.0.1", head("/package/6/hello/latest.json")]];
      // 1,200 addresses spread over 127.10.0.0 to 127.250.255.255.
      for (let i = 0; i < 1200; i++) {
        jobs.push([`127.${10 + (i % 240)}.${(i * 7) % 256}.${1 + (i % 250)}`, head(`/index.json?${i}`)]);
      }
      const statuses = await replayFromMany(server.port, jobs);
      assert.ok(statuses.every((s) => s === 200), JSON.stringify(statuses.filter((s) => s !== 200).slice(0, 5)));
      await server.app.fleet.settle();
      const devices = JSON.parse(await (await fetch(`http://127.0.0.1:${server.port}/_/devices`)).text()).devices as {
        device: string;
        name: string | null;
      }[];
      assert.ok(devices.length <= 50, `${devices.length} devices remembered`);
      assert.ok(devices.some((d) => d.device === "127.9.0.1" && d.name === "bench-board"), "the named device stays");
      // Its install stays too, though it was seen first of all.
      const installs = await (await fetch(`http://127.0.0.1:${server.port}/_/installs?device=127.9.0.1`)).json();
      assert.equal(installs.count, 1);
      const health = await (await fetch(`http://127.0.0.1:${server.port}/healthz`)).json();
      assert.ok(health.records.devices_forgotten >= 1151, JSON.stringify(health.records));
      const metrics = await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text();
      assert.match(metrics, /^mipserver_records_devices_forgotten_total (\d+)$/m);
    } finally {
      await server.stop();
      await up.stop();
    }
  });
}

const entry = (
  time: number,
  client: string,
  path: string,
  status: number,
  route = "/package/:mpy/:name/:version.json",
) => ({
  time,
  client,
  method: "GET",
  path,
  route,
  status,
  bytes: 10,
  duration_ms: 0.1,
  cache: status < 400 ? "hit" : undefined,
});

Deno.test("what waits for a batch is bounded by count and bytes; failed requests cannot crowd out the rest", async () => {
  const logger = memoryLogger();
  const recorder = new InstallRecorder({
    records: new SqliteRecords(new AuditDb(":memory:"), "test"),
    stats: new Stats(),
    logger,
    windowMs: 30_000,
    retentionMs: 86_400_000,
    now: () => T0,
  });
  const flood = MAX_PENDING + 20_000;
  for (let i = 0; i < flood; i++) recorder.push(entry(T0 + (i % 100), "10.0.0.1", `/package/6/x${i}/latest.json`, 404));
  assert.ok(recorder.waiting <= MAX_PENDING / 2, `${recorder.waiting} failed records waiting`);
  assert.ok(recorder.waitingBytes <= MAX_PENDING_BYTES / 2, `${recorder.waitingBytes} bytes waiting`);
  // Long paths are cut before they wait: the bytes bound holds for them too.
  for (let i = 0; i < 5000; i++) {
    recorder.push(
      entry(
        T0,
        `10.1.${i >> 8}.${i & 255}`,
        `/github/a/b/main/${i}${"y".repeat(20_000)}`,
        200,
        "/github/:owner/:repo/:ref/*path",
      ),
    );
  }
  assert.ok(recorder.waitingBytes <= MAX_PENDING_BYTES, `${recorder.waitingBytes} bytes waiting`);
  // A real request still gets in.
  const before = recorder.waiting;
  recorder.push(entry(T0, "10.9.9.9", "/package/6/hello/latest.json", 200));
  assert.equal(recorder.waiting, before + 1, "a successful request is kept while failed ones are refused");
  const notKept = recorder.figures().requests_not_kept;
  assert.ok(notKept >= flood - MAX_PENDING / 2, `${notKept} not kept`);
  await recorder.flush();
  await recorder.flush();
  const warnings = logger.lines.filter((l) => l.includes("fell behind"));
  assert.equal(warnings.length, 1, "one warning per minute");
  assert.equal(recorder.waiting, 0);
  assert.ok(recorder.held.classified <= 4096 && recorder.held.filesWritten <= 4096, JSON.stringify(recorder.held));
  await recorder.stop();
});

function installRow(id: number, device: string, at: number): InstallRow {
  return {
    id,
    device,
    package: "sensorkit",
    version: "1.4.2",
    mpy: "6",
    profile: null,
    status: "complete",
    files_listed: 3,
    files_served: 3,
    bytes: 5230,
    started_at: at,
    finished_at: at + 420,
    error: null,
  };
}

Deno.test("audit.max_size: the file and its WAL stay within it plus a batch; request rows go before installs", () => {
  const dir = tempDir();
  const max = 2 * 1024 * 1024;
  const db = new AuditDb(join(dir, "audit.sqlite"), { maxBytes: max });
  const control = new AuditDb(join(dir, "control.sqlite"), { maxBytes: max });
  try {
    let id = 0;
    let dropped = 0;
    let largestBatch = 0;
    let installsDropped = false;
    let newest = 0;
    for (let batch = 0; batch < 120; batch++) {
      const at = T0 + batch * 60_000;
      const write = (target: AuditDb) =>
        target.transaction(() => {
          for (let i = 0; i < 200; i++) {
            const device = `10.${batch}.${i >> 8}.${i & 255}`;
            target.addTraffic({ time: at, device, status: 404, count: 4, bytes: 5230 });
            target.addRequests({
              time: at,
              device,
              method: "GET",
              path: `/index.json`,
              status: 200,
              cache: "hit",
              count: 1,
              bytes: 100,
            });
            target.saveInstall(installRow(++id, device, at + i));
            target.touchDevice(device, at);
          }
        });
      const usedBefore = db.usedBytes();
      write(db);
      newest = id;
      largestBatch = Math.max(largestBatch, db.usedBytes() - usedBefore);
      const installsBefore = db.installCount();
      dropped += db.enforce().rows;
      if (db.installCount() < installsBefore) {
        installsDropped = true;
        assert.deepEqual([db.requests(1), db.traffic(1)], [[], []], "installs went while request rows were left");
      }
      write(control);
      assert.ok(
        db.sizeOnDisk() <= max + largestBatch,
        `batch ${batch}: ${db.sizeOnDisk()} bytes on disk, over ${max} + a batch of ${largestBatch}`,
      );
    }
    assert.ok(installsDropped, "the flood went on past the request rows");
    assert.ok(dropped > 0, "the flood went past the bound");
    assert.ok(control.sizeOnDisk() > 2 * max, `control without the bound: ${control.sizeOnDisk()} bytes`);
    // The newest installs are kept.
    assert.equal(db.installs({ limit: 1 })[0].id, newest);
    assert.equal(db.integrity(), "ok");
  } finally {
    db.close();
    control.close();
  }
});

Deno.test("a legitimate install costs at most 64 bytes on disk", async () => {
  const env = await setup({ audit: { window: "5s" } });
  try {
    // Warm the records (schema pages, the device and file names) with one round, then measure the next ones.
    const devices = Array.from({ length: 100 }, (_, i) => `10.20.${i >> 8}.${i & 255}`);
    for (const d of devices) await env.install(d, "mathx/latest");
    env.tick(10_000);
    await env.installs();
    const db = new AuditDb(join(env.dir, "audit.sqlite"));
    const before = db.usedBytes();
    const rounds = 10;
    for (let r = 0; r < rounds; r++) {
      for (const d of devices) await env.install(d, "mathx/latest");
      env.tick(61_000);
    }
    await env.installs();
    const installs = db.installCount();
    const perInstall = (db.usedBytes() - before) / (rounds * devices.length);
    db.close();
    assert.equal(installs, (rounds + 1) * devices.length);
    // 90 days of 1,000 devices installing 10 packages a day (900,000 installs) fit in the default 64 MiB.
    assert.ok(perInstall <= 64, `${perInstall.toFixed(1)} bytes per install`);
    console.log(`bytes per install: ${perInstall.toFixed(1)}`);
  } finally {
    await env.close();
  }
});

Deno.test("a database of the first layout is moved into the current one, nothing lost", () => {
  const path = join(tempDir(), "audit.sqlite");
  const old = new DatabaseSync(path);
  old.exec(`
    create table installs (id integer primary key, device text not null, package text not null, version text,
      mpy text, profile text, status text not null, files_listed integer not null, files_served integer not null,
      bytes integer not null, started_at integer not null, finished_at integer not null, error text);
    create index installs_started on installs (started_at);
    create index installs_device on installs (device, package, finished_at);
    create index installs_package on installs (package, started_at);
    create table requests (time integer not null, device text not null, method text not null, path text not null,
      status integer not null, cache text, install_id integer, count integer not null, bytes integer not null);
    create index requests_time on requests (time);
    create table device_files (device text not null, file text not null, time integer not null,
      primary key (device, file)) without rowid;
    create index device_files_time on device_files (time);
    create table devices (device text primary key, last_seen integer not null) without rowid;
    insert into installs values (1, '10.0.0.1', 'hello', '1.1', '6', null, 'complete', 1, 1, 300, ${T0}, ${
    T0 + 50
  }, null);
    insert into installs values (2, '10.0.0.2', 'mathx', null, '6', 'esp32', 'failed', 2, 1, 10, ${T0 + 1000}, ${
    T0 + 1200
  }, '404 on /file/ab/abcd');
    insert into requests values (${T0}, '10.0.0.1', 'GET', '/package/6/hello/latest.json', 200, 'hit', 1, 3, 900);
    insert into requests values (${T0}, '10.0.0.1', 'GET', '/file/ab/abcd', 200, 'hit', 1, 2, 100);
    insert into device_files values ('10.0.0.1', 'file:abcd', ${T0});
    insert into devices values ('10.0.0.1', ${T0 + 50}), ('10.0.0.2', ${T0 + 1200});
  `);
  old.close();
  const db = new AuditDb(path);
  try {
    assert.deepEqual(db.installs({ limit: 10 }).map((i) => ({ ...i })), [
      {
        id: 2,
        device: "10.0.0.2",
        package: "mathx",
        version: null,
        mpy: "6",
        profile: "esp32",
        status: "failed",
        files_listed: 2,
        files_served: 1,
        bytes: 10,
        started_at: T0 + 1000,
        finished_at: T0 + 1200,
        error: "404 on /file/ab/abcd",
      },
      {
        id: 1,
        device: "10.0.0.1",
        package: "hello",
        version: "1.1",
        mpy: "6",
        profile: null,
        status: "complete",
        files_listed: 1,
        files_served: 1,
        bytes: 300,
        started_at: T0,
        finished_at: T0 + 50,
        error: null,
      },
    ]);
    assert.equal(db.requestCount(), 5);
    assert.ok(db.hasServedFile("10.0.0.1", "file:abcd"));
    assert.deepEqual(db.devices().map((d) => d.device), ["10.0.0.1", "10.0.0.2"]);
    assert.equal(db.integrity(), "ok");
  } finally {
    db.close();
  }
  assert.deepEqual([...Deno.readDirSync(dirname(path))].map((e) => e.name).filter((n) => n.includes("migrating")), []);
  // Opened again, it is not migrated twice.
  const again = new AuditDb(path);
  assert.equal(again.installCount(), 2);
  again.close();
});

Deno.test("a database over audit.max_size at start is cut and shrunk, and the status page says so", async () => {
  const dir = tempDir();
  const big = new AuditDb(join(dir, "audit.sqlite"), { maxBytes: 1 << 30 });
  let id = 0;
  for (let batch = 0; batch < 20; batch++) {
    big.transaction(() => {
      for (let i = 0; i < 2000; i++) big.saveInstall(installRow(++id, `10.${batch}.${i >> 8}.${i & 255}`, T0 + id));
    });
  }
  big.close();
  const before = Deno.statSync(join(dir, "audit.sqlite")).size;
  assert.ok(before > 2 * 1024 * 1024, `${before} bytes`);
  const env = await setup({ audit: { max_size: "1MiB", retention: "1000d" } }, dir);
  try {
    assert.match(env.logger.lines.join("\n"), /Install records were over audit\.max_size/);
    const figures = env.app.recorder.figures();
    assert.ok(figures.size_bytes <= 1024 * 1024, JSON.stringify(figures));
    assert.ok(figures.rows_dropped > 0);
    const newest = await env.installs("?limit=1");
    assert.equal(newest[0].id, id, "the newest installs are kept");
    const page = await env.admin("/");
    assert.match(page.text, /id="records-dropped"[^>]*>Install records since start: \d+ rows deleted early/);
    const metrics = await env.admin("/metrics");
    assert.match(metrics.text, new RegExp(`^mipserver_records_rows_dropped_total ${figures.rows_dropped}$`, "m"));
  } finally {
    await env.close();
  }
});

/** A database of 1 MiB holding one complete install, from 10.0.0.1. */
function dbWithOneInstall(): AuditDb {
  const db = new AuditDb(join(tempDir(), "audit.sqlite"), { maxBytes: 1024 * 1024, maxDevices: 1_000_000 });
  db.transaction(() => {
    db.saveInstall(installRow(1, "10.0.0.1", T0), 4);
    db.touchDevice("10.0.0.1", T0);
  });
  return db;
}

/**
 * 40 batches a minute apart of 1,000 new devices each across 127.0.0.0/8, each seen and given what `each` writes; the
 * bounds kept after every batch, and the file and WAL checked within the budget and a batch. Returns what was removed.
 */
function rotatingFlood(db: AuditDb, each: (device: string, at: number, i: number) => void): Enforced {
  const removed: Enforced = { rows: 0, devices: 0 };
  for (let batch = 0; batch < 40; batch++) {
    const at = T0 + (batch + 1) * 60_000;
    db.transaction(() => {
      for (let i = 0; i < 1000; i++) {
        const device = `127.${batch}.${i >> 8}.${i & 255}`;
        each(device, at, i);
        db.touchDevice(device, at);
      }
    });
    const enforced = db.enforce();
    removed.rows += enforced.rows;
    removed.devices += enforced.devices;
    assert.ok(db.sizeOnDisk() <= 1024 * 1024 + 256 * 1024, `batch ${batch}: ${db.sizeOnDisk()} bytes`);
  }
  return removed;
}

Deno.test("audit.max_size under rotating addresses: devices that made no install go before any install", () => {
  const db = dbWithOneInstall();
  try {
    const { devices } = rotatingFlood(db, (device, at) => {
      db.addTraffic({ time: at, device, status: 404, count: 1, bytes: 100 });
    });
    assert.ok(devices > 0, "the flood went past the bound");
    assert.equal(db.installs({ limit: 10 }).length, 1, "the install stays");
    assert.ok(db.devices().some((d) => d.device === "10.0.0.1"), "so does the device that made it");
  } finally {
    db.close();
  }
});

Deno.test("audit.max_size under rotating addresses asking for a missing package: failed installs go before one that worked", () => {
  const db = dbWithOneInstall();
  try {
    let id = 1;
    const { rows: dropped } = rotatingFlood(db, (device, at, i) => {
      db.saveInstall({
        ...installRow(++id, device, at + i),
        package: "nosuch",
        version: null,
        status: "failed",
        files_listed: 0,
        files_served: 0,
        error: "404 on /package/6/nosuch/latest.json",
      }, 1);
    });
    assert.ok(dropped > 0, "the flood went past the bound");
    assert.deepEqual(db.installs({ limit: 1, status: "complete" }).map((i) => i.device), ["10.0.0.1"]);
  } finally {
    db.close();
  }
});
