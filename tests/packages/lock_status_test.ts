/**
 * The status page's lock line (`lockLine` in fleet/status_page.ts): how many packages the lock in force holds, who
 * signed it and when, a refused re-read; nothing without a lock. It renders the facts `LockInForce.facts()` gives.
 */
import assert from "node:assert/strict";
import { lockLine } from "../../src/fleet/status_page.ts";
import type { LockFacts } from "../../src/packages/lock_file.ts";

Deno.test("the status page's lock line shows the signer and the time of signing, and a refused re-read", () => {
  assert.equal(lockLine(undefined), "");
  assert.equal(lockLine(null), "");
  const signed: LockFacts = {
    packages: 3,
    signed: { key_id: "0123456789abcdef", signed_at: "2026-11-02T08:00:00.000Z" },
    loaded_at: "2026-11-03T10:00:00.000Z",
    reload: null,
  };
  assert.equal(
    lockLine(signed),
    '<p>Lock: <span id="lock">3 packages, signed by key <code>0123456789abcdef</code> at ' +
      '<time datetime="2026-11-02T08:00:00.000Z">2026-11-02 08:00:00</time> UTC</span></p>\n',
  );
  const refused = lockLine({ ...signed, reload: { at: "2026-11-04T09:30:00.000Z", refused: "tampered" } });
  assert.match(
    refused,
    /the lock read again at <time datetime="2026-11-04T09:30:00\.000Z">.* was refused \(tampered\); this one stays in force/,
  );
  assert.match(lockLine({ ...signed, signed: null }), /3 packages, <span class="tag outdated">unsigned<\/span>/);
  assert.doesNotMatch(lockLine({ ...signed, signed: { key_id: "<b>", signed_at: "x" } }), /<b>/, "escaped");
});
