/**
 * `mipserver import`: reads a bundle as a stream and checks every entry against the bundle manifest (expected, once,
 * its size, its sha256) and that the bundle holds everything its manifests point at, writing nothing. Only then does
 * it open the store and read the bundle a second time, putting each object with the hash the manifest gives it (a
 * bundle changed between the two reads is refused at the first changed object): files, mirrored files and manifests
 * first, the merged index next, and the catalog last, which is what makes a running server serve them. A truncated,
 * tampered or foreign bundle is refused with the entry that failed and the store is not even opened. (A failure of the
 * store while objects are put, after every check passed, can leave some of them stored; the catalog, written last, is
 * then unchanged, so nothing new is served.) Objects are held in memory one at a time.
 * @module
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import { createTarDecoder } from "modern-tar";
import { joinChunks } from "../bytes.ts";
import { BASE_PLACEHOLDER } from "../packages/locations.ts";
import { REPO_HOST_ALTERNATIVES } from "../packages/sources/registry.ts";
import { type BundleManifest, type BundleObject, MANIFEST_ENTRY, MANIFEST_MAX, parseManifest } from "./format.ts";
import { type Catalog, readCatalog, readLayerIndex } from "../packages/layer.ts";
import { MemoryPacer } from "./memory.ts";
import { fileKey, LAYER, mirrorKey } from "../store/keys.ts";
import { HashMismatch, type ObjectStore } from "../store/object_store.ts";
import { checkSignature, type Refusal, SignatureError, type Signer, type Trust } from "../packages/signing.ts";

/** Without `policy.trusted_keys`: a signature is still checked against its own key, nothing is required. */
const NO_TRUST: Trust = { keys: [], required: false };

/** A mirror path a dependency names: a code host's (`/github/...`, ...) or `/url/...`, perhaps under a profile. */
const MIRROR_PATH = new RegExp(`^(/t/[^/]+)?/(${REPO_HOST_ALTERNATIVES}|url)/`);

/** A bundle that was refused; nothing was changed. `reason`: why its signature did not let it in, if that was why. */
export class BundleError extends Error {
  constructor(message: string, readonly reason?: Refusal) {
    super(message);
    this.name = "BundleError";
  }
}

/** How an import checks who made a bundle. */
export interface ImportOptions {
  /** `policy.trusted_keys` and `policy.require_signed` (default: none trusted, none required). */
  trust?: Trust;
  /** Told a warning (an unsigned bundle where keys are trusted, a signature no trusted key checked). */
  warn?: (text: string) => void;
}

/** What an import did. */
export interface ImportResult {
  objects: number;
  /** Files that were not in the cache before. */
  newFiles: number;
  manifests: number;
  packages: string[];
  /** Who signed the bundle (its signature checked before anything was written); null: unsigned. */
  signer: Signer | null;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Reads a stream to its end, refusing more than `max` bytes. */
async function readAll(stream: ReadableStream<Uint8Array>, max: number, what: string): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of stream) {
    size += chunk.byteLength;
    if (size > max) throw new BundleError(`${what} is larger than ${max} bytes`);
    chunks.push(chunk);
  }
  return joinChunks(chunks, size);
}

/** Checks that every file, manifest and mirrored file a bundled manifest points at is in the bundle. */
function checkComplete(manifest: BundleManifest, served: Map<string, Uint8Array>): void {
  const held = new Set(manifest.objects.map((o) => o.path));
  for (const [path, body] of served) {
    let doc: Record<string, unknown>;
    try {
      doc = JSON.parse(dec.decode(body));
    } catch (e) {
      throw new BundleError(`Entry ${path} is not JSON: ${(e as Error).message}`);
    }
    const need = (object: string, why: string) => {
      if (!held.has(object)) {
        throw new BundleError(`Bundle is incomplete: ${path} needs ${why}, which it does not hold`);
      }
    };
    for (const entry of Array.isArray(doc.hashes) ? doc.hashes : []) {
      const h = Array.isArray(entry) ? String(entry[1]) : "";
      need(fileKey(h), `file ${h}`);
    }
    if (!path.startsWith("served/")) continue;
    for (const dep of Array.isArray(doc.deps) ? doc.deps : []) {
      const target = Array.isArray(dep) ? String(dep[0]) : String(dep);
      if (!target.startsWith(BASE_PLACEHOLDER)) continue;
      const p = target.slice(BASE_PLACEHOLDER.length);
      if (/^(\/t\/[^/]+)?\/repo\//.test(p)) need(`served${p}`, p);
      else if (MIRROR_PATH.test(p)) need(mirrorKey(p.replace(/^\/t\/[^/]+/, "")), p);
    }
  }
}

/** Reads an entry's body to its end unused (the tar decoder moves on only once a body is read). */
async function drain(body: ReadableStream<Uint8Array>): Promise<void> {
  for await (const _ of body) { /* skipped */ }
}

/** What {@linkcode readEntries} tells of an entry. */
interface EntryHeader {
  name: string;
  size: number;
  type?: string;
}

/** The store key an object of the bundle goes to. */
function storeKey(path: string): string {
  return path.startsWith("served/") ? LAYER.served(path.slice("served/".length)) : path;
}

/**
 * Imports the bundle at `bundlePath` into the store `openStore` opens (only once the bundle is verified). Throws a
 * {@linkcode BundleError} when refused.
 */
export async function importBundle(
  openStore: () => Promise<ObjectStore>,
  bundlePath: string,
  options: ImportOptions = {},
): Promise<ImportResult> {
  const { manifest, served, index, signer } = await verify(bundlePath, options);
  checkComplete(manifest, served);
  const store = await openStore();
  // Verified: put into place. Manifests and files first, the catalog last (that is what gets them served).
  let newFiles = 0;
  await readEntries(bundlePath, async ({ name }, body, object) => {
    if (name === MANIFEST_ENTRY || name === "index.json") {
      await drain(body);
      return;
    }
    if (name.startsWith("files/") && await store.has(name)) {
      await drain(body);
      return;
    }
    const bytes = served.get(name) ?? await readAll(body, object!.size, `Entry ${name}`);
    if (served.has(name)) await drain(body);
    try {
      await store.put(storeKey(name), bytes, { sha256: object!.sha256 });
    } catch (e) {
      if (e instanceof HashMismatch) throw new BundleError(`Entry ${name} changed while it was imported`);
      throw e;
    }
    if (name.startsWith("files/")) newFiles++;
  }, manifest);
  const before = await readCatalog(store);
  const names = new Set<string>();
  let imported: Record<string, unknown>[] = [];
  if (index) {
    imported = JSON.parse(dec.decode(index)).packages ?? [];
    for (const p of imported) names.add(String(p.name));
  }
  const kept = (await readLayerIndex(store)) ?? [];
  const packages = [...kept.filter((p) => !names.has(String(p.name))), ...imported]
    .sort((a, b) => (String(a.name) < String(b.name) ? -1 : String(a.name) > String(b.name) ? 1 : 0));
  await store.put(LAYER.index, enc.encode(JSON.stringify({ v: 2, updated: 0, packages })));
  const catalog: Catalog = {
    served: [
      ...new Set([
        ...before.served,
        ...[...served.keys()].filter((p) => p.startsWith("served/")).map((p) => p.slice(7)),
      ]),
    ].sort(),
    profiles: [...new Set([...before.profiles, ...manifest.profiles])].sort(),
  };
  await store.put(LAYER.catalog, enc.encode(JSON.stringify(catalog)));
  await store.flush();
  return { objects: manifest.objects.length, newFiles, manifests: served.size, packages: manifest.packages, signer };
}

/**
 * Reads the bundle's entries in order, handing each (past the manifest) to `each` with its listed object. Errors
 * reading the bundle become {@linkcode BundleError}s naming the entry.
 */
async function readEntries(
  bundlePath: string,
  each: (header: EntryHeader, body: ReadableStream<Uint8Array>, object: BundleObject | undefined) => Promise<void>,
  known?: BundleManifest,
): Promise<void> {
  let file;
  try {
    file = await Deno.stat(bundlePath);
  } catch (e) {
    throw new BundleError(`Cannot read ${bundlePath}: ${(e as Error).message}`);
  }
  if (!file.isFile) throw new BundleError(`${bundlePath} is not a file`);
  const source = createReadStream(bundlePath);
  const gunzip = createGunzip();
  source.on("error", (e) => gunzip.destroy(e));
  source.pipe(gunzip);
  const entries = (Readable.toWeb(gunzip) as ReadableStream<Uint8Array>).pipeThrough(
    createTarDecoder({ strict: true }),
  );
  const listed = new Map(known?.objects.map((o) => [o.path, o]));
  let current: string | undefined;
  try {
    for await (const entry of entries) {
      current = entry.header.name;
      await each(entry.header, entry.body, listed.get(current));
    }
  } catch (e) {
    if (e instanceof BundleError) throw e;
    const where = current === undefined ? "" : ` (at entry ${current})`;
    throw new BundleError(`Cannot read the bundle${where}: ${(e as Error).message}`);
  }
}

/**
 * Reads and verifies every entry, writing nothing; keeps the manifests and the index. The manifest's signature is
 * checked as soon as it is read, before any other entry: a bundle it refuses is not read further.
 */
async function verify(bundlePath: string, options: ImportOptions): Promise<{
  manifest: BundleManifest;
  served: Map<string, Uint8Array>;
  index?: Uint8Array;
  signer: Signer | null;
}> {
  let manifest: BundleManifest | undefined;
  let signer: Signer | null = null;
  /** An entry that does not match the list a signature covers was changed after signing. */
  const changed = (message: string) =>
    signer
      ? new BundleError(
        `The bundle is tampered (changed after it was signed by key ${signer.keyId}): ${message}`,
        "tampered",
      )
      : new BundleError(message);
  let expected = new Map<string, BundleObject>();
  const seen = new Set<string>();
  const served = new Map<string, Uint8Array>();
  let index: Uint8Array | undefined;
  const pacer = new MemoryPacer();
  await readEntries(bundlePath, async (header, body) => {
    const name = header.name;
    if (!manifest) {
      if (name !== MANIFEST_ENTRY) {
        await body.cancel();
        throw new BundleError(
          `Not a mipserver bundle: its first entry is ${JSON.stringify(name)}, not ${MANIFEST_ENTRY}`,
        );
      }
      const bytes = await readAll(body, MANIFEST_MAX, MANIFEST_ENTRY);
      try {
        const checked = await checkSignature(dec.decode(bytes), options.trust ?? NO_TRUST, MANIFEST_ENTRY);
        signer = checked.signer;
        if (checked.warning) options.warn?.(checked.warning);
      } catch (e) {
        if (e instanceof SignatureError) throw new BundleError(e.message, e.reason);
        throw e;
      }
      try {
        manifest = parseManifest(bytes);
      } catch (e) {
        throw new BundleError((e as Error).message);
      }
      expected = new Map(manifest.objects.map((o) => [o.path, o]));
      return;
    }
    const object = expected.get(name);
    if (!object) {
      await body.cancel();
      throw changed(
        seen.has(name) ? `Entry ${name} appears twice` : `Entry ${name} is not listed in ${MANIFEST_ENTRY}`,
      );
    }
    if ((header.type ?? "file") !== "file") throw new BundleError(`Entry ${name} is not a plain file`);
    if (header.size !== object.size) {
      throw changed(`Entry ${name} is ${header.size} bytes; ${MANIFEST_ENTRY} says ${object.size}`);
    }
    const hash = createHash("sha256");
    const keep = !name.startsWith("files/") && !name.startsWith("mirror/");
    const chunks: Uint8Array[] = [];
    let size = 0;
    for await (const chunk of body) {
      size += chunk.byteLength;
      if (size > object.size) throw changed(`Entry ${name} is longer than ${MANIFEST_ENTRY} says`);
      hash.update(chunk);
      pacer.add(chunk.byteLength);
      if (keep) chunks.push(chunk.slice());
    }
    const sha256 = hash.digest("hex");
    if (size !== object.size) throw new BundleError(`Entry ${name} is truncated (${size} of ${object.size} bytes)`);
    if (sha256 !== object.sha256) {
      throw changed(
        `Entry ${name} does not match its sha256: ${MANIFEST_ENTRY} says ${object.sha256}, the content is ${sha256}`,
      );
    }
    seen.add(name);
    expected.delete(name);
    if (keep) {
      const bytes = joinChunks(chunks, size);
      if (name === "index.json") index = bytes;
      else served.set(name, bytes);
    }
  });
  if (!manifest) throw new BundleError(`Not a mipserver bundle: it has no ${MANIFEST_ENTRY}`);
  if (expected.size > 0) {
    const names = [...expected.keys()];
    throw new BundleError(
      `Bundle is incomplete: ${names.length} entr${
        names.length > 1 ? "ies" : "y"
      } listed in ${MANIFEST_ENTRY} missing (${names.slice(0, 5).join(", ")}${names.length > 5 ? ", ..." : ""})`,
    );
  }
  if (index) {
    try {
      JSON.parse(dec.decode(index));
    } catch (e) {
      throw new BundleError(`Entry index.json is not JSON: ${(e as Error).message}`);
    }
  }
  return { manifest, served, index, signer };
}
