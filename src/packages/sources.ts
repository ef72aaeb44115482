/**
 * Named package sources (`packages.<name>.source`): what a package consists of at a ref, as files to fetch and
 * dependencies. One reader per kind: `github:`/`gitlab:`/`url:` read a package.json upstream, `pypi:` reads a release
 * archive, `local:` reads a folder.
 * @module
 */
import { join, relative } from "node:path";
import { sha256Hex } from "../cache/hash.ts";
import { HttpError } from "../http/responses.ts";
import type { Logger } from "../log.ts";
import { type Fetcher, UpstreamError } from "../upstream/fetcher.ts";
import { isModule, pythonModules } from "./archive.ts";
import { type HostBases, isImmutableRef, parseSpec, refMutability, specUrl } from "./locations.ts";
import { readPackageJson, safeDest, upstreamUrls } from "./package_json.ts";

/** One file of a package: where it installs and how to get its bytes. */
export interface SourceFile {
  dest: string;
  /** Where it comes from, for messages (a URL or a path). */
  from: string;
  read(): Promise<Uint8Array>;
}

/** A package at one ref or version. */
export interface Resolved {
  version: string;
  files: SourceFile[];
  /** `[name or URL, version]`, as the package states them. */
  deps: [string, string][];
}

/** What the readers need. */
export interface SourceContext {
  fetcher: Fetcher;
  bases: HostBases;
  /** `upstreams.pypi`, the JSON API base. */
  pypi: string;
  logger: Logger;
}

/** A parsed `packages.<name>.source`. */
export type Source =
  | { kind: "github" | "gitlab"; spec: string }
  | { kind: "url"; url: string }
  | { kind: "pypi"; dist: string }
  | { kind: "local"; dir: string };

/** Parses a source string (already checked for its prefix by the config schema). */
export function parseSource(source: string): Source {
  const i = source.indexOf(":");
  const kind = source.slice(0, i);
  const rest = source.slice(i + 1);
  switch (kind) {
    case "github":
    case "gitlab":
      if (!parseSpec(source)) throw new Error(`expected ${kind}:owner/repo[/path], got ${source}`);
      return { kind, spec: source };
    case "url":
      if (!/^https?:\/\/[^/]+/.test(rest)) throw new Error(`expected url:http(s)://..., got ${source}`);
      return { kind, url: rest };
    case "pypi":
      if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(rest)) throw new Error(`expected pypi:distribution-name, got ${source}`);
      return { kind, dist: rest };
    case "local":
      return { kind, dir: rest };
  }
  throw new Error(`unknown source kind in ${source}`);
}

/** Whether a package at `ref` never changes once read (commits, version tags, explicit PyPI releases). */
export function isImmutable(source: Source, ref: string): boolean {
  if (source.kind === "github" || source.kind === "gitlab") return isImmutableRef(ref);
  if (source.kind === "pypi") return ref !== "latest";
  return false;
}

/**
 * How long a package at `ref` stays fresh: commits and explicit PyPI releases for good, version tags for `tagTtl`
 * ms (for good when null), branches and `latest` for `cache.ttl` (`true`).
 */
export function mutability(source: Source, ref: string, tagTtl: number | null): boolean | number {
  if (source.kind === "github" || source.kind === "gitlab") return refMutability(ref, tagTtl);
  if (source.kind === "pypi") return ref === "latest";
  return true;
}

/** The ref a source is read at when nothing asks for one. */
export function defaultRef(source: Source): string {
  return source.kind === "github" || source.kind === "gitlab" ? "HEAD" : "latest";
}

/** Reads a package's files and deps at `ref`. Errors are HttpErrors or UpstreamErrors naming what failed. */
export function resolveSourceAt(ctx: SourceContext, source: Source, ref: string): Promise<Resolved> {
  switch (source.kind) {
    case "github":
    case "gitlab":
      return fromPackageUrl(ctx, specUrl(ctx.bases, source.spec, ref, true)!, ref);
    case "url":
      if (ref !== "latest") {
        throw new HttpError(404, `url: sources have one version only; ask for latest, not ${ref}`);
      }
      return fromPackageUrl(ctx, source.url, "HEAD");
    case "pypi":
      return fromPypi(ctx, source.dist, ref);
    case "local":
      if (ref !== "latest") {
        throw new HttpError(404, `local: sources have one version only; ask for latest, not ${ref}`);
      }
      return fromLocal(source.dir);
  }
}

const fetchFile = (ctx: SourceContext, url: string) => async () => (await ctx.fetcher.get(url)).body;

async function fromPackageUrl(ctx: SourceContext, url: string, ref: string): Promise<Resolved> {
  if (/\.(py|mpy)$/.test(url)) {
    return { version: ref, files: [{ dest: url.split("/").pop()!, from: url, read: fetchFile(ctx, url) }], deps: [] };
  }
  const { body } = await ctx.fetcher.get(url);
  const doc = readPackageJson(body, `at ${url}`);
  const files = upstreamUrls(ctx.bases, doc, url, ref).map(([dest, upstream]): SourceFile => ({
    dest,
    from: upstream,
    read: fetchFile(ctx, upstream),
  }));
  if (doc.hashes.length > 0) {
    throw new HttpError(502, `package.json at ${url} lists hashes; only urls can be mirrored from a repository`);
  }
  return { version: doc.version ?? ref, files, deps: doc.deps };
}

interface PypiFile {
  filename: string;
  url: string;
  packagetype: string;
  digests?: { sha256?: string };
  yanked?: boolean;
}

async function fromPypi(ctx: SourceContext, dist: string, ref: string): Promise<Resolved> {
  const api = ref === "latest" ? `${ctx.pypi}/${dist}/json` : `${ctx.pypi}/${dist}/${ref}/json`;
  let info: { info?: { version?: string }; urls?: PypiFile[] };
  try {
    info = JSON.parse(new TextDecoder().decode((await ctx.fetcher.get(api)).body));
  } catch (e) {
    if (e instanceof UpstreamError && e.kind === "not_found") {
      throw new HttpError(404, `PyPI has no ${ref === "latest" ? "project" : `release ${ref} of`} ${dist} (${api})`);
    }
    if (e instanceof SyntaxError) throw new HttpError(502, `PyPI sent invalid JSON at ${api}: ${e.message}`);
    throw e;
  }
  const version = info.info?.version ?? ref;
  const candidates = (info.urls ?? []).filter((f) => !f.yanked);
  const wheel = candidates.find((f) => f.packagetype === "bdist_wheel" && /-none-any\.whl$/.test(f.filename));
  const sdist = candidates.find((f) => f.packagetype === "sdist" && /\.(tar\.gz|tgz|zip)$/.test(f.filename));
  const chosen = wheel ?? sdist;
  if (!chosen) {
    throw new HttpError(502, `PyPI release ${version} of ${dist} has no sdist or pure-Python wheel (${api})`);
  }
  const expected = chosen.digests?.sha256?.toLowerCase();
  if (!expected || !/^[0-9a-f]{64}$/.test(expected)) {
    throw new HttpError(502, `PyPI lists no sha256 digest for ${chosen.filename}; refusing to use it`);
  }
  const { body } = await ctx.fetcher.get(chosen.url);
  const actual = await sha256Hex(body);
  if (actual !== expected) {
    ctx.logger.error("HASH MISMATCH: PyPI archive does not match its sha256 digest; not used", {
      url: chosen.url,
      expected,
      actual,
    });
    throw new HttpError(
      502,
      `Hash mismatch for ${chosen.url}: sha256 is ${actual.slice(0, 16)}..., PyPI says ${expected.slice(0, 16)}...`,
    );
  }
  let modules;
  try {
    modules = await pythonModules(chosen.filename, body);
  } catch (e) {
    throw new HttpError(502, `Cannot read ${chosen.filename} from PyPI: ${(e as Error).message}`);
  }
  if (modules.length === 0) throw new HttpError(502, `${chosen.filename} from PyPI holds no Python modules`);
  ctx.logger.info("Read a PyPI release", { dist, version, file: chosen.filename, modules: modules.length });
  return {
    version,
    files: modules.map((m) => ({
      dest: m.path,
      from: `${chosen.url}#${m.path}`,
      read: () => Promise.resolve(m.bytes),
    })),
    deps: [],
  };
}

async function walk(root: string, dir: string, out: string[]): Promise<void> {
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) await walk(root, path, out);
    else if (entry.isFile) out.push(relative(root, path));
  }
}

async function fromLocal(dir: string): Promise<Resolved> {
  const read = (path: string) => async () => {
    try {
      return await Deno.readFile(path);
    } catch (e) {
      throw new HttpError(502, `Cannot read ${path}: ${(e as Error).message}`);
    }
  };
  let manifest: Uint8Array | undefined;
  try {
    manifest = await Deno.readFile(join(dir, "package.json"));
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw new HttpError(502, `Cannot read ${dir}: ${(e as Error).message}`);
  }
  if (manifest) {
    const doc = readPackageJson(manifest, `in ${dir}`);
    const files = doc.urls.map(([dest, src]): SourceFile => {
      const path = join(dir, src);
      if (/^[a-z][a-z0-9+.-]*:/i.test(src) || relative(dir, path).startsWith("..")) {
        throw new HttpError(502, `package.json in ${dir}: url entry ${JSON.stringify(dest)} must be a relative path`);
      }
      return { dest, from: path, read: read(path) };
    });
    return { version: doc.version ?? "latest", files, deps: doc.deps };
  }
  const paths: string[] = [];
  try {
    await walk(dir, dir, paths);
  } catch (e) {
    throw new HttpError(e instanceof Deno.errors.NotFound ? 404 : 502, `Cannot read ${dir}: ${(e as Error).message}`);
  }
  const modules = paths.map((p) => p.split("\\").join("/")).filter((p) => isModule(p) && safeDest(p)).sort();
  if (modules.length === 0) throw new HttpError(404, `${dir} has no package.json and no .py files`);
  return {
    version: "latest",
    files: modules.map((p) => ({ dest: p, from: join(dir, p), read: read(join(dir, p)) })),
    deps: [],
  };
}
