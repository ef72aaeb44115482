/** The bundle manifest's rules: which paths a bundle may hold, sizes, hashes, duplicates, format and version. */
import assert from "node:assert/strict";
import { BUNDLE_FORMAT, BUNDLE_VERSION, parseManifest, pathProblem } from "../../src/bundle/format.ts";

const sha = "0825f76e4924c2e610b2ac94d5f2cc4d708272ee7bded5f40955d62e19b18871";
const doc = (objects: unknown[], extra: Record<string, unknown> = {}) =>
  new TextEncoder().encode(
    JSON.stringify({
      format: BUNDLE_FORMAT,
      version: BUNDLE_VERSION,
      packages: ["*"],
      profiles: [],
      objects,
      ...extra,
    }),
  );

Deno.test("bundle paths: only the objects a bundle holds, never outside the cache", () => {
  for (const ok of ["index.json", "files/08/0825f76e", `files/08/${sha}`, "served/package/6/x/latest.json"]) {
    assert.equal(pathProblem(ok), undefined, ok);
  }
  assert.equal(pathProblem("served/t/esp32/repo/6/github/o/r/HEAD/package.json"), undefined);
  assert.equal(pathProblem("mirror/github/o/r/HEAD/x.py"), undefined);
  assert.match(pathProblem("../etc/passwd")!, /not a safe path/);
  assert.match(pathProblem("files/09/0825f76e")!, /not under/);
  assert.match(pathProblem("files/08/zz")!, /not a file hash/);
  assert.match(pathProblem("bundle/catalog.json")!, /not an object a bundle holds/);
  assert.match(pathProblem("served/package/6/x/latest.txt")!, /not an object/);
});

Deno.test("bundle manifest: format, version, sizes, hashes and duplicates are checked", () => {
  const file = { path: "files/08/0825f76e", size: 3, sha256: sha };
  assert.equal(parseManifest(doc([file])).objects.length, 1);
  assert.throws(() => parseManifest(new TextEncoder().encode("{")), /is not JSON/);
  assert.throws(() => parseManifest(doc([file], { format: "other" })), /Not a mipserver bundle/);
  assert.throws(() => parseManifest(doc([file], { version: 2 })), /version 2 is not supported/);
  assert.throws(() => parseManifest(doc([file, file])), /twice/);
  assert.throws(() => parseManifest(doc([{ ...file, sha256: "ab" }])), /invalid sha256/);
  assert.throws(() => parseManifest(doc([{ ...file, sha256: "f".repeat(64) }])), /does not start with its name/);
  assert.throws(() => parseManifest(doc([{ ...file, size: -1 }])), /invalid size/);
  assert.throws(
    () => parseManifest(doc([{ path: "served/package/6/x/latest.json", size: 17 * 1048576, sha256: sha }])),
    /manifests are at most/,
  );
  assert.throws(() => parseManifest(doc([file], { profiles: ["../x"] })), /invalid profile/);
});
