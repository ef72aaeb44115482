/**
 * `mipserver lock PKG[@VERSION]...`: resolves each package and its whole dependency closure through the same resolver
 * devices are served from, for `py`, the compiled `.mpy` version and every target profile, fetches every file, and
 * records the exact versions and each file's full sha256 as a {@linkcode LockFile}.
 * @module
 */
import { sha256Hex } from "../store/hash.ts";
import type { Served } from "../cache/served.ts";
import { answerFor } from "../http/errors.ts";
import { REPO_HOST_ALTERNATIVES } from "../packages/sources/registry.ts";
import type { RepoSpec } from "../packages/sources/source.ts";
import { LOCK_FORMAT, type LockedPackage, type LockFile, repoId, variantKey } from "../packages/lock_file.ts";
import { parseSpec } from "./walk.ts";

/** The parts of the resolver a lock is made with. */
export interface LockResolver {
  manifest(mpy: string, name: string, version: string, profile: string | null, base: string): Promise<Served>;
  repoManifest(mpy: string, spec: RepoSpec, profile: string | null, base: string): Promise<Served>;
  file(hash: string): Promise<Served>;
}

/** What a lock is made from. */
export interface LockOptions {
  resolver: LockResolver;
  /** Named packages: whether `name` is one, and the ref `version` means for it (`latest`: pin, ref or default). */
  named: { has(name: string): boolean; refFor(name: string, version: string): string };
  /** The compiled variant's `.mpy` version (the configured mpy-cross's major version). */
  mpy: string;
  /** Target profiles to lock compiled hashes for. */
  profiles: string[];
  /** Most packages in one closure (bounds the walk). */
  limit?: number;
}

/** A base URL that only marks this server's own URLs in manifests, so they can be told from names. */
const BASE = "http://mipserver-lock.invalid";
const dec = new TextDecoder();

/** `/repo/{mpy}/{host}/{owner}/{repo}/{ref}/{path}`: a repository dependency manifest on this server. */
const REPO_MANIFEST = new RegExp(`^/repo/[^/]+/(${REPO_HOST_ALTERNATIVES})/([^/]+)/([^/]+)/([^/]+)/(.+)$`);

interface Node {
  id: string;
  /** The version asked for (`latest` or a version/ref). */
  version: string;
  /** Who asked (for conflict messages). */
  from: string;
  repo?: RepoSpec;
}

/** A dependency as this server rewrote it, as a node of the closure; undefined for mirror URLs (recorded only). */
function depNode(dep: unknown, from: string): { node?: Node; id: string } {
  const [target, version] = Array.isArray(dep) ? [String(dep[0]), String(dep[1] ?? "latest")] : [String(dep), "latest"];
  if (!target.startsWith(BASE)) return { id: target, node: { id: target, version: version || "latest", from } };
  const path = target.slice(BASE.length).replace(/^\/t\/[^/]+(?=\/)/, "");
  const m = REPO_MANIFEST.exec(path);
  if (!m) return { id: `mirror:${path}` };
  const repo: RepoSpec = { host: m[1], owner: m[2], repo: m[3], ref: m[4], path: m[5] };
  const id = repoId(repo);
  return { id, node: { id, version: repo.ref, from, repo } };
}

/**
 * The release a named package's `latest` is now, when it can be asked for by that version (`pypi:` sources), so the
 * lock reads one fixed release; else `latest` (`url:` and `local:` sources have one version only).
 */
async function releaseOf(resolver: LockResolver, name: string): Promise<string> {
  try {
    const version = JSON.parse(dec.decode((await resolver.manifest("py", name, "latest", null, BASE)).body)).version;
    if (typeof version !== "string" || version === "latest") return "latest";
    await resolver.manifest("py", name, version, null, BASE);
    return version;
  } catch {
    return "latest";
  }
}

/** Resolves `specs` and their closure into a lock. Errors name the package that failed. */
export async function createLock(specs: string[], options: LockOptions): Promise<LockFile> {
  const { resolver, named } = options;
  const limit = options.limit ?? 10_000;
  const variants: [string, string | null][] = [
    ["py", null],
    [options.mpy, null],
    ...options.profiles.map((p): [string, string | null] => [options.mpy, p]),
  ];
  const packages: Record<string, LockedPackage> = {};
  const asked = new Map<string, Node>();
  const queue: Node[] = specs.map((s) => {
    const { name, version } = parseSpec(s);
    return { id: name, version, from: "the command line" };
  });
  while (queue.length > 0) {
    const node = queue.shift()!;
    const done = packages[node.id];
    if (done) {
      if (node.version !== "latest" && node.version !== done.version && node.version !== done.ref) {
        const first = asked.get(node.id)!;
        throw new Error(
          `Conflicting versions of ${node.id} in the closure: ${node.version} (asked by ${node.from}) and ` +
            `${done.version} (asked by ${first.from})`,
        );
      }
      continue;
    }
    if (Object.keys(packages).length >= limit) throw new Error(`More than ${limit} packages in the closure`);
    asked.set(node.id, node);
    const kind = node.repo ? "repo" : named.has(node.id) ? "named" : "index";
    let ref = kind === "named" ? named.refFor(node.id, node.version) : node.version;
    if (kind === "named" && ref === "latest") ref = await releaseOf(resolver, node.id);
    let version = "";
    const files: Record<string, Record<string, string>> = {};
    const deps = new Set<string>();
    for (const [mpy, profile] of variants) {
      let served: Served;
      try {
        served = node.repo
          ? await resolver.repoManifest(mpy, node.repo, profile, BASE)
          : await resolver.manifest(mpy, node.id, ref, profile, BASE);
      } catch (e) {
        const answer = answerFor(e);
        const why = answer ? `${answer.status} ${answer.text}` : (e as Error).message;
        throw new Error(
          `Cannot lock ${node.id}${ref === "latest" ? "" : `@${ref}`} (${variantKey(mpy, profile)}): ${why}`,
        );
      }
      const doc = JSON.parse(dec.decode(served.body));
      if (!version) {
        version = String(doc.version ?? ref);
        // An index package is read at the version latest resolved to, so every variant is that one release.
        if (kind === "index") ref = version;
      }
      const list: Record<string, string> = {};
      for (const entry of Array.isArray(doc.hashes) ? doc.hashes : []) {
        const [dest, hash] = [String(entry[0]), String(entry[1])];
        const body = (await resolver.file(hash)).body;
        const full = await sha256Hex(body);
        if (!full.startsWith(hash)) throw new Error(`File ${dest} of ${node.id} does not match its hash ${hash}`);
        list[dest] = full;
      }
      files[variantKey(mpy, profile)] = list;
      for (const dep of Array.isArray(doc.deps) ? doc.deps : []) {
        const { node: child, id } = depNode(dep, node.id);
        deps.add(id);
        if (child) queue.push(child);
      }
    }
    packages[node.id] = { kind, version, ref, deps: [...deps].sort(), files };
  }
  return { lock: LOCK_FORMAT, mpy: options.mpy, profiles: [...options.profiles].sort(), roots: [...specs], packages };
}
