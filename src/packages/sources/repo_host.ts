/**
 * What every code-host kind shares (`github:`, `gitlab:`, `codeberg:`): a source is `{host}:owner/repo[/path]`, read at
 * a branch, tag or commit (`HEAD` by default, as mip does); a path ending in `.py` or `.mpy` is a single module, any
 * other names a folder holding a package.json (or a `.json` file itself). A host's file only gives its raw-file
 * layout to {@linkcode repoKind}.
 * @module
 */
import {
  type HostBases,
  type RepoHost,
  type Resolved,
  singleModule,
  type Source,
  type SourceContext,
  type SourceKind,
} from "./source.ts";

const COMMIT = /^[0-9a-f]{40}$/;
const TAG = /^v?\d+(\.\d+)*([-+][A-Za-z0-9.+-]*|(a|b|rc)\d+)?$/;

/** What follows `{host}:` in `packages.<name>.source`: `owner/repo` and an optional path in the repository. */
export const REPO_SOURCE = /^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.+\/-]+)?$/;

/** `owner/repo[/path]` as mip reads it after the prefix (any path; trailing slashes dropped). */
const SPEC = /^([A-Za-z0-9_.-]+)\/([A-Za-z0-9_.-]+)(?:\/(.*))?$/;

/**
 * Whether a ref names content that never changes: a commit SHA, or a version-like tag (`v1.2`, `1.0.3`, `2.0-rc1`).
 * Branch names (`main`, `HEAD`, `dev`) are re-resolved after `cache.ttl`.
 */
export function isImmutableRef(ref: string): boolean {
  return COMMIT.test(ref) || TAG.test(ref);
}

/**
 * How long content at `ref` stays fresh in the cache: commits for good; version-like tags for `tagTtl` ms (for good
 * when null), because a tag can be moved upstream even though it normally is not; branches for `cache.ttl` (`true`).
 */
export function refMutability(ref: string, tagTtl: number | null): boolean | number {
  if (COMMIT.test(ref)) return false;
  if (TAG.test(ref)) return tagTtl ?? false;
  return true;
}

/** `owner/repo[/path]` split up (trailing slashes of the path dropped), or undefined when it is not one. */
export function splitRepoSpec(rest: string): { owner: string; repo: string; path: string } | undefined {
  const m = SPEC.exec(rest);
  if (!m) return undefined;
  return { owner: m[1], repo: m[2], path: (m[3] ?? "").replace(/\/+$/, "") };
}

/** The base a code host is read at: `upstreams.<name>`, else its default. */
export function baseOf(bases: HostBases, host: RepoHost): string {
  return bases[host.name] ?? host.defaultBase;
}

/** Whether a path in a repository is a single module rather than a package. */
export function isModulePath(path: string): boolean {
  return /\.(py|mpy)$/.test(path);
}

/** The path of the package.json a repository spec's path names (a `.json` path is one already). */
export function packageJsonPath(path: string): string {
  if (/\.(py|mpy|json)$/.test(path)) return path;
  return path ? `${path}/package.json` : "package.json";
}

/** The source kind of a code host: `{name}:owner/repo[/path]`, read through `host`'s raw-file layout. */
export function repoKind<const H extends RepoHost>(
  host: H,
): SourceKind & { readonly name: H["name"]; readonly host: H } {
  const name: H["name"] = host.name;
  return {
    name,
    pattern: REPO_SOURCE,
    example: `${name}:owner/repo[/path]`,
    versioned: true,
    host,
    parse(rest: string): Source {
      const spec = splitRepoSpec(rest);
      if (!spec) throw new Error(`expected ${name}:owner/repo[/path], got ${name}:${rest}`);
      const { owner, repo, path } = spec;
      return {
        kind: name,
        text: `${name}:${rest}`,
        defaultRef: "HEAD",
        repo: { host: name, owner, repo, path },
        mutability: refMutability,
        resolve(ctx: SourceContext, ref: string): Promise<Resolved> {
          const base = baseOf(ctx.bases, host);
          if (isModulePath(path)) {
            const url = host.rawUrl(base, owner, repo, ref, path);
            return Promise.resolve(singleModule(ctx, url, path.split("/").pop()!, ref));
          }
          return ctx.packageAt(host.rawUrl(base, owner, repo, ref, packageJsonPath(path)), ref);
        },
      };
    },
  };
}
