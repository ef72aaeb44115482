/**
 * `policy.unlisted`: with `deny`, only packages named in `packages` or `pins` and their dependency closure are
 * served (and the repositories and hosts that closure's URL dependencies live in). The closure is walked through the
 * same cache devices read from, recomputed after `cache.ttl`, and terminates on dependency cycles (logging them).
 * @module
 */
import { NotAllowed } from "../errors.ts";
import type { Logger } from "../log.ts";
import { BASE_PLACEHOLDER } from "./locations.ts";
import { ListedFiles } from "./listed_files.ts";
import { listedHashes } from "./names.ts";
import { REPO_HOST_ALTERNATIVES } from "./sources/registry.ts";

/** A dependency as a package states it: `[name or URL, version]`. */
export type Dep = [string, string];

/** What the policy is built from. */
export interface PolicyOptions {
  mode: "allow" | "deny";
  /** Names allowed outright: `packages` and `pins` keys. */
  roots: string[];
  /** Dependencies of a package by name (index or named package, latest or pinned version). */
  depsOfName(name: string): Promise<Dep[]>;
  /**
   * Dependencies of a package.json on this server's mirrors (a path such as `/github/o/r/HEAD/package.json`), and the
   * mirror paths its files live at.
   */
  depsOfMirror(path: string): Promise<{ deps: Dep[]; files: string[] }>;
  ttl: number;
  now?: () => number;
  logger: Logger;
  /** Where the files allowed manifests list are remembered (shared with the pins and the guards; default: its own). */
  listed?: ListedFiles;
}

/** What the closure allows. */
export interface Allowed {
  names: Set<string>;
  /** Mirror path prefixes: `/{code host}/o/r/` (`/github/o/r/`, ...) or `/url/{scheme}/{host}/`. */
  prefixes: Set<string>;
}

const DEPENDENCY_MANIFEST = new RegExp(`^/repo/[^/]+(?=/(${REPO_HOST_ALTERNATIVES})/)`);
const REPO_PREFIX = new RegExp(`^/(${REPO_HOST_ALTERNATIVES})/([^/]+)/([^/]+)/`);

/**
 * A device path that names repository content (`/github/...` and the other code hosts', `/url/...`, or a dependency
 * manifest `/repo/{mpy}/github/...`, optionally under `/t/{profile}`) as its plain mirror path.
 */
export function mirrorPathOf(path: string): string {
  return path.replace(/^\/t\/[^/]+(?=\/)/, "").replace(DEPENDENCY_MANIFEST, "");
}

/** The mirror prefix a path belongs to: its repository, or for plain URLs its host. */
export function prefixOf(path: string): string | undefined {
  const m = REPO_PREFIX.exec(path) ?? /^\/(url)\/([^/]+)\/([^/]+)\//.exec(path);
  return m ? `/${m[1]}/${m[2]}/${m[3]}/` : undefined;
}

/** Decides what may be served. */
export class Policy {
  #o: PolicyOptions;
  #now: () => number;
  #allowed?: { at: number; value: Promise<Allowed> };
  #listed: ListedFiles;

  constructor(options: PolicyOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
    this.#listed = options.listed ?? new ListedFiles();
  }

  /** Whether anything is refused at all. */
  get denying(): boolean {
    return this.#o.mode === "deny";
  }

  /** The closure of the roots, computed at most once per `ttl`. */
  allowed(): Promise<Allowed> {
    if (!this.#allowed || this.#now() - this.#allowed.at >= this.#o.ttl) {
      this.#allowed = { at: this.#now(), value: this.#walk() };
    }
    return this.#allowed.value;
  }

  /** Throws 403 unless `name` may be served. */
  async checkName(name: string): Promise<void> {
    if (!this.denying) return;
    if (this.#o.roots.includes(name) || (await this.allowed()).names.has(name)) return;
    throw new NotAllowed(
      `Package ${name} is not allowed: policy.unlisted is deny and it is not in packages, pins or their dependencies`,
    );
  }

  /** Throws 403 unless the mirror path (`/github/...` and the other code hosts', `/url/...`) may be served. */
  async checkMirror(path: string): Promise<void> {
    if (!this.denying) return;
    const prefix = prefixOf(mirrorPathOf(path));
    if (prefix && (await this.allowed()).prefixes.has(prefix)) return;
    throw new NotAllowed(
      `${path} is not allowed: policy.unlisted is deny and it is not a dependency of packages or pins`,
    );
  }

  /**
   * Remembers the file hashes of a manifest of an allowed package (`name`), so their `/file/` requests are allowed:
   * with `deny`, `/file/` serves only what an allowed manifest served since start listed. They are kept in the
   * {@linkcode ListedFiles} (at most `MAX_LISTED_FILES` short hashes, the oldest forgotten first); a forgotten one is
   * allowed again as soon as its manifest is asked for, which `mip` always does before the files.
   */
  noteManifest(name: string, body: Uint8Array): void {
    if (!this.denying) return;
    this.#listed.noteAllowed(name, listedHashes(body));
  }

  /** Whether a file hash is listed by an allowed manifest seen since start (always, unless `deny`). */
  fileAllowed(hash: string): boolean {
    return !this.denying || this.#listed.allows(hash);
  }

  /** The allowed packages whose manifests list a file hash (at most four), for messages. */
  packagesOf(hash: string): string[] {
    return this.#listed.packagesOf(hash);
  }

  async #walk(): Promise<Allowed> {
    const names = new Set<string>();
    const prefixes = new Set<string>();
    const state = new Map<string, "open" | "done">();
    const stack: string[] = [];
    const visit = async (node: string): Promise<void> => {
      const s = state.get(node);
      if (s === "open") {
        this.#o.logger.warn("Dependency cycle", { cycle: [...stack.slice(stack.indexOf(node)), node].join(" -> ") });
        return;
      }
      if (s === "done") return;
      state.set(node, "open");
      stack.push(node);
      try {
        let deps: Dep[] = [];
        if (node.startsWith("/")) {
          const prefix = prefixOf(node);
          if (prefix) prefixes.add(prefix);
          const found = await this.#o.depsOfMirror(node);
          for (const f of found.files) {
            const p = prefixOf(f);
            if (p) prefixes.add(p);
          }
          deps = found.deps;
        } else {
          names.add(node);
          deps = await this.#o.depsOfName(node);
        }
        for (const [dep] of deps) {
          await visit(dep.startsWith(BASE_PLACEHOLDER) ? mirrorPathOf(dep.slice(BASE_PLACEHOLDER.length)) : dep);
        }
      } catch (e) {
        this.#o.logger.warn("Cannot read a dependency while computing the allowed set", {
          package: node,
          error: (e as Error).message,
        });
      } finally {
        stack.pop();
        state.set(node, "done");
      }
    };
    for (const root of this.#o.roots) await visit(root);
    return { names, prefixes };
  }
}
