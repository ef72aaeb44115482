/**
 * The resolver with `policy.lock` and `policy.block` in force.
 *
 * Lock: only the lock's packages, at their locked version (`latest` is the locked one), in the variants the lock has
 * hashes for, are served (anything else is 403 with the reason). Manifests list exactly the locked full hashes, and a
 * file is served only when its bytes hash to a locked sha256: from the cache (under the full hash or the short one an
 * index names it by), else from upstream by hash; failing that the answer is 502 `LOCK MISMATCH`: changed bytes are
 * never served.
 *
 * Block: a blocked release's manifests are 410, cached or not; `latest` of an index package falls back to the newest
 * release `index.json` lists that is not blocked; a file is 410 when only blocked releases list it.
 * @module
 */
import { etagOf, sha256Hex } from "../store/hash.ts";
import type { Served } from "../cache/served.ts";
import { Blocked, DomainError, Failure, LockMismatch, NotAllowed, NotFound } from "../errors.ts";
import type { Logger } from "../log.ts";
import { lockedHashes, type LockedPackage, type LockFile, repoId, variantKey } from "./lock_file.ts";
import { BlockList, newestUnblocked } from "./block_list.ts";
import { Resolver, type ResolverOptions } from "./resolver.ts";
import type { RepoSpec } from "./sources/source.ts";
import { fileKey, namedPrefix } from "../store/keys.ts";
import { listedHashes, readManifest } from "./names.ts";
import { ListedFiles, shortHash as short } from "./listed_files.ts";

/** What the guarded resolver adds to a resolver's options. */
export interface GuardOptions extends ResolverOptions {
  /**
   * `policy.lock`: the lock in force and where it was read from (for messages), read at each use; `onChange` (when
   * given) tells when another lock came into force (`LockInForce.reload`).
   */
  lock?: { readonly file: LockFile; readonly path: string; onChange?(listener: () => void): void };
  /** `policy.block` entries. */
  block: string[];
  logger: Logger;
  /** How long the set of blocked files is kept before it is computed again, in ms. */
  ttl: number;
  now?: () => number;
  /**
   * Where the files served and refused manifests list, and the lock's, are remembered (shared with the policy and the
   * pins; default: its own).
   */
  listed?: ListedFiles;
}

const enc = new TextEncoder();
const dec = new TextDecoder();
/** Most versions of one package read when computing the blocked files (bounds upstream reads). */
const VERSION_LIMIT = 200;

async function served(doc: unknown, outcome: Served["outcome"], kind: string): Promise<Served> {
  const body = enc.encode(JSON.stringify(doc));
  return { body, etag: await etagOf(body), outcome, kind };
}

/** A {@linkcode Resolver} that applies `policy.lock` and `policy.block`. */
export class GuardedResolver extends Resolver {
  #g: GuardOptions;
  #block: BlockList;
  #now: () => number;
  #blockedFiles?: { at: number; value: Promise<Map<string, string>> };
  /**
   * Which short hashes served manifests listed (a file one of them lists is never blocked), which refused (blocked)
   * ones listed, with the block entry, and the lock's full hashes by their short form (kept for good). The oldest noted
   * are forgotten first past the bound, and noted again when their manifest is asked for, which `mip` does before the
   * files.
   */
  #listed: ListedFiles;
  /**
   * The full hashes of the lock in force, kept for the files it lets through (the memory of listed files also keeps
   * those of a lock in force before it, which it never forgets).
   */
  #lockedNow = new Set<string>();

  constructor(options: GuardOptions) {
    super(options);
    this.#g = options;
    this.#block = new BlockList(options.block);
    this.#now = options.now ?? Date.now;
    this.#listed = options.listed ?? new ListedFiles();
    this.#noteLock();
    options.lock?.onChange?.(() => this.#noteLock());
  }

  #noteLock(): void {
    const lock = this.#g.lock?.file;
    if (!lock) return;
    this.#lockedNow = lockedHashes(lock);
    this.#listed.lock(this.#lockedNow);
  }

  /** The memory of listed files the guards read (shared with the policy and the pins when the app made them). */
  get listed(): ListedFiles {
    return this.#listed;
  }

  /** `index.json` with only locked packages (at their locked version), and without blocked releases. */
  override async indexJson(): Promise<Served> {
    const upstream = await super.indexJson();
    const lock = this.#g.lock?.file;
    if (!lock && this.#block.empty) return upstream;
    const doc = JSON.parse(dec.decode(upstream.body));
    const packages: Record<string, unknown>[] = [];
    for (const entry of Array.isArray(doc.packages) ? doc.packages : []) {
      const name = String(entry?.name ?? "");
      if (this.#block.blocksAll(name)) continue;
      const out = { ...entry };
      if (lock) {
        const locked = lock.packages[name];
        if (!locked || locked.kind === "repo") continue;
        out.version = locked.version;
        if (out.versions && typeof out.versions === "object") {
          out.versions = Object.fromEntries(
            Object.entries(out.versions as Record<string, unknown>).map(([mpy, list]) => [
              mpy,
              (Array.isArray(list) ? list.map(String) : []).filter((v) => v === locked.version),
            ]),
          );
        }
      }
      if (this.#block.touches(name) && out.versions && typeof out.versions === "object") {
        const versions: Record<string, string[]> = {};
        for (const [mpy, list] of Object.entries(out.versions as Record<string, unknown>)) {
          versions[mpy] = (Array.isArray(list) ? list.map(String) : []).filter((v) => !this.#block.match(name, v));
        }
        out.versions = versions;
        if (this.#block.match(name, String(out.version))) {
          const fallback = newestUnblocked(Object.values(versions).flat(), () => false);
          if (fallback === undefined) continue;
          out.version = fallback;
        }
      }
      packages.push(out);
    }
    return { ...(await served({ ...doc, packages }, upstream.outcome, "index")), upstreamMs: upstream.upstreamMs };
  }

  /** A manifest, refused (403) outside the lock and (410) when blocked. */
  override async manifest(
    mpy: string,
    name: string,
    version: string,
    profile: string | null,
    base: string,
  ): Promise<Served> {
    const lock = this.#g.lock;
    if (lock) {
      const entry = lock.file.packages[name];
      if (!entry || entry.kind === "repo") {
        throw new NotAllowed(`Package ${name} is not allowed: it is not in the lock file ${lock.path}`);
      }
      if (version !== "latest" && version !== entry.version && version !== entry.ref) {
        throw new NotAllowed(
          `${name} ${version} is not allowed: the lock file ${lock.path} locks ${name} at ${entry.version}`,
        );
      }
      this.#refuseBlocked(name, entry.version, entry.ref);
      return await this.#locked(name, entry, mpy, profile, async () => {
        const at = await this.#importedAt(mpy, name, entry, profile, base);
        return await super.manifest(mpy, name, at, profile, base);
      });
    }
    if (this.#block.empty) return await super.manifest(mpy, name, version, profile, base);
    if (this.#block.blocksAll(name)) this.#refuseBlocked(name);
    if (version !== "latest") this.#refuseBlocked(name, version);
    let answer = await super.manifest(mpy, name, version, profile, base);
    const stated = this.#statedVersion(answer.body);
    if (this.#block.match(name, stated)) {
      this.#listed.noteRefused(listedHashes(answer.body), this.#block.match(name, stated)!);
      if (version !== "latest" || this.#g.named.has(name)) this.#refuseBlocked(name, stated);
      const fallback = newestUnblocked(await this.#indexVersions(name, mpy), (v) => !!this.#block.match(name, v));
      if (fallback === undefined) {
        throw new Blocked(
          `${name} ${stated} is blocked by policy.block (${this.#block.match(name, stated)}) and no other release is`,
        );
      }
      answer = await super.manifest(mpy, name, fallback, profile, base);
      this.#refuseBlocked(name, this.#statedVersion(answer.body));
    }
    this.#noteServed(answer.body);
    return answer;
  }

  /** A repository dependency's manifest: under a lock only the locked ones, with the locked hashes. */
  override async repoManifest(mpy: string, spec: RepoSpec, profile: string | null, base: string): Promise<Served> {
    const lock = this.#g.lock;
    if (!lock) {
      const answer = await super.repoManifest(mpy, spec, profile, base);
      this.#noteServed(answer.body);
      return answer;
    }
    const id = repoId(spec);
    const entry = lock.file.packages[id];
    if (!entry) {
      throw new NotAllowed(
        `${spec.host}:${spec.owner}/${spec.repo} at ${spec.ref} is not allowed: it is not in the lock file ${lock.path}`,
      );
    }
    return await this.#locked(id, entry, mpy, profile, () => super.repoManifest(mpy, spec, profile, base));
  }

  /**
   * Throws 403 under a lock for a mirror path (`/github/...` and the other code hosts', `/url/...`) that no locked package names
   * as a dependency (single-file and URL dependencies; their bytes are not locked).
   */
  checkMirror(path: string): void {
    const lock = this.#g.lock;
    if (!lock) return;
    const id = `mirror:${path.replace(/^\/t\/[^/]+(?=\/)/, "")}`;
    if (Object.values(lock.file.packages).some((p) => p.deps.includes(id))) return;
    throw new NotAllowed(`${path} is not allowed: no package in the lock file ${lock.path} depends on it`);
  }

  /** A file: under a lock only locked bytes; blocked when only blocked releases list it. */
  override async file(hash: string): Promise<Served> {
    if (!this.#block.empty) {
      const id = short(hash);
      const entry = this.#listed.served(id)
        ? undefined
        : (await this.#blockedSet()).get(id) ?? this.#listed.refusedBy(id);
      if (entry) {
        throw new Blocked(`File ${hash} belongs only to releases blocked by policy.block (${entry})`);
      }
    }
    const lock = this.#g.lock;
    if (!lock) return await super.file(hash);
    const full = this.#listed.lockedFor(hash);
    if (!full || !this.#lockedNow.has(full)) {
      throw new NotAllowed(`File ${hash} is not allowed: the lock file ${lock.path} lists no such file`);
    }
    const fetched = await this.#obtain(full, hash);
    // Objects under a full hash were checked against it when they were written (here, or by a named build).
    const object = await this.#g.store.get(fileKey(full));
    if (!object) {
      throw new LockMismatch(`LOCK MISMATCH: the locked bytes of file ${full} are not available`);
    }
    return { body: object.body, etag: object.etag, outcome: fetched ? "miss" : "hit", kind: "file" };
  }

  /**
   * What a locked package's manifest is read at: the index version or the named package's ref, unless only an imported
   * bundle holds the locked release, under another name. A bundle holds a named package as `latest` (and as the
   * versions asked for by name), while the lock reads it at its ref (`HEAD`, `main`, a tag): an imported manifest at
   * the locked version, the ref or `latest` that states the locked version is that release (its hashes are still held
   * to the lock's). Without one, the ref, so the usual way (upstream, or the offline answer) is taken.
   */
  async #importedAt(
    mpy: string,
    name: string,
    entry: LockedPackage,
    profile: string | null,
    base: string,
  ): Promise<string> {
    const readAt = entry.kind === "index" ? entry.version : entry.ref;
    const imported = this.#g.imported;
    if (!imported || await imported.manifest(mpy, name, readAt, profile, base)) return readAt;
    for (const version of new Set([entry.version, entry.ref, "latest"])) {
      if (version === readAt || (version === "latest" && this.#g.pins[name] !== undefined)) continue;
      const held = await imported.manifest(mpy, name, version, profile, base);
      if (held && this.#statedVersion(held.body) === entry.version) return version;
    }
    return readAt;
  }

  #refuseBlocked(name: string, ...versions: (string | undefined)[]): void {
    const entry = this.#block.match(name, ...versions);
    if (entry) {
      throw new Blocked(
        `${name}${versions.length ? ` ${versions[0]}` : ""} is blocked by policy.block (${entry})`,
      );
    }
  }

  #statedVersion(body: Uint8Array): string | undefined {
    const { doc } = readManifest(body);
    if (typeof doc !== "object" || doc === null) return undefined;
    const v = (doc as { version?: unknown }).version;
    return v === undefined ? undefined : String(v);
  }

  #noteServed(body: Uint8Array): void {
    if (this.#block.empty) return;
    this.#listed.noteServed(listedHashes(body));
  }

  /** The versions `index.json` lists for an index package, for `mpy` (or any variant when it lists none for it). */
  async #indexVersions(name: string, mpy: string): Promise<string[]> {
    let doc;
    try {
      doc = JSON.parse(dec.decode((await this.#g.index.indexJson()).body));
    } catch (e) {
      this.#g.logger.warn("Cannot read index.json for the releases of a blocked package", {
        package: name,
        error: (e as Error).message,
      });
      return [];
    }
    const entry = (Array.isArray(doc.packages) ? doc.packages : []).find((p: { name?: string }) => p?.name === name);
    const versions = entry?.versions && typeof entry.versions === "object" ? entry.versions : {};
    const list = Array.isArray(versions[mpy]) ? versions[mpy] : Object.values(versions).flat();
    const out = new Set<string>((list as unknown[]).map(String));
    if (entry?.version !== undefined) out.add(String(entry.version));
    return [...out].slice(0, VERSION_LIMIT);
  }

  /** Short hash → the block entry, for files that only blocked releases list. Computed at most once per `ttl`. */
  #blockedSet(): Promise<Map<string, string>> {
    if (!this.#blockedFiles || this.#now() - this.#blockedFiles.at >= this.#g.ttl) {
      const value = this.#computeBlocked();
      this.#blockedFiles = { at: this.#now(), value };
      value.catch(() => (this.#blockedFiles = undefined));
    }
    return this.#blockedFiles.value;
  }

  async #computeBlocked(): Promise<Map<string, string>> {
    const blocked = new Map<string, string>();
    const kept = new Set<string>();
    const add = (body: Uint8Array, entry: string | undefined) => {
      for (const hash of listedHashes(body)) {
        if (entry) blocked.set(short(hash), entry);
        else kept.add(short(hash));
      }
    };
    for (const name of this.#block.names()) {
      if (this.#g.named.has(name)) {
        // A named package's releases are those built so far: every cached manifest of it.
        for await (const key of this.#g.store.keys(namedPrefix(name))) {
          const object = await this.#g.store.get(key);
          if (!object) continue;
          const ref = key.split("/").at(-1)!.replace(/\.json$/, "");
          add(object.body, this.#block.match(name, this.#statedVersion(object.body), ref));
        }
        continue;
      }
      const variants = new Set<string>(["py"]);
      let versions: string[] = [];
      try {
        const doc = JSON.parse(dec.decode((await this.#g.index.indexJson()).body));
        const entry = (doc.packages ?? []).find((p: { name?: string }) => p?.name === name);
        for (const [mpy, list] of Object.entries((entry?.versions ?? {}) as Record<string, unknown>)) {
          variants.add(mpy);
          if (Array.isArray(list)) versions.push(...list.map(String));
        }
      } catch (e) {
        this.#g.logger.warn("Cannot read index.json for the releases of a blocked package", {
          package: name,
          error: (e as Error).message,
        });
      }
      versions = [...new Set(versions)].slice(0, VERSION_LIMIT);
      for (const version of versions) {
        for (const mpy of variants) {
          try {
            add((await this.#g.index.manifest(mpy, name, version)).body, this.#block.match(name, version));
          } catch {
            // A release an index lists without this variant: nothing to block or keep.
          }
        }
      }
    }
    for (const hash of kept) blocked.delete(hash);
    // What a served manifest listed is not blocked (file() asks again: more are served after this is computed).
    for (const hash of blocked.keys()) if (this.#listed.served(hash)) blocked.delete(hash);
    return blocked;
  }

  /**
   * A locked manifest: the real one (for its dependencies, and to notice upstream changes) with the locked hashes;
   * built from the lock alone when the real one cannot be had and the package has no dependencies.
   */
  async #locked(
    id: string,
    entry: LockedPackage,
    mpy: string,
    profile: string | null,
    real: () => Promise<Served>,
  ): Promise<Served> {
    const variant = variantKey(mpy, profile);
    const files = entry.files[variant];
    if (!files) {
      throw new NotAllowed(
        `${id} ${variant} is not allowed: the lock file ${this.#g.lock!.path} has no hashes for variant ${variant}` +
          ` (it has ${Object.keys(entry.files).sort().join(", ")})`,
      );
    }
    let doc: Record<string, unknown>;
    let outcome: Served["outcome"] = "hit";
    let upstreamMs: number | undefined;
    try {
      const answer = await real();
      outcome = answer.outcome;
      upstreamMs = answer.upstreamMs;
      const view = readManifest(answer.body);
      if (view.doc === undefined) throw new SyntaxError(`${id}: the manifest is not JSON`);
      doc = view.doc as Record<string, unknown>;
      const changed = listedHashes(answer.body).length !== Object.keys(files).length ||
        (Array.isArray(doc.hashes) ? doc.hashes : []).some((e: unknown[]) => {
          const locked = files[String(e[0])];
          return !locked || !locked.startsWith(String(e[1]));
        });
      if (changed) {
        this.#g.logger.error("LOCK MISMATCH: upstream differs from the lock; serving the locked bytes", {
          package: id,
          version: entry.version,
          variant,
        });
      }
    } catch (e) {
      // Only an upstream that lacks or fails the release is made up for; what the policy refuses stays refused.
      if (!(e instanceof NotFound || e instanceof Failure) || entry.deps.length > 0) throw e;
      this.#g.logger.warn("Serving a locked manifest from the lock alone", { package: id, error: e.message });
      doc = { v: 1 };
    }
    const hashes = Object.entries(files).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    for (const [dest, hash] of hashes) {
      try {
        await this.#obtain(hash, hash);
      } catch (e) {
        if (!(e instanceof DomainError)) throw e;
        throw new LockMismatch(
          `LOCK MISMATCH: ${id} ${entry.version}: ${dest}: ${e.message.replace(/^LOCK MISMATCH: /, "")}`,
        );
      }
    }
    const out: Record<string, unknown> = { ...doc, version: entry.version, hashes };
    delete out.urls;
    this.#listed.noteServed(hashes.map(([, hash]) => hash));
    return { ...(await served(out, outcome, "manifest")), upstreamMs };
  }

  /**
   * Makes sure the locked bytes `full` are in the store under `files/{h2}/{full}`: already there, or under the short
   * hash an index names them by, or fetched from upstream by hash. Returns whether upstream was asked. Throws 502
   * `LOCK MISMATCH` when the bytes cannot be had.
   */
  async #obtain(full: string, asked: string): Promise<boolean> {
    const key = fileKey(full);
    if (await this.#g.store.has(key)) return false;
    const shortObject = await this.#g.store.get(fileKey(short(full)));
    if (shortObject && (await sha256Hex(shortObject.body)) === full) {
      await this.#g.store.put(key, shortObject.body);
      return false;
    }
    for (const hash of [short(full), full]) {
      try {
        const answer = await super.file(hash);
        const actual = await sha256Hex(answer.body);
        if (actual === full) {
          await this.#g.store.put(key, answer.body);
          return true;
        }
        this.#g.logger.error("LOCK MISMATCH: upstream bytes differ from the lock; not served", {
          file: asked,
          locked: full,
          actual,
        });
      } catch (e) {
        if (!(e instanceof DomainError)) throw e;
      }
    }
    this.#g.logger.error("LOCK MISMATCH: the locked bytes are neither cached nor available upstream", { file: full });
    throw new LockMismatch(
      `LOCK MISMATCH: the locked bytes of file ${full} are neither cached nor available upstream by hash`,
    );
  }
}
