/**
 * What every store implementation does alike: checking a body against the hash it is put with, the holds that keep
 * in-flight objects from eviction, and counting and logging failed writes.
 * @module
 */
import type { Logger } from "../log.ts";
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

/** What a store says when its writes fail: the messages and the name of its size limit. */
export interface FailureWords {
  /** Logged when a write fails ("... serving without storing (logged once per cause)"). */
  failed: string;
  /** Logged when writes work again after failing. */
  worksAgain: string;
  /** The size limit as a person knows it (`cache.max_size`, "the size limit"). */
  limit: string;
  /** Extra fields for each warning (which store). */
  fields?: Record<string, unknown>;
}

/**
 * Failed writes: counted, and each cause logged the first time it is seen since writes last worked ("too-large" and
 * "protected" are the size limit's causes; others are the error's). {@linkcode WriteFailures.works} says when they
 * work again.
 */
export class WriteFailures {
  /** Writes that failed since the store opened. */
  count = 0;
  #reported = new Map<string, number>();
  #words: FailureWords;
  #logger?: Logger;
  #max: () => number | null;

  constructor(words: FailureWords, logger: Logger | undefined, max: () => number | null) {
    this.#words = words;
    this.#logger = logger;
    this.#max = max;
  }

  /** Counts a failed write of `key` and logs its cause (with `message`, default the store's) if it is new. */
  failed(key: string, error: unknown, cause: string, message = this.#words.failed): void {
    this.count++;
    const seen = this.#reported.get(cause);
    if (seen !== undefined) {
      this.#reported.set(cause, seen + 1);
      return;
    }
    this.#reported.set(cause, 1);
    const why = cause === "too-large"
      ? `the object is larger than ${this.#words.limit} (${this.#max()} bytes)`
      : cause === "protected"
      ? `${this.#words.limit} is taken by objects that must be kept`
      : error instanceof Error
      ? error.message
      : String(error);
    this.#logger?.warn(message, { cause, why, key, ...this.#words.fields });
  }

  /** Notes a write that worked: after failures, logs that writes work again with how many failed per cause. */
  works(): void {
    if (this.#reported.size === 0) return;
    const failed = Object.fromEntries(this.#reported);
    this.#reported.clear();
    this.#logger?.info(this.#words.worksAgain, { failed });
  }
}
