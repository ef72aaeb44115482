/**
 * Ad-hoc mirrors: `/github/{owner}/{repo}/{ref}/{path...}`, `/gitlab/...` and `/url/{scheme}/{host}/{path...}` serve
 * upstream files through the cache, and rewrite `package.json` so every `urls` entry and every URL dependency points
 * back at this server with an absolute URL (devices before MicroPython 1.25 cannot resolve relative URLs, and a device
 * should never have to reach GitHub or the internet itself).
 * @module
 */
import type { FreshCache, Mutability, Served } from "../cache/fresh_cache.ts";
import { etagOf } from "../cache/hash.ts";
import type { Fetcher } from "../upstream/fetcher.ts";
import { BASE_PLACEHOLDER, type HostBases, mirrorPath, parseSpec, rawUrl, specUrl } from "./locations.ts";
import { cacheKey } from "./names.ts";
import { readPackageJson, upstreamUrls } from "./package_json.ts";

/** What the mirror service is built from. */
export interface RepoServiceOptions extends HostBases {
  cache: FreshCache;
  fetcher: Fetcher;
}

const enc = new TextEncoder();

/**
 * Rewrites a dependency to what a device should ask for: index names stay names; `github:`/`gitlab:` specs and
 * http(s) URLs become absolute URLs on this server (`base`), pointing at the mirrored package.json or file.
 */
export function rewriteDep(bases: HostBases, base: string, dep: [string, string]): [string, string] {
  const [name, version] = dep;
  if (parseSpec(name)) {
    const ref = version && version !== "latest" ? version : "HEAD";
    return [`${base}${mirrorPath(bases, specUrl(bases, name, ref, true)!)}`, version];
  }
  if (/^https?:\/\//.test(name)) {
    let url = name;
    if (!/\.(py|mpy|json)$/.test(url)) url = `${url.replace(/\/+$/, "")}/package.json`;
    return [`${base}${mirrorPath(bases, new URL(url).href)}`, version];
  }
  return dep;
}

/** Serves mirrored upstream files and rewritten package.json documents. */
export class RepoService {
  #o: RepoServiceOptions;
  constructor(options: RepoServiceOptions) {
    this.#o = options;
  }

  /** An upstream file, cached: for good when `mutable` is false, else for `cache.ttl`. */
  raw(url: string, mutable: Mutability, check?: (body: Uint8Array) => void): Promise<Served> {
    const key = cacheKey("mirror", mirrorPath(this.#o, url).slice(1));
    return this.#o.cache.get("repo", key, mutable, async () => {
      const loaded = await this.#o.fetcher.get(url);
      check?.(loaded.body);
      return loaded;
    });
  }

  /**
   * The package.json at `url` with every `urls` entry made absolute on this server (`base`, e.g. `http://gw:18891`)
   * and URL dependencies pointed at this server's mirrors. `ref` is what `github:`/`gitlab:` entries resolve with.
   */
  async packageJson(url: string, ref: string, mutable: Mutability, base: string): Promise<Served> {
    // A package.json that cannot be served is refused before it is cached.
    const check = (body: Uint8Array) => void upstreamUrls(this.#o, readPackageJson(body, `at ${url}`), url, ref);
    const served = await this.raw(url, mutable, check);
    const doc = readPackageJson(served.body, `at ${url}`);
    const out = { ...doc.raw };
    if (doc.urls.length > 0 || out.urls !== undefined) {
      out.urls = upstreamUrls(this.#o, doc, url, ref).map(([dest, upstream]) => [
        dest,
        `${base}${mirrorPath(this.#o, upstream)}`,
      ]);
    }
    if (out.deps !== undefined) out.deps = doc.deps.map((dep) => rewriteDep(this.#o, base, dep));
    const body = enc.encode(JSON.stringify(out));
    return {
      body,
      etag: await etagOf(body),
      outcome: served.outcome,
      kind: served.kind,
      upstreamMs: served.upstreamMs,
    };
  }

  /**
   * The dependencies and file locations of the package.json behind a mirror path (`/github/o/r/ref/...`,
   * `/gitlab/...`, `/url/{scheme}/{host}/...`), with URLs as mirror paths; for the policy's dependency closure.
   */
  async mirrorDeps(path: string): Promise<{ deps: [string, string][]; files: string[] }> {
    const m = /^\/(github|gitlab)\/([^/]+)\/([^/]+)\/([^/]+)\/(.+)$/.exec(path) ??
      /^\/(url)\/(https?)\/([^/]+)\/()(.+)$/.exec(path);
    if (!m) return { deps: [], files: [] };
    const url = m[1] === "url"
      ? `${m[2]}://${m[3]}/${m[5]}`
      : rawUrl(this.#o, m[1] as "github" | "gitlab", m[2], m[3], m[4], m[5]);
    const served = await this.packageJson(url, m[4] || "HEAD", true, BASE_PLACEHOLDER);
    const doc = JSON.parse(new TextDecoder().decode(served.body));
    const strip = (u: string) => (u.startsWith(BASE_PLACEHOLDER) ? u.slice(BASE_PLACEHOLDER.length) : u);
    return {
      deps: (doc.deps ?? []) as [string, string][],
      files: ((doc.urls ?? []) as [string, string][]).map(([, u]) => strip(u)),
    };
  }
}
