/**
 * `codeberg:` wherever `github:` works, against a fake Forgejo in its raw API layout
 * (`/api/v1/repos/{owner}/{repo}/raw/{path}?ref={ref}`): the `/codeberg/...` mirror and its `/t/{profile}/` compiled
 * form, named packages, `codeberg:` urls and deps in a Codeberg and in a GitHub package.json, `/repo/.../codeberg/...`
 * dependency manifests, `policy.unlisted: deny`, the token (sent to the configured Codeberg host only, never on a
 * redirect elsewhere), a self-hosted Forgejo behind a path, and refresh of a moved tag.
 */
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { type App, createApp } from "../../src/app.ts";
import { sha256Hex } from "../../src/store/hash.ts";
import { memoryLogger } from "../../src/log.ts";
import { tokenHeaders } from "../../src/upstream/hosts.ts";
import { codebergTree, FakeForgejo } from "../fixtures/codeberg_fixture.ts";
import { startUpstreams, type Upstreams } from "../fixtures/upstreams.ts";
import { tempDir, testConfig } from "../helpers.ts";
import { mpyCrossPath } from "../e2e/tools.ts";

const B = "http://gw:18891";

interface Env {
  app: App;
  up: Upstreams;
  forgejo: FakeForgejo;
  logger: ReturnType<typeof memoryLogger>;
  tick(ms: number): void;
  get(path: string, init?: RequestInit): Promise<Response>;
  // deno-lint-ignore no-explicit-any
  json(path: string): Promise<Record<string, any>>;
  close(): Promise<void>;
}

async function setup(
  config: Record<string, unknown> = {},
  forgejoOptions: ConstructorParameters<typeof FakeForgejo>[1] = {},
): Promise<Env> {
  const up = await startUpstreams();
  const forgejo = new FakeForgejo(codebergTree(), forgejoOptions).start();
  const logger = memoryLogger();
  let clock = 1_800_000_000_000;
  const { upstreams, cache, ...rest } = config as { upstreams?: object; cache?: object };
  const app = await createApp({
    config: testConfig({
      server: { port: 18891 },
      cache: { dir: tempDir(), ...cache },
      upstreams: { ...up.upstreams, codeberg: forgejo.url, ...upstreams },
      targets: { lan: {} },
      mpy_cross: { path: mpyCrossPath() },
      ...rest,
    }),
    logger,
    now: () => clock,
  });
  const get = (path: string, init: RequestInit = {}) =>
    app.handler(new Request(`http://gw${path}`, { ...init, headers: { host: "gw" } }));
  return {
    app,
    up,
    forgejo,
    logger,
    tick: (ms) => void (clock += ms),
    get,
    async json(path) {
      const res = await get(path);
      const text = await res.text();
      assert.equal(res.status, 200, `${path}: ${text}`);
      return JSON.parse(text);
    },
    async close() {
      await app.idle();
      await forgejo.stop();
      await up.stop();
    },
  };
}

/** The bytes behind each `hashes` entry of a manifest, by destination. */
async function filesOf(env: Env, doc: Record<string, unknown>): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [dest, hash] of doc.hashes as [string, string][]) {
    const res = await env.get(`/file/${hash.slice(0, 2)}/${hash}`);
    const bytes = new Uint8Array(await res.arrayBuffer());
    assert.equal(res.status, 200, dest);
    assert.ok((await sha256Hex(bytes)).startsWith(hash), `${dest} matches its hash`);
    out[dest] = new TextDecoder().decode(bytes);
  }
  return out;
}

/** Writes a file into the fake GitHub, on `main` and on `HEAD` (the default branch). */
function writeGithub(up: Upstreams, path: string, content: string): void {
  for (const ref of ["main", "HEAD"]) {
    const file = join(up.githubRoot, path.replace("/{ref}/", `/${ref}/`));
    Deno.mkdirSync(dirname(file), { recursive: true });
    Deno.writeTextFileSync(file, content);
  }
}

Deno.test("/codeberg/... mirrors Forgejo's raw files: package.json rewritten to point back here, files raw", async () => {
  const env = await setup();
  try {
    const doc = await env.json("/codeberg/flock/birdkit/main/package.json");
    assert.deepEqual(doc.urls, [
      ["birdkit/__init__.py", `${B}/codeberg/flock/birdkit/main/birdkit/__init__.py`],
      ["birdkit/song.py", `${B}/codeberg/flock/birdkit/main/birdkit/song.py`],
    ]);
    assert.deepEqual(doc.deps, [
      [`${B}/codeberg/flock/feathers/main/package.json`, "main"],
      [`${B}/github/acme/helpers/main/package.json`, "main"],
      [`${B}/urls/package/py/hello/latest.json`, "latest"],
    ]);
    assert.equal(doc.version, "0.3-dev");
    const song = await env.get("/codeberg/flock/birdkit/main/birdkit/song.py");
    assert.equal(song.status, 200);
    assert.equal(await song.text(), `def tune():\n    return "tweet 0.3-dev"\n`);
    assert.ok(
      env.forgejo.log.includes("/api/v1/repos/flock/birdkit/raw/package.json?ref=main"),
      env.forgejo.log.join(),
    );
    assert.ok(env.forgejo.log.includes("/api/v1/repos/flock/birdkit/raw/birdkit/song.py?ref=main"));
    await (await env.get("/codeberg/flock/birdkit/main/birdkit/song.py")).arrayBuffer();
    assert.equal(env.forgejo.count("birdkit/song.py"), 1, "the second request is served from the cache");

    const solo = await env.get("/codeberg/flock/solo/main/solo.py");
    assert.match(await solo.text(), /solo from codeberg/);
    const escape = await env.get("/codeberg/flock/escape/main/package.json");
    assert.equal(escape.status, 502);
    assert.match(await escape.text(), /url entry "x\.py": "\.\.\/\.\.\/\.\.\/other\/x\.py" leaves the repository/);
    const missing = await env.get("/codeberg/flock/nosuch/main/package.json");
    assert.equal(missing.status, 404, await missing.text());
    // A `?` in the path could name another ref upstream: refused before anything is asked.
    const injected = await env.get("/codeberg/flock/birdkit/main/x.py%3Fref=v0.2");
    assert.equal(injected.status, 400);
    assert.match(await injected.text(), /Invalid path "x\.py\?ref=v0\.2": it holds "\?"/);
  } finally {
    await env.close();
  }
});

Deno.test("/t/{profile}/codeberg/... is built and compiled for the profile and answered in urls form", async () => {
  const env = await setup();
  try {
    const doc = await env.json("/t/lan/codeberg/flock/birdkit/main/package.json");
    assert.deepEqual(doc.urls.map(([d]: string[]) => d), ["birdkit/__init__.mpy", "birdkit/song.mpy"]);
    for (const [, url] of doc.urls as string[][]) assert.match(url, /^http:\/\/gw:18891\/t\/lan\/file\/[0-9a-f]{2}\//);
    assert.deepEqual(doc.deps, [
      [`${B}/t/lan/codeberg/flock/feathers/main/package.json`, "main"],
      [`${B}/t/lan/github/acme/helpers/main/package.json`, "main"],
      [`${B}/t/lan/urls/package/6/hello/latest.json`, "latest"],
    ]);
    const mpy = await env.get(new URL(doc.urls[0][1]).pathname);
    assert.equal(new Uint8Array(await mpy.arrayBuffer())[0], "M".charCodeAt(0));
    const dep = await env.json("/t/lan/codeberg/flock/feathers/main/package.json");
    assert.deepEqual(dep.urls.map(([d]: string[]) => d), ["feathers.mpy"]);
    const raw = await env.get("/t/lan/codeberg/flock/solo/main/solo.py");
    assert.match(await raw.text(), /def alone/, "a plain file under a profile is served as it is");
    assert.equal((await env.get("/t/nope/codeberg/flock/birdkit/main/package.json")).status, 404);
  } finally {
    await env.close();
  }
});

Deno.test("a named codeberg: package: files from Forgejo, hashed; its codeberg:, github: and index deps served here", async () => {
  const env = await setup({
    packages: { birdkit: { source: "codeberg:flock/birdkit" }, solo: { source: "codeberg:flock/solo/solo.py" } },
  });
  try {
    const doc = await env.json("/package/py/birdkit/latest.json");
    assert.equal(doc.version, "0.3-dev");
    const files = await filesOf(env, doc);
    assert.deepEqual(Object.keys(files), ["birdkit/__init__.py", "birdkit/song.py"]);
    assert.match(files["birdkit/song.py"], /tweet 0\.3-dev/);
    assert.deepEqual(doc.deps, [
      [`${B}/repo/py/codeberg/flock/feathers/main/package.json`, "main"],
      [`${B}/repo/py/github/acme/helpers/main/package.json`, "main"],
      ["hello", "latest"],
    ]);
    assert.ok(env.forgejo.log.includes("/api/v1/repos/flock/birdkit/raw/package.json?ref=HEAD"), "HEAD, as mip asks");

    const feathers = await env.json("/repo/py/codeberg/flock/feathers/main/package.json");
    assert.deepEqual(await filesOf(env, feathers), { "feathers.py": "def count():\n    return 7\n" });
    const compiled = await env.json("/repo/6/codeberg/flock/feathers/main/package.json");
    assert.deepEqual((compiled.hashes as string[][]).map(([d]) => d), ["feathers.mpy"]);

    const tagged = await env.json("/package/py/birdkit/v0.2.json");
    assert.equal(tagged.version, "0.2");
    assert.match((await filesOf(env, tagged))["birdkit/song.py"], /tweet 0\.2/);

    const solo = await env.json("/package/py/solo/latest.json");
    assert.deepEqual(await filesOf(env, solo), { "solo.py": "def alone():\n    return 'solo from codeberg'\n" });

    const index = (await env.json("/index.json")).packages as { name: string; description: string }[];
    assert.equal(index.find((p) => p.name === "birdkit")?.description, "codeberg:flock/birdkit (served by mipserver)");
  } finally {
    await env.close();
  }
});

Deno.test("codeberg: urls and deps in a GitHub package.json point at this server's /codeberg/ mirror", async () => {
  const env = await setup({ packages: { bridge: { source: "github:acme/bridge" } } });
  writeGithub(
    env.up,
    "acme/bridge/{ref}/package.json",
    JSON.stringify({
      urls: [["song.py", "codeberg:flock/birdkit/birdkit/song.py"]],
      deps: [["codeberg:flock/feathers", "main"], ["codeberg:flock/solo/solo.py", "main"]],
      version: "1.0",
    }),
  );
  try {
    const doc = await env.json("/github/acme/bridge/main/package.json");
    assert.deepEqual(doc.urls, [["song.py", `${B}/codeberg/flock/birdkit/main/birdkit/song.py`]]);
    assert.deepEqual(doc.deps, [
      [`${B}/codeberg/flock/feathers/main/package.json`, "main"],
      [`${B}/codeberg/flock/solo/main/solo.py`, "main"],
    ]);
    assert.match(await (await env.get("/codeberg/flock/birdkit/main/birdkit/song.py")).text(), /tweet 0\.3-dev/);

    // The same package by name: the codeberg: url entry is fetched (at the package's ref, HEAD) and hashed.
    const named = await env.json("/package/py/bridge/latest.json");
    assert.deepEqual(await filesOf(env, named), { "song.py": `def tune():\n    return "tweet 0.3-dev"\n` });
    assert.ok(env.forgejo.log.includes("/api/v1/repos/flock/birdkit/raw/birdkit/song.py?ref=HEAD"));
    assert.deepEqual(named.deps, [
      [`${B}/repo/py/codeberg/flock/feathers/main/package.json`, "main"],
      [`${B}/codeberg/flock/solo/main/solo.py`, "main"],
    ]);
  } finally {
    await env.close();
  }
});

Deno.test("policy.unlisted deny: a named codeberg: package's dependency closure is allowed, other repositories not", async () => {
  const env = await setup({
    packages: { birdkit: { source: "codeberg:flock/birdkit" } },
    policy: { unlisted: "deny" },
  });
  try {
    await env.json("/package/py/birdkit/latest.json");
    await env.json("/repo/py/codeberg/flock/feathers/main/package.json");
    await env.json("/codeberg/flock/feathers/main/package.json");
    const other = await env.get("/codeberg/flock/solo/main/solo.py");
    assert.equal(other.status, 403, await other.text());
    // Forgejo's own layout (a site's upstreams.codeberg) is held to the same policy: the closure raw, others not.
    const raw = await env.get("/codeberg/api/v1/repos/flock/feathers/raw/package.json?ref=main");
    assert.equal(raw.status, 200);
    assert.equal(
      await raw.text(),
      Deno.readTextFileSync(join(env.forgejo.root, "flock/feathers/main/package.json")),
      "as the host has it, not rewritten",
    );
    const otherRaw = await env.get("/codeberg/api/v1/repos/flock/solo/raw/solo.py?ref=main");
    assert.equal(otherRaw.status, 403, await otherRaw.text());
  } finally {
    await env.close();
  }
});

Deno.test("upstreams.codeberg_token goes to the configured Codeberg host only, never on a redirect elsewhere", async () => {
  const codeberg = "cb_token_9f3e1a77";
  const github = "ghp_token_51c0d2e8";
  const env = await setup(
    {
      packages: { birdkit: { source: "codeberg:flock/birdkit" }, secret: { source: "codeberg:flock/secret" } },
      upstreams: { codeberg_token: codeberg, github_token: github },
    },
    { privateRepos: { "flock/secret": codeberg } },
  );
  try {
    await env.json("/package/py/birdkit/latest.json");
    await env.json("/repo/py/codeberg/flock/feathers/main/package.json");
    await env.json("/repo/py/github/acme/helpers/main/package.json");
    await env.json("/package/6/hello/latest.json");
    assert.deepEqual(await filesOf(env, await env.json("/package/py/secret/latest.json")), {
      "secret.py": "WORD = 'hidden'\n",
    });
    // A file Forgejo keeps elsewhere: the redirect is followed without the token.
    env.forgejo.redirects.set("/api/v1/repos/flock/birdkit/raw/moved.json", `${env.up.index.url}/index.json`);
    const moved = await env.get("/codeberg/flock/birdkit/main/moved.json");
    assert.equal(moved.status, 200, await moved.text());
    assert.ok(env.up.index.log.includes("/index.json"));

    assert.ok(env.forgejo.auth.length > 5);
    assert.ok(env.forgejo.auth.every((a) => a === `token ${codeberg}`), JSON.stringify(env.forgejo.auth));
    assert.ok(env.up.github.auth.length > 0);
    assert.ok(env.up.github.auth.every((a) => a === `token ${github}`), JSON.stringify(env.up.github.auth));
    assert.ok(env.up.index.auth.every((a) => a === null), JSON.stringify(env.up.index.auth));
    assert.ok(!env.logger.lines.some((l) => l.includes(codeberg) || l.includes(github)), "tokens are never logged");
  } finally {
    await env.close();
  }

  // Without the token the private repository is not there, as Forgejo answers it.
  const anonymous = await setup(
    { packages: { secret: { source: "codeberg:flock/secret" } } },
    { privateRepos: { "flock/secret": codeberg } },
  );
  try {
    const res = await anonymous.get("/package/py/secret/latest.json");
    assert.equal(res.status, 404, await res.text());
    assert.ok(anonymous.forgejo.auth.every((a) => a === null));
  } finally {
    await anonymous.close();
  }
});

Deno.test("a Codeberg token is sent over https (or to a loopback test server) to its own hosts only", () => {
  const headers = tokenHeaders([
    { token: "cb", hosts: ["codeberg.org"] },
    { token: "gh", hosts: ["raw.githubusercontent.com", "github.com"] },
  ]);
  assert.deepEqual(headers(new URL("https://codeberg.org/api/v1/repos/a/b/raw/x.py?ref=main")), {
    authorization: "token cb",
  });
  assert.deepEqual(headers(new URL("https://raw.githubusercontent.com/a/b/main/x.py")), { authorization: "token gh" });
  assert.deepEqual(headers(new URL("http://codeberg.org/api/v1/repos/a/b/raw/x.py")), {}, "never in clear text");
  assert.deepEqual(headers(new URL("https://codeberg.org.evil.example/x")), {});
  assert.deepEqual(headers(new URL("https://codeberg.org:8443/x")), {}, "another port is another host");
  assert.deepEqual(headers(new URL("https://files.pythonhosted.org/x")), {});
  assert.deepEqual(tokenHeaders([])(new URL("https://codeberg.org/x")), {});
});

Deno.test("a self-hosted Forgejo behind a path serves codeberg: sources and the /codeberg/ mirror", async () => {
  const env = await setup({ packages: { birdkit: { source: "codeberg:flock/birdkit" } } }, { base: "/git" });
  try {
    assert.ok(env.forgejo.url.endsWith("/git"));
    const doc = await env.json("/codeberg/flock/feathers/main/package.json");
    assert.deepEqual(doc.urls, [["feathers.py", `${B}/codeberg/flock/feathers/main/feathers.py`]]);
    assert.equal(
      await (await env.get("/codeberg/flock/feathers/main/feathers.py")).text(),
      "def count():\n    return 7\n",
    );
    assert.equal((await env.json("/package/py/birdkit/latest.json")).version, "0.3-dev");
    assert.ok(env.forgejo.log.includes("/api/v1/repos/flock/feathers/raw/feathers.py?ref=main"));
  } finally {
    await env.close();
  }
});

Deno.test("POST /_/refresh/codeberg/{owner}/{repo}/{ref} re-reads a moved tag: mirrored files and manifests", async () => {
  const env = await setup({
    cache: { tag_ttl: null, prefetch: false },
    packages: { birdkit: { source: "codeberg:flock/birdkit", ref: "v0.2" } },
  });
  const raw = "/codeberg/flock/birdkit/v0.2/birdkit/song.py";
  const manifest = "/package/py/birdkit/latest.json";
  try {
    assert.match(await (await env.get(raw)).text(), /tweet 0\.2/);
    const before = (await env.json(manifest)).hashes;
    env.forgejo.write("flock/birdkit/v0.2/birdkit/song.py", `def tune():\n    return "moved"\n`);
    env.tick(365 * 24 * 3600_000);
    assert.match(await (await env.get(raw)).text(), /tweet 0\.2/, "tag_ttl null: kept for good");
    assert.deepEqual((await env.json(manifest)).hashes, before);
    await env.app.idle();

    const res = await env.get("/_/refresh/codeberg/flock/birdkit/v0.2", { method: "POST" });
    assert.equal(res.status, 200);
    const { host, expired } = await res.json();
    assert.equal(host, "codeberg");
    assert.equal(expired, 2, "the mirrored song.py and the named manifest built at v0.2 are marked");
    await (await env.get(raw)).arrayBuffer();
    await (await env.get(manifest)).arrayBuffer();
    await env.app.idle();
    assert.match(await (await env.get(raw)).text(), /moved/, "then the moved tag is served");
    const after = (await env.json(manifest)).hashes;
    assert.notDeepEqual(after, before, "and the named manifest is rebuilt from it");
    assert.match((await filesOf(env, { hashes: after }))["birdkit/song.py"], /moved/);
  } finally {
    await env.close();
  }
});
