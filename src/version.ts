/**
 * The version of mipserver, taken from deno.json so there is one place to change it.
 * @module
 */
import denoJson from "../deno.json" with { type: "json" };

/** mipserver's version, e.g. `0.1.0`. */
export const VERSION: string = denoJson.version;
