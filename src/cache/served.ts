/**
 * The one answer type: an object ready to serve, as the cache gives it and every room above hands it on (the
 * resolver, the routes, the edge, the install records). The http room's `Shareable` is this answer with the route and
 * headers it was sent with.
 * @module
 */

/** How a request was answered from the cache. */
export type CacheOutcome = "hit" | "miss" | "stale";

/** A manifest's body read once: its JSON document and the file hashes its `hashes` lists. */
export interface ManifestView {
  /** The parsed document (undefined when the body is not JSON). Shared by every reader of these bytes: never change it. */
  readonly doc: unknown;
  /** The second item of each `hashes` entry that is a string (none when the body is not JSON or lists none). */
  readonly hashes: readonly string[];
}

/** An object ready to serve: its bytes and what is known of them. */
export interface Served {
  body: Uint8Array;
  etag: string;
  outcome: CacheOutcome;
  /** The kind of object (index, manifest, file, ...), as counted in the cache metrics. */
  kind: string;
  /** Upstream time spent for this answer, in ms (misses only). */
  upstreamMs?: number;
  /**
   * For a manifest the resolver read on its way (`packages/names.ts` `readManifest`: its dependency check, the
   * policy), what its bytes say, so the rooms above read it instead of parsing the bytes again. Absent for other
   * objects and for manifests no one read before they were sent (`readManifest(body)` reads those, once per body).
   */
  manifest?: ManifestView;
}
