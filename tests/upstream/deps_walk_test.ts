/**
 * Dependency cycles and deep chains through the mirrors get a clear, bounded answer instead of a manifest a device
 * would loop on (mip has no cycle guard) or a chain it cannot finish: a 502 naming the cycle or the chain, after a
 * bounded number of upstream reads. Diamonds (a shared dependency) are fine.
 */
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { createApp } from "../../src/app.ts";
import { memoryLogger } from "../../src/log.ts";
import { MAX_DEPS_DEPTH } from "../../src/packages/repo_service.ts";
import { CHAIN_LENGTH, writeDepGraphs } from "../fixtures/deps_fixture.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { tempDir, testConfig } from "../helpers.ts";

async function setup() {
  const root = tempDir("mipserver-github-");
  const github = new FakeUpstream(root, "").start();
  writeDepGraphs(root, github.url);
  const app = await createApp({
    config: testConfig({
      cache: { dir: tempDir() },
      upstreams: { index: "http://127.0.0.1:9/none", github: github.url, retries: 0 },
      packages: { loopa: { source: "github:acme/loopa" }, chain: { source: "github:acme/chain0" } },
      targets: { lan: {} },
    }),
    logger: memoryLogger(),
  });
  const get = async (path: string) => {
    const res = await app.handler(new Request(`http://gw${path}`, { headers: { host: "gw" } }));
    return { status: res.status, text: await res.text() };
  };
  return {
    github,
    get,
    async close() {
      await app.idle();
      await github.stop();
    },
  };
}

Deno.test("a dependency cycle through the mirrors is a 502 naming the cycle, for every way of installing it", async () => {
  const env = await setup();
  try {
    const mirror = await env.get("/github/acme/loopa/main/package.json");
    assert.equal(mirror.status, 502, mirror.text);
    assert.match(
      mirror.text,
      /^Dependency cycle: \/github\/acme\/loopa\/main\/package\.json -> \/github\/acme\/loopb\/main\/package\.json -> \/github\/acme\/loopa\/main\/package\.json/,
    );
    const self = await env.get("/github/acme/selfish/main/package.json");
    assert.equal(self.status, 502);
    assert.match(self.text, /Dependency cycle: (\/github\/acme\/selfish\/main\/package\.json( -> )?){2}/);
    const viaUrl = await env.get("/github/acme/viaurl/main/package.json");
    assert.equal(viaUrl.status, 502);
    // The http(s) dependency is read like any other (it is on the fake GitHub's host, so it is named by that path).
    assert.match(viaUrl.text, /Dependency cycle: .*\/viaurl\/.* -> .*\/viaurl2\/.* -> .*\/viaurl\//);
    // Under a profile (compiled URL install), by name (a named package) and as a dependency manifest.
    for (const path of ["/t/lan/github/acme/loopa/main/package.json", "/package/6/loopa/latest.json"]) {
      const r = await env.get(path);
      assert.equal(r.status, 502, `${path}: ${r.text}`);
      assert.match(r.text, /Dependency cycle: .*loopb.* -> .*loopa.* -> .*loopb/, path);
    }
    const counted = env.github.count("/acme/loopa/main/package.json") +
      env.github.count("/acme/loopb/main/package.json");
    assert.ok(counted <= 4, `each package.json is read once per cache entry, not in a loop (${counted} reads)`);
  } finally {
    await env.close();
  }
});

Deno.test(`a dependency chain ${CHAIN_LENGTH} deep is refused at depth ${MAX_DEPS_DEPTH}, after a bounded number of reads`, async () => {
  const env = await setup();
  try {
    const top = await env.get("/github/acme/chain0/main/package.json");
    assert.equal(top.status, 502, top.text);
    assert.match(
      top.text,
      new RegExp(
        `^Dependency chain deeper than ${MAX_DEPS_DEPTH} packages: /github/acme/chain0/main/package\\.json -> /github/acme/chain1/main/package\\.json -> \\.\\.\\. -> /github/acme/chain${
          MAX_DEPS_DEPTH - 1
        }/main/package\\.json -> /github/acme/chain${MAX_DEPS_DEPTH}/main/package\\.json`,
      ),
    );
    assert.ok(env.github.count("/package.json") <= MAX_DEPS_DEPTH + 1, `${env.github.count("/package.json")} reads`);
    assert.equal(env.github.count(`/acme/chain${MAX_DEPS_DEPTH + 1}/`), 0, "the walk stops at the limit");
    const named = await env.get("/package/py/chain/latest.json");
    assert.equal(named.status, 502);
    assert.match(named.text, /Dependency chain deeper than/);
    // The tail of the chain, shorter than the limit, installs.
    const tail = await env.get(`/github/acme/chain${CHAIN_LENGTH - MAX_DEPS_DEPTH}/main/package.json`);
    assert.equal(tail.status, 200, tail.text);
    // A package walked once by a short path still counts when a longer path reaches it again: twoways reaches
    // chain70 (30 packages) directly (31 deep, fine) and through two more packages (33 deep, too deep).
    const twoWays = await env.get("/github/acme/twoways/main/package.json");
    assert.equal(twoWays.status, 502, twoWays.text);
    assert.match(
      twoWays.text,
      /Dependency chain deeper than 32 packages: .*twoways.* -> .*detour.* -> .*detour2.* -> .*chain70.* -> \.\.\./,
    );
  } finally {
    await env.close();
  }
});

Deno.test("a diamond (two packages sharing a dependency) is no cycle", async () => {
  const env = await setup();
  try {
    const r = await env.get("/github/acme/diamond/main/package.json");
    assert.equal(r.status, 200, r.text);
    assert.equal((await env.get("/t/lan/github/acme/diamond/main/package.json")).status, 200);
  } finally {
    await env.close();
  }
});

Deno.test("the walk reads a tag as the mirror caches it: a tag moved into a cycle is seen after cache.tag_ttl", async () => {
  const root = tempDir("mipserver-github-");
  const github = new FakeUpstream(root, "").start();
  const write = (path: string, doc: unknown) => {
    Deno.mkdirSync(join(root, dirname(path)), { recursive: true });
    Deno.writeTextFileSync(join(root, path), JSON.stringify(doc));
  };
  write("acme/tagroot/main/package.json", { urls: [], deps: [["github:acme/tagdep", "v1.0"]], version: "1.0" });
  write("acme/tagdep/v1.0/package.json", { urls: [], deps: [], version: "1.0" });
  const app = await createApp({
    config: testConfig({
      cache: { dir: tempDir(), tag_ttl: "0s" },
      upstreams: { index: "http://127.0.0.1:9/none", github: github.url, retries: 0 },
    }),
    logger: memoryLogger(),
  });
  const get = async () => {
    const res = await app.handler(new Request("http://gw/github/acme/tagroot/main/package.json"));
    return { status: res.status, text: await res.text() };
  };
  try {
    assert.equal((await get()).status, 200);
    // The tag is moved upstream to a commit whose package.json depends back on the root.
    write("acme/tagdep/v1.0/package.json", { urls: [], deps: [["github:acme/tagroot", "main"]], version: "1.1" });
    await get(); // the stale copy answers while it is read again in the background
    await app.idle();
    const after = await get();
    assert.equal(after.status, 502, after.text);
    assert.match(after.text, /^Dependency cycle: .*tagroot.* -> .*tagdep\/v1\.0.* -> .*tagroot/);
  } finally {
    await app.idle();
    await github.stop();
  }
});
