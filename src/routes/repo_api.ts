/**
 * Ad-hoc mirror routes: `/{host}/{owner}/{repo}/{ref}/{path...}` for each code host of the source registry
 * (`/github/...`, `/gitlab/...`, `/codeberg/...`) and `/url/{scheme}/{host}/{path...}`. `mip.install("http://gw:18891/github/org/repo/main")` fetches
 * `.../main/package.json`, rewritten so that every url and dependency points back here; any other path returns that
 * raw file, cached. A code host whose raw layout differs (GitLab, Forgejo) is also answered in that layout, raw, for a
 * site gateway whose `upstreams.<host>` is this server.
 * @module
 */
import type { Served } from "../cache/served.ts";
import { jsonResponse } from "../http/responses.ts";
import { paramProblem, type RouteContext, type Router } from "../http/router.ts";
import type { Logger } from "../log.ts";
import type { Mutability } from "../cache/fresh_cache.ts";
import { type HostBases, plainUrl, rawUrl, refMutability } from "../packages/locations.ts";
import { checkPath, HOST, parseHost, PROFILE, SCHEME } from "../packages/names.ts";
import { BadName } from "../errors.ts";
import type { RefSpec } from "../packages/refresh.ts";
import type { RepoService } from "../packages/repo_service.ts";
import { REPO_HOST_ALTERNATIVES, REPO_HOST_NAMES, REPO_HOSTS } from "../packages/sources/registry.ts";
import type { RepoFile, RepoHost } from "../packages/sources/source.ts";
import type { MirrorTarget } from "../packages/resolver.ts";
import { lookup, PARAMS, publicBase, REPO_PARAMS, serveObject, SHORT } from "./index_api.ts";

/** What the mirror routes need besides the service. */
export interface RepoRouteOptions {
  publicUrl: string | null;
  port: number;
  bases: HostBases;
  /** Throws a `NotAllowed` (403) when the policy refuses a mirror path. */
  check?: (path: string) => Promise<void>;
  /** Where refused manifests are reported. */
  logger?: Logger;
  /** `cache.tag_ttl` in ms: how long content at a version tag stays fresh (null: for good). */
  tagTtl?: number | null;
  /** Marks everything cached at one ref as expired (for `POST /_/refresh/...`); returns how many objects. */
  refresh?: (spec: RefSpec) => Promise<number>;
  /** The error to answer when serving `what` failed (offline: a 503 saying it was not imported). */
  explain?: (e: unknown, what: string) => unknown;
  /** Throws 404 (listing the known ones) for an unknown target profile. */
  checkProfile?: (name: string) => void;
  /** Under `/t/{profile}`: a package.json built and compiled for the profile, in urls form. */
  profileMirror?: (target: MirrorTarget, profile: string, base: string) => Promise<Served>;
  /** `[/t/{profile}]/urls/package/...`: an index or named manifest in urls form (URL installs' index deps). */
  urlsManifest?: (mpy: string, name: string, version: string, profile: string | null, base: string) => Promise<Served>;
}

/** Adds the code hosts' routes (`/github/...`, ...) and `/url/...`. */
export function addRepoRoutes(router: Router, service: RepoService, options: RepoRouteOptions): void {
  // Offline (or upstream gone after an import), what is not here says so with a 503 rather than a bare 404.
  const explained = async (work: () => Promise<Served>, what: string): Promise<Served> => {
    try {
      return await work();
    } catch (e) {
      throw options.explain?.(e, what) ?? e;
    }
  };
  const serve = async (ctx: RouteContext, url: string, ref: string, mutable: Mutability) => {
    await options.check?.(ctx.url.pathname);
    const what = ctx.url.pathname;
    // Told by the path asked for: a code host's raw URL may go on past the file name (`?ref=` on Codeberg).
    if (ctx.url.pathname.endsWith("/package.json")) {
      const base = publicBase(ctx, options.publicUrl, options.port);
      const served = await explained(
        () => lookup(ctx, () => service.packageJson(url, ref, mutable, base), options.logger),
        what,
      );
      return serveObject(ctx, served, "application/json", SHORT);
    }
    const served = await explained(() => lookup(ctx, () => service.raw(url, mutable)), what);
    return serveObject(ctx, served, "application/octet-stream", SHORT);
  };
  const profileParam = { profile: PROFILE };
  // Under /t/{profile}, package.json is built like a named package (compiled for the profile) and answered in urls
  // form; other files are served raw, as mip saves them under their own name.
  const serveProfile = async (
    ctx: RouteContext,
    target: MirrorTarget,
    url: string,
    ref: string,
    mutable: Mutability,
  ) => {
    const profile = ctx.params.profile;
    if (profile === undefined || !options.profileMirror) return serve(ctx, url, ref, mutable);
    options.checkProfile?.(profile);
    if (!ctx.url.pathname.endsWith("/package.json")) return serve(ctx, url, ref, mutable);
    await options.check?.(ctx.url.pathname);
    const base = publicBase(ctx, options.publicUrl, options.port);
    const served = await explained(
      () => lookup(ctx, () => options.profileMirror!(target, profile, base), options.logger),
      ctx.url.pathname,
    );
    return serveObject(ctx, served, "application/json", SHORT);
  };
  // A code host's own raw layout, where it differs from the mirror's (`/gitlab/{owner}/{repo}/-/raw/{ref}/...`,
  // `/codeberg/api/v1/repos/...?ref=`): raw files as the host serves them, package.json too, for a site whose
  // `upstreams.<host>` is this server's `/{host}`. Added first, so they win over the mirror routes they overlap.
  for (const host of REPO_HOSTS) {
    if (!host.rawRoute) continue;
    router.get(`/${host.name}${host.rawRoute}`, async (ctx) => {
      const at = hostLayout(host, ctx.url);
      const mirror = `/${host.name}/${at.owner}/${at.repo}/${at.ref}/${at.path}`;
      await options.check?.(mirror);
      const url = rawUrl(options.bases, host.name, at.owner, at.repo, at.ref, at.path);
      const mutable = refMutability(at.ref, options.tagTtl ?? null);
      const served = await explained(() => lookup(ctx, () => service.raw(url, mutable)), mirror);
      return serveObject(ctx, served, "application/octet-stream", SHORT);
    });
  }
  for (const prefix of ["", "/t/:profile"]) {
    for (const host of REPO_HOST_NAMES) {
      router.get(`${prefix}/${host}/:owner/:repo/:ref/*path`, (ctx) => {
        const { owner, repo, ref, path } = ctx.params;
        checkPath(path);
        const url = rawUrl(options.bases, host, owner, repo, ref, path);
        const mutable = refMutability(ref, options.tagTtl ?? null);
        return serveProfile(ctx, { kind: "repo", host, owner, repo, ref, path }, url, ref, mutable);
      }, { ...profileParam, ...REPO_PARAMS });
    }
    router.get(`${prefix}/url/:scheme/:host/*path`, (ctx) => {
      const { scheme, host, path } = ctx.params;
      const canonical = parseHost(scheme as "http" | "https", host);
      checkPath(path);
      const url = plainUrl(scheme as "http" | "https", canonical, path);
      return serveProfile(ctx, { kind: "url", url }, url, "HEAD", true);
    }, { ...profileParam, scheme: SCHEME, host: HOST });
    if (options.urlsManifest) {
      const urlsManifest = options.urlsManifest;
      router.get(`${prefix}/urls/package/:mpy/:name/:version.json`, async (ctx) => {
        const { mpy, name, version, profile } = ctx.params;
        if (profile !== undefined) options.checkProfile?.(profile);
        const base = publicBase(ctx, options.publicUrl, options.port);
        const served = await lookup(ctx, () => urlsManifest(mpy, name, version, profile ?? null, base), options.logger);
        return serveObject(ctx, served, "application/json", SHORT);
      }, { ...profileParam, mpy: PARAMS.mpy, name: PARAMS.name, version: PARAMS.version });
    }
  }
  const refresh = options.refresh;
  const hostsExpected = `${REPO_HOST_NAMES.slice(0, -1).join(", ")} or ${REPO_HOST_NAMES.at(-1)}`;
  if (refresh) {
    // An admin action: re-read a ref (a moved tag) without waiting for cache.tag_ttl.
    router.add("POST", "/_/refresh/:host/:owner/:repo/:ref", async (ctx) => {
      const { host, owner, repo, ref } = ctx.params;
      const expired = await refresh({ host, owner, repo, ref });
      return jsonResponse({ host, owner, repo, ref, expired });
    }, { host: { pattern: new RegExp(`^(${REPO_HOST_ALTERNATIVES})$`), expected: hostsExpected }, ...REPO_PARAMS });
  }
}

/**
 * The repository file a request in `host`'s own raw layout names (its path decoded), checked as the mirror routes
 * check theirs; a {@linkcode BadName} (400) saying what is wrong otherwise.
 */
function hostLayout(host: RepoHost, url: URL): RepoFile {
  const base = `${url.origin}/${host.name}`;
  const at = host.parseRaw(base, `${url.origin}${url.pathname}${url.search}`);
  if (!at) throw new BadName(`Not a ${host.name} raw file URL: ${url.pathname}${url.search}`);
  for (const [name, value] of [["owner", at.owner], ["repo", at.repo], ["ref", at.ref]] as const) {
    const why = paramProblem(name, value, REPO_PARAMS[name]);
    if (why) throw new BadName(why);
  }
  let path: string;
  try {
    path = at.path.split("/").map(decodeURIComponent).join("/");
  } catch {
    throw new BadName(`Invalid path ${JSON.stringify(at.path)}: bad percent-encoding`);
  }
  checkPath(path);
  return { ...at, path };
}
