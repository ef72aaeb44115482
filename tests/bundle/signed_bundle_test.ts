/**
 * Signed bundles: `export --sign` signs `mipserver-bundle.json` (every object's sha256), openssl verifies it; `import`
 * checks the signature against `policy.trusted_keys` before it writes anything (before the store is even opened):
 * unsigned (with `policy.require_signed`), signed by a key not trusted, re-signed by one, one flipped byte in the
 * object list or in an object, each refused with the reason and exit code 1, the cache folder unchanged file by file.
 * Two trusted keys (old and new) are both accepted; without `require_signed` an unsigned bundle imports with a warning.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { packTar, unpackTar } from "modern-tar";
import { importBundle } from "../../src/bundle/import.ts";
import { readSigningKey, signDocument } from "../../src/packages/signing.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { standardIndex } from "../fixtures/index_fixture.ts";
import { openDisk, tempDir } from "../helpers.ts";
import { mpyCrossPath } from "../e2e/tools.ts";
import { configFile, tree } from "./helpers.ts";
import { keygen, mipserver, opensslVerifies } from "./signing_helpers.ts";

type Entry = { header: { name: string; size: number }; data?: Uint8Array };
const enc = new TextEncoder();
const dec = new TextDecoder();

/** Rewrites a bundle's tar entries with `change` and writes it gzipped to a new file. */
async function rewrite(bundle: string, change: (entries: Entry[]) => void | Promise<void>): Promise<string> {
  const entries = await unpackTar(gunzipSync(Deno.readFileSync(bundle))) as Entry[];
  await change(entries);
  const tar = await packTar(entries.map((e) => ({ header: e.header, body: e.data })));
  const out = join(tempDir("mipserver-tampered-"), "bundle.tar.gz");
  Deno.writeFileSync(out, gzipSync(tar));
  return out;
}

/** Replaces entry `i`'s bytes. */
function put(entries: Entry[], i: number, data: Uint8Array): void {
  entries[i] = { header: { ...entries[i].header, size: data.length }, data };
}

Deno.test("import checks a bundle's signature before it writes anything; refusals say why and change nothing", async () => {
  const idx = await standardIndex();
  const index = new FakeUpstream(idx.root).start();
  const [oldKey, newKey, stranger] = [await keygen(), await keygen(), await keygen()];
  const dir = tempDir("mipserver-bundles-");
  const bundle = (name: string) => join(dir, name);
  try {
    const office = configFile({
      cache: { dir: tempDir("mipserver-office-") },
      upstreams: { index: index.url, retries: 0 },
      mpy_cross: { path: mpyCrossPath() },
    });
    assert.equal((await mipserver("warm", "--config", office, "hello", "mathx")).code, 0);
    for (const [name, key] of [["old", oldKey], ["new", newKey], ["stranger", stranger], ["unsigned", null]] as const) {
      const r = await mipserver(
        "export",
        "--config",
        office,
        "--output",
        bundle(`${name}.tar.gz`),
        ...(key ? ["--sign", key.path] : []),
      );
      assert.equal(r.code, 0, r.stderr);
      if (key) assert.match(r.stdout, /Exported \d+ objects .*, signed with key [0-9a-f]{16}/);
    }
  } finally {
    await index.stop();
  }

  // openssl verifies the manifest's signature from the documented bytes.
  const manifest = join(dir, "mipserver-bundle.json");
  const entries = await unpackTar(gunzipSync(Deno.readFileSync(bundle("old.tar.gz"))));
  assert.equal(entries[0].header.name, "mipserver-bundle.json");
  Deno.writeFileSync(manifest, entries[0].data!);
  assert.equal(await opensslVerifies(manifest, oldKey.publicKey), true);
  assert.equal(await opensslVerifies(manifest, newKey.publicKey), false);

  const fileIndex = (list: Entry[]) => list.findIndex((e) => e.header.name.startsWith("files/"));
  const objectList = await rewrite(bundle("old.tar.gz"), (list) => {
    // One hex digit of one sha256 in the signed list of objects.
    const text = dec.decode(list[0].data!);
    put(list, 0, enc.encode(text.replace(/"sha256": "([0-9a-f])/, (_, c) => `"sha256": "${c === "0" ? "1" : "0"}`)));
  });
  const object = await rewrite(bundle("old.tar.gz"), (list) => {
    const data = list[fileIndex(list)].data!.slice();
    data[Math.floor(data.length / 2)] ^= 0x01;
    put(list, fileIndex(list), data);
  });
  const strangerKey = await readSigningKey(stranger.path);
  /** An object replaced and the list made to match it (size, sha256); the signature line as `sign` leaves it. */
  const swapObject = (sign: (unsigned: string, signed: string) => Promise<string>) =>
    rewrite(bundle("old.tar.gz"), async (list) => {
      const i = fileIndex(list);
      const data = enc.encode("print('pwned')\n");
      const signed = dec.decode(list[0].data!);
      const lines = signed.split("\n");
      const doc = JSON.parse(lines.filter((_, n) => n !== 1).join("\n"));
      const listed = doc.objects.find((o: { path: string }) => o.path === list[i].header.name);
      const sha = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
      listed.size = data.length;
      listed.sha256 = list[i].header.name.slice(9) +
        Array.from(sha, (b) => b.toString(16).padStart(2, "0")).join("").slice(list[i].header.name.length - 9);
      put(list, i, data);
      put(list, 0, enc.encode(await sign(JSON.stringify(doc, null, 1) + "\n", signed)));
    });
  // Signed again by a key nobody trusts.
  const resigned = await swapObject((unsigned) => signDocument(unsigned, strangerKey));
  // The old key's signature line kept.
  const kept = await swapObject((unsigned, signed) => {
    const line = signed.split("\n")[1];
    return Promise.resolve(unsigned.replace("{\n", `{\n${line}\n`));
  });

  const trusted = [oldKey.publicKey, newKey.publicKey];
  const strict = { trusted_keys: trusted, require_signed: true };
  const ship = tempDir("mipserver-ship-");
  const shipConfig = (policy: Record<string, unknown>) => configFile({ cache: { dir: ship }, policy });
  // A first good import, so refusals are compared against a cache that holds something.
  const first = await mipserver("import", "--config", shipConfig(strict), bundle("old.tar.gz"));
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stdout, /Imported .*; signed by key [0-9a-f]{16} at \d{4}-\d\d-\d\dT/);

  const cases: [string, string, Record<string, unknown>, RegExp][] = [
    ["unsigned", bundle("unsigned.tar.gz"), strict, /mipserver-bundle\.json is unsigned, and policy\.require_signed/],
    ["untrusted key", bundle("stranger.tar.gz"), strict, /is signed by an untrusted key: [0-9a-f]{16}/],
    ["re-signed by an untrusted key", resigned, strict, /is signed by an untrusted key/],
    ["a byte of the object list", objectList, strict, /is tampered: its signature by key .* does not match its bytes/],
    [
      "a byte of an object",
      object,
      strict,
      /The bundle is tampered \(changed after it was signed by key [0-9a-f]{16}\): Entry files\/.* does not match its sha256/,
    ],
    ["an object and the list changed to match", kept, strict, /is tampered: its signature by key/],
    [
      "untrusted, without require_signed",
      bundle("stranger.tar.gz"),
      { trusted_keys: [newKey.publicKey] },
      /untrusted key/,
    ],
    ["tampered, no trusted keys", objectList, {}, /is tampered/],
  ];
  for (const [what, file, policy, message] of cases) {
    const before = tree(ship);
    const r = await mipserver("import", "--config", shipConfig(policy), file);
    assert.equal(r.code, 1, `${what}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /mipserver: refused .*, nothing was changed: /, what);
    assert.match(r.stderr, message, what);
    assert.deepEqual(tree(ship), before, `${what}: the cache changed`);
  }
  // The store is not even opened: a cache folder that does not exist yet still does not.
  const none = join(tempDir("mipserver-ship-"), "cache");
  const trust = { keys: trusted, required: true };
  for (const file of [bundle("unsigned.tar.gz"), bundle("stranger.tar.gz"), objectList, object]) {
    await assert.rejects(importBundle(() => openDisk(none), file, { trust }));
    assert.throws(() => Deno.statSync(none), Deno.errors.NotFound);
  }

  // Old and new keys both trusted: both import. Without require_signed an unsigned bundle imports, warned.
  const byNew = await mipserver("import", "--config", shipConfig(strict), bundle("new.tar.gz"));
  assert.equal(byNew.code, 0, byNew.stderr);
  const unsigned = await mipserver(
    "import",
    "--config",
    shipConfig({ trusted_keys: trusted }),
    bundle("unsigned.tar.gz"),
  );
  assert.equal(unsigned.code, 0, unsigned.stderr);
  assert.match(unsigned.stderr, /warning: mipserver-bundle\.json is unsigned; accepted because policy\.require_signed/);
  assert.match(unsigned.stdout, /; unsigned$/m);
});
