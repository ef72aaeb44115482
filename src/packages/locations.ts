/**
 * Where package files live upstream, and where this server mirrors them. Every source ends up as an upstream URL;
 * mirror paths (`/github/...`, `/gitlab/...`, `/codeberg/...`: one per code host of the registry, and `/url/...`)
 * map those URLs onto this server so devices never leave the LAN.
 * @module
 */

import { checkedUrl } from "./package_json.ts";
import { REPO_HOST_ALTERNATIVES, REPO_HOST_NAMES, REPO_HOSTS, repoHost } from "./sources/registry.ts";
import { baseOf } from "./sources/repo_host.ts";
import type { HostBases, RepoFile, RepoHost } from "./sources/source.ts";

export type { HostBases } from "./sources/source.ts";
export { isImmutableRef, refMutability } from "./sources/repo_host.ts";
export { checkedUrl };

/** Placeholder for this server's public base URL inside cached manifests; replaced per request. */
export const BASE_PLACEHOLDER = "mipserver:";

const SPEC = new RegExp(`^(${REPO_HOST_ALTERNATIVES}):([A-Za-z0-9_.-]+)\\/([A-Za-z0-9_.-]+)(?:\\/(.*))?$`);

/** `http(s), github:, gitlab: or codeberg:`: what a package.json entry that is not relative may be. */
const ABSOLUTE_FORMS = `http(s), ${REPO_HOST_NAMES.slice(0, -1).map((n) => `${n}:`).join(", ")} or ${
  REPO_HOST_NAMES.at(-1)
}:`;

/** A code-host spec (`github:`, `gitlab:`, `codeberg:`, ...) split up, or undefined for anything else. */
export function parseSpec(spec: string): { host: string; owner: string; repo: string; path: string } | undefined {
  const m = SPEC.exec(spec);
  if (!m) return undefined;
  return { host: m[1], owner: m[2], repo: m[3], path: (m[4] ?? "").replace(/\/+$/, "") };
}

function hostNamed(name: string): RepoHost {
  const host = repoHost(name);
  if (!host) throw new Error(`unknown code host ${name}`);
  return host;
}

/** The upstream raw URL of `path` in a repository at `ref`, in the layout of the code host named `host`. */
export function rawUrl(
  bases: HostBases,
  host: string,
  owner: string,
  repo: string,
  ref: string,
  path: string,
): string {
  const layout = hostNamed(host);
  return layout.rawUrl(baseOf(bases, layout), owner, repo, ref, path);
}

/** The URL of a code-host spec at `ref` (a file spec stays a file; a repo spec names its package.json). */
export function specUrl(bases: HostBases, spec: string, ref: string, asPackage: boolean): string | undefined {
  const s = parseSpec(spec);
  if (!s) return undefined;
  let path = s.path;
  if (asPackage && !/\.(py|mpy|json)$/.test(path)) path = path ? `${path}/package.json` : "package.json";
  return rawUrl(bases, s.host, s.owner, s.repo, ref, path);
}

/**
 * A raw URL under one of the code hosts, split into its parts, with the host and the base it is under. When code
 * hosts share a base (a Forgejo serving more than one kind, or one address for all in a test), the layout that
 * explains more of the URL (the longest repository root) wins: a GitHub-style parse reads any path, a Forgejo one only
 * `/api/v1/repos/{owner}/{repo}/raw/...?ref=`.
 */
export function parseRawUrl(
  bases: HostBases,
  url: string,
): (RepoFile & { host: RepoHost; base: string }) | undefined {
  let best: (RepoFile & { host: RepoHost; base: string }) | undefined;
  let bestRoot = -1;
  for (const host of REPO_HOSTS) {
    const base = baseOf(bases, host);
    const file = host.parseRaw(base, url);
    if (!file) continue;
    const root = host.root(base, file.owner, file.repo, file.ref).length;
    if (root > bestRoot) [best, bestRoot] = [{ ...file, host, base }, root];
  }
  return best;
}

/** Whether `url` is under one of the code hosts' bases. */
export function isRepoUrl(bases: HostBases, url: string): boolean {
  return REPO_HOSTS.some((host) => url.startsWith(`${baseOf(bases, host)}/`));
}

/**
 * Resolves a package.json `urls` entry or dependency against the package.json's own URL: `http(s)` URLs stay,
 * code-host specs use `ref` (as mip does), anything else is relative and must stay inside the repository at its ref
 * (for code hosts) or on the same host (for plain URLs). Throws an Error saying why not.
 */
export function resolveSource(bases: HostBases, src: string, packageUrl: string, ref: string): string {
  if (/^https?:\/\//.test(src)) return checkedUrl(src).href;
  const spec = specUrl(bases, src, ref, false);
  if (spec) return spec;
  if (/^[a-z][a-z0-9+.-]*:/i.test(src) || src.startsWith("/")) {
    throw new Error(`${JSON.stringify(src)} is neither relative nor an ${ABSOLUTE_FORMS} URL`);
  }
  const resolved = new URL(src, packageUrl).href;
  const at = parseRawUrl(bases, packageUrl);
  if (at && at.path !== "") {
    const root = at.host.root(at.base, at.owner, at.repo, at.ref);
    if (!resolved.startsWith(root)) throw new Error(`${JSON.stringify(src)} leaves the repository`);
    const path = resolved.slice(root.length);
    if (path === "") throw new Error(`${JSON.stringify(src)} names the repository, not a file in it`);
    return at.host.rawUrl(at.base, at.owner, at.repo, at.ref, path);
  }
  if (!resolved.startsWith(`${new URL(packageUrl).origin}/`)) {
    throw new Error(`${JSON.stringify(src)} leaves the repository`);
  }
  return resolved;
}

/**
 * The path on this server that mirrors an upstream URL: `/{host}/{owner}/{repo}/{ref}/{path}` for a code host's raw
 * file, else `/url/{scheme}/{host}/...`.
 */
export function mirrorPath(bases: HostBases, url: string): string {
  const at = parseRawUrl(bases, url);
  if (at) return `/${at.host.name}/${at.owner}/${at.repo}/${at.ref}${at.path ? `/${at.path}` : ""}`;
  const u = new URL(url);
  return `/url/${u.protocol.slice(0, -1)}/${u.host}${u.pathname}`;
}

/** The upstream URL behind `/url/{scheme}/{host}/{path}`. */
export function plainUrl(scheme: "http" | "https", host: string, path: string): string {
  return `${scheme}://${host}/${path}`;
}
