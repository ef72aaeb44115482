/**
 * The name rules at the routes: what an upstream publishes is served (index names and versions, `.github`-style
 * repositories, odd file paths), what cannot be parsed is a 400 with a reason (never a 500), `/file/` under
 * `policy.unlisted: deny` serves only files of allowed packages, and version tags are re-read after `cache.tag_ttl`.
 */
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { createApp } from "../../src/app.ts";
import { DiskStore } from "../../src/store/disk/mod.ts";
import { isSafeKey } from "../../src/packages/names.ts";
import { memoryLogger } from "../../src/log.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { ODD_PACKAGES, oddIndex } from "../fixtures/odd_names.ts";
import { tempDir, testConfig } from "../helpers.ts";

function tree(files: Record<string, string>): string {
  const root = tempDir("mipserver-names-");
  for (const [path, content] of Object.entries(files)) {
    Deno.mkdirSync(dirname(join(root, path)), { recursive: true });
    Deno.writeTextFileSync(join(root, path), content);
  }
  return root;
}

async function setup(overrides: Record<string, unknown> = {}) {
  const idx = await oddIndex();
  const index = new FakeUpstream(idx.root).start();
  const githubRoot = tree({
    "acme/.github/main/package.json": JSON.stringify({ urls: [["profile.py", "profile.py"]] }),
    "acme/.github/main/profile.py": "P = 1\n",
    "-lead/-repo/main/package.json": JSON.stringify({ urls: [["dash.py", "dash.py"]] }),
    "-lead/-repo/main/dash.py": "D = 1\n",
    "acme/odd/main/package.json": JSON.stringify({
      urls: [[".hidden/x.py", ".hidden/x.py"], ["sp ace.py", "sp ace.py"], ["tag.py", "github:acme/odd/tag.py"]],
    }),
    "acme/odd/main/.hidden/x.py": "H = 1\n",
    "acme/odd/main/sp ace.py": "S = 1\n",
    "acme/odd/main/tag.py": "T = 1\n",
    "acme/tagged/v1.0/mod.py": "V = 1\n",
    "acme/tagged/v1.0/package.json": JSON.stringify({ urls: [["mod.py", "mod.py"]], version: "1.0" }),
  });
  const github = new FakeUpstream(githubRoot, "").start();
  const gitlab = new FakeUpstream(tree({ "grp/.cache/-/raw/main/c.py": "C = 1\n" }), "").start();
  const plain = new FakeUpstream(tree({ "lib/p.py": "P = 2\n" }), "").start();
  let clock = 1_800_000_000_000;
  const logger = memoryLogger();
  const dir = tempDir();
  const { cache, policy, ...rest } = overrides as { cache?: object; policy?: object };
  const app = await createApp({
    config: testConfig({
      cache: { dir, prefetch: false, ...cache },
      upstreams: { index: index.url, github: github.url, gitlab: gitlab.url, retries: 0 },
      policy: { allow_hosts: [plain.url.slice(7)], ...policy },
      ...rest,
    }),
    logger,
    now: () => clock,
  });
  return {
    app,
    idx,
    index,
    github,
    githubRoot,
    plain,
    dir,
    tick: (ms: number) => (clock += ms),
    get: (path: string, init: RequestInit = {}) =>
      app.handler(new Request(`http://gw${path}`, { ...init, headers: { host: "gw" } })),
    async close() {
      await app.idle();
      await Promise.all([index.stop(), github.stop(), gitlab.stop(), plain.stop()]);
    },
  };
}

Deno.test("index names, versions and paths build.py accepts are served byte for byte, cached under safe keys", async () => {
  const env = await setup();
  try {
    const listed = (await (await env.get("/index.json")).json()).packages.map((p: { name: string }) => p.name);
    assert.deepEqual(listed.sort(), ODD_PACKAGES.map((p) => p.name).sort());
    for (const pkg of ODD_PACKAGES) {
      for (const mpy of ["6", "py"]) {
        for (const version of ["latest", ...pkg.versions.map((v) => v.version)]) {
          const path = `/package/${mpy}/${encodeURIComponent(pkg.name)}/${encodeURIComponent(version)}.json`;
          const res = await env.get(path);
          const body = new Uint8Array(await res.arrayBuffer());
          assert.equal(res.status, 200, `${path}: ${new TextDecoder().decode(body)}`);
          const direct = await Deno.readFile(join(env.idx.root, "package", mpy, pkg.name, `${version}.json`));
          assert.deepEqual(body, direct, path);
          for (const [, h] of JSON.parse(new TextDecoder().decode(body)).hashes) {
            const file = await env.get(`/file/${h.slice(0, 2)}/${h}`);
            assert.deepEqual(new Uint8Array(await file.arrayBuffer()), env.idx.files.get(h));
          }
        }
      }
    }
    const keys = await Array.fromAsync(new DiskStore(env.dir).keys());
    assert.ok(keys.length > 10 && keys.every(isSafeKey), keys.join("\n"));
  } finally {
    await env.close();
  }
});

Deno.test("repositories named .github, -repo, GitLab .cache and odd file paths are mirrored (no 500)", async () => {
  const env = await setup();
  try {
    const doc = await (await env.get("/github/acme/.github/main/package.json")).json();
    assert.deepEqual(doc.urls, [["profile.py", "http://gw:18891/github/acme/.github/main/profile.py"]]);
    assert.equal(await (await env.get("/github/acme/.github/main/profile.py")).text(), "P = 1\n");
    assert.equal(await (await env.get("/github/-lead/-repo/main/dash.py")).text(), "D = 1\n");
    assert.equal(await (await env.get("/gitlab/grp/.cache/main/c.py")).text(), "C = 1\n");
    const odd = await (await env.get("/github/acme/odd/main/package.json")).json();
    for (const [dest, url] of odd.urls as [string, string][]) {
      const res = await env.get(new URL(url).pathname);
      assert.equal(res.status, 200, `${dest} at ${url}`);
      assert.equal(await res.text(), Deno.readTextFileSync(join(env.githubRoot, "acme/odd/main", dest)));
    }
    const named = await env.get("/repo/py/github/acme/.github/main/package.json");
    assert.equal(named.status, 200, await named.clone().text());
    assert.equal(
      await (await env.get(`/url/http/${env.plain.url.slice(7)}/lib/p.py`)).text(),
      "P = 2\n",
      "a plain URL with a port is mirrored",
    );
  } finally {
    await env.close();
  }
});

Deno.test("names, refs and hosts that cannot be served are a 400 with a reason, never a 500", async () => {
  const env = await setup();
  try {
    const cases: [string, RegExp][] = [
      ["/url/http/.evil/x.py", /Invalid host "\.evil": each dot-separated label/],
      ["/url/http/evil./x.py", /Invalid host "evil\.": each dot-separated label/],
      ["/url/http/a:99999/x.py", /Invalid host "a:99999": the port must be a number from 1 to 65535/],
      ["/url/http/a:0/x.py", /the port must be a number from 1 to 65535/],
      ["/url/http/256.256.256.256/x.py", /Invalid host "256\.256\.256\.256": an IPv4 address must be four numbers/],
      ["/url/http/1.2.3.4.5/x.py", /an IPv4 address must be four numbers/],
      ["/url/http/0x100000000/x.py", /an IPv4 address must be four numbers/],
      ["/url/http/1.2.3/x.py", /an IPv4 address must be four numbers/],
      [`/url/http/${"a".repeat(64)}.com/x.py`, /each dot-separated label must be 1 to 63/],
      [`/url/http/${"abcdefgh.".repeat(30)}com/x.py`, /a host name has at most 253 characters/],
      ["/url/http/[zz::1]/x.py", /Invalid host "\[zz::1\]"/],
      ["/url/http/example.com:80/x.py", /write it as example\.com/],
      ["/url/ftp/example.com/x.py", /Invalid scheme "ftp"/],
      ["/github/acme/a%20b/main/x.py", /Invalid repo "a b"/],
      ["/github/acme/x/-main/x.py", /Invalid ref "-main"/],
      ["/github/acme/x/a..b/x.py", /Invalid ref "a\.\.b"/],
      ["/github/acme/x/main.lock/x.py", /Invalid ref "main\.lock"/],
      ["/github/acme/x/main/a%3Fb.py", /Invalid path "a\?b\.py": it holds "\?"/],
      ["/github/acme/x/main/a%01b.py", /Invalid path .*control|Invalid path "a\\u0001b\.py": it holds/],
      [`/github/acme/x/main/${"d/".repeat(600)}x.py`, /Invalid path .*: it is longer than 1000 characters/],
      ["/package/6/a%20b/latest.json", /Invalid name "a b"/],
      ["/package/6/a%25b/latest.json", /Invalid name "a%b"/],
      ["/repo/6/github/acme/x/main/a%23/package.json", /Invalid path "a#\/package\.json": it holds "#"/],
    ];
    for (const [path, reason] of cases) {
      const res = await env.get(path);
      const text = await res.text();
      assert.equal(res.status, 400, `${path}: ${text}`);
      assert.match(text, reason, path);
    }
  } finally {
    await env.close();
  }
});

Deno.test("policy deny: /file/ serves only files listed by manifests of allowed packages, not all of the cache", async () => {
  const dir = tempDir();
  const first = await setup({ cache: { dir } });
  const filesOf = async (env: Awaited<ReturnType<typeof setup>>, name: string) => {
    const doc = await (await env.get(`/package/py/${name}/latest.json`)).json();
    return (doc.hashes as [string, string][]).map(([, h]) => `/file/${h.slice(0, 2)}/${h}`);
  };
  let secret: string[];
  try {
    secret = await filesOf(first, "os.path");
    for (const f of secret) assert.equal((await first.get(f)).status, 200);
  } finally {
    await first.close();
  }
  const env = await setup({ cache: { dir }, policy: { unlisted: "deny" }, pins: { plain: "1.0" } });
  try {
    for (const f of secret) {
      const res = await env.get(f);
      assert.equal(res.status, 403, `${f} is cached but belongs to no allowed package`);
      assert.match(await res.text(), /is not allowed: policy\.unlisted is deny and no allowed manifest lists it/);
    }
    assert.equal((await env.get("/package/py/os.path/latest.json")).status, 403);
    const allowed = await filesOf(env, "plain");
    for (const f of allowed) assert.equal((await env.get(f)).status, 200, f);
  } finally {
    await env.close();
  }
});

Deno.test("version tags are re-read after cache.tag_ttl (served stale meanwhile); commits are kept for good", async () => {
  const env = await setup({ cache: { tag_ttl: "1h", ttl: "1m" } });
  const path = "/github/acme/tagged/v1.0/mod.py";
  const file = join(env.githubRoot, "acme/tagged/v1.0/mod.py");
  try {
    assert.equal(await (await env.get(path)).text(), "V = 1\n");
    Deno.writeTextFileSync(file, "V = 2\n"); // the tag is moved upstream
    env.tick(30 * 60_000); // past cache.ttl, within cache.tag_ttl
    assert.equal(await (await env.get(path)).text(), "V = 1\n");
    await env.app.idle();
    assert.equal(env.github.count("/acme/tagged/v1.0/mod.py"), 1, "a tag is not re-read within cache.tag_ttl");
    env.tick(31 * 60_000);
    const stale = await env.get(path);
    assert.equal(await stale.text(), "V = 1\n", "served stale while the refresh runs");
    await env.app.idle();
    assert.equal(await (await env.get(path)).text(), "V = 2\n", "the moved tag is picked up");
  } finally {
    await env.close();
  }
  const never = await setup({ cache: { tag_ttl: null } });
  try {
    const sha = "0123456789abcdef0123456789abcdef01234567";
    Deno.mkdirSync(join(never.githubRoot, `acme/tagged/${sha}`), { recursive: true });
    Deno.writeTextFileSync(join(never.githubRoot, `acme/tagged/${sha}/mod.py`), "C = 1\n");
    for (const p of [path, `/github/acme/tagged/${sha}/mod.py`]) await (await never.get(p)).arrayBuffer();
    never.tick(365 * 24 * 3600_000);
    for (const p of [path, `/github/acme/tagged/${sha}/mod.py`]) await (await never.get(p)).arrayBuffer();
    await never.app.idle();
    assert.equal(never.github.count("/acme/tagged/"), 2, "tag_ttl null: tags and commits are never re-read");
  } finally {
    await never.close();
  }
});

Deno.test("POST /_/refresh/{host}/{owner}/{repo}/{ref} re-reads a moved tag kept for good, files and manifests", async () => {
  const env = await setup({
    cache: { tag_ttl: null },
    packages: { tagged: { source: "github:acme/tagged", ref: "v1.0" } },
  });
  const file = join(env.githubRoot, "acme/tagged/v1.0/mod.py");
  const raw = "/github/acme/tagged/v1.0/mod.py";
  const manifest = "/package/py/tagged/latest.json";
  try {
    assert.equal(await (await env.get(raw)).text(), "V = 1\n");
    const before = (await (await env.get(manifest)).json()).hashes;
    Deno.writeTextFileSync(file, "V = 2\n"); // the tag is moved upstream
    env.tick(365 * 24 * 3600_000);
    assert.equal(await (await env.get(raw)).text(), "V = 1\n", "tag_ttl null: kept for good");
    assert.deepEqual((await (await env.get(manifest)).json()).hashes, before);
    await env.app.idle();

    const res = await env.get("/_/refresh/github/acme/tagged/v1.0", { method: "POST" });
    assert.equal(res.status, 200);
    const { expired } = await res.json();
    assert.equal(expired, 2, "the mirrored mod.py and the named manifest built at v1.0 are marked");
    assert.equal(await (await env.get(raw)).text(), "V = 1\n", "the cached copy answers at once");
    await (await env.get(manifest)).arrayBuffer();
    await env.app.idle();
    assert.equal(await (await env.get(raw)).text(), "V = 2\n", "then the moved tag is served");
    const after = (await (await env.get(manifest)).json()).hashes;
    assert.notDeepEqual(after, before, "and the named manifest is rebuilt from it");
    const files = await env.get(`/file/${after[0][1].slice(0, 2)}/${after[0][1]}`);
    assert.equal(await files.text(), "V = 2\n");
    const bad = await env.get("/_/refresh/bitbucket/acme/tagged/v1.0", { method: "POST" });
    assert.equal(bad.status, 400);
    assert.match(await bad.text(), /Invalid host "bitbucket": expected github, gitlab or codeberg/);
  } finally {
    await env.close();
  }
});
