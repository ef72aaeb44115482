/**
 * A full disk for real: the cache dir is a small tmpfs mounted for the test (as root, or through passwordless sudo;
 * without either the test fails and says so), filled to the last byte, and the server is asked for files.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { createApp } from "../../src/app.ts";
import { sha256Hex } from "../../src/store/hash.ts";
import { memoryLogger } from "../../src/log.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { tempDir, testConfig } from "../helpers.ts";
import { smallDisk } from "../small_disk.ts";

/** Writes zeros to `path` until the file system is full; returns the file. */
function fill(path: string): void {
  const file = Deno.openSync(path, { write: true, create: true });
  const chunk = new Uint8Array(4096);
  try {
    while (true) file.writeSync(chunk);
  } catch (e) {
    assert.equal((e as { code?: string }).code, "ENOSPC", String(e));
  } finally {
    file.close();
  }
}

/** Names every file under `dir` (relative). */
function listFiles(dir: string, rel = ""): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(join(dir, rel))) {
    const path = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory) out.push(...listFiles(dir, path));
    else out.push(path);
  }
  return out;
}

Deno.test("disk full (a real tmpfs): verified files are served uncached, logged once, /healthz leaves no probe", async () => {
  const disk = await smallDisk("512k");
  const root = tempDir();
  const files: { hash: string; body: Uint8Array }[] = [];
  for (let i = 0; i < 3; i++) {
    const body = new TextEncoder().encode(`print(${i})\n`.repeat(100));
    const hash = (await sha256Hex(body)).slice(0, 8);
    Deno.mkdirSync(join(root, "file", hash.slice(0, 2)), { recursive: true });
    Deno.writeFileSync(join(root, "file", hash.slice(0, 2), hash), body);
    files.push({ hash, body });
  }
  const up = new FakeUpstream(root).start();
  const logger = memoryLogger();
  try {
    const config = testConfig({ cache: { dir: join(disk.dir, "cache") }, upstreams: { index: up.url, retries: 0 } });
    const app = await createApp({ config, logger });
    // What the app keeps from its start (its install records database, its claim on tmp/) is not a leftover.
    const atStart = new Set(listFiles(disk.dir));
    const added = (dir = disk.dir) =>
      listFiles(dir).filter((f) => f !== "filler" && !atStart.has(join(dir === disk.dir ? "" : "cache", f)));
    fill(join(disk.dir, "filler"));
    const get = (path: string) => app.handler(new Request(`http://gw${path}`));
    for (const { hash, body } of [files[0], files[1], files[0]]) {
      const res = await get(`/file/${hash.slice(0, 2)}/${hash}`);
      assert.equal(res.status, 200, await res.clone().text());
      assert.deepEqual(new Uint8Array(await res.arrayBuffer()), body);
    }
    const warnings = logger.lines.filter((l) => l.includes("Cannot store in the cache"));
    assert.equal(warnings.length, 1, warnings.join("\n"));
    assert.match(warnings[0], /"cause":"ENOSPC"/);
    assert.equal(logger.lines.filter((l) => /"level":"error"/.test(l)).length, 0, logger.lines.join("\n"));
    const health = await (await get("/healthz")).json();
    assert.equal(health.cache.writable, false);
    assert.equal(health.cache.objects, 0);
    assert.deepEqual(added(), [], "something was left on the full disk");
    // Room again: the next file is stored and the recovery is logged.
    Deno.removeSync(join(disk.dir, "filler"));
    const { hash, body } = files[2];
    const res = await get(`/file/${hash.slice(0, 2)}/${hash}`);
    assert.equal(res.status, 200);
    assert.deepEqual(new Uint8Array(await res.arrayBuffer()), body);
    assert.deepEqual(added(join(disk.dir, "cache")), [`files/${hash.slice(0, 2)}/${hash}`]);
    assert.ok(logger.lines.some((l) => l.includes("Cache writes work again")));
    assert.equal((await (await get("/healthz")).json()).cache.writable, true);
    await app.idle();
  } finally {
    await up.stop();
    await disk.unmount();
  }
});

Deno.test("/healthz on a full disk (a real tmpfs) says not writable and leaves no probe file behind", async () => {
  const disk = await smallDisk("64k");
  try {
    const config = testConfig({ cache: { dir: join(disk.dir, "cache") } });
    const app = await createApp({ config, logger: memoryLogger() });
    const atStart = listFiles(disk.dir);
    fill(join(disk.dir, "filler"));
    for (let i = 0; i < 3; i++) {
      const health = await (await app.handler(new Request("http://gw/healthz"))).json();
      assert.equal(health.cache.writable, false);
    }
    assert.deepEqual(listFiles(disk.dir).sort(), [...atStart, "filler"].sort());
  } finally {
    await disk.unmount();
  }
});
