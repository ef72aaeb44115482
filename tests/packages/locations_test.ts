import assert from "node:assert/strict";
import { isImmutableRef, mirrorPath, resolveSource, specUrl } from "../../src/packages/locations.ts";
import { isModule } from "../../src/packages/archive.ts";
import { safeDest } from "../../src/packages/package_json.ts";
import { rewriteDep } from "../../src/packages/repo_service.ts";

const bases = { github: "https://raw.githubusercontent.com", gitlab: "https://gitlab.com" };

Deno.test("commits and version tags are immutable refs; branches are not", () => {
  for (const ref of ["v1.0", "1.2.3", "2.0-rc1", "v0.5.2+build", "0123456789abcdef0123456789abcdef01234567"]) {
    assert.ok(isImmutableRef(ref), ref);
  }
  for (const ref of ["main", "HEAD", "dev", "release", "v1.x", "0123abc"]) assert.ok(!isImmutableRef(ref), ref);
});

Deno.test("sources resolve like mip: relative to package.json, github:/gitlab: at the ref, never out of the repo", () => {
  const pkg = "https://raw.githubusercontent.com/acme/kit/v2/sub/package.json";
  assert.equal(resolveSource(bases, "a/b.py", pkg, "v2"), "https://raw.githubusercontent.com/acme/kit/v2/sub/a/b.py");
  assert.equal(resolveSource(bases, "../top.py", pkg, "v2"), "https://raw.githubusercontent.com/acme/kit/v2/top.py");
  assert.equal(resolveSource(bases, "github:o/r/x.py", pkg, "v2"), "https://raw.githubusercontent.com/o/r/v2/x.py");
  assert.equal(resolveSource(bases, "gitlab:g/p/x.py", pkg, "main"), "https://gitlab.com/g/p/-/raw/main/x.py");
  assert.throws(() => resolveSource(bases, "../../../other/x.py", pkg, "v2"), /leaves the repository/);
  assert.throws(() => resolveSource(bases, "/etc/passwd", pkg, "v2"), /neither relative/);
  assert.throws(() => resolveSource(bases, "file:///etc/passwd", pkg, "v2"), /neither relative/);
  assert.equal(specUrl(bases, "github:o/r", "HEAD", true), "https://raw.githubusercontent.com/o/r/HEAD/package.json");
});

Deno.test("upstream URLs map to mirror paths on this server", () => {
  assert.equal(mirrorPath(bases, "https://raw.githubusercontent.com/o/r/main/x.py"), "/github/o/r/main/x.py");
  assert.equal(mirrorPath(bases, "https://gitlab.com/g/p/-/raw/main/x.py"), "/gitlab/g/p/main/x.py");
  assert.equal(mirrorPath(bases, "http://files.example:8080/a/b.py"), "/url/http/files.example:8080/a/b.py");
});

Deno.test("install destinations and archive members are checked", () => {
  for (const d of ["a.py", "pkg/mod.py"]) assert.ok(safeDest(d), d);
  for (const d of ["", "/abs.py", "../up.py", "a/../../b.py", "a\\b.py", "a//b.py"]) assert.ok(!safeDest(d), d);
  for (const p of ["mod.py", "pkg/__init__.py", "pkg/sub/x.py"]) assert.ok(isModule(p), p);
  for (
    const p of [
      "setup.py",
      "tests/x.py",
      "pkg/tests/x.py",
      "test_mod.py",
      "mod_test.py",
      "pkg.egg-info/x.py",
      "pkg-1.0.dist-info/x.py",
      "docs/conf.py",
      "README.md",
    ]
  ) assert.ok(!isModule(p), p);
});

Deno.test("dependencies: index names stay, github:/gitlab: and URLs become this server's mirror URLs", () => {
  const base = "http://gw:18891";
  assert.deepEqual(rewriteDep(bases, base, ["aioble", "latest"]), ["aioble", "latest"]);
  assert.deepEqual(rewriteDep(bases, base, ["github:o/r", "v2"]), [`${base}/github/o/r/v2/package.json`, "v2"]);
  assert.deepEqual(rewriteDep(bases, base, ["github:o/r/sub", "latest"]), [
    `${base}/github/o/r/HEAD/sub/package.json`,
    "latest",
  ]);
  assert.deepEqual(rewriteDep(bases, base, ["gitlab:g/p", "main"]), [`${base}/gitlab/g/p/main/package.json`, "main"]);
  assert.deepEqual(rewriteDep(bases, base, ["https://files.example.com/lib/", "latest"]), [
    `${base}/url/https/files.example.com/lib/package.json`,
    "latest",
  ]);
  assert.deepEqual(rewriteDep(bases, base, ["http://h.example:8080/x/mod.py", "latest"]), [
    `${base}/url/http/h.example:8080/x/mod.py`,
    "latest",
  ]);
});
