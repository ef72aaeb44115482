/**
 * Install records on a real PostgreSQL that stops, freezes, refuses the password or never answered: devices are
 * served as fast as ever, the records wait in the bounded local outbox, `/healthz`, `/metrics` and the status page
 * say so, the log says so once per cause, and once the database is back the batches are sent in order, each once
 * (also after a restart, and when a batch the database took is sent again).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type App, createApp } from "../../src/app.ts";
import { memoryLogger } from "../../src/log.ts";
import { PostgresRecords, type PostgresRecordsOptions } from "../../src/records/postgres/mod.ts";
import { emptyBatch } from "../../src/records/records.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { standardIndex } from "../fixtures/index_fixture.ts";
import { type FreshDatabase, type Postgres, sharedPostgres, startPostgres } from "../fixtures/postgres.ts";
import { tempDir, testConfig } from "../helpers.ts";

const LOCAL = { remoteAddr: { hostname: "127.0.0.1", port: 1 } };

/** An app recording to `db`, with devices calling it in-process. */
async function gateway(db: FreshDatabase, up: FakeUpstream, dir = tempDir(), extra: Record<string, unknown> = {}) {
  const logger = memoryLogger();
  const app = await createApp({
    config: testConfig({
      cache: { dir },
      upstreams: { index: up.url, retries: 0, timeout: "3s" },
      audit: { database: db.url, site: "office", window: "30s" },
      ...extra,
    }),
    logger,
    env: { PGPASSWORD: db.password },
  });
  return { app, logger, dir };
}

async function get(app: App, path: string, device: string) {
  const res = await app.handler(new Request(`http://gw${path}`), { remoteAddr: { hostname: device, port: 9 } });
  return { status: res.status, body: new Uint8Array(await res.arrayBuffer()) };
}

/** Installs hello as mip does; returns how long the device waited (ms). */
async function install(app: App, device: string): Promise<number> {
  const start = performance.now();
  const m = await get(app, "/package/6/hello/latest.json", device);
  assert.equal(m.status, 200);
  const manifest = JSON.parse(new TextDecoder().decode(m.body));
  for (const [, hash] of manifest.hashes) {
    assert.equal((await get(app, `/file/${hash.slice(0, 2)}/${hash}`, device)).status, 200);
  }
  return performance.now() - start;
}

async function admin(app: App, path: string) {
  const res = await app.handler(new Request(`http://gw${path}`), LOCAL);
  return { status: res.status, text: await res.text() };
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out: ${what}`);
}

const failures = (lines: string[]) => lines.filter((l) => l.includes("Cannot write install records to the database"));

Deno.test("the database stopped while devices install: served at full speed, the records wait, each sent once in order when it is back", async () => {
  const pg = await startPostgres();
  const idx = await standardIndex();
  const up = new FakeUpstream(idx.root).start();
  let app: App | undefined;
  try {
    const db = await pg.database();
    const gw = await gateway(db, up);
    app = gw.app;
    app.startRecording();
    for (let i = 0; i < 10; i++) await install(app, `10.1.0.${i}`);
    await app.fleet.settle();
    assert.equal(JSON.parse((await admin(app, "/_/installs?limit=1000")).text).count, 10);
    const before: number[] = [];
    for (let i = 0; i < 10; i++) before.push(await install(app, `10.1.1.${i}`));

    await pg.stop();
    const stoppedAt = Date.now();
    // Devices go on installing while the database is down, for longer than the sender's tries back off to.
    const during: number[] = [];
    let n = 0;
    while (Date.now() - stoppedAt < 10_000) {
      during.push(await install(app, `10.2.${n >> 8}.${n & 255}`));
      n++;
      await new Promise((r) => setTimeout(r, 100));
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    assert.ok(median(during) < Math.max(50, 5 * median(before)), `${median(during)} ms vs ${median(before)} ms`);
    await until("a batch waits", () => (app!.recorder.figures().database?.waiting_batches ?? 0) > 3);
    const figures = app.recorder.figures().database!;
    assert.equal(figures.state, "unreachable");
    const health = JSON.parse((await admin(app, "/healthz")).text);
    assert.equal(health.records.database.state, "unreachable");
    assert.ok(health.records.database.waiting_requests >= 2 * (n - 5), JSON.stringify(health.records));
    assert.equal(health.records.engine, "postgres");
    const metrics = (await admin(app, "/metrics")).text;
    assert.match(metrics, /^mipserver_records_database_up 0$/m);
    assert.match(metrics, /^mipserver_records_outbox_batches [1-9]\d*$/m);
    // The queries say why at once; the status page is shown, saying so.
    const started = Date.now();
    const refused = await admin(app, "/_/installs");
    assert.equal(refused.status, 503, refused.text);
    assert.match(refused.text, /unreachable/);
    assert.ok(Date.now() - started < 2000);
    const page = await admin(app, "/");
    assert.equal(page.status, 200);
    assert.match(page.text, /id="records-unreadable"/);
    assert.match(page.text, /the database cannot be reached \(unreachable\)/);
    assert.equal(failures(gw.logger.lines).length, 1, failures(gw.logger.lines).join("\n"));
    assert.ok(!gw.logger.lines.join("\n").includes(db.password), "the password is never logged");

    await pg.start();
    await until("the outbox is sent", () => app!.recorder.figures().database?.waiting_batches === 0);
    assert.equal(app.recorder.figures().database!.state, "ok");
    assert.equal(gw.logger.lines.filter((l) => l.includes("reach the database again")).length, 1);
    assert.equal(failures(gw.logger.lines).length, 1, "one line for the whole outage");
    const installs = JSON.parse((await admin(app, "/_/installs?limit=10000")).text).installs as {
      id: number;
      device: string;
      status: string;
      started_at: string;
    }[];
    assert.equal(installs.length, 20 + n, "every install once");
    assert.equal(new Set(installs.map((i) => i.device)).size, 20 + n);
    assert.ok(
      installs.every((i) => i.status === "complete"),
      JSON.stringify(installs.filter((i) => i.status !== "complete")),
    );
    // In order: the database numbered them as they were made.
    const byId = [...installs].sort((a, b) => a.id - b.id).map((i) => Date.parse(i.started_at));
    assert.deepEqual(byId, [...byId].sort((a, b) => a - b));
    assert.match((await admin(app, "/metrics")).text, /^mipserver_records_database_up 1$/m);
  } finally {
    await app?.close();
    await up.stop();
    await pg.destroy();
  }
});

Deno.test("records made while the database is down survive a restart of the server and are sent by the next one", async () => {
  const pg = await startPostgres();
  const idx = await standardIndex();
  const up = new FakeUpstream(idx.root).start();
  const dir = tempDir();
  let app: App | undefined;
  try {
    const db = await pg.database();
    app = (await gateway(db, up, dir)).app;
    await install(app, "10.3.0.1");
    await app.fleet.settle();
    await pg.stop();
    for (let i = 2; i <= 6; i++) await install(app, `10.3.0.${i}`);
    await app.close(); // what the database does not take stays in the outbox
    app = undefined;
    await pg.start();
    const next = await gateway(db, up, dir);
    app = next.app;
    assert.ok(next.logger.lines.some((l) => l.includes("from an earlier run")));
    const installs = JSON.parse((await admin(app, "/_/installs")).text).installs as { device: string }[];
    assert.deepEqual(installs.map((i) => i.device).sort(), [1, 2, 3, 4, 5, 6].map((i) => `10.3.0.${i}`));
  } finally {
    await app?.close();
    await up.stop();
    await pg.destroy();
  }
});

function opts(db: FreshDatabase, dir: string, o: Partial<PostgresRecordsOptions> = {}): PostgresRecordsOptions {
  return {
    url: db.url,
    env: { PGPASSWORD: db.password },
    outboxPath: join(dir, "records-outbox.sqlite"),
    site: "office",
    logger: memoryLogger(),
    maxBytes: 1 << 20,
    maxDevices: 100_000,
    keepDevices: {},
    windowMs: 30_000,
    retryMs: [50, 200],
    ...o,
  };
}

/** A batch of `n` requests outside installs from `device`, each with its own path. */
function requestsBatch(device: string, n: number, at: number, pathBytes = 40) {
  const batch = emptyBatch();
  for (let i = 0; i < n; i++) {
    batch.requests.push({
      time: at,
      device,
      method: "GET",
      path: `/index.json/${i}/${"x".repeat(pathBytes)}`,
      status: 200,
      cache: "hit",
      count: 1,
      bytes: 10,
    });
  }
  batch.seen.push({ device, time: at });
  batch.requestCount = n;
  return batch;
}

Deno.test("a batch the database already took, sent again (its answer lost), is not applied twice", async () => {
  const pg = await startPostgres();
  const dir = tempDir();
  const copy = tempDir();
  const db = await pg.database();
  let first: PostgresRecords | undefined;
  let again: PostgresRecords | undefined;
  try {
    first = PostgresRecords.open(opts(db, dir));
    await first.settle();
    await pg.stop();
    for (let b = 0; b < 3; b++) first.write(requestsBatch(`10.4.0.${b}`, 5, Date.UTC(2026, 2, 1, 12, b)));
    await first.close();
    // The outbox as it was before the database took its batches: sending it again is what a lost answer does.
    for (const suffix of ["", "-wal"]) {
      try {
        Deno.copyFileSync(join(dir, `records-outbox.sqlite${suffix}`), join(copy, `records-outbox.sqlite${suffix}`));
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
    }
    await pg.start();
    first = PostgresRecords.open(opts(db, dir));
    await first.settle();
    assert.equal(await first.requestCount(), 15);
    assert.equal(first.figures().database!.waiting_batches, 0);
    again = PostgresRecords.open(opts(db, copy));
    assert.equal(again.figures().database!.waiting_batches, 3);
    await again.settle();
    assert.equal(again.figures().database!.waiting_batches, 0, "taken out: the database holds them");
    assert.equal(await again.requestCount(), 15, "each batch once");
  } finally {
    await first?.close();
    await again?.close();
    await pg.destroy();
  }
});

Deno.test("the outbox is bounded by audit.max_size: a batch past it is refused and counted, the rest sent later", async () => {
  const pg = await startPostgres();
  const dir = tempDir();
  const db = await pg.database();
  const logger = memoryLogger();
  const records = PostgresRecords.open(opts(db, dir, { logger }));
  try {
    await records.settle();
    await pg.stop();
    let kept = 0;
    let refused = 0;
    for (let b = 0; b < 40; b++) {
      try {
        records.write(requestsBatch(`10.5.0.${b}`, 200, Date.UTC(2026, 2, 1, 12, b), 400));
        kept++;
      } catch (e) {
        assert.match(String(e), /outbox is full/);
        refused++;
      }
      assert.ok(records.figures().size_bytes <= (1 << 20) + 256 * 1024, `${records.figures().size_bytes} bytes`);
    }
    assert.ok(refused > 0 && kept > 0, `${kept} kept, ${refused} refused`);
    const figures = records.figures().database!;
    assert.equal(figures.requests_refused, refused * 200);
    assert.equal(figures.waiting_batches, kept);
    await pg.start();
    await until("the outbox is sent", () => records.figures().database!.waiting_batches === 0);
    assert.equal(await records.requestCount(), kept * 200);
    assert.equal(records.figures().database!.waiting_batches, 0);
    assert.ok(records.figures().size_bytes < 512 * 1024, "an emptied outbox gives its pages back");
  } finally {
    await records.close();
    await pg.destroy();
  }
});

Deno.test("a frozen database (SIGSTOP) makes queries time out, not devices wait; thawed, it catches up", async () => {
  const pg = await startPostgres();
  const idx = await standardIndex();
  const up = new FakeUpstream(idx.root).start();
  let app: App | undefined;
  const frozen: number[] = [];
  try {
    const db = await pg.database();
    const gw = await gateway(db, up);
    app = gw.app;
    app.startRecording();
    await install(app, "10.6.0.1");
    await app.fleet.settle();
    // Every process of the cluster stops answering, connections stay open.
    for (const pid of await clusterPids(pg)) (Deno.kill(pid, "SIGSTOP"), frozen.push(pid));
    const waits: number[] = [];
    for (let i = 2; i < 30; i++) {
      waits.push(await install(app, `10.6.0.${i}`));
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok(Math.max(...waits) < 1000, `a device waited ${Math.max(...waits)} ms`);
    await until(
      "the sender gives up on the frozen database",
      () => app!.recorder.figures().database?.state === "timeout",
      15_000,
    );
    assert.equal(failures(gw.logger.lines).length, 1);
    for (const pid of frozen.splice(0)) Deno.kill(pid, "SIGCONT");
    await until("the outbox is sent", () => app!.recorder.figures().database?.waiting_batches === 0, 30_000);
    const installs = JSON.parse((await admin(app, "/_/installs?limit=100")).text).installs as { status: string }[];
    assert.equal(installs.length, 29);
    assert.ok(installs.every((i) => i.status === "complete"));
  } finally {
    for (const pid of frozen) Deno.kill(pid, "SIGCONT");
    await app?.close();
    await up.stop();
    await pg.destroy();
  }
});

/** The postmaster and its children (the backends serving our connections). */
async function clusterPids(pg: Postgres): Promise<number[]> {
  const root = pg.pid()!;
  const out = await new Deno.Command("ps", { args: ["-o", "pid=", "--ppid", String(root)], stdout: "piped" }).output();
  return [root, ...new TextDecoder().decode(out.stdout).split("\n").filter((l) => l.trim()).map(Number)];
}

Deno.test("the password from the URL, PGPASSWORD or a password file; a wrong one is logged once as auth, never shown", async () => {
  const pg = await sharedPostgres();
  const db = await pg.database();
  const dir = tempDir();
  const cases: [string, Partial<PostgresRecordsOptions>][] = [
    ["url", { url: db.urlWithPassword, env: {} }],
    ["PGPASSWORD", { env: { PGPASSWORD: db.password } }],
  ];
  const passfile = join(dir, "pgpass");
  Deno.writeTextFileSync(
    passfile,
    `# comment\nother:*:*:*:nope\n127.0.0.1:${pg.port}:${db.name}:${db.user}:${db.password}\n`,
  );
  Deno.chmodSync(passfile, 0o600);
  cases.push(["PGPASSFILE", { env: { PGPASSFILE: passfile } }]);
  for (const [how, o] of cases) {
    const records = PostgresRecords.open(opts(db, tempDir(), o));
    try {
      await records.settle();
      assert.deepEqual(await records.installs({ limit: 1 }), [], how);
      assert.equal(records.figures().database!.state, "ok", how);
    } finally {
      await records.close();
    }
  }
  // A password file others may read is not used (as libpq).
  Deno.chmodSync(passfile, 0o644);
  const logger = memoryLogger();
  const wrong = PostgresRecords.open(opts(db, tempDir(), { env: { PGPASSFILE: passfile }, logger }));
  const bad = PostgresRecords.open(
    opts(db, tempDir(), { url: db.url.replace("@", ":wrong-secret@"), env: {}, logger }),
  );
  try {
    for (const r of [wrong, bad]) {
      const batch = emptyBatch();
      batch.seen.push({ device: "10.7.0.1", time: Date.now() });
      r.write(batch);
    }
    await until(
      "both refused",
      () => wrong.figures().database!.state === "auth" && bad.figures().database!.state === "auth",
    );
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(failures(logger.lines).length, 2, "once each");
    const shown = JSON.stringify([logger.lines, wrong.figures(), bad.figures()]);
    assert.ok(!shown.includes(db.password) && !shown.includes("wrong-secret"), shown);
  } finally {
    await wrong.close();
    await bad.close();
  }
});
