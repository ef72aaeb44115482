/**
 * Single-flight: concurrent calls for the same key share one running promise.
 * @module
 */

/** Runs at most one task per key at a time; later callers for a running key get the same promise. */
export class SingleFlight<T> {
  #running = new Map<string, Promise<T>>();

  /** Runs `task` for `key`, or joins the run already under way. */
  run(key: string, task: () => Promise<T>): Promise<T> {
    const existing = this.#running.get(key);
    if (existing) return existing;
    const promise = (async () => {
      try {
        return await task();
      } finally {
        this.#running.delete(key);
      }
    })();
    this.#running.set(key, promise);
    return promise;
  }

  /** Whether a task for `key` is running. */
  has(key: string): boolean {
    return this.#running.has(key);
  }

  /** How many tasks are running. */
  get size(): number {
    return this.#running.size;
  }
}
