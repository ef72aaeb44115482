import assert from "node:assert/strict";
import { answerFor } from "../../src/http/errors.ts";
import { testConfig } from "../helpers.ts";
import {
  cacheKey,
  checkManifest,
  destinationProblem,
  isSafeKey,
  keySegment,
  listedHashes,
  PACKAGE_NAME,
  parseHost,
  readManifest,
  REF,
  UnsafeManifestError,
  VERSION,
} from "../../src/packages/names.ts";

Deno.test("keySegment keeps plain names, encodes the rest into safe, distinct segments", () => {
  for (const plain of ["hello", "_thread", "v1.0", "a+b", "0123abcd"]) assert.equal(keySegment(plain), plain);
  const odd = [
    ".github",
    "-repo",
    "..",
    ".",
    "a:1",
    "a_1",
    "a=3A1",
    "=",
    "x y",
    "ümlaut",
    "a\u0000b",
    "a\\b",
    "~",
    "x".repeat(201),
    "é".repeat(150),
    "é".repeat(151),
  ];
  const all = [...odd, "hello", "_thread", "a_1"];
  const encoded = all.map(keySegment);
  assert.equal(new Set(encoded).size, new Set(all).size, "two different names never share a key segment");
  for (const e of encoded) assert.ok(isSafeKey(e), `${JSON.stringify(e)} is a safe key`);
  assert.equal(keySegment(".github"), "==2Egithub");
  assert.equal(keySegment("127.0.0.1:8080"), "=127.0.0.1=3A8080");
  assert.equal(cacheKey("mirror", "github/acme/.github/main/a b.py"), "mirror/github/acme/==2Egithub/main/=a=20b.py");
  assert.ok(!isSafeKey("../x") && !isSafeKey("a//b") && !isSafeKey(".hidden"));
});

Deno.test("package names and versions: whatever a device can send in a path segment, except '.' and '..'", () => {
  for (const n of ["__future__", "os.path", "-dash~tilde", "a:b", "x@1", "aioble-core"]) {
    assert.ok(PACKAGE_NAME.pattern.test(n), n);
  }
  for (const n of ["", ".", "..", "a b", "a/b", "a%b", "a#b", "a?b", "x".repeat(101), "é"]) {
    assert.ok(!PACKAGE_NAME.pattern.test(n), n);
  }
  for (const v of ["latest", "1.0", "1.0-rc.1+b.5", "0.0.1a1", "2~beta", "..x"]) assert.ok(VERSION.pattern.test(v), v);
});

Deno.test("refs follow git's rules for one path segment", () => {
  for (const r of ["main", "HEAD", "v1.0", "1.0.3", "2.0-rc1", "release_1", "a@b", "0123456789abcdef0123"]) {
    assert.ok(REF.pattern.test(r), r);
  }
  for (const r of ["-x", ".x", "a..b", "x.", "x.lock", "a b", "a~1", "a^", "a:b", "a/b", "x".repeat(201)]) {
    assert.ok(!REF.pattern.test(r), r);
  }
});

Deno.test("parseHost accepts names, IPv4, IPv6 and ports as URLs write them; anything else is a 400", () => {
  assert.equal(parseHost("http", "Example.COM"), "example.com");
  assert.equal(parseHost("http", "127.0.0.1:8080"), "127.0.0.1:8080");
  assert.equal(parseHost("https", "[::1]:8443"), "[::1]:8443");
  assert.equal(parseHost("http", "my_host.lan"), "my_host.lan");
  for (const bad of ["a:99999", "256.256.256.256", "1.2.3.4.5", "0x100000000", "1.2.3", "01.2.3.4", ".evil", "a..b"]) {
    assert.throws(() => parseHost("http", bad), (e) => answerFor(e)?.status === 400, bad);
  }
  assert.throws(() => parseHost("https", "example.com:443"), /write it as example\.com/);
});

Deno.test("destinations: relative paths only, no '..', '.', empty segments, backslashes or control characters", () => {
  for (const d of ["a.py", "pkg/mod.mpy", ".hidden/x.py", "sp ace.py", "ümlaut.py"]) {
    assert.equal(destinationProblem(d), undefined, d);
  }
  const bad: [string, RegExp][] = [
    ["", /empty/],
    ["/main.py", /absolute/],
    ["../x.py", /'\.\.'/],
    ["a/../../x.py", /'\.\.'/],
    ["./x.py", /'\.'/],
    ["a//b.py", /empty segment/],
    ["a\\b.py", /backslash/],
    ["a\u0007.py", /control/],
    ["a\u007f.py", /control/],
    ["x".repeat(1001), /longer than 1000/],
  ];
  for (const [d, why] of bad) assert.match(destinationProblem(d) ?? "", why, JSON.stringify(d));
  assert.throws(
    () => checkManifest({ hashes: [["ok.py", "abcd1234"], ["../pwned.py", "abcd1234"]] }, "package evil latest"),
    (e) =>
      e instanceof UnsafeManifestError && answerFor(e)?.status === 502 &&
      /package evil latest.*"\.\.\/pwned\.py"/.test(e.message),
  );
  assert.throws(() => checkManifest({ urls: [["a", "b", "c"]] }, "p"), /is not a pair of strings/);
  checkManifest({ hashes: [["a/b.mpy", "abcd1234"]], urls: [["c.py", "http://x/c.py"]], deps: [] }, "p");
});

Deno.test("pins accept any name and version an index lists", () => {
  const config = testConfig({ pins: { "__future__": "0.1.2", "_thread": "1.0-rc.1+b.5", "x~y": "2~beta" } });
  assert.deepEqual(config.pins, { "__future__": "0.1.2", "_thread": "1.0-rc.1+b.5", "x~y": "2~beta" });
  assert.throws(() => testConfig({ pins: { "a b": "1.0" } }), /expected a package name/);
});

Deno.test("readManifest reads a body once: the same bytes give the same view; what it lists; bodies that are not JSON", () => {
  const body = new TextEncoder().encode(
    JSON.stringify({ version: "1.0", hashes: [["a.py", "abcd1234"], ["b.py", 7], "odd", ["c.py", "ef012345"]] }),
  );
  const view = readManifest(body);
  assert.equal(readManifest(body), view);
  assert.deepEqual(view.hashes, ["abcd1234", "ef012345"]);
  assert.equal(listedHashes(body), view.hashes);
  assert.equal((view.doc as { version: string }).version, "1.0");
  // Equal bytes in another array are read afresh (the view lives beside the array it was read from).
  assert.notEqual(readManifest(body.slice()), view);
  assert.deepEqual(readManifest(body.slice()).hashes, view.hashes);
  for (const text of ["not json", "null", "[1]", '"x"', '{"hashes": {"a": "b"}}']) {
    const other = readManifest(new TextEncoder().encode(text));
    assert.deepEqual(other.hashes, []);
    if (text === "not json") assert.equal(other.doc, undefined);
  }
});
