/**
 * What every store implementation does alike: checking a body against the hash it is put with, and the holds that
 * keep in-flight objects from eviction.
 * @module
 */
import { sha256Hex } from "./hash.ts";
import { HashMismatch, type PutOptions, type StoredObject } from "./object_store.ts";

/**
 * The object a put stores: its body, stored time (`options.storedAt` or `now`) and ETag, with the body's hex sha256.
 * Throws {@linkcode HashMismatch} when the body does not match `options.sha256`.
 */
export async function objectToStore(
  key: string,
  body: Uint8Array,
  options: PutOptions | undefined,
  now: () => number,
): Promise<{ object: StoredObject; digest: string }> {
  const digest = await sha256Hex(body);
  if (options?.sha256 !== undefined && !digest.startsWith(options.sha256)) {
    throw new HashMismatch(key, options.sha256, digest);
  }
  return { object: { body, storedAt: options?.storedAt ?? now(), etag: `"${digest.slice(0, 32)}"` }, digest };
}

/** Keys held against eviction, counted: a key stays held until every hold on it is released. */
export class Holds {
  #holds = new Map<string, number>();

  /** Whether `key` is held. */
  has(key: string): boolean {
    return this.#holds.has(key);
  }

  /** Holds `key` until the returned function is called (calling it again does nothing). */
  hold(key: string): () => void {
    this.#holds.set(key, (this.#holds.get(key) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = this.#holds.get(key)! - 1;
      if (n === 0) this.#holds.delete(key);
      else this.#holds.set(key, n);
    };
  }
}
