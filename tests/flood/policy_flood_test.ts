/**
 * Flood suite (see `flood.ts`): what the policy, pin, lock and block rules remember of the manifests clients ask for.
 * They share one `ListedFiles`, which remembers at most `MAX_LISTED_FILES` short hashes (four package names each), the
 * oldest forgotten first, besides the pinned and locked ones, which the configuration bounds. The block and lock lists
 * themselves come from the configuration, not from clients.
 */
import assert from "node:assert/strict";
import { createApp } from "../../src/app.ts";
import { memoryLogger } from "../../src/log.ts";
import { GuardedResolver } from "../../src/packages/guarded_resolver.ts";
import { ListedFiles, MAX_LISTED_FILES } from "../../src/packages/listed_files.ts";
import { Policy } from "../../src/packages/policy.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { tempDir, testConfig } from "../helpers.ts";
import { assertAtMost } from "./flood.ts";

const enc = new TextEncoder();
const hex = (n: number) => n.toString(16).padStart(8, "0");
const hashes = (first: number, count: number) => Array.from({ length: count }, (_, i) => hex(first + i));

/** A manifest listing `count` files whose short hashes are `first`, `first + 1`, ... */
function manifest(first: number, count: number, version = "1.0"): Uint8Array {
  const listed = hashes(first, count).map((h, i) => [`f${first + i}.mpy`, h]);
  return enc.encode(JSON.stringify({ v: 1, version, hashes: listed }));
}

Deno.test("listed files: 250,000 unique hashes, each kind of note, remember MAX_LISTED_FILES, oldest first out", () => {
  const listed = new ListedFiles();
  const total = MAX_LISTED_FILES + 50_000;
  // Allowed, served and refused manifests' hashes, in turns: one bound over them all.
  for (let first = 0; first < total; first += 10_000) {
    const turn = (first / 10_000) % 3;
    const batch = hashes(first, 10_000);
    if (turn === 0) listed.noteAllowed(`pkg${first}`, batch);
    else if (turn === 1) listed.noteServed(batch);
    else listed.noteRefused(batch, `blocked${first}`);
    assertAtMost(listed.size, MAX_LISTED_FILES, "short hashes remembered");
  }
  assert.equal(listed.size, MAX_LISTED_FILES, "fewer than MAX_LISTED_FILES are remembered");
  const forgotten = total - MAX_LISTED_FILES;
  assert.equal(listed.allows(hex(0)), false, "the oldest hash is still remembered");
  assert.equal(listed.allows(hex(forgotten - 1)), false, "more than MAX_LISTED_FILES are remembered");
  // Batches 0-4 (50,000 hashes) were forgotten; batch 7 (70,000 on) is the first served one after them.
  assert.equal(listed.served(hex(40_000)), false, "more than MAX_LISTED_FILES are remembered");
  assert.equal(listed.served(hex(70_000)), true, "a served hash within the bound was forgotten");
  assert.equal(listed.refusedBy(hex(230_000)), "blocked230000", "the newest refused batch was forgotten");
  // One hash listed by 1,000 packages names four of them.
  for (let i = 0; i < 1000; i++) listed.noteAllowed(`shared${i}`, [hex(total)]);
  assertAtMost(listed.packagesOf(hex(total)).length, 4, "package names kept for one hash");
  assertAtMost(listed.size, MAX_LISTED_FILES, "short hashes remembered");
});

Deno.test("listed files: pinned and locked hashes are never forgotten, and do not count against the bound", () => {
  const listed = new ListedFiles();
  const pinned = hashes(1 << 30, 1000);
  const locked = hashes(1 << 29, 1000).map((h) => h + "0".repeat(56));
  listed.notePinned(pinned);
  listed.lock(locked);
  const total = MAX_LISTED_FILES + 50_000;
  for (let first = 0; first < total; first += 10_000) listed.noteServed(hashes(first, 10_000));
  assert.equal(listed.kept, 2000);
  assert.equal(listed.size, MAX_LISTED_FILES + 2000, "the bound holds besides the pinned and locked hashes");
  assert.ok(pinned.every((h) => listed.pinned(h)), "a pinned hash was forgotten");
  assert.ok(locked.every((h) => listed.lockedFor(h.slice(0, 8)) === h), "a locked hash was forgotten");
  assert.equal(listed.served(hex(0)), false, "the oldest served hash is still remembered");
});

Deno.test("policy deny: 250,000 unique file hashes from allowed manifests allow the newest MAX_LISTED_FILES", () => {
  const listed = new ListedFiles();
  const policy = new Policy({
    mode: "deny",
    roots: [],
    depsOfName: () => Promise.resolve([]),
    depsOfMirror: () => Promise.resolve({ deps: [], files: [] }),
    ttl: 60_000,
    logger: memoryLogger("error"),
    listed,
  });
  const total = MAX_LISTED_FILES + 50_000;
  for (let first = 0; first < total; first += 10_000) policy.noteManifest(`pkg${first}`, manifest(first, 10_000));
  assert.equal(listed.size, MAX_LISTED_FILES);
  const forgotten = total - MAX_LISTED_FILES;
  assert.equal(policy.fileAllowed(hex(forgotten - 1)), false, "more than MAX_LISTED_FILES are remembered");
  assert.equal(policy.fileAllowed(hex(forgotten)), true, "fewer than MAX_LISTED_FILES are remembered");
  assert.equal(policy.fileAllowed(hex(total - 1)), true);
});

Deno.test("policy block over HTTP: 21 served and 21 refused manifests of 10,000 unique files keep MAX_LISTED_FILES", async () => {
  const up = new FakeUpstream(tempDir()).start();
  const count = 21;
  const perManifest = 10_000;
  const refusedFirst = (i: number) => (count + i) * perManifest;
  for (let i = 0; i < count; i++) {
    up.overrides.set(`/package/6/served${i}/latest.json`, { body: manifest(i * perManifest, perManifest) });
    up.overrides.set(`/package/6/blocked${i}/latest.json`, { body: manifest(refusedFirst(i), perManifest) });
  }
  const blocked = Array.from({ length: count }, (_, i) => `blocked${i}@1.0`);
  const config = testConfig({
    cache: { dir: tempDir(), prefetch: false },
    upstreams: { index: up.url, retries: 0 },
    policy: { block: blocked },
  });
  const app = await createApp({ config, logger: memoryLogger("error") });
  const get = (h: string) => app.handler(new Request(`http://gw/file/${h.slice(0, 2)}/${h}`));
  try {
    assert.ok(app.resolver instanceof GuardedResolver);
    const listed = app.resolver.listed;
    for (let i = 0; i < count; i++) {
      const served = await app.handler(new Request(`http://gw/package/6/served${i}/latest.json`));
      assert.equal(served.status, 200, await served.text());
      const refused = await app.handler(new Request(`http://gw/package/6/blocked${i}/latest.json`));
      assert.equal(refused.status, 410, await refused.text());
      assertAtMost(listed.size, MAX_LISTED_FILES, "short hashes remembered");
    }
    assert.equal(listed.size, MAX_LISTED_FILES, "the manifests' hashes were not remembered");
    // The newest refused manifest's files are still refused; the oldest one's were forgotten (asked of upstream).
    const newest = await get(hex(refusedFirst(count - 1)));
    assert.equal(newest.status, 410, await newest.text());
    const oldest = await get(hex(refusedFirst(0)));
    assert.equal(oldest.status, 404, await oldest.text());
  } finally {
    await app.idle();
    await app.close();
    await up.stop();
  }
});
