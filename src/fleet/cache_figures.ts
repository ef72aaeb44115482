/**
 * The cache's size and object count for the status page: a walk of the cache folder, at most once a minute.
 * @module
 */
import { join } from "node:path";

/** Files in the cache folder that are not cached objects. */
const NOT_OBJECTS = /^(?:audit\.sqlite.*|\..*)$/;

/** Sums the files below `root` (not the install records, temp files or hidden files). */
export async function walkCache(root: string): Promise<{ bytes: number; objects: number }> {
  let bytes = 0;
  let objects = 0;
  const walk = async (dir: string, depth: number): Promise<void> => {
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(dir));
    } catch {
      return;
    }
    for (const entry of entries) {
      if (NOT_OBJECTS.test(entry.name) || (depth === 0 && entry.name === "tmp")) continue;
      const path = join(dir, entry.name);
      if (entry.isDirectory) await walk(path, depth + 1);
      else if (entry.isFile) {
        try {
          bytes += (await Deno.stat(path)).size;
          objects++;
        } catch {
          // Removed meanwhile.
        }
      }
    }
  };
  await walk(root, 0);
  return { bytes, objects };
}

/** {@linkcode walkCache}, remembered for `maxAgeMs`. */
export function cachedFigures(
  root: string,
  maxAgeMs = 60_000,
  now: () => number = Date.now,
): () => Promise<{ bytes: number; objects: number }> {
  let last: { at: number; figures: Promise<{ bytes: number; objects: number }> } | undefined;
  return () => {
    if (!last || now() - last.at > maxAgeMs) last = { at: now(), figures: walkCache(root) };
    return last.figures;
  };
}
