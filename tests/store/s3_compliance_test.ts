/**
 * The store compliance suite (`compliance.ts`) against the S3 store on a real SeaweedFS (`tests/fixtures/seaweed.ts`),
 * started once for this file and stopped by its last test (or, whatever happens, when this process goes); each case
 * gets a prefix of its own in one bucket. Then what only S3 has: the stored time shared by replicas, the conditional
 * write check, errors that name the store and never the keys, sweeping probes and counting at open.
 */
import assert from "node:assert/strict";
import { Unavailable } from "../../src/errors.ts";
import type { Logger } from "../../src/log.ts";
import { S3Client, S3Error } from "../../src/store/s3/client.ts";
import { checkConditionalWrites, S3Store, type S3StoreOptions } from "../../src/store/s3/mod.ts";
import { type Seaweed, startSeaweed } from "../fixtures/seaweed.ts";
import { freePort } from "../helpers.ts";
import { type Harness, reopenable, storeCompliance } from "./compliance.ts";

let server: Seaweed | undefined;
let startError: unknown;
try {
  server = await startSeaweed();
} catch (e) {
  startError = e;
}
// The fixture's supervisor stops weed when this process ends however it ends; this also removes its folder when the
// last test did not run (a filtered run, a failure before it).
globalThis.addEventListener("unload", () => server?.kill());

function running(): Seaweed {
  if (server === undefined) throw new Error(`SeaweedFS did not start: ${startError}`);
  return server;
}

/** Store options for the running server under `prefix`. */
function optionsFor(prefix: string): S3StoreOptions {
  const s = running();
  return {
    endpoint: s.endpoint,
    region: s.region,
    bucket: s.bucket,
    prefix,
    pathStyle: true,
    accessKeyId: s.accessKey,
    secretAccessKey: s.secretKey,
    timeoutMs: 10_000,
    retries: 2,
  };
}

/** A new prefix of its own for one case. */
const newPrefix = () => `t-${crypto.randomUUID()}/`;

/** Removes every object under `prefix`. */
async function emptyPrefix(prefix: string): Promise<void> {
  const client = new S3Client(optionsFor(""));
  const keys: string[] = [];
  for await (const o of client.objects(prefix)) keys.push(o.key);
  let next = 0;
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (next < keys.length) await client.request("DELETE", keys[next++]);
  }));
}

/**
 * A fetch whose next object PUTs fail after part of the body went out: the upload is cut halfway, as when a process
 * dies during it. Every attempt of the one put fails (the store tries again `retries` times).
 */
function cuttingFetch(attempts: number): { fetch: typeof fetch; failNext: () => void } {
  let failing = 0;
  const cut: typeof fetch = (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const headers = new Headers(init?.headers);
    const body = init?.body;
    if (
      failing > 0 && init?.method === "PUT" && body instanceof Uint8Array && !headers.has("x-amz-copy-source") &&
      !/\/(locks|tmp)\//.test(url.pathname)
    ) {
      failing--;
      const half = body.subarray(0, Math.floor(body.byteLength / 2));
      const stream = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(half);
          setTimeout(() => controller.error(new Error("Simulated crash during the upload")), 20);
        },
      });
      return fetch(input, { ...init, body: stream }).then(async (r) => {
        await r.body?.cancel();
        throw new TypeError("Simulated crash during the upload (the server answered first)");
      });
    }
    return fetch(input, init);
  };
  return { fetch: cut, failNext: () => (failing = attempts) };
}

const s3: Harness = {
  make(options) {
    const prefix = newPrefix();
    const failing = cuttingFetch(3);
    const open = async () => {
      const store = new S3Store({ ...optionsFor(prefix), ...options, fetch: failing.fetch });
      await store.open();
      return store;
    };
    return reopenable(open, failing.failNext, () => emptyPrefix(prefix));
  },
};

Deno.test("s3 fixture: SeaweedFS runs, refuses an unsigned request and answers a signed one", async () => {
  const s = running();
  const anonymous = await fetch(`${s.endpoint}/${s.bucket}/`);
  await anonymous.body?.cancel();
  assert.equal(anonymous.status, 403);
  const client = new S3Client(optionsFor(""));
  assert.deepEqual((await client.list("nothing-here/")).objects, []);
});

storeCompliance("s3", s3);

/** A logger that keeps its lines. */
function keptLog(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const keep = (level: string) => (message: string, fields?: Record<string, unknown>) =>
    lines.push(`${level} ${message} ${JSON.stringify(fields ?? {})}`);
  return {
    lines,
    logger: { debug: keep("debug"), info: keep("info"), warn: keep("warn"), error: keep("error") },
  };
}

Deno.test("s3: the stored time travels with the object: another replica reads it, and sees it expire", async () => {
  const prefix = newPrefix();
  try {
    const a = new S3Store({ ...optionsFor(prefix), now: () => 1_700_000_000_000 });
    const b = new S3Store({ ...optionsFor(prefix), now: () => 1_800_000_000_000 });
    await a.open();
    await b.open();
    await a.put("named/x/6/_/latest.json", new TextEncoder().encode("{}"));
    assert.equal((await b.get("named/x/6/_/latest.json"))?.storedAt, 1_700_000_000_000);
    assert.equal((await b.stat("named/x/6/_/latest.json"))?.storedAt, 1_700_000_000_000);
    assert.equal(await b.expire("named/x"), 1);
    const expired = await a.get("named/x/6/_/latest.json");
    assert.equal(expired?.storedAt, 0);
    assert.equal(new TextDecoder().decode(expired!.body), "{}");
    assert.equal(await a.expire("named/nothing"), 0);
    assert.match(a.location, /^s3:\/\/mipserver-test\/t-[0-9a-f-]+\/ at http:\/\/127\.0\.0\.1:\d+$/);
  } finally {
    await emptyPrefix(prefix);
  }
});

Deno.test("s3: SeaweedFS honours If-None-Match: *; a bucket that ignores it is refused at open", async () => {
  const prefix = newPrefix();
  try {
    const client = new S3Client(optionsFor(prefix));
    assert.equal(await checkConditionalWrites(client, `${prefix}locks/probe-check`), true);
    assert.equal(
      await client.request("HEAD", `${prefix}locks/probe-check`, { accept: [404] }).then((r) => r.status),
      404,
    );
    // A service that stores the second write anyway, as one that ignores the header would.
    const ignoring: typeof fetch = async (input, init) => {
      const answer = await fetch(input, init);
      if (answer.status !== 412) return answer;
      await answer.body?.cancel();
      return new Response(null, { status: 200 });
    };
    const store = new S3Store({ ...optionsFor(prefix), fetch: ignoring });
    await assert.rejects(
      store.open(),
      (e: Error) =>
        e.message === `The S3 store at ${store.location} ignores If-None-Match: *; replicas cannot share it safely`,
    );
    assert.equal((await store.usage()).objects, 0, "the probe is cleaned up");
    assert.deepEqual((await client.list(`${prefix}locks/`)).objects, []);
  } finally {
    await emptyPrefix(prefix);
  }
});

Deno.test("s3: wrong keys and a dead endpoint are Unavailable errors naming the store, never the secret", async () => {
  const secret = `wrong-${crypto.randomUUID()}`;
  const { logger, lines } = keptLog();
  const refused = new S3Store({ ...optionsFor(newPrefix()), secretAccessKey: secret, logger });
  const e = await refused.open().catch((e) => e);
  assert.ok(e instanceof Unavailable && e instanceof S3Error, String(e));
  assert.match(e.message, /^S3 answered 403 SignatureDoesNotMatch .* s3:\/\/mipserver-test\//);
  assert.equal(e.status, 403);
  assert.ok(!e.message.includes(secret));
  const put = await refused.put("compiled/aa/a-r", new TextEncoder().encode("x"));
  assert.equal(put.uncached, true);
  await refused.put("compiled/aa/b-r", new TextEncoder().encode("y"));
  assert.equal(refused.stats().writeErrors, 2);
  assert.equal(lines.filter((l) => l.startsWith("warn")).length, 1, "logged once per cause");
  assert.ok(!lines.join("\n").includes(secret));
  assert.equal(await refused.writable(), false);

  const dead = new S3Store({ ...optionsFor(newPrefix()), endpoint: `http://127.0.0.1:${freePort()}`, retries: 1 });
  const unreachable = await dead.open().catch((e) => e);
  assert.ok(unreachable instanceof Unavailable, String(unreachable));
  assert.match(unreachable.message, /^S3 store unreachable: .*\(GET s3:\/\/mipserver-test\/\)$/);
  await assert.rejects(dead.get("named/x/6/_/latest.json"), Unavailable);
  assert.equal((await dead.put("named/x/6/_/latest.json", new Uint8Array())).uncached, true);

  const missing = new S3Store({ ...optionsFor(newPrefix()), bucket: "no-such-bucket" });
  await assert.rejects(
    missing.open(),
    (e: Error) => e instanceof Unavailable && /^S3 bucket no-such-bucket does not exist at http:/.test(e.message),
  );
});

Deno.test("s3: a content file whose bytes do not match its name is removed when read", async () => {
  const prefix = newPrefix();
  try {
    const store = new S3Store(optionsFor(prefix));
    await store.open();
    await store.client.request("PUT", `${prefix}files/ab/abcd1234`, { body: new TextEncoder().encode("damaged") });
    assert.equal(await store.has("files/ab/abcd1234"), true);
    assert.equal(await store.get("files/ab/abcd1234"), undefined);
    assert.equal(await store.has("files/ab/abcd1234"), false);
  } finally {
    await emptyPrefix(prefix);
  }
});

Deno.test("s3: open sweeps old probes and, with a size limit, counts the counted objects and applies a lowered one", async () => {
  const prefix = newPrefix();
  try {
    const first = new S3Store(optionsFor(prefix));
    await first.open();
    await first.put("compiled/aa/a-r", new TextEncoder().encode("a".repeat(1_000)));
    await new Promise((r) => setTimeout(r, 1_100)); // Last-Modified is in whole seconds
    await first.put("compiled/bb/b-r", new TextEncoder().encode("b".repeat(1_000)));
    await first.put("named/x/6/_/latest.json", new TextEncoder().encode("{}"));
    await first.client.request("PUT", `${prefix}tmp/probe-left`, { body: new TextEncoder().encode("ok") });
    // Without a size limit nothing is counted: no listing at open, no key per object in memory.
    assert.deepEqual(first.stats(), { sizeBytes: 0, objects: 0, evictions: 0, maxBytes: null, writeErrors: 0 });

    const fresh = new S3Store(optionsFor(prefix));
    assert.equal(await fresh.open(), 0, "a recent probe may be another replica's");
    assert.equal(fresh.stats().objects, 0);
    const later = new S3Store({ ...optionsFor(prefix), maxBytes: 1_500, now: () => Date.now() + 3_600_000 });
    assert.equal(await later.open(), 1, "the old probe went");
    assert.deepEqual(later.stats(), { sizeBytes: 1_000, objects: 1, evictions: 1, maxBytes: 1_500, writeErrors: 0 });
    assert.equal(await later.has("compiled/aa/a-r"), false, "the least recently modified went");
    assert.equal(await later.has("compiled/bb/b-r"), true);
    assert.deepEqual(await later.usage(), { bytes: 1_002, objects: 2 });
  } finally {
    await emptyPrefix(prefix);
  }
});

Deno.test("s3 fixture: stopping leaves no weed process behind", async () => {
  const s = running();
  await s.stop();
  // ps (not /proc, which Deno reads only with --allow-all): no line, or a zombie's, is a process that is gone.
  const ps = await new Deno.Command("ps", { args: ["-o", "stat=", "-p", String(s.pid)], stdout: "piped" }).output();
  const state = new TextDecoder().decode(ps.stdout).trim();
  assert.ok(state === "" || state.startsWith("Z"), `weed (pid ${s.pid}) still runs: ${state}`);
  await assert.rejects(Deno.stat(s.dir), Deno.errors.NotFound);
});
