/**
 * Reads a mip `package.json` (`urls`, `deps`, `version`, as micropython's docs describe it) into checked parts.
 * @module
 */
import { BadUpstream } from "../errors.ts";
import { clip, destinationProblem, MAX_MANIFEST_FILES, parseHost, UnsafeManifestError } from "./names.ts";

export { safeDest } from "./names.ts";

/** A package.json's useful parts. */
export interface PackageDoc {
  /** `[destination, source]` pairs. */
  urls: [string, string][];
  /** `[name or URL, version]` pairs. */
  deps: [string, string][];
  version?: string;
  /** Index-style `[destination, hash]` pairs, when the document is already a manifest. */
  hashes: [string, string][];
  /** The whole document, as parsed. */
  raw: Record<string, unknown>;
}

/** A package.json that cannot be used; the message says what is wrong. */
export class PackageJsonError extends Error {
  /** True when the document is well-formed but lists what a device must not install (an unsafe destination). */
  readonly unsafe: boolean;
  constructor(message: string, unsafe = false) {
    super(message);
    this.name = "PackageJsonError";
    this.unsafe = unsafe;
  }
}

function pairs(doc: Record<string, unknown>, key: string, check: (pair: [string, string]) => void): [string, string][] {
  const list = doc[key];
  if (list === undefined) return [];
  if (!Array.isArray(list)) throw new PackageJsonError(`${key} is not a list`);
  if (list.length > MAX_MANIFEST_FILES) {
    throw new PackageJsonError(`${key} lists ${list.length} entries; at most ${MAX_MANIFEST_FILES} are served`, true);
  }
  return list.map((entry: unknown) => {
    if (key === "deps" && Array.isArray(entry) && entry.length === 1 && typeof entry[0] === "string") {
      entry = [entry[0], "latest"];
    }
    if (!Array.isArray(entry) || entry.length !== 2 || typeof entry[0] !== "string" || typeof entry[1] !== "string") {
      throw new PackageJsonError(`bad ${key} entry ${JSON.stringify(entry)}: expected a pair of strings`);
    }
    const pair = entry as [string, string];
    check(pair);
    return pair;
  });
}

/**
 * Parses an absolute http(s) URL from a package.json and checks its host by the `/url/` route's rule, so every URL we
 * hand a device can be served; throws an Error saying why not.
 */
export function checkedUrl(src: string): URL {
  let url: URL;
  try {
    url = new URL(src);
  } catch {
    throw new Error(`${JSON.stringify(clip(src))} is not a valid URL`);
  }
  try {
    parseHost(url.protocol === "https:" ? "https" : "http", url.host);
  } catch (e) {
    throw new Error(`${JSON.stringify(clip(src))}: ${(e as Error).message}`);
  }
  return url;
}

/** Parses package.json bytes, or throws a {@linkcode PackageJsonError}. */
export function parsePackageJson(bytes: Uint8Array): PackageDoc {
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new PackageJsonError((e as Error).message);
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) throw new PackageJsonError("not a JSON object");
  const d = doc as Record<string, unknown>;
  const dest = ([dest]: [string, string]) => {
    const why = destinationProblem(dest);
    if (why) {
      throw new PackageJsonError(`destination ${JSON.stringify(clip(dest))} is not a safe install path (${why})`, true);
    }
  };
  const urls = pairs(d, "urls", dest);
  const hashes = pairs(d, "hashes", dest);
  const deps = pairs(d, "deps", ([dep]) => {
    if (!/^https?:\/\//.test(dep)) return;
    try {
      checkedUrl(dep);
    } catch (e) {
      throw new PackageJsonError(`dependency ${(e as Error).message}`);
    }
  });
  if (d.version !== undefined && typeof d.version !== "string") throw new PackageJsonError("version is not a string");
  return { urls, deps, hashes, version: d.version as string | undefined, raw: d };
}

/** Parses the package.json found `where` (`at <url>`, `in <dir>`); a bad document is a 502 saying what is wrong. */
export function readPackageJson(bytes: Uint8Array, where: string): PackageDoc {
  try {
    return parsePackageJson(bytes);
  } catch (e) {
    if (e instanceof PackageJsonError && e.unsafe) {
      throw new UnsafeManifestError(`Refused package.json ${where}: ${e.message}`);
    }
    if (e instanceof PackageJsonError) throw new BadUpstream(`Malformed package.json ${where}: ${e.message}`);
    throw e;
  }
}
