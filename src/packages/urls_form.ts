/**
 * Manifests in `urls` form, for URL installs (`mip.install("http://gw:18891/github/o/r/main")`). mip fetches a URL
 * install's `hashes` from the `index` the device was given (micropython.org by default) and sends its index-name
 * dependencies there too, so a URL-installed package only stays on the LAN when everything it lists is an absolute
 * URL on this server: files become `{base}{prefix}/file/{h2}/{hash}`, index names become
 * `{base}{prefix}/urls/package/{mpy}/{name}/{version}.json` (the same manifest, in this form), and repository
 * dependencies become mirror URLs (`{base}{prefix}/github/...`, one route per code host). Absolute, because firmware before 1.25 cannot resolve
 * relative URLs.
 * @module
 */
import { type HostBases, mirrorPath, parseSpec, specUrl } from "./locations.ts";
import { REPO_HOST_ALTERNATIVES } from "./sources/registry.ts";

/** Where the URLs of a urls-form manifest point: this server's base URL, the profile prefix, the `.mpy` version. */
export interface UrlsFormTarget {
  /** This server's base URL as the device sees it, e.g. `http://gw:18891`. */
  base: string;
  /** `""`, or `/t/{profile}` for compiled output. */
  prefix: string;
  /** What index-name dependencies are asked for: `py` or an `.mpy` major version. */
  mpy: string;
  bases: HostBases;
}

/** The path (after `{base}{prefix}`) of an index package as a urls-form manifest. */
export function urlsPackagePath(mpy: string, name: string, version: string): string {
  return `/urls/package/${mpy}/${encodeURIComponent(name)}/${encodeURIComponent(version || "latest")}.json`;
}

/** The index name behind a `/urls/package/{mpy}/{name}/{version}.json` path, for the policy's closure. */
export function nameOfUrlsPackage(path: string): [string, string] | undefined {
  const m = /^(?:\/t\/[^/]+)?\/urls\/package\/[^/]+\/([^/]+)\/([^/]+)\.json$/.exec(path);
  return m ? [decodeURIComponent(m[1]), decodeURIComponent(m[2])] : undefined;
}

/**
 * A dependency as a device doing a URL install must ask for it: code-host specs (`github:`, ...) and http(s) URLs become
 * mirror URLs on this server (their package.json, or the module for `.py`/`.mpy`), index names become urls-form
 * manifests on this server; URLs already on this server stay.
 */
export function urlsFormDep(t: UrlsFormTarget, dep: [string, string]): [string, string] {
  const [name, version] = dep;
  if (name.startsWith(`${t.base}/`)) return dep;
  if (parseSpec(name)) {
    const ref = version && version !== "latest" ? version : "HEAD";
    return [`${t.base}${t.prefix}${mirrorPath(t.bases, specUrl(t.bases, name, ref, true)!)}`, version];
  }
  if (/^https?:\/\//.test(name)) {
    let url = name;
    if (!/\.(py|mpy|json)$/.test(url)) url = `${url.replace(/\/+$/, "")}/package.json`;
    return [`${t.base}${t.prefix}${mirrorPath(t.bases, new URL(url).href)}`, version];
  }
  return [`${t.base}${t.prefix}${urlsPackagePath(t.mpy, name, version)}`, version];
}

/**
 * A manifest this server serves (index or named, `hashes` form) turned into `urls` form for `t`: every `hashes`
 * entry becomes a `/file/` URL here, upstream http(s) `urls` become mirror URLs, and dependencies follow
 * {@linkcode urlsFormDep}; dependency manifests built here (`/repo/{mpy}/{host}/...`) become the mirror's own
 * package.json URL under the same prefix, which is served in this form too.
 */
export function toUrlsForm(doc: Record<string, unknown>, t: UrlsFormTarget): Record<string, unknown> {
  const out: Record<string, unknown> = { ...doc };
  const urls: [string, string][] = [];
  for (const entry of Array.isArray(doc.urls) ? doc.urls : []) {
    if (!Array.isArray(entry) || typeof entry[0] !== "string" || typeof entry[1] !== "string") continue;
    const [dest, src] = entry as [string, string];
    urls.push([
      dest,
      /^https?:\/\//.test(src) && !src.startsWith(`${t.base}/`) ? `${t.base}${mirrorPath(t.bases, src)}` : src,
    ]);
  }
  for (const entry of Array.isArray(doc.hashes) ? doc.hashes : []) {
    if (!Array.isArray(entry) || typeof entry[0] !== "string" || typeof entry[1] !== "string") continue;
    const [dest, hash] = entry as [string, string];
    urls.push([dest, `${t.base}${t.prefix}/file/${hash.slice(0, 2)}/${hash}`]);
  }
  delete out.hashes;
  out.urls = urls;
  if (Array.isArray(doc.deps)) {
    const repo = new RegExp(`^${escape(t.base)}(/t/[^/]+)?/repo/[^/]+/(${REPO_HOST_ALTERNATIVES})/`);
    out.deps = doc.deps.map((d: unknown): [string, string] => {
      const dep: [string, string] = Array.isArray(d) ? [String(d[0]), String(d[1] ?? "latest")] : [String(d), "latest"];
      const m = repo.exec(dep[0]);
      if (m) return [`${t.base}${t.prefix}/${m[2]}/${dep[0].slice(m[0].length)}`, dep[1]];
      return urlsFormDep(t, dep);
    });
  }
  return out;
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
