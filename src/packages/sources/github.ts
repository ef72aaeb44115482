/**
 * `github:owner/repo[/path]`: raw files from `{upstreams.github}/{owner}/{repo}/{ref}/{path}` (raw.githubusercontent.com
 * by default), as mip reads them; `upstreams.github_token` lifts GitHub's rate limit.
 * @module
 */
import { repoKind } from "./repo_host.ts";

/** The `github:` kind. */
export const github = repoKind({
  name: "github",
  defaultBase: "https://raw.githubusercontent.com",
  token: {
    env: ["GITHUB_TOKEN", "MIPSERVER_GITHUB_TOKEN"],
    // GitHub's own hosts, besides the configured raw host.
    hosts: ["github.com", "api.github.com", "raw.githubusercontent.com", "codeload.github.com"],
  },
  rawUrl: (base, owner, repo, ref, path) => `${base}/${owner}/${repo}/${ref}${path ? `/${path}` : ""}`,
  root: (base, owner, repo, ref) => `${base}/${owner}/${repo}/${ref}/`,
  parseRaw(base, url) {
    if (!url.startsWith(`${base}/`)) return undefined;
    const [owner, repo, ref, ...path] = url.slice(base.length + 1).split("/");
    return ref === undefined ? undefined : { owner, repo, ref, path: path.join("/") };
  },
});
