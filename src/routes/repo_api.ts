/**
 * Ad-hoc mirror routes: `/github/{owner}/{repo}/{ref}/{path...}`, `/gitlab/{owner}/{repo}/{ref}/{path...}` and
 * `/url/{scheme}/{host}/{path...}`. `mip.install("http://gw:18891/github/org/repo/main")` fetches
 * `.../main/package.json`, rewritten so that every url and dependency points back here; any other path returns that
 * raw file, cached.
 * @module
 */
import type { Served } from "../cache/fresh_cache.ts";
import { NAME_PATTERN } from "../config/schema.ts";
import { HttpError } from "../http/responses.ts";
import type { RouteContext, Router } from "../http/router.ts";
import { type HostBases, isImmutableRef, plainUrl, rawUrl } from "../packages/locations.ts";
import type { RepoService } from "../packages/repo_service.ts";
import type { MirrorTarget } from "../packages/resolver.ts";
import { lookup, PARAMS, publicBase, REPO_PARAMS, REPO_SEGMENT, serveObject, SHORT } from "./index_api.ts";

/** What the mirror routes need besides the service. */
export interface RepoRouteOptions {
  publicUrl: string | null;
  port: number;
  bases: HostBases;
  /** Throws an HttpError (403) when the policy refuses a mirror path. */
  check?: (path: string) => Promise<void>;
  /** Throws 404 (listing the known ones) for an unknown target profile. */
  checkProfile?: (name: string) => void;
  /** Under `/t/{profile}`: a package.json built and compiled for the profile, in urls form. */
  profileMirror?: (target: MirrorTarget, profile: string, base: string) => Promise<Served>;
  /** `[/t/{profile}]/urls/package/...`: an index or named manifest in urls form (URL installs' index deps). */
  urlsManifest?: (mpy: string, name: string, version: string, profile: string | null, base: string) => Promise<Served>;
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
  const profileParam = { profile: { pattern: NAME_PATTERN, expected: "a target profile name" } };
  // Under /t/{profile}, package.json is built like a named package (compiled for the profile) and answered in urls
  // form; other files are served raw, as mip saves them under their own name.
  const serveProfile = async (ctx: RouteContext, target: MirrorTarget, url: string, ref: string, mutable: boolean) => {
    const profile = ctx.params.profile;
    if (profile === undefined || !options.profileMirror) return serve(ctx, url, ref, mutable);
    options.checkProfile?.(profile);
    if (!url.endsWith("/package.json")) return serve(ctx, url, ref, mutable);
    await options.check?.(ctx.url.pathname);
    const base = publicBase(ctx, options.publicUrl, options.port);
    const served = await lookup(ctx, () => options.profileMirror!(target, profile, base));
    return serveObject(ctx, served, "application/json", SHORT);
  };
  for (const prefix of ["", "/t/:profile"]) {
    for (const host of ["github", "gitlab"] as const) {
      router.get(`${prefix}/${host}/:owner/:repo/:ref/*path`, (ctx) => {
        const { owner, repo, ref, path } = ctx.params;
        checkPath(path);
        const url = rawUrl(options.bases, host, owner, repo, ref, path);
        return serveProfile(ctx, { kind: host, owner, repo, ref, path }, url, ref, !isImmutableRef(ref));
      }, { ...profileParam, ...REPO_PARAMS });
    }
    router.get(`${prefix}/url/:scheme/:host/*path`, (ctx) => {
      const { scheme, host, path } = ctx.params;
      checkPath(path);
      const url = plainUrl(scheme as "http" | "https", host, path);
      return serveProfile(ctx, { kind: "url", url }, url, "HEAD", true);
    }, {
      ...profileParam,
      scheme: { pattern: /^https?$/, expected: "http or https" },
      host: { pattern: /^[A-Za-z0-9.-]{1,253}(:\d{1,5})?$/, expected: "a host name, optionally with :port" },
    });
    if (options.urlsManifest) {
      const urlsManifest = options.urlsManifest;
      router.get(`${prefix}/urls/package/:mpy/:name/:version.json`, async (ctx) => {
        const { mpy, name, version, profile } = ctx.params;
        if (profile !== undefined) options.checkProfile?.(profile);
        const base = publicBase(ctx, options.publicUrl, options.port);
        const served = await lookup(ctx, () => urlsManifest(mpy, name, version, profile ?? null, base));
        return serveObject(ctx, served, "application/json", SHORT);
      }, { ...profileParam, mpy: PARAMS.mpy, name: PARAMS.name, version: PARAMS.version });
    }
  }
}
