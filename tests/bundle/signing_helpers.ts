/** Shared by the signing tests: the CLI as a subprocess, keys made by keygen, and openssl's check of a signature. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { runTool } from "../e2e/tools.ts";
import { tempDir } from "../helpers.ts";

/** Runs `mipserver ARGS` as a subprocess (stdout and stderr apart, as a person sees them). */
export async function mipserver(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const root = new URL("../../", import.meta.url).pathname;
  return await runTool(Deno.execPath(), ["run", "-A", "--frozen", `${root}src/main.ts`, ...args], {
    env: { NO_COLOR: "1" },
  });
}

/** A new key made by `mipserver keygen` in a new folder: its path and public key line. */
export async function keygen(): Promise<{ path: string; publicKey: string }> {
  const path = join(tempDir("mipserver-keys-"), "office.key");
  const r = await mipserver("keygen", "--out", path);
  assert.equal(r.code, 0, r.stderr);
  return { path, publicKey: r.stdout.trim() };
}

/** Checks with openssl that `file` (a signed lock or bundle manifest) is signed by `publicKey`, as the docs say. */
export async function opensslVerifies(file: string, publicKey: string): Promise<boolean> {
  const dir = tempDir("mipserver-openssl-");
  // The documented steps: the public key as PEM (the DER prefix of an Ed25519 key is MCowBQYDK2VwAyEA in base64),
  // the signed bytes (the document with the signature's value emptied), the signature's 64 bytes.
  const script = [
    "set -eu",
    `printf -- '-----BEGIN PUBLIC KEY-----\\nMCowBQYDK2VwAyEA%s\\n-----END PUBLIC KEY-----\\n' "${
      publicKey.replace("ed25519:", "")
    }" > office.pub.pem`,
    `sed -E '2s/"value":"[^"]*"/"value":""/' "${file}" > signed.bin`,
    `sed -nE '2s/.*"value":"([^"]*)".*/\\1/p' "${file}" | base64 -d > signature.bin`,
    "openssl pkeyutl -verify -pubin -inkey office.pub.pem -rawin -in signed.bin -sigfile signature.bin",
  ].join("\n");
  const r = await runTool("bash", ["-c", script], { cwd: dir });
  if (r.code === 0) assert.match(r.stdout, /Signature Verified Successfully/);
  return r.code === 0;
}
