/**
 * The offline side of mipserver (issue 14): fill a cache where there is internet (`warm`), carry it across as one
 * verified file (`export`, `import`), and serve what was imported where there is none (the imported layer).
 *
 * - `format.ts`: what a bundle holds and the rules every entry must meet.
 * - `walk.ts`: follows manifests and dependencies the way mip does, through an app's handler.
 * - `warm.ts`, `export.ts`, `import.ts`: the commands; `run.ts` builds the app they work through.
 * - The imported layer that serves what was imported (`packages/layer.ts`) and the lock file's rules
 *   (`packages/lock_file.ts`) are applied by the server at run time, so they live in `packages/`, below the commands.
 * @module
 */
export { BundleLayer } from "../packages/layer.ts";
export { runBundleCommand } from "./run.ts";
