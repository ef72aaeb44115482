import assert from "node:assert/strict";
import { join } from "node:path";
import { SingleFlight } from "../../src/cache/single_flight.ts";
import { DiskStore, isSafeKey } from "../../src/cache/store.ts";
import { tempDir } from "../helpers.ts";

const bytes = (s: string) => new TextEncoder().encode(s);

Deno.test("put then get returns the bytes, the injected store time and an ETag; survives a new store", async () => {
  const dir = tempDir();
  const store = new DiskStore(dir, { now: () => 1_700_000_000_000 });
  await store.open();
  const put = await store.put("files/ab/abcdef12", bytes("hello"));
  assert.match(put.etag, /^"[0-9a-f]{32}"$/);
  const again = new DiskStore(dir);
  await again.open();
  const got = await again.get("files/ab/abcdef12");
  assert.deepEqual(got?.body, bytes("hello"));
  assert.equal(got?.storedAt, 1_700_000_000_000);
  assert.equal(got?.etag, put.etag);
  assert.equal(await again.get("files/ab/abcdef99"), undefined);
  assert.equal(await again.has("files/ab/abcdef12"), true);
  assert.deepEqual(await Array.fromAsync(again.keys()), ["files/ab/abcdef12"]);
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

Deno.test("the hot set stays within its memory budget and still serves evicted objects from disk", async () => {
  const store = new DiskStore(tempDir(), { memoryBytes: 8 * 1024 });
  await store.open();
  for (let i = 0; i < 20; i++) {
    await store.put(`files/aa/aa${String(i).padStart(6, "0")}`, new Uint8Array(1000).fill(i));
  }
  for (let i = 0; i < 20; i++) {
    const got = await store.get(`files/aa/aa${String(i).padStart(6, "0")}`);
    assert.equal(got?.body[0], i);
  }
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
