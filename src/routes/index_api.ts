/**
 * The index API devices use, in the layout of https://micropython.org/pi/v2: `/index.json`,
 * `/package/{mpy}/{name}/{version}.json` and `/file/{h2}/{hash}`.
 * @module
 */
import { HttpError, representationResponse, type Shareable } from "../http/responses.ts";
import type { RouteContext, Router } from "../http/router.ts";
import type { ManifestFacts } from "../http/request_log.ts";
import type { Served } from "../cache/served.ts";
import type { Resolver } from "../packages/resolver.ts";
import type { Logger } from "../log.ts";
import {
  H2,
  HASH,
  MPY,
  OWNER,
  PACKAGE_NAME,
  pathProblem,
  PROFILE,
  REF,
  REPO,
  UnsafeManifestError,
  VERSION,
} from "../packages/names.ts";
import { REPO_HOST_NAMES } from "../packages/sources/registry.ts";

/** Cache-Control for content-addressed files: they never change. */
export const IMMUTABLE = "public, max-age=31536000, immutable";
/** Cache-Control for manifests and the index: short, they may change. */
export const SHORT = "public, max-age=60";

/** Parameter rules shared by every device route (`packages/names.ts`: the same rules the cache keys follow). */
export const PARAMS = { mpy: MPY, name: PACKAGE_NAME, version: VERSION, h2: H2, hash: HASH };

/** Parameter rules of repository routes. */
export const REPO_PARAMS = { owner: OWNER, repo: REPO, ref: REF };

/**
 * Answers with a served object: ETag, Cache-Control, and 304 when the client already has it. A cache hit is marked
 * shareable, so the edge may repeat it for a moment without asking the cache again.
 */
export function serveObject(ctx: RouteContext, served: Served, contentType: string, cacheControl: string): Response {
  ctx.meta.cache = served.outcome;
  if (served.upstreamMs !== undefined) ctx.meta.upstream_ms = served.upstreamMs;
  const headers = { etag: served.etag, "cache-control": cacheControl };
  const representation: Shareable = {
    ...served,
    route: ctx.route,
    headers: { ...headers, "content-type": contentType, "content-length": String(served.body.byteLength) },
    notModified: headers,
  };
  ctx.answer = representation;
  if (served.outcome === "hit") ctx.shareable = representation;
  return representationResponse(ctx.request, representation);
}

/**
 * Awaits a cache lookup, marking the request's log line `cache=error` when it fails; with a `logger`, a manifest
 * refused for what it lists (an unsafe destination, too many files) is logged as an error too, with the reason (the
 * index and named-package services log their own refusals).
 */
export async function lookup(ctx: RouteContext, served: () => Promise<Served>, logger?: Logger): Promise<Served> {
  try {
    return await served();
  } catch (e) {
    ctx.meta.cache = "error";
    if (e instanceof UnsafeManifestError) {
      logger?.error("Refused an unsafe manifest; nothing cached", { path: ctx.url.pathname, reason: e.message });
    }
    throw e;
  }
}

/** This server's base URL as the device sees it: `server.public_url`, else the Host header plus our port. */
export function publicBase(ctx: RouteContext, publicUrl: string | null, port: number): string {
  if (publicUrl) return publicUrl;
  const host = ctx.request.headers.get("host") ?? ctx.url.host;
  if (!host || !/^[A-Za-z0-9.\-\[\]:]+$/.test(host)) {
    throw new HttpError(400, "Missing or invalid Host header; set server.public_url");
  }
  return /:\d+$/.test(host) ? `http://${host}` : `http://${host}:${port}`;
}

/** Where the index routes are mounted and how absolute URLs are made. */
export interface IndexRouteOptions {
  publicUrl: string | null;
  port: number;
  /** Throws 404 (listing the known ones) for an unknown target profile. */
  checkProfile(name: string): void;
}

/** Adds the index API routes, answering from `resolver`. */
export function addIndexRoutes(router: Router, resolver: Resolver, options: IndexRouteOptions): void {
  const profileOf = (ctx: RouteContext): string | null => {
    const profile = ctx.params.profile;
    if (profile === undefined) return null;
    options.checkProfile(profile);
    return profile;
  };
  const profileParam = { profile: PROFILE };
  for (const prefix of ["", "/t/:profile"]) {
    router.get(`${prefix}/index.json`, async (ctx) => {
      profileOf(ctx);
      return serveObject(ctx, await lookup(ctx, () => resolver.indexJson()), "application/json", SHORT);
    }, profileParam);

    router.get(`${prefix}/package/:mpy/:name/:version.json`, async (ctx) => {
      const { mpy, name, version } = ctx.params;
      ctx.meta.manifest = { package: name, requested: version, mpy, profile: ctx.params.profile ?? null };
      const profile = profileOf(ctx);
      const base = publicBase(ctx, options.publicUrl, options.port);
      const served = await lookup(ctx, () => resolver.manifest(mpy, name, version, profile, base));
      return serveObject(ctx, served, "application/json", SHORT);
    }, { ...profileParam, mpy: PARAMS.mpy, name: PARAMS.name, version: PARAMS.version });

    for (const host of REPO_HOST_NAMES) {
      router.get(`${prefix}/repo/:mpy/${host}/:owner/:repo/:ref/*path`, async (ctx) => {
        const { mpy, owner, repo, ref, path } = ctx.params;
        const dir = path.split("/").slice(0, -1).join("/");
        const facts: ManifestFacts = {
          package: `${host}:${owner}/${repo}${dir ? `/${dir}` : ""}`,
          requested: ref,
          mpy,
          profile: ctx.params.profile ?? null,
        };
        ctx.meta.manifest = facts;
        const profile = profileOf(ctx);
        const why = /(^|\/)package\.json$/.test(path) ? pathProblem(path) : "expected [folder/]package.json";
        if (why) throw new HttpError(400, `Invalid path ${JSON.stringify(path.slice(0, 80))}: ${why}`);
        const base = publicBase(ctx, options.publicUrl, options.port);
        const spec = { host, owner, repo, ref, path };
        const served = await lookup(ctx, () => resolver.repoManifest(mpy, spec, profile, base));
        return serveObject(ctx, served, "application/json", SHORT);
      }, { ...profileParam, mpy: PARAMS.mpy, ...REPO_PARAMS });
    }

    router.get(`${prefix}/file/:h2/:hash`, async (ctx) => {
      const { h2, hash } = ctx.params;
      profileOf(ctx);
      if (!hash.startsWith(h2)) {
        throw new HttpError(400, `Invalid h2 ${JSON.stringify(h2)}: must be the first two characters of ${hash}`);
      }
      return serveObject(ctx, await lookup(ctx, () => resolver.file(hash)), "application/octet-stream", IMMUTABLE);
    }, { ...profileParam, h2: PARAMS.h2, hash: PARAMS.hash });
  }
}
