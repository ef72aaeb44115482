/**
 * The object store compliance suite: the same cases for every backend (`ObjectStore`), so the rooms above can rely on
 * one behaviour whatever holds the bytes. A backend runs it with one line in `compliance_test.ts` (or a file of its
 * own when it needs a server), giving a {@linkcode Harness}.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { BadUpstream } from "../../src/errors.ts";
import { HashMismatch, type ObjectStore } from "../../src/store/object_store.ts";

/** What a backend gives the suite. */
export interface Harness {
  /** A new, empty, opened store. */
  make(options: MakeOptions): Promise<Made>;
}

/** Options every backend honours. */
export interface MakeOptions {
  now?: () => number;
  maxBytes?: number | null;
  protect?: (key: string) => boolean;
}

/** A store under test and what the suite may do to it. */
export interface Made {
  store: ObjectStore;
  /** The same objects through a new store instance, opened, as after a restart. */
  reopen(): Promise<ObjectStore>;
  /** Makes the next put fail after its bytes went out and before they take effect (a crash between the two). */
  failNextCommit(): void;
  /** Removes what the store left behind. */
  close(): Promise<void>;
}

/**
 * A {@linkcode Made} from `open` (which opens the store, and again for a restart, the one before closed), the switch
 * that fails the next commit, and what removes the store's data after the last close.
 */
export async function reopenable(
  open: () => Promise<ObjectStore>,
  failNextCommit: () => void,
  cleanup: () => Promise<void>,
): Promise<Made> {
  let store = await open();
  return {
    store,
    async reopen() {
      await store.close();
      store = await open();
      return store;
    },
    failNextCommit,
    async close() {
      await store.close();
      await cleanup();
    },
  };
}

const enc = new TextEncoder();
const dec = new TextDecoder();
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const body = (text: string) => enc.encode(text);

/** Runs every case against the backend `name`. */
export function storeCompliance(name: string, harness: Harness, options: { sanitizeResources?: boolean } = {}): void {
  const test = (what: string, fn: (h: Harness) => Promise<void>) =>
    Deno.test({
      name: `store compliance (${name}): ${what}`,
      sanitizeResources: options.sanitizeResources ?? true,
      sanitizeOps: options.sanitizeResources ?? true,
      fn: () => fn(harness),
    });

  test("a put is read back whole with its stored time and ETag, also after a restart", async (h) => {
    let t = 1_700_000_000_000;
    const made = await h.make({ now: () => t });
    try {
      const bytes = body("print('hello')\n");
      const put = await made.store.put("mirror/github/o/r/main/a.py", bytes);
      assert.equal(put.storedAt, t);
      assert.equal(put.etag, `"${sha(bytes).slice(0, 32)}"`);
      assert.ok(!put.uncached);
      t += 5_000;
      const got = await made.store.get("mirror/github/o/r/main/a.py");
      assert.deepEqual(got?.body, bytes);
      assert.equal(got?.storedAt, 1_700_000_000_000);
      assert.equal(got?.etag, put.etag);
      assert.equal(await made.store.has("mirror/github/o/r/main/a.py"), true);
      const info = await made.store.stat("mirror/github/o/r/main/a.py");
      assert.equal(info?.size, bytes.byteLength);
      assert.equal(info?.storedAt, 1_700_000_000_000);
      assert.ok(info!.lastRead >= info!.storedAt);
      const streamed = new Uint8Array(
        await new Response(await made.store.read("mirror/github/o/r/main/a.py")).arrayBuffer(),
      );
      assert.deepEqual(streamed, bytes);
      const again = await made.reopen();
      assert.deepEqual((await again.get("mirror/github/o/r/main/a.py", { direct: true }))?.body, bytes);
    } finally {
      await made.close();
    }
  });

  test("what is not there: undefined from get, read and stat, false from has, 0 from remove", async (h) => {
    const made = await h.make({});
    try {
      assert.equal(await made.store.get("named/x/6/_/latest.json"), undefined);
      assert.equal(await made.store.read("named/x/6/_/latest.json"), undefined);
      assert.equal(await made.store.stat("named/x/6/_/latest.json"), undefined);
      assert.equal(await made.store.has("named/x/6/_/latest.json"), false);
      assert.equal(await made.store.remove(["named/x/6/_/latest.json"]), 0);
      assert.deepEqual(await made.store.list("named"), { keys: [] });
    } finally {
      await made.close();
    }
  });

  test("unsafe keys are refused: no escape, no empty segment, no key outside a folder", async (h) => {
    const made = await h.make({});
    try {
      for (const key of ["../x/y", "a//b", "a/../../b", "single", "a/.hidden", "a/b\0c", ""]) {
        await assert.rejects(made.store.put(key, body("x")), Error, `put ${JSON.stringify(key)}`);
        await assert.rejects(made.store.get(key), Error, `get ${JSON.stringify(key)}`);
      }
      assert.deepEqual(await made.store.list(""), { keys: [] });
    } finally {
      await made.close();
    }
  });

  test("a put with an expected sha256 refuses other bytes and stores nothing; the right bytes (or a prefix) pass", async (h) => {
    const made = await h.make({});
    try {
      const bytes = body("the real bytes");
      const wrong = "0".repeat(64);
      const refused = await made.store.put("files/ab/abcdef12", bytes, { sha256: wrong }).then(
        () => undefined,
        (e) => e,
      );
      assert.ok(refused instanceof HashMismatch, String(refused));
      assert.ok(refused instanceof BadUpstream, "a domain error the http room maps");
      assert.match(refused.message, /files\/ab\/abcdef12/);
      assert.equal(await made.store.has("files/ab/abcdef12"), false);
      const full = sha(bytes);
      const key = `files/${full.slice(0, 2)}/${full.slice(0, 8)}`;
      await made.store.put(key, bytes, { sha256: full.slice(0, 8) });
      await made.store.put(`files/${full.slice(0, 2)}/${full}`, bytes, { sha256: full });
      assert.equal((await made.store.list("files")).keys.length, 2);
    } finally {
      await made.close();
    }
  });

  test("list: whole segments of the prefix, code-unit order, pages past 1,000 keys, keys() gets them all", async (h) => {
    const made = await h.make({});
    try {
      const n = 2_345;
      const keys: string[] = [];
      for (let i = 0; i < n; i++) keys.push(`index/up/package/6/p${String(i).padStart(5, "0")}/latest.json`);
      const writes: Promise<unknown>[] = [];
      for (const key of keys) {
        writes.push(made.store.put(key, body(key)));
        if (writes.length >= 64) await Promise.all(writes.splice(0));
      }
      await Promise.all(writes);
      await made.store.put("named/a/6/_/latest.json", body("a"));
      await made.store.put("named/ab/6/_/latest.json", body("ab"));
      const pages: string[][] = [];
      let after: string | undefined;
      do {
        const page = await made.store.list("index", { after });
        pages.push(page.keys);
        after = page.next;
      } while (after !== undefined);
      assert.deepEqual(pages.map((p) => p.length), [1000, 1000, 345]);
      assert.deepEqual(pages.flat(), [...keys].sort());
      const small = await made.store.list("index/up", { limit: 10 });
      assert.equal(small.keys.length, 10);
      assert.equal(small.next, small.keys[9]);
      assert.deepEqual((await made.store.list("named/a")).keys, ["named/a/6/_/latest.json"]);
      assert.deepEqual((await made.store.list("named/a/")).keys, ["named/a/6/_/latest.json"]);
      assert.equal((await Array.fromAsync(made.store.keys("index"))).length, n);
      assert.equal((await Array.fromAsync(made.store.keys(""))).length, n + 2);
      const usage = await made.store.usage();
      assert.equal(usage.objects, n + 2);
    } finally {
      await made.close();
    }
  });

  test("remove and expire: removed objects are gone; expired ones keep their bytes with stored time 0", async (h) => {
    const made = await h.make({ now: () => 1_000 });
    try {
      await made.store.put("mirror/github/o/r/main/a.py", body("a"));
      await made.store.put("mirror/github/o/r/main/b.py", body("b"));
      await made.store.put("mirror/github/o/r/dev/c.py", body("c"));
      assert.equal(await made.store.expire("mirror/github/o/r/main", (k) => k.endsWith("a.py")), 1);
      assert.equal((await made.store.get("mirror/github/o/r/main/a.py"))?.storedAt, 0);
      assert.equal(dec.decode((await made.store.get("mirror/github/o/r/main/a.py"))!.body), "a");
      assert.equal((await made.store.get("mirror/github/o/r/main/b.py"))?.storedAt, 1_000);
      assert.equal(await made.store.expire("mirror/github/o/r/main"), 2);
      assert.equal((await made.store.get("mirror/github/o/r/dev/c.py"))?.storedAt, 1_000);
      assert.equal(await made.store.remove(["mirror/github/o/r/main/a.py", "mirror/github/o/r/nope.py"]), 1);
      assert.equal(await made.store.get("mirror/github/o/r/main/a.py"), undefined);
      assert.deepEqual((await made.store.list("mirror")).keys, [
        "mirror/github/o/r/dev/c.py",
        "mirror/github/o/r/main/b.py",
      ]);
    } finally {
      await made.close();
    }
  });

  test("concurrent puts of one key: the object is one of them, whole, with its own ETag", async (h) => {
    const made = await h.make({});
    try {
      const bodies = Array.from({ length: 24 }, (_, i) => body(`version ${i} `.repeat(2_000 + i * 50)));
      await Promise.all(bodies.map((b) => made.store.put("compiled/aa/aaaa-r1", b)));
      const got = await made.store.get("compiled/aa/aaaa-r1", { direct: true });
      assert.ok(got, "stored");
      assert.ok(bodies.some((b) => b.byteLength === got.body.byteLength && sha(b) === sha(got.body)), "one whole body");
      assert.equal(got.etag, `"${sha(got.body).slice(0, 32)}"`);
      assert.deepEqual((await made.store.list("compiled")).keys, ["compiled/aa/aaaa-r1"]);
    } finally {
      await made.close();
    }
  });

  test("a reader during a write sees the old object or the new one, whole, never a part", async (h) => {
    const made = await h.make({});
    try {
      const old = body("o".repeat(300_000));
      const fresh = body("n".repeat(900_000));
      await made.store.put("mirror/url/https/h/big.py", old);
      const seen = new Set<string>();
      let writing = true;
      const reads = (async () => {
        while (writing) {
          const got = await made.store.get("mirror/url/https/h/big.py", { direct: true });
          assert.ok(got, "never missing during a replace");
          const digest = sha(got.body);
          assert.ok(digest === sha(old) || digest === sha(fresh), `a partial body of ${got.body.byteLength} bytes`);
          seen.add(digest);
          await new Promise((r) => setTimeout(r, 0));
        }
      })();
      for (let i = 0; i < 5; i++) await made.store.put("mirror/url/https/h/big.py", i % 2 ? old : fresh);
      writing = false;
      await reads;
      assert.ok(seen.size >= 1);
      assert.deepEqual((await made.store.get("mirror/url/https/h/big.py", { direct: true }))?.body, fresh);
    } finally {
      await made.close();
    }
  });

  test("a put that fails between writing and committing leaves the old object, shows nothing new, and the next put works", async (h) => {
    const made = await h.make({});
    try {
      const old = body("old bytes");
      await made.store.put("mirror/github/o/r/main/m.py", old);
      made.failNextCommit();
      const failed = await made.store.put("mirror/github/o/r/main/m.py", body("new bytes")).catch((e) => e);
      // Either refused or served from memory only: never half stored.
      assert.ok(failed instanceof Error || failed.uncached === true, "the failed put reports it");
      assert.deepEqual((await made.store.get("mirror/github/o/r/main/m.py", { direct: true }))?.body, old);
      made.failNextCommit();
      await made.store.put("mirror/github/o/r/main/n.py", body("never")).catch(() => {});
      assert.deepEqual((await made.store.list("mirror")).keys, ["mirror/github/o/r/main/m.py"]);
      const again = await made.reopen();
      assert.deepEqual((await again.get("mirror/github/o/r/main/m.py", { direct: true }))?.body, old);
      assert.equal(await again.has("mirror/github/o/r/main/n.py"), false);
      assert.equal((await again.usage()).objects, 1, "nothing left behind that counts as an object");
      await again.put("mirror/github/o/r/main/n.py", body("now"));
      assert.equal(dec.decode((await again.get("mirror/github/o/r/main/n.py"))!.body), "now");
    } finally {
      await made.close();
    }
  });

  test("the size limit: least recently used counted objects go first, never protected or held ones; metadata is not counted", async (h) => {
    let protectedKey = "";
    const made = await h.make({ maxBytes: 3_000, protect: (k) => k === protectedKey });
    try {
      const kb = (c: string) => body(c.repeat(1_000));
      await made.store.put("compiled/aa/a-r", kb("a"));
      await made.store.put("compiled/bb/b-r", kb("b"));
      await made.store.put("compiled/cc/c-r", kb("c"));
      await made.store.put("named/x/6/_/latest.json", kb("m")); // metadata: not counted, never evicted
      assert.deepEqual(made.store.stats().sizeBytes, 3_000);
      await made.store.get("compiled/aa/a-r"); // a is now the most recently used
      await made.store.put("compiled/dd/d-r", kb("d"));
      assert.equal(await made.store.has("compiled/bb/b-r"), false, "b, least recently used, was evicted");
      assert.equal(await made.store.has("compiled/aa/a-r"), true);
      assert.equal(made.store.stats().evictions, 1);
      protectedKey = "compiled/cc/c-r";
      const release = made.store.hold("compiled/aa/a-r");
      await made.store.put("compiled/ee/e-r", kb("e"));
      assert.equal(await made.store.has("compiled/dd/d-r"), false, "d went: a is held, c protected");
      assert.equal(await made.store.has("compiled/aa/a-r"), true);
      assert.equal(await made.store.has("compiled/cc/c-r"), true);
      release();
      const tooBig = await made.store.put("compiled/ff/f-r", body("f".repeat(3_001)));
      assert.equal(tooBig.uncached, true, "larger than the limit: served, not stored");
      assert.equal(await made.store.stat("compiled/ff/f-r"), undefined, "not stored");
      const stats = made.store.stats();
      assert.ok(stats.sizeBytes <= 3_000, `${stats.sizeBytes} bytes stored`);
      assert.equal(stats.objects, 3);
      assert.equal(stats.maxBytes, 3_000);
      assert.equal(await made.store.has("named/x/6/_/latest.json"), true);
    } finally {
      await made.close();
    }
  });

  test("writable says yes and leaves nothing behind", async (h) => {
    const made = await h.make({});
    try {
      assert.equal(await made.store.writable(), true);
      assert.deepEqual(await made.store.usage(), { bytes: 0, objects: 0 });
      assert.deepEqual(await made.store.list(""), { keys: [] });
    } finally {
      await made.close();
    }
  });
}
