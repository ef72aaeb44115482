/**
 * The configuration schema (zod). Every default lives here and is mirrored, with comments, in `config.yaml`;
 * a test keeps the two identical. What depends on the kinds of source comes from their registry
 * (`packages/sources/registry.ts`): the kinds `packages.<name>.source` takes, their patterns and examples, which have
 * versions, and each code host's `upstreams.<host>` (its default is in its kind's file) and `upstreams.<host>_token`.
 * @module
 */
import { z } from "zod";
import { formatDuration, formatSize, parseDuration, parseSize } from "./units.ts";
import { PACKAGE_NAME, specProblem, VERSION } from "../packages/names.ts";
import {
  REPO_HOSTS,
  type RepoHostName,
  SOURCE_KINDS,
  sourceKind,
  type TokenHostName,
} from "../packages/sources/registry.ts";
import type { SourceKind } from "../packages/sources/source.ts";

const show = (v: unknown): string => {
  if (v === undefined) return "nothing";
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
};

/** A value turned into `T` by `parse`, or rejected with `expected <what>, got <value>`. */
function field<T>(what: string, parse: (v: unknown) => T | undefined) {
  return z.unknown().transform((v, ctx): T => {
    const out = parse(v);
    if (out === undefined) {
      ctx.addIssue({ code: "custom", message: `expected ${what}, got ${show(v)}`, input: v });
      return z.NEVER;
    }
    return out;
  });
}

const intIn = (min: number, max: number) => (v: unknown) => {
  const n = typeof v === "string" && /^\s*-?\d+\s*$/.test(v) ? Number(v) : v;
  return typeof n === "number" && Number.isInteger(n) && n >= min && n <= max ? n : undefined;
};

const boolean = () =>
  field("true or false", (v) => {
    if (typeof v === "boolean") return v;
    if (typeof v !== "string") return undefined;
    const s = v.trim().toLowerCase();
    if (["true", "yes", "on", "1"].includes(s)) return true;
    if (["false", "no", "off", "0"].includes(s)) return false;
    return undefined;
  });

const text = (what = "a string") =>
  field(what, (v) => (typeof v === "string" && v.trim() !== "" ? v.trim() : undefined));

/** The shortest `server.admin_token` taken, and the fewest bits its {@linkcode tokenBits} estimate may come to. */
export const ADMIN_TOKEN_MIN = { length: 16, bits: 64 } as const;

/**
 * A simple estimate of a token's entropy in bits: its length times log2 of the size of the character classes it uses
 * (digits 10, lower case 26, upper case 26, anything else 33), where a token that is a shorter text repeated counts
 * as that text. `openssl rand -hex 16` (32 characters of 36 possible) comes to about 165 bits.
 */
export function tokenBits(token: string): number {
  let unit = token;
  for (let p = 1; p <= token.length / 2; p++) {
    // Repeats its first p code units (the last time perhaps cut short).
    if (token.slice(p) === token.slice(0, token.length - p)) {
      unit = token.slice(0, p);
      break;
    }
  }
  const length = [...unit].length;
  const classes = [/[0-9]/, /[a-z]/, /[A-Z]/, /[^0-9a-zA-Z]/];
  const sizes = [10, 26, 26, 33];
  const pool = classes.reduce((sum, re, i) => (re.test(token) ? sum + sizes[i] : sum), 0);
  return length * Math.log2(Math.max(pool, 1));
}

/** `server.admin_token`: a text, refused when it is too short or too guessable (its value is never in the message). */
const adminToken = () =>
  text("a token").superRefine((token, ctx) => {
    const length = [...token].length;
    const bits = tokenBits(token);
    if (length >= ADMIN_TOKEN_MIN.length && bits >= ADMIN_TOKEN_MIN.bits) return;
    ctx.addIssue({
      code: "custom",
      message: `too ${length < ADMIN_TOKEN_MIN.length ? "short" : "predictable"} to resist guessing (${length} ` +
        `characters, about ${Math.floor(bits)} bits; at least ${ADMIN_TOKEN_MIN.length} characters and ` +
        `${ADMIN_TOKEN_MIN.bits} bits are needed); make one with: openssl rand -hex 16`,
    });
  });

const httpUrl = () =>
  field("an http(s) URL", (v) => {
    if (typeof v !== "string") return undefined;
    try {
      const u = new URL(v.trim());
      if (u.protocol !== "http:" && u.protocol !== "https:") return undefined;
      return u.href.replace(/\/+$/, "");
    } catch {
      return undefined;
    }
  });

const oneOf = <T extends string>(values: readonly T[]) =>
  field(values.join(" or "), (v) => (typeof v === "string" && values.includes(v as T) ? (v as T) : undefined));

const duration = () => field("a duration such as 30s, 10m or 1h", parseDuration);
const size = () => field("a size such as 512KiB, 16MiB or 2GiB", parseSize);
const nullable = <T extends z.ZodType>(schema: T) => z.union([z.null(), schema]);

/** Package, pin and profile names: what mip and the index accept. */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
const name = z.string().regex(NAME_PATTERN, "expected a name of letters, digits, '.', '_' or '-'");
/** Pinned package names: whatever an index may list (`__future__`, `os.path`; rules in packages/names.ts). */
const packageName = z.string().regex(PACKAGE_NAME.pattern, `expected ${PACKAGE_NAME.expected}`);

/** The `-march` values mpy-cross accepts. */
export const MARCH_VALUES = [
  "x86",
  "x64",
  "armv6",
  "armv6m",
  "armv7m",
  "armv7em",
  "armv7emsp",
  "armv7emdp",
  "xtensa",
  "xtensawin",
  "rv32imc",
  "rv64imc",
  "host",
] as const;

/** `a, b and c` (or `or`): a list in words. */
const listed = (items: readonly string[], last: "and" | "or"): string =>
  items.length < 2 ? items.join("") : `${items.slice(0, -1).join(", ")} ${last} ${items.at(-1)}`;

/**
 * The `packages.<name>.source` field for `kinds` (the registry's): `kind:rest` where `rest` matches the kind's
 * pattern and holds no `..` segment (unless the kind takes them); the message lists every kind's example.
 */
export function sourceField(kinds: readonly SourceKind[]) {
  return field(`a source such as ${listed(kinds.map((k) => k.example), "or")}`, (v) => {
    if (typeof v !== "string") return undefined;
    const m = /^([a-z]+):(.+)$/.exec(v.trim());
    const kind = m && kinds.find((k) => k.name === m[1]);
    if (!m || !kind || !kind.pattern.test(m[2])) return undefined;
    if (m[2].split("/").includes("..") && !kind.parentSegments) return undefined;
    return v.trim();
  });
}

const source = sourceField(SOURCE_KINDS);

/** Whether a (checked) source has versions: `ref` and pins apply to it. */
const versioned = (source: string): boolean => sourceKind(source.slice(0, source.indexOf(":")))?.versioned ?? true;
const prefixes = (kinds: readonly SourceKind[]) => kinds.map((k) => `${k.name}:`);
/** `url: and local: sources have no versions; ref applies to github:, ... and pypi: sources`. */
const NO_VERSIONS = `${listed(prefixes(SOURCE_KINDS.filter((k) => !k.versioned)), "and")} sources have no versions; ` +
  `ref applies to ${listed(prefixes(SOURCE_KINDS.filter((k) => k.versioned)), "and")} sources`;

const hostBase = (url: string) => httpUrl().prefault(url);
const hostToken = () => nullable(text("a token")).prefault(null);
/** `upstreams.<host>` for each code host of the registry, defaulting to the host's own base. */
const HOST_BASES = Object.fromEntries(REPO_HOSTS.map((h) => [h.name, hostBase(h.defaultBase)])) as {
  [N in RepoHostName]: ReturnType<typeof hostBase>;
};
/** `upstreams.<host>_token` for each code host that takes a token. */
const HOST_TOKENS = Object.fromEntries(
  REPO_HOSTS.filter((h) => h.token).map((h) => [`${h.name}_token`, hostToken()]),
) as {
  [N in TokenHostName as `${N}_token`]: ReturnType<typeof hostToken>;
};

/** Refs and versions end up in upstream URLs and cache keys: letters, digits and `._+-`, no `..`. */
const refLike = (what: string) =>
  field(what, (v) => {
    const t = typeof v === "number" ? String(v) : typeof v === "string" ? v.trim() : undefined;
    return t && /^[A-Za-z0-9_][A-Za-z0-9._+-]{0,99}$/.test(t) && !t.includes("..") ? t : undefined;
  });

const indexList = field("an http(s) URL or a list of them", (v) => {
  const list = Array.isArray(v) ? v : [v];
  if (list.length === 0) return undefined;
  const out: string[] = [];
  for (const item of list) {
    const r = httpUrl().safeParse(item);
    if (!r.success) return undefined;
    out.push(r.data);
  }
  return out;
});

const hostList = field("a list of host names", (v) => {
  if (!Array.isArray(v)) return undefined;
  return v.every((h) => typeof h === "string" && /^[A-Za-z0-9.-]+(:\d+)?$/.test(h))
    ? v.map((h: string) => h.toLowerCase())
    : undefined;
});

/** `policy.block` entries: `name` (every release) or `name@version`. */
const blockList = field(`a list of "name" or "name@version" entries`, (v) => {
  if (!Array.isArray(v)) return undefined;
  const out: string[] = [];
  for (const item of v) {
    const t = typeof item === "string" ? item.trim() : undefined;
    if (!t || specProblem(t) !== undefined) return undefined;
    out.push(t);
  }
  return out;
});

/** An IPv4 or IPv6 address with an optional prefix length, e.g. `10.0.0.0/8`, `192.168.1.5`, `fd00::/8`. */
export const CIDR_PATTERN = /^(?:\d{1,3}(?:\.\d{1,3}){3}(?:\/\d{1,2})?|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(?:\/\d{1,3})?)$/;

const cidrList = field("a list of addresses or CIDR ranges such as 10.0.0.0/8", (v) => {
  if (!Array.isArray(v)) return undefined;
  return v.every((c) => typeof c === "string" && CIDR_PATTERN.test(c.trim()))
    ? v.map((c: string) => c.trim())
    : undefined;
});

/** The whole configuration. Input is the merged YAML; output is typed, with units converted. */
export const configSchema = z.strictObject({
  server: z.strictObject({
    host: text("a host name or address").prefault("0.0.0.0"),
    port: field("a port number 1-65535", intIn(1, 65535)).prefault(18891),
    public_url: nullable(httpUrl()).prefault(null),
    workers: field(`"auto" or a whole number 0-64`, (v) => v === "auto" ? "auto" as const : intIn(0, 64)(v))
      .prefault(0),
    head_timeout: duration().prefault("30s"),
    idle_timeout: duration().prefault("60s"),
    max_connections: field("a whole number 16-1000000", intIn(16, 1_000_000)).prefault(4096),
    trusted_proxies: cidrList.prefault([]),
    admin_token: nullable(adminToken()).prefault(null),
    admin_from: cidrList.prefault([]),
  }).prefault({}),
  cache: z.strictObject({
    dir: nullable(text("a directory path")).prefault(null),
    ttl: duration().prefault("10m"),
    negative_ttl: duration().prefault("1m"),
    tag_ttl: nullable(duration()).prefault("1d"),
    offline: boolean().prefault(false),
    prefetch: boolean().prefault(true),
    memory: size().prefault("64MiB"),
    max_size: nullable(size()).prefault(null),
    store: oneOf(["disk", "s3"] as const).prefault("disk"),
    s3: z.strictObject({
      endpoint: nullable(httpUrl()).prefault(null),
      region: field(
        "a region such as us-east-1",
        (v) => typeof v === "string" && /^[a-z0-9-]{1,40}$/.test(v.trim()) ? v.trim() : undefined,
      ).prefault("us-east-1"),
      bucket: nullable(
        field(
          "a bucket name (3-63 of a-z, 0-9, '.', '-')",
          (v) => typeof v === "string" && /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(v.trim()) ? v.trim() : undefined,
        ),
      )
        .prefault(null),
      prefix: field("a key prefix of safe segments ending in '/' (e.g. site-a/), or \"\"", (v) => {
        if (v === null || v === "") return "";
        if (typeof v !== "string") return undefined;
        const p = v.trim();
        return /^([A-Za-z0-9_][A-Za-z0-9._-]{0,99}\/){1,8}$/.test(p) ? p : undefined;
      }).prefault(""),
      path_style: boolean().prefault(true),
      lease_ttl: duration().refine((v) => v >= 1_000, "expected at least 1s").prefault("30s"),
    }).prefault({}),
  }).superRefine((cache, ctx) => {
    if (cache.store === "s3" && cache.s3.bucket === null) {
      ctx.addIssue({ code: "custom", path: ["s3", "bucket"], message: "cache.store is s3: name the bucket" });
    }
  }).prefault({}),
  upstreams: z.strictObject({
    index: indexList.prefault("https://micropython.org/pi/v2"),
    ...HOST_BASES,
    pypi: httpUrl().prefault("https://pypi.org/pypi"),
    pypi_files: httpUrl().prefault("https://files.pythonhosted.org"),
    ...HOST_TOKENS,
    connect_timeout: duration().prefault("10s"),
    timeout: duration().prefault("60s"),
    retries: field("a whole number 0-10", intIn(0, 10)).prefault(2),
    max_size: size().prefault("16MiB"),
    breaker: z.strictObject({
      failures: field("a whole number 0-1000 (0: off)", intIn(0, 1000)).prefault(5),
      open_for: duration().prefault("30s"),
    }).prefault({}),
  }).prefault({}),
  packages: z.record(
    name,
    z.strictObject({
      source,
      ref: nullable(refLike("a branch, tag or commit (letters, digits, '.', '_', '+', '-')")).prefault(null),
    }).superRefine((pkg, ctx) => {
      if (pkg.ref !== null && !versioned(pkg.source)) {
        ctx.addIssue({ code: "custom", path: ["ref"], message: NO_VERSIONS });
      }
    }),
  ).prefault({}),
  pins: z.record(
    packageName,
    field("a version such as 1.2.3", (v) => {
      const t = typeof v === "number" ? String(v) : typeof v === "string" ? v.trim() : undefined;
      return t && VERSION.pattern.test(t) ? t : undefined;
    }),
  ).prefault({}),
  policy: z.strictObject({
    unlisted: oneOf(["allow", "deny"] as const).prefault("allow"),
    allow_hosts: hostList.prefault([]),
    lock: nullable(text("a path to a lock file written by `mipserver lock`")).prefault(null),
    block: blockList.prefault([]),
    trusted_keys: z.array(
      field(
        "a public key as keygen prints it: ed25519:<base64 of 32 bytes>",
        (v) => typeof v === "string" && /^ed25519:[A-Za-z0-9+/]{43}=$/.test(v.trim()) ? v.trim() : undefined,
      ),
    ).prefault([]),
    require_signed: boolean().prefault(false),
    lock_url: nullable(httpUrl()).prefault(null),
  }).prefault({}),
  targets: z.record(
    name,
    z.strictObject({
      march: nullable(oneOf(MARCH_VALUES)).prefault(null),
      opt: nullable(field("an optimisation level 0-3", intIn(0, 3))).prefault(null),
      small_int_bits: nullable(field("a whole number 8-64", intIn(8, 64))).prefault(null),
      mpy_cross: nullable(text("a path to an mpy-cross executable")).prefault(null),
    }),
  ).prefault({}),
  mpy_cross: z.strictObject({
    path: nullable(text("a path to the mpy-cross executable")).prefault(null),
    timeout: duration().prefault("30s"),
    concurrency: field("a whole number 0-256 (0: one per CPU)", intIn(0, 256)).prefault(0),
    on_error: oneOf(["source", "fail"] as const).prefault("source"),
  }).prefault({}),
  log: z.strictObject({
    level: oneOf(["debug", "info", "warn", "error"] as const).prefault("info"),
    format: oneOf(["text", "json"] as const).prefault("text"),
    requests_kept: field("a whole number 0-1000000", intIn(0, 1_000_000)).prefault(1000),
  }).prefault({}),
  audit: z.strictObject({
    enabled: boolean().prefault(true),
    window: duration().prefault("30s"),
    retention: duration().prefault("90d"),
    max_size: size().refine((v) => v >= 1024 * 1024, "expected at least 1MiB (the schema and one batch need room)")
      .prefault("64MiB"),
    max_devices: field("a whole number 1-10000000", intIn(1, 10_000_000)).prefault(10_000),
    database: nullable(field("a postgres:// URL (postgres://user@host:5432/mipserver)", (v) => {
      if (typeof v !== "string") return undefined;
      try {
        const u = new URL(v.trim());
        return (u.protocol === "postgres:" || u.protocol === "postgresql:") && u.hostname !== "" ? v.trim() : undefined;
      } catch {
        return undefined;
      }
    })).prefault(null),
    max_rows: nullable(field("a whole number 1000-1000000000", intIn(1000, 1_000_000_000))).prefault(null),
    site: nullable(
      field(
        "a site name of letters, digits, '.', '_' or '-' (1-64)",
        (v) => typeof v === "string" && /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(v.trim()) ? v.trim() : undefined,
      ),
    )
      .prefault(null),
  }).prefault({}),
  devices: z.record(
    z.string().regex(CIDR_PATTERN, "expected a device address such as 10.0.4.17"),
    text("a device name"),
  ).prefault({}),
}).superRefine((config, ctx) => {
  if (config.policy.lock !== null && config.policy.lock_url !== null) {
    ctx.addIssue({
      code: "custom",
      path: ["policy", "lock_url"],
      message: "policy.lock and policy.lock_url are both set: a server follows one lock, from a file or from a URL",
    });
  }
  for (const name of Object.keys(config.pins)) {
    const source = config.packages[name]?.source;
    if (source && !versioned(source)) {
      ctx.addIssue({
        code: "custom",
        path: ["pins", name],
        message: `${name} is a ${source.split(":")[0]}: package, which has no versions to pin`,
      });
    }
  }
});

/** The validated configuration. Durations are in milliseconds, sizes in bytes. */
export type Config = z.output<typeof configSchema>;

/** Key paths whose values are durations (milliseconds once parsed). */
export const DURATION_KEYS = [
  "cache.ttl",
  "cache.negative_ttl",
  "cache.tag_ttl",
  "cache.s3.lease_ttl",
  "upstreams.connect_timeout",
  "upstreams.timeout",
  "upstreams.breaker.open_for",
  "mpy_cross.timeout",
  "audit.window",
  "audit.retention",
];
/** Key paths whose values are sizes (bytes once parsed). */
export const SIZE_KEYS = ["cache.memory", "cache.max_size", "upstreams.max_size", "audit.max_size"];
/** Keys whose values are secrets and never printed or logged: the code hosts' tokens and the admin token. */
export const SECRET_KEYS = [
  ...REPO_HOSTS.filter((h) => h.token).map((h) => `upstreams.${h.name}_token`),
  "server.admin_token",
  "audit.database",
];

/** The configuration as a person writes it: units as text, secrets redacted. For `check-config`. */
export function displayConfig(config: Config): Record<string, unknown> {
  const copy = structuredClone(config) as Record<string, Record<string, unknown>>;
  const apply = (paths: string[], fn: (v: unknown) => unknown) => {
    for (const path of paths) {
      const keys = path.split(".");
      const key = keys.pop()!;
      let parent: Record<string, unknown> | undefined = copy;
      for (const k of keys) parent = parent?.[k] as Record<string, unknown> | undefined;
      if (parent?.[key] !== undefined && parent[key] !== null) parent[key] = fn(parent[key]);
    }
  };
  apply(DURATION_KEYS, (v) => formatDuration(v as number));
  apply(SIZE_KEYS, (v) => formatSize(v as number));
  apply(SECRET_KEYS, () => "[redacted]");
  return copy;
}
