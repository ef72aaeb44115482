/**
 * `mipserver import`: reads a bundle as a stream, checks every entry against the bundle manifest (expected, once,
 * its size, its sha256) while staging it in the cache's `tmp/`, checks that the bundle holds everything its manifests
 * point at, and only then moves the objects into place: files, mirrored files and manifests first, the merged
 * `bundle/index.json` next, and `bundle/catalog.json` last, which is what makes a running server serve them. A
 * truncated, tampered or foreign bundle is refused with the entry that failed, and the cache is left as it was: the
 * staging folder is removed. (A failure of the disk itself while objects are moved into place, after every check
 * passed, can leave some of them moved; the catalog, written last, is then unchanged, so nothing new is served.)
 * @module
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { dirname, join } from "node:path";
import { Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import { createTarDecoder } from "modern-tar";
import { joinChunks } from "../bytes.ts";
import { TmpOwner } from "../cache/tmp_owner.ts";
import { BASE_PLACEHOLDER } from "../packages/locations.ts";
import { REPO_HOST_ALTERNATIVES } from "../packages/sources/registry.ts";
import { type BundleManifest, type BundleObject, MANIFEST_ENTRY, MANIFEST_MAX, parseManifest } from "./format.ts";
import { type Catalog, LAYER, readCatalog } from "../packages/layer.ts";
import { MemoryPacer } from "./memory.ts";
import { mirrorKey } from "./walk.ts";
import { fileKey } from "../cache/keys.ts";

/** A mirror path a dependency names: a code host's (`/github/...`, ...) or `/url/...`, perhaps under a profile. */
const MIRROR_PATH = new RegExp(`^(/t/[^/]+)?/(${REPO_HOST_ALTERNATIVES}|url)/`);

/** A bundle that was refused; nothing was changed. */
export class BundleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BundleError";
  }
}

/** What an import did. */
export interface ImportResult {
  objects: number;
  /** Files that were not in the cache before. */
  newFiles: number;
  manifests: number;
  packages: string[];
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

/** Writes `bytes` to `path` atomically: a temp file in `tmpDir`, fsynced, renamed into place. */
async function writeAtomic(owner: TmpOwner, tmpDir: string, path: string, bytes: Uint8Array): Promise<void> {
  const tmp = join(tmpDir, owner.name("part"));
  try {
    await Deno.writeFile(tmp, bytes, { createNew: true, mode: 0o644 });
    const file = await Deno.open(tmp, { read: true, write: true });
    await file.sync();
    file.close();
    await Deno.mkdir(dirname(path), { recursive: true });
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
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

/** Imports the bundle at `bundlePath` into the cache folder `root`. Throws a {@linkcode BundleError} when refused. */
export async function importBundle(root: string, bundlePath: string): Promise<ImportResult> {
  const tmpRoot = join(root, "tmp");
  const madeTmp = !(await exists(tmpRoot));
  const madeRoot = !(await exists(root));
  await Deno.mkdir(tmpRoot, { recursive: true });
  // Temp names carry this process's claim, so a server opening the cache meanwhile leaves them alone.
  const owner = await TmpOwner.claim(root);
  const staging = join(tmpRoot, owner.name("import"));
  await Deno.mkdir(staging);
  let committed = false;
  try {
    const { manifest, staged, served, index } = await stage(bundlePath, staging);
    checkComplete(manifest, served);
    // Verified: move into place. Manifests and files first, the catalog last (that is what gets them served).
    let newFiles = 0;
    for (const object of manifest.objects) {
      const from = staged.get(object.path)!;
      if (object.path.startsWith("files/")) {
        const to = join(root, object.path);
        if (await exists(to)) continue;
        await Deno.mkdir(dirname(to), { recursive: true });
        await Deno.rename(from, to);
        newFiles++;
      } else if (object.path.startsWith("mirror/")) {
        const to = join(root, object.path);
        await Deno.mkdir(dirname(to), { recursive: true });
        await Deno.rename(from, to);
      } else if (object.path.startsWith("served/")) {
        const to = join(root, LAYER.served(object.path.slice("served/".length)));
        await Deno.mkdir(dirname(to), { recursive: true });
        await Deno.rename(from, to);
      }
    }
    committed = true;
    const before = await readCatalog(root);
    const names = new Set<string>();
    let imported: Record<string, unknown>[] = [];
    if (index) {
      imported = JSON.parse(dec.decode(index)).packages ?? [];
      for (const p of imported) names.add(String(p.name));
    }
    let kept: Record<string, unknown>[] = [];
    try {
      kept = JSON.parse(await Deno.readTextFile(join(root, LAYER.index))).packages ?? [];
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    const packages = [...kept.filter((p) => !names.has(String(p.name))), ...imported]
      .sort((a, b) => (String(a.name) < String(b.name) ? -1 : String(a.name) > String(b.name) ? 1 : 0));
    await writeAtomic(
      owner,
      tmpRoot,
      join(root, LAYER.index),
      enc.encode(JSON.stringify({ v: 2, updated: 0, packages })),
    );
    const catalog: Catalog = {
      served: [
        ...new Set([
          ...before.served,
          ...[...served.keys()].filter((p) => p.startsWith("served/")).map((p) => p.slice(7)),
        ]),
      ].sort(),
      profiles: [...new Set([...before.profiles, ...manifest.profiles])].sort(),
    };
    await writeAtomic(owner, tmpRoot, join(root, LAYER.catalog), enc.encode(JSON.stringify(catalog)));
    return {
      objects: manifest.objects.length,
      newFiles,
      manifests: served.size,
      packages: manifest.packages,
    };
  } finally {
    await Deno.remove(staging, { recursive: true }).catch(() => {});
    await owner.release();
    if (!committed) {
      if (madeTmp) await Deno.remove(tmpRoot, { recursive: true }).catch(() => {});
      if (madeRoot) await Deno.remove(root, { recursive: true }).catch(() => {});
    }
  }
}

/** Reads and verifies every entry, staging objects in `staging`; nothing outside it is written. */
async function stage(bundlePath: string, staging: string): Promise<{
  manifest: BundleManifest;
  staged: Map<string, string>;
  served: Map<string, Uint8Array>;
  index?: Uint8Array;
}> {
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
  let manifest: BundleManifest | undefined;
  let expected = new Map<string, BundleObject>();
  const staged = new Map<string, string>();
  const served = new Map<string, Uint8Array>();
  let index: Uint8Array | undefined;
  let current = MANIFEST_ENTRY;
  const pacer = new MemoryPacer();
  try {
    for await (const entry of entries) {
      const name = entry.header.name;
      current = name;
      if (!manifest) {
        if (name !== MANIFEST_ENTRY) {
          throw new BundleError(
            `Not a mipserver bundle: its first entry is ${JSON.stringify(name)}, not ${MANIFEST_ENTRY}`,
          );
        }
        try {
          manifest = parseManifest(await readAll(entry.body, MANIFEST_MAX, MANIFEST_ENTRY));
        } catch (e) {
          throw new BundleError((e as Error).message);
        }
        expected = new Map(manifest.objects.map((o) => [o.path, o]));
        continue;
      }
      const object = expected.get(name);
      if (!object) {
        await entry.body.cancel();
        throw new BundleError(
          staged.has(name) ? `Entry ${name} appears twice` : `Entry ${name} is not listed in ${MANIFEST_ENTRY}`,
        );
      }
      if ((entry.header.type ?? "file") !== "file") throw new BundleError(`Entry ${name} is not a plain file`);
      if (entry.header.size !== object.size) {
        throw new BundleError(`Entry ${name} is ${entry.header.size} bytes; ${MANIFEST_ENTRY} says ${object.size}`);
      }
      const hash = createHash("sha256");
      const keep = !name.startsWith("files/") && !name.startsWith("mirror/");
      const chunks: Uint8Array[] = [];
      const path = join(staging, String(staged.size));
      const out = await Deno.open(path, { write: true, createNew: true, mode: 0o644 });
      let size = 0;
      try {
        for await (const chunk of entry.body) {
          size += chunk.byteLength;
          if (size > object.size) throw new BundleError(`Entry ${name} is longer than ${MANIFEST_ENTRY} says`);
          hash.update(chunk);
          pacer.add(chunk.byteLength);
          if (keep) chunks.push(chunk.slice());
          let off = 0;
          while (off < chunk.byteLength) off += await out.write(chunk.subarray(off));
        }
        await out.syncData();
      } finally {
        out.close();
      }
      const sha256 = hash.digest("hex");
      if (size !== object.size) throw new BundleError(`Entry ${name} is truncated (${size} of ${object.size} bytes)`);
      if (sha256 !== object.sha256) {
        throw new BundleError(
          `Entry ${name} does not match its sha256: ${MANIFEST_ENTRY} says ${object.sha256}, the content is ${sha256}`,
        );
      }
      staged.set(name, path);
      expected.delete(name);
      if (keep) {
        const bytes = joinChunks(chunks, size);
        if (name === "index.json") index = bytes;
        else served.set(name, bytes);
      }
    }
  } catch (e) {
    if (e instanceof BundleError) throw e;
    const where = manifest ? ` (at entry ${current})` : "";
    throw new BundleError(`Cannot read the bundle${where}: ${(e as Error).message}`);
  }
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
  return { manifest, staged, served, index };
}
