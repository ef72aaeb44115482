/**
 * Flood suite (see `flood.ts`): the compile queue. Per compiler at most `mpy_cross.concurrency` compiles run, at most
 * `MAX_WAITING_COMPILES` wait holding at most `MAX_WAITING_BYTES` of source, and any further compile is refused at
 * once: a 503 with Retry-After, never a fallback that a built manifest would keep.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { createApp } from "../../src/app.ts";
import { CompileService } from "../../src/compile/compile_service.ts";
import { CompileError, MAX_WAITING_BYTES, MAX_WAITING_COMPILES, MpyCross } from "../../src/compile/mpy_cross.ts";
import { DiskStore } from "../../src/store/disk/mod.ts";
import { Busy } from "../../src/errors.ts";
import { answerFor } from "../../src/http/errors.ts";
import { memoryLogger } from "../../src/log.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { tempDir, testConfig } from "../helpers.ts";
import { assertAtMost } from "./flood.ts";

const enc = new TextEncoder();

/**
 * A stand-in mpy-cross that answers `--version` and holds every compile until `open()` creates its gate file; then
 * each compile fails at once (a compiler that refuses the source), so the flood ends quickly.
 */
function gatedCompiler(): { path: string; open: () => void } {
  const dir = tempDir("mipserver-gatedcc-");
  const gate = join(dir, "gate");
  const path = join(dir, "mpy-cross");
  Deno.writeTextFileSync(
    path,
    `#!/bin/sh\nif [ "$1" = "--version" ]; then echo "MicroPython v1.28.0; mpy-cross emitting mpy v6.3"; exit 0; fi\n` +
      `while [ ! -e "${gate}" ]; do sleep 0.02; done\necho "held" >&2\nexit 1\n`,
  );
  Deno.chmodSync(path, 0o755);
  return { path, open: () => Deno.writeTextFileSync(gate, "") };
}

/** Lets the event loop turn until the compiles that can start or queue have done so. */
const settle = () => new Promise((r) => setTimeout(r, 100));

Deno.test("compile queue: 2,000 unique compiles at once: 2 run, MAX_WAITING_COMPILES wait, the rest are busy", async () => {
  const cc = gatedCompiler();
  const tool = new MpyCross({ path: cc.path, timeout: 30_000, concurrency: 2 });
  const outcomes = Array.from({ length: 2000 }, (_, i) =>
    tool.compile(enc.encode(`X = ${i}\n`), `m${i}.py`, []).then(
      () => "compiled",
      (e) => (e instanceof CompileError ? e.kind : `unexpected ${e}`),
    ));
  try {
    await settle();
    assertAtMost(tool.queued, MAX_WAITING_COMPILES, "compiles waiting");
    assert.equal(tool.queued, MAX_WAITING_COMPILES);
    assert.equal(tool.active, 2);
  } finally {
    cc.open();
  }
  const kinds = await Promise.all(outcomes);
  assert.equal(kinds.filter((k) => k === "busy").length, 2000 - 2 - MAX_WAITING_COMPILES);
  assert.equal(kinds.filter((k) => k === "failed").length, 2 + MAX_WAITING_COMPILES, "held compiles ran");
  assert.equal(tool.runs, 2 + MAX_WAITING_COMPILES);
  assert.equal(tool.queued, 0);
  assert.equal(tool.queuedBytes, 0);
});

Deno.test("compile queue: large sources wait within MAX_WAITING_BYTES; the next is busy", async () => {
  const cc = gatedCompiler();
  const tool = new MpyCross({ path: cc.path, timeout: 30_000, concurrency: 1 });
  const big = new Uint8Array(5 * 1024 * 1024).fill(0x23); // "#" lines: a comment
  const fits = Math.floor(MAX_WAITING_BYTES / big.byteLength);
  const outcomes = [tool.compile(enc.encode("X = 0\n"), "first.py", [])];
  for (let i = 0; i <= fits; i++) outcomes.push(tool.compile(big, `big${i}.py`, []));
  const kinds = outcomes.map((p) => p.then(() => "compiled", (e) => (e as CompileError).kind));
  try {
    await settle();
    assertAtMost(tool.queuedBytes, MAX_WAITING_BYTES, "source bytes waiting");
    assert.equal(tool.queued, fits);
  } finally {
    cc.open();
  }
  assert.equal((await Promise.all(kinds)).filter((k) => k === "busy").length, 1);
});

Deno.test("compile queue: a busy compiler answers 503 with Retry-After, whatever on_error says, never a fallback", async () => {
  const store = new DiskStore(tempDir());
  await store.open();
  for (const onError of ["source", "fail"] as const) {
    const cc = gatedCompiler();
    const logger = memoryLogger("error");
    const service = new CompileService({
      path: cc.path,
      timeout: 30_000,
      concurrency: 2,
      onError,
      targets: {},
      store,
      logger,
    });
    await service.init();
    const done: unknown[] = [];
    const results = Array.from(
      { length: 400 },
      (_, i) =>
        service.transform({ dest: `${onError}${i}.py`, bytes: enc.encode(`X = "${onError}${i}"\n`) }, "6", null).then(
          (out) => done.push(out),
          (e) => done.push(e),
        ),
    );
    try {
      // Only the refused compiles finish while the compiler is held: wait for them (a busy machine takes longer), then
      // a little more, and no other has finished.
      const refused = 400 - 2 - MAX_WAITING_COMPILES;
      for (let i = 0; i < 200 && done.length < refused; i++) await settle();
      await settle();
      assert.equal(done.length, refused, `on_error ${onError}`);
      for (const e of done) {
        assert.ok(e instanceof Busy && answerFor(e)?.status === 503, `on_error ${onError}: ${e}`);
        assert.equal(answerFor(e)?.headers["retry-after"], "1");
        assert.match(e.message, /Too many compiles waiting/);
      }
      assert.equal(service.fallbacks, 0, "a busy compile fell back to the source");
    } finally {
      cc.open();
      await Promise.all(results);
    }
  }
});

Deno.test("compile queue over HTTP: 400 unique /t/{profile} URL installs at once: the ones past the queue get 503, not cached", async () => {
  const cc = gatedCompiler();
  const root = tempDir("mipserver-flood-pkgs-");
  const up = new FakeUpstream(root, "/up").start();
  const n = 400;
  for (let i = 0; i < n; i++) {
    Deno.mkdirSync(join(root, `p${i}`));
    Deno.writeTextFileSync(join(root, `p${i}`, "flood.py"), `X = ${i}\n`);
    Deno.writeTextFileSync(
      join(root, `p${i}`, "package.json"),
      JSON.stringify({ version: "1.0", urls: [["flood.py", `${up.url}/p${i}/flood.py`]] }),
    );
  }
  const config = testConfig({
    cache: { dir: tempDir() },
    upstreams: { index: "http://127.0.0.1:9/none", retries: 0 },
    policy: { allow_hosts: ["127.0.0.1"] },
    targets: { x64: { march: "x64" } },
    mpy_cross: { path: cc.path, concurrency: 2 },
  });
  const app = await createApp({ config, logger: memoryLogger("error") });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (r, i) => app.handler(r, i));
  const upHost = new URL(up.url).host;
  const install = (i: number) => `http://127.0.0.1:${server.addr.port}/t/x64/url/http/${upHost}/up/p${i}/package.json`;
  try {
    const statuses: number[] = [];
    const answers = Array.from({ length: n }, async (_, i) => {
      const res = await fetch(install(i));
      await res.body?.cancel();
      statuses.push(res.status);
      return res;
    });
    const refused = n - 2 - MAX_WAITING_COMPILES;
    for (let waited = 0; statuses.length < refused && waited < 10_000; waited += 50) {
      await new Promise((r) => setTimeout(r, 50));
    }
    await settle();
    assert.equal(
      statuses.length,
      refused,
      "only the compiles past the queue are answered (503) while the compiler is held",
    );
    assert.deepEqual([...new Set(statuses)], [503], "a held install was answered");
    assert.equal((await Promise.race(answers)).headers.get("retry-after"), "1");
    cc.open();
    await Promise.all(answers);
    assert.equal(statuses.filter((s) => s === 200).length, 2 + MAX_WAITING_COMPILES);
    // A refused install was neither cached nor remembered: asked again, it is built (here: served as source).
    const again = await Promise.all(Array.from({ length: n }, (_, i) => fetch(install(i))));
    for (const res of again) {
      assert.equal(res.status, 200);
      await res.body?.cancel();
    }
  } finally {
    cc.open();
    await server.shutdown();
    await app.idle();
    await app.close();
    await up.stop();
  }
});
