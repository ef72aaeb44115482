import assert from "node:assert/strict";
import { createApp } from "../../src/app.ts";
import { memoryLogger } from "../../src/log.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { buildGithub, buildGitlab } from "../fixtures/repo_fixture.ts";
import { tempDir, testConfig } from "../helpers.ts";

async function setup(server: Record<string, unknown> = {}) {
  const github = new FakeUpstream(buildGithub(), "").start();
  const gitlab = new FakeUpstream(buildGitlab(), "").start();
  const app = await createApp({
    config: testConfig({
      server: { port: 18891, ...server },
      cache: { dir: tempDir() },
      upstreams: { index: "http://127.0.0.1:9/none", github: github.url, gitlab: gitlab.url, retries: 0 },
    }),
    logger: memoryLogger(),
  });
  return {
    app,
    github,
    get: (path: string, host = "gw") => app.handler(new Request(`http://${host}${path}`, { headers: { host } })),
    async close() {
      await app.idle();
      await github.stop();
      await gitlab.stop();
    },
  };
}

Deno.test("package.json is rewritten so every url and github: dep points back here with absolute URLs", async () => {
  const env = await setup();
  try {
    const res = await env.get("/github/acme/sensorkit/main/package.json");
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "application/json");
    const doc = await res.json();
    assert.deepEqual(doc.urls, [
      ["sensorkit/__init__.py", "http://gw:18891/github/acme/sensorkit/main/sensorkit/__init__.py"],
      ["sensorkit/util.py", "http://gw:18891/github/acme/sensorkit/main/sensorkit/util.py"],
    ]);
    // The index dependency is a urls-form manifest here too: a URL install never asks the device's own index.
    assert.deepEqual(doc.deps, [["http://gw:18891/urls/package/py/hello/latest.json", "latest"], [
      "http://gw:18891/github/acme/helpers/main/package.json",
      "main",
    ]]);
    assert.equal(doc.version, "1.1-dev");
    const withPort = await (await env.get("/github/acme/helpers/main/package.json", "gw.lan:8080")).json();
    assert.deepEqual(withPort.urls, [["helpers.py", "http://gw.lan:8080/github/acme/helpers/main/helpers.py"]]);
  } finally {
    await env.close();
  }
});

Deno.test("server.public_url wins over the Host header", async () => {
  const env = await setup({ public_url: "https://mip.example.net/" });
  try {
    const doc = await (await env.get("/github/acme/helpers/main/package.json")).json();
    assert.deepEqual(doc.urls, [["helpers.py", "https://mip.example.net/github/acme/helpers/main/helpers.py"]]);
  } finally {
    await env.close();
  }
});

Deno.test("raw files are served and cached; refs select versions; gitlab uses its raw layout", async () => {
  const env = await setup();
  try {
    const path = "/github/acme/sensorkit/v1.0/sensorkit/__init__.py";
    const first = await env.get(path);
    assert.equal(first.status, 200);
    assert.match(await first.text(), /VERSION = "1\.0"/);
    await (await env.get(path)).arrayBuffer();
    assert.equal(env.github.count("/acme/sensorkit/v1.0/sensorkit/__init__.py"), 1);
    const gl = await env.get("/gitlab/grp/glpkg/main/glpkg.py");
    assert.equal(gl.status, 200);
    assert.match(await gl.text(), /from gitlab/);
  } finally {
    await env.close();
  }
});

Deno.test("clear errors: missing package.json 404 naming the upstream URL, malformed 502, escaping urls 502", async () => {
  const env = await setup();
  try {
    const missing = await env.get("/github/acme/nothing/main/package.json");
    assert.equal(missing.status, 404);
    assert.match(await missing.text(), new RegExp(`${env.github.url}/acme/nothing/main/package\\.json`));
    const broken = await env.get("/github/acme/broken/main/package.json");
    assert.equal(broken.status, 502);
    assert.match(await broken.text(), /Malformed package\.json at .*acme\/broken\/main\/package\.json/);
    const escape = await env.get("/github/acme/escape/main/package.json");
    assert.equal(escape.status, 502);
    assert.match(await escape.text(), /leaves the repository/);
    for (const bad of ["/github/acme/sensorkit/ma%2fin/package.json", "/github/acme/sensorkit/main/a%23b/x.py"]) {
      const res = await env.get(bad);
      assert.equal(res.status, 400, bad);
      await res.body?.cancel();
    }
  } finally {
    await env.close();
  }
});

Deno.test("offline, a mirror path that is not cached is a 503 saying so (package.json and raw files); cached ones serve", async () => {
  const github = new FakeUpstream(buildGithub(), "").start();
  const dir = tempDir();
  const make = (offline: boolean) =>
    createApp({
      config: testConfig({
        cache: { dir, offline },
        upstreams: { index: "http://127.0.0.1:9/none", github: github.url, retries: 0 },
      }),
      logger: memoryLogger(),
    });
  try {
    const online = await make(false);
    const cached = "/github/acme/sensorkit/main/package.json";
    assert.equal((await online.handler(new Request(`http://gw${cached}`))).status, 200);
    await online.idle();
    const app = await make(true);
    const get = (path: string) => app.handler(new Request(`http://gw${path}`));
    assert.equal((await get(cached)).status, 200, "cached: served offline");
    for (const path of ["/github/acme/other/main/package.json", "/github/acme/sensorkit/main/nothere.py"]) {
      const res = await get(path);
      const text = await res.text();
      assert.equal(res.status, 503, text);
      assert.match(text, /^Offline: .* was not imported/);
    }
    await app.idle();
  } finally {
    await github.stop();
  }
});
