/**
 * Flood suite (see `flood.ts`): what the policy, lock and block rules remember of the manifests clients ask for.
 * `policy.unlisted: deny` remembers at most `MAX_FILE_HASHES` file hashes (four package names each); `policy.block`
 * remembers at most `SERVED_LIMIT` short hashes of served manifests and, apart, of refused ones. The block and lock
 * lists themselves come from the configuration, not from clients.
 */
import assert from "node:assert/strict";
import { createApp } from "../../src/app.ts";
import { memoryLogger } from "../../src/log.ts";
import { GuardedResolver, SERVED_LIMIT } from "../../src/packages/guarded_resolver.ts";
import { MAX_FILE_HASHES, Policy } from "../../src/packages/policy.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { tempDir, testConfig } from "../helpers.ts";
import { assertAtMost } from "./flood.ts";

const enc = new TextEncoder();
const hex = (n: number) => n.toString(16).padStart(8, "0");

/** A manifest listing `count` files whose short hashes are `first`, `first + 1`, ... */
function manifest(first: number, count: number, version = "1.0"): Uint8Array {
  const hashes = Array.from({ length: count }, (_, i) => [`f${first + i}.mpy`, hex(first + i)]);
  return enc.encode(JSON.stringify({ v: 1, version, hashes }));
}

Deno.test("policy deny: 250,000 unique file hashes from allowed manifests remember MAX_FILE_HASHES, oldest first out", () => {
  const policy = new Policy({
    mode: "deny",
    roots: [],
    depsOfName: () => Promise.resolve([]),
    depsOfMirror: () => Promise.resolve({ deps: [], files: [] }),
    ttl: 60_000,
    logger: memoryLogger("error"),
  });
  const total = MAX_FILE_HASHES + 50_000;
  for (let first = 0; first < total; first += 10_000) policy.noteManifest(`pkg${first}`, manifest(first, 10_000));
  const forgotten = total - MAX_FILE_HASHES;
  assert.equal(policy.fileAllowed(hex(0)), false, "the oldest hash is still remembered");
  assert.equal(policy.fileAllowed(hex(forgotten - 1)), false, "more than MAX_FILE_HASHES are remembered");
  assert.equal(policy.fileAllowed(hex(forgotten)), true, "fewer than MAX_FILE_HASHES are remembered");
  assert.equal(policy.fileAllowed(hex(total - 1)), true);
  // One hash listed by 1,000 packages names four of them.
  for (let i = 0; i < 1000; i++) policy.noteManifest(`shared${i}`, manifest(total, 1));
  assertAtMost(policy.packagesOf(hex(total)).length, 4, "package names kept for one hash");
});

Deno.test("policy block over HTTP: 21 manifests of 10,000 unique files remember SERVED_LIMIT served and refused hashes", async () => {
  const up = new FakeUpstream(tempDir()).start();
  const count = 21;
  const perManifest = 10_000;
  for (let i = 0; i < count; i++) {
    up.overrides.set(`/package/6/served${i}/latest.json`, { body: manifest(i * perManifest, perManifest) });
    const refused = (count + i) * perManifest;
    up.overrides.set(`/package/6/blocked${i}/latest.json`, { body: manifest(refused, perManifest) });
  }
  const blocked = Array.from({ length: count }, (_, i) => `blocked${i}@1.0`);
  const config = testConfig({
    cache: { dir: tempDir(), prefetch: false },
    upstreams: { index: up.url, retries: 0 },
    policy: { block: blocked },
  });
  const app = await createApp({ config, logger: memoryLogger("error") });
  try {
    assert.ok(app.resolver instanceof GuardedResolver);
    const resolver = app.resolver;
    for (let i = 0; i < count; i++) {
      const served = await app.handler(new Request(`http://gw/package/6/served${i}/latest.json`));
      assert.equal(served.status, 200, await served.text());
      const refused = await app.handler(new Request(`http://gw/package/6/blocked${i}/latest.json`));
      assert.equal(refused.status, 410, await refused.text());
    }
    assertAtMost(resolver.remembered.served, SERVED_LIMIT, "hashes remembered as served");
    assertAtMost(resolver.remembered.refused, SERVED_LIMIT, "hashes remembered as refused");
    assert.equal(resolver.remembered.served, SERVED_LIMIT, "the served manifests' hashes were not remembered");
    assert.equal(resolver.remembered.refused, SERVED_LIMIT, "the refused manifests' hashes were not remembered");
  } finally {
    await app.idle();
    await app.close();
    await up.stop();
  }
});
