/**
 * The records' schema in a real PostgreSQL: made by the server in an empty database, moved forward from the previous
 * version with the rows kept, applied once when two servers start together, left alone when a newer mipserver wrote
 * it; and the driver is loaded only by a server that names a database.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { memoryLogger } from "../../src/log.ts";
import { connect } from "../../src/records/postgres/connect.ts";
import { PostgresRecords, type PostgresRecordsOptions } from "../../src/records/postgres/mod.ts";
import { migrate, MIGRATIONS, SCHEMA_VERSION } from "../../src/records/postgres/schema.ts";
import { emptyBatch, type InstallWrite } from "../../src/records/records.ts";
import { type FreshDatabase, sharedPostgres } from "../fixtures/postgres.ts";
import { tempDir } from "../helpers.ts";

const T0 = Date.parse("2026-03-01T12:00:00Z");

function options(db: FreshDatabase, o: Partial<PostgresRecordsOptions> = {}): PostgresRecordsOptions {
  return {
    url: db.url,
    env: { PGPASSWORD: db.password },
    outboxPath: join(tempDir(), "records-outbox.sqlite"),
    site: "office",
    logger: memoryLogger(),
    now: () => T0,
    maxBytes: 1 << 20,
    maxDevices: 1000,
    keepDevices: {},
    windowMs: 30_000,
    ...o,
  };
}

function install(id: number, device: string, at: number, served = ["file:aa"]): InstallWrite {
  return {
    row: {
      id,
      device,
      package: "hello",
      version: "1.1",
      mpy: "6",
      profile: null,
      status: served.length ? "complete" : "partial",
      files_listed: 1,
      files_served: served.length,
      bytes: 300,
      started_at: at,
      finished_at: at + 50,
      error: null,
    },
    requests: 1 + served.length,
    listed: ["file:aa"],
    served,
    unknown: false,
  };
}

async function tables(db: FreshDatabase): Promise<string[]> {
  const pg = await sharedPostgres();
  const out = await pg.psql(
    "select table_name from information_schema.tables where table_schema = 'mipserver' order by 1",
    db.name,
  );
  return out.trim().split("\n");
}

Deno.test("an empty database gets the whole schema at the first start, noted version by version", async () => {
  const db = await (await sharedPostgres()).database();
  const logger = memoryLogger();
  const records = PostgresRecords.open(options(db, { logger }));
  try {
    const batch = emptyBatch();
    batch.installs.push(install(1, "10.0.0.1", T0));
    batch.seen.push({ device: "10.0.0.1", time: T0 });
    batch.requestCount = 2;
    records.write(batch);
    await records.settle();
    assert.deepEqual(
      (await records.installs({ limit: 5 })).map((i) => [i.site, i.device, i.status]),
      [["office", "10.0.0.1", "complete"]],
    );
    assert.equal(records.figures().database?.schema, SCHEMA_VERSION);
    assert.ok(logger.lines.some((l) => l.includes("schema brought up to date") && l.includes('"from":0')));
  } finally {
    await records.close();
  }
  assert.deepEqual(await tables(db), [
    "device_files",
    "devices",
    "installs",
    "loose",
    "migrations",
    "requests",
    "traffic",
    "writers",
  ]);
  const pg = await sharedPostgres();
  assert.equal(
    (await pg.psql("select string_agg(version::text, ',' order by version) from mipserver.migrations", db.name)).trim(),
    MIGRATIONS.map((m) => m.version).join(","),
  );
  // The owner of the database needed nothing more: the schema and tables are its own.
  assert.equal(
    (await pg.psql("select nspowner::regrole::text from pg_namespace where nspname = 'mipserver'", db.name)).trim(),
    db.user,
  );
});

Deno.test("a database of the previous schema version is moved forward with its rows, once for two servers starting together", async () => {
  const db = await (await sharedPostgres()).database();
  // Version 1, as the first release that used PostgreSQL wrote it, with an install and a device in it.
  const sql = connect(db.url, { PGPASSWORD: db.password });
  try {
    assert.deepEqual((await migrate(sql, 1)).applied.map((m) => m.version), [1]);
    await sql`insert into mipserver.installs (writer, local_id, site, device, package, version, mpy, status, listed,
        own_served, files_listed, files_served, own_bytes, own_requests, started_at, own_finished)
      values ('old', 7, 'office', '10.0.0.9', 'hello', '1.0', '6', 0, '{file:aa}', '{file:aa}', 1, 1, 120, 2,
        ${T0 - 60_000}, ${T0 - 59_000})`;
    await sql`insert into mipserver.devices (site, device, last_seen) values ('office', '10.0.0.9', ${T0 - 59_000})`;
  } finally {
    await sql.end();
  }
  const loggers = [memoryLogger(), memoryLogger()];
  const both = loggers.map((logger) =>
    PostgresRecords.open(options(db, { logger, keepDevices: { "10.0.0.9": "old-board" } }))
  );
  try {
    const batch = emptyBatch();
    batch.installs.push(install(1, "10.0.0.1", T0));
    batch.seen.push({ device: "10.0.0.9", time: T0 });
    both[0].write(batch);
    await Promise.all(both.map((r) => r.settle()));
    const installs = await both[1].installs({ limit: 10 });
    assert.deepEqual(installs.map((i) => [i.device, i.version, i.status]), [
      ["10.0.0.1", "1.1", "complete"],
      ["10.0.0.9", "1.0", "complete"],
    ]);
    // Version 2's column is there and used: the device's name as its site gives it.
    const devices = await both[1].devices();
    assert.deepEqual(devices.map((d) => [d.device, d.name]), [["10.0.0.9", "old-board"]]);
    const moved = loggers.filter((l) => l.lines.some((x) => x.includes("schema brought up to date")));
    assert.equal(moved.length, 1, "one of the two servers applied the step");
    assert.match(moved[0].lines.join("\n"), /"from":1,"to":2/);
  } finally {
    await Promise.all(both.map((r) => r.close()));
  }
  const pg = await sharedPostgres();
  assert.equal((await pg.psql("select count(*) from mipserver.migrations", db.name)).trim(), "2");
});

Deno.test("a database written by a newer mipserver is not touched: records wait in the outbox, the cause logged once", async () => {
  const pg = await sharedPostgres();
  const db = await pg.database();
  const sql = connect(db.url, { PGPASSWORD: db.password });
  try {
    await migrate(sql);
    await sql`insert into mipserver.migrations (version, what) values (${SCHEMA_VERSION + 1}, 'from the future')`;
  } finally {
    await sql.end();
  }
  const logger = memoryLogger();
  const records = PostgresRecords.open(options(db, { logger, retryMs: [50, 100] }));
  try {
    for (let i = 1; i <= 5; i++) {
      const batch = emptyBatch();
      batch.installs.push(install(i, `10.0.1.${i}`, T0 + i));
      batch.requestCount = 2;
      records.write(batch);
      await new Promise((r) => setTimeout(r, 150));
    }
    const figures = records.figures().database!;
    assert.equal(figures.state, "schema");
    assert.equal(figures.waiting_batches, 5);
    assert.equal(figures.waiting_requests, 10);
    const said = logger.lines.filter((l) => l.includes("Cannot write install records to the database"));
    assert.equal(said.length, 1, said.join("\n"));
    assert.match(said[0], /newer mipserver/);
    await assert.rejects(() => records.installs({ limit: 1 }), /schema/);
  } finally {
    await records.close();
  }
  assert.equal((await pg.psql("select count(*) from mipserver.installs", db.name)).trim(), "0");
});

Deno.test("the PostgreSQL modules and driver are reached from main.ts only through the dynamic import of audit.database", async () => {
  const root = new URL("../../", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", "--frozen", "src/main.ts"],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    roots: string[];
    modules: {
      specifier: string;
      dependencies?: { specifier: string; code?: { specifier: string }; isDynamic?: boolean }[];
    }[];
  };
  const bySpecifier = new Map(info.modules.map((m) => [m.specifier, m]));
  const reach = (dynamic: boolean) => {
    const seen = new Set<string>();
    const stack = [...info.roots];
    while (stack.length) {
      const s = stack.pop()!;
      if (seen.has(s)) continue;
      seen.add(s);
      for (const d of bySpecifier.get(s)?.dependencies ?? []) {
        if (d.code && (dynamic || !d.isDynamic)) stack.push(d.code.specifier);
      }
    }
    return [...seen];
  };
  const isPostgres = (s: string) => s.includes("/src/records/postgres/") || /npm:\/?postgres@/.test(s);
  const staticOnly = reach(false);
  assert.deepEqual(staticOnly.filter(isPostgres), [], "a server without audit.database loads none of it");
  assert.ok(reach(true).some((s) => s.endsWith("/src/records/postgres/mod.ts")), "deno compile still takes it in");
  assert.ok(reach(true).some((s) => /npm:\/?postgres@4\.2\.0/.test(s)), JSON.stringify(reach(true).filter(isPostgres)));
});

Deno.test("a user that may only read and write the tables records once the owner made the schema; a new step needs the owner", async () => {
  const pg = await sharedPostgres();
  const db = await pg.database();
  // The owner starts once: the schema is made.
  const owner = PostgresRecords.open(options(db));
  await owner.settle();
  await owner.close();
  const user = `w_${crypto.randomUUID().replaceAll("-", "").slice(0, 10)}`;
  const password = crypto.randomUUID();
  await pg.psql(`create role ${user} login password '${password}'`);
  await pg.psql(
    `grant connect on database ${db.name} to ${user};
     grant usage on schema mipserver to ${user};
     grant select, insert, update, delete on all tables in schema mipserver to ${user};
     grant usage on all sequences in schema mipserver to ${user};`,
    db.name,
  );
  const url = db.url.replace(`${db.user}@`, `${user}@`);
  const logger = memoryLogger();
  const writer = PostgresRecords.open(options(db, { url, env: { PGPASSWORD: password }, logger }));
  try {
    const batch = emptyBatch();
    batch.installs.push(install(1, "10.0.2.1", T0));
    batch.seen.push({ device: "10.0.2.1", time: T0 });
    writer.write(batch);
    await writer.settle();
    assert.equal(writer.figures().database!.state, "ok", logger.lines.join("\n"));
    assert.deepEqual((await writer.installs({ limit: 5 })).map((i) => i.device), ["10.0.2.1"]);
  } finally {
    await writer.close();
  }
  // A schema one step behind: the user cannot apply the step, says so once, and keeps the records waiting.
  await pg.psql("delete from mipserver.migrations where version = 2", db.name);
  const behind = memoryLogger();
  const stuck = PostgresRecords.open(
    options(db, { url, env: { PGPASSWORD: password }, logger: behind, retryMs: [50, 100] }),
  );
  try {
    const batch = emptyBatch();
    batch.seen.push({ device: "10.0.2.2", time: T0 });
    stuck.write(batch);
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(stuck.figures().database!.state, "privileges");
    assert.equal(stuck.figures().database!.waiting_batches, 1);
    assert.equal(behind.lines.filter((l) => l.includes("Cannot write install records")).length, 1);
  } finally {
    await stuck.close();
  }
});
