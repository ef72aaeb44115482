/**
 * One answer type: a manifest the resolver read reaches the route's answer (what the install records and the edge
 * get) with the view of its bytes it was read into; answers of other bytes carry none; the copy an edge worker thread
 * is sent leaves the view out.
 */
import assert from "node:assert/strict";
import { type App, createApp } from "../../src/app.ts";
import { forEdge } from "../../src/http/responses.ts";
import type { RouteContext } from "../../src/http/router.ts";
import { memoryLogger } from "../../src/log.ts";
import { readManifest } from "../../src/packages/names.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { standardIndex } from "../fixtures/index_fixture.ts";
import { tempDir, testConfig } from "../helpers.ts";

/** Runs the route for `path` and returns its context, with the answer it set. */
async function routed(app: App, path: string): Promise<RouteContext> {
  const url = new URL(`http://gw${path}`);
  const match = app.router.match("GET", url.pathname);
  assert.ok("handler" in match, path);
  const ctx: RouteContext = {
    request: new Request(url),
    url,
    params: match.params,
    route: match.route,
    client: "127.0.0.1",
    meta: {},
  };
  const response = await match.handler(ctx);
  assert.equal(response.status, 200, path);
  await response.body?.cancel();
  return ctx;
}

Deno.test("a manifest's answer carries the view the resolver read; other bytes carry none; the edge's copy leaves it out", async () => {
  const index = await standardIndex();
  const up = new FakeUpstream(index.root).start();
  const config = testConfig({ cache: { dir: tempDir() }, upstreams: { index: up.url, retries: 0 } });
  const app = await createApp({ config, logger: memoryLogger() });
  try {
    const miss = await routed(app, "/package/6/hello/latest.json");
    assert.ok(miss.answer?.manifest, "the manifest's answer carries its view");
    assert.equal(miss.answer.manifest, readManifest(miss.answer.body), "the view of these bytes, read once");
    assert.equal((miss.answer.manifest.doc as { version: string }).version, "1.1");
    assert.equal(miss.answer.route, "/package/:mpy/:name/:version.json");
    assert.equal(miss.shareable, undefined, "a miss is not repeated by the edge");

    const hit = await routed(app, "/package/6/hello/latest.json");
    assert.equal(hit.shareable, hit.answer, "a hit is what the edge repeats");
    assert.ok(hit.shareable?.manifest);
    const sent = forEdge(hit.shareable);
    assert.equal(sent.manifest, undefined, "the worker's copy has no view");
    const { manifest: _, ...rest } = hit.shareable;
    assert.deepEqual(sent, rest, "and all the rest");

    const [, hash] = (miss.answer.manifest.doc as { hashes: string[][] }).hashes[0];
    const file = await routed(app, `/file/${hash.slice(0, 2)}/${hash}`);
    assert.equal(file.answer?.manifest, undefined, "a file carries no view");
    const urls = await routed(app, "/urls/package/py/hello/latest.json");
    assert.ok(urls.answer);
    assert.equal(
      urls.answer.manifest,
      undefined,
      "new bytes (urls form) do not carry the view of the ones they came from",
    );
  } finally {
    await app.idle();
    await app.close();
    await up.stop();
  }
});
