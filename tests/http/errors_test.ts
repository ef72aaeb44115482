/**
 * The one map from an error to an answer (`src/http/errors.ts`): every domain error class of `src/errors.ts` with its
 * status, headers and body in one table; an unknown error is a 500 with an error id; and the domain rooms construct
 * no `HttpError` (they throw domain errors, which only `http/` turns into statuses).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import * as errors from "../../src/errors.ts";
import { answerFor, type ErrorAnswer } from "../../src/http/errors.ts";
import { HttpError } from "../../src/http/responses.ts";
import { Router } from "../../src/http/router.ts";
import { createHandler } from "../../src/http/server.ts";
import { RequestLog } from "../../src/http/request_log.ts";
import { Metrics } from "../../src/http/metrics.ts";
import { memoryLogger } from "../../src/log.ts";
import { UnsafeManifestError } from "../../src/packages/names.ts";

/** Every domain error class, as thrown, and the answer it gets. */
const TABLE: [errors.DomainError, ErrorAnswer][] = [
  [new errors.NotFound("Package x version 1 (6) not found"), answer(404, "Package x version 1 (6) not found")],
  [new errors.NotAllowed("Package x is not allowed"), answer(403, "Package x is not allowed")],
  [new errors.Blocked("x 1 is blocked by policy.block (x@1)"), answer(410, "x 1 is blocked by policy.block (x@1)")],
  [new errors.BadName('Invalid hash "zz"'), answer(400, 'Invalid hash "zz"')],
  [new errors.CompileFailed("mpy-cross failed on a.py"), answer(422, "mpy-cross failed on a.py")],
  [new errors.UpstreamFailed("Upstream answered 401: u"), answer(502, "Upstream answered 401: u")],
  [
    new errors.UpstreamFailed("Upstream answered 500: u", { transient: true }),
    answer(503, "Upstream answered 500: u", { "retry-after": String(errors.UPSTREAM_RETRY_AFTER_SECONDS) }),
  ],
  [
    new errors.UpstreamFailed("Cannot reach upstream u: refused", { unreachable: true, retryAfterSeconds: 4 }),
    answer(503, "Cannot reach upstream u: refused", { "retry-after": "4" }),
  ],
  [
    new errors.UpstreamTimedOut("Upstream timed out after 5ms: u"),
    answer(503, "Upstream timed out after 5ms: u", { "retry-after": String(errors.UPSTREAM_RETRY_AFTER_SECONDS) }),
  ],
  [new errors.BadUpstream("Upstream sent invalid JSON at u"), answer(502, "Upstream sent invalid JSON at u")],
  [new UnsafeManifestError("Refused package p: file x"), answer(502, "Refused package p: file x")],
  [new errors.LockMismatch("LOCK MISMATCH: file f"), answer(502, "LOCK MISMATCH: file f")],
  [new errors.Unavailable("Offline: x was not imported"), answer(503, "Offline: x was not imported")],
  [new errors.Busy("Too many compiles waiting"), answer(503, "Too many compiles waiting", { "retry-after": "1" })],
  [new errors.Busy("Too many compiles waiting", 7), answer(503, "Too many compiles waiting", { "retry-after": "7" })],
];

function answer(status: number, text: string, headers: Record<string, string> = {}): ErrorAnswer {
  return { status, headers, text };
}

Deno.test("answerFor: every domain error class gets its status, headers and body", () => {
  for (const [error, expected] of TABLE) {
    assert.deepEqual(answerFor(error), expected, `${error.name}: ${error.message}`);
  }
  // The table names every concrete class src/errors.ts exports (the abstract bases aside).
  const abstract = new Set<unknown>([errors.DomainError, errors.Failure]);
  const classes = (Object.values(errors) as unknown[]).filter((v): v is typeof errors.DomainError =>
    typeof v === "function" && v.prototype instanceof errors.DomainError && !abstract.has(v)
  );
  const covered = new Set(TABLE.map(([e]) => e.constructor));
  for (const c of classes) assert.ok(covered.has(c), `${(c as { name: string }).name} has no row in the table`);
});

Deno.test("answerFor: the upstream's failures as the domain errors the cache turns them into", () => {
  // Transient failures (asking again later may work) are 503 with Retry-After, upstream's own when it sent one.
  const later = { "retry-after": String(errors.UPSTREAM_RETRY_AFTER_SECONDS) };
  const cases: [errors.UpstreamErrorKind, number | undefined, number, Record<string, string>][] = [
    ["not_found", 404, 404, {}],
    ["host", undefined, 403, {}],
    ["timeout", undefined, 503, later],
    ["network", undefined, 503, later],
    ["status", 500, 503, later],
    ["status", 503, 503, later],
    ["status", 429, 503, later],
    ["status", 401, 502, {}],
    ["status", 403, 502, {}],
    ["status", 302, 502, {}],
    ["too_large", undefined, 502, {}],
    ["redirects", undefined, 502, {}],
  ];
  for (const [kind, upstreamStatus, status, headers] of cases) {
    const e = errors.fromUpstream(new errors.UpstreamError(kind, "https://u/x", `failed: ${kind}`, upstreamStatus));
    assert.deepEqual(answerFor(e), answer(status, `failed: ${kind}`, headers), `${kind} ${upstreamStatus}`);
  }
  const told = errors.fromUpstream(new errors.UpstreamError("status", "u", "m", 503, false, 42));
  assert.deepEqual(answerFor(told), answer(503, "m", { "retry-after": "42" }));
  assert.equal(
    (errors.fromUpstream(new errors.UpstreamError("network", "u", "m")) as errors.UpstreamFailed).unreachable,
    true,
  );
  assert.throws(() => errors.fromUpstream(new TypeError("not ours")), TypeError);
  // An upstream failure that escapes unturned is unexpected, as any other error.
  assert.equal(answerFor(new errors.UpstreamError("not_found", "u", "m")), undefined);
});

Deno.test("answerFor: an HttpError of the router and routes keeps its status and headers", () => {
  assert.deepEqual(
    answerFor(new HttpError(405, "Method PUT not allowed; use GET", { allow: "GET" })),
    answer(405, "Method PUT not allowed; use GET", { allow: "GET" }),
  );
  assert.equal(answerFor(new Error("boom")), undefined);
  assert.equal(answerFor("boom"), undefined);
});

Deno.test("the server answers a domain error with its status, headers and body, and an unknown one 500 with an error id", async () => {
  const router = new Router()
    .get("/busy", () => {
      throw new errors.Busy("Too many compiles waiting");
    })
    .get("/boom", () => {
      throw new Error("secret detail");
    });
  const logger = memoryLogger();
  const handler = createHandler(router, { logger, requestLog: new RequestLog(10), metrics: new Metrics() });
  const busy = await handler(new Request("http://h/busy"));
  assert.equal(busy.status, 503);
  assert.equal(busy.headers.get("retry-after"), "1");
  assert.equal(await busy.text(), "Too many compiles waiting\n");
  const boom = await handler(new Request("http://h/boom"));
  assert.equal(boom.status, 500);
  const body = await boom.text();
  const id = /error id ([0-9a-f]{8})/.exec(body)?.[1];
  assert.ok(id, body);
  assert.equal(logger.lines.map((l) => JSON.parse(l)).find((l) => l.level === "error")?.error_id, id);
  assert.ok(!body.includes("secret detail"), body);
});

Deno.test("no file under src/cache, src/upstream, src/packages or src/compile constructs or imports HttpError", () => {
  const src = new URL("../../src/", import.meta.url).pathname;
  const offenders: string[] = [];
  const walk = (dir: string) => {
    for (const entry of Deno.readDirSync(dir)) {
      const path = join(dir, entry.name);
      if (entry.isDirectory) walk(path);
      else if (entry.name.endsWith(".ts") && /\bHttpError\b|http\/responses\.ts/.test(Deno.readTextFileSync(path))) {
        offenders.push(path.slice(src.length));
      }
    }
  };
  for (const room of ["cache", "upstream", "packages", "compile"]) walk(join(src, room));
  assert.deepEqual(offenders, []);
});
