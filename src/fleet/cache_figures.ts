/**
 * The cache's size and object count for the status page: the store's own walk, at most once a minute.
 * @module
 */

/** Figures of every stored object. */
export type Usage = { bytes: number; objects: number };

/** `usage` (a walk of the store), remembered for `maxAgeMs`. */
export function cachedFigures(
  usage: () => Promise<Usage>,
  maxAgeMs = 60_000,
  now: () => number = Date.now,
): () => Promise<Usage> {
  let last: { at: number; figures: Promise<Usage> } | undefined;
  return () => {
    if (!last || now() - last.at > maxAgeMs) last = { at: now(), figures: usage() };
    return last.figures;
  };
}
