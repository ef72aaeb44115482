/**
 * The one place device requests are answered from: (name, version, mpy, profile) → manifest, with the policy and
 * pins applied; named packages first, then the upstream indexes.
 * @module
 */
import { etagOf } from "../cache/hash.ts";
import type { Served } from "../cache/fresh_cache.ts";
import type { PinnedFiles } from "./pinned.ts";
import type { DiskStore } from "../cache/store.ts";
import { HttpError } from "../http/responses.ts";
import type { IndexService } from "./index_service.ts";
import type { NamedService } from "./named_service.ts";
import type { Policy } from "./policy.ts";

/** What the resolver is built from. */
export interface ResolverOptions {
  index: IndexService;
  named: NamedService;
  policy: Policy;
  pins: Record<string, string>;
  store: DiskStore;
  /** Notes the files of pinned releases as their manifests are served, so eviction keeps them. */
  pinned?: PinnedFiles;
  /** What `mipserver import` brought in (`src/bundle/layer.ts`): served first, and the reason when offline. */
  imported?: ImportedLayer;
}

/** The imported layer as the resolver uses it. */
export interface ImportedLayer {
  /** The imported manifest of `name` at `version` for `mpy` and `profile`, if any. */
  manifest(
    mpy: string,
    name: string,
    version: string,
    profile: string | null,
    base: string,
  ): Promise<Served | undefined>;
  /** The imported manifest at request path `path` (no leading `/`), if any. */
  served(path: string, base: string): Promise<Served | undefined>;
  /** `index.json` with the imported packages merged in (`upstream` undefined when it failed). */
  mergeIndex(upstream: Served | undefined): Promise<Served | undefined>;
  /** The error to answer when the usual way failed for `what` (a 503 when offline and nothing was imported). */
  explain(e: unknown, what: string): unknown;
  /** Waits for the usual way to answer `what`, at most a moment when upstream is known to be down. */
  guard<T>(work: Promise<T>, what: string): Promise<T>;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** The dependencies of `name` at its latest (or pinned) version, for the policy's closure. */
export async function dependenciesOf(
  index: IndexService,
  named: NamedService,
  pins: Record<string, string>,
  name: string,
): Promise<[string, string][]> {
  if (named.has(name)) return await named.deps(name, "latest");
  const served = await index.manifest("py", name, pins[name] ?? "latest");
  const deps = JSON.parse(dec.decode(served.body)).deps ?? [];
  return deps.map((
    d: unknown,
  ) => (Array.isArray(d) ? [String(d[0]), String(d[1] ?? "latest")] : [String(d), "latest"]));
}

/** Answers the index API. */
export class Resolver {
  #o: ResolverOptions;
  constructor(options: ResolverOptions) {
    this.#o = options;
  }

  /** The policy in force. */
  get policy(): Policy {
    return this.#o.policy;
  }

  /** `index.json`: the upstream indexes merged, named packages added (they win), filtered by the policy. */
  async indexJson(): Promise<Served> {
    const imported = this.#o.imported;
    if (!imported) return await this.#indexJson();
    let served: Served | undefined;
    let failure: unknown;
    try {
      served = await imported.guard(this.#indexJson(), "index.json");
    } catch (e) {
      failure = e;
    }
    const merged = await imported.mergeIndex(served);
    if (!merged) throw imported.explain(failure, "index.json");
    return merged;
  }

  async #indexJson(): Promise<Served> {
    const { named, policy } = this.#o;
    let served: Served | undefined;
    let failure: unknown;
    try {
      served = await this.#o.index.indexJson();
    } catch (e) {
      if (named.names().length === 0) throw e;
      failure = e;
    }
    if (named.names().length === 0 && !policy.denying) return served!;
    const doc = served ? JSON.parse(dec.decode(served.body)) : { v: 2, updated: 0, packages: [] };
    const mine = new Set(named.names());
    let packages: Record<string, unknown>[] = [
      ...named.indexEntries(),
      ...(doc.packages ?? []).filter((p: { name?: string }) => !mine.has(p.name ?? "")),
    ];
    if (policy.denying) {
      const allowed = await policy.allowed();
      packages = packages.filter((p) => allowed.names.has(p.name as string));
    }
    const body = enc.encode(JSON.stringify({ ...doc, packages }));
    return {
      body,
      etag: await etagOf(body),
      outcome: served?.outcome ?? (failure ? "stale" : "hit"),
      kind: "index",
      upstreamMs: served?.upstreamMs,
    };
  }

  /** `package/{mpy}/{name}/{version}.json`; `base` is this server's URL as the device sees it. */
  async manifest(mpy: string, name: string, version: string, profile: string | null, base: string): Promise<Served> {
    await this.#o.policy.checkName(name);
    const named = this.#o.named.has(name);
    const resolved = version === "latest" ? this.#o.pins[name] ?? version : version;
    const imported = await this.#o.imported?.manifest(mpy, name, resolved, profile, base);
    if (imported) {
      this.#o.policy.noteManifest(name, imported.body);
      return imported;
    }
    let served: Served;
    const what = `${name} ${version} (${mpy})`;
    try {
      const work = named
        ? this.#o.named.manifest(name, version, mpy, profile, base)
        : this.#o.index.manifest(mpy, name, resolved);
      served = await (this.#o.imported?.guard(work, what) ?? work);
    } catch (e) {
      throw this.#o.imported?.explain(e, what) ?? e;
    }
    this.#o.policy.noteManifest(name, served.body);
    if (!named && this.#o.pinned?.isPinned(name, resolved)) this.#o.pinned.note(served.body);
    return served;
  }

  /** `repo/{mpy}/{github|gitlab}/{owner}/{repo}/{ref}/{path}`: a repository dependency built into a manifest. */
  async repoManifest(
    mpy: string,
    spec: { host: "github" | "gitlab"; owner: string; repo: string; ref: string; path: string },
    profile: string | null,
    base: string,
  ): Promise<Served> {
    await this.#o.policy.checkMirror(`/${spec.host}/${spec.owner}/${spec.repo}/${spec.ref}/${spec.path}`);
    const path = `${
      profile ? `t/${profile}/` : ""
    }repo/${mpy}/${spec.host}/${spec.owner}/${spec.repo}/${spec.ref}/${spec.path}`;
    const imported = await this.#o.imported?.served(path, base);
    if (imported) {
      this.#o.policy.noteManifest(`${spec.host}:${spec.owner}/${spec.repo}`, imported.body);
      return imported;
    }
    let served: Served;
    const what = `${spec.host}:${spec.owner}/${spec.repo}@${spec.ref}`;
    try {
      const work = this.#o.named.repoManifest(spec, mpy, profile, base);
      served = await (this.#o.imported?.guard(work, what) ?? work);
    } catch (e) {
      throw this.#o.imported?.explain(e, what) ?? e;
    }
    this.#o.policy.noteManifest(`${spec.host}:${spec.owner}/${spec.repo}`, served.body);
    return served;
  }

  /**
   * `file/{h2}/{hash}`; with `policy.unlisted: deny`, only files listed by a manifest of an allowed package (being in
   * the cache is not enough: the cache also holds what was fetched before the policy changed).
   */
  async file(hash: string): Promise<Served> {
    if (!this.#o.policy.fileAllowed(hash)) {
      throw new HttpError(403, `File ${hash} is not allowed: policy.unlisted is deny and no allowed manifest lists it`);
    }
    try {
      const work = this.#o.index.file(hash);
      return await (this.#o.imported?.guard(work, `file ${hash}`) ?? work);
    } catch (e) {
      throw this.#o.imported?.explain(e, `file ${hash}`) ?? e;
    }
  }
}
