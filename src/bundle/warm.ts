/**
 * `mipserver warm`: fetches packages into the cache through the app, the way devices would install them: each
 * package's manifests for every plain variant (`py` and the compiler's .mpy version, or those `--mpy` names), the
 * compiled manifests for each `--profile`, the files they list and the whole dependency closure. It writes through the
 * same atomic store as the server, so it can run against a running server's cache; what is fresh in the cache is not
 * fetched again.
 * @module
 */
import type { App } from "../app.ts";
import type { Config } from "../config/schema.ts";
import { Progress, type ProgressSink } from "./progress.ts";
import { parseSpec, specText, type Variant, Walker } from "./walk.ts";

/** What to warm. */
export interface WarmOptions {
  /** `name` or `name@version` each; `warm --from LOCKFILE` passes the lock's list. */
  packages: string[];
  /** Target profiles to add compiled manifests for. */
  profiles: string[];
  /** Plain variants: `py` or an .mpy version; empty: `py` and the configured compiler's version. */
  mpy: string[];
}

/** What a warm did. */
export interface WarmResult {
  warmed: string[];
  /** Failed packages with the reason. */
  failed: Map<string, string>;
  manifests: number;
  files: number;
}

/** The variants a warm walks: the plain ones, then each profile over the numbered ones. Throws for unknown profiles. */
export function warmVariants(app: App, options: Pick<WarmOptions, "profiles" | "mpy">): Variant[] {
  const major = app.compiler.version ? String(app.compiler.version.major) : undefined;
  const plain = options.mpy.length > 0 ? [...new Set(options.mpy)] : ["py", ...(major ? [major] : [])];
  const numbered = plain.filter((m) => m !== "py");
  const compiled = numbered.length > 0 ? numbered : major ? [major] : [];
  const variants: Variant[] = plain.map((mpy) => ({ mpy, profile: null }));
  for (const profile of new Set(options.profiles)) {
    app.compiler.checkProfile(profile);
    if (compiled.length === 0) throw new Error(`--profile ${profile} needs a compiler: mpy-cross is not available`);
    for (const mpy of compiled) variants.push({ mpy, profile });
  }
  return variants;
}

/** Warms `options.packages` into the cache of `app` (built with the base placeholder as its public URL). */
export async function warm(app: App, config: Config, options: WarmOptions, sink: ProgressSink): Promise<WarmResult> {
  const variants = warmVariants(app, options);
  const walker = new Walker({
    handler: app.handler,
    haveFile: async (hash) => {
      const res = await app.handler(new Request(`http://mipserver.invalid/file/${hash.slice(0, 2)}/${hash}`));
      if (res.status === 200) {
        await res.body?.cancel();
        return true;
      }
      throw new Error(`file ${hash}: ${res.status} ${(await res.text()).trim().slice(0, 300)}`);
    },
    isNamed: (name) => name in config.packages,
  });
  const specs = [...new Set(options.packages)].map(parseSpec);
  const progress = new Progress(sink, specs.length, "warm");
  const failed = new Map<string, string>();
  const warmed: string[] = [];
  const index = await app.handler(new Request("http://mipserver.invalid/index.json"));
  await index.body?.cancel();
  for (const spec of specs) {
    const text = specText(spec);
    let failure: string | undefined;
    for (const variant of variants) {
      try {
        await walker.package(spec, variant);
      } catch (e) {
        const where = `${variant.profile ? `/t/${variant.profile} ` : ""}${variant.mpy}`;
        failure = `${where}: ${(e as Error).message}`;
        break;
      }
    }
    if (failure) failed.set(text, failure);
    else warmed.push(text);
    progress.step(text, failure ? "FAILED" : "ok");
  }
  progress.end();
  await app.idle();
  return { warmed, failed, manifests: walker.found.served.size, files: walker.found.files.size };
}
