/**
 * `mipserver purge PKG[@VERSION]` against the cache of a running server: only what that release alone uses goes
 * (manifests, files no other cached manifest lists, compiled objects of those files); the server keeps answering,
 * and what was purged is fetched or built again when asked for.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { purge } from "../../src/bundle/purge.ts";
import { sha256Hex } from "../../src/store/hash.ts";
import { main } from "../../src/main.ts";
import { mpyCrossPath, serveApp } from "../e2e/tools.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { buildIndex, STANDARD_PACKAGES, TWOFILE } from "../fixtures/index_fixture.ts";
import { startUpstreams } from "../fixtures/upstreams.ts";
import { openDisk, tempDir } from "../helpers.ts";

const PACKAGES = [...STANDARD_PACKAGES, TWOFILE];

async function keys(root: string, top: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string) => {
    try {
      for await (const e of Deno.readDir(join(root, rel))) {
        if (e.isDirectory) await walk(`${rel}/${e.name}`);
        else out.push(`${rel}/${e.name}`);
      }
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  };
  await walk(top);
  return out.sort();
}

Deno.test("purge removes only what one release uses while the server keeps answering", async () => {
  const built = await buildIndex(PACKAGES);
  const up = await startUpstreams();
  const index = new FakeUpstream(built.root).start();
  const cacheDir = tempDir();
  const { base, stop } = await serveApp({
    cache: { dir: cacheDir },
    upstreams: { ...up.upstreams, index: index.url },
    packages: { sensorkit: { source: "github:acme/sensorkit" } },
    mpy_cross: { path: mpyCrossPath() },
  }, { workers: 0 });
  const get = async (path: string) => {
    const res = await fetch(`${base}${path}`);
    const body = new Uint8Array(await res.arrayBuffer());
    assert.equal(res.status, 200, `${path}: ${res.status} ${new TextDecoder().decode(body)}`);
    return body;
  };
  const install = async (path: string) => {
    const m = JSON.parse(new TextDecoder().decode(await get(path)));
    for (const [, h] of m.hashes) {
      const body = await get(`/file/${h.slice(0, 2)}/${h}`);
      assert.ok((await sha256Hex(body)).startsWith(h));
    }
    return m;
  };
  try {
    for (const mpy of ["py", "6"]) {
      await install(`/package/${mpy}/twofile/1.0.json`);
      await install(`/package/${mpy}/twofile/latest.json`);
      await install(`/package/${mpy}/twofile/2.0.json`);
      await install(`/package/${mpy}/hello/latest.json`);
      await install(`/package/${mpy}/sensorkit/latest.json`);
      await install(`/repo/${mpy}/github/acme/helpers/main/package.json`);
    }
    const h = (key: string) => built.hashes.get(key)!;
    const fileKey = (hash: string) => `files/${hash.slice(0, 2)}/${hash}`;
    const filesBefore = await keys(cacheDir, "files");
    const compiledBefore = await keys(cacheDir, "compiled");
    assert.ok(compiledBefore.length >= 3, compiledBefore.join(","));

    // Requests keep coming while the purge runs.
    let running = true;
    const traffic = (async () => {
      let n = 0;
      while (running) {
        await install("/package/6/twofile/1.0.json");
        await install("/package/6/hello/latest.json");
        n++;
      }
      return n;
    })();
    const report = await purge(await openDisk(cacheDir), "twofile", "2.0");
    running = false;
    assert.ok((await traffic) > 0);

    assert.deepEqual(report.manifests.map((k) => k.replace(/^index\/[0-9a-f]+\//, "")), [
      "package/6/twofile/2.0.json",
      "package/6/twofile/latest.json",
      "package/py/twofile/2.0.json",
      "package/py/twofile/latest.json",
    ]);
    assert.deepEqual(
      report.objects,
      [fileKey(h("6/twofile/2.0/tf/b.mpy")), fileKey(h("py/twofile/2.0/tf/b.py"))].sort(),
    );
    assert.equal(report.shared, 2, "a.py and a.mpy stay: 1.0 lists them too");
    const filesAfter = await keys(cacheDir, "files");
    assert.deepEqual(filesAfter, filesBefore.filter((k) => !report.objects.includes(k)));
    assert.ok(filesAfter.includes(fileKey(h("6/twofile/1.0/tf/a.mpy"))));
    // The server answers for the purged release again, fetching it anew.
    await install("/package/py/twofile/2.0.json");

    // A named package: its manifests, its own files, and the compiled objects made from them go; its repository
    // dependency and the index package it depends on stay.
    const sk = JSON.parse(new TextDecoder().decode(await get("/package/py/sensorkit/latest.json")));
    const own = (sk.hashes as string[][]).map(([, hash]) => hash);
    const named = await purge(await openDisk(cacheDir), "sensorkit");
    assert.ok(named.manifests.every((k) => k.startsWith("named/sensorkit/")) && named.manifests.length === 2);
    for (const hash of own) {
      assert.ok(named.objects.includes(fileKey(hash)), `${hash} removed`);
      assert.ok(named.objects.some((k) => k.startsWith(`compiled/${hash.slice(0, 2)}/${hash}-`)), `compiled ${hash}`);
    }
    const compiledAfter = await keys(cacheDir, "compiled");
    assert.equal(compiledAfter.length, compiledBefore.length - own.length);
    assert.ok((await keys(cacheDir, "repo")).length === 2, "the repository dependency's manifests stay");
    await install("/package/6/hello/latest.json");
    await install("/package/6/twofile/1.0.json");

    // The command: nothing cached is no error; a purge through main() works on the same cache.
    const dir = tempDir();
    const config = join(dir, "config.yaml");
    Deno.writeTextFileSync(config, JSON.stringify({ cache: { dir: cacheDir }, log: { level: "error" } }));
    assert.equal(await main(["purge", "--config", config, "nosuchpkg"]), 0);
    assert.equal(await main(["purge", "--config", config, "hello@1.1"]), 0);
    assert.ok(!(await keys(cacheDir, "files")).includes(fileKey(h("6/hello/1.1/hello.mpy"))));
    assert.equal(await main(["purge", "--config", config, "a", "b"]), 2);
  } finally {
    await stop();
    await Promise.all([up.stop(), index.stop()]);
  }
});

Deno.test("purge keeps an imported bundle's manifests and the files they list, and removes a profile's build", async () => {
  const store = await openDisk(tempDir());
  const enc = new TextEncoder();
  const put = (key: string, doc: unknown) => store.put(key, enc.encode(JSON.stringify(doc)));
  const shared = "ab12cd34".padEnd(64, "0");
  const own = "ef56ab78".padEnd(64, "0");
  const built = "0123abcd".padEnd(64, "0");
  await put("index/0123456789abcdef/package/6/hello/1.1.json", { v: 1, version: "1.1", hashes: [["a.mpy", shared]] });
  await put("index/_t/esp32/6/hello/latest.json", { v: 1, version: "1.1", hashes: [["a.mpy", built]] });
  await put("index/0123456789abcdef/package/py/hello/1.1.json", { v: 1, version: "1.1", hashes: [["a.py", own]] });
  // An imported bundle serves hello 1.1 too, listing the same file as the index manifest.
  await put("bundle/served/package/6/hello/1.1.json", { v: 1, version: "1.1", hashes: [["a.mpy", shared]] });
  for (const h of [shared, own, built]) await store.put(`files/${h.slice(0, 2)}/${h}`, enc.encode(h));
  const report = await purge(store, "hello", "1.1");
  assert.deepEqual(report.manifests, [
    "index/0123456789abcdef/package/6/hello/1.1.json",
    "index/0123456789abcdef/package/py/hello/1.1.json",
    "index/_t/esp32/6/hello/latest.json",
  ]);
  assert.deepEqual(report.objects, [`files/01/${built}`, `files/ef/${own}`]);
  assert.ok(await store.has("bundle/served/package/6/hello/1.1.json"), "the imported manifest stays");
  assert.ok(await store.has(`files/ab/${shared}`), "and so does the file it lists");
  await store.close();
});
