/**
 * Which upstream hosts the server may contact, and which of them receive a code host's token.
 * @module
 */

const hostOf = (url: string): string => new URL(url).host.toLowerCase();

/** The settings {@linkcode allowedHosts} reads (the configuration's, handed down as plain values). */
export interface HostSettings {
  policy: { allow_hosts: readonly string[] };
  /** `index` is a list of URLs; every other string is one upstream URL, or a token (`*_token`). */
  upstreams: { index: readonly string[] } & Record<string, unknown>;
  packages: Record<string, { source: string }>;
}

/**
 * The hosts of the configured upstreams (indexes, every code host, PyPI and its file host: each URL under
 * `upstreams`, its tokens aside), `url:` sources' hosts, plus `policy.allow_hosts`. An entry without a port allows
 * that host name on any port.
 */
export function allowedHosts(config: HostSettings): Set<string> {
  const hosts = new Set<string>(config.policy.allow_hosts);
  for (const url of config.upstreams.index) hosts.add(hostOf(url));
  for (const [key, value] of Object.entries(config.upstreams)) {
    if (typeof value === "string" && !key.endsWith("_token")) hosts.add(hostOf(value));
  }
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

/** A token and the hosts (`host` or `host:port`, lowercase) it is sent to. */
export interface TokenRule {
  token: string;
  hosts: string[];
}

/**
 * The Fetcher's `headersFor`: `Authorization: token ...` with the first rule whose hosts hold the URL's host, over
 * https (or plain http to a loopback test server) only; no header for any other host.
 */
export function tokenHeaders(rules: TokenRule[]): (url: URL) => Record<string, string> {
  if (rules.length === 0) return () => ({});
  return (url): Record<string, string> => {
    if (url.protocol !== "https:" && url.hostname !== "127.0.0.1" && url.hostname !== "localhost") return {};
    const host = url.host.toLowerCase();
    const rule = rules.find((r) => r.hosts.includes(host));
    return rule ? { authorization: `token ${rule.token}` } : {};
  };
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
