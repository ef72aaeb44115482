/**
 * The command lines of warm, export and import; warm's progress and failures; warm sharing a cache with a running
 * server; export writing exactly one file, or nothing when a package is not cached.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { parseArgs } from "../../src/cli.ts";
import { parseBundleArgs } from "../../src/bundle/args.ts";
import { Progress, type ProgressSink } from "../../src/bundle/progress.ts";
import { commandApp } from "../../src/bundle/run.ts";
import { warm } from "../../src/bundle/warm.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { standardIndex } from "../fixtures/index_fixture.ts";
import { type OtherWriter, otherWriter } from "../fixtures/tmp_owner.ts";
import { tempDir, testConfig } from "../helpers.ts";
import { mpyCrossPath, serveApp } from "../e2e/tools.ts";
import { cli, configFile } from "./helpers.ts";

Deno.test("warm, export and import command lines", () => {
  assert.deepEqual(parseArgs(["warm", "--config", "c.yaml", "--profile", "esp32", "--mpy", "py", "a", "b@1.0"]), {
    kind: "warm",
    configPath: "c.yaml",
    overrides: {},
    packages: ["a", "b@1.0"],
    profiles: ["esp32"],
    mpy: ["py"],
  });
  assert.deepEqual(parseArgs(["export", "--output=x.tar.gz", "a"]), {
    kind: "export",
    configPath: undefined,
    overrides: {},
    packages: ["a"],
    output: "x.tar.gz",
  });
  assert.deepEqual(parseArgs(["import", "x.tar.gz"]), {
    kind: "import",
    configPath: undefined,
    overrides: {},
    bundle: "x.tar.gz",
  });
  assert.match((parseArgs(["export", "a"]) as { message: string }).message, /export needs --output/);
  assert.match((parseArgs(["import"]) as { message: string }).message, /import needs the bundle/);
  assert.match((parseArgs(["import", "a", "b"]) as { message: string }).message, /one bundle/);
  assert.match((parseArgs(["warm", "--mpy", "7x", "a"]) as { message: string }).message, /--mpy takes py/);
  assert.match((parseArgs(["warm", "--profile", "x"]) as { message: string }).message, /warm needs the packages/);
  assert.deepEqual(parseArgs(["export", "--help"]), { kind: "help" });
  assert.match(
    (parseArgs(["warm", "../x"]) as { message: string }).message,
    /Invalid package "\.\.\/x": expected a package name/,
  );
  assert.match(
    (parseArgs(["warm", "a@b c"]) as { message: string }).message,
    /Invalid package "a@b c": after @ expected/,
  );
  // What an index may name a package, the command line takes too (the index's rules, src/packages/names.ts).
  assert.deepEqual((parseArgs(["warm", "__future__", "os.path@1.0-rc.1+b.5"]) as { packages: string[] }).packages, [
    "__future__",
    "os.path@1.0-rc.1+b.5",
  ]);
  assert.match((parseArgs(["import", "--profile", "x", "b"]) as { message: string }).message, /Unknown option/);
  assert.equal((parseBundleArgs(["warm", "--from", "fleet.lock"]) as { from?: string }).from, "fleet.lock");
});

Deno.test("progress: plain lines off a terminal, a bar redrawn in place on one", () => {
  const out: string[] = [];
  const plain: ProgressSink = { terminal: false, write: (t) => out.push(t) };
  const p = new Progress(plain, 2, "warm");
  p.step("a", "ok");
  p.step("b", "FAILED");
  p.end();
  assert.deepEqual(out, ["warm 1/2 a: ok\n", "warm 2/2 b: FAILED\n"]);
  const tty: string[] = [];
  const bar = new Progress({ terminal: true, write: (t) => tty.push(t) }, 2, "warm");
  bar.step("a", "ok");
  bar.end();
  assert.equal(tty[0], `\r\x1b[Kwarm [${"#".repeat(15)}${"-".repeat(15)}] 1/2 a`);
  assert.equal(tty[1], "\n");
});

Deno.test("warm names every package that failed, leaves a running server's temp files alone, and exits 1", async () => {
  const idx = await standardIndex();
  const index = new FakeUpstream(idx.root).start();
  const dir = tempDir();
  let server: OtherWriter | undefined;
  try {
    // A write the running server (another process) has under way.
    server = await otherWriter(dir);
    const inFlight = server.name;
    const config = testConfig({
      cache: { dir },
      upstreams: { index: index.url, retries: 0 },
      mpy_cross: { path: mpyCrossPath() },
    });
    const app = await commandApp(config, false, {});
    const lines: string[] = [];
    const result = await warm(app, config, { packages: ["hello", "nosuch", "mathx@9.9"], profiles: [], mpy: [] }, {
      terminal: false,
      write: (t) => lines.push(t),
    });
    assert.deepEqual(result.warmed, ["hello"]);
    assert.deepEqual([...result.failed.keys()], ["nosuch", "mathx@9.9"]);
    assert.match(result.failed.get("nosuch")!, /^py: \/package\/py\/nosuch\/latest\.json: 404/);
    assert.deepEqual(lines, ["warm 1/3 hello: ok\n", "warm 2/3 nosuch: FAILED\n", "warm 3/3 mathx@9.9: FAILED\n"]);
    assert.equal(Deno.readTextFileSync(join(dir, "tmp", inFlight)), "a write in progress", "a running server's write");
    assert.equal(await cli("warm", "--config", configFile({ ...config, cache: { dir } }), "hello", "nosuch"), 1);
    await assert.rejects(
      async () =>
        await warm(app, config, { packages: ["hello"], profiles: ["nope"], mpy: [] }, {
          terminal: false,
          write: () => {},
        }),
      /Unknown target profile "nope"/,
    );
  } finally {
    await server?.stop();
    await index.stop();
  }
});

Deno.test("export writes exactly the output file, or nothing when a package asked for is not cached", async () => {
  const idx = await standardIndex();
  const index = new FakeUpstream(idx.root).start();
  try {
    const config = configFile({
      cache: { dir: tempDir() },
      upstreams: { index: index.url, retries: 0 },
      mpy_cross: { path: mpyCrossPath() },
    });
    assert.equal(await cli("warm", "--config", config, "hello"), 0);
    const out = tempDir("mipserver-out-");
    assert.equal(await cli("export", "--config", config, "--output", join(out, "b.tar.gz"), "hello", "mathx"), 1);
    assert.deepEqual([...Deno.readDirSync(out)], [], "nothing written when mathx is not cached");
    assert.equal(await cli("export", "--config", config, "--output", join(out, "b.tar.gz"), "hello"), 0);
    assert.deepEqual([...Deno.readDirSync(out)].map((e) => e.name), ["b.tar.gz"]);
    assert.equal(index.count("/package/6/mathx"), 0, "export never contacts upstream");
  } finally {
    await index.stop();
  }
});

Deno.test("warm fills a running server's cache while it serves; the server then answers from what warm fetched", async () => {
  const idx = await standardIndex();
  const index = new FakeUpstream(idx.root).start();
  const dir = tempDir();
  const config = { cache: { dir }, upstreams: { index: index.url, retries: 0 }, mpy_cross: { path: mpyCrossPath() } };
  const { base, stop } = await serveApp(config);
  try {
    const manifest = await (await fetch(`${base}/package/6/hello/latest.json`)).json();
    const [, h] = manifest.hashes[0];
    let running = true;
    const failures: string[] = [];
    const load = (async () => {
      while (running) {
        for (const path of ["/package/6/hello/latest.json", `/file/${h.slice(0, 2)}/${h}`]) {
          const res = await fetch(`${base}${path}`);
          await res.arrayBuffer();
          if (res.status !== 200) failures.push(`${path}: ${res.status}`);
        }
      }
    })();
    assert.equal(await cli("warm", "--config", configFile(config), "hello", "mathx", "bigmod"), 0);
    running = false;
    await load;
    assert.deepEqual(failures, []);
    const fetched = index.count("/package/6/mathx/latest.json");
    assert.equal(fetched, 1, "warm fetched mathx once");
    const res = await fetch(`${base}/package/6/mathx/latest.json`);
    assert.equal(res.status, 200);
    const mathx = await res.json();
    for (const [, hash] of mathx.hashes) {
      const file = await fetch(`${base}/file/${hash.slice(0, 2)}/${hash}`);
      assert.equal(file.status, 200);
      await file.arrayBuffer();
    }
    assert.equal(index.count("/package/6/mathx/latest.json"), 1, "the server answered from the cache warm filled");
  } finally {
    await stop();
    await index.stop();
  }
});

Deno.test("export into a folder that does not exist, and import into a cache that is a file, end with one line and exit 1", async () => {
  const idx = await standardIndex();
  const index = new FakeUpstream(idx.root).start();
  try {
    const config = configFile({ cache: { dir: tempDir() }, upstreams: { index: index.url, retries: 0 } });
    assert.equal(await cli("warm", "--config", config, "hello"), 0);
    assert.equal(await cli("export", "--config", config, "--output", join(tempDir(), "no", "such", "x.tar.gz")), 1);
    const notADir = join(tempDir(), "cache-file");
    Deno.writeTextFileSync(notADir, "not a folder");
    const bundle = join(tempDir(), "b.tar.gz");
    assert.equal(await cli("export", "--config", config, "--output", bundle), 0);
    assert.equal(await cli("import", "--config", configFile({ cache: { dir: notADir } }), bundle), 1);
  } finally {
    await index.stop();
  }
});
