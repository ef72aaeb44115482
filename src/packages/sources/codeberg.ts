/**
 * `codeberg:owner/repo[/path]`: raw files from Forgejo's API, `{upstreams.codeberg}/api/v1/repos/{owner}/{repo}/raw/
 * {path}?ref={ref}` (codeberg.org by default; a self-hosted Forgejo or Gitea serves the same route), as mip reads them
 * (micropython-lib's mip since May 2026). `upstreams.codeberg_token` is sent to that host only.
 * @module
 */
import { REF } from "../names.ts";
import { repoKind } from "./repo_host.ts";

const RAW = /^([^/?#]+)\/([^/?#]+)\/raw\/([^?#]*)\?([^#]*)$/;

/** The `codeberg:` kind. */
export const codeberg = repoKind({
  name: "codeberg",
  defaultBase: "https://codeberg.org",
  token: { env: ["MIPSERVER_CODEBERG_TOKEN"] },
  // The ref goes in the query, encoded (Forgejo reads a bare `+` as a space); a `?` or `#` in the path is a name.
  rawUrl: (base, owner, repo, ref, path) =>
    `${base}/api/v1/repos/${owner}/${repo}/raw/${path.replace(/[?#]/g, encodeURIComponent)}?ref=${
      encodeURIComponent(ref)
    }`,
  root: (base, owner, repo) => `${base}/api/v1/repos/${owner}/${repo}/raw/`,
  rawRoute: "/api/v1/repos/*rest",
  parseRaw(base, url) {
    const prefix = `${base}/api/v1/repos/`;
    if (!url.startsWith(prefix)) return undefined;
    const m = RAW.exec(url.slice(prefix.length));
    if (!m) return undefined;
    const query = new URLSearchParams(m[4]);
    const ref = query.get("ref");
    // Only a URL naming one ref that fits a path segment maps onto `/codeberg/{owner}/{repo}/{ref}/...`.
    if (ref === null || [...query.keys()].length !== 1 || !REF.pattern.test(ref)) return undefined;
    return { owner: m[1], repo: m[2], ref, path: m[3] };
  },
});
