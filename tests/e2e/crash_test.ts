/**
 * Crash safety: a mipserver process is killed with SIGKILL while it is fetching and storing objects; after a
 * restart, every stored object still hashes to its name, every manifest is whole JSON, and no temp file is left.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { sha256Hex } from "../../src/store/hash.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { bigModule, buildIndex, type FixturePackage } from "../fixtures/index_fixture.ts";
import { fetchWhenUp, freePort, tempDir } from "../helpers.ts";

const MAIN = new URL("../../src/main.ts", import.meta.url).pathname;

function startServer(configPath: string) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-read", "--allow-write", "--allow-env", MAIN, "--config", configPath],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

async function waitUp(port: number): Promise<void> {
  await (await fetchWhenUp(`http://127.0.0.1:${port}/healthz`)).body?.cancel();
}

Deno.test("objects stay whole across SIGKILL during writes; leftovers are cleaned at start", async () => {
  const packages: FixturePackage[] = Array.from({ length: 12 }, (_, i) => ({
    name: `pkg${i}`,
    description: "crash fixture",
    versions: [{ version: "1.0", files: { [`pkg${i}.py`]: bigModule(20_000 + i * 1000) } }],
  }));
  const idx = await buildIndex(packages);
  const up = new FakeUpstream(idx.root).start();
  up.trickle = 5;
  const dir = tempDir();
  const port = freePort();
  const configPath = join(dir, "config.yaml");
  Deno.writeTextFileSync(
    configPath,
    `server: {host: 127.0.0.1, port: ${port}}\ncache: {dir: ./cache}\nupstreams: {index: "${up.url}", retries: 0}\nlog: {level: warn}\n`,
  );
  try {
    const stored = () => {
      try {
        const files = join(dir, "cache", "files");
        return [...Deno.readDirSync(files)].some((h2) => [...Deno.readDirSync(join(files, h2.name))].length > 0);
      } catch {
        return false;
      }
    };
    // Four kills at fixed moments, then one as soon as the first object is stored (on a busy machine the fixed ones
    // may all come before any write finished), with the other writes still under way.
    for (const killAfter of [40, 90, 150, 250, "first stored"] as const) {
      const child = startServer(configPath);
      await waitUp(port);
      const requests = packages.flatMap((p) => [
        `/package/6/${p.name}/latest.json`,
        `/package/py/${p.name}/latest.json`,
      ]).concat([...idx.files.keys()].map((h) => `/file/${h.slice(0, 2)}/${h}`));
      const inflight = requests.map((path) =>
        fetch(`http://127.0.0.1:${port}${path}`).then((r) => r.arrayBuffer()).catch(() => undefined)
      );
      if (killAfter === "first stored") {
        const end = Date.now() + 30_000;
        while (!stored() && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
      } else {
        await new Promise((r) => setTimeout(r, killAfter));
      }
      child.kill("SIGKILL");
      await child.output();
      await Promise.all(inflight);
    }
    const cache = join(dir, "cache");
    const restarted = startServer(configPath);
    await waitUp(port);
    try {
      assert.deepEqual([...Deno.readDirSync(join(cache, "tmp"))], [], "temp files left after restart");
      let files = 0;
      for (const h2 of Deno.readDirSync(join(cache, "files"))) {
        for (const f of Deno.readDirSync(join(cache, "files", h2.name))) {
          const body = Deno.readFileSync(join(cache, "files", h2.name, f.name));
          assert.ok((await sha256Hex(body)).startsWith(f.name), `${f.name} does not hash to its name`);
          files++;
        }
      }
      assert.ok(files > 0, "nothing was stored at all: the test did not exercise writes");
      const walk = (d: string): string[] =>
        [...Deno.readDirSync(d)].flatMap((e) => e.isDirectory ? walk(join(d, e.name)) : [join(d, e.name)]);
      for (const manifest of walk(join(cache, "index"))) JSON.parse(Deno.readTextFileSync(manifest));
      const h = [...idx.files.keys()][0];
      const res = await fetch(`http://127.0.0.1:${port}/file/${h.slice(0, 2)}/${h}`);
      assert.equal(res.status, 200);
      assert.deepEqual(new Uint8Array(await res.arrayBuffer()), idx.files.get(h));
    } finally {
      restarted.kill("SIGTERM");
      await restarted.output();
    }
  } finally {
    await up.stop();
  }
});
