/**
 * The flood suite: every structure that grows with what clients (or upstreams) send is driven here with many unique
 * keys, and each test asserts the structure's bound (a count, bytes or characters) and fails on code without it.
 * Where a flood over HTTP through the real server is quick enough it goes that way; where it would take too long it
 * drives the class behind the structure directly. Install records and devices have their own floods in
 * `tests/fleet/`.
 *
 * Each bound is listed, with its setting or constant, in the operations docs' bounds table.
 * @module
 */
import assert from "node:assert/strict";

/** Asserts `value <= bound`, naming what was measured. */
export function assertAtMost(value: number, bound: number, what: string): void {
  assert.ok(value <= bound, `${what}: ${value}, over its bound of ${bound}`);
}

/** Runs `task(i)` for `i` in `[0, n)`, at most `concurrency` at once. */
export async function flood(n: number, concurrency: number, task: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < n) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
}
