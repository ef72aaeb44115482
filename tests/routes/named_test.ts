import assert from "node:assert/strict";
import { join } from "node:path";
import { createApp } from "../../src/app.ts";
import { sha256Hex } from "../../src/store/hash.ts";
import { memoryLogger } from "../../src/log.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { startUpstreams } from "../fixtures/upstreams.ts";
import { tempDir, testConfig } from "../helpers.ts";

interface Env {
  app: Awaited<ReturnType<typeof createApp>>;
  index: FakeUpstream;
  github: FakeUpstream;
  gitlab: FakeUpstream;
  pypi: FakeUpstream;
  files: FakeUpstream;
  githubRoot: string;
  filesRoot: string;
  logger: ReturnType<typeof memoryLogger>;
  clock: { now: number };
  get(path: string): Promise<Response>;
  json(path: string): Promise<Record<string, unknown>>;
  close(): Promise<void>;
}

/** Fake index, GitHub, GitLab, PyPI and a plain file host; `config` is merged over the upstreams. */
async function setup(config: (u: Record<string, string>) => Record<string, unknown>): Promise<Env> {
  const up = await startUpstreams();
  const { index, github, githubRoot, gitlab, pypi } = up;
  const filesRoot = tempDir("mipserver-files-");
  const files = new FakeUpstream(filesRoot, "").start();
  const logger = memoryLogger("debug");
  const clock = { now: 1_000_000 };
  const extra = config({ index: index.url, github: github.url, gitlab: gitlab.url, pypi: pypi.url, files: files.url });
  const app = await createApp({
    config: testConfig({
      ...extra,
      cache: { dir: tempDir(), ttl: "10m", ...(extra.cache as object) },
      upstreams: {
        ...up.upstreams,
        ...(extra.upstreams as object),
      },
    }),
    logger,
    now: () => clock.now,
  });
  const get = (path: string) => app.handler(new Request(`http://gw${path}`, { headers: { host: "gw" } }));
  return {
    app,
    index,
    github,
    gitlab,
    pypi,
    files,
    githubRoot,
    filesRoot,
    logger,
    clock,
    get,
    async json(path: string) {
      const res = await get(path);
      const text = await res.text();
      assert.equal(res.status, 200, `${path}: ${res.status} ${text}`);
      return JSON.parse(text);
    },
    async close() {
      await app.idle();
      await Promise.all([up.stop(), files.stop()]);
    },
  };
}

/** Fetches every file a manifest lists from /file/ and checks each hash; returns dest → text. */
async function filesOf(env: Env, manifest: Record<string, unknown>): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [dest, hash] of manifest.hashes as [string, string][]) {
    const res = await env.get(`/file/${hash.slice(0, 2)}/${hash}`);
    assert.equal(res.status, 200, `${dest}: ${res.status}`);
    const bytes = new Uint8Array(await res.arrayBuffer());
    assert.ok((await sha256Hex(bytes)).startsWith(hash), `${dest} does not hash to what the manifest says`);
    out[dest] = new TextDecoder().decode(bytes);
  }
  return out;
}

Deno.test("a named GitHub package is an index manifest: files stored by hash, deps rewritten, listed in index.json", async () => {
  const env = await setup(() => ({ packages: { sensorkit: { source: "github:acme/sensorkit" } } }));
  try {
    const m = await env.json("/package/py/sensorkit/latest.json");
    assert.equal(m.version, "1.1-dev");
    assert.deepEqual(
      (m.hashes as string[][]).map(([d]) => d),
      ["sensorkit/__init__.py", "sensorkit/util.py"],
    );
    assert.deepEqual(m.deps, [["hello", "latest"], [
      "http://gw:18891/repo/py/github/acme/helpers/main/package.json",
      "main",
    ]]);
    assert.equal(env.github.count("/acme/sensorkit/HEAD/package.json"), 1);
    const dep = await env.json("/repo/py/github/acme/helpers/main/package.json");
    assert.deepEqual(Object.keys(await filesOf(env, dep)), ["helpers.py"], "a github: dep is a manifest built here");
    const compiled = await env.json("/package/6/sensorkit/latest.json");
    assert.deepEqual(compiled.deps, [["hello", "latest"], [
      "http://gw:18891/repo/6/github/acme/helpers/main/package.json",
      "main",
    ]]);
    const depMpy = await env.json("/repo/6/github/acme/helpers/main/package.json");
    assert.deepEqual((depMpy.hashes as string[][]).map(([d]) => d), ["helpers.mpy"], "and compiled like its parent");
    assert.equal((await env.get("/repo/6/github/acme/helpers/main/helpers.py")).status, 400);
    assert.equal(m.urls, undefined, "devices fetch files by hash from us, not by URL");
    const files = await filesOf(env, m);
    assert.match(files["sensorkit/util.py"], /def scale/);

    const index = await env.json("/index.json");
    const names = (index.packages as { name: string }[]).map((p) => p.name);
    assert.ok(names.includes("sensorkit") && names.includes("hello"), names.join(","));
  } finally {
    await env.close();
  }
});

Deno.test("@ref selects a tag; tags are immutable, branches are re-resolved after cache.ttl", async () => {
  const env = await setup(() => ({ packages: { sensorkit: { source: "github:acme/sensorkit", ref: "main" } } }));
  try {
    const tagged = await env.json("/package/py/sensorkit/v1.0.json");
    assert.equal(tagged.version, "1.0");
    assert.match((await filesOf(env, tagged))["sensorkit/__init__.py"], /VERSION = "1\.0"/);
    const branch = await env.json("/package/py/sensorkit/latest.json");
    assert.equal(branch.version, "1.1-dev");

    const pkgPath = join(env.githubRoot, "acme/sensorkit/main/package.json");
    const doc = JSON.parse(Deno.readTextFileSync(pkgPath));
    Deno.writeTextFileSync(pkgPath, JSON.stringify({ ...doc, version: "1.2-dev" }));
    env.clock.now += 11 * 60_000;
    const stale = await env.get("/package/py/sensorkit/latest.json");
    assert.equal(JSON.parse(await stale.text()).version, "1.1-dev", "stale copy served at once");
    await env.app.idle();
    assert.equal((await env.json("/package/py/sensorkit/latest.json")).version, "1.2-dev");

    const before = env.github.count("/v1.0/");
    assert.equal((await env.json("/package/py/sensorkit/v1.0.json")).version, "1.0");
    await env.app.idle();
    assert.equal(env.github.count("/v1.0/"), before, "a tag is never fetched again");

    const bad = await env.get("/package/py/sensorkit/nosuchref.json");
    assert.equal(bad.status, 404);
    assert.match(await bad.text(), /nosuchref\/package\.json/);
  } finally {
    await env.close();
  }
});

Deno.test("pins make latest resolve to the pinned version, for index and named packages", async () => {
  const env = await setup(() => ({
    packages: { sensorkit: { source: "github:acme/sensorkit" } },
    pins: { hello: "1.0", sensorkit: "v1.0" },
  }));
  try {
    assert.equal((await env.json("/package/6/hello/latest.json")).version, "1.0");
    assert.equal((await env.json("/package/6/hello/1.1.json")).version, "1.1", "an explicit version still works");
    assert.equal((await env.json("/package/py/sensorkit/latest.json")).version, "1.0");
  } finally {
    await env.close();
  }
});

Deno.test("GitLab, url: and local: sources; local edits show after cache.ttl", async () => {
  const local = tempDir("mipserver-local-");
  Deno.mkdirSync(join(local, "plain/deep"), { recursive: true });
  Deno.mkdirSync(join(local, "plain/tests"), { recursive: true });
  Deno.writeTextFileSync(join(local, "plain/mod.py"), "V = 1\n");
  Deno.writeTextFileSync(join(local, "plain/deep/inner.py"), "I = 1\n");
  Deno.writeTextFileSync(join(local, "plain/tests/test_mod.py"), "import mod\n");
  Deno.writeTextFileSync(join(local, "plain/notes.txt"), "not code\n");
  Deno.mkdirSync(join(local, "withjson"));
  Deno.writeTextFileSync(
    join(local, "withjson/package.json"),
    JSON.stringify({ urls: [["wj/__init__.py", "code.py"]], version: "3.0", deps: [["hello", "latest"]] }),
  );
  Deno.writeTextFileSync(join(local, "withjson/code.py"), "W = 3\n");
  const env = await setup((u) => ({
    packages: {
      glpkg: { source: "gitlab:grp/glpkg" },
      viaurl: { source: `url:${u.github}/acme/helpers/main/package.json` },
      plain: { source: `local:${join(local, "plain")}` },
      withjson: { source: `local:${join(local, "withjson")}` },
    },
  }));
  try {
    const gl = await env.json("/package/py/glpkg/latest.json");
    assert.equal((await filesOf(env, gl))["glpkg.py"].includes("from gitlab"), true);
    const viaurl = await env.json("/package/py/viaurl/latest.json");
    assert.match((await filesOf(env, viaurl))["helpers.py"], /def twice/);
    assert.equal((await env.get("/package/py/viaurl/2.0.json")).status, 404, "url: sources have one version");

    const plain = await env.json("/package/py/plain/latest.json");
    assert.deepEqual(Object.keys(await filesOf(env, plain)), ["deep/inner.py", "mod.py"]);
    const wj = await env.json("/package/py/withjson/latest.json");
    assert.equal(wj.version, "3.0");
    assert.deepEqual(wj.deps, [["hello", "latest"]]);
    assert.deepEqual(await filesOf(env, wj), { "wj/__init__.py": "W = 3\n" });

    Deno.writeTextFileSync(join(local, "plain/mod.py"), "V = 2\n");
    assert.equal((await filesOf(env, await env.json("/package/py/plain/latest.json")))["mod.py"], "V = 1\n");
    env.clock.now += 11 * 60_000;
    await (await env.get("/package/py/plain/latest.json")).arrayBuffer();
    await env.app.idle();
    assert.equal((await filesOf(env, await env.json("/package/py/plain/latest.json")))["mod.py"], "V = 2\n");
  } finally {
    await env.close();
  }
});

Deno.test("PyPI: sdist and pure wheel, latest or a version, modules only, sha256 verified", async () => {
  const env = await setup(() => ({
    packages: {
      sensorlib: { source: "pypi:sensorlib" },
      tinywheel: { source: "pypi:tinywheel" },
      srcpkg: { source: "pypi:srcpkg" },
      tampered: { source: "pypi:tampered" },
    },
  }));
  try {
    const latest = await env.json("/package/py/sensorlib/latest.json");
    assert.equal(latest.version, "0.3.0");
    const files = await filesOf(env, latest);
    assert.deepEqual(Object.keys(files), ["sensorlib/__init__.py", "sensorlib/core.py"], "no setup.py, tests, docs");
    assert.match(files["sensorlib/core.py"], /x \+ 3/);
    const old = await env.json("/package/py/sensorlib/0.2.0.json");
    assert.match((await filesOf(env, old))["sensorlib/core.py"], /x \+ 1/);
    assert.equal((await env.get("/package/py/sensorlib/9.9.9.json")).status, 404);

    assert.deepEqual(Object.keys(await filesOf(env, await env.json("/package/py/tinywheel/latest.json"))), [
      "tinywheel.py",
    ]);
    assert.deepEqual(Object.keys(await filesOf(env, await env.json("/package/py/srcpkg/latest.json"))), [
      "srcpkg/__init__.py",
    ]);

    const bad = await env.get("/package/py/tampered/latest.json");
    assert.equal(bad.status, 502);
    assert.match(await bad.text(), /Hash mismatch/);
    assert.ok(env.logger.lines.some((l) => l.includes("HASH MISMATCH")));
  } finally {
    await env.close();
  }
});

Deno.test("clear errors: missing package.json 404, malformed 502, failing url entry 502 naming it", async () => {
  const env = await setup(() => ({
    packages: {
      nothere: { source: "github:acme/nothere" },
      broken: { source: "github:acme/broken" },
      holes: { source: "github:acme/holes" },
      escape: { source: "github:acme/escape" },
    },
  }));
  try {
    const missing = await env.get("/package/6/nothere/latest.json");
    assert.equal(missing.status, 404);
    assert.match(await missing.text(), /acme\/nothere\/HEAD\/package\.json/);
    const broken = await env.get("/package/6/broken/latest.json");
    assert.equal(broken.status, 502);
    assert.match(await broken.text(), /Malformed package\.json .*acme\/broken/);
    const holes = await env.get("/package/6/holes/latest.json");
    assert.equal(holes.status, 502);
    assert.match(await holes.text(), /url entry "gone\.py"/);
    const escape = await env.get("/package/6/escape/latest.json");
    assert.equal(escape.status, 502);
    assert.match(await escape.text(), /leaves the repository/);
  } finally {
    await env.close();
  }
});

/** Puts `acme/offsite` on the fake GitHub: a package whose one file lives on the plain file host. */
function publishOffsite(env: Env): string {
  const dir = join(env.githubRoot, "acme/offsite/HEAD");
  Deno.mkdirSync(dir, { recursive: true });
  Deno.writeTextFileSync(join(dir, "package.json"), JSON.stringify({ urls: [["far.py", `${env.files.url}/far.py`]] }));
  Deno.writeTextFileSync(join(env.filesRoot, "far.py"), "FAR = 1\n");
  return new URL(env.files.url).host;
}

Deno.test("only configured upstream hosts are contacted; policy.allow_hosts adds more", async () => {
  const env = await setup(() => ({ packages: { offsite: { source: "github:acme/offsite" } } }));
  const filesHost = publishOffsite(env);
  try {
    const refused = await env.get("/package/py/offsite/latest.json");
    assert.equal(refused.status, 502);
    assert.match(await refused.text(), /not an allowed upstream/);
    const adhoc = await env.get(`/url/http/${filesHost}/far.py`);
    assert.equal(adhoc.status, 403);
    assert.equal(env.files.log.length, 0, "the unlisted host was never contacted");
  } finally {
    await env.close();
  }

  const allowed = await setup((u) => ({
    packages: { offsite: { source: "github:acme/offsite" } },
    policy: { allow_hosts: [new URL(u.files).host] },
  }));
  const allowedHost = publishOffsite(allowed);
  try {
    assert.deepEqual(await filesOf(allowed, await allowed.json("/package/py/offsite/latest.json")), {
      "far.py": "FAR = 1\n",
    });
    const adhoc = await allowed.get(`/url/http/${allowedHost}/far.py`);
    assert.equal(await adhoc.text(), "FAR = 1\n");
  } finally {
    await allowed.close();
  }
});

Deno.test("upstreams.github_token goes to GitHub hosts only and is never logged", async () => {
  const token = "ghp_secretvalue123";
  const env = await setup(() => ({
    packages: { sensorkit: { source: "github:acme/sensorkit" }, glpkg: { source: "gitlab:grp/glpkg" } },
    upstreams: { github_token: token },
  }));
  try {
    await env.json("/package/py/sensorkit/latest.json");
    await env.json("/package/py/glpkg/latest.json");
    await env.json("/package/6/hello/latest.json");
    assert.ok(env.github.auth.length > 0);
    assert.ok(env.github.auth.every((a) => a === `token ${token}`), JSON.stringify(env.github.auth));
    assert.ok(env.gitlab.auth.every((a) => a === null));
    assert.ok(env.index.auth.every((a) => a === null));
    assert.ok(!env.logger.lines.some((l) => l.includes(token)));
  } finally {
    await env.close();
  }
});

Deno.test("policy.unlisted deny: packages, pins and their dependency closure only; cycles terminate", async () => {
  const env = await setup(() => ({
    packages: { sensorkit: { source: "github:acme/sensorkit" }, cyca: { source: "github:acme/cyca" } },
    pins: { mathx: "0.2" },
    policy: { unlisted: "deny" },
  }));
  try {
    await env.json("/package/py/sensorkit/latest.json");
    const hello = await env.json("/package/6/hello/latest.json");
    await filesOf(env, hello);
    await env.json("/package/6/mathx/latest.json");
    await env.json("/github/acme/helpers/main/package.json");
    // Allowed by the policy (not 403), but refused for its dependency cycle (mip would loop on it).
    const cycb = await env.get("/github/acme/cycb/main/package.json");
    assert.equal(cycb.status, 502);
    assert.match(await cycb.text(), /Dependency cycle/);

    const denied = await env.get("/package/6/bigmod/latest.json");
    assert.equal(denied.status, 403);
    assert.match(await denied.text(), /bigmod is not allowed: policy\.unlisted is deny/);
    assert.equal((await env.get("/github/acme/broken/main/package.json")).status, 403);
    assert.equal((await env.get("/file/ab/abcdef12")).status, 403);

    const names = ((await env.json("/index.json")).packages as { name: string }[]).map((p) => p.name).sort();
    assert.deepEqual(names, ["cyca", "hello", "mathx", "sensorkit"]);
    assert.ok(env.logger.lines.some((l) => l.includes("Dependency cycle")), "the cycle is reported");
  } finally {
    await env.close();
  }
});
