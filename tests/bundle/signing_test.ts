/**
 * Keys and signatures (`packages/signing.ts`, `mipserver keygen`): keygen writes a PKCS#8 key with mode 0600 and never
 * over a file; a key made by openssl is read the same way; a signed document verifies with Debian's openssl from the
 * bytes the docs describe; one flipped byte anywhere, a re-signature by an untrusted key, an unsigned document where
 * signatures are required are each refused with the reason; two trusted keys (old and new) are both accepted.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { parseArgs } from "../../src/cli.ts";
import {
  checkSignature,
  keyIdOf,
  readSigningKey,
  SignatureError,
  signDocument,
  signerOf,
  type SigningKey,
} from "../../src/packages/signing.ts";
import { formatLock, type LockFile, parseLock } from "../../src/packages/lock_file.ts";
import { runTool } from "../e2e/tools.ts";
import { tempDir } from "../helpers.ts";
import { keygen, mipserver, opensslVerifies } from "./signing_helpers.ts";

const HASH = "9c0e".padEnd(64, "0");

/** A small lock as `mipserver lock` writes it. */
const SAMPLE_LOCK: LockFile = {
  lock: 1,
  mpy: "6",
  profiles: ["esp32"],
  roots: ["hello@1.0"],
  packages: {
    hello: {
      kind: "index",
      version: "1.0",
      ref: "1.0",
      deps: [],
      files: { py: { "hello.py": HASH }, "6": { "hello.mpy": HASH.replace("9c", "3b") } },
    },
  },
};

async function openssl(args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return await runTool("openssl", args, { cwd });
}

Deno.test("keygen writes a PKCS#8 key with mode 0600, prints its public key and id, and never overwrites a key", async () => {
  const dir = tempDir("mipserver-keys-");
  const path = join(dir, "office.key");
  const made = await mipserver("keygen", "--out", path);
  assert.equal(made.code, 0, made.stderr);
  const publicKey = made.stdout.trim();
  assert.match(publicKey, /^ed25519:[A-Za-z0-9+/]{43}=$/, "one line: ed25519:<base64 of 32 bytes>");
  const keyId = await keyIdOf(publicKey);
  assert.match(keyId, /^[0-9a-f]{16}$/);
  assert.match(made.stderr, new RegExp(`key id ${keyId}`));
  assert.equal(Deno.statSync(path).mode! & 0o777, 0o600);
  const pem = Deno.readTextFileSync(path);
  assert.match(pem, /^-----BEGIN PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+-----END PRIVATE KEY-----\n$/);

  // openssl reads it as an Ed25519 key with the same public key.
  const der = await runTool("bash", ["-c", `openssl pkey -in "${path}" -pubout -outform DER | tail -c 32 | base64`]);
  assert.equal(der.code, 0, der.stderr);
  assert.equal(`ed25519:${der.stdout.trim()}`, publicKey);

  const again = await mipserver("keygen", "--out", path);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /exists; keygen never overwrites a key/);
  assert.equal(Deno.readTextFileSync(path), pem, "the key is unchanged");

  const shown = await mipserver("keygen", "--from", path);
  assert.equal(shown.code, 0, shown.stderr);
  assert.equal(shown.stdout.trim(), publicKey);

  assert.deepEqual(parseArgs(["keygen"]), { kind: "error", message: "keygen needs --out FILE or --from FILE" });
  assert.deepEqual(parseArgs(["keygen", "--out", "a", "--from", "b"]), {
    kind: "error",
    message: "keygen needs --out FILE or --from FILE",
  });
  assert.deepEqual(parseArgs(["lock", "--sign", "k", "hello"]), {
    kind: "lock",
    configPath: undefined,
    overrides: {},
    specs: ["hello"],
    output: undefined,
    sign: "k",
  });
  assert.equal((parseArgs(["export", "--output", "b.tar.gz", "--sign", "k"]) as { sign?: string }).sign, "k");
});

Deno.test("a key made by openssl signs too; both kinds of signature verify with openssl pkeyutl from the documented bytes", async () => {
  const dir = tempDir("mipserver-keys-");
  const made = await openssl(["genpkey", "-algorithm", "ed25519", "-out", "openssl.key"], dir);
  assert.equal(made.code, 0, made.stderr);
  const fromOpenssl = await readSigningKey(join(dir, "openssl.key"));
  const shown = await mipserver("keygen", "--from", join(dir, "openssl.key"));
  assert.equal(shown.stdout.trim(), fromOpenssl.publicKey);
  const ours = await keygen();
  const fromKeygen = await readSigningKey(ours.path);
  assert.equal(fromKeygen.publicKey, ours.publicKey);

  for (const [key, name] of [[fromOpenssl, "openssl"], [fromKeygen, "keygen"]] as const) {
    const text = await signDocument(formatLock(SAMPLE_LOCK), key, new Date("2026-11-02T08:00:00Z"));
    const file = join(dir, `${name}.lock`);
    Deno.writeTextFileSync(file, text);
    assert.equal(await opensslVerifies(file, key.publicKey), true, `${name}: openssl verifies`);
    const lines = text.split("\n");
    assert.equal(
      lines[1],
      `  "signature": {"key_id":"${key.keyId}","key":"${key.publicKey}","signed_at":"2026-11-02T08:00:00.000Z",` +
        `"value":"${JSON.parse(`{${lines[1].replace(/,$/, "")}}`).signature.value}"},`,
    );
    assert.equal(lines.slice(2).join("\n"), formatLock(SAMPLE_LOCK).split("\n").slice(1).join("\n"));
    assert.deepEqual(parseLock(text, file), SAMPLE_LOCK, "a signed lock reads as the lock it signs");
    const signer = await signerOf(text, "lock");
    assert.deepEqual(signer, { keyId: key.keyId, key: key.publicKey, signedAt: "2026-11-02T08:00:00.000Z" });

    // One byte changed: in the packages, in the time of signing; openssl says no as well.
    const flipped = text.replace(HASH, HASH.replace("9c0e", "9c0f"));
    Deno.writeTextFileSync(file, flipped);
    assert.equal(await opensslVerifies(file, key.publicKey), false, `${name}: openssl refuses a changed byte`);
    await assert.rejects(signerOf(flipped, "The lock"), (e: SignatureError) => e.reason === "tampered");
    const later = text.replace("2026-11-02T08", "2026-11-03T08");
    await assert.rejects(signerOf(later, "The lock"), /tampered: its signature by key [0-9a-f]{16} does not match/);
  }

  // A key that is not an Ed25519 private key, or is encrypted, is refused with the reason.
  assert.equal((await openssl(["genpkey", "-algorithm", "ed448", "-out", "ed448.key"], dir)).code, 0);
  await assert.rejects(readSigningKey(join(dir, "ed448.key")), /is not an Ed25519 private key/);
  const enc = await openssl(
    ["pkey", "-in", "openssl.key", "-aes256", "-passout", "pass:secret", "-out", "encrypted.key"],
    dir,
  );
  assert.equal(enc.code, 0, enc.stderr);
  await assert.rejects(readSigningKey(join(dir, "encrypted.key")), /is encrypted/);
  await assert.rejects(readSigningKey(join(dir, "none.key")), /Cannot read the key/);
});

Deno.test("checkSignature: unsigned, untrusted, tampered are refused by name; old and new trusted keys both pass", async () => {
  const keys: SigningKey[] = [];
  for (let i = 0; i < 3; i++) keys.push(await readSigningKey((await keygen()).path));
  const [oldKey, newKey, stranger] = keys;
  const text = formatLock(SAMPLE_LOCK);
  const byOld = await signDocument(text, oldKey);
  const byNew = await signDocument(text, newKey);
  const byStranger = await signDocument(text, stranger);
  const rotation = { keys: [oldKey.publicKey, newKey.publicKey], required: true };

  assert.equal((await checkSignature(byOld, rotation, "L")).signer?.keyId, oldKey.keyId);
  assert.equal((await checkSignature(byNew, rotation, "L")).signer?.keyId, newKey.keyId);
  const refused = async (doc: string, trust: typeof rotation, reason: string, message: RegExp) => {
    await assert.rejects(checkSignature(doc, trust, "The lock file L"), (e: unknown) => {
      assert.ok(e instanceof SignatureError);
      assert.equal(e.reason, reason);
      assert.match(e.message, message);
      return true;
    });
  };
  await refused(byStranger, rotation, "untrusted", /L is signed by an untrusted key: [0-9a-f]{16} \(ed25519:/);
  await refused(text, rotation, "unsigned", /L is unsigned, and policy\.require_signed is true/);
  // Re-signed by a stranger after the signature line was taken off: still the stranger's.
  const stripped = byOld.split("\n").filter((_, i) => i !== 1).join("\n");
  assert.equal(stripped, text);
  await refused(await signDocument(stripped, stranger), rotation, "untrusted", /untrusted key/);
  // The signature's key swapped for a trusted one: the signature no longer matches.
  const swapped = byStranger.replace(stranger.publicKey, oldKey.publicKey).replace(stranger.keyId, oldKey.keyId);
  await refused(swapped, rotation, "tampered", /does not match its bytes/);
  // A key id that is not the key's, a signature moved off the second line, a malformed line.
  await refused(byOld.replace(oldKey.keyId, newKey.keyId), rotation, "tampered", /key id .* is not that of its key/);
  const moved = JSON.stringify(JSON.parse(byOld), null, 2);
  await refused(moved, rotation, "tampered", /not the second line/);
  await refused(byOld.replace('"signed_at":"', '"signed_at":"x'), rotation, "tampered", /malformed/);

  // Without require_signed: an unsigned one passes with a warning when keys are trusted; a signed one is still checked.
  const lenient = { keys: [newKey.publicKey], required: false };
  assert.match((await checkSignature(text, lenient, "L")).warning!, /L is unsigned; accepted because/);
  assert.equal((await checkSignature(text, { keys: [], required: false }, "L")).warning, undefined);
  await refused(byOld, lenient, "untrusted", /not in policy\.trusted_keys/);
  const flipped = byNew.replace(HASH, HASH.replace("9c0e", "9c0d"));
  await refused(flipped, lenient, "tampered", /changed after signing/);
  // No trusted keys at all: a good signature passes with a warning, a bad one is refused, require_signed refuses all.
  const none = { keys: [], required: false };
  assert.match((await checkSignature(byOld, none, "L")).warning!, /not checked against any trusted key/);
  await refused(flipped, none, "tampered", /does not match/);
  await refused(byOld, { keys: [], required: true }, "untrusted", /which is empty/);
});
