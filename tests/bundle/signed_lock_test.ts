/**
 * Signed locks on the server: `lock --sign` writes a lock openssl verifies; a `policy.lock` that is unsigned (with
 * `policy.require_signed`), tampered (one flipped byte) or signed by a key not in `policy.trusted_keys` stops the start
 * with the reason; without `require_signed` an unsigned lock starts with a warning, and a signed one is still checked;
 * /healthz shows the signer and the time of signing. Read again (`LockInForce.reload`, SIGHUP in `main.ts`): a refused
 * lock keeps the one before it in force and says why; a good one comes into force.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { createApp } from "../../src/app.ts";
import { memoryLogger } from "../../src/log.ts";
import { SignatureError } from "../../src/packages/signing.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { standardIndex } from "../fixtures/index_fixture.ts";
import { fetchWhenUp, freePort, tempDir, testConfig } from "../helpers.ts";
import { mpyCrossPath } from "../e2e/tools.ts";
import { keygen, mipserver, opensslVerifies } from "./signing_helpers.ts";

/** An index upstream, an office config on it, keys, and locks of hello@1.0 and hello@1.1 signed by the old key. */
async function office() {
  const idx = await standardIndex();
  const index = new FakeUpstream(idx.root).start();
  const dir = tempDir("mipserver-office-");
  const config = join(dir, "config.yaml");
  Deno.writeTextFileSync(
    config,
    JSON.stringify({
      cache: { dir: join(dir, "cache") },
      upstreams: { index: index.url, retries: 0 },
      mpy_cross: { path: mpyCrossPath() },
      log: { level: "warn" },
    }),
  );
  const [oldKey, newKey, stranger] = [await keygen(), await keygen(), await keygen()];
  const lock = async (spec: string, key: { path: string } | null, name: string) => {
    const out = join(dir, name);
    const r = await mipserver("lock", "--config", config, "--output", out, ...(key ? ["--sign", key.path] : []), spec);
    assert.equal(r.code, 0, r.stderr);
    if (key) assert.match(r.stderr, /locked 1 packages .*, signed with key [0-9a-f]{16}/);
    return out;
  };
  return {
    index,
    url: index.url,
    oldKey,
    newKey,
    stranger,
    signed10: await lock("hello@1.0", oldKey, "hello10.lock"),
    signed11: await lock("hello@1.1", newKey, "hello11.lock"),
    unsigned: await lock("hello@1.0", null, "unsigned.lock"),
    byStranger: await lock("hello@1.0", stranger, "stranger.lock"),
  };
}

/** A copy of `file` with `change` applied to its text. */
function changed(file: string, change: (text: string) => string): string {
  const out = join(tempDir("mipserver-locks-"), "fleet.lock");
  const text = Deno.readTextFileSync(file);
  const next = change(text);
  assert.notEqual(next, text);
  Deno.writeTextFileSync(out, next);
  return out;
}

/** One hex digit of the first locked sha256 changed (a changed byte of the lock's hashes). */
const flipHash = (text: string) =>
  text.replace(/": "([0-9a-f])([0-9a-f]{63})"/, (_, c, rest) => `": "${c === "0" ? "1" : "0"}${rest}"`);

Deno.test("a policy.lock that is unsigned, tampered or signed by an untrusted key stops the start, with the reason", async () => {
  const o = await office();
  try {
    assert.equal(await opensslVerifies(o.signed10, o.oldKey.publicKey), true, "openssl verifies lock --sign");
    const trusted = [o.oldKey.publicKey, o.newKey.publicKey];
    const start = async (lock: string, policy: Record<string, unknown>) => {
      const logger = memoryLogger();
      const app = await createApp({
        config: testConfig({ cache: { dir: tempDir() }, upstreams: { index: o.url }, policy: { lock, ...policy } }),
        logger,
      });
      return { app, logger };
    };
    const refused = async (lock: string, policy: Record<string, unknown>, reason: string, message: RegExp) => {
      await assert.rejects(start(lock, policy), (e: unknown) => {
        assert.ok(e instanceof SignatureError, String(e));
        assert.equal(e.reason, reason);
        assert.match(e.message, message);
        return true;
      });
    };
    const strict = { trusted_keys: trusted, require_signed: true };
    await refused(o.unsigned, strict, "unsigned", /The lock file .*unsigned\.lock is unsigned, and policy\.require/);
    await refused(o.byStranger, strict, "untrusted", /is signed by an untrusted key: [0-9a-f]{16}/);
    await refused(changed(o.signed10, flipHash), strict, "tampered", /is tampered: .* does not match its bytes/);
    await refused(changed(o.signed10, (t) => t.replace('"mpy": "6"', '"mpy": "7"')), strict, "tampered", /tampered/);
    // Without require_signed: a signed lock is still checked against the trusted keys; an unsigned one starts, warned.
    const lenient = { trusted_keys: [o.newKey.publicKey] };
    await refused(o.signed10, lenient, "untrusted", /not in policy\.trusted_keys/);
    await refused(changed(o.signed11, flipHash), lenient, "tampered", /tampered/);
    const warned = await start(o.unsigned, lenient);
    assert.ok(warned.logger.lines.some((l) => /unsigned\.lock is unsigned; accepted because/.test(l)));
    await warned.app.close();

    // Both keys of a rotation are accepted; /healthz shows who signed the lock in force and when.
    for (const [lock, key] of [[o.signed10, o.oldKey], [o.signed11, o.newKey]] as const) {
      const { app, logger } = await start(lock, strict);
      const health = await (await app.handler(new Request("http://gw/healthz"))).json();
      const signedAt = JSON.parse(`{${Deno.readTextFileSync(lock).split("\n")[1].replace(/,$/, "")}}`).signature
        .signed_at;
      assert.deepEqual(health.lock.signed, { key_id: (await keyOf(key.path)).keyId, signed_at: signedAt });
      assert.equal(health.lock.packages, 1);
      assert.equal(health.lock.reload, null);
      assert.doesNotMatch(JSON.stringify(health), /\.lock/, "no path in /healthz");
      assert.ok(logger.lines.some((l) => l.includes('"signed_by"')));
      await app.close();
    }
    // The CLI server stops at start with the reason.
    const dir = tempDir();
    const config = join(dir, "config.yaml");
    Deno.writeTextFileSync(
      config,
      JSON.stringify({
        server: { port: freePort() },
        cache: { dir: join(dir, "cache") },
        upstreams: { index: o.url },
        policy: { lock: changed(o.signed10, flipHash), ...strict },
      }),
    );
    const r = await mipserver("--config", config);
    assert.equal(r.code, 1);
    assert.match(r.stdout + r.stderr, /Cannot start.*fleet\.lock is tampered: its signature by key [0-9a-f]{16}/);
  } finally {
    await o.index.stop();
  }
});

async function keyOf(path: string) {
  const { readSigningKey } = await import("../../src/packages/signing.ts");
  return await readSigningKey(path);
}

Deno.test("reading the lock again: a refused lock keeps the one before it in force and says why; a good one comes in", async () => {
  const o = await office();
  try {
    const live = join(tempDir("mipserver-live-"), "fleet.lock");
    Deno.copyFileSync(o.signed10, live);
    const logger = memoryLogger();
    const app = await createApp({
      config: testConfig({
        cache: { dir: tempDir() },
        upstreams: { index: o.url },
        policy: { lock: live, trusted_keys: [o.oldKey.publicKey, o.newKey.publicKey], require_signed: true },
      }),
      logger,
    });
    const get = async (path: string) => {
      const res = await app.handler(new Request(`http://gw${path}`));
      return { status: res.status, text: await res.text() };
    };
    const version = async () => JSON.parse((await get("/package/py/hello/latest.json")).text).version;
    assert.equal(await version(), "1.0");
    const lockedBefore = (await get("/package/py/hello/1.0.json")).text;
    const fileOf10 = JSON.parse(lockedBefore).hashes[0][1];

    for (
      const [bad, reason] of [
        [changed(o.signed11, flipHash), "tampered"],
        [o.unsigned, "unsigned"],
        [o.byStranger, "untrusted"],
        [join(tempDir(), "gone.lock"), "unreadable"],
      ] as const
    ) {
      if (reason === "unreadable") Deno.removeSync(live);
      else Deno.copyFileSync(bad, live);
      logger.lines.length = 0;
      assert.equal(await app.lock!.reload(), false, reason);
      const line = logger.lines.find((l) => l.includes("stays in force"));
      assert.ok(line, logger.lines.join("\n"));
      assert.equal(JSON.parse(line).refused, reason);
      assert.equal(await version(), "1.0", `${reason}: the lock before it is still in force`);
      assert.equal((await get("/package/py/hello/1.1.json")).status, 403);
      const health = await (await app.handler(new Request("http://gw/healthz"))).json();
      assert.equal(health.lock.reload.refused, reason);
      assert.equal(health.lock.signed.key_id, (await keyOf(o.oldKey.path)).keyId);
    }

    let changes = 0;
    app.lock!.onChange(() => changes++);
    Deno.copyFileSync(o.signed11, live);
    assert.equal(await app.lock!.reload(), true);
    assert.equal(changes, 1);
    assert.ok(logger.lines.some((l) => l.includes("the new lock is in force")));
    assert.equal(await version(), "1.1");
    assert.equal((await get("/package/py/hello/1.0.json")).status, 403);
    assert.equal((await get(`/file/${fileOf10.slice(0, 2)}/${fileOf10}`)).status, 403, "the old lock's files go too");
    const health = await (await app.handler(new Request("http://gw/healthz"))).json();
    assert.equal(health.lock.signed.key_id, (await keyOf(o.newKey.path)).keyId);
    assert.equal(health.lock.reload.refused, null);
    await app.close();
  } finally {
    await o.index.stop();
  }
});

Deno.test("SIGHUP makes the running server read policy.lock again", async () => {
  const o = await office();
  const dir = tempDir();
  const live = join(dir, "fleet.lock");
  Deno.copyFileSync(o.signed10, live);
  const port = freePort();
  const config = join(dir, "config.yaml");
  Deno.writeTextFileSync(
    config,
    JSON.stringify({
      server: { host: "127.0.0.1", port, workers: 0 },
      cache: { dir: join(dir, "cache") },
      upstreams: { index: o.url },
      policy: { lock: live, trusted_keys: [o.oldKey.publicKey, o.newKey.publicKey], require_signed: true },
    }),
  );
  const root = new URL("../../", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--frozen", `${root}src/main.ts`, "--config", config],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = Promise.all([child.stdout, child.stderr].map((s) => new Response(s).text()));
  const version = async () =>
    (await (await fetch(`http://127.0.0.1:${port}/package/py/hello/latest.json`)).json()).version;
  const signedBy = async () => (await (await fetch(`http://127.0.0.1:${port}/healthz`)).json()).lock.signed.key_id;
  const until = async (check: () => Promise<boolean>) => {
    for (let i = 0; i < 100 && !(await check()); i++) await new Promise((r) => setTimeout(r, 50));
  };
  try {
    await (await fetchWhenUp(`http://127.0.0.1:${port}/healthz`)).body?.cancel();
    assert.equal(await version(), "1.0");
    Deno.copyFileSync(changed(o.signed11, flipHash), live);
    child.kill("SIGHUP");
    const oldId = (await keyOf(o.oldKey.path)).keyId;
    await until(async () => (await (await fetch(`http://127.0.0.1:${port}/healthz`)).json()).lock.reload !== null);
    assert.equal(await signedBy(), oldId, "a tampered lock is refused: the one before it stays");
    assert.equal(await version(), "1.0");
    Deno.copyFileSync(o.signed11, live);
    child.kill("SIGHUP");
    const newId = (await keyOf(o.newKey.path)).keyId;
    await until(async () => (await signedBy()) === newId);
    assert.equal(await signedBy(), newId);
    // The edge repeats an answer for up to a second: devices see the new lock at most that much later.
    await until(async () => (await version()) === "1.1");
    assert.equal(await version(), "1.1");
  } finally {
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0);
    await o.index.stop();
  }
  const [stdout, stderr] = await output;
  const log = stdout + stderr;
  assert.match(log, /The lock file read again was refused; the lock before it stays in force.*refused=tampered/);
  assert.match(log, /The lock file was read again; the new lock is in force/);
});
