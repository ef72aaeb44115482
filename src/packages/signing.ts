/**
 * Signed documents: a lock file and a bundle's `mipserver-bundle.json` signed with an Ed25519 key (WebCrypto), and
 * checked against `policy.trusted_keys` before anything they name is used.
 *
 * A signed document is the unsigned one with one line added as its second line, the `signature` member, written on
 * one line with its members in this order (`value` last):
 *
 * ```
 * {
 *   "signature": {"key_id":"<16 hex>","key":"ed25519:<base64>","signed_at":"<UTC, ISO 8601>","value":"<base64>"},
 *   "lock": 1,
 *   ...
 * ```
 *
 * `value` is the Ed25519 signature of the whole document's bytes (UTF-8, as stored) with `value` set to the empty
 * string (`"value":""`). So it covers every byte of the document, the key, the key id and the time of signing
 * included: one changed byte anywhere makes it fail. The key id is the first 16 hex characters of the sha256 of the
 * key's 32 raw bytes. Keys are PKCS#8 PEM files (`mipserver keygen`, or `openssl genpkey -algorithm ed25519`);
 * public keys are `ed25519:<base64 of the 32 raw bytes>`.
 * @module
 */
import { sha256Hex } from "../store/hash.ts";

/** How a public key is written: `ed25519:` and the base64 of its 32 raw bytes. */
export const KEY_PREFIX = "ed25519:";
const PUBLIC_KEY = /^ed25519:([A-Za-z0-9+/]{43}=)$/;
/** The signature line: its indentation and the one-line object. */
const SIGNATURE_LINE = /^( {1,8})"signature": (\{[^\n]*\}),$/;
const SIGNATURE_VALUE = /"value":"([A-Za-z0-9+/]{86}==)"\},$/;
const KEY_ID = /^[0-9a-f]{16}$/;
const TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$/;

const enc = new TextEncoder();

/** The `signature` member of a signed document. */
export interface Signature {
  key_id: string;
  key: string;
  signed_at: string;
  value: string;
}

/** Who signed a document and when, once its signature was checked. */
export interface Signer {
  keyId: string;
  key: string;
  /** When it was signed (ISO 8601, UTC), as the signature says. */
  signedAt: string;
}

/** What a document is checked against: `policy.trusted_keys` and `policy.require_signed`. */
export interface Trust {
  keys: readonly string[];
  required: boolean;
}

/** Why a document was refused: unsigned, signed by a key not trusted, or changed after signing. */
export type Refusal = "unsigned" | "untrusted" | "tampered";

/** A document whose signature does not let it be used; `reason` says which of the three. */
export class SignatureError extends Error {
  constructor(readonly reason: Refusal, message: string) {
    super(message);
    this.name = "SignatureError";
  }
}

/** A private key to sign with, its public key and key id. */
export interface SigningKey {
  privateKey: CryptoKey;
  /** `ed25519:<base64>`. */
  publicKey: string;
  keyId: string;
}

const base64 = (bytes: Uint8Array) => btoa(String.fromCharCode(...bytes));
const unbase64 = (text: string): Uint8Array<ArrayBuffer> => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));

/** The 32 raw bytes of `ed25519:<base64>`; throws when it is not one. */
export function publicKeyBytes(key: string): Uint8Array<ArrayBuffer> {
  const m = PUBLIC_KEY.exec(key.trim());
  const bytes = m ? unbase64(m[1]) : undefined;
  if (!bytes || bytes.length !== 32) throw new Error(`Not an Ed25519 public key (ed25519:<base64>): ${key}`);
  return bytes;
}

/** The key id of a public key: the first 16 hex characters of the sha256 of its 32 raw bytes. */
export async function keyIdOf(key: string): Promise<string> {
  return (await sha256Hex(publicKeyBytes(key))).slice(0, 16);
}

/** A PEM block's bytes (the base64 between its BEGIN and END lines). */
function pemBytes(pem: string, label: string): Uint8Array<ArrayBuffer> | undefined {
  const m = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+)-----END ${label}-----`).exec(pem);
  if (!m) return undefined;
  try {
    return unbase64(m[1].replace(/\s+/g, ""));
  } catch {
    return undefined;
  }
}

function pem(label: string, bytes: Uint8Array): string {
  const lines = base64(bytes).match(/.{1,64}/g)!;
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

/** A key from PKCS#8 DER: throws a message a person reads when it is not an Ed25519 private key. */
async function keyFromPkcs8(der: Uint8Array<ArrayBuffer>, where: string): Promise<SigningKey> {
  let privateKey: CryptoKey;
  try {
    privateKey = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, true, ["sign"]);
  } catch (e) {
    throw new Error(`${where} is not an Ed25519 private key (PKCS#8): ${(e as Error).message}`);
  }
  const { x } = await crypto.subtle.exportKey("jwk", privateKey);
  const raw = unbase64(x!.replace(/-/g, "+").replace(/_/g, "/") + "=");
  const publicKey = KEY_PREFIX + base64(raw);
  // Only the signing use stays with the key from here on.
  privateKey = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, false, ["sign"]);
  return { privateKey, publicKey, keyId: await keyIdOf(publicKey) };
}

/** A new Ed25519 key: its PKCS#8 PEM text, public key and key id. */
export async function generateKey(): Promise<{ pem: string; publicKey: string; keyId: string }> {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]) as CryptoKeyPair;
  const der = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
  const publicKey = KEY_PREFIX + base64(new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey)));
  return { pem: pem("PRIVATE KEY", der), publicKey, keyId: await keyIdOf(publicKey) };
}

/**
 * Reads a private key file (PKCS#8 PEM, as `mipserver keygen` or `openssl genpkey -algorithm ed25519` write it).
 * Throws an Error naming the file and what is wrong with it.
 */
export async function readSigningKey(path: string): Promise<SigningKey> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`Cannot read the key ${path}: ${(e as Error).message}`);
  }
  if (text.includes("-----BEGIN ENCRYPTED PRIVATE KEY-----")) {
    throw new Error(`The key ${path} is encrypted; give an unencrypted PKCS#8 key (openssl pkey -in KEY -out PLAIN)`);
  }
  const der = pemBytes(text, "PRIVATE KEY");
  if (!der) throw new Error(`${path} is not a PEM private key (-----BEGIN PRIVATE KEY-----)`);
  return await keyFromPkcs8(der, path);
}

/** The signature line of `text` (its second line), parsed, or undefined when there is none. */
function signatureLine(text: string): { indent: string; signature: unknown; line: string } | undefined {
  const first = text.indexOf("\n");
  const second = first < 0 ? -1 : text.indexOf("\n", first + 1);
  if (second < 0) return undefined;
  const line = text.slice(first + 1, second);
  const m = SIGNATURE_LINE.exec(line);
  if (!m) return undefined;
  try {
    return { indent: m[1], signature: JSON.parse(m[2]), line };
  } catch {
    return { indent: m[1], signature: undefined, line };
  }
}

/** The bytes a signature is made over: `text` with the signature's value emptied. */
function signedBytes(text: string, line: string): Uint8Array<ArrayBuffer> {
  const first = text.indexOf("\n");
  const emptied = line.replace(SIGNATURE_VALUE, '"value":""},');
  return enc.encode(text.slice(0, first + 1) + emptied + text.slice(first + 1 + line.length));
}

/**
 * Signs `text` (an unsigned lock file or bundle manifest, `{` on its first line, members indented below): adds the
 * signature line after the first line. `now` is the time of signing.
 */
export async function signDocument(text: string, key: SigningKey, now: Date = new Date()): Promise<string> {
  const first = text.indexOf("\n");
  const indent = /^( +)"/.exec(text.slice(first + 1))?.[1];
  if (!text.startsWith("{\n") || !indent) throw new Error("Only a document with members on their own lines is signed");
  if (signatureLine(text)) throw new Error("The document is signed already");
  const signature: Signature = {
    key_id: key.keyId,
    key: key.publicKey,
    signed_at: now.toISOString(),
    value: "",
  };
  const unsigned = `{\n${indent}"signature": ${JSON.stringify(signature)},\n${text.slice(first + 1)}`;
  const value = new Uint8Array(await crypto.subtle.sign("Ed25519", key.privateKey, enc.encode(unsigned)));
  return unsigned.replace('"value":""},\n', `"value":"${base64(value)}"},\n`);
}

/** Whether `doc` (the parsed document) has a `signature` member. */
function claimsSignature(doc: unknown): boolean {
  return typeof doc === "object" && doc !== null && "signature" in doc;
}

/**
 * The signer of `text`, its signature checked against the key it names (not yet against any trust): undefined when
 * unsigned. Throws a {@linkcode SignatureError} (`tampered`) when the signature is malformed or does not match.
 * `what` names the document in messages.
 */
export async function signerOf(text: string, what: string): Promise<Signer | undefined> {
  const found = signatureLine(text);
  if (!found) {
    // Parsed only when it may claim a signature elsewhere (a bundle manifest can be tens of MB).
    if (!text.includes('"signature"')) return undefined;
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch {
      return undefined; // not JSON: the document's own reader says so
    }
    if (claimsSignature(doc)) {
      throw new SignatureError(
        "tampered",
        `${what} is tampered: its signature is not the second line, one line, as mipserver writes it`,
      );
    }
    return undefined;
  }
  const s = found.signature as Partial<Signature> | undefined;
  const value = SIGNATURE_VALUE.exec(found.line)?.[1];
  if (
    !s || typeof s !== "object" || typeof s.key !== "string" || !PUBLIC_KEY.test(s.key) ||
    typeof s.key_id !== "string" || !KEY_ID.test(s.key_id) || typeof s.signed_at !== "string" ||
    !TIME.test(s.signed_at) || s.value !== value || value === undefined ||
    Object.keys(s).join(",") !== "key_id,key,signed_at,value"
  ) {
    throw new SignatureError("tampered", `${what} is tampered: its signature line is malformed`);
  }
  if (await keyIdOf(s.key) !== s.key_id) {
    throw new SignatureError("tampered", `${what} is tampered: its key id ${s.key_id} is not that of its key`);
  }
  const publicKey = await crypto.subtle.importKey("raw", publicKeyBytes(s.key), { name: "Ed25519" }, false, [
    "verify",
  ]);
  const ok = await crypto.subtle.verify("Ed25519", publicKey, unbase64(value), signedBytes(text, found.line));
  if (!ok) {
    throw new SignatureError(
      "tampered",
      `${what} is tampered: its signature by key ${s.key_id} does not match its bytes (changed after signing)`,
    );
  }
  return { keyId: s.key_id, key: s.key, signedAt: s.signed_at };
}

/** What {@linkcode checkSignature} found: the signer (null: unsigned) and a warning to log, if any. */
export interface Checked {
  signer: Signer | null;
  warning?: string;
}

/**
 * Checks `text` against `trust` before it is used: a signature that does not match its bytes is refused (`tampered`),
 * as is a signature by a key `trust.keys` does not hold when it holds any or when signatures are required
 * (`untrusted`), and an unsigned document when they are required (`unsigned`). An unsigned document is otherwise
 * accepted, with a warning when trusted keys are configured; a signed one with a good signature and no trusted keys
 * configured is accepted with a warning that nobody's trust was checked.
 */
export async function checkSignature(text: string, trust: Trust, what: string): Promise<Checked> {
  const signer = await signerOf(text, what);
  if (!signer) {
    if (trust.required) {
      throw new SignatureError("unsigned", `${what} is unsigned, and policy.require_signed is true`);
    }
    return {
      signer: null,
      warning: trust.keys.length > 0
        ? `${what} is unsigned; accepted because policy.require_signed is false`
        : undefined,
    };
  }
  const trusted = await Promise.all(trust.keys.map((k) => keyIdOf(k)));
  if (trusted.includes(signer.keyId)) return { signer };
  if (trust.keys.length > 0 || trust.required) {
    throw new SignatureError(
      "untrusted",
      `${what} is signed by an untrusted key: ${signer.keyId} (${signer.key}) is not in policy.trusted_keys` +
        (trust.keys.length === 0 ? ", which is empty" : ` (trusted: ${trusted.join(", ")})`),
    );
  }
  return {
    signer,
    warning:
      `${what} is signed by key ${signer.keyId}, not checked against any trusted key (policy.trusted_keys is empty)`,
  };
}
