/**
 * `gitlab:owner/repo[/path]`: raw files from `{upstreams.gitlab}/{owner}/{repo}/-/raw/{ref}/{path}` (gitlab.com by
 * default), as mip reads them.
 * @module
 */
import { repoKind } from "./repo_host.ts";

const RAW = /^([^/]+)\/([^/]+)\/-\/raw\/([^/]+)(?:\/(.*))?$/;

/** The `gitlab:` kind. */
export const gitlab = repoKind({
  name: "gitlab",
  defaultBase: "https://gitlab.com",
  rawUrl: (base, owner, repo, ref, path) => `${base}/${owner}/${repo}/-/raw/${ref}${path ? `/${path}` : ""}`,
  root: (base, owner, repo, ref) => `${base}/${owner}/${repo}/-/raw/${ref}/`,
  rawRoute: "/:owner/:repo/-/raw/*rest",
  parseRaw(base, url) {
    if (!url.startsWith(`${base}/`)) return undefined;
    const m = RAW.exec(url.slice(base.length + 1));
    return m ? { owner: m[1], repo: m[2], ref: m[3], path: m[4] ?? "" } : undefined;
  },
});
