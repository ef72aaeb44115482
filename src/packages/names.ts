/**
 * The one set of rules for every kind of name a request or a manifest carries (package names, versions, owners,
 * repositories, refs, file paths, hosts, install destinations), shared by the routes and the store, and the encoding
 * that turns any accepted name into a cache key that is safe on disk. A name the routes accept can always be stored:
 * segments with characters the disk should not see are encoded, never refused.
 *
 * Package names and versions follow the index, not a rule of ours: micropython-lib's `tools/build.py` names a package
 * after its folder and writes `package/{mpy}/{name}/{version}.json` for whatever version string the manifest declares,
 * so any text a device can put in a URL path segment is accepted.
 * @module
 */
import { BadName, BadUpstream } from "../errors.ts";
import type { ManifestView } from "../cache/served.ts";

/** What a route parameter must look like (the router's `ParamSpec`). */
export interface NameRule {
  /** The whole decoded value must match. */
  pattern: RegExp;
  /** Said in the 400 answer. */
  expected: string;
}

/**
 * Characters a device's `mip` can send unencoded in a path segment (RFC 3986 `pchar` without `%`): what an index may
 * use in names and versions and still be installable.
 */
const PCHAR = "A-Za-z0-9._~!$&'()*+,;=:@-";

/** A package name as an index lists it (`__future__`, `aioble-core`, `os.path`, ...). */
export const PACKAGE_NAME: NameRule = {
  pattern: new RegExp(`^(?!\\.{1,2}$)[${PCHAR}]{1,100}$`),
  expected: "a package name of 1 to 100 letters, digits or URL path characters (- . _ ~ ! $ & ' ( ) * + , ; = : @)",
};

/** A version as an index lists it (`1.0`, `0.2.1-3`, `2.0rc1`, `latest`). */
export const VERSION: NameRule = {
  pattern: new RegExp(`^(?!\\.{1,2}$)[${PCHAR}]{1,100}$`),
  expected: `"latest" or a version of 1 to 100 letters, digits or URL path characters, such as 1.2.3`,
};

/**
 * Why a command-line `PKG[@VERSION]` is not one, or undefined when it is: the name and version follow the index's
 * rules above (the first `@` separates them).
 */
export function specProblem(spec: string): string | undefined {
  const at = spec.indexOf("@");
  const [name, version] = at < 0 ? [spec, undefined] : [spec.slice(0, at), spec.slice(at + 1)];
  if (!PACKAGE_NAME.pattern.test(name)) return `${JSON.stringify(spec)}: expected ${PACKAGE_NAME.expected}`;
  if (version !== undefined && !VERSION.pattern.test(version)) {
    return `${JSON.stringify(spec)}: after @ expected ${VERSION.expected}`;
  }
  return undefined;
}

/**
 * What each manifest body already read holds, kept beside the bytes: an entry lives only as long as the body it was
 * read from (a `WeakMap` holds its key weakly), so this grows with nothing but the bodies being served.
 */
const views = new WeakMap<Uint8Array, ManifestView>();

/**
 * A manifest's body parsed once: the resolver, the policy, the pins, the guards and the install records ask for the
 * same bytes on one request's path, and every one after the first gets the document already read.
 */
export function readManifest(body: Uint8Array): ManifestView {
  let view = views.get(body);
  if (view !== undefined) return view;
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder().decode(body));
  } catch {
    doc = undefined;
  }
  const listed = typeof doc === "object" && doc !== null ? (doc as { hashes?: unknown }).hashes : undefined;
  const hashes: string[] = [];
  if (Array.isArray(listed)) {
    for (const entry of listed) if (Array.isArray(entry) && typeof entry[1] === "string") hashes.push(entry[1]);
  }
  view = { doc, hashes };
  views.set(body, view);
  return view;
}

/** The file hashes a manifest's `hashes` lists (none when the body is not JSON or lists none). */
export function listedHashes(body: Uint8Array): readonly string[] {
  return readManifest(body).hashes;
}

/** The `{mpy}` part of index paths. */
export const MPY: NameRule = { pattern: /^(py|\d{1,3})$/, expected: `"py" or an .mpy version number such as 6` };

/** The `{h2}` part of `/file/{h2}/{hash}`. */
export const H2: NameRule = { pattern: /^[0-9a-f]{2}$/, expected: "the first two characters of the hash" };

/** A content hash prefix as an index names files (build.py's `--hash-prefix`, 8 by default). */
export const HASH: NameRule = { pattern: /^[0-9a-f]{4,64}$/, expected: "4 to 64 lowercase hex characters" };

/** A user, organisation or group on a code host (`.github`-style and `-`-led names included). */
export const OWNER: NameRule = {
  pattern: /^(?!\.{1,2}$)[A-Za-z0-9._-]{1,100}$/,
  expected: "a user or group name of letters, digits, '.', '_' or '-'",
};

/** A repository on a code host, or a GitLab project (`.github`, `.cache`, `-x` included). */
export const REPO: NameRule = {
  pattern: /^(?!\.{1,2}$)[A-Za-z0-9._-]{1,100}$/,
  expected: "a repository name of letters, digits, '.', '_' or '-'",
};

/**
 * A branch, tag or commit in one path segment, by git's own rules (`git check-ref-format`): no leading `-` or `.`,
 * no `..`, no trailing `.` or `.lock`. Refs holding `/` cannot be told apart from the file path and are not served.
 */
export const REF: NameRule = {
  pattern: /^(?![-.])(?!.*\.\.)(?!.*(\.|\.lock)$)[A-Za-z0-9_.+@=,-]{1,200}$/,
  expected: "a branch, tag or commit without '/' (letters, digits, '_', '.', '+', '@', '=', ',', '-', as git allows)",
};

/** The URL scheme of `/url/{scheme}/...`. */
export const SCHEME: NameRule = { pattern: /^https?$/, expected: "http or https" };

/** A target profile name (as `target.profiles` keys). */
export const PROFILE: NameRule = {
  pattern: /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/,
  expected: "a target profile name",
};

/** Most bytes of a file path inside a repository or on a host. */
export const MAX_PATH = 1000;
// Control characters, and the characters that would end or change a URL path if written unencoded.
// deno-lint-ignore no-control-regex
const BAD_PATH_CHAR = /[\x00-\x1f\x7f\\#?%]/;

/**
 * Why a file path inside a repository (or on a host) is refused, or undefined when it is fine: `/`-separated
 * segments, none empty, `.` or `..`, each at most 200 characters, without control characters, `\`, `#`, `?` or `%`.
 */
export function pathProblem(path: string): string | undefined {
  if (path.length === 0) return "it is empty";
  if (path.length > MAX_PATH) return `it is longer than ${MAX_PATH} characters`;
  const bad = BAD_PATH_CHAR.exec(path);
  if (bad) return `it holds ${JSON.stringify(bad[0])}`;
  for (const seg of path.split("/")) {
    if (seg === "" || seg === "." || seg === "..") return `it has an empty, '.' or '..' segment`;
    if (seg.length > 200) return "a segment is longer than 200 characters";
  }
  return undefined;
}

/** Throws 400 unless `path` is a file path {@linkcode pathProblem} accepts. */
export function checkPath(path: string): void {
  const why = pathProblem(path);
  if (why) throw new BadName(`Invalid path ${JSON.stringify(clip(path))}: ${why}`);
}

/** The `/url/` host segment before any parsing: what the router checks. */
export const HOST: NameRule = {
  pattern: /^[A-Za-z0-9._\-\[\]:]{1,300}$/,
  expected: "a host name or address, optionally with :port",
};

const LABEL = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/;
const NUMBERISH = /^(\d+|0x[0-9a-f]*)$/;
const QUAD = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/**
 * Parses the host of a `/url/{scheme}/{host}/...` request: a DNS name (labels of letters, digits, `_` and `-`, at
 * most 253 characters), a dotted-quad IPv4 address or a bracketed IPv6 address, with an optional port 1-65535, in
 * the form URLs write it (lowercase, no default port). Returns the host as a URL writes it; throws 400 saying why not.
 */
export function parseHost(scheme: "http" | "https", host: string): string {
  const fail = (why: string) => new BadName(`Invalid host ${JSON.stringify(clip(host))}: ${why}`);
  const lower = host.toLowerCase();
  const m = /^(\[[0-9a-f:.]+\]|[^:\[\]]+)(?::(\d{1,5}))?$/.exec(lower);
  if (!m) throw fail("expected a name or address, optionally with :port");
  const [, name, port] = m;
  if (port !== undefined && (!/^[1-9]\d*$/.test(port) || Number(port) > 65535)) {
    throw fail("the port must be a number from 1 to 65535");
  }
  if (!name.startsWith("[")) {
    if (name.length > 253) throw fail("a host name has at most 253 characters");
    const labels = name.split(".");
    if (!labels.every((l) => LABEL.test(l))) {
      throw fail(
        "each dot-separated label must be 1 to 63 letters, digits, '_' or '-', not starting or ending with '-'",
      );
    }
    if (NUMBERISH.test(labels[labels.length - 1]) && !(labels.length === 4 && labels.every((l) => QUAD.test(l)))) {
      throw fail("an IPv4 address must be four numbers from 0 to 255 without leading zeros");
    }
  }
  let parsed: URL;
  try {
    parsed = new URL(`${scheme}://${lower}/`);
  } catch {
    throw fail("it is not a valid host");
  }
  if (parsed.host !== lower) throw fail(`write it as ${parsed.host}`);
  return parsed.host;
}

/** Shortens a value for an error message. */
export function clip(value: string): string {
  return value.length > 80 ? `${value.slice(0, 77)}...` : value;
}

// ---------------------------------------------------------------------------------------------------------------------
// Install destinations

/** Most characters of an install destination. */
export const MAX_DEST = 1000;
/** Most files (`hashes` plus `urls` entries) one manifest may list. */
export const MAX_MANIFEST_FILES = 10_000;

/**
 * Why an install destination is refused, or undefined when it is safe: `mip` writes it under its target exactly as
 * given, so it must be a relative path with no absolute start, `..` or `.`, empty segment, backslash or control
 * character.
 */
export function destinationProblem(dest: string): string | undefined {
  if (dest.length === 0) return "it is empty";
  if (dest.length > MAX_DEST) return `it is longer than ${MAX_DEST} characters`;
  if (dest.startsWith("/")) return "it is an absolute path";
  if (dest.includes("\\")) return "it holds a backslash";
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x1f\x7f]/.test(dest)) return "it holds a control character";
  for (const seg of dest.split("/")) {
    if (seg === "") return "it has an empty segment";
    if (seg === "..") return "it climbs out of the target folder with '..'";
    if (seg === ".") return "it has a '.' segment";
  }
  return undefined;
}

/** Whether `dest` is a safe install path below the device's lib folder. */
export function safeDest(dest: string): boolean {
  return destinationProblem(dest) === undefined;
}

/** A manifest we refuse to serve because of what it lists; a 502 that names the package and the entry. */
export class UnsafeManifestError extends BadUpstream {
  constructor(message: string) {
    super(message);
    this.name = "UnsafeManifestError";
  }
}

/**
 * Checks every destination of a manifest (`hashes` and `urls` pairs, whatever its source) and its size; throws an
 * {@linkcode UnsafeManifestError} naming `what` (the package) and the entry.
 */
export function checkManifest(doc: unknown, what: string): void {
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
    throw new UnsafeManifestError(`Refused ${what}: the manifest is not a JSON object`);
  }
  let count = 0;
  for (const key of ["hashes", "urls"]) {
    const list = (doc as Record<string, unknown>)[key];
    if (list === undefined) continue;
    if (!Array.isArray(list)) throw new UnsafeManifestError(`Refused ${what}: ${key} is not a list`);
    count += list.length;
    if (count > MAX_MANIFEST_FILES) {
      throw new UnsafeManifestError(`Refused ${what}: it lists more than ${MAX_MANIFEST_FILES} files`);
    }
    for (const entry of list) {
      if (!Array.isArray(entry) || entry.length !== 2 || typeof entry[0] !== "string" || typeof entry[1] !== "string") {
        throw new UnsafeManifestError(
          `Refused ${what}: ${key} entry ${JSON.stringify(entry)?.slice(0, 80)} is not a pair of strings`,
        );
      }
      const why = destinationProblem(entry[0]);
      if (why) {
        throw new UnsafeManifestError(
          `Refused ${what}: ${key} entry ${JSON.stringify(clip(entry[0]))} is not a safe install path (${why})`,
        );
      }
      if (key === "hashes" && !HASH.pattern.test(entry[1])) {
        throw new UnsafeManifestError(
          `Refused ${what}: hashes entry ${JSON.stringify(clip(entry[0]))} has hash ${
            JSON.stringify(clip(entry[1]))
          }, not ${HASH.expected}`,
        );
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Cache keys

// Cache keys are spelled in `store/keys.ts`, the storage room's own module; the rules above build on them.
export { cacheKey, isSafeKey, keySegment } from "../store/keys.ts";
