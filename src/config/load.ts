/**
 * Loads the configuration: schema defaults, then the config file, then `config.local.yaml` beside it (deep merge),
 * then environment variables, then command-line overrides; validates the result and reports every problem
 * with the file (or variable) and key it came from.
 * @module
 */
import { dirname, isAbsolute, join, resolve } from "node:path";
import { isPair, isScalar, parse as parseYaml, parseDocument, visit, YAMLParseError } from "yaml";
import { REPO_HOSTS } from "../packages/sources/registry.ts";
import { type Config, configSchema } from "./schema.ts";

/**
 * Environment variables that override single keys (the ones people set in containers); each code host's token
 * variables come from its kind (`GITHUB_TOKEN`, `MIPSERVER_CODEBERG_TOKEN`, ...).
 */
export const ENV_OVERRIDES: Record<string, string> = {
  MIPSERVER_HOST: "server.host",
  MIPSERVER_PORT: "server.port",
  MIPSERVER_PUBLIC_URL: "server.public_url",
  MIPSERVER_WORKERS: "server.workers",
  MIPSERVER_CACHE_DIR: "cache.dir",
  MIPSERVER_OFFLINE: "cache.offline",
  MIPSERVER_LOG_LEVEL: "log.level",
  MIPSERVER_LOG_FORMAT: "log.format",
  MIPSERVER_INDEX: "upstreams.index",
  ...Object.fromEntries(
    REPO_HOSTS.flatMap((h) => (h.token?.env ?? []).map((name) => [name, `upstreams.${h.name}_token`])),
  ),
  MIPSERVER_ADMIN_TOKEN: "server.admin_token",
  MIPSERVER_AUDIT_DATABASE: "audit.database",
};

/** The configuration could not be loaded; `problems` holds one readable line each. */
export class ConfigError extends Error {
  /** One line per problem, e.g. `config.yaml: server.port: expected a port number 1-65535, got "abc"`. */
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  ${p}`).join("\n")}`);
    this.name = "ConfigError";
    this.problems = problems;
  }
}

/** What to load. Everything is optional; tests pass their own env and paths. */
export interface LoadOptions {
  /** `--config FILE`; wins over `MIPSERVER_CONFIG`. */
  configPath?: string;
  /** The environment to read overrides from (default: none). */
  env?: Record<string, string | undefined>;
  /** Command-line overrides as key path → value, e.g. `{"server.port": "9000"}`. */
  overrides?: Record<string, unknown>;
  /** Directory in which `config.yaml` is looked for when no path is named (default: the working directory). */
  cwd?: string;
}

/** A loaded configuration and where it came from. */
export interface LoadedConfig {
  config: Config;
  /** The files read, in merge order. */
  files: string[];
  /** Things worth telling the user that are not errors. */
  warnings: string[];
}

type Tree = Record<string, unknown>;
const isTree = (v: unknown): v is Tree => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * YAML reads `aioble: 1.0` as the number 1, and a version is text: where a version or ref is expected (`pins.<name>`,
 * `packages.<name>.ref`), an unquoted number keeps the text it was written as (`1.0`, `2.10`).
 */
function keepVersionText(doc: ReturnType<typeof parseDocument>): void {
  visit(doc, {
    Scalar(_key, node, path) {
      if (typeof node.value !== "number" || node.type !== "PLAIN" || typeof node.source !== "string") return;
      const last = path.at(-1);
      if (isPair(last) && last.key === node) return; // a key, not a value
      const keys = path.filter(isPair).map((pair) => (isScalar(pair.key) ? pair.key.value : undefined));
      const isPin = keys.length === 2 && keys[0] === "pins";
      const isRef = keys.length === 3 && keys[0] === "packages" && keys[2] === "ref";
      if (isPin || isRef) node.value = node.source;
    },
  });
}

function readYaml(path: string): Tree {
  let textContent: string;
  try {
    textContent = Deno.readTextFileSync(path);
  } catch (e) {
    throw new ConfigError([`${path}: cannot read the file: ${(e as Error).message}`]);
  }
  let data: unknown;
  try {
    const doc = parseDocument(textContent, { prettyErrors: true, uniqueKeys: true });
    if (doc.errors.length > 0) throw doc.errors[0];
    keepVersionText(doc);
    data = doc.toJS();
  } catch (e) {
    if (e instanceof YAMLParseError) {
      const pos = e.linePos?.[0];
      const where = pos ? `${path}:${pos.line}:${pos.col}` : path;
      throw new ConfigError([
        `${where}: broken YAML: ${e.message.split("\n")[0].replace(/ at line \d+, column \d+:?$/, "")}`,
      ]);
    }
    throw e;
  }
  if (data === null || data === undefined) return {};
  if (!isTree(data)) throw new ConfigError([`${path}: expected a mapping of keys at the top level`]);
  return data;
}

/** Deep-merges `layer` into `into` (objects merge, everything else replaces) and records each key's origin. */
export function deepMerge(into: Tree, layer: Tree, origin: string, sources: Map<string, string>, prefix = ""): Tree {
  for (const [key, value] of Object.entries(layer)) {
    const path = prefix ? `${prefix}.${key}` : key;
    sources.set(path, origin);
    if (isTree(value) && isTree(into[key])) {
      deepMerge(into[key] as Tree, value, origin, sources, path);
    } else {
      into[key] = isTree(value) ? deepMerge({}, value, origin, sources, path) : value;
    }
  }
  return into;
}

function setPath(tree: Tree, path: string, value: unknown): void {
  const keys = path.split(".");
  let node = tree;
  for (const key of keys.slice(0, -1)) {
    if (!isTree(node[key])) node[key] = {};
    node = node[key] as Tree;
  }
  node[keys[keys.length - 1]] = value;
}

function originOf(path: string, sources: Map<string, string>): string {
  const keys = path.split(".");
  for (let i = keys.length; i > 0; i--) {
    const found = sources.get(keys.slice(0, i).join("."));
    if (found) return found;
  }
  return "defaults";
}

const exists = (path: string): boolean => {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
};

/** The working directory, or `.` when the process may not read it (a binary compiled with a narrow --allow-read). */
function workingDir(): string {
  try {
    return Deno.cwd();
  } catch {
    return ".";
  }
}

/** The first folder of a systemd directory variable (`CONFIGURATION_DIRECTORY`, `CACHE_DIRECTORY`: `:`-separated). */
function firstDir(value: string | undefined): string | undefined {
  const first = value?.split(":")[0];
  return first ? first : undefined;
}

/** The default `config.yaml` shipped with (and, in compiled binaries, embedded in) mipserver, if it can be read. */
function readEmbedded(): Tree | undefined {
  try {
    const data = parseYaml(Deno.readTextFileSync(new URL("../../config.yaml", import.meta.url)));
    return isTree(data) ? data : undefined;
  } catch {
    return undefined; // Its values are the schema defaults, which apply anyway.
  }
}

/** Top-level keys of the seed (the Python mipserver) that mipserver no longer reads. */
const SEED_IGNORED = ["TIMEZONE", "MQTT", "GOTIFY", "UVICORN", "REDIS", "TELEGRAM"];

/** Normalises the seed's `githubrepo` (`owner/repo`, a github.com URL or an ssh remote) to `owner/repo`. */
function seedRepo(value: unknown): string | undefined {
  if (typeof value !== "string") return undefined;
  const m = /^(?:(?:https?:\/\/|git@)github\.com[:/])?([A-Za-z0-9_.-]+)\/([A-Za-z0-9_.-]+?)(?:\.git)?\/?$/.exec(
    value.trim(),
  );
  return m ? `${m[1]}/${m[2]}` : undefined;
}

/**
 * Reads the seed's `PACKAGENAME_TO_GITHUB_REPO` list (`[{packagename, githubrepo}]`) as `packages` entries with a
 * `github:` source, and drops the seed's other top-level sections, with a deprecation warning for each.
 */
function migrateSeed(merged: Tree, warnings: string[], sources: Map<string, string>): void {
  const list = merged.PACKAGENAME_TO_GITHUB_REPO;
  if (list !== undefined) {
    const origin = originOf("PACKAGENAME_TO_GITHUB_REPO", sources);
    delete merged.PACKAGENAME_TO_GITHUB_REPO;
    if (!Array.isArray(list)) {
      throw new ConfigError([`${origin}: PACKAGENAME_TO_GITHUB_REPO: expected a list of {packagename, githubrepo}`]);
    }
    const packages = (merged.packages ??= {}) as Tree;
    const problems: string[] = [];
    for (const [i, item] of list.entries()) {
      const entry = (item ?? {}) as Tree;
      const name = entry.packagename;
      const repo = seedRepo(entry.githubrepo);
      if (typeof name !== "string" || !repo) {
        problems.push(
          `${origin}: PACKAGENAME_TO_GITHUB_REPO.${i}: expected {packagename: name, githubrepo: owner/repo}, got ${
            JSON.stringify(item)
          }`,
        );
        continue;
      }
      if (packages[name] === undefined) {
        packages[name] = { source: `github:${repo}` };
        sources.set(`packages.${name}`, origin);
      }
    }
    if (problems.length > 0) throw new ConfigError(problems);
    warnings.push(
      `${origin}: PACKAGENAME_TO_GITHUB_REPO is deprecated; read as packages.<name>.source: github:owner/repo ` +
        `(${list.length} entries). Move them to packages: to silence this warning.`,
    );
  }
  const uvicorn = merged.UVICORN;
  if (isTree(uvicorn)) {
    const server = (merged.server ??= {}) as Tree;
    for (const key of ["host", "port"]) {
      if (uvicorn[key] !== undefined && server[key] === undefined) {
        server[key] = uvicorn[key];
        sources.set(`server.${key}`, originOf("UVICORN", sources));
        warnings.push(`${originOf("UVICORN", sources)}: UVICORN.${key} is deprecated; read as server.${key}`);
      }
    }
    delete merged.UVICORN;
  }
  for (const key of SEED_IGNORED) {
    if (merged[key] === undefined) continue;
    warnings.push(`${originOf(key, sources)}: ${key} is a setting of the old Python mipserver and is ignored`);
    delete merged[key];
  }
}

/** Loads, merges and validates the configuration, or throws a {@linkcode ConfigError}. */
export function loadConfig(options: LoadOptions = {}): LoadedConfig {
  const env = options.env ?? {};
  const cwd = options.cwd ?? workingDir();
  const files: string[] = [];
  const warnings: string[] = [];
  const sources = new Map<string, string>();
  const merged: Tree = {};

  const named = options.configPath ?? env.MIPSERVER_CONFIG;
  const systemdConfig = firstDir(env.CONFIGURATION_DIRECTORY);
  let main: string | undefined;
  if (named) {
    main = resolve(cwd, named);
    if (!exists(main)) {
      const via = options.configPath ? "--config" : "MIPSERVER_CONFIG";
      throw new ConfigError([`${named}: config file not found (named by ${via})`]);
    }
  } else if (systemdConfig && exists(join(systemdConfig, "config.yaml"))) {
    main = join(systemdConfig, "config.yaml");
  } else if (exists(join(cwd, "config.yaml"))) {
    main = join(cwd, "config.yaml");
  }

  const baseDir = main ? dirname(main) : cwd;
  if (main) {
    for (const file of [main, join(baseDir, "config.local.yaml")]) {
      if (file !== main && !exists(file)) continue;
      deepMerge(merged, readYaml(file), file, sources);
      files.push(file);
    }
  } else {
    const embedded = readEmbedded();
    if (embedded) deepMerge(merged, embedded, "embedded config.yaml", sources);
    warnings.push(
      `no config file found (--config, MIPSERVER_CONFIG, ${
        systemdConfig ? `${systemdConfig}/config.yaml, ` : ""
      }${cwd}/config.yaml): using the built-in defaults`,
    );
  }

  migrateSeed(merged, warnings, sources);

  for (const [variable, path] of Object.entries(ENV_OVERRIDES)) {
    const value = env[variable];
    if (value === undefined || value === "") continue;
    setPath(merged, path, path === "upstreams.index" ? value.split(/[\s,]+/).filter(Boolean) : value);
    sources.set(path, `environment ${variable}`);
  }
  for (const [path, value] of Object.entries(options.overrides ?? {})) {
    setPath(merged, path, value);
    sources.set(path, `command line`);
  }

  const result = configSchema.safeParse(merged, { reportInput: true });
  if (!result.success) {
    const problems: string[] = [];
    for (const issue of result.error.issues) {
      const path = issue.path.map(String).join(".");
      if (issue.code === "unrecognized_keys") {
        for (const key of issue.keys) {
          const full = path ? `${path}.${key}` : key;
          problems.push(`${originOf(full, sources)}: ${full}: unknown key`);
        }
        continue;
      }
      let message = issue.message;
      if (issue.code === "invalid_type") {
        message = `expected ${issue.expected === "object" ? "a mapping of keys" : issue.expected}, got ${
          issue.input === undefined ? "nothing" : JSON.stringify(issue.input)
        }`;
      } else if (issue.code === "invalid_union") {
        message = (issue.errors.flat().find((e) => e.code === "custom")?.message) ?? message;
      }
      problems.push(`${originOf(path, sources)}: ${path || "(top level)"}: ${message}`);
    }
    throw new ConfigError(problems);
  }

  const config = result.data;
  const systemdCache = firstDir(env.CACHE_DIRECTORY);
  if (config.cache.dir === null) config.cache.dir = systemdCache ?? join(baseDir, ".cache");
  else if (!isAbsolute(config.cache.dir)) config.cache.dir = resolve(baseDir, config.cache.dir);
  if (config.policy.lock !== null && !isAbsolute(config.policy.lock)) {
    config.policy.lock = resolve(baseDir, config.policy.lock);
  }
  for (const pkg of Object.values(config.packages)) {
    const local = /^local:(.+)$/.exec(pkg.source);
    if (local && !isAbsolute(local[1])) pkg.source = `local:${resolve(baseDir, local[1])}`;
  }
  return { config, files, warnings };
}
