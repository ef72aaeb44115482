/**
 * The kinds of package source this server reads. Adding a kind is its file beside this one and one line in
 * {@linkcode SOURCE_KINDS}: the config schema learns its prefix, pattern and example from here, and a code host
 * (a kind with a `host` layout) also gets its `upstreams.<name>` key (and `upstreams.<name>_token` when it takes a
 * token), its mirror routes `/{name}/...` and `/t/{profile}/{name}/...`, its dependency manifests
 * `/repo/{mpy}/{name}/...`, `{name}:` urls and deps in package.json files, refresh, locks and bundles.
 * @module
 */
import { codeberg } from "./codeberg.ts";
import { github } from "./github.ts";
import { gitlab } from "./gitlab.ts";
import { local } from "./local.ts";
import { pypi } from "./pypi.ts";
import type { RepoHost, Source, SourceKind } from "./source.ts";
import { url } from "./url.ts";

/** Every kind of source, in the order messages list them. */
export const SOURCE_KINDS = [github, gitlab, codeberg, url, pypi, local] as const;

type Kind = (typeof SOURCE_KINDS)[number];

/** The names of the code-host kinds: each is an `upstreams.<name>` key. */
export type RepoHostName = Extract<Kind, { host: RepoHost }>["name"];

/** The names of the code hosts that take a token: each has an `upstreams.<name>_token` key. */
export type TokenHostName = Extract<Kind, { host: { token: object } }>["name"];

/**
 * Why a list of kinds cannot be served, or undefined when it can: names are lowercase letters (the config schema
 * reads `name:` with `[a-z]+`, route patterns are built from them), unique, and a code host's layout carries its
 * kind's name.
 */
export function kindsProblem(kinds: readonly SourceKind[]): string | undefined {
  const seen = new Set<string>();
  for (const kind of kinds) {
    if (!/^[a-z]+$/.test(kind.name)) return `source kind ${JSON.stringify(kind.name)}: expected lowercase letters`;
    if (seen.has(kind.name)) return `source kind ${kind.name} is registered twice`;
    seen.add(kind.name);
    if (kind.host && kind.host.name !== kind.name) {
      return `source kind ${kind.name}: its host layout is named ${kind.host.name}`;
    }
  }
  return undefined;
}

const problem = kindsProblem(SOURCE_KINDS);
if (problem) throw new Error(`Invalid source registry: ${problem}`);

/** The code hosts' layouts, in registry order. */
export const REPO_HOSTS: readonly RepoHost[] = SOURCE_KINDS.flatMap((k: SourceKind) => (k.host ? [k.host] : []));

/** The code hosts' names, in registry order (route segments, `upstreams` keys). */
export const REPO_HOST_NAMES = REPO_HOSTS.map((h) => h.name) as readonly RepoHostName[];

/** `github|gitlab|...`: the code hosts' names as a regular expression alternative. */
export const REPO_HOST_ALTERNATIVES: string = REPO_HOST_NAMES.join("|");

/** The kind named `name`, or undefined. */
export function sourceKind(name: string): SourceKind | undefined {
  return SOURCE_KINDS.find((k) => k.name === name);
}

/** The code host named `name`, or undefined. */
export function repoHost(name: string): RepoHost | undefined {
  return REPO_HOSTS.find((h) => h.name === name);
}

/** Parses a source string (`kind:rest`; the config schema has checked it). Throws an Error saying why not. */
export function parseSource(text: string): Source {
  const i = text.indexOf(":");
  const kind = i < 0 ? undefined : sourceKind(text.slice(0, i));
  if (!kind) throw new Error(`unknown source kind in ${text}`);
  return kind.parse(text.slice(i + 1));
}
