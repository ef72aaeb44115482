/**
 * Ad-hoc mirror routes: `/github/{owner}/{repo}/{ref}/{path...}`, `/gitlab/{owner}/{repo}/{ref}/{path...}` and
 * `/url/{scheme}/{host}/{path...}`. `mip.install("http://gw:18891/github/org/repo/main")` fetches
 * `.../main/package.json`, rewritten so that every url and dependency points back here; any other path returns that
 * raw file, cached.
 * @module
 */
import { jsonResponse } from "../http/responses.ts";
import type { RouteContext, Router } from "../http/router.ts";
import type { Logger } from "../log.ts";
import type { Mutability } from "../cache/fresh_cache.ts";
import { type HostBases, plainUrl, rawUrl, refMutability } from "../packages/locations.ts";
import { checkPath, HOST, parseHost, SCHEME } from "../packages/names.ts";
import type { RefSpec } from "../packages/refresh.ts";
import type { RepoService } from "../packages/repo_service.ts";
import { lookup, publicBase, REPO_PARAMS, serveObject, SHORT } from "./index_api.ts";

/** What the mirror routes need besides the service. */
export interface RepoRouteOptions {
  publicUrl: string | null;
  port: number;
  bases: HostBases;
  /** Throws an HttpError (403) when the policy refuses a mirror path. */
  check?: (path: string) => Promise<void>;
  /** Where refused manifests are reported. */
  logger?: Logger;
  /** `cache.tag_ttl` in ms: how long content at a version tag stays fresh (null: for good). */
  tagTtl?: number | null;
  /** Marks everything cached at one ref as expired (for `POST /_/refresh/...`); returns how many objects. */
  refresh?: (spec: RefSpec) => Promise<number>;
}

/** Adds the `/github/...`, `/gitlab/...` and `/url/...` routes. */
export function addRepoRoutes(router: Router, service: RepoService, options: RepoRouteOptions): void {
  const serve = async (ctx: RouteContext, url: string, ref: string, mutable: Mutability) => {
    await options.check?.(ctx.url.pathname);
    if (url.endsWith("/package.json")) {
      const base = publicBase(ctx, options.publicUrl, options.port);
      const served = await lookup(ctx, () => service.packageJson(url, ref, mutable, base), options.logger);
      return serveObject(ctx, served, "application/json", SHORT);
    }
    return serveObject(ctx, await lookup(ctx, () => service.raw(url, mutable)), "application/octet-stream", SHORT);
  };
  for (const host of ["github", "gitlab"] as const) {
    router.get(`/${host}/:owner/:repo/:ref/*path`, (ctx) => {
      const { owner, repo, ref, path } = ctx.params;
      checkPath(path);
      return serve(
        ctx,
        rawUrl(options.bases, host, owner, repo, ref, path),
        ref,
        refMutability(ref, options.tagTtl ?? null),
      );
    }, REPO_PARAMS);
  }
  const refresh = options.refresh;
  if (refresh) {
    // An admin action: re-read a ref (a moved tag) without waiting for cache.tag_ttl.
    router.add("POST", "/_/refresh/:host/:owner/:repo/:ref", async (ctx) => {
      const { host, owner, repo, ref } = ctx.params;
      const expired = await refresh({ host: host as "github" | "gitlab", owner, repo, ref });
      return jsonResponse({ host, owner, repo, ref, expired });
    }, { host: { pattern: /^(github|gitlab)$/, expected: "github or gitlab" }, ...REPO_PARAMS });
  }
  router.get("/url/:scheme/:host/*path", (ctx) => {
    const { scheme, host, path } = ctx.params;
    const canonical = parseHost(scheme as "http" | "https", host);
    checkPath(path);
    return serve(ctx, plainUrl(scheme as "http" | "https", canonical, path), "HEAD", true);
  }, { scheme: SCHEME, host: HOST });
}
