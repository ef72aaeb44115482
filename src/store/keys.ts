/**
 * Object keys: the only place that spells the store's layout (`files/`, `compiled/`, `mirror/`, `index/`, `named/`,
 * `repo/`, `bundle/`), how any text becomes a key segment, and what a safe key is (what a store agrees to write).
 * @module
 */
import { createHash } from "node:crypto";

const PLAIN_SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9._+-]{0,199}$/;
const KEY_SEGMENT = /^[A-Za-z0-9_=][A-Za-z0-9._+=-]{0,199}$/;

/**
 * One cache-key segment for any text: plain names (`[A-Za-z0-9_][A-Za-z0-9._+-]*`, up to 200) stay as they are; any
 * other text is written as `=` followed by its characters with every byte outside `[A-Za-z0-9_.+-]` (and a leading
 * `.`) as `=XX`, and when that would exceed 200 characters as `=.` and its sha256 (an escaped form never starts with
 * `=.`). Plain names never hold `=`, so two different texts never share a segment.
 */
export function keySegment(text: string): string {
  if (PLAIN_SEGMENT.test(text)) return text;
  let out = "=";
  for (const byte of new TextEncoder().encode(text)) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9_+-]/.test(c) || (c === "." && out.length > 1)
      ? c
      : `=${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  if (out.length <= 200) return out;
  return `=.${createHash("sha256").update(text).digest("hex")}`;
}

/** A cache key from parts; each part may hold `/`-separated segments, each encoded by {@linkcode keySegment}. */
export function cacheKey(...parts: string[]): string {
  return parts.flatMap((p) => p.split("/")).map(keySegment).join("/");
}

/** Whether a path is made only of safe segments (no `..`, no separators, no NUL): bundle entries and store keys. */
export function isSafeKey(key: string): boolean {
  const parts = key.split("/");
  return parts.length > 0 && parts.every((p) => KEY_SEGMENT.test(p) && p !== "." && p !== "..");
}

/** Whether a store writes `key`: a safe key of a folder and at least one name below it. */
export function isStoreKey(key: string): boolean {
  return key.includes("/") && isSafeKey(key);
}

// The layout.

/** The key of a content file named by its hash (short or full): `files/{first two characters}/{hash}`. */
export function fileKey(hash: string): string {
  return `files/${hash.slice(0, 2)}/${hash}`;
}

/** A content file's key and the hash it is named by. */
export const FILE_KEY = /^files\/[0-9a-f]{2}\/([0-9a-f]{4,64})$/;

/** The key of a compiled object: `compiled/{h2}/{source sha256}-{recipe}`. */
export function compiledKey(sourceHash: string, recipe: string): string {
  return `compiled/${sourceHash.slice(0, 2)}/${sourceHash}-${recipe}`;
}

/** The key of an upstream index's `index.json`; `id` names the upstream. */
export function indexDocKey(id: string): string {
  return `index/${id}/index.json`;
}

/** The key of an index package manifest: `index/{id}/package/{mpy}/{name}/{version}.json`. */
export function indexManifestKey(id: string, mpy: string, name: string, version: string): string {
  return cacheKey("index", id, "package", mpy, name, `${version}.json`);
}

/** An index manifest's key: upstream id, mpy, package name and version. */
export const INDEX_MANIFEST_KEY = /^index\/([^/]+)\/package\/([^/]+)\/([^/]+)\/(.+)\.json$/;

/**
 * The key of an index package built for a target profile from the index's source form:
 * `index/_t/{profile}/{mpy}/{name}/{version}.json` (an upstream's id is hex, never `_t`).
 */
export function indexProfileKey(profile: string, mpy: string, name: string, version: string): string {
  return cacheKey("index", "_t", profile, mpy, name, `${version}.json`);
}

/** An index package's manifest built for a profile: profile, mpy, package name and version. */
export const INDEX_PROFILE_KEY = /^index\/_t\/([^/]+)\/([^/]+)\/([^/]+)\/(.+)\.json$/;

/** The key of a named package's manifest: `named/{name}/{mpy}/{profile or _}/{ref}.json`. */
export function namedKey(name: string, mpy: string, profile: string | null, ref: string): string {
  return cacheKey("named", name, mpy, profile ?? "_", `${ref}.json`);
}

/** A named manifest's key: name, mpy, profile (`_` for none) and ref. */
export const NAMED_KEY = /^named\/([^/]+)\/([^/]+)\/([^/]+)\/(.+)\.json$/;

/** Where every manifest of a named package is: its folder. */
export function namedPrefix(name: string): string {
  return cacheKey("named", name);
}

/** The key of a repository dependency built into a manifest: `repo/{host}/{owner}/{repo}/{ref}/{path}/{mpy}/{profile}.json`. */
export function repoKey(
  spec: { host: string; owner: string; repo: string; ref: string; path: string },
  mpy: string,
  profile: string | null,
): string {
  return cacheKey("repo", spec.host, spec.owner, spec.repo, spec.ref, spec.path, mpy, `${profile ?? "_"}.json`);
}

/** The key of a manifest built from a package.json at a plain URL (`repo/url/{scheme}/{host}/{path}/...`). */
export function repoUrlKey(url: string, mpy: string, profile: string | null): string {
  const u = new URL(url);
  return `repo/url/${u.protocol.slice(0, -1)}/${u.host.replaceAll(":", "_")}${u.pathname}/${mpy}/${
    profile ?? "_"
  }.json`;
}

/** Where the mirrored files and built manifests of one repository ref are: `mirror/...` and `repo/...`. */
export function repoRefPrefixes(host: string, owner: string, repo: string, ref: string): string[] {
  return [cacheKey("mirror", host, owner, repo, ref), cacheKey("repo", host, owner, repo, ref)];
}

/** The key of a mirrored raw file, from its path on this server (`/github/...`, `/url/...`). */
export function mirrorKey(path: string): string {
  return cacheKey("mirror", path.replace(/^\//, ""));
}

/** The keys of the imported bundle layer: the catalog (its commit point), the merged index and the manifests. */
export const LAYER = {
  catalog: "bundle/catalog.json",
  index: "bundle/index.json",
  served: (path: string) => `bundle/served/${path}`,
};

/** The last lock fetched from `policy.lock_url` that passed its checks (a site's copy of its central server's lock). */
export const LOCK_COPY_KEY = "lock/url.json";

/** The folders manifests are kept in, for walks over every cached manifest. */
export const MANIFEST_FOLDERS = ["index", "named", "repo"];

/**
 * Tells whether a key names an object that counts toward the size limit and may be evicted: content files from an
 * index (named by a short hash, so they can be fetched again by it), compiled outputs and raw mirrored files. Index
 * documents, manifests and mirrored `package.json` documents are metadata; content files named by a full sha256 are
 * the files of built named-package manifests, which no upstream serves by hash, so they are kept with those manifests.
 * None of these count or are ever evicted.
 */
export function isObjectKey(key: string): boolean {
  if (key.startsWith("files/")) return !/^files\/[0-9a-f]{2}\/[0-9a-f]{64}$/.test(key);
  if (key.startsWith("compiled/")) return true;
  return key.startsWith("mirror/") && !key.endsWith("/package.json");
}
