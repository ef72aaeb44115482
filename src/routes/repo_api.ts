/**
 * Ad-hoc repository routes: `/github/{owner}/{repo}/{ref}/{path...}` and `/gitlab/{owner}/{repo}/{ref}/{path...}`.
 * `mip.install("http://gw:18891/github/org/repo/main")` fetches `.../main/package.json`, rewritten so that every url
 * and dependency points back here; any other path returns that raw file, cached.
 * @module
 */
import { HttpError } from "../http/responses.ts";
import type { RouteContext, Router } from "../http/router.ts";
import type { RepoHost, RepoService } from "../packages/repo_service.ts";
import { lookup, serveObject, SHORT } from "./index_api.ts";

const SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9._+-]{0,199}$/;
const PARAMS = {
  owner: { pattern: /^[A-Za-z0-9_.-]{1,100}$/, expected: "a user or group name" },
  repo: { pattern: /^[A-Za-z0-9_.-]{1,100}$/, expected: "a repository name" },
  ref: { pattern: /^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}$/, expected: "a branch, tag or commit (without '/')" },
};

/** This server's base URL as the device sees it: `server.public_url`, else the Host header plus our port. */
export function publicBase(ctx: RouteContext, publicUrl: string | null, port: number): string {
  if (publicUrl) return publicUrl;
  const host = ctx.request.headers.get("host");
  if (!host || !/^[A-Za-z0-9.\-\[\]:]+$/.test(host)) {
    throw new HttpError(400, "Missing or invalid Host header; set server.public_url");
  }
  return /:\d+$/.test(host) ? `http://${host}` : `http://${host}:${port}`;
}

/** Adds the `/github/...` and `/gitlab/...` routes. */
export function addRepoRoutes(
  router: Router,
  service: RepoService,
  options: { publicUrl: string | null; port: number },
): void {
  for (const host of ["github", "gitlab"] as RepoHost[]) {
    router.get(`/${host}/:owner/:repo/:ref/*path`, async (ctx) => {
      const { owner, repo, ref, path } = ctx.params;
      if (!path.split("/").every((s) => SEGMENT.test(s))) {
        throw new HttpError(400, `Invalid path ${JSON.stringify(path)}`);
      }
      const file = { host, owner, repo, ref, path };
      if (path === "package.json" || path.endsWith("/package.json")) {
        const base = publicBase(ctx, options.publicUrl, options.port);
        return serveObject(ctx, await lookup(ctx, () => service.packageJson(file, base)), "application/json", SHORT);
      }
      return serveObject(ctx, await lookup(ctx, () => service.raw(file)), "application/octet-stream", SHORT);
    }, PARAMS);
  }
}
