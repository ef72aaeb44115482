/**
 * The configuration schema (zod). Every default lives here and is mirrored, with comments, in `config.yaml`;
 * a test keeps the two identical.
 * @module
 */
import { z } from "zod";
import { formatDuration, formatSize, parseDuration, parseSize } from "./units.ts";

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

/** Prefixes a `packages.<name>.source` may start with. */
export const SOURCE_KINDS = ["github", "gitlab", "url", "pypi", "local"] as const;

/** What each source kind needs after its prefix. */
const SOURCE_RULES: Record<string, RegExp> = {
  github: /^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.+\/-]+)?$/,
  gitlab: /^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.+\/-]+)?$/,
  url: /^https?:\/\/[^\s/]+(\/\S*)?$/,
  pypi: /^[A-Za-z0-9][A-Za-z0-9._-]*$/,
  local: /^\S.*$/,
};

const source = field(
  `a source such as github:owner/repo[/path], gitlab:owner/repo[/path], url:https://.../package.json, pypi:name or local:/dir`,
  (v) => {
    if (typeof v !== "string") return undefined;
    const m = /^([a-z]+):(.+)$/.exec(v.trim());
    if (!m || !(SOURCE_KINDS as readonly string[]).includes(m[1]) || !SOURCE_RULES[m[1]].test(m[2])) return undefined;
    if (m[2].split("/").includes("..") && m[1] !== "local") return undefined;
    return v.trim();
  },
);

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
  }).prefault({}),
  cache: z.strictObject({
    dir: nullable(text("a directory path")).prefault(null),
    ttl: duration().prefault("10m"),
    negative_ttl: duration().prefault("1m"),
    offline: boolean().prefault(false),
    prefetch: boolean().prefault(true),
    memory: size().prefault("64MiB"),
  }).prefault({}),
  upstreams: z.strictObject({
    index: indexList.prefault("https://micropython.org/pi/v2"),
    github: httpUrl().prefault("https://raw.githubusercontent.com"),
    gitlab: httpUrl().prefault("https://gitlab.com"),
    pypi: httpUrl().prefault("https://pypi.org/pypi"),
    pypi_files: httpUrl().prefault("https://files.pythonhosted.org"),
    github_token: nullable(text("a token")).prefault(null),
    connect_timeout: duration().prefault("10s"),
    timeout: duration().prefault("60s"),
    retries: field("a whole number 0-10", intIn(0, 10)).prefault(2),
    max_size: size().prefault("16MiB"),
  }).prefault({}),
  packages: z.record(
    name,
    z.strictObject({
      source,
      ref: nullable(refLike("a branch, tag or commit (letters, digits, '.', '_', '+', '-')")).prefault(null),
    }).superRefine((pkg, ctx) => {
      if (pkg.ref !== null && /^(url|local):/.test(pkg.source)) {
        ctx.addIssue({
          code: "custom",
          path: ["ref"],
          message: "url: and local: sources have no versions; ref applies to github:, gitlab: and pypi: sources",
        });
      }
    }),
  ).prefault({}),
  pins: z.record(name, refLike("a version such as 1.2.3")).prefault({}),
  policy: z.strictObject({
    unlisted: oneOf(["allow", "deny"] as const).prefault("allow"),
    allow_hosts: hostList.prefault([]),
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
}).superRefine((config, ctx) => {
  for (const name of Object.keys(config.pins)) {
    const source = config.packages[name]?.source;
    if (source && /^(url|local):/.test(source)) {
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
  "upstreams.connect_timeout",
  "upstreams.timeout",
  "mpy_cross.timeout",
];
/** Key paths whose values are sizes (bytes once parsed). */
export const SIZE_KEYS = ["cache.memory", "upstreams.max_size"];
/** Keys whose values are secrets and never printed or logged. */
export const SECRET_KEYS = ["upstreams.github_token"];

/** The configuration as a person writes it: units as text, secrets redacted. For `check-config`. */
export function displayConfig(config: Config): Record<string, unknown> {
  const copy = structuredClone(config) as Record<string, Record<string, unknown>>;
  const apply = (paths: string[], fn: (v: unknown) => unknown) => {
    for (const path of paths) {
      const [section, key] = path.split(".");
      if (copy[section]?.[key] !== undefined && copy[section][key] !== null) {
        copy[section][key] = fn(copy[section][key]);
      }
    }
  };
  apply(DURATION_KEYS, (v) => formatDuration(v as number));
  apply(SIZE_KEYS, (v) => formatSize(v as number));
  apply(SECRET_KEYS, () => "[redacted]");
  return copy;
}
