/**
 * The files pinned releases need, so `cache.max_size` never evicts them: the hashes listed by every manifest of an
 * index package at its pinned version. They are read from the cached manifests when the server starts and noted again
 * whenever such a manifest is served, so a pin keeps its files through restarts and through upstream outages.
 * @module
 */
import type { ObjectStore } from "../store/object_store.ts";
import { ListedFiles } from "./listed_files.ts";
import { listedHashes } from "./names.ts";
import { INDEX_MANIFEST_KEY, indexManifestKey } from "../store/keys.ts";

/** File hashes of pinned releases, and the store's `protect` test built on them. */
export class PinnedFiles {
  #pins: Record<string, string>;
  #listed: ListedFiles;

  /**
   * `pins` is the config's `pins`: package name → pinned version. The files are remembered in `listed` (shared with
   * the policy and the guards; default: its own), where a pinned one is never forgotten.
   */
  constructor(pins: Record<string, string>, listed: ListedFiles = new ListedFiles()) {
    this.#pins = pins;
    this.#listed = listed;
  }

  /** Whether `version` of `name` is the pinned one (for `latest`, the caller passes the version it resolved to). */
  isPinned(name: string, version: string): boolean {
    return Object.hasOwn(this.#pins, name) && this.#pins[name] === version;
  }

  /** Notes the files a manifest of a pinned release lists (a manifest that is not JSON lists none). */
  note(body: Uint8Array): void {
    this.#listed.notePinned(listedHashes(body));
  }

  /** Reads every cached index manifest of a pinned release (`index/{id}/package/{mpy}/{name}/{version}.json`). */
  async load(store: ObjectStore): Promise<void> {
    if (Object.keys(this.#pins).length === 0) return;
    for await (const key of store.keys("index")) {
      const m = INDEX_MANIFEST_KEY.exec(key);
      if (!m) continue;
      const [, id, mpy] = m;
      for (const [name, version] of Object.entries(this.#pins)) {
        if (key !== indexManifestKey(id, mpy, name, version)) continue;
        const object = await store.get(key);
        if (object) this.note(object.body);
      }
    }
  }

  /** The store's `protect` test: true for a content file (`files/{h2}/{hash}`) a pinned release lists. */
  protects(key: string): boolean {
    const m = /^files\/[0-9a-f]{2}\/([0-9a-f]{4,64})$/.exec(key);
    return m !== null && this.#listed.pinned(m[1]);
  }
}
