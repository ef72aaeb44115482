/**
 * `mipserver purge PKG[@VERSION]`: removes from the cache what only that release (or, without a version, only that
 * package) uses: its manifests (index, named, every variant and profile), the files they list that no other cached
 * manifest lists, and the compiled objects made from those files. Shared objects stay. Safe while a server runs on
 * the same cache: every removal is of one whole file (never a partial write), manifests go first, and whatever a
 * device asks for later is fetched or built again.
 * @module
 */
import { join } from "node:path";
import { isSafeKey } from "../cache/store.ts";

/** What a purge removed. */
export interface PurgeReport {
  /** Manifest keys removed. */
  manifests: string[];
  /** File and compiled-object keys removed. */
  objects: string[];
  /** Bytes freed by the objects. */
  bytes: number;
  /** Files the release lists that stay because another cached manifest lists them too. */
  shared: number;
}

const dec = new TextDecoder();

/** A cached manifest: its key, the package it belongs to, the version it states or was asked for, its hashes. */
interface CachedManifest {
  key: string;
  name: string;
  /** The version in the key (`latest`, a version or a ref) and the version the manifest states. */
  versions: string[];
  hashes: string[];
}

async function* walk(root: string, rel: string): AsyncGenerator<string> {
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(join(root, rel)));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  for (const entry of entries) {
    const child = `${rel}/${entry.name}`;
    if (entry.isDirectory) yield* walk(root, child);
    else if (entry.isFile) yield child;
  }
}

/** The package a manifest key belongs to and the version in it (index, named or repository manifests). */
function keyInfo(key: string): { name: string; version: string } | undefined {
  const index = /^index\/[^/]+\/package\/[^/]+\/([^/]+)\/(.+)\.json$/.exec(key);
  if (index) return { name: index[1], version: index[2] };
  const named = /^named\/([^/]+)\/[^/]+\/[^/]+\/(.+)\.json$/.exec(key);
  if (named) return { name: named[1], version: named[2] };
  if (/^repo\/.+\.json$/.test(key)) return { name: "", version: "" };
  return undefined;
}

async function readManifests(root: string): Promise<CachedManifest[]> {
  const out: CachedManifest[] = [];
  for (const top of ["index", "named", "repo"]) {
    for await (const key of walk(root, top)) {
      const info = keyInfo(key);
      if (!info) continue;
      let doc;
      try {
        doc = JSON.parse(dec.decode(await Deno.readFile(join(root, key))));
      } catch {
        continue; // removed meanwhile, or not a manifest
      }
      const hashes = Array.isArray(doc?.hashes) ? doc.hashes.map((e: unknown[]) => String(e?.[1])) : [];
      const versions = [info.version];
      if (doc?.version !== undefined) versions.push(String(doc.version));
      out.push({ key, name: info.name, versions, hashes });
    }
  }
  return out;
}

/** Removes one cache object; returns its size, or 0 when it was already gone. */
async function remove(root: string, key: string): Promise<number> {
  if (!isSafeKey(key)) throw new Error(`Unsafe cache key ${JSON.stringify(key)}`);
  const path = join(root, key);
  try {
    const size = (await Deno.stat(path)).size;
    await Deno.remove(path);
    return size;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return 0;
    throw e;
  }
}

/**
 * Removes from the cache under `root` what only `name` (at `version`, or every version when it is undefined) uses.
 * A version matches the version in a manifest's key (`latest`, a version or a ref) or the version it states, so
 * `purge hello@1.1` also removes a cached `latest.json` that says 1.1.
 */
export async function purge(root: string, name: string, version?: string): Promise<PurgeReport> {
  const manifests = await readManifests(root);
  const target = (m: CachedManifest) => m.name === name && (version === undefined || m.versions.includes(version));
  const doomed = manifests.filter(target);
  const keep = new Set(manifests.filter((m) => !target(m)).flatMap((m) => m.hashes.map((h) => h.slice(0, 8))));
  const exclusive = new Set<string>();
  let shared = 0;
  for (const hash of new Set(doomed.flatMap((m) => m.hashes))) {
    if (keep.has(hash.slice(0, 8))) shared++;
    else exclusive.add(hash.slice(0, 8));
  }
  const report: PurgeReport = { manifests: [], objects: [], bytes: 0, shared };
  for (const m of doomed) {
    await remove(root, m.key);
    report.manifests.push(m.key);
  }
  if (exclusive.size === 0) return report;
  for (const top of ["files", "compiled"]) {
    for await (const key of walk(root, top)) {
      // files/{h2}/{hash} (short or full); compiled/{h2}/{source sha256}-{recipe}.
      const id = key.split("/").at(-1)!.slice(0, 8);
      if (!exclusive.has(id)) continue;
      report.bytes += await remove(root, key);
      report.objects.push(key);
    }
  }
  report.manifests.sort();
  report.objects.sort();
  return report;
}
