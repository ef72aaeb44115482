/**
 * `mipserver import` refuses a tampered, truncated or foreign bundle and changes nothing (the cache tree is compared
 * file by file before and after, temporaries included); a good import into the cache of a running server is served
 * within seconds while the server keeps answering.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { packTar, unpackTar } from "modern-tar";
import { importBundle } from "../../src/bundle/import.ts";
import { DOWN_DEADLINE_MS } from "../../src/packages/layer.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { standardIndex } from "../fixtures/index_fixture.ts";
import { freePort, openDisk, tempDir } from "../helpers.ts";
import { mipInstall, mpyCrossPath, runIn, serveApp } from "../e2e/tools.ts";
import { cli, configFile, tree } from "./helpers.ts";

/** Bundles made once from a warmed office cache: everything (hello, mathx, bigmod), and hello alone. */
async function officeBundles(): Promise<{ all: string; hello: string }> {
  const idx = await standardIndex();
  const index = new FakeUpstream(idx.root).start();
  try {
    const config = configFile({
      cache: { dir: tempDir("mipserver-office-") },
      upstreams: { index: index.url, retries: 0 },
      mpy_cross: { path: mpyCrossPath() },
    });
    assert.equal(await cli("warm", "--config", config, "hello", "mathx", "bigmod"), 0);
    const dir = tempDir("mipserver-bundles-");
    const all = join(dir, "all.tar.gz");
    const hello = join(dir, "hello.tar.gz");
    assert.equal(await cli("export", "--config", config, "--output", all), 0);
    assert.equal(await cli("export", "--config", config, "--output", hello, "hello"), 0);
    return { all, hello };
  } finally {
    await index.stop();
  }
}

/** Rewrites a bundle's tar entries with `change` and writes it gzipped to a new file. */
async function rewrite(
  bundle: string,
  change: (entries: { header: { name: string; size: number }; data?: Uint8Array }[]) => void,
): Promise<string> {
  const entries = await unpackTar(gunzipSync(Deno.readFileSync(bundle)));
  change(entries as { header: { name: string; size: number }; data?: Uint8Array }[]);
  const tar = await packTar(entries.map((e) => ({ header: e.header, body: e.data })));
  const out = join(tempDir("mipserver-tampered-"), "bundle.tar.gz");
  Deno.writeFileSync(out, gzipSync(tar));
  return out;
}

Deno.test("a tampered, truncated or foreign bundle is refused, names what failed, and changes nothing", async () => {
  const { all, hello } = await officeBundles();
  const ship = tempDir("mipserver-ship-");
  await importBundle(() => openDisk(ship), hello);
  const firstFile = (entries: { header: { name: string } }[]) =>
    entries.findIndex((e) => e.header.name.startsWith("files/"));

  const oneByte = await rewrite(all, (entries) => {
    const e = entries[firstFile(entries)];
    e.data = e.data!.slice();
    e.data[Math.floor(e.data.length / 2)] ^= 0x01;
  });
  const missing = await rewrite(all, (entries) => void entries.splice(firstFile(entries), 1));
  const bytes = Deno.readFileSync(all);
  const truncated = join(tempDir("mipserver-tampered-"), "bundle.tar.gz");
  Deno.writeFileSync(truncated, bytes.subarray(0, Math.floor(bytes.length * 0.6)));
  const foreign = join(tempDir("mipserver-tampered-"), "bundle.tar.gz");
  Deno.writeFileSync(
    foreign,
    gzipSync(await packTar([{ header: { name: "README", size: 5, type: "file" }, body: "hello" }])),
  );
  const extra = await rewrite(all, (entries) => {
    const data = new TextEncoder().encode("print('pwned')\n");
    entries.push({ header: { name: "files/00/00000000", size: data.length }, data });
  });
  const lying = await rewrite(all, (entries) => {
    // The manifest drops a file and the file goes too: every entry matches, but a manifest needs that file.
    const m = JSON.parse(new TextDecoder().decode(entries[0].data));
    const i = firstFile(entries);
    const name = entries[i].header.name;
    m.objects = m.objects.filter((o: { path: string }) => o.path !== name);
    const data = new TextEncoder().encode(JSON.stringify(m));
    entries[0] = { header: { ...entries[0].header, size: data.length }, data };
    entries.splice(i, 1);
  });

  const cases: [string, string, RegExp][] = [
    ["one byte changed", oneByte, /Entry files\/[0-9a-f]{2}\/[0-9a-f]+ does not match its sha256/],
    ["one entry missing", missing, /Bundle is incomplete: 1 entry listed in mipserver-bundle\.json missing \(files\//],
    ["truncated", truncated, /Cannot read the bundle \(at entry [^)]+\): .*(end|trunc)/i],
    ["foreign", foreign, /Not a mipserver bundle: its first entry is "README"/],
    ["an entry not in the manifest", extra, /Entry files\/00\/00000000 is not listed in mipserver-bundle\.json/],
    ["a manifest's file missing", lying, /Bundle is incomplete: served\/package\/.* needs file [0-9a-f]+/],
  ];
  for (const [what, bundle, message] of cases) {
    const before = tree(ship);
    await assert.rejects(importBundle(() => openDisk(ship), bundle), message, what);
    assert.deepEqual(tree(ship), before, `${what}: the cache changed`);
    assert.equal(await cli("import", "--config", configFile({ cache: { dir: ship } }), bundle), 1, what);
    assert.deepEqual(tree(ship), before, `${what}: the cache changed (CLI)`);
  }
  // Into a cache folder that does not exist yet: it still does not.
  const none = join(tempDir("mipserver-ship-"), "cache");
  await assert.rejects(importBundle(() => openDisk(none), oneByte), /does not match/);
  assert.throws(() => Deno.statSync(none), Deno.errors.NotFound);
  // The untouched bundle imports.
  await importBundle(() => openDisk(ship), all);
  assert.ok(tree(ship).some((line) => line.startsWith("bundle/served/package/6/mathx/latest.json ")));
});

Deno.test("importing into a running server's cache: served within seconds, no failed answer meanwhile", async () => {
  const { all, hello } = await officeBundles();
  const ship = tempDir("mipserver-ship-");
  await importBundle(() => openDisk(ship), hello);
  const dead = `http://127.0.0.1:${freePort()}`;
  const { base, stop } = await serveApp({
    cache: { dir: ship },
    upstreams: { index: `${dead}/pi/v2`, github: dead, retries: 0 },
    mpy_cross: { path: mpyCrossPath() },
  });
  try {
    const before = await fetch(`${base}/package/6/mathx/latest.json`);
    assert.equal(before.status, 503);
    assert.match(await before.text(), /mathx latest \(6\) was not imported/);
    const manifest = await (await fetch(`${base}/package/6/hello/latest.json`)).json();
    const [, h] = manifest.hashes[0];
    let running = true;
    const failures: string[] = [];
    let answered = 0;
    const load = (async () => {
      while (running) {
        for (const path of ["/package/6/hello/latest.json", `/file/${h.slice(0, 2)}/${h}`, "/index.json"]) {
          const res = await fetch(`${base}${path}`);
          await res.arrayBuffer();
          answered++;
          if (res.status !== 200) failures.push(`${path}: ${res.status}`);
        }
      }
    })();
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(await cli("import", "--config", configFile({ cache: { dir: ship } }), all), 0);
    const imported = performance.now();
    let status = 0;
    while (performance.now() - imported < 3000) {
      const res = await fetch(`${base}/package/6/mathx/latest.json`);
      await res.arrayBuffer();
      status = res.status;
      if (status === 200) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    running = false;
    await load;
    assert.equal(status, 200, "mathx is served within 3 s of the import");
    assert.deepEqual(failures, [], `${answered} answers during the import`);
    assert.ok(answered > 10, `only ${answered} answers during the import`);
    const t = tempDir("mip-target-");
    await mipInstall(base, t, "mathx");
    assert.equal(await runIn(t, "import mathx; print(mathx.mul(6, 7))"), "42");
  } finally {
    await stop();
  }
});

Deno.test("an upstream that swallows connections: once found unreachable, what no bundle holds is a 503 within a second", async () => {
  const { all } = await officeBundles();
  const ship = tempDir("mipserver-ship-");
  await importBundle(() => openDisk(ship), all);
  // Accepts connections and never answers.
  const sink = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const sinkPort = (sink.addr as Deno.NetAddr).port;
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    try {
      for await (const conn of sink) held.push(conn);
    } catch {
      // closed
    }
  })();
  const markers = new Set<number>();
  /**
   * How many connections the server made to the sink so far: the sink's own marker connection is accepted after
   * every connection whose handshake finished before it (one accept queue, first in first out), so no clock is
   * involved in saying "none was made meanwhile".
   */
  const upstreamConnections = async (): Promise<number> => {
    const marker = await Deno.connect({ hostname: "127.0.0.1", port: sinkPort });
    const port = (marker.localAddr as Deno.NetAddr).port;
    markers.add(port);
    try {
      for (;;) {
        const at = held.findIndex((c) => (c.remoteAddr as Deno.NetAddr).port === port);
        if (at >= 0) return held.slice(0, at).filter((c) => !markers.has((c.remoteAddr as Deno.NetAddr).port)).length;
        await new Promise((r) => setTimeout(r, 10));
      }
    } finally {
      marker.close();
    }
  };
  const hole = `http://127.0.0.1:${sinkPort}`;
  const { base, stop } = await serveApp({
    cache: { dir: ship },
    upstreams: { index: `${hole}/pi/v2`, github: hole, retries: 0, connect_timeout: "2s", timeout: "3s" },
    mpy_cross: { path: mpyCrossPath() },
  });
  const get = async (path: string) => {
    const res = await fetch(`${base}${path}`);
    return { status: res.status, text: await res.text() };
  };
  // Which of two timers answered tells the waits apart, whatever the machine's speed: the fetcher's connect timeout
  // (2 s here) names itself in the first answer, and the imported layer's deadline (DOWN_DEADLINE_MS, under a
  // second: a 2 s timer cannot beat it) in the later ones. How many ms each took is a figure bench/bundle.ts prints.
  assert.ok(DOWN_DEADLINE_MS < 1000, `DOWN_DEADLINE_MS is ${DOWN_DEADLINE_MS}`);
  try {
    // An imported manifest is served from the bundle; upstream is not asked first.
    const before = await upstreamConnections();
    const imported = await get("/package/6/mathx/latest.json");
    assert.equal(imported.status, 200, imported.text);
    assert.equal(JSON.parse(imported.text).version, "0.2", "the bundled manifest");
    assert.equal(await upstreamConnections(), before, "serving an imported manifest connected to upstream");

    const first = await get("/package/6/nosuch/latest.json");
    assert.equal(first.status, 503, first.text);
    assert.match(
      first.text,
      /^Offline: nosuch latest \(6\) was not imported .* upstream cannot be reached \(Upstream did not answer within 2000ms: /,
      `the first miss waits for the connect timeout: ${first.text}`,
    );
    for (
      const [path, what] of [
        ["/package/6/other/latest.json", "other latest \\(6\\)"],
        ["/package/py/third/1.0.json", "third 1\\.0 \\(py\\)"],
        ["/file/ab/abcdef12", "file abcdef12"],
      ]
    ) {
      const next = await get(path);
      assert.equal(next.status, 503, next.text);
      assert.match(
        next.text,
        new RegExp(
          `^Offline: ${what} was not imported \\(no imported bundle holds it\\) and upstream, unreachable \\d+ s ago, did not answer within ${DOWN_DEADLINE_MS} ms\\n?$`,
        ),
        `${path}: answered at the imported layer's deadline, not after the connect timeout: ${next.text}`,
      );
    }
    const index = await get("/index.json");
    assert.equal(index.status, 200);
    assert.deepEqual(JSON.parse(index.text).packages.map((p: { name: string }) => p.name), [
      "bigmod",
      "hello",
      "mathx",
    ]);
  } finally {
    await stop();
    sink.close();
    for (const c of held) c.close();
    await accepting;
  }
});
