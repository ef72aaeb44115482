/**
 * Reads a mip `package.json` (`urls`, `deps`, `version`, as micropython's docs describe it) into checked parts.
 * @module
 */
import { HttpError } from "../http/responses.ts";
import { type HostBases, resolveSource } from "./locations.ts";

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
  constructor(message: string) {
    super(message);
    this.name = "PackageJsonError";
  }
}

/** Whether `dest` is a safe install path below the device's lib folder. */
export function safeDest(dest: string): boolean {
  return dest.length > 0 && dest.length <= 200 && !dest.startsWith("/") && !dest.includes("\\") &&
    !dest.includes("\0") && dest.split("/").every((s) => s !== "" && s !== "." && s !== "..");
}

function pairs(doc: Record<string, unknown>, key: string, check: (pair: [string, string]) => void): [string, string][] {
  const list = doc[key];
  if (list === undefined) return [];
  if (!Array.isArray(list)) throw new PackageJsonError(`${key} is not a list`);
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
    if (!safeDest(dest)) throw new PackageJsonError(`destination ${JSON.stringify(dest)} is not a relative path`);
  };
  const urls = pairs(d, "urls", dest);
  const hashes = pairs(d, "hashes", dest);
  const deps = pairs(d, "deps", () => {});
  if (d.version !== undefined && typeof d.version !== "string") throw new PackageJsonError("version is not a string");
  return { urls, deps, hashes, version: d.version as string | undefined, raw: d };
}

/** Parses the package.json found `where` (`at <url>`, `in <dir>`); a bad document is a 502 saying what is wrong. */
export function readPackageJson(bytes: Uint8Array, where: string): PackageDoc {
  try {
    return parsePackageJson(bytes);
  } catch (e) {
    if (e instanceof PackageJsonError) throw new HttpError(502, `Malformed package.json ${where}: ${e.message}`);
    throw e;
  }
}

/**
 * Each `urls` entry of the package.json at `url` as `[destination, upstream URL]` (see `resolveSource`); an entry
 * that cannot be resolved is a 502 naming it.
 */
export function upstreamUrls(bases: HostBases, doc: PackageDoc, url: string, ref: string): [string, string][] {
  return doc.urls.map(([dest, src]) => {
    try {
      return [dest, resolveSource(bases, src, url, ref)];
    } catch (e) {
      throw new HttpError(502, `package.json at ${url}: url entry ${JSON.stringify(dest)}: ${(e as Error).message}`);
    }
  });
}
