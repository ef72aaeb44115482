/**
 * The bundle format: a tar.gz whose first entry is `mipserver-bundle.json` (what the bundle holds, every object's size
 * and sha256), followed by the objects sorted by path:
 *
 * - `index.json`: the merged index, limited to the bundled packages;
 * - `served/<request path>`: manifests exactly as a device gets them, per mpy version and profile (`served/package/6/
 *   x/latest.json`, `served/t/esp32/package/6/x/1.0.json`, `served/repo/...`), with this server's base URL left as a
 *   placeholder;
 * - `files/<h2>/<hash>`: content-addressed files (named by their sha256 or its prefix);
 * - `mirror/...`: raw files of the code hosts' mirrors (`/github`, ...) and `/url` that dependencies point at.
 * @module
 */
import { isSafeKey } from "../store/keys.ts";
import { REPO_HOST_ALTERNATIVES } from "../packages/sources/registry.ts";

/** The format name in the bundle manifest. */
export const BUNDLE_FORMAT = "mipserver-bundle";
/** The format version this code writes and reads. */
export const BUNDLE_VERSION = 1;
/** The first entry of every bundle. */
export const MANIFEST_ENTRY = "mipserver-bundle.json";
/** Largest bundle manifest read (a bundle of 100,000 objects stays well below). */
export const MANIFEST_MAX = 64 * 1024 * 1024;
/** Largest object a bundle may hold (the upstream size cap is 16 MiB by default; compiled files stay below it). */
export const OBJECT_MAX = 256 * 1024 * 1024;
/** Largest manifest or index a bundle may hold (import keeps these in memory to check them). */
export const DOCUMENT_MAX = 16 * 1024 * 1024;
/** Timestamp of every tar entry, so two exports of the same cache are byte-identical. */
export const ENTRY_TIME = new Date(0);

/** One object of a bundle. */
export interface BundleObject {
  path: string;
  size: number;
  sha256: string;
}

/** `mipserver-bundle.json`. */
export interface BundleManifest {
  format: typeof BUNDLE_FORMAT;
  version: typeof BUNDLE_VERSION;
  /** The packages asked for (`name` or `name@version`), or `["*"]` for everything servable. */
  packages: string[];
  /** The target profiles the manifests were exported for. */
  profiles: string[];
  /** Every object, sorted by path. */
  objects: BundleObject[];
}

const SHA256 = /^[0-9a-f]{64}$/;
const FILE = /^files\/([0-9a-f]{2})\/([0-9a-f]{4,64})$/;
/** A mirrored raw file: under a code host's mirror or `/url/`. */
const MIRROR_OBJECT = new RegExp(`^mirror/(${REPO_HOST_ALTERNATIVES}|url)/.`);

/** Why an object path is not allowed in a bundle, or undefined when it is. */
export function pathProblem(path: string): string | undefined {
  if (!isSafeKey(path)) return "not a safe path";
  if (path === "index.json") return undefined;
  const file = FILE.exec(path);
  if (file) return file[2].startsWith(file[1]) ? undefined : "file not under its hash's first two characters";
  if (path.startsWith("files/")) return "not a file hash";
  if (/^served\/(t\/[^/]+\/)?(package|repo)\/.+\.json$/.test(path)) return undefined;
  if (MIRROR_OBJECT.test(path)) return undefined;
  return "not an object a bundle holds";
}

/** Parses and checks a bundle manifest; throws an Error saying what is wrong. */
export function parseManifest(bytes: Uint8Array): BundleManifest {
  let doc: BundleManifest;
  try {
    doc = JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new Error(`${MANIFEST_ENTRY} is not JSON: ${(e as Error).message}`);
  }
  if (doc?.format !== BUNDLE_FORMAT) throw new Error(`Not a mipserver bundle (${MANIFEST_ENTRY} has no format)`);
  if (doc.version !== BUNDLE_VERSION) {
    throw new Error(`Bundle format version ${doc.version} is not supported (this mipserver reads ${BUNDLE_VERSION})`);
  }
  if (!Array.isArray(doc.objects) || !Array.isArray(doc.packages) || !Array.isArray(doc.profiles)) {
    throw new Error(`${MANIFEST_ENTRY} lacks objects, packages or profiles`);
  }
  const seen = new Set<string>();
  for (const o of doc.objects) {
    if (typeof o?.path !== "string") throw new Error(`${MANIFEST_ENTRY} lists an object without a path`);
    const problem = pathProblem(o.path);
    if (problem) throw new Error(`${MANIFEST_ENTRY} lists ${JSON.stringify(o.path)}: ${problem}`);
    if (!Number.isSafeInteger(o.size) || o.size < 0 || o.size > OBJECT_MAX) {
      throw new Error(`${MANIFEST_ENTRY} lists ${o.path} with an invalid size`);
    }
    if (o.size > DOCUMENT_MAX && !o.path.startsWith("files/") && !o.path.startsWith("mirror/")) {
      throw new Error(`${MANIFEST_ENTRY} lists ${o.path} with ${o.size} bytes; manifests are at most ${DOCUMENT_MAX}`);
    }
    if (typeof o.sha256 !== "string" || !SHA256.test(o.sha256)) {
      throw new Error(`${MANIFEST_ENTRY} lists ${o.path} with an invalid sha256`);
    }
    const file = FILE.exec(o.path);
    if (file && !o.sha256.startsWith(file[2])) {
      throw new Error(`${MANIFEST_ENTRY} lists ${o.path} with a sha256 that does not start with its name`);
    }
    if (seen.has(o.path)) throw new Error(`${MANIFEST_ENTRY} lists ${o.path} twice`);
    seen.add(o.path);
  }
  for (const p of doc.profiles) {
    if (typeof p !== "string" || !/^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$/.test(p)) {
      throw new Error(`${MANIFEST_ENTRY} lists an invalid profile ${JSON.stringify(p)}`);
    }
  }
  return doc;
}
