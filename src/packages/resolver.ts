/**
 * The one place device requests are answered from: (name, version, mpy, profile) → manifest, with the policy and
 * pins applied; named packages first, then the upstream indexes.
 * @module
 */
import { etagOf } from "../store/hash.ts";
import type { Served } from "../cache/served.ts";
import type { PinnedFiles } from "./pinned.ts";
import type { ObjectStore } from "../store/object_store.ts";
import { BadUpstream, Failure, NotAllowed, NotFound } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { IndexService } from "./index_service.ts";
import type { HostBases } from "./locations.ts";
import { type NamedService, NoSourceForm } from "./named_service.ts";
import { mirrorPathOf, type Policy } from "./policy.ts";
import type { RepoSpec } from "./sources/source.ts";
import { toUrlsForm } from "./urls_form.ts";
import { readManifest } from "./names.ts";

/** How long an index package found without a source form is served as the index compiled it without looking again. */
const NO_SOURCE_FORM_MS = 10 * 60_000;
/** Index packages remembered at most as having no source form. */
const NO_SOURCE_FORM_KEPT = 4096;

/** What the resolver is built from. */
export interface ResolverOptions {
  index: IndexService;
  named: NamedService;
  policy: Policy;
  pins: Record<string, string>;
  store: ObjectStore;
  /** Notes the files of pinned releases as their manifests are served, so eviction keeps them. */
  pinned?: PinnedFiles;
  /** What `mipserver import` brought in (`src/packages/layer.ts`): served first, and the reason when offline. */
  imported?: ImportedLayer;
  /** The code hosts' raw-file bases, for mirror URLs. */
  bases?: HostBases;
  /** The `.mpy` version a URL install under `/t/{profile}` is compiled for (`py` when there is no compiler). */
  mpyFor?: (profile: string | null) => string;
  /**
   * Refuses (throws a domain error) the repository package behind a mirror path (`/github/...` and the other code
   * hosts', `/url/...`) when its dependencies cycle or nest too deep.
   */
  checkMirrorDeps?: (path: string) => Promise<void>;
  /** Where the resolver says what it served instead (an index's own files under a profile). */
  logger?: Logger;
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

/** A repository file under a profile: a code host's (`github`, ...) at a ref, or a plain URL. */
export type MirrorTarget = ({ kind: "repo" } & RepoSpec) | { kind: "url"; url: string };

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
  /** Index packages (`name\nversion`) found without a source form, until when that is believed. */
  #noSourceForm = new Map<string, number>();
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
        : profile !== null && mpy !== "py" && this.#o.mpyFor?.(profile) === mpy
        ? this.#profiled(mpy, name, resolved, profile, base)
        : this.#o.index.manifest(mpy, name, resolved, base);
      served = await (this.#o.imported?.guard(work, what) ?? work);
    } catch (e) {
      throw this.#o.imported?.explain(e, what) ?? e;
    }
    await this.#checkDeps(served.body, base);
    this.#o.policy.noteManifest(name, served.body);
    if (!named && this.#o.pinned?.isPinned(name, resolved)) this.#o.pinned.note(served.body);
    return { ...served, manifest: readManifest(served.body) };
  }

  /**
   * An index package under a profile: built from the index's source form and compiled for the profile; the index's
   * own manifest for `mpy` when there is no source form, or when it cannot be had now (the index's compiled files are
   * portable, so a device still gets a working install, and the profile's build follows when the index answers).
   */
  async #profiled(mpy: string, name: string, version: string, profile: string, base: string): Promise<Served> {
    const id = `${name}\n${version}`;
    const none = this.#noSourceForm.get(id);
    if (none !== undefined && none > Date.now()) return await this.#o.index.manifest(mpy, name, version, base);
    let why: Error;
    try {
      return await this.#o.named.indexManifest(this.#o.index, name, version, mpy, profile, base);
    } catch (e) {
      // Failure: upstream down or failing, nothing built yet; NotFound: offline (`cache.offline`, an export) with
      // nothing built under the profile.
      if (!(e instanceof NoSourceForm || e instanceof Failure || e instanceof NotFound)) throw e;
      why = e;
    }
    let served: Served;
    try {
      served = await this.#o.index.manifest(mpy, name, version, base);
    } catch (fallback) {
      // No source form and no compiled manifest either: what the index said of the latter (a 404, say).
      throw why instanceof Failure ? why : fallback;
    }
    if (why instanceof NoSourceForm || why instanceof BadUpstream) {
      // No source form, or one refused: remembered for a while (bounded), so that each request does not look again.
      this.#noSourceForm.delete(id);
      this.#noSourceForm.set(id, Date.now() + NO_SOURCE_FORM_MS);
      if (this.#noSourceForm.size > NO_SOURCE_FORM_KEPT) {
        this.#noSourceForm.delete(this.#noSourceForm.keys().next().value!);
      }
    }
    this.#o.logger?.warn("Serving the index's own compiled files under a profile", {
      package: name,
      version,
      profile,
      reason: why.message,
    });
    return served;
  }

  /** `repo/{mpy}/{host}/{owner}/{repo}/{ref}/{path}`: a repository dependency built into a manifest. */
  async repoManifest(mpy: string, spec: RepoSpec, profile: string | null, base: string): Promise<Served> {
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
    await this.#checkDeps(served.body, base);
    this.#o.policy.noteManifest(`${spec.host}:${spec.owner}/${spec.repo}`, served.body);
    return { ...served, manifest: readManifest(served.body) };
  }

  /**
   * `[/t/{profile}]/urls/package/{mpy}/{name}/{version}.json`: the manifest `manifest()` answers, in `urls` form with
   * absolute URLs on `base`, so a URL install that depends on an index name stays on this server.
   */
  async urlsManifest(
    mpy: string,
    name: string,
    version: string,
    profile: string | null,
    base: string,
  ): Promise<Served> {
    const served = await this.manifest(mpy, name, version, profile, base);
    return await this.#urlsForm(served, base, profile, mpy);
  }

  /**
   * `/t/{profile}/{host|url}/.../package.json`: a URL install under a profile, built like a named package
   * (files fetched, checked, compiled for the profile) and answered in `urls` form.
   */
  async profileMirror(target: MirrorTarget, profile: string, base: string): Promise<Served> {
    const mpy = this.#o.mpyFor?.(profile) ?? "py";
    const served = target.kind === "url"
      ? await this.#o.named.urlManifest(target.url, mpy, profile, base)
      : await this.#o.named.repoManifest(target, mpy, profile, base);
    await this.#checkDeps(served.body, base);
    const source = target.kind === "url" ? `url:${target.url}` : `${target.host}:${target.owner}/${target.repo}`;
    this.#o.policy.noteManifest(source, served.body);
    return await this.#urlsForm(served, base, profile, mpy);
  }

  /**
   * Refuses a manifest whose repository dependencies (URLs on this server, `base`) cycle or nest too deep: a device
   * given it would loop, or install a chain it cannot finish. The answer is a 502 naming the cycle or the chain.
   */
  async #checkDeps(body: Uint8Array, base: string): Promise<void> {
    const check = this.#o.checkMirrorDeps;
    if (!check) return;
    const { doc } = readManifest(body);
    if (typeof doc !== "object" || doc === null) return;
    const deps = (doc as { deps?: unknown }).deps;
    for (const dep of Array.isArray(deps) ? deps : []) {
      const url = Array.isArray(dep) ? dep[0] : dep;
      if (typeof url === "string" && url.startsWith(`${base}/`)) await check(mirrorPathOf(url.slice(base.length)));
    }
  }

  async #urlsForm(served: Served, base: string, profile: string | null, mpy: string): Promise<Served> {
    const { doc } = readManifest(served.body);
    if (doc === undefined) throw new SyntaxError("The manifest to put in urls form is not JSON");
    const bases = this.#o.bases ?? {}; // code hosts missing here are read at their default bases
    let form: Record<string, unknown>;
    try {
      form = toUrlsForm(doc as Record<string, unknown>, { base, prefix: profile ? `/t/${profile}` : "", mpy, bases });
    } catch (e) {
      // An upstream manifest whose urls or deps hold something that is not a URL: the upstream's fault, not ours.
      if (!(e instanceof TypeError)) throw e;
      throw new BadUpstream(`Refused manifest in urls form: it names something that is not a URL (${e.message})`);
    }
    const body = enc.encode(JSON.stringify(form));
    // New bytes: the view of the manifest they were made from does not go with them.
    const { manifest: _, ...rest } = served;
    return { ...rest, body, etag: await etagOf(body) };
  }

  /**
   * `file/{h2}/{hash}`; with `policy.unlisted: deny`, only files listed by a manifest of an allowed package (being in
   * the cache is not enough: the cache also holds what was fetched before the policy changed).
   */
  async file(hash: string): Promise<Served> {
    if (!this.#o.policy.fileAllowed(hash)) {
      throw new NotAllowed(`File ${hash} is not allowed: policy.unlisted is deny and no allowed manifest lists it`);
    }
    try {
      const work = this.#o.index.file(hash);
      return await (this.#o.imported?.guard(work, `file ${hash}`) ?? work);
    } catch (e) {
      throw this.#o.imported?.explain(e, `file ${hash}`) ?? e;
    }
  }
}
