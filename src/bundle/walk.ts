/**
 * Follows packages the way mip installs them, through an app's handler in-process: a manifest, the files its
 * `hashes` name, its `urls`, then its dependencies (index names, `/repo/` manifests, mirrored package.json files and
 * single files), each once. `warm` walks with upstream access to fill the cache; `export` walks offline to collect
 * what is cached. The app must use `BASE_PLACEHOLDER` as its public URL, so manifests come back with the placeholder
 * where this server's address goes.
 * @module
 */
import type { ServeHandler } from "../http/server.ts";
import { BASE_PLACEHOLDER } from "../packages/locations.ts";
import { fileKey, mirrorKey } from "../store/keys.ts";

/** A package to walk: a name and `latest` or a version. */
export interface Spec {
  name: string;
  version: string;
}

/** One plain variant (`py` or an .mpy version) with or without a target profile. */
export interface Variant {
  mpy: string;
  profile: string | null;
}

/** What a walk found. */
export interface Walked {
  /** Manifests by request path (no leading `/`), with the base placeholder in them. */
  served: Map<string, Uint8Array>;
  /** Cache keys of content-addressed files (`files/h2/hash`). */
  files: Set<string>;
  /** Cache keys of mirrored raw files (`mirror/...`). */
  mirrors: Set<string>;
  /** Names of the index and named packages reached. */
  names: Set<string>;
}

/** How a walk treats files. */
export interface WalkOptions {
  handler: ServeHandler;
  /** Whether a file is there: `warm` fetches it (through the handler), `export` checks the cache. */
  haveFile(hash: string): Promise<boolean>;
  /** Whether `name` is a named package (its manifests are not also walked at their stated version). */
  isNamed(name: string): boolean;
}

/** Parses `name` or `name@version`. */
export function parseSpec(text: string): Spec {
  const at = text.indexOf("@");
  if (at < 0) return { name: text, version: "latest" };
  return { name: text.slice(0, at), version: text.slice(at + 1) || "latest" };
}

/** The text of a spec. */
export function specText(spec: Spec): string {
  return spec.version === "latest" ? spec.name : `${spec.name}@${spec.version}`;
}

/** An answer that was not 200: its status and body. */
export class WalkError extends Error {
  constructor(readonly path: string, readonly status: number, body: string) {
    super(`${path}: ${status} ${body.trim().slice(0, 300)}`);
    this.name = "WalkError";
  }
}

const dec = new TextDecoder();
const FILE_CONCURRENCY = 8;

/** Walks packages through a handler, collecting what they need. */
export class Walker {
  readonly found: Walked = { served: new Map(), files: new Set(), mirrors: new Set(), names: new Set() };
  #o: WalkOptions;
  #visited = new Set<string>();

  constructor(options: WalkOptions) {
    this.#o = options;
  }

  async #get(path: string): Promise<Uint8Array> {
    const res = await this.#o.handler(new Request(`http://mipserver.invalid${path}`));
    const body = new Uint8Array(await res.arrayBuffer());
    if (res.status !== 200) throw new WalkError(path, res.status, dec.decode(body));
    return body;
  }

  /**
   * Walks `spec` for `variant`; throws a {@linkcode WalkError} (or another Error) when the package itself or anything
   * it needs cannot be had. For an index package asked for as `latest`, the manifest of the version it names is
   * walked too (so `name@version` installs work later); that one may be missing.
   */
  async package(spec: Spec, variant: Variant): Promise<void> {
    const prefix = variant.profile ? `/t/${variant.profile}` : "";
    const path = `${prefix}/package/${variant.mpy}/${spec.name}/${spec.version}.json`;
    const doc = await this.#manifest(path);
    this.found.names.add(spec.name);
    if (spec.version === "latest" && !this.#o.isNamed(spec.name) && typeof doc?.version === "string") {
      const versioned = `${prefix}/package/${variant.mpy}/${spec.name}/${doc.version}.json`;
      if (/^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/.test(doc.version)) await this.#manifest(versioned).catch(() => {});
    }
  }

  /** Walks a manifest (or repo manifest) at `path` once; returns its parsed body (undefined when already walked). */
  async #manifest(path: string): Promise<Record<string, unknown> | undefined> {
    if (this.#visited.has(path)) return undefined;
    const body = await this.#get(path);
    this.#visited.add(path);
    const doc = JSON.parse(dec.decode(body));
    this.found.served.set(path.slice(1), body);
    await this.#contents(doc, path);
    return doc;
  }

  async #contents(doc: Record<string, unknown>, from: string): Promise<void> {
    const hashes = Array.isArray(doc.hashes) ? doc.hashes : [];
    let next = 0;
    const worker = async () => {
      while (next < hashes.length) {
        const entry = hashes[next++];
        const hash = Array.isArray(entry) ? String(entry[1]) : "";
        if (!/^[0-9a-f]{4,64}$/.test(hash)) throw new Error(`${from}: invalid hash entry ${JSON.stringify(entry)}`);
        if (!(await this.#o.haveFile(hash))) throw new Error(`${from}: file ${hash} (${entry[0]}) is not cached`);
        this.found.files.add(fileKey(hash));
      }
    };
    await Promise.all(Array.from({ length: Math.min(FILE_CONCURRENCY, hashes.length) }, worker));
    for (const entry of Array.isArray(doc.urls) ? doc.urls : []) {
      const url = Array.isArray(entry) ? String(entry[1]) : "";
      if (url.startsWith(BASE_PLACEHOLDER)) await this.#mirror(url.slice(BASE_PLACEHOLDER.length));
    }
    const prefix = /^\/t\/[^/]+/.exec(from)?.[0] ?? "";
    const mpy = /\/(?:package|repo)\/([^/]+)\//.exec(from)?.[1] ?? "py";
    for (const dep of Array.isArray(doc.deps) ? doc.deps : []) {
      const [target, version] = Array.isArray(dep) ? [String(dep[0]), String(dep[1] ?? "latest")] : [String(dep), ""];
      if (target.startsWith(BASE_PLACEHOLDER)) {
        const path = target.slice(BASE_PLACEHOLDER.length);
        if (/^(\/t\/[^/]+)?\/repo\//.test(path)) await this.#manifest(path);
        else await this.#mirror(path);
      } else if (!/^[a-z]+:/.test(target)) {
        await this.package({ name: target, version: version || "latest" }, { mpy, profile: prefix.slice(3) || null });
      }
    }
  }

  /** A mirrored file or package.json (`/github/...`, `/gitlab/...`, `/url/...`), and what a package.json needs. */
  async #mirror(path: string): Promise<void> {
    const plain = path.replace(/^\/t\/[^/]+(?=\/)/, "");
    if (this.#visited.has(plain)) return;
    const body = await this.#get(plain);
    this.#visited.add(plain);
    this.found.mirrors.add(mirrorKey(plain));
    if (plain.endsWith(".json")) await this.#contents(JSON.parse(dec.decode(body)), plain);
  }
}
