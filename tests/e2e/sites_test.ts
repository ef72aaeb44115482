/**
 * A central server and two site gateways chained to it (`upstreams.index` the central server's URL, `upstreams.github`,
 * `gitlab` and `codeberg` its mirrors), every one recording installs in one real PostgreSQL under its own
 * `audit.site`, with fixture upstreams behind the central server. The real mip installs index packages and named
 * packages with GitHub, GitLab and Codeberg dependencies through each: byte-identical to the central server's, the
 * second site adds no upstream fetch; the central inventory shows every site's devices with the site's name, filters by
 * site, and does not take a site's own fetches for a device. With the central server down, a site serves what it has,
 * passes on the central's 404s it remembered, and answers what it lacks with a 503 naming the central server; with the
 * central back it answers them again. With the database down, a site's records wait in its outbox and reach the central
 * inventory once it is back.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { FakeForgejo } from "../fixtures/codeberg_fixture.ts";
import { startPostgres } from "../fixtures/postgres.ts";
import { startUpstreams } from "../fixtures/upstreams.ts";
import { filesBelow, freePort, tempDir } from "../helpers.ts";
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
    const forgejo = new FakeForgejo({
      "acme/cbpkg/main/package.json": JSON.stringify({ urls: [["cbpkg.py", "cbpkg.py"]], version: "0.3" }),
      "acme/cbpkg/main/cbpkg.py": `def where():\n    return "from codeberg"\n`,
    }).start();
    // A named package of the central server whose dependencies live on GitLab and Codeberg.
    const chainkit = tempDir("mipserver-chainkit-");
    Deno.writeTextFileSync(
      join(chainkit, "package.json"),
      JSON.stringify({
        urls: [["chainkit.py", "chainkit.py"]],
        deps: [["gitlab:grp/glpkg", "main"], ["codeberg:acme/cbpkg", "main"]],
        version: "1.0",
      }),
    );
    Deno.writeTextFileSync(
      join(chainkit, "chainkit.py"),
      "import glpkg, cbpkg\n\nWHERE = (glpkg.where(), cbpkg.where())\nassert WHERE\n",
    );
    const servers: ServedApp[] = [];
    try {
      const db = await pg.database();
      const audit = (site: string) => ({ database: db.urlWithPassword, site, window: "5s" });
      // The central server at a fixed port and cache folder, so that it can be stopped and started again below.
      const centralConfig = {
        server: { port: freePort() },
        cache: { dir: tempDir() },
        upstreams: { ...up.upstreams, codeberg: forgejo.url },
        packages: { sensorkit: { source: "github:acme/sensorkit" }, chainkit: { source: `local:${chainkit}` } },
        pins: { hello: "1.0" }, // the central server's pins hold at its sites too
        audit: { ...audit("central"), max_rows: 50_000 },
      };
      let central = await serveApp(centralConfig, { record: true });
      servers.push(central);
      const site = (name: string) =>
        serveApp({
          cache: { dir: tempDir() },
          upstreams: {
            index: central.base,
            github: `${central.base}/github`,
            gitlab: `${central.base}/gitlab`,
            codeberg: `${central.base}/codeberg`,
            retries: 0,
            breaker: { open_for: "1s" },
          },
          audit: audit(name),
          targets: { x64: { march: "x64", opt: 3 } }, // a profile of the site's own, which the central server lacks
          devices: { "127.0.0.1": `${name}-bench` },
        }, { record: true });
      const siteA = await site("site-a");
      servers.push(siteA);
      const siteB = await site("site-b");
      servers.push(siteB);

      // The packages installed straight from the central server: what a device there gets.
      const direct = tempDir("mip-central-");
      for (const pkg of ["hello", "mathx"]) await mipInstall(central.base, direct, pkg);
      const namedDirect = tempDir("mip-central-");
      await mipInstall(central.base, namedDirect, "sensorkit");
      const chainDirect = tempDir("mip-central-");
      await mipInstall(central.base, chainDirect, "chainkit");
      assert.ok(Object.keys(installed(namedDirect)).includes("helpers.mpy"));
      assert.ok(Object.keys(installed(direct)).length >= 3);
      assert.deepEqual(Object.keys(installed(chainDirect)).sort(), ["cbpkg.mpy", "chainkit.mpy", "glpkg.mpy"]);
      await central.app.fleet.settle();
      const centralInstalls = async () =>
        (await (await fetch(`${central.base}/_/installs?site=central`)).json()).count as number;
      const installedAtCentral = await centralInstalls();
      assert.ok(installedAtCentral >= 4, `${installedAtCentral}`);

      // The same packages through site A: the same bytes on the device. The named packages' repository dependencies
      // (GitHub, GitLab, Codeberg) come from the site too (see below).
      const viaA = tempDir("mip-site-a-");
      for (const pkg of ["hello", "mathx"]) await mipInstall(siteA.base, viaA, pkg);
      assert.deepEqual(installed(viaA), installed(direct));
      assert.match(Deno.readTextFileSync(join(viaA, "hello.mpy")), /hello 1\.0/, "the pinned release, not the newest");
      const namedViaA = tempDir("mip-site-a-");
      await mipInstall(siteA.base, namedViaA, "sensorkit");
      assert.deepEqual(installed(namedViaA), installed(namedDirect));
      const chainViaA = tempDir("mip-site-a-");
      await mipInstall(siteA.base, chainViaA, "chainkit");
      assert.deepEqual(installed(chainViaA), installed(chainDirect));
      // Compiled for the site's own profile by the site: the central server has no such profile.
      const chainX64 = tempDir("mip-site-a-");
      await mipInstall(`${siteA.base}/t/x64`, chainX64, "chainkit");
      assert.deepEqual(Object.keys(installed(chainX64)).sort(), Object.keys(installed(chainDirect)).sort());
      assert.notDeepEqual(installed(chainX64), installed(chainDirect), "compiled with -O3");
      // A second site installing the same packages makes no request to the upstreams behind the central server.
      await central.app.idle();
      const before = [up.index, up.github, up.gitlab, forgejo].map((u) => u.log.length);
      const viaB = tempDir("mip-site-b-");
      for (const pkg of ["hello", "mathx"]) await mipInstall(siteB.base, viaB, pkg);
      assert.deepEqual(installed(viaB), installed(direct));
      const chainViaB = tempDir("mip-site-b-");
      await mipInstall(siteB.base, chainViaB, "chainkit");
      assert.deepEqual(installed(chainViaB), installed(chainDirect));
      assert.deepEqual([up.index, up.github, up.gitlab, forgejo].map((u) => u.log.length), before);
      // The central server recorded the sites' fetches as a site's, not as a device installing: its own device's
      // installs are the ones made above, and its request log marks the sites' requests.
      await central.app.fleet.settle();
      assert.equal(await centralInstalls(), installedAtCentral);
      // (The central server has no x64 profile: the site compiled chainkit above itself.)
      const noProfile = await fetch(`${central.base}/t/x64/package/6/chainkit/latest.json`);
      assert.equal(noProfile.status, 404);
      await noProfile.body?.cancel();
      const peers = (await (await fetch(`${central.base}/_/requests?limit=1000`)).json()).requests as { peer?: true }[];
      assert.ok(peers.some((r) => r.peer === true), "the sites' requests are marked");
      // The site's GitLab and Codeberg dependencies went through the central server's mirrors in the hosts' own layout.
      const glDep = "/repo/6/gitlab/grp/glpkg/main/package.json";
      const cbDep = "/repo/6/codeberg/acme/cbpkg/main/package.json";
      const chained = await (await fetch(`${siteA.base}/package/6/chainkit/latest.json`)).json();
      assert.deepEqual(chained.deps, [[`${siteA.base}${glDep}`, "main"], [`${siteA.base}${cbDep}`, "main"]]);
      for (const dep of [glDep, cbDep]) {
        assert.equal(
          await (await fetch(`${siteA.base}${dep}`)).text(),
          await (await fetch(`${central.base}${dep}`)).text(),
          `${dep}: the same manifest, the same compiled file hashes`,
        );
      }
      const raw = await fetch(`${central.base}/gitlab/grp/glpkg/-/raw/main/package.json`);
      assert.equal(raw.status, 200);
      assert.deepEqual(await raw.json(), { urls: [["glpkg.py", "glpkg.py"]], version: "2.0" }, "raw, as GitLab has it");
      const rawCb = await fetch(`${central.base}/codeberg/api/v1/repos/acme/cbpkg/raw/cbpkg.py?ref=main`);
      assert.equal(await rawCb.text(), `def where():\n    return "from codeberg"\n`);
      const badLayout = await fetch(`${central.base}/codeberg/api/v1/repos/acme/cbpkg/raw/cbpkg.py?ref=..`);
      assert.equal(badLayout.status, 400);
      await badLayout.body?.cancel();
      // The central server's row cap from audit.max_rows.
      const health = await (await fetch(`${central.base}/healthz`)).json();
      assert.equal(health.records.max_rows, 50_000);
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
        const mine = d.packages.filter((p) => p.package === "hello" || p.package === "mathx");
        assert.deepEqual(mine.map((p) => [p.package, p.last_status]), [["hello", "complete"], ["mathx", "complete"]]);
      }
      const packagesOf = (site: string) => devices.find((d) => d.site === site)!.packages.map((p) => p.package).sort();
      // The same installs at the centre as at site A (where the test also asked for a package that does not exist);
      // the raw files fetched from the central's GitLab layout above are no install.
      assert.deepEqual(
        packagesOf("site-a").filter((p) => p !== "nosuchpkg"),
        packagesOf("central"),
        "the same installs at the centre and at site A",
      );
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
      // a 503 that says the central server cannot be reached, never a 404.
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
      const chainOffline = tempDir("mip-site-a-");
      await mipInstall(siteA.base, chainOffline, "chainkit");
      assert.deepEqual(installed(chainOffline), installed(chainDirect));
      const cachedDep = await fetch(`${siteA.base}${helpers}`);
      assert.equal(cachedDep.status, 200, "the site answers the dependency it has");
      await cachedDep.body?.cancel();
      const remembered = await fetch(`${siteA.base}/package/6/nosuchpkg/latest.json`);
      assert.equal(remembered.status, 404);
      await remembered.body?.cancel();
      const lacking = await fetch(`${siteA.base}/package/6/bigmod/latest.json`);
      const reason = await lacking.text();
      assert.equal(lacking.status, 503, reason);
      assert.match(lacking.headers.get("retry-after") ?? "", /^\d+$/);
      assert.match(reason, new RegExp(`^Cannot reach upstream ${central.base.replace(/[.:/]/g, "\\$&")}`));
      const failedInstall = tempDir("mip-site-a-");
      const refused = await mipInstall(siteA.base, failedInstall, "bigmod").then(() => "installed", (e) => String(e));
      assert.notEqual(refused, "installed", "nothing to install from");

      // The central server back at its address: the site answers what it lacked, within the breaker's open_for.
      central = await serveApp(centralConfig, { record: true });
      servers.unshift(central);
      await until("the site reaches the central server again", async () => {
        const res = await fetch(`${siteA.base}/package/6/bigmod/latest.json`);
        await res.body?.cancel();
        return res.status === 200;
      });
      const caughtUp = tempDir("mip-site-a-");
      await mipInstall(siteA.base, caughtUp, "bigmod");
      const bigDirect = tempDir("mip-central-");
      await mipInstall(central.base, bigDirect, "bigmod");
      assert.deepEqual(installed(caughtUp), installed(bigDirect));
      const stillMissing = await fetch(`${siteA.base}/package/6/nosuchpkg/latest.json`);
      assert.equal(stillMissing.status, 404);
      await stillMissing.body?.cancel();
    } finally {
      for (const s of servers) await s.stop().catch(() => {});
      await up.stop();
      await forgejo.stop();
      await pg.destroy();
    }
  },
});
