/**
 * The urls-form manifests URL installs are answered with: index-name dependencies as `/urls/package/...` manifests
 * on this server, every file an absolute `/file/` URL here, repository dependencies as mirror URLs, and under
 * `/t/{profile}/` everything built and compiled for the profile. The policy's closure still sees index names.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { createApp } from "../../src/app.ts";
import { memoryLogger } from "../../src/log.ts";
import { writeDepGraphs } from "../fixtures/deps_fixture.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { startUpstreams } from "../fixtures/upstreams.ts";
import { tempDir, testConfig } from "../helpers.ts";
import { mpyCrossPath } from "../e2e/tools.ts";

async function setup(extra: Record<string, unknown> = {}) {
  const up = await startUpstreams();
  writeDepGraphs(up.githubRoot, up.github.url);
  const app = await createApp({
    config: testConfig({
      server: { port: 18891 },
      cache: { dir: tempDir() },
      upstreams: up.upstreams,
      targets: { lan: {} },
      mpy_cross: { path: mpyCrossPath() },
      ...extra,
    }),
    logger: memoryLogger(),
  });
  const get = (path: string) => app.handler(new Request(`http://gw${path}`, { headers: { host: "gw" } }));
  return {
    up,
    get,
    async json(path: string) {
      const res = await get(path);
      const text = await res.text();
      assert.equal(res.status, 200, `${path}: ${text}`);
      return JSON.parse(text);
    },
    async close() {
      await app.idle();
      await up.stop();
    },
  };
}

const FILE_URL = /^http:\/\/gw:18891\/file\/[0-9a-f]{2}\/[0-9a-f]+$/;

Deno.test("an index dependency of a mirrored package.json is a urls-form manifest here, with absolute /file/ URLs", async () => {
  const env = await setup();
  try {
    const pkg = await env.json("/github/acme/sensorkit/main/package.json");
    assert.deepEqual(pkg.deps[0], ["http://gw:18891/urls/package/py/hello/latest.json", "latest"]);
    const hello = await env.json("/urls/package/py/hello/latest.json");
    assert.equal(hello.hashes, undefined, "no hashes: mip would fetch them from the device's own index");
    assert.equal(hello.version, "1.1");
    assert.deepEqual(hello.urls.map(([d]: string[]) => d), ["hello.py"]);
    const [, url] = hello.urls[0];
    assert.match(url, FILE_URL);
    const file = await env.get(new URL(url).pathname);
    assert.equal(file.status, 200);
    assert.match(await file.text(), /def hi/);
    // A pinned version, and the .mpy form under a profile, pointing at the profile's /file/.
    assert.equal((await env.json("/urls/package/py/hello/1.0.json")).version, "1.0");
    const compiled = await env.json("/t/lan/urls/package/6/hello/latest.json");
    assert.deepEqual(compiled.urls.map(([d]: string[]) => d), ["hello.mpy"]);
    assert.match(compiled.urls[0][1], /^http:\/\/gw:18891\/t\/lan\/file\/[0-9a-f]{2}\/[0-9a-f]+$/);
    assert.equal((await env.get("/urls/package/py/nosuchpkg/latest.json")).status, 404);
    assert.equal((await env.get("/t/nope/urls/package/6/hello/latest.json")).status, 404);
  } finally {
    await env.close();
  }
});

Deno.test("a named package as a urls-form manifest: its repository deps become mirror URLs under the same prefix", async () => {
  const env = await setup({ packages: { sensorkit: { source: "github:acme/sensorkit" } } });
  try {
    const plain = await env.json("/urls/package/py/sensorkit/latest.json");
    assert.deepEqual(plain.deps, [
      ["http://gw:18891/urls/package/py/hello/latest.json", "latest"],
      ["http://gw:18891/github/acme/helpers/main/package.json", "main"],
    ]);
    assert.deepEqual(plain.urls.map(([d]: string[]) => d), ["sensorkit/__init__.py", "sensorkit/util.py"]);
    for (const [, u] of plain.urls) assert.match(u, FILE_URL);
    const compiled = await env.json("/t/lan/urls/package/6/sensorkit/latest.json");
    assert.deepEqual(compiled.deps, [
      ["http://gw:18891/t/lan/urls/package/6/hello/latest.json", "latest"],
      ["http://gw:18891/t/lan/github/acme/helpers/main/package.json", "main"],
    ]);
    assert.deepEqual(compiled.urls.map(([d]: string[]) => d), ["sensorkit/__init__.mpy", "sensorkit/util.mpy"]);
  } finally {
    await env.close();
  }
});

Deno.test("under /t/{profile}, GitHub, GitLab and plain-URL package.json files are compiled and in urls form", async () => {
  const env = await setup();
  try {
    const gh = await env.json("/t/lan/github/acme/sensorkit/v1.0/package.json");
    assert.deepEqual(gh.urls.map(([d]: string[]) => d), ["sensorkit/__init__.mpy", "sensorkit/util.mpy"]);
    assert.deepEqual(gh.deps, [
      ["http://gw:18891/t/lan/urls/package/6/hello/latest.json", "latest"],
      ["http://gw:18891/t/lan/github/acme/helpers/main/package.json", "main"],
    ]);
    const mpy = await env.get(new URL(gh.urls[0][1]).pathname);
    assert.equal(new Uint8Array(await mpy.arrayBuffer())[0], "M".charCodeAt(0));

    const gl = await env.json("/t/lan/gitlab/grp/glpkg/main/package.json");
    assert.deepEqual(gl.urls.map(([d]: string[]) => d), ["glpkg.mpy"]);

    const host = new URL(env.up.github.url).host;
    const viaUrl = await env.json(`/t/lan/url/http/${host}/acme/helpers/main/package.json`);
    assert.deepEqual(viaUrl.urls.map(([d]: string[]) => d), ["helpers.mpy"]);

    // A plain file under a profile is served as it is (mip saves it under its own name).
    const raw = await env.get("/t/lan/github/acme/helpers/main/helpers.py");
    assert.equal(raw.status, 200);
    assert.match(await raw.text(), /def twice/);
    assert.equal((await env.get("/t/nope/github/acme/helpers/main/package.json")).status, 404);
  } finally {
    await env.close();
  }
});

Deno.test("policy.unlisted deny still allows an index dependency reached through a mirrored repository", async () => {
  const env = await setup({ packages: { outer: { source: "github:acme/outer" } }, policy: { unlisted: "deny" } });
  try {
    // outer -> github:acme/sensorkit@v1.0 (a mirror) -> hello (an index name, now a /urls/package/ URL there).
    await env.json("/urls/package/py/hello/latest.json");
    await env.json("/package/6/hello/latest.json");
    await env.json("/github/acme/sensorkit/v1.0/package.json");
    assert.equal((await env.get("/urls/package/py/bigmod/latest.json")).status, 403);
  } finally {
    await env.close();
  }
});

Deno.test("hashes in a repository package.json become /file/ URLs here (mip would ask the device's own index)", async () => {
  const env = await setup();
  try {
    const [[dest, hash]] = (await env.json("/package/py/hello/latest.json")).hashes;
    Deno.mkdirSync(join(env.up.githubRoot, "acme/hashed/main"), { recursive: true });
    Deno.writeTextFileSync(
      join(env.up.githubRoot, "acme/hashed/main/package.json"),
      JSON.stringify({ hashes: [[dest, hash]], version: "1" }),
    );
    const doc = await env.json("/github/acme/hashed/main/package.json");
    assert.equal(doc.hashes, undefined);
    assert.deepEqual(doc.urls, [[dest, `http://gw:18891/file/${hash.slice(0, 2)}/${hash}`]]);
    assert.equal((await env.get(`/file/${hash.slice(0, 2)}/${hash}`)).status, 200);
  } finally {
    await env.close();
  }
});

Deno.test("an upstream index manifest whose deps or urls are not URLs is a 502 in urls form, not a 500", async () => {
  const root = tempDir();
  const write = (name: string, doc: unknown) => {
    Deno.mkdirSync(join(root, "package", "py", name), { recursive: true });
    Deno.writeTextFileSync(join(root, "package", "py", name, "latest.json"), JSON.stringify(doc));
  };
  write("baddep", { v: 1, hashes: [], version: "1.0", deps: [["https://exa mple.com/lib", "latest"]] });
  write("badurl", { v: 1, hashes: [], version: "1.0", urls: [["x.py", "http://[bad"]] });
  const index = new FakeUpstream(root).start();
  try {
    const app = await createApp({
      config: testConfig({ cache: { dir: tempDir() }, upstreams: { index: index.url, retries: 0 } }),
      logger: memoryLogger(),
    });
    for (const name of ["baddep", "badurl"]) {
      const res = await app.handler(new Request(`http://gw/urls/package/py/${name}/latest.json`));
      const text = await res.text();
      assert.equal(res.status, 502, `${name}: ${text}`);
      assert.match(text, /not a URL/);
    }
    await app.idle();
  } finally {
    await index.stop();
  }
});
