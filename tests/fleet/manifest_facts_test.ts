import assert from "node:assert/strict";
import { NotFound } from "../../src/errors.ts";
import { classify } from "../../src/fleet/installs.ts";
import { recordedPath } from "../../src/records/paths.ts";
import { Metrics } from "../../src/http/metrics.ts";
import { type RequestEntry, RequestLog } from "../../src/http/request_log.ts";
import { Router } from "../../src/http/router.ts";
import { createHandler } from "../../src/http/server.ts";
import { memoryLogger } from "../../src/log.ts";
import type { Resolver } from "../../src/packages/resolver.ts";
import { addIndexRoutes } from "../../src/routes/index_api.ts";

Deno.test("the manifest routes name the manifest as the install records read it back from the path", async () => {
  const body = new TextEncoder().encode(JSON.stringify({ version: "1.0", hashes: [["a.py", "abcd1234"]] }));
  const served = { body, etag: '"x"', outcome: "hit" as const, kind: "manifest" };
  const resolver = {
    manifest: (_mpy: string, name: string) => name === "missing" ? Promise.reject(new NotFound("no")) : served,
    repoManifest: () => Promise.resolve(served),
  } as unknown as Resolver;
  const router = new Router();
  addIndexRoutes(router, resolver, { publicUrl: "http://mip.test", port: 80, checkProfile: () => {} });
  const entries: RequestEntry[] = [];
  const handler = createHandler(router, {
    logger: memoryLogger(),
    requestLog: new RequestLog(10),
    metrics: new Metrics(),
    tap: (entry) => entries.push(entry),
  });
  const paths = [
    "/package/6/hello/latest.json",
    "/package/py/a%2Bb/1.0%7Erc1.json",
    "/package/6/odd.json/x.json.json?q=1",
    "/package/6/missing/2.0.json",
    "/t/esp32/package/py/hello/1.0.json",
    "/repo/6/github/owner/repo/main/package.json",
    "/repo/py/github/owner/repo/v1.0/sub/dir/package.json",
    "/t/rp2/repo/6/codeberg/o/r/abc123/x/package.json",
    "/repo/6/github/owner/repo/main/not-a-manifest.txt",
  ];
  for (const path of paths) await (await handler(new Request(`http://mip.test${path}`))).body?.cancel();
  assert.equal(entries.length, paths.length);
  for (const entry of entries) {
    assert.ok(entry.manifest, entry.path);
    assert.deepEqual(
      { kind: "manifest", ...entry.manifest },
      classify(entry.route, recordedPath(entry.path)),
      entry.path,
    );
  }
});
