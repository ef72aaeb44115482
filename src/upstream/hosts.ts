/**
 * Which upstream hosts the server may contact, and which of them receive the GitHub token.
 * @module
 */
import type { Config } from "../config/schema.ts";

/** Hosts that are GitHub's own, besides the configured `upstreams.github`. */
const GITHUB_HOSTS = ["github.com", "api.github.com", "raw.githubusercontent.com", "codeload.github.com"];

const hostOf = (url: string): string => new URL(url).host.toLowerCase();

/**
 * The hosts of the configured upstreams (indexes, GitHub, GitLab, PyPI and its file host, `url:` sources) plus
 * `policy.allow_hosts`. An entry without a port allows that host name on any port.
 */
export function allowedHosts(config: Config): Set<string> {
  const hosts = new Set<string>(config.policy.allow_hosts);
  for (const url of config.upstreams.index) hosts.add(hostOf(url));
  for (const url of [config.upstreams.github, config.upstreams.gitlab, config.upstreams.pypi]) hosts.add(hostOf(url));
  hosts.add(hostOf(config.upstreams.pypi_files));
  for (const pkg of Object.values(config.packages)) {
    const m = /^url:(.+)$/.exec(pkg.source);
    if (m) {
      try {
        hosts.add(hostOf(m[1]));
      } catch {
        // An invalid url: source fails when it is used, with its own message.
      }
    }
  }
  return hosts;
}

/** A predicate for the Fetcher's `allowHost`: is this URL's host in `hosts`? */
export function hostAllowlist(hosts: Set<string>): (url: URL) => boolean {
  return (url) => hosts.has(url.host.toLowerCase()) || hosts.has(url.hostname.toLowerCase());
}

/** Whether `url` is on a GitHub host (the configured raw host or GitHub's own). */
export function isGithubHost(config: Config, url: URL): boolean {
  const host = url.host.toLowerCase();
  return host === hostOf(config.upstreams.github) || GITHUB_HOSTS.includes(host);
}

/** The Fetcher's `headersFor`: `Authorization` with `upstreams.github_token`, for GitHub hosts only. */
export function tokenHeaders(config: Config): (url: URL) => Record<string, string> {
  const token = config.upstreams.github_token;
  if (!token) return () => ({});
  const header = { authorization: `token ${token}` };
  return (url) =>
    (url.protocol === "https:" || url.hostname === "127.0.0.1" || url.hostname === "localhost") &&
      isGithubHost(config, url)
      ? header
      : {};
}

/**
 * The configured host a URL belongs to (`host:port` or a port-less entry of `hosts`), for per-host state such as
 * circuit breakers; URLs on other hosts (reached only by redirects) fall back to their own `host`.
 */
export function configuredHost(hosts: Set<string>): (url: URL) => string {
  return (url) => {
    const host = url.host.toLowerCase();
    if (hosts.has(host)) return host;
    const name = url.hostname.toLowerCase();
    return hosts.has(name) ? name : host;
  };
}
