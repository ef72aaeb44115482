import assert from "node:assert/strict";
import { join, relative } from "node:path";
import { sha256Hex } from "../../src/store/hash.ts";
import { SingleFlight } from "../../src/cache/single_flight.ts";
import { DiskStore, HOT_ENTRY_OVERHEAD } from "../../src/store/disk/mod.ts";
import { isObjectKey, isSafeKey } from "../../src/store/keys.ts";
import type { StoredObject } from "../../src/store/object_store.ts";
import { denoFs, type StoreFs } from "../../src/store/disk/fs.ts";
import { memoryLogger } from "../../src/log.ts";
import { otherWriter } from "../fixtures/tmp_owner.ts";
import { tempDir } from "../helpers.ts";

const bytes = (s: string) => new TextEncoder().encode(s);
/** The content-addressed key of `body`, named by its first 8 sha256 hex characters as the index names files. */
const contentKey = async (body: Uint8Array) => {
  const hash = (await sha256Hex(body)).slice(0, 8);
  return `files/${hash.slice(0, 2)}/${hash}`;
};

Deno.test("put then get returns the bytes, the injected store time and an ETag; survives a new store", async () => {
  const dir = tempDir();
  const store = new DiskStore(dir, { now: () => 1_700_000_000_000 });
  await store.open();
  const key = await contentKey(bytes("hello"));
  const put = await store.put(key, bytes("hello"));
  assert.match(put.etag, /^"[0-9a-f]{32}"$/);
  assert.equal(put.uncached, undefined);
  const again = new DiskStore(dir);
  await again.open();
  const got = await again.get(key);
  assert.deepEqual(got?.body, bytes("hello"));
  assert.equal(got?.storedAt, 1_700_000_000_000);
  assert.equal(got?.etag, put.etag);
  assert.equal(await again.get("files/2c/2cf24d99"), undefined);
  assert.equal(await again.has(key), true);
  assert.deepEqual(await Array.fromAsync(again.keys()), [key]);
});

Deno.test("unsafe keys are refused before touching the disk", async () => {
  const store = new DiskStore(tempDir());
  await store.open();
  for (const key of ["../x", "a/../../b", "/etc/passwd", "a//b", "a/./b", "a\0b", "a/.hidden", ""]) {
    assert.equal(isSafeKey(key), false, key);
    await assert.rejects(() => store.put(key, bytes("x")), /Unsafe cache key/, key);
    await assert.rejects(() => store.get(key), /Unsafe cache key/, key);
  }
});

Deno.test("temp files a crash left behind are removed on open and never served", async () => {
  const dir = tempDir();
  const store = new DiskStore(dir);
  await store.open();
  Deno.writeTextFileSync(join(dir, "tmp", "0123.part"), "half a fi");
  const reopened = new DiskStore(dir);
  assert.equal(await reopened.open(), 1);
  assert.deepEqual([...Deno.readDirSync(join(dir, "tmp"))], []);
  assert.deepEqual(await Array.fromAsync(reopened.keys()), []);
});

Deno.test("a replaced object is served new, never the old copy from memory", async () => {
  let t = 1000;
  const store = new DiskStore(tempDir(), { now: () => t });
  await store.open();
  await store.put("index/x/latest.json", bytes("old"));
  await store.get("index/x/latest.json");
  t = 2000;
  await store.put("index/x/latest.json", bytes("new"));
  const got = await store.get("index/x/latest.json");
  assert.deepEqual(got?.body, bytes("new"));
  assert.equal(got?.storedAt, 2000);
});

Deno.test("the hot set stays within its memory budget (cache.memory), fills it, and serves evicted objects from disk", async () => {
  const budget = 8 * 1024;
  const store = new DiskStore(tempDir(), { memoryBytes: budget });
  await store.open();
  const key = (i: number) => `compiled/aa/aa${String(i).padStart(6, "0")}-r`;
  // What one object is counted for, worked out here rather than read from the store: key, body and the fixed
  // overhead. 878 bytes, under an eighth of the budget (larger objects are never kept hot), so 9 fit in 8 KiB.
  const cost = (k: string, body: Uint8Array) => k.length + body.byteLength + HOT_ENTRY_OVERHEAD;
  const fits = Math.floor(budget / cost(key(0), new Uint8Array(600)));
  assert.equal(fits, 9);
  let most = 0;
  const watch = () => (most = Math.max(most, store.hot.bytes));
  for (let i = 0; i < 20; i++) {
    await store.put(key(i), new Uint8Array(600).fill(i));
    watch();
  }
  // Read back newest first: the puts left 11..19 hot, so the reads of 10..0 come from disk, go in and push those out.
  const got = new Map<number, StoredObject>();
  for (let i = 19; i >= 0; i--) {
    const object = await store.get(key(i));
    assert.ok(object?.body.byteLength === 600 && object.body.every((b) => b === i), `${key(i)}: its own bytes`);
    got.set(i, object);
    watch();
  }
  assert.ok(most <= budget, `the hot set was counted at ${most} bytes, over its budget of ${budget}`);
  // Measured: the last 9 read (8..0) are in memory (a hot read returns the very object held; a read from disk makes a
  // new one) and nothing else is counted, so the hot set holds exactly their cost: within the budget, and filling it.
  const held = [...Array(fits).keys()];
  for (const i of held) assert.equal(await store.get(key(i)), got.get(i), `${key(i)} is served from memory`);
  const heldBytes = held.reduce((sum, i) => sum + cost(key(i), got.get(i)!.body), 0);
  assert.deepEqual(store.hot, { objects: fits, bytes: heldBytes });
  assert.ok(heldBytes <= budget && heldBytes > budget - cost(key(0), got.get(0)!.body), `${heldBytes} bytes held`);
  // An evicted object still comes, from disk: equal bytes in a new object.
  const evicted = await store.get(key(19));
  assert.notEqual(evicted, got.get(19), `${key(19)} was evicted, yet came from memory`);
  assert.deepEqual(evicted?.body, got.get(19)!.body);
  assert.ok(store.hot.bytes <= budget);
  // Least recently used out first: the reads of 0..8 above left 0 the least recent, so 19 took its place, not 8's.
  assert.equal(await store.get(key(8)), got.get(8), `${key(8)} was pushed out before the less recently used 0`);
  assert.notEqual(await store.get(key(0)), got.get(0), `${key(0)}, the least recently used, stayed in memory`);
  // An object over an eighth of the budget is served but never kept: each read is a new object from disk.
  const big = "compiled/bb/bb000000-r";
  await store.put(big, new Uint8Array(budget / 8).fill(7));
  const before = store.hot;
  const first = await store.get(big);
  assert.equal(first?.body.byteLength, budget / 8);
  assert.notEqual(await store.get(big), first, "an object over an eighth of the budget was kept in memory");
  assert.deepEqual(store.hot, before);
});

Deno.test("single-flight shares one run per key and forgets it when done", async () => {
  const flight = new SingleFlight<number>();
  let runs = 0;
  const task = () => new Promise<number>((r) => setTimeout(() => r(++runs), 20));
  const all = await Promise.all(Array.from({ length: 50 }, () => flight.run("k", task)));
  assert.ok(all.every((v) => v === 1));
  assert.equal(flight.size, 0);
  assert.equal(await flight.run("k", task), 2);
  await assert.rejects(() => flight.run("e", () => Promise.reject(new Error("boom"))), /boom/);
  assert.equal(flight.has("e"), false);
});

/** A file system layer that records the store's calls (paths relative to `root`, temp names generalised). */
function recordingFs(root: string, calls: string[], inner: StoreFs = denoFs): StoreFs {
  const rel = (p: string) =>
    relative(root, p).replace(/^tmp\/\d+\.[0-9a-f]{8}-part-[0-9a-f-]{36}$/, "tmp/*.part") || ".";
  return {
    writeNew: (p, b) => (calls.push(`writeNew ${rel(p)}`), inner.writeNew(p, b)),
    setTimes: (p, a, m) => (calls.push(`setTimes ${rel(p)}`), inner.setTimes(p, a, m)),
    rename: (f, t) => (calls.push(`rename ${rel(f)} ${rel(t)}`), inner.rename(f, t)),
    syncDir: (p) => (calls.push(`syncDir ${rel(p)}`), inner.syncDir(p)),
    mkdir: (p) => (calls.push(`mkdir ${rel(p)}`), inner.mkdir(p)),
    remove: (p) => (calls.push(`remove ${rel(p)}`), inner.remove(p)),
  };
}

/**
 * A file system layer whose writes fail, while `full()` says so, the way a full disk makes them fail: the temp file is
 * created, then the write raises what Deno raises for the kernel's ENOSPC (a plain Error with `code: "ENOSPC"` and
 * the OS message; tests/cache/disk_full_test.ts gets the genuine one from a full tmpfs).
 */
function fullDiskFs(full: () => boolean): StoreFs {
  return {
    ...denoFs,
    async writeNew(path, body) {
      if (!full()) return await denoFs.writeNew(path, body);
      (await Deno.open(path, { write: true, createNew: true })).close();
      throw Object.assign(new Error(`No space left on device (os error 28): write '${path}'`), { code: "ENOSPC" });
    },
  };
}

Deno.test("a rename into place is followed by an fsync of its folder, and of the parents of folders it made", async () => {
  // What this proves: the store calls syncDir on the right folders after the rename, through its fs layer. That the
  // real layer's syncDir is an fsync of the folder is shown by the strace test below.
  const dir = tempDir();
  const calls: string[] = [];
  const store = new DiskStore(dir, { fs: recordingFs(join(dir), calls) });
  await store.open();
  const key = await contentKey(bytes("one"));
  await store.put(key, bytes("one"));
  const h2 = key.split("/")[1];
  assert.deepEqual(calls, [
    `mkdir files/${h2}`,
    "writeNew tmp/*.part",
    "setTimes tmp/*.part",
    `rename tmp/*.part ${key}`,
    `syncDir files/${h2}`,
    "syncDir files",
    "syncDir .",
  ]);
  calls.length = 0;
  await store.put(key, bytes("one"));
  assert.deepEqual(calls, [
    "writeNew tmp/*.part",
    "setTimes tmp/*.part",
    `rename tmp/*.part ${key}`,
    `syncDir files/${h2}`,
  ]);
});

Deno.test("strace: the real fs layer fsyncs the object's folder after the rename into it", async () => {
  // Runs a store in a child process under strace (a missing strace fails this test) and reads the system calls.
  const dir = tempDir();
  const script = join(tempDir(), "put.ts");
  const storeUrl = new URL("../../src/store/disk/mod.ts", import.meta.url).href;
  Deno.writeTextFileSync(
    script,
    `import { DiskStore } from ${JSON.stringify(storeUrl)};\n` +
      `const s = new DiskStore(${JSON.stringify(dir)});\nawait s.open();\n` +
      `await s.put("index/abc/package/6/x/1.0.json", new TextEncoder().encode("{}"));\n`,
  );
  const trace = join(tempDir(), "trace.txt");
  const out = await new Deno.Command("strace", {
    args: ["-f", "-o", trace, "-e", "trace=rename,renameat,renameat2,openat,fcntl,dup,dup2,dup3,fsync,fdatasync"]
      .concat([Deno.execPath(), "run", "-A", "--frozen", script]),
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const lines = Deno.readTextFileSync(trace).split("\n");
  const folder = join(dir, "index/abc/package/6/x");
  const renamed = lines.findIndex((l) => /rename/.test(l) && l.includes(`"${folder}/1.0.json"`) && / = 0$/.test(l));
  assert.ok(renamed >= 0, "no rename into place was traced");
  const fds = new Set<string>();
  let synced = false;
  for (const line of lines.slice(renamed + 1)) {
    const open = new RegExp(`openat\\(AT_FDCWD, "${folder}", [^)]*\\) = (\\d+)`).exec(line);
    if (open) fds.add(open[1]);
    const dup = /fcntl\((\d+), F_DUPFD(?:_CLOEXEC)?, \d+\)\s+= (\d+)|dup[23]?\((\d+)[^)]*\)\s+= (\d+)/.exec(line);
    if (dup && fds.has(dup[1] ?? dup[3])) fds.add(dup[2] ?? dup[4]);
    const sync = /\bf(?:data)?sync\((\d+)\)\s+= 0/.exec(line);
    if (sync && fds.has(sync[1])) synced = true;
  }
  assert.ok(synced, `no fsync of ${folder} after the rename`);
});

Deno.test("disk full (ENOSPC as Deno raises it, from an injected fs layer): served uncached, no temp file, logged once", async () => {
  const dir = tempDir();
  const logger = memoryLogger();
  let full = true;
  const store = new DiskStore(dir, { fs: fullDiskFs(() => full), logger });
  await store.open();
  const keys = await Promise.all(["a", "b", "c"].map((s) => contentKey(bytes(s))));
  for (const [i, key] of keys.entries()) {
    const got = await store.put(key, bytes("abc"[i]));
    assert.equal(got.uncached, true);
    assert.deepEqual(got.body, bytes("abc"[i]));
    assert.equal(got.etag, `"${(await sha256Hex(bytes("abc"[i]))).slice(0, 32)}"`);
    assert.deepEqual((await store.get(key))?.body, bytes("abc"[i]), "kept in memory while the disk is full");
  }
  assert.deepEqual([...Deno.readDirSync(join(dir, "tmp"))], [], "a temp file was left behind");
  assert.deepEqual(await Array.fromAsync(store.keys()), []);
  const warnings = logger.lines.filter((l) => l.includes("Cannot store in the cache"));
  assert.equal(warnings.length, 1, warnings.join("\n"));
  assert.match(warnings[0], /"cause":"ENOSPC"/);
  assert.match(warnings[0], /No space left on device/);
  assert.equal(store.stats().writeErrors, 3);
  assert.equal(store.stats().objects, 0);
  full = false;
  const key = await contentKey(bytes("d"));
  assert.equal((await store.put(key, bytes("d"))).uncached, undefined);
  assert.ok(logger.lines.some((l) => /Cache writes work again.*"ENOSPC":3/.test(l)));
  assert.equal(store.stats().objects, 1);
  full = true;
  await store.put(await contentKey(bytes("e")), bytes("e"));
  assert.equal(logger.lines.filter((l) => l.includes("Cannot store in the cache")).length, 2, "logged again after");
});

Deno.test("a restart removes every kind of leftover: temp files, probe files, hidden files, empty content files", async () => {
  const dir = tempDir();
  const store = new DiskStore(dir);
  await store.open();
  const key = await contentKey(bytes("kept"));
  await store.put(key, bytes("kept"));
  const emptyKey = await contentKey(new Uint8Array(0));
  await store.put(emptyKey, new Uint8Array(0));
  await store.put("index/abc/index.json", bytes("{}"));
  Deno.writeTextFileSync(join(dir, "tmp", "0123.part"), "half a fi");
  Deno.writeTextFileSync(join(dir, "tmp", ".healthz-1234"), "");
  Deno.writeTextFileSync(join(dir, ".healthz-5678"), "o");
  // A write of a process that is gone (no owner file names it).
  Deno.writeTextFileSync(join(dir, "tmp", "4194305.0b1c0b1c-part-0b1c"), "half");
  Deno.writeTextFileSync(join(dir, "files", key.split("/")[1], ".abc.tmp"), "half");
  Deno.writeTextFileSync(join(dir, "index/abc/.index.json.swp"), "half");
  Deno.mkdirSync(join(dir, "files/12"));
  Deno.writeTextFileSync(join(dir, "files/12/12345678"), ""); // a file whose bytes never reached the disk
  Deno.writeTextFileSync(join(dir, "not-ours.txt"), "left alone");
  const reopened = new DiskStore(dir);
  assert.equal(await reopened.open(), 7);
  assert.deepEqual([...Deno.readDirSync(join(dir, "tmp"))], []);
  assert.deepEqual(
    (await Array.fromAsync(reopened.keys())).sort(),
    [emptyKey, key, "index/abc/index.json"].sort(),
  );
  // A file beside the folders (the install records live there) is not an object, and is left alone.
  assert.equal(Deno.readTextFileSync(join(dir, "not-ours.txt")), "left alone");
  assert.deepEqual((await reopened.get(emptyKey))?.body, new Uint8Array(0));
});

Deno.test("a content file whose bytes do not match its name is removed when read, so it is fetched again", async () => {
  const dir = tempDir();
  const logger = memoryLogger();
  const store = new DiskStore(dir, { logger });
  await store.open();
  const key = await contentKey(bytes("good"));
  await store.put(key, bytes("good"));
  Deno.writeTextFileSync(join(dir, key), "goo"); // torn by a power cut without the fsyncs, or a disk error
  const reopened = new DiskStore(dir, { logger });
  await reopened.open();
  assert.equal(reopened.stats().objects, 1);
  assert.equal(await reopened.get(key), undefined);
  assert.equal(await reopened.has(key), false);
  assert.equal(reopened.stats().objects, 0);
  assert.ok(logger.lines.some((l) => l.includes("Removed a damaged cache file")));
});

Deno.test("objects are counted at open and as written or removed; manifests and metadata aside", async () => {
  const dir = tempDir();
  const store = new DiskStore(dir);
  await store.open();
  await store.put("compiled/aa/aa-r", new Uint8Array(100));
  await store.put("mirror/github/a/b/v1/x.py", new Uint8Array(30));
  await store.put("mirror/github/a/b/v1/package.json", new Uint8Array(7));
  await store.put("index/abc/package/6/x/1.0.json", new Uint8Array(9));
  await store.put("named/x/6/_/1.0.json", new Uint8Array(9));
  // A named package's file, named by its full sha256: no upstream serves it by hash, so it is kept, not counted.
  const named = new Uint8Array(11);
  await store.put(`files/${(await sha256Hex(named)).slice(0, 2)}/${await sha256Hex(named)}`, named);
  assert.deepEqual(store.stats(), { sizeBytes: 130, objects: 2, evictions: 0, maxBytes: null, writeErrors: 0 });
  await store.put("compiled/aa/aa-r", new Uint8Array(50)); // replaced, not added
  assert.equal(store.stats().sizeBytes, 80);
  const reopened = new DiskStore(dir);
  await reopened.open();
  assert.deepEqual(reopened.stats(), { sizeBytes: 80, objects: 2, evictions: 0, maxBytes: null, writeErrors: 0 });
  assert.equal(await reopened.remove(["compiled/aa/aa-r", "compiled/bb/bb-r", "named/x/6/_/1.0.json"]), 2);
  assert.deepEqual(reopened.stats(), { sizeBytes: 30, objects: 1, evictions: 0, maxBytes: null, writeErrors: 0 });
  assert.equal(await reopened.get("compiled/aa/aa-r"), undefined, "removed from memory too");
  assert.equal(await reopened.has("named/x/6/_/1.0.json"), false);
});

/** Sum of the sizes of the object files on disk under `dir`. */
function bytesOnDisk(dir: string): number {
  let total = 0;
  const walk = (d: string, rel: string) => {
    for (const e of Deno.readDirSync(d)) {
      const key = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory && key !== "tmp") walk(join(d, e.name), key);
      else if (e.isFile && isObjectKey(key)) total += Deno.statSync(join(d, e.name)).size;
    }
  };
  walk(dir, "");
  return total;
}

const obj = (i: number) => `compiled/${String(i).padStart(2, "0")}/o${i}-r`;

Deno.test("max_size: least recently used objects are evicted as new ones are written; the total stays in bounds", async () => {
  const dir = tempDir();
  let t = 1_000_000;
  const store = new DiskStore(dir, { maxBytes: 1000, now: () => (t += 10), touchEvery: 0, memoryBytes: 0 });
  await store.open();
  for (let i = 0; i < 4; i++) await store.put(obj(i), new Uint8Array(250).fill(i));
  await store.put("index/abc/index.json", new Uint8Array(500)); // metadata: not counted, never evicted
  assert.equal(bytesOnDisk(dir), 1000);
  await store.get(obj(0)); // 0 is now the most recently used: 1 goes first
  await store.put(obj(4), new Uint8Array(300)); // 1 then 2 go: one 250-byte object would not make room
  assert.deepEqual(await present(store, 5), [0, 3, 4]);
  assert.ok(bytesOnDisk(dir) <= 1000, `${bytesOnDisk(dir)} bytes on disk`);
  await store.put(obj(5), new Uint8Array(400)); // 3 goes
  assert.deepEqual(await present(store, 6), [0, 4, 5]);
  assert.equal(bytesOnDisk(dir), 950);
  assert.deepEqual(store.stats(), { sizeBytes: 950, objects: 3, evictions: 3, maxBytes: 1000, writeErrors: 0 });
  assert.equal(await store.has("index/abc/index.json"), true);
  // An object larger than the limit is served, not stored, and evicts nothing.
  const big = await store.put(obj(6), new Uint8Array(1001));
  assert.equal(big.uncached, true);
  assert.deepEqual(await present(store, 7), [0, 4, 5]);
});

async function present(store: DiskStore, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) if (await store.has(obj(i))) out.push(i);
  return out;
}

Deno.test("max_size: protected objects (the protect hook, held keys) are never evicted", async () => {
  const dir = tempDir();
  const locked = new Set([obj(0)]);
  const store = new DiskStore(dir, { maxBytes: 1000, protect: (k) => locked.has(k), memoryBytes: 0 });
  await store.open();
  for (let i = 0; i < 4; i++) await store.put(obj(i), new Uint8Array(250));
  const release = store.hold(obj(1));
  await store.put(obj(4), new Uint8Array(250));
  assert.deepEqual(await present(store, 5), [0, 1, 3, 4]);
  release();
  await store.put(obj(5), new Uint8Array(250));
  assert.deepEqual(await present(store, 6), [0, 3, 4, 5]);
  // Everything protected: the new object is served uncached and nothing is evicted.
  store.protect = () => true;
  const got = await store.put(obj(6), new Uint8Array(250));
  assert.equal(got.uncached, true);
  assert.deepEqual(await present(store, 7), [0, 3, 4, 5]);
  assert.equal(store.stats().evictions, 2);
  assert.equal(bytesOnDisk(dir), 1000);
});

Deno.test("max_size: use order survives a restart (stamped on disk, read back at open)", async () => {
  const dir = tempDir();
  let t = Date.now() - 100_000;
  const now = () => (t += 1000);
  const first = new DiskStore(dir, { maxBytes: 1000, now, touchEvery: 0, memoryBytes: 0 });
  await first.open();
  for (let i = 0; i < 4; i++) await first.put(obj(i), new Uint8Array(250));
  await first.get(obj(0));
  await first.get(obj(2));
  await first.flush();
  // Order of use is now 1, 3, 0, 2 (least recent first).
  const second = new DiskStore(dir, { maxBytes: 1000, now, touchEvery: 0, memoryBytes: 0 });
  await second.open();
  assert.deepEqual(second.stats().objects, 4);
  await second.put(obj(4), new Uint8Array(500));
  assert.deepEqual(await present(second, 5), [0, 2, 4]);
  // A lower limit at the next start applies at once, least recently used out first.
  const third = new DiskStore(dir, { maxBytes: 600, now, touchEvery: 0, memoryBytes: 0 });
  await third.open();
  assert.deepEqual(await present(third, 5), [4]);
  assert.deepEqual([third.stats().sizeBytes, third.stats().evictions], [500, 2]);
});

Deno.test("concurrent writes under max_size never pass the limit together", async () => {
  const dir = tempDir();
  const store = new DiskStore(dir, { maxBytes: 1000 });
  await store.open();
  await Promise.all(Array.from({ length: 20 }, (_, i) => store.put(obj(i), new Uint8Array(200))));
  assert.equal(store.stats().objects, 5);
  assert.equal(bytesOnDisk(dir), 1000);
  assert.equal(store.stats().sizeBytes, 1000);
});

Deno.test("the writability probe leaves nothing behind", async () => {
  const dir = tempDir();
  const store = new DiskStore(dir);
  await store.open();
  assert.equal(await store.writable(), true);
  assert.deepEqual([...Deno.readDirSync(join(dir, "tmp"))], []);
  Deno.removeSync(dir, { recursive: true });
  Deno.writeTextFileSync(dir, "a file, not a folder");
  assert.equal(await store.writable(), false);
});

Deno.test("opening a store leaves another running process's temp files alone, and removes them once it is gone", async () => {
  const dir = tempDir();
  await new DiskStore(dir).open();
  const tmp = () => [...Deno.readDirSync(join(dir, "tmp"))].map((e) => e.name).sort();
  const other = await otherWriter(dir); // a server (or warm, import) in another process, mid-write
  try {
    // A write named after an owner whose owner file is gone: left by a process that died.
    Deno.writeTextFileSync(join(dir, "tmp", "123.deadbeef-part-0b1c"), "a dead process's write");
    assert.equal(await new DiskStore(dir).open(), 1);
    assert.deepEqual(tmp(), [other.name], "the live process's write stays");
  } finally {
    await other.stop(); // SIGKILL: its lock goes with it, its owner file and temp file stay behind
  }
  assert.equal(await new DiskStore(dir).open(), 1);
  assert.deepEqual(tmp(), []);
  const owners = [...Deno.readDirSync(join(dir, "locks"))].map((e) => e.name);
  assert.equal(owners.length, 1, `only this process's owner file is left: ${owners}`);
  assert.ok(owners[0].startsWith(`${Deno.pid}.`));
});
