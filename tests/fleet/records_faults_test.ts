/**
 * Install records on a database that cannot be written: a real tmpfs filled to the last byte, and a truncated file. Devices are served all the same, the cause is logged once, what could not be
 * written is counted, and the records recover when the disk can be written again (a corrupt file is moved aside).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { smallDisk } from "../small_disk.ts";
import { tempDir } from "../helpers.ts";
import { setup } from "./records_env.ts";

type Env = Awaited<ReturnType<typeof setup>>;

const failures = (env: Env) => env.logger.lines.filter((l) => l.includes("Cannot write install records"));

/** Installs from new devices until a batch fails to be written (bounded); returns the devices that installed. */
async function untilWritesFail(env: Env, prefix: string): Promise<string[]> {
  const devices: string[] = [];
  for (let i = 0; i < 400 && failures(env).length === 0; i++) {
    const device = `${prefix}.${i >> 8}.${i & 255}`;
    await env.install(device, "mathx/latest");
    devices.push(device);
    await env.app.recorder.flush();
  }
  assert.ok(failures(env).length > 0, "the records never failed to be written");
  return devices;
}

Deno.test("a full disk: devices are served, the cause is logged once, and the records recover", async () => {
  const disk = await smallDisk("3m");
  let env: Env | undefined;
  try {
    env = await setup({}, disk.dir);
    await env.install("10.3.0.1", "mathx/latest");
    assert.equal((await env.installs()).length, 1);
    // Fill what is left of the disk.
    const filler = join(disk.dir, "filler");
    const file = Deno.openSync(filler, { create: true, write: true });
    try {
      const chunk = new Uint8Array(64 * 1024);
      while (true) file.writeSync(chunk);
    } catch (e) {
      assert.ok(String(e).match(/No space left|ENOSPC|os error 28/), String(e));
    } finally {
      file.close();
    }
    await untilWritesFail(env, "10.4");
    // Devices are still answered while the records fail, and the failure is logged once however many batches fail.
    for (let i = 0; i < 5; i++) {
      await env.install(`10.5.0.${i}`, "mathx/latest");
      await env.app.recorder.flush();
    }
    assert.equal(failures(env).length, 1, failures(env).join("\n"));
    assert.match(failures(env)[0], /full/);
    const figures = env.app.recorder.figures();
    assert.equal(figures.write_error, "full");
    assert.ok(figures.requests_unwritten > 0, JSON.stringify(figures));
    const health = JSON.parse((await env.admin("/healthz")).text);
    assert.equal(health.records.write_error, "full");
    // Room again: the next batch is written, and the installs still open are written with it.
    Deno.removeSync(filler);
    await env.install("10.6.0.1", "mathx/latest");
    const installs = await env.installs("?limit=1000");
    assert.ok(env.logger.lines.some((l) => l.includes("Install records are written again")));
    assert.equal(env.app.recorder.figures().write_error, null);
    const devices = new Set(installs.map((i) => i.device));
    for (const d of ["10.3.0.1", "10.5.0.4", "10.6.0.1"]) assert.ok(devices.has(d), `${d} recorded`);
    assert.ok(
      installs.every((i) => i.status === "complete"),
      JSON.stringify(installs.filter((i) => i.status !== "complete")),
    );
  } finally {
    await env?.close();
    await disk.unmount();
  }
});

Deno.test("a truncated database is moved aside, a new one started, and logged", async () => {
  const dir = tempDir();
  let env = await setup({}, dir);
  try {
    for (let i = 0; i < 300; i++) await env.install(`10.8.${i >> 8}.${i & 255}`, "mathx/latest");
    assert.equal((await env.installs("?limit=1000")).length, 300);
    await env.app.close();
    const path = join(dir, "audit.sqlite");
    const size = Deno.statSync(path).size;
    assert.ok(size > 64 * 1024, `${size} bytes`);
    Deno.truncateSync(path, Math.floor(size / 3));
    env.app = await env.make();
    await env.install("10.9.0.1", "mathx/latest");
    const installs = await env.installs("?limit=1000");
    const log = env.logger.lines.join("\n");
    assert.match(log, /Install records were corrupt: moved aside, a new file started/);
    const aside = [...Deno.readDirSync(dir)].filter((e) => e.name.startsWith("audit.sqlite.corrupt-"));
    assert.ok(aside.length >= 1, "the corrupt file is kept aside for a person to look at");
    assert.ok(installs.some((i) => i.device === "10.9.0.1" && i.status === "complete"), JSON.stringify(installs));
  } finally {
    await env.close();
  }
  // A file that is no database at all is moved aside at start.
  const other = tempDir();
  Deno.writeTextFileSync(join(other, "audit.sqlite"), "not a database\n".repeat(1000));
  env = await setup({}, other);
  try {
    assert.match(env.logger.lines.join("\n"), /Install records were corrupt: moved aside/);
    await env.install("10.9.0.2", "mathx/latest");
    assert.equal((await env.installs()).length, 1);
  } finally {
    await env.close();
  }
});
