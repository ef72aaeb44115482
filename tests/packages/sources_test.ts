/**
 * The source registry (`src/packages/sources/registry.ts`) and what learns from it: the config schema accepts exactly
 * the registered kinds and names them in its messages; code hosts get their `upstreams` keys, tokens (secret, with
 * their environment variables); and the `codeberg:` kind reads Forgejo's raw layout (ref in the query, encoded),
 * maps it onto `/codeberg/...` mirror paths and resolves package.json entries inside the repository.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ENV_OVERRIDES, loadConfig } from "../../src/config/load.ts";
import { configSchema, displayConfig, SECRET_KEYS, sourceField } from "../../src/config/schema.ts";
import { mirrorPath, parseSpec, resolveSource, specUrl } from "../../src/packages/locations.ts";
import { rewriteDep } from "../../src/packages/repo_service.ts";
import {
  kindsProblem,
  parseSource,
  REPO_HOST_NAMES,
  REPO_HOSTS,
  SOURCE_KINDS,
} from "../../src/packages/sources/registry.ts";
import type { SourceKind } from "../../src/packages/sources/source.ts";
import { urlsFormDep } from "../../src/packages/urls_form.ts";
import { tempDir } from "../helpers.ts";

/** One source of each registered kind; a kind registered without one here fails the test that reads them all. */
const SAMPLES: Record<string, string> = {
  github: "github:acme/sensorkit",
  gitlab: "gitlab:grp/glpkg/sub",
  codeberg: "codeberg:flock/birdkit",
  url: "url:https://files.example.com/lib/package.json",
  pypi: "pypi:sensorlib",
  local: "local:/srv/tools",
};

/** A kind no registry holds, to show the schema takes whatever kinds it is given. */
const SFTP: SourceKind = {
  name: "sftp",
  pattern: /^[a-z0-9.-]+\/[A-Za-z0-9_./-]+$/,
  example: "sftp:host/path",
  versioned: false,
  parse() {
    throw new Error("not read in this test");
  },
};

function problem(result: { success: boolean; error?: { issues: { message: string }[] } }): string {
  assert.equal(result.success, false, "expected a refusal");
  return result.error!.issues[0].message;
}

Deno.test("a kind in the registry is accepted by the config schema; the message lists the registry's kinds in order", () => {
  const field = sourceField([...SOURCE_KINDS, SFTP]);
  assert.equal(field.parse(" sftp:box.lan/pkgs/x.py "), "sftp:box.lan/pkgs/x.py");
  assert.match(problem(sourceField(SOURCE_KINDS).safeParse("sftp:box.lan/pkgs/x.py")), /^expected a source such as/);
  assert.equal(
    problem(field.safeParse("svn:a/b")),
    "expected a source such as github:owner/repo[/path], gitlab:owner/repo[/path], codeberg:owner/repo[/path], " +
      `url:https://.../package.json, pypi:name, local:/dir or sftp:host/path, got "svn:a/b"`,
  );
  // The configuration's own field is the registry's: its message names each registered kind, in registry order.
  const message = problem(configSchema.safeParse({ packages: { x: { source: "svn:a/b" } } }));
  const at = SOURCE_KINDS.map((k) => message.indexOf(k.example));
  assert.ok(at.every((i) => i >= 0), message);
  assert.deepEqual([...at].sort((a, b) => a - b), at, `kinds out of registry order: ${message}`);
  assert.doesNotMatch(message, /sftp/);
});

Deno.test("every registered kind: a sample passes the schema and parses to a Source of that kind", () => {
  assert.deepEqual(Object.keys(SAMPLES).sort(), SOURCE_KINDS.map((k) => k.name).sort(), "one sample per kind");
  for (const kind of SOURCE_KINDS) {
    const text = SAMPLES[kind.name];
    const config = configSchema.parse({ packages: { pkg: { source: text } } });
    assert.equal(config.packages.pkg.source, text);
    const source = parseSource(text);
    assert.equal(source.kind, kind.name);
    assert.equal(source.text, text);
    assert.equal(source.defaultRef, kind.host ? "HEAD" : "latest", text);
    assert.equal(source.repo?.host, kind.host ? kind.name : undefined, text);
  }
  assert.deepEqual(parseSource("codeberg:flock/birdkit/sub/").repo, {
    host: "codeberg",
    owner: "flock",
    repo: "birdkit",
    path: "sub",
  });
  // `..` only where a kind takes it (a local folder); never in a repository path.
  assert.equal(sourceField(SOURCE_KINDS).parse("local:../tools"), "local:../tools");
  problem(sourceField(SOURCE_KINDS).safeParse("codeberg:flock/birdkit/../x"));
  problem(sourceField(SOURCE_KINDS).safeParse("codeberg:flock"));
  assert.throws(() => parseSource("svn:a/b"), /unknown source kind in svn:a\/b/);
});

Deno.test("ref and pins apply to the versioned kinds only, and the message says which those are", () => {
  const refused = problem(configSchema.safeParse({ packages: { f: { source: SAMPLES.url, ref: "v1" } } }));
  assert.equal(
    refused,
    "url: and local: sources have no versions; ref applies to github:, gitlab:, codeberg: and pypi: sources",
  );
  const config = configSchema.parse({
    packages: { b: { source: SAMPLES.codeberg, ref: "v0.2" } },
    pins: { b: "v0.2" },
  });
  assert.equal(config.packages.b.ref, "v0.2");
  assert.match(
    problem(configSchema.safeParse({ packages: { l: { source: SAMPLES.local } }, pins: { l: "1.0" } })),
    /l is a local: package, which has no versions to pin/,
  );
});

Deno.test("the registry refuses kinds it could not serve", () => {
  assert.equal(kindsProblem(SOURCE_KINDS), undefined);
  assert.match(kindsProblem([...SOURCE_KINDS, { ...SFTP, name: "Sftp" }])!, /"Sftp": expected lowercase letters/);
  assert.match(kindsProblem([...SOURCE_KINDS, { ...SFTP, name: "pypi" }])!, /pypi is registered twice/);
  const codeberg = SOURCE_KINDS.find((k) => k.name === "codeberg")!;
  assert.match(kindsProblem([{ ...codeberg, name: "forgejo" }])!, /forgejo: its host layout is named codeberg/);
});

Deno.test("each code host has its upstreams key and default; a token key is secret and set by its own variables", () => {
  assert.deepEqual(REPO_HOST_NAMES, ["github", "gitlab", "codeberg"]);
  const defaults = configSchema.parse({}).upstreams as unknown as Record<string, unknown>;
  for (const host of REPO_HOSTS) assert.equal(defaults[host.name], host.defaultBase, host.name);
  assert.equal(defaults.codeberg, "https://codeberg.org");
  assert.equal(defaults.codeberg_token, null);
  assert.equal(defaults.github_token, null);
  assert.ok(!("gitlab_token" in defaults), "gitlab declares no token");
  assert.ok(SECRET_KEYS.includes("upstreams.codeberg_token"));
  assert.equal(ENV_OVERRIDES.MIPSERVER_CODEBERG_TOKEN, "upstreams.codeberg_token");
  assert.equal(ENV_OVERRIDES.GITHUB_TOKEN, "upstreams.github_token");

  const dir = tempDir();
  Deno.writeTextFileSync(join(dir, "config.yaml"), "upstreams: {codeberg: 'https://git.example.org/forgejo/'}\n");
  const { config } = loadConfig({ cwd: dir, env: { MIPSERVER_CODEBERG_TOKEN: "cb_secret_value" } });
  assert.equal(config.upstreams.codeberg, "https://git.example.org/forgejo");
  assert.equal(config.upstreams.codeberg_token, "cb_secret_value");
  const shown = displayConfig(config) as { upstreams: Record<string, unknown> };
  assert.equal(shown.upstreams.codeberg_token, "[redacted]");
  assert.doesNotMatch(JSON.stringify(shown), /cb_secret_value/);
  assert.match(problem(configSchema.safeParse({ upstreams: { codeberg: "ftp://x" } })), /expected an http\(s\) URL/);
});

Deno.test("codeberg: raw URLs in Forgejo's layout, the ref encoded in the query, mapped to /codeberg/ mirror paths", () => {
  const bases = { github: "https://raw.githubusercontent.com", gitlab: "https://gitlab.com" };
  const raw = "https://codeberg.org/api/v1/repos/flock/birdkit/raw";
  // Bases without codeberg (as everything before it passed them) read it at its default.
  assert.equal(specUrl(bases, "codeberg:flock/birdkit", "HEAD", true), `${raw}/package.json?ref=HEAD`);
  assert.equal(specUrl(bases, "codeberg:flock/birdkit/sub", "main", true), `${raw}/sub/package.json?ref=main`);
  assert.equal(specUrl(bases, "codeberg:flock/birdkit/solo.py", "main", true), `${raw}/solo.py?ref=main`);
  assert.deepEqual(parseSpec("codeberg:flock/birdkit/sub/"), {
    host: "codeberg",
    owner: "flock",
    repo: "birdkit",
    path: "sub",
  });
  // A bare `+` would reach Forgejo as a space: the ref is encoded, and decoded again for the mirror path.
  const plus = specUrl(bases, "codeberg:flock/birdkit", "v1.0+build.5", true)!;
  assert.equal(plus, `${raw}/package.json?ref=v1.0%2Bbuild.5`);
  assert.equal(mirrorPath(bases, plus), "/codeberg/flock/birdkit/v1.0+build.5/package.json");
  assert.equal(mirrorPath(bases, `${raw}/a/b.py?ref=main`), "/codeberg/flock/birdkit/main/a/b.py");
  // Only URLs naming one ref that fits a path segment are mirrored as /codeberg/; others stay plain URLs.
  assert.equal(
    mirrorPath(bases, `${raw}/a.py?ref=feature/x`),
    "/url/https/codeberg.org/api/v1/repos/flock/birdkit/raw/a.py",
  );
  assert.equal(
    mirrorPath(bases, `${raw}/a.py?ref=main&x=1`),
    "/url/https/codeberg.org/api/v1/repos/flock/birdkit/raw/a.py",
  );
  assert.equal(mirrorPath(bases, `${raw}/a.py`), "/url/https/codeberg.org/api/v1/repos/flock/birdkit/raw/a.py");

  // A self-hosted Forgejo or Gitea behind a path.
  const own = { ...bases, codeberg: "https://git.example.org/forgejo" };
  const ownRaw = "https://git.example.org/forgejo/api/v1/repos/flock/birdkit/raw";
  assert.equal(specUrl(own, "codeberg:flock/birdkit", "v0.2", true), `${ownRaw}/package.json?ref=v0.2`);
  assert.equal(mirrorPath(own, `${ownRaw}/x.py?ref=v0.2`), "/codeberg/flock/birdkit/v0.2/x.py");
  assert.equal(mirrorPath(own, `${raw}/x.py?ref=v0.2`), "/url/https/codeberg.org/api/v1/repos/flock/birdkit/raw/x.py");
});

Deno.test("code hosts sharing one base: the layout that explains more of the URL names its mirror path", () => {
  const one = "http://10.0.0.9:3000";
  const bases = { github: one, gitlab: one, codeberg: one };
  assert.equal(
    mirrorPath(bases, `${one}/api/v1/repos/flock/solo/raw/solo.py?ref=main`),
    "/codeberg/flock/solo/main/solo.py",
  );
  assert.equal(mirrorPath(bases, `${one}/grp/glpkg/-/raw/main/glpkg.py`), "/gitlab/grp/glpkg/main/glpkg.py");
  assert.equal(mirrorPath(bases, `${one}/acme/kit/main/kit.py`), "/github/acme/kit/main/kit.py");
  assert.equal(
    resolveSource(bases, "x.py", `${one}/api/v1/repos/flock/solo/raw/package.json?ref=v1`, "v1"),
    `${one}/api/v1/repos/flock/solo/raw/x.py?ref=v1`,
  );
});

Deno.test("codeberg: package.json entries resolve inside the repository at the ref, as mip resolves them", () => {
  const bases = {};
  const raw = "https://codeberg.org/api/v1/repos/flock/birdkit/raw";
  const pkg = `${raw}/sub/package.json?ref=v0.2`;
  assert.equal(resolveSource(bases, "a/b.py", pkg, "v0.2"), `${raw}/sub/a/b.py?ref=v0.2`);
  assert.equal(resolveSource(bases, "../top.py", pkg, "v0.2"), `${raw}/top.py?ref=v0.2`);
  assert.throws(() => resolveSource(bases, "../../x.py", pkg, "v0.2"), /"\.\.\/\.\.\/x\.py" leaves the repository/);
  // A `?` in a relative entry names a file; it never replaces the ref.
  assert.equal(resolveSource(bases, "x.py?ref=evil", pkg, "v0.2"), `${raw}/sub/x.py%3Fref=evil?ref=v0.2`);
  assert.equal(
    resolveSource(bases, "codeberg:flock/feathers/feathers.py", pkg, "v0.2"),
    "https://codeberg.org/api/v1/repos/flock/feathers/raw/feathers.py?ref=v0.2",
  );
  // Across hosts: a codeberg: entry in a GitHub package.json, and a github: entry in a Codeberg one.
  const gh = "https://raw.githubusercontent.com/acme/kit/main/package.json";
  assert.equal(
    resolveSource(bases, "codeberg:flock/birdkit/song.py", gh, "main"),
    `${raw}/song.py?ref=main`,
  );
  assert.equal(
    resolveSource(bases, "github:acme/kit/x.py", pkg, "v0.2"),
    "https://raw.githubusercontent.com/acme/kit/v0.2/x.py",
  );
  assert.throws(
    () => resolveSource(bases, "svn:a/b.py", pkg, "v0.2"),
    /"svn:a\/b\.py" is neither relative nor an http\(s\), github:, gitlab: or codeberg: URL/,
  );
});

Deno.test("codeberg: dependencies become this server's /codeberg/ mirror URLs, in both manifest forms", () => {
  const bases = {};
  const base = "http://gw:18891";
  assert.deepEqual(rewriteDep(bases, base, ["codeberg:flock/feathers", "main"]), [
    `${base}/codeberg/flock/feathers/main/package.json`,
    "main",
  ]);
  assert.deepEqual(rewriteDep(bases, base, ["codeberg:flock/solo/solo.py", "latest"]), [
    `${base}/codeberg/flock/solo/HEAD/solo.py`,
    "latest",
  ]);
  const target = { base, prefix: "/t/lan", mpy: "6", bases };
  assert.deepEqual(urlsFormDep(target, ["codeberg:flock/feathers/sub", "v1"]), [
    `${base}/t/lan/codeberg/flock/feathers/v1/sub/package.json`,
    "v1",
  ]);
});
