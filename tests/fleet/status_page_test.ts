/**
 * The status page in a real browser: headless Chromium (Debian's `chromium`) with JavaScript off loads `/` from a
 * server that devices installed through, and the DOM it builds shows the devices, their flags and the figures. A
 * screenshot at phone width is saved to tests/out/ (git-ignored) for people to look at.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { VERSION } from "../../src/version.ts";
import { renderStatusPage } from "../../src/fleet/status_page.ts";
import { replayFrom } from "./tools.ts";
import { openPage } from "./browser.ts";
import { ENGINES, serveOnEngine } from "./records_env.ts";

const OUT = new URL("../out/", import.meta.url).pathname;

/** mip's request (HTTP/1.0, Host without the port, Connection: close; see the devices test, which captures it). */
const head = (path: string) => `GET ${path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`;

const textOf = (dom: string, id: string) => {
  const m = new RegExp(`id="${id}"[^>]*>([^<]*)<`).exec(dom);
  return m?.[1];
};

Deno.test("the status page escapes what devices and upstreams put in it", () => {
  const html = renderStatusPage({
    version: "<v>",
    uptimeMs: 1000,
    now: 0,
    upstreams: [],
    otherHosts: [],
    cache: null,
    requests: 0,
    hitRatio: null,
    spans: [],
    devices: [{
      site: "gw",
      device: "10.0.0.1",
      name: "<script>x</script>",
      last_seen: "2026-01-01T00:00:00Z",
      packages: [],
    }],
    installs: [],
    errors: [{ time: 0, client: "c", method: "GET", path: "/<img src=x>", status: 404, reason: 'Not "found" & <b>' }],
    compiler: { version: null, mpy: null },
    profiles: [],
    audit: {
      enabled: true,
      window_ms: 30_000,
      retention_ms: 86_400_000,
      records: {
        size_bytes: 1024,
        max_bytes: 2048,
        rows_dropped: 0,
        devices_forgotten: 0,
        requests_not_kept: 0,
        requests_unwritten: 0,
        write_error: null,
      },
    },
  });
  assert.ok(!html.includes("<script>") && !html.includes("<img src=x>") && !html.includes("<b>"), html);
  assert.ok(!html.includes("records-dropped"), "no warning while nothing was dropped");
  assert.match(html, /&lt;script&gt;x&lt;\/script&gt;/);
  assert.ok(!/<script|src="http|href="http/i.test(html), "nothing is loaded from elsewhere");
});

for (const engine of ENGINES) {
  Deno.test(`[${engine}] Chromium with JavaScript off renders the status page with the devices, their flags and the figures`, async () => {
    const { idx, up, server } = await serveOnEngine(engine, {
      devices: { "127.0.0.2": "greenhouse-3", "127.0.0.3": "pump-house" },
    }, "127.0.0.1");
    try {
      const hello = idx.hashes.get("6/hello/1.1/hello.mpy")!;
      const old = idx.hashes.get("6/hello/1.0/hello.mpy")!;
      const ok = [200, 200];
      assert.deepEqual(
        await replayFrom("127.0.0.2", server.port, [
          head("/package/6/hello/latest.json"),
          head(`/file/${hello.slice(0, 2)}/${hello}`),
        ]),
        ok,
      );
      assert.deepEqual(
        await replayFrom("127.0.0.3", server.port, [
          head("/package/6/hello/1.0.json"),
          head(`/file/${old.slice(0, 2)}/${old}`),
        ]),
        ok,
      );
      assert.deepEqual(await replayFrom("127.0.0.4", server.port, [head("/package/6/mathx/latest.json")]), [200]);
      assert.deepEqual(await replayFrom("127.0.0.4", server.port, [head("/package/6/nosuch/latest.json")]), [404]);

      const url = `http://127.0.0.1:${server.port}/`;
      const page = await openPage();
      try {
        // JavaScript is really off: a script that would change the page does not run.
        await page.load(
          `data:text/html,<p id="x">off</p><script>document.getElementById("x").textContent="on"</script>`,
        );
        assert.match(await page.html(), /<p id="x">off<\/p>/);
        await page.load(url);
        const dom = await page.html();
        assert.match(dom, /<title>mipserver status<\/title>/);
        assert.equal(textOf(dom, "version"), VERSION);
        assert.equal(textOf(dom, "device-count"), "3");
        assert.equal(textOf(dom, "outdated-count"), "1");
        assert.equal(textOf(dom, "partial-count"), "1");
        assert.match(textOf(dom, "hit-ratio") ?? "", /^\d+\.\d%$/);
        assert.match(textOf(dom, "requests") ?? "", /^\d+$/);
        assert.equal(textOf(dom, "requests"), "6", "the six device requests before the page");
        assert.match(textOf(dom, "cache-objects") ?? "", /^[1-9]\d*$/);
        assert.match(textOf(dom, "mpy-cross") ?? "", /mpy v6|\.mpy 6/);
        assert.match(dom, /greenhouse-3/);
        assert.match(dom, /pump-house/);
        // pump-house runs hello 1.0 while the index has 1.1: its row is highlighted as outdated.
        assert.match(dom, /<tr class="outdated" data-device="127\.0\.0\.3" data-package="hello">/);
        // 127.0.0.4 stopped after mathx's manifest: highlighted as partial.
        assert.match(dom, /<tr class="partial" data-device="127\.0\.0\.4" data-package="mathx">/);
        assert.match(dom, /<tr class="" data-device="127\.0\.0\.2" data-package="hello">.*?up to date/);
        // The failed install's reason is among the recent errors.
        assert.match(dom, /nosuch/);
        assert.match(dom, /<svg[^>]*class="chart"/);
        assert.match(
          dom,
          /data-upstream="http:\/\/127\.0\.0\.1:\d+\/pi\/v2"><td>index <code>[^<]+<\/code><\/td><td><span class="ok">ok<\/span>/,
        );

        if (engine === "postgres") assert.match(dom, /in PostgreSQL \(at most \d+ rows\)/);
        await Deno.mkdir(OUT, { recursive: true });
        const png = await page.screenshot();
        await Deno.writeFile(join(OUT, engine === "sqlite" ? "status_page.png" : `status_page_${engine}.png`), png);
        assert.deepEqual([...png.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47], "the screenshot is a PNG");
        assert.ok(png.byteLength > 10_000, `screenshot of ${png.byteLength} bytes`);
      } finally {
        await page.close();
      }
    } finally {
      await server.stop();
      await up.stop();
    }
  });
}
