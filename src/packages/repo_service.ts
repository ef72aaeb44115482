/**
 * Ad-hoc mirrors: `/github/{owner}/{repo}/{ref}/{path...}` (and `/gitlab/...`, `/codeberg/...`: one per code host of
 * the source registry) and `/url/{scheme}/{host}/{path...}` serve
 * upstream files through the cache, and rewrite `package.json` so every `urls` entry and every URL dependency points
 * back at this server with an absolute URL (devices before MicroPython 1.25 cannot resolve relative URLs, and a device
 * should never have to reach GitHub or the internet itself).
 * @module
 */
import type { FreshCache, Mutability } from "../cache/fresh_cache.ts";
import type { Served } from "../cache/served.ts";
import { etagOf } from "../store/hash.ts";
import { mirrorKey } from "../store/keys.ts";
import { BadUpstream } from "../errors.ts";
import type { Fetcher } from "../upstream/fetcher.ts";
import {
  BASE_PLACEHOLDER,
  type HostBases,
  isRepoUrl,
  mirrorPath,
  parseSpec,
  rawUrl,
  refMutability,
  specUrl,
} from "./locations.ts";
import { type PackageDoc, readPackageJson } from "./package_json.ts";
import { upstreamUrls } from "./sources/package_url.ts";
import { REPO_HOST_ALTERNATIVES } from "./sources/registry.ts";
import { nameOfUrlsPackage, urlsFormDep } from "./urls_form.ts";

/** What the mirror service is built from. */
export interface RepoServiceOptions {
  /** The code hosts' bases (`upstreams.<host>`). */
  bases: HostBases;
  cache: FreshCache;
  fetcher: Fetcher;
  /** Longest chain of repository dependencies served (default {@linkcode MAX_DEPS_DEPTH}). */
  maxDepth?: number;
  /** `cache.tag_ttl` in ms (null: tags for good), as the mirror routes cache content at a tag. */
  tagTtl?: number | null;
}

/** Longest chain of repository dependencies (package.json → package.json) a manifest may start. */
export const MAX_DEPS_DEPTH = 32;
/** Most distinct repository packages one manifest's dependencies may reach. */
export const MAX_DEPS_NODES = 500;

const enc = new TextEncoder();

/** `/{host}/{owner}/{repo}/{ref}/{path}` of a code host's mirror. */
const REPO_MIRROR = new RegExp(`^/(${REPO_HOST_ALTERNATIVES})/([^/]+)/([^/]+)/([^/]+)/(.+)$`);

/**
 * Rewrites a dependency to what a device should ask for: index names stay names; code-host specs (`github:`, ...) and
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
    const key = mirrorKey(mirrorPath(this.#o.bases, url));
    return this.#o.cache.get("repo", key, mutable, async () => {
      const loaded = await this.#o.fetcher.get(url);
      check?.(loaded.body);
      return loaded;
    });
  }

  /**
   * The package.json at `url` with every `urls` entry made absolute on this server (`base`, e.g. `http://gw:18891`)
   * and URL dependencies pointed at this server's mirrors. `ref` is what code-host entries (`github:`, ...) resolve
   * with.
   */
  async packageJson(url: string, ref: string, mutable: Mutability, base: string): Promise<Served> {
    // A package.json that cannot be served is refused before it is cached.
    const check = (body: Uint8Array) => void upstreamUrls(this.#o.bases, readPackageJson(body, `at ${url}`), url, ref);
    const served = await this.raw(url, mutable, check);
    const doc = readPackageJson(served.body, `at ${url}`);
    await this.checkDeps(url, ref, doc);
    const out = { ...doc.raw };
    if (doc.urls.length > 0 || out.urls !== undefined || doc.hashes.length > 0) {
      out.urls = [
        ...upstreamUrls(this.#o.bases, doc, url, ref).map(([dest, upstream]) => [
          dest,
          `${base}${mirrorPath(this.#o.bases, upstream)}`,
        ]),
        // mip fetches hashes from the device's own index; as URLs here they come from this server's /file/.
        ...doc.hashes.map(([dest, hash]) => [dest, `${base}/file/${hash.slice(0, 2)}/${hash}`]),
      ];
      delete out.hashes;
    }
    if (out.deps !== undefined) {
      const target = { base, prefix: "", mpy: "py", bases: this.#o.bases };
      out.deps = doc.deps.map((dep) => urlsFormDep(target, dep));
    }
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
   * The dependencies and file locations of the package.json behind a mirror path (`/github/o/r/ref/...`, the
   * other code hosts', `/url/{scheme}/{host}/...`), with URLs as mirror paths; for the policy's dependency closure.
   */
  async mirrorDeps(path: string): Promise<{ deps: [string, string][]; files: string[] }> {
    const m = REPO_MIRROR.exec(path) ?? /^\/(url)\/(https?)\/([^/]+)\/()(.+)$/.exec(path);
    if (!m) return { deps: [], files: [] };
    const url = m[1] === "url" ? `${m[2]}://${m[3]}/${m[5]}` : rawUrl(this.#o.bases, m[1], m[2], m[3], m[4], m[5]);
    const served = await this.packageJson(url, m[4] || "HEAD", true, BASE_PLACEHOLDER);
    const doc = JSON.parse(new TextDecoder().decode(served.body));
    const strip = (u: string) => (u.startsWith(BASE_PLACEHOLDER) ? u.slice(BASE_PLACEHOLDER.length) : u);
    return {
      deps: ((doc.deps ?? []) as [string, string][]).map((dep) =>
        dep[0].startsWith(BASE_PLACEHOLDER) ? nameOfUrlsPackage(strip(dep[0])) ?? dep : dep
      ),
      files: ((doc.urls ?? []) as [string, string][]).map(([, u]) => strip(u)),
    };
  }

  /**
   * Walks the repository dependencies (code-host specs and http(s) package.json deps) reachable from the
   * package.json at `url` (already parsed as `doc`), through the cache, and refuses a manifest a device could not
   * finish installing: a dependency cycle (mip has no cycle guard and would loop), a chain deeper than `maxDepth`, or
   * more than {@linkcode MAX_DEPS_NODES} packages. Dependencies that cannot be read are left for the device to meet.
   */
  async checkDeps(url: string, ref: string, doc?: PackageDoc): Promise<void> {
    const maxDepth = this.#o.maxDepth ?? MAX_DEPS_DEPTH;
    const label = (u: string) => mirrorPath(this.#o.bases, u);
    // The longest chain below each package walked so far, itself included: a package reached again by a longer path
    // is not walked again, but its chain still counts.
    const heights = new Map<string, number>();
    const path: string[] = [];
    const tooDeep = (node: string, more = false) => {
      const shown = path.length > 4 ? [label(path[0]), label(path[1]), "...", label(path.at(-1)!)] : path.map(label);
      return new BadUpstream(
        `Dependency chain deeper than ${maxDepth} packages: ${
          [...shown, label(node), ...(more ? ["..."] : [])].join(" -> ")
        }`,
      );
    };
    const visit = async (node: string, nodeRef: string, known?: PackageDoc): Promise<number> => {
      const open = path.indexOf(node);
      if (open >= 0) {
        throw new BadUpstream(
          `Dependency cycle: ${[...path.slice(open), node].map(label).join(" -> ")}; mip would install it forever`,
        );
      }
      const height = heights.get(node);
      if (height !== undefined) {
        if (path.length + height > maxDepth) throw tooDeep(node, true);
        return height;
      }
      if (path.length >= maxDepth) throw tooDeep(node);
      if (heights.size >= MAX_DEPS_NODES) {
        throw new BadUpstream(
          `More than ${MAX_DEPS_NODES} repository packages in the dependencies of ${label(url)}`,
        );
      }
      let current = known;
      if (!current) {
        try {
          // Read as the mirror route caches it, so a moved tag is seen after cache.tag_ttl here too.
          const mutable = isRepoUrl(this.#o.bases, node) ? refMutability(nodeRef, this.#o.tagTtl ?? null) : true;
          current = readPackageJson((await this.raw(node, mutable)).body, `at ${node}`);
        } catch {
          heights.set(node, 1);
          return 1; // the device meets this failure itself, with its own answer
        }
      }
      path.push(node);
      let below = 0;
      try {
        for (const [dep, version] of current.deps) {
          const next = repoDepUrl(this.#o.bases, dep, version);
          if (next) below = Math.max(below, await visit(next.url, next.ref));
        }
      } finally {
        path.pop();
      }
      heights.set(node, below + 1);
      return below + 1;
    };
    await visit(url, ref, doc);
  }

  /**
   * {@linkcode checkDeps} for the package.json behind a mirror path (`/github/o/r/ref/[dir/]package.json`, the
   * other code hosts', `/url/{scheme}/{host}/...json`); other paths (single modules) have no dependencies.
   */
  async checkMirrorDeps(path: string): Promise<void> {
    const m = REPO_MIRROR.exec(path) ?? /^\/(url)\/(https?)\/([^/]+)\/()(.+)$/.exec(path);
    if (!m || !m[5].endsWith(".json")) return;
    const url = m[1] === "url" ? `${m[2]}://${m[3]}/${m[5]}` : rawUrl(this.#o.bases, m[1], m[2], m[3], m[4], m[5]);
    await this.checkDeps(url, m[4] || "HEAD");
  }
}

/** The package.json URL (and ref) a repository dependency names, or undefined for index names and single modules. */
function repoDepUrl(bases: HostBases, dep: string, version: string): { url: string; ref: string } | undefined {
  const spec = parseSpec(dep);
  const ref = version && version !== "latest" ? version : "HEAD";
  if (spec) {
    if (/\.(py|mpy)$/.test(spec.path)) return undefined;
    return { url: specUrl(bases, dep, ref, true)!, ref };
  }
  if (/^https?:\/\//.test(dep) && !/\.(py|mpy)$/.test(dep)) {
    try {
      const url = /\.json$/.test(dep) ? dep : `${dep.replace(/\/+$/, "")}/package.json`;
      return { url: new URL(url).href, ref: "HEAD" };
    } catch {
      return undefined;
    }
  }
  return undefined;
}
