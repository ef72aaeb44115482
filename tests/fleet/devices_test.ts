/**
 * Installs from several devices over real sockets: the real MicroPython mip (through a relay that keeps the requests
 * it sends), then those same HTTP/1.0 requests replayed from sockets bound to 127.0.0.2, 127.0.0.3 and 127.0.0.4.
 * The server runs with two edge worker threads, so repeated answers come from the edge and are recorded too.
 */
import assert from "node:assert/strict";
import { tempDir } from "../helpers.ts";
import { mipInstall } from "../e2e/tools.ts";
import { captureProxy, lanAddress, pathOf, replayFrom } from "./tools.ts";
import { ENGINES, serveOnEngine } from "./records_env.ts";

for (const engine of ENGINES) {
  Deno.test(`[${engine}] installs from a real mip and replayed devices: records, statuses, inventory, outdated flags`, async () => {
    const { idx, up, server } = await serveOnEngine(engine, {
      audit: { window: "2s" },
      devices: { "127.0.0.2": "greenhouse-2", "127.0.0.3": "shed-1" },
    });
    const proxy = captureProxy(server.port);
    try {
      const target = tempDir("mip-target-");
      await mipInstall(proxy.url, target, "hello");
      await mipInstall(proxy.url, target, "mathx");
      const heads = proxy.heads;
      assert.deepEqual(heads.map(pathOf).map((p) => p.replace(/[0-9a-f]{8}$/, "H")), [
        "/package/6/hello/latest.json",
        "/file/" + pathOf(heads[1]).split("/")[2] + "/H",
        "/package/6/mathx/latest.json",
        "/file/" + pathOf(heads[3]).split("/")[2] + "/H",
        "/file/" + pathOf(heads[4]).split("/")[2] + "/H",
      ]);
      assert.match(heads[0], /^GET \/package\/6\/hello\/latest\.json HTTP\/1\.0\r\n/, "mip speaks HTTP/1.0");
      const hello = heads.slice(0, 2);
      const mathx = heads.slice(2, 5);

      // greenhouse-2 installs hello completely; shed-1 stops after mathx's manifest.
      assert.deepEqual(await replayFrom("127.0.0.2", server.port, hello), [200, 200]);
      assert.deepEqual(await replayFrom("127.0.0.3", server.port, mathx.slice(0, 1)), [200]);
      // 127.0.0.4 installs the older hello 1.0: same request shape, another path.
      const old = idx.hashes.get("6/hello/1.0/hello.mpy")!;
      const v10 = [
        hello[0].replace("/hello/latest.json", "/hello/1.0.json"),
        hello[1].replace(pathOf(hello[1]), `/file/${old.slice(0, 2)}/${old}`),
      ];
      assert.deepEqual(await replayFrom("127.0.0.4", server.port, v10), [200, 200]);
      await new Promise((r) => setTimeout(r, 2500));
      // greenhouse-2 installs hello again: mip has the file, so only the manifest is fetched.
      assert.deepEqual(await replayFrom("127.0.0.2", server.port, hello.slice(0, 1)), [200]);

      const base = `http://127.0.0.1:${server.port}`;
      const installs = (await (await fetch(`${base}/_/installs`)).json()).installs as Record<string, unknown>[];
      const summary = installs.map((i) => [i.device, i.package, i.version, i.status, i.files_served, i.files_listed]);
      assert.deepEqual(summary, [
        ["127.0.0.2", "hello", "1.1", "complete", 0, 1],
        ["127.0.0.4", "hello", "1.0", "complete", 1, 1],
        ["127.0.0.3", "mathx", "0.2", "partial", 0, 2],
        ["127.0.0.2", "hello", "1.1", "complete", 1, 1],
        ["127.0.0.1", "mathx", "0.2", "complete", 2, 2],
        ["127.0.0.1", "hello", "1.1", "complete", 1, 1],
      ]);
      assert.equal(installs[0].device_name, "greenhouse-2");

      const devices = (await (await fetch(`${base}/_/devices`)).json()).devices as {
        device: string;
        name: string | null;
        packages: { package: string; version: string | null; outdated: boolean; last_status: string }[];
      }[];
      const view = Object.fromEntries(
        devices.map((d) => [d.device, d.packages.map((p) => [p.package, p.version, p.outdated, p.last_status])]),
      );
      assert.deepEqual(view, {
        "127.0.0.1": [["hello", "1.1", false, "complete"], ["mathx", "0.2", false, "complete"]],
        "127.0.0.2": [["hello", "1.1", false, "complete"]],
        "127.0.0.3": [["mathx", null, false, "partial"]],
        "127.0.0.4": [["hello", "1.0", true, "complete"]],
      });
      assert.equal(devices.find((d) => d.device === "127.0.0.3")!.name, "shed-1");

      // Not from loopback: the admin routes refuse this machine's LAN address (no token set); device routes answer.
      const lan = `http://${lanAddress()}:${server.port}`;
      for (const path of ["/", "/_/installs", "/_/devices", "/_/packages/hello", "/_/requests", "/metrics", "/echo"]) {
        const res = await fetch(`${lan}${path}`);
        assert.equal(res.status, 403, `${path} from ${lanAddress()}`);
        await res.body?.cancel();
      }
      for (const path of ["/healthz", "/index.json", pathOf(hello[0])]) {
        const res = await fetch(`${lan}${path}`);
        assert.equal(res.status, 200, path);
        await res.body?.cancel();
      }
    } finally {
      await proxy.stop();
      await server.stop();
      await up.stop();
    }
  });

  Deno.test(`[${engine}] behind a trusted proxy, devices are recorded by their forwarded address, repeated hits included`, async () => {
    const { idx, up, server } = await serveOnEngine(engine, {
      server: { trusted_proxies: ["127.0.0.1"] },
    }, "127.0.0.1");
    try {
      const base = `http://127.0.0.1:${server.port}`;
      const h = idx.hashes.get("6/hello/1.1/hello.mpy")!;
      // The same install from three devices behind one proxy, back to back: the edge would repeat these answers.
      for (const device of ["10.7.0.1", "10.7.0.2", "10.7.0.3"]) {
        for (const path of ["/package/6/hello/latest.json", `/file/${h.slice(0, 2)}/${h}`]) {
          const res = await fetch(`${base}${path}`, { headers: { "x-forwarded-for": device } });
          assert.equal(res.status, 200);
          await res.arrayBuffer();
        }
      }
      const installs = (await (await fetch(`${base}/_/installs`)).json()).installs as Record<string, unknown>[];
      assert.deepEqual(installs.map((i) => [i.device, i.status]), [
        ["10.7.0.3", "complete"],
        ["10.7.0.2", "complete"],
        ["10.7.0.1", "complete"],
      ]);
      const forwarded = await fetch(`${base}/_/installs`, { headers: { "x-forwarded-for": "10.7.0.1" } });
      assert.equal(forwarded.status, 403, "a LAN client behind the proxy is not loopback");
      await forwarded.body?.cancel();
    } finally {
      await server.stop();
      await up.stop();
    }
  });
}
