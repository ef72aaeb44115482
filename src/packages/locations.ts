/**
 * Where package files live upstream, and where this server mirrors them. Every source ends up as an upstream URL;
 * mirror paths (`/github/...`, `/gitlab/...`, `/url/...`) map those URLs onto this server so devices never leave the
 * LAN.
 * @module
 */

import { clip, parseHost } from "./names.ts";

/** The raw-file bases of the code hosts. */
export interface HostBases {
  /** GitHub raw-file base, e.g. https://raw.githubusercontent.com. */
  github: string;
  /** GitLab base, e.g. https://gitlab.com. */
  gitlab: string;
}

/** Placeholder for this server's public base URL inside cached manifests; replaced per request. */
export const BASE_PLACEHOLDER = "mipserver:";

const SPEC = /^(github|gitlab):([A-Za-z0-9_.-]+)\/([A-Za-z0-9_.-]+)(?:\/(.*))?$/;
const COMMIT = /^[0-9a-f]{40}$/;
const TAG = /^v?\d+(\.\d+)*([-+][A-Za-z0-9.+-]*|(a|b|rc)\d+)?$/;

/**
 * Whether a ref names content that never changes: a commit SHA, or a version-like tag (`v1.2`, `1.0.3`, `2.0-rc1`).
 * Branch names (`main`, `HEAD`, `dev`) are re-resolved after `cache.ttl`.
 */
export function isImmutableRef(ref: string): boolean {
  return COMMIT.test(ref) || TAG.test(ref);
}

/**
 * How long content at `ref` stays fresh in the cache: commits for good; version-like tags for `tagTtl` ms (for good
 * when null), because a tag can be moved upstream even though it normally is not; branches for `cache.ttl` (`true`).
 */
export function refMutability(ref: string, tagTtl: number | null): boolean | number {
  if (COMMIT.test(ref)) return false;
  if (TAG.test(ref)) return tagTtl ?? false;
  return true;
}

/**
 * Parses an absolute http(s) URL from a package.json and checks its host by the `/url/` route's rule, so every URL we
 * hand a device can be served; throws an Error saying why not.
 */
export function checkedUrl(src: string): URL {
  let url: URL;
  try {
    url = new URL(src);
  } catch {
    throw new Error(`${JSON.stringify(clip(src))} is not a valid URL`);
  }
  try {
    parseHost(url.protocol === "https:" ? "https" : "http", url.host);
  } catch (e) {
    throw new Error(`${JSON.stringify(clip(src))}: ${(e as Error).message}`);
  }
  return url;
}

/** A `github:`/`gitlab:` spec split up, or undefined for anything else. */
export function parseSpec(
  spec: string,
): { host: "github" | "gitlab"; owner: string; repo: string; path: string } | undefined {
  const m = SPEC.exec(spec);
  if (!m) return undefined;
  return { host: m[1] as "github" | "gitlab", owner: m[2], repo: m[3], path: (m[4] ?? "").replace(/\/+$/, "") };
}

/** The upstream raw URL of `path` in a repository at `ref`, in each host's layout. */
export function rawUrl(
  bases: HostBases,
  host: "github" | "gitlab",
  owner: string,
  repo: string,
  ref: string,
  path: string,
): string {
  const tail = path ? `/${path}` : "";
  return host === "github"
    ? `${bases.github}/${owner}/${repo}/${ref}${tail}`
    : `${bases.gitlab}/${owner}/${repo}/-/raw/${ref}${tail}`;
}

/** The URL of a `github:`/`gitlab:` spec at `ref` (a file spec stays a file; a repo spec names its package.json). */
export function specUrl(bases: HostBases, spec: string, ref: string, asPackage: boolean): string | undefined {
  const s = parseSpec(spec);
  if (!s) return undefined;
  let path = s.path;
  if (asPackage && !/\.(py|mpy|json)$/.test(path)) path = path ? `${path}/package.json` : "package.json";
  return rawUrl(bases, s.host, s.owner, s.repo, ref, path);
}

/** For a raw URL under a code host, the URL prefix of its repository at its ref (relative urls must stay under it). */
export function repoRoot(bases: HostBases, url: string): string | undefined {
  for (const [base, gitlab] of [[bases.github, false], [bases.gitlab, true]] as const) {
    if (!url.startsWith(`${base}/`)) continue;
    const parts = url.slice(base.length + 1).split("/");
    const n = gitlab ? 5 : 3; // owner/repo/ref or owner/repo/-/raw/ref
    if (parts.length <= n) return undefined;
    return `${base}/${parts.slice(0, n).join("/")}/`;
  }
  return undefined;
}

/**
 * Resolves a package.json `urls` entry or dependency against the package.json's own URL: `http(s)` URLs stay,
 * `github:`/`gitlab:` specs use `ref` (as mip does), anything else is relative and must stay inside the repository
 * (for code hosts) or on the same host (for plain URLs). Throws an Error saying why not.
 */
export function resolveSource(bases: HostBases, src: string, packageUrl: string, ref: string): string {
  if (/^https?:\/\//.test(src)) return checkedUrl(src).href;
  const spec = specUrl(bases, src, ref, false);
  if (spec) return spec;
  if (/^[a-z][a-z0-9+.-]*:/i.test(src) || src.startsWith("/")) {
    throw new Error(`${JSON.stringify(src)} is neither relative nor an http(s), github: or gitlab: URL`);
  }
  const resolved = new URL(src, packageUrl).href;
  const root = repoRoot(bases, packageUrl) ?? `${new URL(packageUrl).origin}/`;
  if (!resolved.startsWith(root)) throw new Error(`${JSON.stringify(src)} leaves the repository`);
  return resolved;
}

/** The path on this server that mirrors an upstream URL: `/github/...`, `/gitlab/...` or `/url/{scheme}/{host}/...`. */
export function mirrorPath(bases: HostBases, url: string): string {
  if (url.startsWith(`${bases.github}/`)) return `/github/${url.slice(bases.github.length + 1)}`;
  if (url.startsWith(`${bases.gitlab}/`)) {
    const m = /^([^/]+)\/([^/]+)\/-\/raw\/(.+)$/.exec(url.slice(bases.gitlab.length + 1));
    if (m) return `/gitlab/${m[1]}/${m[2]}/${m[3]}`;
  }
  const u = new URL(url);
  return `/url/${u.protocol.slice(0, -1)}/${u.host}${u.pathname}`;
}

/** The upstream URL behind `/url/{scheme}/{host}/{path}`. */
export function plainUrl(scheme: "http" | "https", host: string, path: string): string {
  return `${scheme}://${host}/${path}`;
}
