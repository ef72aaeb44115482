/**
 * Named packages (`packages.<name>`) served as index manifests: every file the source lists is fetched by the server,
 * checked, stored content-addressed (so devices fetch `/file/...` from us), and listed under `hashes`. URL
 * dependencies are rewritten to this server. Manifests for branches follow `cache.ttl`; tags, commits and PyPI
 * releases are kept for good.
 * @module
 */
import { etagOf, sha256Hex } from "../store/hash.ts";
import type { FreshCache, Load } from "../cache/fresh_cache.ts";
import type { Served } from "../cache/served.ts";
import type { ObjectStore } from "../store/object_store.ts";
import { BadUpstream, DomainError, fromUpstream, NotFound, UpstreamFailed, UpstreamTimedOut } from "../errors.ts";
import type { Logger } from "../log.ts";
import { UpstreamError } from "../upstream/fetcher.ts";
import { BASE_PLACEHOLDER, parseSpec } from "./locations.ts";
import { checkManifest, clip, destinationProblem, readManifest, UnsafeManifestError } from "./names.ts";
import { rewriteDep } from "./repo_service.ts";
import { readPackageAt } from "./sources/package_url.ts";
import { parseSource } from "./sources/registry.ts";
import type { RepoSpec, Resolved, Source, SourceContext } from "./sources/source.ts";
import { fileKey, indexProfileKey, namedKey, repoKey, repoUrlKey } from "../store/keys.ts";

/** A file after the per-target step (compilation); `dest` may change (`x.py` → `x.mpy`). */
export interface Transformed {
  dest: string;
  bytes: Uint8Array;
}

/** What {@linkcode NamedService.indexManifest} reads an index package's source form from (the index service). */
export interface IndexReader {
  /** A manifest as the index has it, its own repository and mirror URLs on the base placeholder. */
  manifest(mpy: string, name: string, version: string, base: string): Promise<Served>;
  /** A file by (a prefix of) its sha256, checked. */
  file(hash: string): Promise<Served>;
}

/** An index package the index offers no source form of (no `py` manifest, or one listing `urls`). */
export class NoSourceForm extends Error {}

/** Turns a source file into what a device asking for `mpy` with `profile` gets. */
export type Transform = (file: Transformed, mpy: string, profile: string | null) => Promise<Transformed>;

/** What the named-package service is built from. */
export interface NamedServiceOptions {
  packages: Record<string, { source: string; ref: string | null }>;
  pins: Record<string, string>;
  cache: FreshCache;
  store: ObjectStore;
  /** What the sources are read with (the package.json reader is added here). */
  sources: Omit<SourceContext, "packageAt">;
  logger: Logger;
  /** The per-target step; without one, files are served as they are. */
  transform?: Transform;
  /** `cache.tag_ttl` in ms: how long a manifest built at a version tag stays fresh (null: for good). */
  tagTtl?: number | null;
}

const READ_CONCURRENCY = 4;
const enc = new TextEncoder();
const dec = new TextDecoder();

/** Runs `fn` over `items`, at most `limit` at once, keeping order. */
async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** Serves `packages.<name>` as index manifests. */
export class NamedService {
  #o: NamedServiceOptions;
  #ctx: SourceContext;
  #sources = new Map<string, Source>();

  constructor(options: NamedServiceOptions) {
    this.#o = options;
    const ctx: SourceContext = { ...options.sources, packageAt: (url, ref) => readPackageAt(ctx, url, ref) };
    this.#ctx = ctx;
    for (const [name, pkg] of Object.entries(options.packages)) {
      this.#sources.set(name, parseSource(pkg.source));
    }
  }

  /** Whether `name` is a named package. */
  has(name: string): boolean {
    return this.#sources.has(name);
  }

  /** The named packages' names. */
  names(): string[] {
    return [...this.#sources.keys()];
  }

  /** The ref `version` means for `name`: `latest` is the pin, else the configured ref, else the default. */
  refFor(name: string, version: string): string {
    if (version !== "latest") return version;
    return this.#o.pins[name] ?? this.#o.packages[name].ref ?? this.#sources.get(name)!.defaultRef;
  }

  /** Entries for `/index.json`, in the index's package layout. */
  indexEntries(): Record<string, unknown>[] {
    return this.names().map((name) => ({
      name,
      version: this.refFor(name, "latest"),
      description: `${this.#o.packages[name].source} (served by mipserver)`,
      author: "",
      license: "",
      versions: {},
    }));
  }

  /**
   * The manifest of `name` at `version` for a device asking for `mpy` (`py` or a number) with `profile`, with
   * dependency URLs made absolute on `base`.
   */
  async manifest(name: string, version: string, mpy: string, profile: string | null, base: string): Promise<Served> {
    return await this.#withBase(await this.#cached(name, version, mpy, profile), base);
  }

  /** The dependencies `name` at `version` states, as `[name or URL, version]` (URLs on this server's mirrors). */
  async deps(name: string, version: string): Promise<[string, string][]> {
    const served = await this.#cached(name, version, "py", null);
    return JSON.parse(dec.decode(served.body)).deps ?? [];
  }

  /**
   * A repository package that is no named package (a code-host dependency of one, `github:` and the like), built
   * into a manifest the same way: `path` is the package.json (or `.py` module) in the repository at `ref`.
   */
  async repoManifest(spec: RepoSpec, mpy: string, profile: string | null, base: string): Promise<Served> {
    const source = parseSource(`${spec.host}:${spec.owner}/${spec.repo}/${spec.path}`);
    const key = repoKey(spec, mpy, profile);
    const label = `${spec.host}:${spec.owner}/${spec.repo}`;
    const served = await this.#o.cache.get(
      "repo-manifest",
      key,
      source.mutability(spec.ref, this.#o.tagTtl ?? null),
      () => this.#build(label, source, spec.ref, mpy, profile),
    );
    return await this.#withBase(served, base);
  }

  /**
   * An index package for a device with a target profile, built like a named package from the index's source form
   * (its `py` manifest, whose `.py` files are compiled here for the profile): a site compiles its central server's
   * packages for its own profiles. Dependencies stay as the index states them, with this server's own repository and
   * mirror paths moved under the profile. Throws {@linkcode NoSourceForm} when the index has none to build from.
   */
  async indexManifest(
    index: IndexReader,
    name: string,
    version: string,
    mpy: string,
    profile: string,
    base: string,
  ): Promise<Served> {
    const source: Source = {
      kind: "index",
      text: `index:${name}`,
      defaultRef: "latest",
      mutability: (ref) => ref === "latest",
      resolve: async (_ctx, ref) => {
        let body: Uint8Array;
        try {
          body = (await index.manifest("py", name, ref, BASE_PLACEHOLDER)).body;
        } catch (e) {
          if (e instanceof NotFound) throw new NoSourceForm(`${name} ${ref} has no source form in the index`);
          throw e;
        }
        const doc = readManifest(body).doc as { hashes?: unknown; urls?: unknown; deps?: unknown; version?: unknown };
        if (Array.isArray(doc?.urls) && doc.urls.length > 0) {
          throw new NoSourceForm(`${name} ${ref}: the index's source form lists urls`);
        }
        // The index's own check: `hashes` are pairs of a safe install path and a hash. Only `deps` is read besides.
        checkManifest(doc, `the source form of ${name} ${ref}`);
        const deps = Array.isArray(doc.deps) ? doc.deps : [];
        for (const d of deps) {
          if (!Array.isArray(d) || typeof d[0] !== "string" || (d[1] !== undefined && typeof d[1] !== "string")) {
            throw new BadUpstream(
              `${name} ${ref}: the index's source form has a dependency that is not [name, version]: ${
                clip(JSON.stringify(d))
              }`,
            );
          }
        }
        return {
          version: typeof doc.version === "string" ? doc.version : ref,
          files: ((doc.hashes ?? []) as [string, string][]).map(([dest, hash]) => ({
            dest,
            from: `the index's file ${hash}`,
            read: async () => (await index.file(hash)).body,
          })),
          deps: (deps as [string, string | undefined][]).map((
            [dep, at],
          ) => [underProfile(dep, profile, mpy), at ?? "latest"]),
        };
      },
    };
    const served = await this.#o.cache.get(
      "manifest",
      indexProfileKey(profile, mpy, name, version),
      version === "latest",
      () => this.#build(name, source, version, mpy, profile),
    );
    return await this.#withBase(served, base);
  }

  /**
   * The package.json at a plain URL (`/url/{scheme}/{host}/...package.json` under a profile), built into a manifest
   * for `mpy` and `profile` like a named `url:` source.
   */
  async urlManifest(url: string, mpy: string, profile: string | null, base: string): Promise<Served> {
    const source = parseSource(`url:${url}`);
    const key = repoUrlKey(url, mpy, profile);
    const served = await this.#o.cache.get(
      "repo-manifest",
      key,
      true,
      () => this.#build(url, source, "latest", mpy, profile),
    );
    return await this.#withBase(served, base);
  }

  async #withBase(served: Served, base: string): Promise<Served> {
    const text = dec.decode(served.body);
    if (!text.includes(`"${BASE_PLACEHOLDER}`)) return served;
    const body = enc.encode(text.replaceAll(`"${BASE_PLACEHOLDER}`, `"${base}`));
    return { ...served, body, etag: await etagOf(body) };
  }

  #cached(name: string, version: string, mpy: string, profile: string | null): Promise<Served> {
    const source = this.#sources.get(name);
    if (!source) throw new NotFound(`${name} is not a named package`);
    const ref = this.refFor(name, version);
    const key = namedKey(name, mpy, profile, ref);
    return this.#o.cache.get(
      "named",
      key,
      source.mutability(ref, this.#o.tagTtl ?? null),
      () => this.#build(name, source, ref, mpy, profile),
    );
  }

  /**
   * A dependency as a device given this manifest should ask for it: code-host packages (`github:`, ...) become manifests
   * built here for the same `mpy` and profile (so they are compiled and hash-checked too); single-module and
   * http(s) dependencies become mirror URLs; index names stay.
   */
  #dep(dep: [string, string], mpy: string, profile: string | null): [string, string] {
    const spec = parseSpec(dep[0]);
    if (spec && !/\.(py|mpy)$/.test(spec.path)) {
      const ref = dep[1] && dep[1] !== "latest" ? dep[1] : "HEAD";
      const path = spec.path ? `${spec.path}/package.json` : "package.json";
      const prefix = profile ? `/t/${profile}` : "";
      return [
        `${BASE_PLACEHOLDER}${prefix}/repo/${mpy}/${spec.host}/${spec.owner}/${spec.repo}/${ref}/${path}`,
        dep[1],
      ];
    }
    return rewriteDep(this.#o.sources.bases, BASE_PLACEHOLDER, dep);
  }

  /** The destination rule every manifest we serve follows; a refusal is a logged 502 and nothing is cached. */
  #checkDest(name: string, dest: string, from: string): void {
    const why = destinationProblem(dest);
    if (!why) return;
    const message = `Refused package ${name}: file ${JSON.stringify(clip(dest))} (${clip(from)}) ` +
      `is not a safe install path (${why})`;
    this.#o.logger.error("Refused an unsafe manifest; not cached", { package: name, reason: message });
    throw new UnsafeManifestError(message);
  }

  async #build(name: string, source: Source, ref: string, mpy: string, profile: string | null): Promise<Load> {
    const t0 = performance.now();
    const resolved: Resolved = await source.resolve(this.#ctx, ref);
    for (const file of resolved.files) this.#checkDest(name, file.dest, file.from);
    const seen = new Set<string>();
    const hashes = await mapLimit(resolved.files, READ_CONCURRENCY, async (file) => {
      let bytes: Uint8Array;
      try {
        bytes = await file.read();
      } catch (e) {
        if (e instanceof DomainError && !(e instanceof NotFound)) throw e;
        const why = e instanceof Error ? e.message : String(e);
        const message = `${name}: url entry ${JSON.stringify(file.dest)} (${file.from}) failed: ${why}`;
        const failed = e instanceof UpstreamError ? fromUpstream(e) : undefined;
        throw failed instanceof UpstreamTimedOut
          ? new UpstreamTimedOut(message, failed.retryAfterSeconds)
          : failed instanceof UpstreamFailed
          ? new UpstreamFailed(message, failed)
          : new UpstreamFailed(message);
      }
      let out: Transformed = { dest: file.dest, bytes };
      if (this.#o.transform) out = await this.#o.transform(out, mpy, profile);
      this.#checkDest(name, out.dest, file.from);
      if (seen.has(out.dest)) throw new BadUpstream(`${name}: two url entries install to ${out.dest}`);
      seen.add(out.dest);
      const hash = await sha256Hex(out.bytes);
      const key = fileKey(hash);
      if (!(await this.#o.store.has(key))) await this.#o.store.put(key, out.bytes);
      return [out.dest, hash];
    });
    const deps = resolved.deps.map((dep) => this.#dep(dep, mpy, profile));
    const manifest = { v: 1, name, version: resolved.version, hashes, deps };
    this.#o.logger.info("Built a manifest", { name, ref, mpy, profile, files: hashes.length });
    return { body: enc.encode(JSON.stringify(manifest)), ms: performance.now() - t0 };
  }
}

/**
 * A dependency of an index package's source form, for the same package built for `profile`: this server's own
 * repository manifests (`{base}/repo/py/...`) and mirrors (`{base}/github/...`) under `/t/{profile}` (the repository
 * manifests for `mpy`); anything else (an index name, another server's URL) as it is.
 */
function underProfile(dep: string, profile: string, mpy: string): string {
  if (!dep.startsWith(`${BASE_PLACEHOLDER}/`)) return dep;
  const path = dep.slice(BASE_PLACEHOLDER.length).replace(/^\/t\/[^/]+\//, "/");
  const repo = /^\/repo\/[^/]+\//.exec(path);
  if (repo) return `${BASE_PLACEHOLDER}/t/${profile}/repo/${mpy}/${path.slice(repo[0].length)}`;
  return `${BASE_PLACEHOLDER}/t/${profile}${path}`;
}
