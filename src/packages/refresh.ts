/**
 * Refreshing one ref of a repository on demand: a tag that was moved upstream (or a branch that should not wait for
 * `cache.ttl`). Every cached object read at that ref (mirrored files, repository manifests, named-package manifests
 * built from it) is marked expired: the next request still gets the cached copy at once and re-reads it in the
 * background, and the copy keeps serving if upstream fails.
 * @module
 */
import type { ObjectStore } from "../store/object_store.ts";
import { parseSpec } from "./locations.ts";
import { keySegment, namedPrefix, repoRefPrefixes } from "../store/keys.ts";

/** Which ref to refresh. */
export interface RefSpec {
  /** A code host's name (`github`, `gitlab`, `codeberg`, ...). */
  host: string;
  owner: string;
  repo: string;
  ref: string;
}

/**
 * Marks everything cached at `spec` as expired; `packages` are the named packages (their manifests built at that ref
 * are marked too). Returns how many objects were marked.
 */
export async function expireRef(
  store: ObjectStore,
  packages: Record<string, { source: string }>,
  spec: RefSpec,
): Promise<number> {
  const { host, owner, repo, ref } = spec;
  let n = 0;
  for (const prefix of repoRefPrefixes(host, owner, repo, ref)) n += await store.expire(prefix);
  const leaf = `/${keySegment(`${ref}.json`)}`;
  for (const [name, pkg] of Object.entries(packages)) {
    const s = parseSpec(pkg.source);
    if (!s || s.host !== host || s.owner !== owner || s.repo !== repo) continue;
    n += await store.expire(namedPrefix(name), (key) => key.endsWith(leaf));
  }
  return n;
}
