/**
 * The offline side of mipserver (issue 14): fill a cache where there is internet (`warm`), carry it across as one
 * verified file (`export`, `import`), and serve what was imported where there is none (the imported layer).
 *
 * - `format.ts`: what a bundle holds and the rules every entry must meet.
 * - `walk.ts`: follows manifests and dependencies the way mip does, through an app's handler.
 * - `warm.ts`, `export.ts`, `import.ts`: the commands; `run.ts` builds the app they work through.
 * - `layer.ts`: serves imported manifests and the imported index, whatever the importing config says.
 * @module
 */
export { BundleLayer } from "./layer.ts";
export { runBundleCommand } from "./run.ts";
