/**
 * A package whose package.json lives at a URL (a code host's raw file, a `url:` source): its `urls` resolved to
 * upstream URLs the way mip resolves them, and its deps as stated. Not imported by the kinds themselves (resolving
 * `urls` needs every registered code host): the named-package service hands {@linkcode readPackageAt} to them as
 * `SourceContext.packageAt`.
 * @module
 */
import { type HostBases, resolveSource } from "../locations.ts";
import { type PackageDoc, readPackageJson } from "../package_json.ts";
import { badUpstream, type Resolved, type SourceContext, type SourceFile } from "./source.ts";

/**
 * Each `urls` entry of the package.json at `url` as `[destination, upstream URL]` (see `resolveSource`); an entry
 * that cannot be resolved is a 502 naming it.
 */
export function upstreamUrls(bases: HostBases, doc: PackageDoc, url: string, ref: string): [string, string][] {
  return doc.urls.map(([dest, src]) => {
    try {
      return [dest, resolveSource(bases, src, url, ref)];
    } catch (e) {
      throw badUpstream(`package.json at ${url}: url entry ${JSON.stringify(dest)}: ${(e as Error).message}`);
    }
  });
}

/** Reads the package.json at `url` as a package at `ref` (its `version`, else `ref`). */
export async function readPackageAt(ctx: SourceContext, url: string, ref: string): Promise<Resolved> {
  const { body } = await ctx.fetcher.get(url);
  const doc = readPackageJson(body, `at ${url}`);
  const files = upstreamUrls(ctx.bases, doc, url, ref).map(([dest, upstream]): SourceFile => ({
    dest,
    from: upstream,
    read: async () => (await ctx.fetcher.get(upstream)).body,
  }));
  if (doc.hashes.length > 0) {
    throw badUpstream(`package.json at ${url} lists hashes; only urls can be mirrored from a repository`);
  }
  return { version: doc.version ?? ref, files, deps: doc.deps };
}
