/**
 * What a package source is (`packages.<name>.source`, and the repository dependencies named packages pull in): the
 * {@linkcode Source} interface every kind implements, and the {@linkcode SourceKind} a kind registers (its prefix,
 * how the configuration checks it, how it is parsed). One file per kind beside this one; `registry.ts` lists them.
 * @module
 */
import { BadUpstream, NotFound } from "../../errors.ts";
import type { Logger } from "../../log.ts";
import type { Fetcher } from "../../upstream/fetcher.ts";

/** One file of a package: where it installs and how to get its bytes. */
export interface SourceFile {
  dest: string;
  /** Where it comes from, for messages (a URL or a path). */
  from: string;
  read(): Promise<Uint8Array>;
}

/** A package at one ref or version. */
export interface Resolved {
  version: string;
  files: SourceFile[];
  /** `[name or URL, version]`, as the package states them. */
  deps: [string, string][];
}

/**
 * The bases of the code hosts (`upstreams.<kind>`), by kind name: `{github: "https://raw.githubusercontent.com",
 * ...}`. A code host missing here is read at its default base.
 */
export type HostBases = Readonly<Record<string, string | undefined>>;

/** What the readers need. */
export interface SourceContext {
  fetcher: Fetcher;
  bases: HostBases;
  /** `upstreams.pypi`, the JSON API base. */
  pypi: string;
  logger: Logger;
  /**
   * The package whose package.json is at `url`, read at `ref`: its `urls` resolved to upstream URLs the way mip
   * resolves them (relative, http(s) and code-host entries), its deps as stated. Shared by every kind whose package
   * lives at a URL; handed in because resolving `urls` needs every registered code host.
   */
  packageAt(url: string, ref: string): Promise<Resolved>;
}

/** A parsed source: one package, readable at a ref. */
export interface Source {
  /** The kind's name, the prefix the source is written with (`github`, `pypi`, ...). */
  readonly kind: string;
  /** The source as written, e.g. `codeberg:acme/kit/sub`. */
  readonly text: string;
  /** The ref read when nothing asks for one (`HEAD` for code hosts, else `latest`). */
  readonly defaultRef: string;
  /** For a code-host source: the repository (and folder or file in it) it reads. */
  readonly repo?: { host: string; owner: string; repo: string; path: string };
  /**
   * How long the package at `ref` stays fresh: `false` for good (commits, explicit releases), a number of ms
   * (version tags, `tagTtl`; for good when that is null), `true` for `cache.ttl` (branches, `latest`).
   */
  mutability(ref: string, tagTtl: number | null): boolean | number;
  /** Reads the package's files and deps at `ref`. Errors are domain errors (`../../errors.ts`) or UpstreamErrors naming what failed. */
  resolve(ctx: SourceContext, ref: string): Promise<Resolved>;
}

/**
 * A code host's raw-file layout, for the kinds that are code hosts (`github:`, `gitlab:`, `codeberg:`). Its kind's
 * name is also its mirror route (`/{name}/{owner}/{repo}/{ref}/{path}`), its dependency manifests'
 * (`/repo/{mpy}/{name}/...`) and its `upstreams.<name>` key.
 */
export interface RepoHost {
  /** The kind's name. */
  readonly name: string;
  /** `upstreams.<name>` when nothing is configured. */
  readonly defaultBase: string;
  /**
   * `upstreams.<name>_token`: a token sent (as `Authorization: token ...`) only to this host's configured base host
   * and `hosts`; `env` are the environment variables that set it.
   */
  readonly token?: { readonly env: readonly string[]; readonly hosts?: readonly string[] };
  /** The raw URL of `path` (`""`: the repository itself) in `owner/repo` at `ref`, under `base`. */
  rawUrl(base: string, owner: string, repo: string, ref: string, path: string): string;
  /**
   * The URL prefix a repository's files at `ref` share (ending in `/`): relative `urls` of a package.json must
   * resolve under it, and what follows it is the file's path in the repository.
   */
  root(base: string, owner: string, repo: string, ref: string): string;
  /** A raw URL under `base` split into its parts (the path as it appears in the URL), or undefined for other URLs. */
  parseRaw(base: string, url: string): RepoFile | undefined;
  /**
   * Where this host's own raw layout differs from the mirror's `/{owner}/{repo}/{ref}/{path}`: the route under
   * `/{name}` (router segments, ending in `*rest`) at which a server answers raw files in that layout, read with
   * {@linkcode RepoHost.parseRaw}, so that a site's `upstreams.<name>` can be a central server's `/{name}`.
   */
  readonly rawRoute?: string;
}

/** A file (or folder) in a repository at a ref. */
export interface RepoFile {
  owner: string;
  repo: string;
  ref: string;
  path: string;
}

/** A file in a repository on a code host (a kind's name), at a ref. */
export interface RepoSpec extends RepoFile {
  host: string;
}

/** A kind of source, as the registry lists it. */
export interface SourceKind {
  /** The prefix a source of this kind is written with, before the `:`: lowercase letters. */
  readonly name: string;
  /** What must follow `name:` in `packages.<name>.source` (the config schema checks it). */
  readonly pattern: RegExp;
  /** How a source of this kind is written, for messages: `github:owner/repo[/path]`. */
  readonly example: string;
  /** Whether a source has versions to ask for (`ref`, pins); false: one version only, `latest`. */
  readonly versioned: boolean;
  /** Whether `..` segments may follow the prefix (a local folder); repository paths and URLs never take them. */
  readonly parentSegments?: boolean;
  /** Set for code hosts: their raw-file layout. */
  readonly host?: RepoHost;
  /** Parses what follows `name:` (already checked against `pattern`); throws an Error saying why not. */
  parse(rest: string): Source;
}

/** A package that is one module at `url`, installed as `dest`. */
export function singleModule(ctx: SourceContext, url: string, dest: string, version: string): Resolved {
  return { version, files: [{ dest, from: url, read: async () => (await ctx.fetcher.get(url)).body }], deps: [] };
}

/** An answer for a version a source does not have: a 404 that names what was asked. */
export function notFound(message: string): NotFound {
  return new NotFound(message);
}

/** An answer for an upstream that sent something unusable: a 502 that says what. */
export function badUpstream(message: string): BadUpstream {
  return new BadUpstream(message);
}

/** The one version a source without versions has; anything else is a 404 saying so. */
export function onlyLatest(kind: string, ref: string): void {
  if (ref !== "latest") throw notFound(`${kind}: sources have one version only; ask for latest, not ${ref}`);
}
