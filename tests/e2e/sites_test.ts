/**
 * A central server and two site gateways chained to it (`upstreams.index` the central server's URL, `upstreams.github`
 * its GitHub mirror), every one recording installs in one real PostgreSQL under its own `audit.site`, with a fixture
 * upstream behind the central server. The real mip installs index packages through each: byte-identical to the
 * central server's, the second site adds no upstream fetch; the central inventory shows every site's devices with
 * the site's name and filters by site. With the central server down, a site serves what it has, passes on the
 * central's 404s it remembered, and answers what it lacks with an error that is not a 404. With the database down, a
 * site's records wait in its outbox and reach the central inventory once it is back.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { startPostgres } from "../fixtures/postgres.ts";
import { startUpstreams } from "../fixtures/upstreams.ts";
import { filesBelow, tempDir } from "../helpers.ts";
import { mipInstall, serveApp, type ServedApp } from "./tools.ts";

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out: ${what}`);
}

/** Every installed file under `dir` with its bytes. */
function installed(dir: string): Record<string, string> {
  return Object.fromEntries(
    filesBelow(dir).map((f) => [f, btoa(String.fromCharCode(...Deno.readFileSync(join(dir, f))))]),
  );
}

Deno.test({
  name: "sites chained to a central server: installs byte-identical, no second upstream fetch, one fleet view by site",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const pg = await startPostgres();
    const up = await startUpstreams();
    const servers: ServedApp[] = [];
    try {
      const db = await pg.database();
      const audit = (site: string) => ({ database: db.urlWithPassword, site, window: "5s" });
      const central = await serveApp({
        cache: { dir: tempDir() },
        upstreams: up.upstreams,
        packages: { sensorkit: { source: "github:acme/sensorkit" } },
        audit: audit("central"),
      }, { record: true });
      servers.push(central);
      const site = (name: string) =>
        serveApp({
          cache: { dir: tempDir() },
          upstreams: { index: central.base, github: `${central.base}/github`, retries: 0 },
          audit: audit(name),
          devices: { "127.0.0.1": `${name}-bench` },
        }, { record: true });
      const siteA = await site("site-a");
      servers.push(siteA);
      const siteB = await site("site-b");
      servers.push(siteB);

      // The same packages through the central server and through site A: the same bytes on the device.
      const direct = tempDir("mip-central-");
      const viaA = tempDir("mip-site-a-");
      for (const pkg of ["hello", "mathx"]) {
        await mipInstall(central.base, direct, pkg);
        await mipInstall(siteA.base, viaA, pkg);
      }
      assert.deepEqual(installed(viaA), installed(direct));
      // A named package of the central server, by name through the site; its repository dependency comes from the
      // site too (see below).
      const namedDirect = tempDir("mip-central-");
      const namedViaA = tempDir("mip-site-a-");
      await mipInstall(central.base, namedDirect, "sensorkit");
      await mipInstall(siteA.base, namedViaA, "sensorkit");
      assert.deepEqual(installed(namedViaA), installed(namedDirect));
      assert.ok(Object.keys(installed(namedDirect)).includes("helpers.mpy"));
      assert.ok(Object.keys(installed(direct)).length >= 3);
      // A second site installing the same packages makes no request to the upstream behind the central server.
      await central.app.idle();
      const before = up.index.log.length;
      const viaB = tempDir("mip-site-b-");
      for (const pkg of ["hello", "mathx"]) await mipInstall(siteB.base, viaB, pkg);
      assert.deepEqual(installed(viaB), installed(direct));
      assert.equal(up.index.log.length, before, JSON.stringify(up.index.log.slice(before)));
      // A named package of the central server reaches the site through its index; its repository dependency, a URL
      // on the central server, is put on the site's base (the base the device used), and the site answers that
      // dependency itself, through the central server's GitHub mirror, compiled by the site.
      const dec = new TextDecoder();
      const helpers = "/repo/6/github/acme/helpers/main/package.json";
      const routed = await (await fetch(`${siteA.base}/package/6/sensorkit/latest.json`)).json();
      assert.deepEqual(routed.deps[1], [`${siteA.base}${helpers}`, "main"], "the device is sent to the site");
      const onSite = await siteA.app.index.manifest("6", "sensorkit", "latest", siteA.base);
      assert.deepEqual(JSON.parse(dec.decode(onSite.body)).deps, [["hello", "latest"], [
        `${siteA.base}${helpers}`,
        "main",
      ]]);
      const asItCame = await siteA.app.index.manifest("6", "sensorkit", "latest");
      assert.deepEqual(JSON.parse(dec.decode(asItCame.body)).deps[1], [`${central.base}${helpers}`, "main"]);
      const fromCentral = await (await fetch(`${central.base}${helpers}`)).text();
      const fromSite = await fetch(`${siteA.base}${helpers}`);
      assert.equal(fromSite.status, 200);
      assert.equal(await fromSite.text(), fromCentral, "the same manifest, the same compiled file hashes");
      // The central's 404 is passed on (and remembered below).
      const missing = await fetch(`${siteA.base}/package/6/nosuchpkg/latest.json`);
      assert.equal(missing.status, 404);
      await missing.body?.cancel();

      // One fleet: the central inventory shows each site's device (the same address at three sites is three
      // devices), with the name its own site gives it, and filters by site.
      for (const s of servers) await s.app.fleet.settle();
      const devices = (await (await fetch(`${central.base}/_/devices`)).json()).devices as {
        site: string;
        device: string;
        name: string | null;
        packages: { package: string; last_status: string }[];
      }[];
      assert.deepEqual(devices.map((d) => [d.site, d.device, d.name]), [
        ["central", "127.0.0.1", null],
        ["site-a", "127.0.0.1", "site-a-bench"],
        ["site-b", "127.0.0.1", "site-b-bench"],
      ]);
      for (const d of devices) {
        // At the central server the sites' own fetches are a device too (the gateways' address): more packages.
        const mine = d.packages.filter((p) => p.package === "hello" || p.package === "mathx");
        assert.deepEqual(mine.map((p) => [p.package, p.last_status]), [["hello", "complete"], ["mathx", "complete"]]);
        if (d.site === "site-b") assert.equal(d.packages.length, 2, "site B installed those two only");
      }
      const onlyA = await (await fetch(`${central.base}/_/installs?site=site-a`)).json();
      assert.ok(onlyA.installs.length >= 2 && onlyA.installs.every((i: { site: string }) => i.site === "site-a"));
      const csv = await (await fetch(`${central.base}/_/devices?format=csv&site=site-b`)).text();
      assert.match(csv, /\r\nsite-b,127\.0\.0\.1,site-b-bench,/);
      const page = await (await fetch(`${central.base}/`)).text();
      for (const s of ["site-a", "site-b"]) assert.match(page, new RegExp(`data-site="${s}"`));

      // The database down: a site's installs wait in its outbox and reach the central inventory when it is back.
      const helloAt = async () =>
        (await (await fetch(`${central.base}/_/installs?site=site-a&package=hello`)).json()).count as number;
      const helloBefore = await helloAt();
      await pg.stop();
      const later = tempDir("mip-site-a-");
      await mipInstall(siteA.base, later, "hello");
      await until("site A's batch waits", () => (siteA.app.recorder.figures().database?.waiting_batches ?? 0) > 0);
      await pg.start();
      await until("site A's outbox is sent", () => siteA.app.recorder.figures().database?.waiting_batches === 0);
      assert.equal(await helloAt(), helloBefore + 1);

      // The central server down: a site serves what it has, and passes on the 404 it remembered; what it lacks is
      // an error that says the central server cannot be reached, never a 404.
      await central.stop();
      servers.shift();
      const offline = tempDir("mip-site-a-");
      await mipInstall(siteA.base, offline, "mathx");
      assert.deepEqual(
        installed(offline),
        Object.fromEntries(
          Object.entries(installed(direct)).filter(([f]) => !f.startsWith("hello")),
        ),
      );
      // The named package installs through the site with the central server down (its dependency is the site's).
      const namedOffline = tempDir("mip-site-a-");
      await mipInstall(siteA.base, namedOffline, "sensorkit");
      assert.deepEqual(installed(namedOffline), installed(namedDirect));
      const cachedDep = await fetch(`${siteA.base}${helpers}`);
      assert.equal(cachedDep.status, 200, "the site answers the dependency it has");
      await cachedDep.body?.cancel();
      const remembered = await fetch(`${siteA.base}/package/6/nosuchpkg/latest.json`);
      assert.equal(remembered.status, 404);
      await remembered.body?.cancel();
      const lacking = await fetch(`${siteA.base}/package/6/bigmod/latest.json`);
      const reason = await lacking.text();
      assert.ok(lacking.status >= 500, `${lacking.status} ${reason}`);
      assert.match(reason, new RegExp(central.base.replace(/[.:/]/g, "\\$&")));
    } finally {
      for (const s of servers) await s.stop().catch(() => {});
      await up.stop();
      await pg.destroy();
    }
  },
});
