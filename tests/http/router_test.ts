import assert from "node:assert/strict";
import { HttpError } from "../../src/http/responses.ts";
import { decodeSegments, type Match, Router } from "../../src/http/router.ts";

const ok = () => new Response("ok");

function router(): Router {
  return new Router()
    .get("/index.json", ok)
    .get("/package/:mpy/:name/:version.json", ok, {
      mpy: { pattern: /^(py|\d{1,3})$/, expected: `"py" or a number` },
    })
    .get("/github/:owner/:repo/:ref/*path", ok)
    .add("POST", "/things", ok)
    .get("/things", ok);
}

function error(m: Match): HttpError {
  assert.ok("error" in m, `expected an error, got route ${m.route}`);
  return m.error;
}

Deno.test("static routes match exactly", () => {
  const m = router().match("GET", "/index.json");
  assert.ok("handler" in m);
  assert.equal(m.route, "/index.json");
  assert.equal(error(router().match("GET", "/index.json/")).status, 404);
  assert.equal(error(router().match("GET", "/INDEX.json")).status, 404);
});

Deno.test("parameters with suffixes are extracted and decoded", () => {
  const m = router().match("GET", "/package/6/umqtt.simple/1.3.4.json");
  assert.ok("params" in m);
  assert.deepEqual(m.params, { mpy: "6", name: "umqtt.simple", version: "1.3.4" });
  const enc = router().match("GET", "/package/py/a%20b/latest.json");
  assert.ok("params" in enc);
  assert.equal(enc.params.name, "a b");
});

Deno.test("a parameter that fails its pattern is a 400 naming it and what was expected", () => {
  const e = error(router().match("GET", "/package/sixty/foo/latest.json"));
  assert.equal(e.status, 400);
  assert.equal(e.message, `Invalid mpy "sixty": expected "py" or a number`);
});

Deno.test("the suffix must be present and the parameter non-empty", () => {
  assert.equal(error(router().match("GET", "/package/6/foo/latest.txt")).status, 404);
  assert.equal(error(router().match("GET", "/package/6/foo/.json")).status, 404);
  assert.equal(error(router().match("GET", "/package/6/foo")).status, 404);
  assert.equal(error(router().match("GET", "/package/6/foo/latest.json/extra")).status, 404);
});

Deno.test("a rest parameter takes the remaining segments", () => {
  const m = router().match("GET", "/github/org/repo/main/lib/sub/x.py");
  assert.ok("params" in m);
  assert.deepEqual(m.params, { owner: "org", repo: "repo", ref: "main", path: "lib/sub/x.py" });
  assert.equal(error(router().match("GET", "/github/org/repo/main")).status, 404);
  assert.equal(error(router().match("GET", "/github/org/repo/main/a//b")).status, 404);
});

Deno.test("HEAD is served wherever GET is", () => {
  assert.ok("handler" in router().match("HEAD", "/index.json"));
  assert.ok("handler" in router().match("HEAD", "/package/6/x/latest.json"));
});

Deno.test("a wrong method is a 405 with Allow", () => {
  const e = error(router().match("DELETE", "/index.json"));
  assert.equal(e.status, 405);
  assert.equal(e.headers.allow, "GET, HEAD");
  const both = error(router().match("PUT", "/things"));
  assert.equal(both.headers.allow, "POST, GET, HEAD");
  assert.ok("handler" in router().match("POST", "/things"));
});

Deno.test("hostile segments are refused before any handler runs", () => {
  for (
    const path of [
      "/package/6/%2e%2e/latest.json",
      "/package/6/a%2fb/latest.json",
      "/package/6/a%00b/latest.json",
      "/package/6/a%5cb/latest.json",
      "/package/6/%2E/latest.json",
    ]
  ) {
    const e = error(router().match("GET", path));
    assert.equal(e.status, 400, path);
  }
  assert.equal(error(router().match("GET", "/package/6/%zz/latest.json")).status, 400);
  assert.equal(error(router().match("GET", `/package/6/${"a".repeat(5000)}/latest.json`)).status, 414);
});

Deno.test("decodeSegments splits and decodes", () => {
  assert.deepEqual(decodeSegments("/a/b%20c/d"), ["a", "b c", "d"]);
  assert.throws(() => decodeSegments("/a/.."), HttpError);
});
