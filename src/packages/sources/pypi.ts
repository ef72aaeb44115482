/**
 * `pypi:distribution`: the Python modules of a PyPI release (a pure-Python wheel, else an sdist), checked against the
 * sha256 digest PyPI lists. `latest` is re-read after `cache.ttl`; an explicit release is kept for good.
 * @module
 */
import { sha256Hex } from "../../store/hash.ts";
import { UpstreamError } from "../../upstream/fetcher.ts";
import { pythonModules } from "../archive.ts";
import { badUpstream, notFound, type Resolved, type SourceContext, type SourceKind } from "./source.ts";

const DIST = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** The `pypi:` kind. */
export const pypi: SourceKind = {
  name: "pypi",
  pattern: DIST,
  example: "pypi:name",
  versioned: true,
  parse(rest) {
    if (!DIST.test(rest)) throw new Error(`expected pypi:distribution-name, got pypi:${rest}`);
    return {
      kind: "pypi",
      text: `pypi:${rest}`,
      defaultRef: "latest",
      mutability: (ref) => ref === "latest",
      resolve: (ctx, ref) => fromPypi(ctx, rest, ref),
    };
  },
};

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
      throw notFound(`PyPI has no ${ref === "latest" ? "project" : `release ${ref} of`} ${dist} (${api})`);
    }
    if (e instanceof SyntaxError) throw badUpstream(`PyPI sent invalid JSON at ${api}: ${e.message}`);
    throw e;
  }
  const version = info.info?.version ?? ref;
  const candidates = (info.urls ?? []).filter((f) => !f.yanked);
  const wheel = candidates.find((f) => f.packagetype === "bdist_wheel" && /-none-any\.whl$/.test(f.filename));
  const sdist = candidates.find((f) => f.packagetype === "sdist" && /\.(tar\.gz|tgz|zip)$/.test(f.filename));
  const chosen = wheel ?? sdist;
  if (!chosen) {
    throw badUpstream(`PyPI release ${version} of ${dist} has no sdist or pure-Python wheel (${api})`);
  }
  const expected = chosen.digests?.sha256?.toLowerCase();
  if (!expected || !/^[0-9a-f]{64}$/.test(expected)) {
    throw badUpstream(`PyPI lists no sha256 digest for ${chosen.filename}; refusing to use it`);
  }
  const { body } = await ctx.fetcher.get(chosen.url);
  const actual = await sha256Hex(body);
  if (actual !== expected) {
    ctx.logger.error("HASH MISMATCH: PyPI archive does not match its sha256 digest; not used", {
      url: chosen.url,
      expected,
      actual,
    });
    throw badUpstream(
      `Hash mismatch for ${chosen.url}: sha256 is ${actual.slice(0, 16)}..., PyPI says ${expected.slice(0, 16)}...`,
    );
  }
  let modules;
  try {
    modules = await pythonModules(chosen.filename, body);
  } catch (e) {
    throw badUpstream(`Cannot read ${chosen.filename} from PyPI: ${(e as Error).message}`);
  }
  if (modules.length === 0) throw badUpstream(`${chosen.filename} from PyPI holds no Python modules`);
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
