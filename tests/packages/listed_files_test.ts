/**
 * ListedFiles keeps each reader's rules in one memory: the policy and the pins ask about the exact hash a manifest
 * listed, the block guard about its short form, the lock guard for the locked full hash a short or longer prefix names.
 */
import assert from "node:assert/strict";
import { ListedFiles } from "../../src/packages/listed_files.ts";
import { PinnedFiles } from "../../src/packages/pinned.ts";

const FULL = "abcd1234" + "e".repeat(56);

Deno.test("the policy and the pins ask about exactly the hash listed; a longer or shorter one sharing it is not", () => {
  const listed = new ListedFiles();
  listed.noteAllowed("a", ["abcd1234"]);
  assert.ok(listed.allows("abcd1234"));
  assert.ok(!listed.allows(FULL) && !listed.allows("abcd12") && !listed.allows("abcd1235"));
  listed.noteAllowed("b", [FULL]);
  assert.ok(listed.allows(FULL));
  assert.deepEqual(listed.packagesOf("abcd1234"), ["a"]);
  assert.deepEqual(listed.packagesOf(FULL), ["b"]);
  assert.equal(listed.size, 1, "one short hash");
  const pins = new PinnedFiles({ hello: "1.0" }, listed);
  pins.note(new TextEncoder().encode(JSON.stringify({ hashes: [["hello.py", "abcd1234"]] })));
  assert.ok(pins.protects("files/ab/abcd1234"));
  assert.ok(!pins.protects(`files/ab/${FULL}`), "a longer hash with the same short form is not pinned");
  assert.ok(!listed.pinned(FULL) && listed.allows("abcd1234"), "pinning keeps what the policy noted");
  assert.equal(listed.kept, 1);
});

Deno.test("the block guard asks about the short form; the lock guard finds the full hash a prefix names", () => {
  const listed = new ListedFiles();
  listed.noteServed([FULL]);
  assert.ok(listed.served("abcd1234") && listed.served(FULL));
  assert.ok(!listed.allows(FULL), "served by the guard is not allowed by the policy");
  listed.noteRefused(["ffff0000"], "bad@1.0");
  listed.noteRefused(["ffff0000"], "bad@2.0");
  assert.equal(listed.refusedBy("ffff0000"), "bad@2.0");
  assert.equal(listed.refusedBy("ffff0001"), undefined);
  listed.lock([FULL]);
  assert.equal(listed.lockedFor("abcd1234"), FULL);
  assert.equal(listed.lockedFor(FULL.slice(0, 20)), FULL);
  assert.equal(listed.lockedFor("abcd123"), undefined, "fewer than 8 characters name no locked file");
  assert.equal(listed.lockedFor("abcd1234f"), undefined);
  assert.ok(listed.served("abcd1234"), "locking keeps what the guard noted");
});

Deno.test("a lock read again replaces the one before: its hashes are no longer locked nor kept for good, pinned ones stay", () => {
  const listed = new ListedFiles();
  const h = (c: string) => c.repeat(64);
  listed.notePinned([h("c")]);
  listed.lock([h("a"), h("b"), h("c")]);
  assert.equal(listed.kept, 3);
  assert.equal(listed.lockedFor(h("a").slice(0, 8)), h("a"));
  listed.lock([h("b"), h("d")]);
  assert.equal(listed.lockedFor(h("a").slice(0, 8)), undefined, "the old lock's hash is no longer locked");
  assert.equal(listed.lockedFor(h("d").slice(0, 8)), h("d"));
  assert.equal(listed.kept, 3, "b and d locked, c pinned; a may be forgotten again");
  assert.ok(listed.pinned(h("c")));
  // Many reloads of different locks keep only the lock in force.
  for (let i = 0; i < 1000; i++) listed.lock([i.toString(16).padStart(64, "0")]);
  assert.equal(listed.kept, 2, "the last lock's one hash and the pinned one");
});
