/**
 * An index package under a target profile (`/t/{profile}/package/...`) is built from the index's source form (its `py`
 * manifest) and compiled here for the profile; when the index has no source form, or it cannot be had now, the index's
 * own compiled manifest is served instead (portable bytecode), and the log says so.
 */
import assert from "node:assert/strict";
import { createApp } from "../../src/app.ts";
import { memoryLogger } from "../../src/log.ts";
import { sha256Hex } from "../../src/store/hash.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { standardIndex } from "../fixtures/index_fixture.ts";
import { tempDir, testConfig } from "../helpers.ts";
import { mpyCrossPath } from "../e2e/tools.ts";

async function setup() {
  const idx = await standardIndex();
  const up = new FakeUpstream(idx.root).start();
  const logger = memoryLogger();
  const app = await createApp({
    config: testConfig({
      cache: { dir: tempDir() },
      upstreams: { index: up.url, retries: 0 },
      targets: { small: { opt: 3 }, plain: {} },
      mpy_cross: { path: mpyCrossPath() },
    }),
    logger,
  });
  const get = (path: string) => app.handler(new Request(`http://gw${path}`));
  const json = async (path: string) => {
    const res = await get(path);
    const text = await res.text();
    assert.equal(res.status, 200, `${path}: ${text}`);
    return JSON.parse(text);
  };
  return { up, app, logger, get, json, idx };
}

Deno.test("an index package under a profile is compiled here from the index's source form", async () => {
  const env = await setup();
  try {
    // An assert that -O3 drops: the profile's build differs from the index's own .mpy.
    const source = 'def hi():\n    assert True\n    return "hello 1.1"\n';
    const hash = await sha256Hex(new TextEncoder().encode(source));
    env.up.overrides.set("/package/py/hello/latest.json", {
      body: JSON.stringify({
        v: 1,
        version: "1.1",
        hashes: [["hello.py", hash.slice(0, 8)]],
        deps: [["mathx", "latest"]],
      }),
    });
    env.up.overrides.set(`/file/${hash.slice(0, 2)}/${hash.slice(0, 8)}`, { body: source });
    const m = await env.json("/t/small/package/6/hello/latest.json");
    assert.equal(m.version, "1.1");
    assert.deepEqual(m.deps, [["mathx", "latest"]], "index deps stay names: the device asks the same /t/small index");
    const [[dest, full]] = m.hashes as [string, string][];
    assert.equal(dest, "hello.mpy");
    assert.match(full, /^[0-9a-f]{64}$/);
    const file = await env.get(`/t/small/file/${full.slice(0, 2)}/${full}`);
    const bytes = new Uint8Array(await file.arrayBuffer());
    assert.equal(String.fromCharCode(bytes[0]), "M");
    assert.equal(await sha256Hex(bytes), full);
    // Built from the source form: the index's own .mpy manifest was not needed.
    assert.equal(env.up.count("/package/6/hello/latest.json"), 0, env.up.log.join(", "));
    // Compiled with the profile's flags: -O3 drops the assert that a profile without flags keeps.
    const flagless = await env.json("/t/plain/package/6/hello/latest.json");
    const [[, plainHash]] = flagless.hashes as [string, string][];
    const plainBytes = new Uint8Array(
      await (await env.get(`/file/${plainHash.slice(0, 2)}/${plainHash}`)).arrayBuffer(),
    );
    assert.notEqual(plainHash, full);
    assert.ok(bytes.length < plainBytes.length, `-O3: ${bytes.length} bytes, without flags: ${plainBytes.length}`);
    // A device asking for another .mpy version than the profile's compiler makes: the index's own, not a build.
    const other = await env.get("/t/small/package/5/hello/latest.json");
    await other.body?.cancel();
    assert.equal(env.up.count("/package/5/hello/latest.json"), 1);
    assert.ok(!env.logger.lines.some((l) => /Built a manifest.*"mpy":"5"/.test(l)));
  } finally {
    await env.app.idle();
    await env.up.stop();
  }
});

Deno.test("without a source form, or with the index down, an index package under a profile is the index's own", async () => {
  const env = await setup();
  try {
    // No py manifest upstream: the index's .mpy manifest, as the index has it.
    env.up.overrides.set("/package/py/mathx/latest.json", { status: 404 });
    const plain = await env.json("/package/6/mathx/latest.json");
    assert.deepEqual(await env.json("/t/small/package/6/mathx/latest.json"), plain);
    assert.ok(
      env.logger.lines.some((l) => /index's own compiled files under a profile.*mathx.*no source form/.test(l)),
    );
    // Remembered: the next request does not look for the source form again.
    const looked = env.up.count("/package/py/mathx/latest.json");
    assert.deepEqual(await env.json("/t/small/package/6/mathx/latest.json"), plain);
    assert.equal(env.up.count("/package/py/mathx/latest.json"), looked);
    // A source form refused (a dependency that is not [name, version]): the index's own, the reason logged, and
    // remembered like a missing one.
    env.up.overrides.set("/package/py/hello/1.1.json", {
      body: JSON.stringify({ v: 1, version: "1.1", hashes: [], deps: [null] }),
    });
    const own = await env.json("/package/6/hello/1.1.json");
    assert.deepEqual(await env.json("/t/small/package/6/hello/1.1.json"), own);
    assert.ok(env.logger.lines.some((l) => /under a profile.*dependency that is not \[name, version\]: null/.test(l)));
    await env.json("/t/small/package/6/hello/1.1.json");
    assert.equal(env.up.count("/package/py/hello/1.1.json"), 1);
    // Neither form: the index's 404, as without a profile.
    const missing = await env.get("/t/small/package/6/nosuchpkg/latest.json");
    assert.equal(missing.status, 404, await missing.text());
    // A source form that lists urls is not built here either.
    env.up.overrides.set("/package/py/bigmod/latest.json", {
      body: JSON.stringify({ v: 1, version: "1.0", hashes: [], urls: [["x.py", "http://elsewhere/x.py"]] }),
    });
    const big = await env.json("/package/6/bigmod/latest.json");
    assert.deepEqual(await env.json("/t/small/package/6/bigmod/latest.json"), big);
    // The index down with only its .mpy manifest cached: that one, not an error.
    const hello = await env.json("/package/6/hello/1.0.json");
    await env.up.stop();
    assert.deepEqual(await env.json("/t/small/package/6/hello/1.0.json"), hello);
    assert.ok(
      env.logger.lines.some((l) => /index's own compiled files under a profile.*hello.*Cannot reach upstream/.test(l)),
    );
    // Nothing cached at all: the failure, a 503 naming the index.
    const none = await env.get("/t/small/package/6/hello/0.9.json");
    assert.equal(none.status, 503);
    assert.match(await none.text(), /Cannot reach upstream/);
  } finally {
    await env.app.idle();
    await env.up.stop().catch(() => {});
  }
});
