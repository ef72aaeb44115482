/**
 * Ad-hoc mirror routes: `/github/{owner}/{repo}/{ref}/{path...}`, `/gitlab/{owner}/{repo}/{ref}/{path...}` and
 * `/url/{scheme}/{host}/{path...}`. `mip.install("http://gw:18891/github/org/repo/main")` fetches
 * `.../main/package.json`, rewritten so that every url and dependency points back here; any other path returns that
 * raw file, cached.
 * @module
 */
import { HttpError } from "../http/responses.ts";
import type { RouteContext, Router } from "../http/router.ts";
import { type HostBases, isImmutableRef, plainUrl, rawUrl } from "../packages/locations.ts";
import type { RepoService } from "../packages/repo_service.ts";
import { lookup, publicBase, REPO_PARAMS, REPO_SEGMENT, serveObject, SHORT } from "./index_api.ts";

/** What the mirror routes need besides the service. */
export interface RepoRouteOptions {
  publicUrl: string | null;
  port: number;
  bases: HostBases;
  /** Throws an HttpError (403) when the policy refuses a mirror path. */
  check?: (path: string) => Promise<void>;
}

/** Adds the `/github/...`, `/gitlab/...` and `/url/...` routes. */
export function addRepoRoutes(router: Router, service: RepoService, options: RepoRouteOptions): void {
  const serve = async (ctx: RouteContext, url: string, ref: string, mutable: boolean) => {
    await options.check?.(ctx.url.pathname);
    if (url.endsWith("/package.json")) {
      const base = publicBase(ctx, options.publicUrl, options.port);
      const served = await lookup(ctx, () => service.packageJson(url, ref, mutable, base));
      return serveObject(ctx, served, "application/json", SHORT);
    }
    return serveObject(ctx, await lookup(ctx, () => service.raw(url, mutable)), "application/octet-stream", SHORT);
  };
  const checkPath = (path: string) => {
    if (!path.split("/").every((s) => REPO_SEGMENT.test(s))) {
      throw new HttpError(400, `Invalid path ${JSON.stringify(path)}`);
    }
  };
  for (const host of ["github", "gitlab"] as const) {
    router.get(`/${host}/:owner/:repo/:ref/*path`, (ctx) => {
      const { owner, repo, ref, path } = ctx.params;
      checkPath(path);
      return serve(ctx, rawUrl(options.bases, host, owner, repo, ref, path), ref, !isImmutableRef(ref));
    }, REPO_PARAMS);
  }
  router.get("/url/:scheme/:host/*path", (ctx) => {
    const { scheme, host, path } = ctx.params;
    checkPath(path);
    return serve(ctx, plainUrl(scheme as "http" | "https", host, path), "HEAD", true);
  }, {
    scheme: { pattern: /^https?$/, expected: "http or https" },
    host: { pattern: /^[A-Za-z0-9.-]{1,253}(:\d{1,5})?$/, expected: "a host name, optionally with :port" },
  });
}
