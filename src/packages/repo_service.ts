/**
 * Ad-hoc repository mirrors: `/github/{owner}/{repo}/{ref}/{path...}` and `/gitlab/...` serve raw files from the
 * configured GitHub/GitLab hosts through the cache, and rewrite `package.json` so every `urls` entry and every
 * `github:`/`gitlab:` dependency points back at this server with an absolute URL (devices before MicroPython 1.25
 * cannot resolve relative URLs, and a device should never have to reach GitHub itself).
 * @module
 */
import { posix } from "node:path";
import type { FreshCache, Served } from "../cache/fresh_cache.ts";
import { etagOf } from "../cache/hash.ts";
import { HttpError } from "../http/responses.ts";
import type { Fetcher } from "../upstream/fetcher.ts";

/** The code hosts with raw-file mirrors. */
export type RepoHost = "github" | "gitlab";

/** Where a file lives in a repository. */
export interface RepoFile {
  host: RepoHost;
  owner: string;
  repo: string;
  ref: string;
  path: string;
}

/** What the repository service is built from. */
export interface RepoServiceOptions {
  cache: FreshCache;
  fetcher: Fetcher;
  /** GitHub raw-file base, e.g. https://raw.githubusercontent.com. */
  github: string;
  /** GitLab base, e.g. https://gitlab.com. */
  gitlab: string;
}

const COMMIT = /^[0-9a-f]{40}$/;
const enc = new TextEncoder();

/** The upstream URL of a raw file, in each host's layout. */
export function rawUrl(o: { github: string; gitlab: string }, f: RepoFile): string {
  return f.host === "github"
    ? `${o.github}/${f.owner}/${f.repo}/${f.ref}/${f.path}`
    : `${o.gitlab}/${f.owner}/${f.repo}/-/raw/${f.ref}/${f.path}`;
}

/** Rewrites a `github:`/`gitlab:` reference (`org/repo[/path]`) to this server's mirror URL. */
function mirrorOf(base: string, spec: string, ref: string): string | undefined {
  const m = /^(github|gitlab):([^/]+)\/([^/]+)(?:\/(.+))?$/.exec(spec);
  if (!m) return undefined;
  return `${base}/${m[1]}/${m[2]}/${m[3]}/${ref}${m[4] ? `/${m[4]}` : ""}`;
}

/** Serves raw repository files and rewritten package.json manifests. */
export class RepoService {
  #o: RepoServiceOptions;
  constructor(options: RepoServiceOptions) {
    this.#o = options;
  }

  /** A raw file, cached: for a commit SHA for good, for a branch or tag name for `cache.ttl`. */
  raw(f: RepoFile): Promise<Served> {
    const key = `repos/${f.host}/${f.owner}/${f.repo}/${f.ref}/${f.path}`;
    const url = rawUrl(this.#o, f);
    return this.#o.cache.get("repo", key, !COMMIT.test(f.ref), () => this.#o.fetcher.get(url));
  }

  /**
   * `package.json` with every `urls` entry made absolute on this server (`base`, e.g. `http://gw:18891`) and
   * `github:`/`gitlab:` dependencies pointed at this server's mirrors.
   */
  async packageJson(f: RepoFile, base: string): Promise<Served> {
    const served = await this.raw(f);
    let doc: Record<string, unknown>;
    try {
      doc = JSON.parse(new TextDecoder().decode(served.body));
      if (typeof doc !== "object" || doc === null || Array.isArray(doc)) throw new Error("not a JSON object");
    } catch (e) {
      throw new HttpError(502, `Malformed package.json at ${rawUrl(this.#o, f)}: ${(e as Error).message}`);
    }
    const dir = posix.dirname(f.path);
    const here = `${base}/${f.host}/${f.owner}/${f.repo}/${f.ref}`;
    if (doc.urls !== undefined) {
      if (!Array.isArray(doc.urls)) {
        throw new HttpError(502, `Malformed package.json at ${rawUrl(this.#o, f)}: urls is not a list`);
      }
      doc.urls = doc.urls.map((entry: unknown) => {
        if (!Array.isArray(entry) || entry.length !== 2 || typeof entry[1] !== "string") {
          throw new HttpError(
            502,
            `Malformed package.json at ${rawUrl(this.#o, f)}: bad urls entry ${JSON.stringify(entry)}`,
          );
        }
        const [dest, src] = entry as [string, string];
        if (/^https?:\/\//.test(src)) return [dest, src];
        const mirrored = mirrorOf(base, src, f.ref);
        if (mirrored) return [dest, mirrored];
        const rel = posix.normalize(posix.join(dir, src));
        if (rel.startsWith("..") || posix.isAbsolute(rel)) {
          throw new HttpError(
            502,
            `package.json at ${rawUrl(this.#o, f)}: url ${JSON.stringify(src)} leaves the repository`,
          );
        }
        return [dest, `${here}/${rel}`];
      });
    }
    if (doc.deps !== undefined) {
      if (!Array.isArray(doc.deps)) {
        throw new HttpError(502, `Malformed package.json at ${rawUrl(this.#o, f)}: deps is not a list`);
      }
      doc.deps = doc.deps.map((dep: unknown) => {
        if (!Array.isArray(dep) || typeof dep[0] !== "string") {
          throw new HttpError(
            502,
            `Malformed package.json at ${rawUrl(this.#o, f)}: bad deps entry ${JSON.stringify(dep)}`,
          );
        }
        const version = typeof dep[1] === "string" && dep[1] !== "latest" ? dep[1] : "HEAD";
        const mirrored = mirrorOf(base, dep[0], version);
        return mirrored ? [mirrored, dep[1] ?? "latest"] : dep;
      });
    }
    const body = enc.encode(JSON.stringify(doc));
    return {
      body,
      etag: await etagOf(body),
      outcome: served.outcome,
      upstreamMs: served.upstreamMs,
    };
  }
}
