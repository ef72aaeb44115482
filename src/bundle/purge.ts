/**
 * `mipserver purge PKG[@VERSION]`: removes from the cache what only that release (or, without a version, only that
 * package) uses: its manifests (index, named, every variant and profile), the files they list that no other cached
 * manifest lists, and the compiled objects made from those files. Shared objects stay, and so do an imported bundle's
 * manifests and every file they list (a device served from the bundle never meets a missing file). Safe while a server runs on
 * the same cache: every removal is of one whole file (never a partial write), manifests go first, and whatever a
 * device asks for later is fetched or built again.
 * @module
 */
import { INDEX_MANIFEST_KEY, INDEX_PROFILE_KEY, LAYER, MANIFEST_FOLDERS, NAMED_KEY } from "../store/keys.ts";
import type { ObjectStore } from "../store/object_store.ts";

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

/** The package a manifest key belongs to and the version in it (index, named or repository manifests). */
function keyInfo(key: string): { name: string; version: string } | undefined {
  const index = INDEX_MANIFEST_KEY.exec(key);
  if (index) return { name: index[3], version: index[4] };
  const profiled = INDEX_PROFILE_KEY.exec(key);
  if (profiled) return { name: profiled[3], version: profiled[4] };
  const named = NAMED_KEY.exec(key);
  if (named) return { name: named[1], version: named[4] };
  if (/^repo\/.+\.json$/.test(key)) return { name: "", version: "" };
  // An imported bundle's manifest is a fixed set the operator brought in: it is never purged, and keeps its files.
  if (key.startsWith(LAYER.served("")) && key.endsWith(".json")) return { name: "", version: "" };
  return undefined;
}

async function readManifests(store: ObjectStore): Promise<CachedManifest[]> {
  const out: CachedManifest[] = [];
  for (const top of [...MANIFEST_FOLDERS, LAYER.served("").replace(/\/$/, "")]) {
    for await (const key of store.keys(top)) {
      const info = keyInfo(key);
      if (!info) continue;
      let doc;
      try {
        const object = await store.get(key, { direct: true });
        if (!object) continue; // removed meanwhile
        doc = JSON.parse(dec.decode(object.body));
      } catch {
        continue; // not a manifest
      }
      const hashes = Array.isArray(doc?.hashes) ? doc.hashes.map((e: unknown[]) => String(e?.[1])) : [];
      const versions = [info.version];
      if (doc?.version !== undefined) versions.push(String(doc.version));
      out.push({ key, name: info.name, versions, hashes });
    }
  }
  return out;
}

/** Removes one object; returns its size, or 0 when it was already gone. */
async function remove(store: ObjectStore, key: string): Promise<number> {
  const size = (await store.stat(key))?.size ?? 0;
  await store.remove([key]);
  return size;
}

/**
 * Removes from `store` what only `name` (at `version`, or every version when it is undefined) uses.
 * A version matches the version in a manifest's key (`latest`, a version or a ref) or the version it states, so
 * `purge hello@1.1` also removes a cached `latest.json` that says 1.1.
 */
export async function purge(store: ObjectStore, name: string, version?: string): Promise<PurgeReport> {
  const manifests = await readManifests(store);
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
    await remove(store, m.key);
    report.manifests.push(m.key);
  }
  if (exclusive.size === 0) return report;
  for (const top of ["files", "compiled"]) {
    for await (const key of store.keys(top)) {
      // files/{h2}/{hash} (short or full); compiled/{h2}/{source sha256}-{recipe}.
      const id = key.split("/").at(-1)!.slice(0, 8);
      if (!exclusive.has(id)) continue;
      report.bytes += await remove(store, key);
      report.objects.push(key);
    }
  }
  report.manifests.sort();
  report.objects.sort();
  return report;
}
