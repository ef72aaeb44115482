/**
 * The imported layer: what `mipserver import` brought in, served whatever the importing config says. Manifests are
 * kept in the store under `LAYER.served(<request path>)`, the merged index as `LAYER.index`, and the list of both as
 * `LAYER.catalog`, which an import replaces last (its commit point). A running server notices a new catalog within
 * {@linkcode RECHECK_MS} (by when it was stored), so an import is served without a restart.
 *
 * Imported manifests win over the upstreams for the paths they cover (a bundle is a fixed set of bytes); everything
 * else goes the usual way. When that way is closed (`cache.offline`, or the upstream cannot be reached), a package no
 * bundle holds is answered 503 saying so.
 * @module
 */
import { etagOf } from "../store/hash.ts";
import { LAYER } from "../store/keys.ts";
import type { ObjectStore } from "../store/object_store.ts";
import type { Served } from "../cache/served.ts";
import { NotFound, Unavailable, UpstreamFailed } from "../errors.ts";
import { BASE_PLACEHOLDER } from "./locations.ts";

/** Imported manifests remembered at once (the paths come from the catalog, not from clients). */
export const TEXTS_KEPT = 4_096;
/** How often, at most, the catalog's modification time is looked at. */
export const RECHECK_MS = 500;
/** After upstream was found unreachable, how long requests wait for it at most before answering 503. */
export const DOWN_DEADLINE_MS = 900;
/** How long upstream counts as down after it was last found unreachable. */
export const DOWN_WINDOW_MS = 60_000;

/** `bundle/catalog.json`: what has been imported. */
export interface Catalog {
  /** Request paths (without the leading `/`) of the imported manifests, sorted. */
  served: string[];
  /** Target profiles imported manifests exist for. */
  profiles: string[];
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Reads the catalog in `store`, or an empty one. */
export async function readCatalog(store: ObjectStore): Promise<Catalog> {
  const object = await store.get(LAYER.catalog, { direct: true });
  if (!object) return { served: [], profiles: [] };
  const doc = JSON.parse(dec.decode(object.body));
  return { served: doc.served ?? [], profiles: doc.profiles ?? [] };
}

/** Reads the imported index's packages in `store`, or undefined when there is none. */
export async function readLayerIndex(store: ObjectStore): Promise<Record<string, unknown>[] | undefined> {
  const object = await store.get(LAYER.index, { direct: true });
  if (!object) return undefined;
  const doc = JSON.parse(dec.decode(object.body));
  return Array.isArray(doc.packages) ? doc.packages : undefined;
}

/** Whether an error is the cache's answer for an object it may not fetch (`cache.offline`). */
function offlineMiss(e: unknown): boolean {
  return e instanceof NotFound && e.message.startsWith("Offline");
}

/** Whether an error means upstream could not be reached (rather than an answer from it). */
function unreachable(e: unknown): boolean {
  return e instanceof UpstreamFailed && e.unreachable;
}

/** Serves imported manifests and the imported index from the store. */
export class BundleLayer {
  #store: ObjectStore;
  #now: () => number;
  #checkedAt = -Infinity;
  #mtime = -1;
  #served = new Set<string>();
  /** Imported manifests' texts read since the catalog last changed. */
  #texts = new Map<string, string>();
  #profiles = new Set<string>();
  #loading?: Promise<void>;
  #downAt = -Infinity;

  constructor(store: ObjectStore, now: () => number = Date.now) {
    this.#store = store;
    this.#now = now;
  }

  /**
   * Has the catalog looked at again when it is due. Only the first look is waited for; later ones run beside the
   * requests, which go on with the catalog as last read, so no answer waits on the store (a shared store that hangs).
   */
  async #fresh(): Promise<void> {
    if (this.#now() - this.#checkedAt < RECHECK_MS) return;
    this.#loading ??= this.#reload().finally(() => (this.#loading = undefined));
    if (this.#mtime < 0) await this.#loading;
    else this.#loading.catch(() => {});
  }

  async #reload(): Promise<void> {
    const mtime = (await this.#store.stat(LAYER.catalog))?.storedAt ?? 0;
    if (mtime !== this.#mtime) {
      const catalog = await readCatalog(this.#store);
      this.#served = new Set(catalog.served);
      this.#texts.clear();
      this.#profiles = new Set(catalog.profiles);
      this.#mtime = mtime;
    }
    this.#checkedAt = this.#now();
  }

  /** Reads the catalog now (at start, so the first request already knows the imported profiles). */
  async load(): Promise<void> {
    this.#checkedAt = -Infinity;
    await this.#fresh();
  }

  /**
   * Whether a bundle brought manifests for target profile `name`, so it is served even when the config does not
   * define it. Answers from the catalog as last read, and has it re-read when it is due.
   */
  hasProfile(name: string): boolean {
    this.#fresh().catch(() => {});
    return this.#profiles.has(name);
  }

  /** The imported manifest at request path `path` (no leading `/`), with URLs made absolute on `base`. */
  async served(path: string, base: string): Promise<Served | undefined> {
    await this.#fresh();
    if (!this.#served.has(path)) return undefined;
    const text = await this.#text(path);
    if (text === undefined) return undefined;
    const body = enc.encode(text.replaceAll(`"${BASE_PLACEHOLDER}`, `"${base}`));
    return { body, etag: await etagOf(body), outcome: "hit", kind: "bundle" };
  }

  /**
   * An imported manifest's text, read from the store itself (an import by another process, or another replica, may
   * have replaced it) once per catalog: remembered until the catalog changes, at most {@linkcode TEXTS_KEPT}.
   */
  async #text(path: string): Promise<string | undefined> {
    const known = this.#texts.get(path);
    if (known !== undefined) return known;
    const version = this.#mtime;
    const object = await this.#store.get(LAYER.served(path), { direct: true });
    if (!object) return undefined;
    const text = dec.decode(object.body);
    if (version === this.#mtime) {
      this.#texts.set(path, text);
      if (this.#texts.size > TEXTS_KEPT) this.#texts.delete(this.#texts.keys().next().value!);
    }
    return text;
  }

  /**
   * The imported manifest of `name` at `version` for `mpy` and `profile`. Sources (`py`) are the same under every
   * profile, so `/t/<profile>/package/py/...` falls back to the plain one.
   */
  async manifest(
    mpy: string,
    name: string,
    version: string,
    profile: string | null,
    base: string,
  ): Promise<Served | undefined> {
    const plain = `package/${mpy}/${name}/${version}.json`;
    if (!profile) return await this.served(plain, base);
    return await this.served(`t/${profile}/${plain}`, base) ??
      (mpy === "py" ? await this.served(plain, base) : undefined);
  }

  /** The index entries imported bundles brought, or undefined when nothing was imported. */
  async indexPackages(): Promise<Record<string, unknown>[] | undefined> {
    await this.#fresh();
    if (this.#mtime <= 0) return undefined;
    return await readLayerIndex(this.#store);
  }

  /**
   * `index.json` with the imported packages in it: they replace the upstream's entries of the same name. `upstream`
   * is what the usual way gave, or undefined when it failed.
   */
  async mergeIndex(upstream: Served | undefined): Promise<Served | undefined> {
    const imported = await this.indexPackages();
    if (!imported) return upstream;
    const doc = upstream ? JSON.parse(dec.decode(upstream.body)) : { v: 2, updated: 0, packages: [] };
    const names = new Set(imported.map((p) => p.name));
    const packages = [
      ...imported,
      ...(Array.isArray(doc.packages) ? doc.packages : []).filter((p: { name?: string }) => !names.has(p?.name)),
    ];
    const body = enc.encode(JSON.stringify({ ...doc, packages }));
    return { body, etag: await etagOf(body), outcome: upstream?.outcome ?? "hit", kind: "index" };
  }

  /**
   * Waits for `work` (the usual way to answer `what`). On a server that imported a bundle and found upstream
   * unreachable within the last {@linkcode DOWN_WINDOW_MS}, it waits at most {@linkcode DOWN_DEADLINE_MS}, then
   * answers 503 (the work goes on and fills the cache if upstream does answer): an offline site gets its answer
   * within a second, even from an upstream address that swallows connections.
   */
  async guard<T>(work: Promise<T>, what: string): Promise<T> {
    if (this.#mtime <= 0 || this.#now() - this.#downAt > DOWN_WINDOW_MS) return await work;
    work.catch(() => {}); // answered by the deadline below if it fails late
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const ago = Math.round((this.#now() - this.#downAt) / 1000);
        reject(
          new Unavailable(
            `Offline: ${what} was not imported (no imported bundle holds it) and upstream, unreachable ${ago} s ago, did not answer within ${DOWN_DEADLINE_MS} ms`,
          ),
        );
      }, DOWN_DEADLINE_MS);
    });
    try {
      return await Promise.race([work, deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * The error a client gets when the usual way failed for `what`: with `cache.offline`, or when upstream could not be
   * reached on a server that imported a bundle, a 503 saying the server is offline and no imported bundle holds it; anything else as it was.
   */
  explain(e: unknown, what: string): unknown {
    // An unreachable upstream keeps its own 503 on a server that never imported anything (it is not offline by
    // intent); once a bundle was imported, or with cache.offline, the answer says what is missing.
    if (unreachable(e)) this.#downAt = this.#now();
    if (!offlineMiss(e) && !(unreachable(e) && this.#mtime > 0)) return e;
    return new Unavailable(
      `Offline: ${what} was not imported (no imported bundle holds it) and upstream cannot be reached (${
        (e as Error).message
      })`,
    );
  }
}
