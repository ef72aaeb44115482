/**
 * The micropython-lib index proxy: `index.json`, package manifests and content-addressed files from one or more
 * upstream indexes (pi/v2 layout), through the {@linkcode FreshCache}: `{version}.json` and files are immutable,
 * `latest.json` and `index.json` follow the TTL rules. Every file's bytes are checked against the sha256 prefix they
 * are named by before they are stored or served.
 * @module
 */
import { etagOf, sha256Hex } from "../store/hash.ts";
import type { FreshCache, Load } from "../cache/fresh_cache.ts";
import type { Served } from "../cache/served.ts";
import { BadName, BadUpstream, type DomainError, fromUpstream, NotFound } from "../errors.ts";
import type { Logger } from "../log.ts";
import { type Fetcher, UpstreamError } from "../upstream/fetcher.ts";
import { checkManifest, listedHashes, readManifest, UnsafeManifestError } from "./names.ts";
import { fileKey, indexDocKey, indexManifestKey } from "../store/keys.ts";
import { BASE_PLACEHOLDER } from "./locations.ts";
import { REPO_HOST_ALTERNATIVES } from "./sources/registry.ts";

/** What the index service is built from. */
export interface IndexServiceOptions {
  /** Upstream index base URLs, most preferred first. */
  indexes: string[];
  cache: FreshCache;
  fetcher: Fetcher;
  logger: Logger;
  /** Fetch a manifest's files as soon as the manifest is fetched. */
  prefetch: boolean;
}

const PREFETCH_CONCURRENCY = 4;
/**
 * Most file hashes waiting to be prefetched. A flood of manifest misses (each may list 10,000 files) would otherwise
 * queue without end behind a slow upstream; hashes listed past it are not prefetched (a device still fetches them
 * when it installs).
 */
export const PREFETCH_QUEUE_LIMIT = 10_000;

/** Whether a manifest's JSON text could hold an unsafe destination (`..`, `\`, a leading or doubled `/`). */
function suspect(body: Uint8Array): boolean {
  const text = new TextDecoder().decode(body);
  return text.includes("..") || text.includes("\\") || text.includes('"/') || text.includes("//");
}
const HEX = /^[0-9a-f]{4,64}$/;

/**
 * The paths under which a mipserver upstream (a central server a site gateway is chained to) serves what a manifest's
 * `deps` and `urls` may point at: its repository manifests and mirrors, with or without a profile.
 */
const MIRROR_PATHS = new RegExp(`^/(?:t/[^/]+/)?(?:repo|url|${REPO_HOST_ALTERNATIVES})/`);

/**
 * A manifest from the upstream index at `base`, with every URL in its `deps` and `urls` that points at that index's
 * own repository or mirror paths (a central mipserver's `http://central/repo/6/github/...`) written on this server's
 * base placeholder instead, so a device stays on this server; the body unchanged when there is none.
 */
export function onThisServer(body: Uint8Array, base: string): Uint8Array {
  const text = new TextDecoder().decode(body);
  if (!text.includes(base)) return body;
  const { doc } = readManifest(body);
  if (typeof doc !== "object" || doc === null) return body;
  const m = doc as { deps?: unknown; urls?: unknown };
  let changed = false;
  const move = (url: unknown): unknown => {
    if (typeof url !== "string" || !url.startsWith(`${base}/`)) return url;
    const path = url.slice(base.length);
    if (!MIRROR_PATHS.test(path)) return url;
    changed = true;
    return `${BASE_PLACEHOLDER}${path}`;
  };
  const pairs = (list: unknown, at: number) =>
    Array.isArray(list)
      ? list.map((item) => (Array.isArray(item) ? item.map((v, i) => (i === at ? move(v) : v)) : item))
      : list;
  const out = { ...m, ...(m.deps !== undefined ? { deps: pairs(m.deps, 0) } : {}) };
  if (m.urls !== undefined) out.urls = pairs(m.urls, 1);
  return changed ? new TextEncoder().encode(JSON.stringify(out)) : body;
}

/** Serves the index API from the cache and the upstream indexes. */
export class IndexService {
  #o: IndexServiceOptions;
  #prefetchQueue: string[] = [];
  #prefetchActive = 0;
  #ids: string[];

  constructor(options: IndexServiceOptions) {
    this.#o = options;
    this.#ids = [];
  }

  /** Computes the per-index cache folder names. Call once before serving. */
  async init(): Promise<void> {
    this.#ids = await Promise.all(
      this.#o.indexes.map(async (url) => (await sha256Hex(new TextEncoder().encode(url))).slice(0, 16)),
    );
  }

  /** Each upstream index with the cache key of its `index.json` (the status page shows the index's age). */
  indexKeys(): { url: string; key: string }[] {
    return this.#o.indexes.map((url, i) => ({ url, key: indexDocKey(this.#ids[i]) }));
  }

  /** File hashes waiting to be prefetched (at most {@linkcode PREFETCH_QUEUE_LIMIT}). */
  get prefetchWaiting(): number {
    return this.#prefetchQueue.length;
  }

  /** Resolves once every background refresh and prefetch has finished (for tests and shutdown). */
  async idle(): Promise<void> {
    while (this.#o.cache.busy || this.#prefetchQueue.length > 0 || this.#prefetchActive > 0) {
      await this.#o.cache.settle();
      if (!this.#o.cache.busy) await new Promise((r) => setTimeout(r, 1));
    }
  }

  /** `index.json`: each upstream's, merged (the first index listing a name wins). */
  async indexJson(): Promise<Served> {
    const results: { served: Served; url: string }[] = [];
    const failures: DomainError[] = [];
    for (const [i, base] of this.#o.indexes.entries()) {
      try {
        const served = await this.#o.cache.get(
          "index",
          indexDocKey(this.#ids[i]),
          true,
          () => this.#fetchJson(`${base}/index.json`),
        );
        results.push({ served, url: base });
      } catch (e) {
        const err = fromUpstream(e);
        this.#o.logger.warn("Index unavailable, leaving it out of index.json", { index: base, error: err.message });
        failures.push(err);
      }
    }
    if (results.length === 0) throw failures.find((f) => !(f instanceof NotFound)) ?? failures[0];
    if (results.length === 1 && this.#o.indexes.length === 1) return results[0].served;
    const seen = new Set<string>();
    const packages: unknown[] = [];
    let updated = 0;
    for (const { served } of results) {
      const doc = JSON.parse(new TextDecoder().decode(served.body));
      updated = Math.max(updated, Number(doc.updated) || 0);
      for (const pkg of Array.isArray(doc.packages) ? doc.packages : []) {
        if (pkg && typeof pkg.name === "string" && !seen.has(pkg.name)) {
          seen.add(pkg.name);
          packages.push(pkg);
        }
      }
    }
    const body = new TextEncoder().encode(JSON.stringify({ v: 2, updated, packages }));
    const outcome = results.some((r) => r.served.outcome === "miss")
      ? "miss"
      : results.some((r) => r.served.outcome === "stale")
      ? "stale"
      : "hit";
    return { body, etag: await etagOf(body), outcome, kind: "index" };
  }

  /**
   * `package/{mpy}/{name}/{version}.json` from the first index that has it. A dependency on the upstream index's own
   * repository or mirror paths (a central mipserver's) is kept on the base placeholder and answered on `base`, this
   * server's URL as the device sees it; without `base`, on the upstream's, as it came.
   */
  async manifest(mpy: string, name: string, version: string, base?: string): Promise<Served> {
    const mutable = version === "latest";
    const rel = `package/${mpy}/${name}/${version}.json`;
    let upstreamFailure: DomainError | undefined;
    for (const [i, upstream] of this.#o.indexes.entries()) {
      try {
        const key = indexManifestKey(this.#ids[i], mpy, name, version);
        const what = `package ${name} ${version} (${mpy}) from ${upstream}/${rel}`;
        const served = await this.#o.cache.get("manifest", key, mutable, async () => {
          const loaded = await this.#fetchJson(`${upstream}/${rel}`);
          this.#checkManifest(loaded.body, what);
          if (this.#o.prefetch) this.#prefetch(loaded.body);
          return { ...loaded, body: onThisServer(loaded.body, upstream) };
        });
        // A copy cached before this check existed is checked when it looks suspect (cheap on the hit path).
        if (served.outcome !== "miss" && suspect(served.body)) this.#checkManifest(served.body, what);
        return await withBase(served, base ?? upstream);
      } catch (e) {
        if (e instanceof UnsafeManifestError) throw e;
        const err = fromUpstream(e);
        if (!(err instanceof NotFound)) {
          upstreamFailure ??= err;
          this.#o.logger.warn("Index failed for a manifest, trying the next", { index: upstream, error: err.message });
        }
      }
    }
    if (upstreamFailure) throw upstreamFailure;
    if (this.#o.cache.offline) throw new NotFound(`Offline and not cached: ${name} ${version} (${mpy})`);
    throw new NotFound(`Package ${name} version ${version} (${mpy}) not found in ${this.#o.indexes.join(", ")}`);
  }

  /** `file/{h2}/{hash}`: content whose sha256 starts with `hash`, from the first index that has it. */
  file(hash: string): Promise<Served> {
    if (!HEX.test(hash)) throw new BadName(`Invalid hash ${JSON.stringify(hash)}`);
    return this.#o.cache.get("file", fileKey(hash), false, async () => {
      let failure: UpstreamError | BadUpstream | undefined;
      for (const base of this.#o.indexes) {
        const url = `${base}/file/${hash.slice(0, 2)}/${hash}`;
        try {
          const loaded = await this.#o.fetcher.get(url);
          const actual = await sha256Hex(loaded.body);
          if (!actual.startsWith(hash)) {
            this.#o.logger.error("HASH MISMATCH: upstream file does not match its hash; not stored, not served", {
              url,
              expected: hash,
              actual,
              bytes: loaded.body.byteLength,
            });
            failure = new BadUpstream(`Hash mismatch for ${url}: content sha256 is ${actual.slice(0, 16)}...`);
            continue;
          }
          return loaded;
        } catch (e) {
          if (!(e instanceof UpstreamError)) throw e;
          if (e.kind !== "not_found" || !failure) failure = e;
        }
      }
      throw failure!;
    });
  }

  async #fetchJson(url: string): Promise<Load> {
    const loaded = await this.#o.fetcher.get(url);
    try {
      JSON.parse(new TextDecoder().decode(loaded.body));
    } catch (e) {
      throw new BadUpstream(`Upstream sent invalid JSON at ${url}: ${(e as Error).message}`);
    }
    return loaded;
  }

  /** Refuses (502, logged, nothing cached) a manifest whose destinations would write outside the device's target. */
  #checkManifest(body: Uint8Array, what: string): void {
    try {
      const { doc } = readManifest(body);
      // A body that is not JSON fails as it always has: with the parser's own error.
      checkManifest(doc === undefined ? JSON.parse(new TextDecoder().decode(body)) : doc, what);
    } catch (e) {
      if (e instanceof UnsafeManifestError) {
        this.#o.logger.error("Refused an unsafe manifest from an upstream index; not cached", { reason: e.message });
      }
      throw e;
    }
  }

  #prefetch(manifest: Uint8Array): void {
    const queue = this.#prefetchQueue;
    for (const hash of listedHashes(manifest)) {
      if (queue.length >= PREFETCH_QUEUE_LIMIT) break;
      if (HEX.test(hash)) queue.push(hash);
    }
    this.#pumpPrefetch();
  }

  #pumpPrefetch(): void {
    while (this.#prefetchActive < PREFETCH_CONCURRENCY && this.#prefetchQueue.length > 0) {
      const hash = this.#prefetchQueue.shift()!;
      this.#prefetchActive++;
      const task = this.file(hash).then(
        () => {},
        (e) => this.#o.logger.warn("Prefetch failed", { hash, error: (e as Error).message }),
      ).finally(() => {
        this.#prefetchActive--;
        this.#pumpPrefetch();
      });
      this.#o.cache.track(task);
    }
  }
}

/** `served` with the base placeholder replaced by `base` (the same answer when it holds none). */
async function withBase(served: Served, base: string): Promise<Served> {
  const text = new TextDecoder().decode(served.body);
  if (!text.includes(`"${BASE_PLACEHOLDER}`)) return served;
  const body = new TextEncoder().encode(text.replaceAll(`"${BASE_PLACEHOLDER}`, `"${base}`));
  const { manifest: _, ...rest } = served;
  return { ...rest, body, etag: await etagOf(body) };
}
