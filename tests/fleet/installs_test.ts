/**
 * Install records in-process: a fake upstream index, the app's handler called as devices at several addresses would
 * call it, and a controlled clock. Statuses, grouping, the queries (JSON and CSV), the inventory's outdated flags,
 * restart survival and retention.
 */
import assert from "node:assert/strict";
import { createLock } from "../../src/bundle/lock.ts";
import { formatLock } from "../../src/packages/lock_file.ts";
import { AuditDb } from "../../src/records/sqlite/audit_db.ts";
import { SqliteRecords } from "../../src/records/sqlite/mod.ts";
import { classify, manifestInfo } from "../../src/fleet/installs.ts";
import { memoryLogger } from "../../src/log.ts";
import { tempDir } from "../helpers.ts";
import { join } from "node:path";
import { ENGINES, setup, T0 } from "./records_env.ts";

Deno.test("requests are read as manifests and files of the right package", () => {
  assert.deepEqual(classify("/package/:mpy/:name/:version.json", "/package/6/hello/latest.json"), {
    kind: "manifest",
    package: "hello",
    requested: "latest",
    mpy: "6",
    profile: null,
  });
  assert.deepEqual(classify("/t/:profile/package/:mpy/:name/:version.json", "/t/esp32/package/6/hello/1.0.json"), {
    kind: "manifest",
    package: "hello",
    requested: "1.0",
    mpy: "6",
    profile: "esp32",
  });
  assert.deepEqual(classify("/t/:profile/file/:h2/:hash", "/t/esp32/file/ab/abcdef12"), {
    kind: "file",
    key: "file:abcdef12",
  });
  assert.deepEqual(
    classify("/github/:owner/:repo/:ref/*path", "/github/acme/sensorkit/v1.0/package.json"),
    { kind: "manifest", package: "github:acme/sensorkit", requested: "v1.0", mpy: null, profile: null },
  );
  assert.deepEqual(classify("/github/:owner/:repo/:ref/*path", "/github/acme/sensorkit/v1.0/sensorkit/core.py"), {
    kind: "file",
    key: "/github/acme/sensorkit/v1.0/sensorkit/core.py",
  });
  assert.deepEqual(
    classify("/repo/:mpy/github/:owner/:repo/:ref/*path", "/repo/6/github/acme/dep/main/lib/package.json"),
    {
      kind: "manifest",
      package: "github:acme/dep/lib",
      requested: "main",
      mpy: "6",
      profile: null,
    },
  );
  // A code host's own raw layout is a chained server's route (a site's upstream), never a device's install.
  assert.deepEqual(classify("/gitlab/:owner/:repo/-/raw/*rest", "/gitlab/grp/glpkg/-/raw/main/package.json"), {
    kind: "other",
  });
  assert.deepEqual(
    classify("/codeberg/api/v1/repos/*rest", "/codeberg/api/v1/repos/acme/kit/raw/package.json?ref=main"),
    { kind: "other" },
  );
  // Every code host of the sources' registry is a mirror the records know (codeberg: like github:).
  assert.deepEqual(
    classify("/codeberg/:owner/:repo/:ref/*path", "/codeberg/flock/birdkit/v0.2/package.json"),
    { kind: "manifest", package: "codeberg:flock/birdkit", requested: "v0.2", mpy: null, profile: null },
  );
  assert.deepEqual(classify("/codeberg/:owner/:repo/:ref/*path", "/codeberg/flock/birdkit/v0.2/birdkit/nest.py"), {
    kind: "file",
    key: "/codeberg/flock/birdkit/v0.2/birdkit/nest.py",
  });
  assert.deepEqual(
    manifestInfo(new TextEncoder().encode(JSON.stringify({
      urls: [["birdkit/nest.py", "http://gw:18891/codeberg/flock/birdkit/v0.2/birdkit/nest.py"]],
    })))?.files,
    ["/codeberg/flock/birdkit/v0.2/birdkit/nest.py"],
  );
  assert.equal(classify("/index.json", "/index.json").kind, "other");
  const info = manifestInfo(new TextEncoder().encode(JSON.stringify({
    version: "1.2",
    hashes: [["a.mpy", "aa11"], ["b.mpy", "bb22"]],
    urls: [["c.py", "http://gw:18891/github/acme/x/v1/c.py"], ["d.py", "https://elsewhere.example/d.py"]],
  })));
  assert.deepEqual(info, {
    version: "1.2",
    files: ["file:aa11", "file:bb22", "/github/acme/x/v1/c.py", "https://elsewhere.example/d.py"],
  });
  assert.equal(manifestInfo(new TextEncoder().encode("not json")), undefined);
});

for (const engine of ENGINES) {
  Deno.test(`[${engine}] installs from several devices: complete, partial, failed, and a re-install that fetches only the manifest`, async () => {
    const env = await setup({ devices: { "10.0.4.17": "greenhouse-3" }, audit: { window: "30s" } }, tempDir(), engine);
    try {
      await env.install("10.0.4.17", "hello/latest");
      env.tick(1000);
      await env.install("10.0.4.18", "mathx/latest", { skip: (p) => p.endsWith("ops.mpy") });
      env.tick(1000);
      assert.equal((await env.device("10.0.4.19", "/package/6/nosuchpkg/latest.json")).status, 404);
      env.tick(1000);
      // A device that stops after the manifest.
      assert.equal((await env.device("10.0.4.20", "/package/6/bigmod/latest.json")).status, 200);
      env.tick(31_000);
      // mip skips files it already has: the re-install fetches only the manifest.
      assert.equal((await env.device("10.0.4.17", "/package/6/hello/latest.json")).status, 200);
      env.tick(1000);

      const all = await env.installs();
      const pick = (device: string) => all.filter((i) => i.device === device);
      assert.equal(all.length, 5, JSON.stringify(all, null, 1));
      // Newest first.
      assert.deepEqual(all.map((i) => i.device), ["10.0.4.17", "10.0.4.20", "10.0.4.19", "10.0.4.18", "10.0.4.17"]);
      const [reinstall, first] = pick("10.0.4.17");
      assert.equal(first.status, "complete");
      assert.equal(first.device_name, "greenhouse-3");
      assert.equal(first.package, "hello");
      assert.equal(first.version, "1.1", "the resolved version, never latest");
      assert.equal(first.mpy, "6");
      assert.equal(first.files_listed, 1);
      assert.equal(first.files_served, 1);
      assert.ok((first.bytes as number) > 0);
      assert.equal(first.started_at, new Date(T0).toISOString());
      assert.equal(reinstall.status, "complete", "files served in an earlier install count");
      assert.equal(reinstall.files_served, 0);
      const [mathx] = pick("10.0.4.18");
      assert.equal(mathx.status, "partial");
      assert.equal(mathx.files_listed, 2);
      assert.equal(mathx.files_served, 1);
      const [missing] = pick("10.0.4.19");
      assert.equal(missing.status, "failed");
      assert.equal(missing.package, "nosuchpkg");
      assert.equal(missing.version, null);
      const [stopped] = pick("10.0.4.20");
      assert.equal(stopped.status, "partial");
      assert.equal(stopped.files_served, 0);

      // Filters.
      assert.deepEqual((await env.installs("?status=partial")).map((i) => i.device), ["10.0.4.20", "10.0.4.18"]);
      assert.equal((await env.installs("?device=10.0.4.17&limit=1")).length, 1);
      assert.deepEqual((await env.installs("?package=mathx")).map((i) => i.device), ["10.0.4.18"]);
      const since = new Date(T0 + 2500).toISOString();
      assert.deepEqual((await env.installs(`?since=${since}`)).map((i) => i.device), ["10.0.4.17", "10.0.4.20"]);
      for (
        const bad of [
          "?limit=0",
          "?limit=10001",
          "?limit=x",
          "?since=yesterday",
          "?status=ok",
          "?colour=red",
          "?format=xml",
        ]
      ) {
        const r = await env.admin(`/_/installs${bad}`);
        assert.equal(r.status, 400, `${bad}: ${r.text}`);
      }

      // CSV with a header row.
      const csv = await env.admin("/_/installs?format=csv&device=10.0.4.17");
      assert.equal(csv.status, 200);
      assert.match(csv.type!, /^text\/csv/);
      const lines = csv.text.trim().split("\r\n");
      assert.equal(
        lines[0],
        "id,site,device,device_name,package,version,mpy,profile,status,files_listed,files_served,bytes,started_at,finished_at,error",
      );
      assert.equal(lines.length, 3);
      const site = env.app.fleet.site!;
      assert.match(
        lines[2],
        new RegExp(`^\\d+,${site},10\\.0\\.4\\.17,greenhouse-3,hello,1\\.1,6,,complete,1,1,\\d+,`),
      );
      // Filtered by site: this server's site holds them all, another none.
      assert.equal((await env.installs(`?site=${site}`)).length, 5);
      assert.equal((await env.installs("?site=elsewhere")).length, 0);
    } finally {
      await env.close();
    }
  });

  Deno.test(`[${engine}] the inventory flags devices behind the index or a pin; /_/packages/NAME says who runs what`, async () => {
    const env = await setup({ devices: { "10.0.0.1": "old-board" } }, tempDir(), engine);
    try {
      await env.install("10.0.0.1", "hello/1.0");
      await env.install("10.0.0.2", "hello/latest");
      await env.install("10.0.0.2", "mathx/latest");
      env.tick(60_000);
      const r = await env.admin("/_/devices");
      assert.equal(r.status, 200, r.text);
      const devices = JSON.parse(r.text).devices as {
        device: string;
        name: string | null;
        last_seen: string;
        packages: { package: string; version: string; outdated: boolean; latest: string }[];
      }[];
      assert.deepEqual(devices.map((d) => [d.device, d.name]), [["10.0.0.1", "old-board"], ["10.0.0.2", null]]);
      const one = devices[0].packages;
      assert.deepEqual(one.map((p) => [p.package, p.version, p.latest, p.outdated]), [["hello", "1.0", "1.1", true]]);
      const two = devices[1].packages;
      assert.deepEqual(two.map((p) => [p.package, p.version, p.outdated]), [["hello", "1.1", false], [
        "mathx",
        "0.2",
        false,
      ]]);

      const pkg = JSON.parse((await env.admin("/_/packages/hello")).text);
      assert.equal(pkg.latest, "1.1");
      assert.deepEqual(pkg.versions, { "1.0": 1, "1.1": 1 });
      assert.deepEqual(pkg.devices.map((d: { device: string; version: string }) => [d.device, d.version]), [
        ["10.0.0.1", "1.0"],
        ["10.0.0.2", "1.1"],
      ]);
      const csv = await env.admin("/_/devices?format=csv");
      assert.equal(
        csv.text.split("\r\n")[0],
        "site,device,name,last_seen,package,version,mpy,profile,installed_at,latest,outdated,last_status",
      );
      assert.match(csv.text, /\r\n[^,]+,10\.0\.0\.1,old-board,[^,]+,hello,1\.0,6,,[^,]+,1\.1,true,complete/);
      const pkgCsv = await env.admin("/_/packages/hello?format=csv");
      assert.equal(pkgCsv.text.split("\r\n").length, 4, pkgCsv.text);
      assert.match(pkgCsv.text, /\r\n[^,]+,10\.0\.0\.2,,[^,]+,hello,1\.1,6,/);
      const bySite = JSON.parse((await env.admin(`/_/devices?site=${env.app.fleet.site}`)).text);
      assert.equal(bySite.count, 2);
      assert.equal(JSON.parse((await env.admin("/_/devices?site=elsewhere")).text).count, 0);
      await env.app.close();

      // A pin names a newer version than the index: the inventory follows the pin (a new app reads the same records).
      env.app = await env.make({ pins: { hello: "1.2" } });
      const pinned = JSON.parse((await env.admin("/_/devices")).text).devices;
      assert.deepEqual(pinned[1].packages[0], {
        ...pinned[1].packages[0],
        package: "hello",
        latest: "1.2",
        outdated: true,
      });
      await env.app.close();

      // Under a lock at hello 1.0 (and the pin still set), the lock is what the fleet should run: the board on 1.0 is
      // current, and the lock's version beats the pin.
      const lock = await createLock(["hello@1.0"], {
        resolver: env.app.resolver,
        named: env.app.named,
        mpy: "6",
        profiles: [],
      });
      const lockPath = join(tempDir(), "fleet.lock");
      Deno.writeTextFileSync(lockPath, formatLock(lock));
      env.app = await env.make({ pins: { hello: "1.2" }, policy: { lock: lockPath } });
      const locked = JSON.parse((await env.admin("/_/devices")).text).devices;
      assert.deepEqual(locked[0].packages[0], {
        ...locked[0].packages[0],
        package: "hello",
        latest: "1.0",
        outdated: false,
      });
    } finally {
      await env.close();
    }
  });

  Deno.test(`[${engine}] records survive a restart, and retention prunes them at start`, async () => {
    const env = await setup({ audit: { retention: "1d" } }, tempDir(), engine);
    try {
      await env.install("10.1.1.1", "hello/latest");
      assert.equal((await env.installs()).length, 1);
      await env.app.close();
      env.tick(3_600_000);
      env.app = await env.make({ audit: { retention: "1d" } });
      assert.equal((await env.installs()).length, 1, "the install survives a restart");
      await env.install("10.1.1.2", "hello/latest");
      await env.app.close();
      env.tick(86_400_000 - 1_800_000);
      env.app = await env.make({ audit: { retention: "1d" } });
      const left = await env.installs();
      assert.deepEqual(left.map((i) => i.device), ["10.1.1.2"], "the install older than a day is pruned at start");
      assert.equal(
        await env.records.requestCount(),
        2,
        "the pruned install's requests go with it: the manifest and file left",
      );
      assert.deepEqual((await env.records.devices()).map((d) => d.device), ["10.1.1.2"]);
    } finally {
      await env.close();
    }
  });

  Deno.test(`[${engine}] audit.enabled false writes nothing, and the queries say so`, async () => {
    const env = await setup({ audit: { enabled: false } }, tempDir(), engine);
    try {
      await env.install("10.1.1.1", "hello/latest");
      const body = JSON.parse((await env.admin("/_/installs")).text);
      assert.deepEqual(body, { enabled: false, count: 0, installs: [] });
      assert.ok(![...Deno.readDirSync(env.dir)].some((e) => /^(audit|records-outbox)\.sqlite/.test(e.name)));
    } finally {
      await env.close();
    }
  });
}

Deno.test("another mipserver's fetches (a site gateway's, User-Agent mipserver) are no device and no install", async () => {
  const env = await setup({ audit: { window: "30s" } });
  try {
    // A site gateway at 10.9.0.1 fetches a manifest and its files, as a device would; a device installs after it.
    await env.install("10.9.0.1", "hello/latest", { headers: { "user-agent": "mipserver" } });
    assert.equal(
      (await env.device("10.9.0.1", "/package/6/nosuchpkg/latest.json", { "user-agent": "mipserver" })).status,
      404,
    );
    env.tick(1000);
    await env.install("10.0.4.17", "hello/latest", { headers: { "user-agent": "Python-urllib/3.11" } });
    env.tick(31_000);
    const installs = await env.installs();
    assert.deepEqual(installs.map((i) => [i.device, i.package, i.status]), [["10.0.4.17", "hello", "complete"]]);
    const devices = JSON.parse((await env.admin("/_/devices")).text).devices as { device: string }[];
    assert.deepEqual(devices.map((d) => d.device), ["10.0.4.17"]);
    // The request log still shows the site's requests, marked.
    const requests = JSON.parse((await env.admin("/_/requests?ip=10.9.0.1")).text).requests as { peer?: true }[];
    assert.ok(requests.length >= 3 && requests.every((r) => r.peer === true), JSON.stringify(requests));
  } finally {
    await env.close();
  }
});

Deno.test("a database that cannot be opened leaves the server serving, without records, and says why", async () => {
  const dir = tempDir();
  Deno.mkdirSync(join(dir, "audit.sqlite")); // a folder where the database file should be
  const env = await setup({}, dir);
  try {
    assert.match(env.logger.lines.join("\n"), /Cannot open the install records/);
    await env.install("10.1.1.1", "hello/latest");
    assert.deepEqual(JSON.parse((await env.admin("/_/installs")).text).enabled, false);
  } finally {
    await env.close();
  }
});

Deno.test("a device hammering one file is counted on one record per span, and the newest span waits a batch", async () => {
  const { InstallRecorder, SETTLE_MS } = await import("../../src/fleet/installs.ts");
  const { Stats } = await import("../../src/fleet/stats.ts");
  const dir = tempDir();
  const db = new AuditDb(join(dir, "installs.db"));
  let clock = T0;
  const stats = new Stats();
  const recorder = new InstallRecorder({
    records: new SqliteRecords(db, "test"),
    stats,
    logger: memoryLogger(),
    windowMs: 30_000,
    retentionMs: 86_400_000,
    now: () => clock,
  });
  const hit = (time: number, client = "10.0.0.9") => ({
    time,
    client,
    method: "GET",
    path: "/file/ab/abcdef12",
    route: "/file/:h2/:hash",
    status: 200,
    bytes: 100,
    duration_ms: 0.1,
    cache: "hit",
  });
  // 10,000 requests over one span: one record waits, however many came.
  const spanStart = Math.ceil(T0 / SETTLE_MS) * SETTLE_MS;
  for (let i = 0; i < 10_000; i++) recorder.push(hit(spanStart + (i % SETTLE_MS)));
  assert.equal(recorder.waiting, 1);
  // Another device, and a late request (from a worker thread) for an earlier span: records of their own.
  recorder.push(hit(spanStart + 5, "10.0.0.10"));
  recorder.push(hit(spanStart - 1));
  assert.equal(recorder.waiting, 3);
  // The timer's batch leaves the spans younger than SETTLE_MS for the next one.
  clock = spanStart + SETTLE_MS + SETTLE_MS / 2;
  await recorder.flush(false);
  assert.equal(db.requestCount(), 1, "only the span that ended before the settle time");
  assert.equal(recorder.waiting, 2);
  clock = spanStart + 2 * SETTLE_MS;
  await recorder.flush(false);
  assert.equal(db.requestCount(), 10_002);
  assert.equal(recorder.waiting, 0);
  assert.equal(stats.requests, 10_002);
  const rows = db.requests();
  const byDevice = new Map(rows.map((r) => [r.device, 0]));
  for (const r of rows) byDevice.set(r.device, byDevice.get(r.device)! + r.count);
  assert.deepEqual(Object.fromEntries(byDevice), { "10.0.0.9": 10_001, "10.0.0.10": 1 });
  assert.equal(rows.reduce((n, r) => n + r.bytes, 0), 10_002 * 100);
  // A request alike the last one, once that one's record is written, starts a record of its own.
  recorder.push(hit(spanStart + 7));
  await recorder.flush(true);
  recorder.push(hit(spanStart + 8));
  assert.equal(recorder.waiting, 1, "counted on a record already written");
  // Alike requests that do not come one after the other are counted together too.
  recorder.push(hit(spanStart + 9, "10.0.0.10"));
  recorder.push(hit(spanStart + 10));
  assert.equal(recorder.waiting, 2);
  await recorder.flush(true);
  assert.equal(db.requestCount(), 10_006);
  db.close();
});
