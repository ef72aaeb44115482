/**
 * Who may use the admin routes (`/`, `/_/*`, `/metrics`, `/echo`). With `server.admin_token`, a request must carry it
 * (`Authorization: Bearer <token>`, or HTTP Basic with the token as password); without one, only loopback clients and
 * `server.admin_from` may. Tokens are compared in constant time and failures are logged without the value presented.
 *
 * Guessing is bounded in three scopes, each answered 429 with `Retry-After` for a minute once over its limit: one
 * address ({@linkcode MAX_FAILURES} failures of any kind), one network (an IPv4 /24 or IPv6 /64; all of loopback is one;
 * {@linkcode MAX_NETWORK_FAILURES} wrong tokens) and everyone but loopback together ({@linkcode MAX_GLOBAL_FAILURES}
 * wrong tokens). A blocked scope is refused before its token is compared, so rotating addresses does not buy guesses;
 * the price, a flood locking LAN clients out of the admin routes a minute at a time while loopback still gets in, is
 * explained in the security docs. The addresses and networks remembered, and the refusal log lines, are bounded too.
 * @module
 */
import { timingSafeEqual } from "node:crypto";
import type { Logger } from "../log.ts";
import { CidrSet, isLoopback, parseAddress } from "./net.ts";

/** Failures from one address within {@linkcode FAILURE_WINDOW_MS} before it is refused with 429. */
export const MAX_FAILURES = 10;
/** Wrong tokens from one network (IPv4 /24, IPv6 /64, or all of loopback) within the window before it gets 429. */
export const MAX_NETWORK_FAILURES = 30;
/** Wrong tokens from all non-loopback clients together within the window before every one of them gets 429. */
export const MAX_GLOBAL_FAILURES = 100;
/** The window failures are counted in, and how long a scope (address, network, everyone) is then refused (ms). */
export const FAILURE_WINDOW_MS = 60_000;
/** Addresses whose failures are remembered at once; beyond that the older half is forgotten. */
export const MAX_TRACKED_ADDRESSES = 10_000;
/** Networks whose wrong tokens are remembered at once; beyond that the older half is forgotten. */
export const MAX_TRACKED_NETWORKS = 10_000;
/** Refusals logged one line each per window; the rest are counted and reported in one line. */
export const MAX_LOGGED_REFUSALS = 20;

/** The network all loopback clients (127.0.0.0/8, ::1) and in-process calls share. */
const LOOPBACK_NETWORK = "loopback";

/** Tells whether a request path is an admin route. */
export function isAdminPath(pathname: string): boolean {
  return pathname === "/" || pathname.startsWith("/_/") || pathname === "/_" || pathname === "/metrics" ||
    pathname === "/echo";
}

/** What {@linkcode AdminAccess} is built from. */
export interface AdminAccessOptions {
  token: string | null;
  /** Ranges that may use the admin routes without a token (besides loopback), when there is no token. */
  from: string[];
  logger: Logger;
  now?: () => number;
}

const enc = new TextEncoder();

/** Failures of one scope: counted since `since`, refused until `blockedUntil`. */
interface Budget {
  count: number;
  since: number;
  blockedUntil: number;
}

const stale = (budget: Budget, now: number) => now - budget.since > FAILURE_WINDOW_MS && budget.blockedUntil <= now;

/**
 * Counts one failure against `budget`; answers the count reached and whether that used the budget up, in which case
 * the scope is refused for a window and counting starts again.
 */
function spend(budget: Budget, max: number, now: number): { count: number; blocked: boolean } {
  if (stale(budget, now)) {
    budget.count = 0;
    budget.since = now;
  }
  const count = ++budget.count;
  if (count < max) return { count, blocked: false };
  budget.blockedUntil = now + FAILURE_WINDOW_MS;
  budget.count = 0;
  budget.since = now;
  return { count, blocked: true };
}

/**
 * Budgets by key, at most `max` of them, in two generations of `max / 2`: a budget goes into the newer when it is
 * spent; when the newer is full, or a window old, it becomes the older and the older is forgotten at once. A budget
 * is only forgotten a window or more after it was last spent (when it cannot matter any more), unless more than
 * `max / 2` others were spent since. O(1) a failure: dropping the oldest entry of one big Map, as this replaces, makes
 * V8 skip every slot deleted so far each time (its hash table keeps them until it is rebuilt).
 */
class Budgets {
  #newer = new Map<string, Budget>();
  #older = new Map<string, Budget>();
  #newerSince = -Infinity;
  #half: number;

  constructor(max: number) {
    this.#half = Math.max(1, Math.floor(max / 2));
  }

  get size(): number {
    return this.#newer.size + this.#older.size;
  }

  /** How long `key` is still refused (ms; 0: it is not). */
  blockedFor(key: string, now: number): number {
    const budget = this.#newer.get(key) ?? this.#older.get(key);
    return budget && budget.blockedUntil > now ? budget.blockedUntil - now : 0;
  }

  /** Counts one failure of `key` (see {@linkcode spend}). */
  spend(key: string, max: number, now: number): { count: number; blocked: boolean } {
    let budget = this.#newer.get(key);
    if (!budget) {
      budget = this.#older.get(key) ?? { count: 0, since: now, blockedUntil: 0 };
      this.#older.delete(key);
      if (this.#newer.size >= this.#half || now - this.#newerSince >= FAILURE_WINDOW_MS) {
        this.#older = this.#newer;
        this.#newer = new Map();
        this.#newerSince = now;
      }
      this.#newer.set(key, budget);
    }
    return spend(budget, max, now);
  }
}

/**
 * The network a client is counted in: `a.b.c.0/24` for IPv4 (mapped IPv6 too), `w:x:y:z::/64` for IPv6, `loopback` for
 * 127.0.0.0/8, ::1 and in-process calls, and the text itself for anything that is not an address.
 */
export function networkOf(client: string, inProcess = false): string {
  if (inProcess) return LOOPBACK_NETWORK;
  const address = parseAddress(client);
  if (!address) return client;
  if (address.family === 4) {
    const n = Number(address.bits);
    return n >>> 24 === 127 ? LOOPBACK_NETWORK : `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.0/24`;
  }
  if (address.bits === 1n) return LOOPBACK_NETWORK;
  const top = address.bits >> 64n;
  return `${[48n, 32n, 16n, 0n].map((s) => ((top >> s) & 0xffffn).toString(16)).join(":")}::/64`;
}

/** Decides admin access, request by request. */
export class AdminAccess {
  #token: Uint8Array | null;
  #from: CidrSet;
  #logger: Logger;
  #now: () => number;
  #addresses = new Budgets(MAX_TRACKED_ADDRESSES);
  #networks = new Budgets(MAX_TRACKED_NETWORKS);
  #everyone: Budget = { count: 0, since: -Infinity, blockedUntil: 0 };
  #log = { since: -Infinity, lines: 0, notLogged: 0, throttled: 0 };

  constructor(options: AdminAccessOptions) {
    this.#token = options.token === null ? null : enc.encode(options.token);
    this.#from = new CidrSet(options.from);
    this.#logger = options.logger;
    this.#now = options.now ?? Date.now;
  }

  /** The mode in force, for the start-up log. */
  describe(): { admin: string; admin_from?: string } {
    if (this.#token) return { admin: "token required (server.admin_token)" };
    return {
      admin: "no token set: loopback clients only" + (this.#from.size ? ", plus server.admin_from" : ""),
      ...(this.#from.size ? { admin_from: `${this.#from.size} range(s)` } : {}),
    };
  }

  /** How many addresses and networks have their failures remembered now (each at most its `MAX_TRACKED_*`). */
  get tracked(): { addresses: number; networks: number } {
    return { addresses: this.#addresses.size, networks: this.#networks.size };
  }

  /**
   * Answers a refusal for an admin request from `client`, or undefined when it may go on. `inProcess` (a call that
   * came with no connection at all, as tests make) counts as loopback; every network request has an address.
   */
  check(request: Request, client: string, inProcess = false): Response | undefined {
    const now = this.#now();
    const network = this.#token ? networkOf(client, inProcess) : undefined;
    const wait = Math.max(
      this.#addresses.blockedFor(client, now),
      network === undefined ? 0 : this.#networks.blockedFor(network, now),
      network === undefined || network === LOOPBACK_NETWORK ? 0 : this.#everyone.blockedUntil - now,
    );
    if (wait > 0) {
      // Before the token is looked at: a blocked scope gets no guess compared.
      this.#roll(now);
      this.#log.throttled++;
      const seconds = Math.ceil(wait / 1000);
      return refusal(429, "Too many failed attempts; try again later", { "retry-after": String(seconds) });
    }
    if (this.#token) {
      const presented = presentedToken(request.headers.get("authorization"));
      if (presented !== undefined && sameToken(enc.encode(presented), this.#token)) return undefined;
      this.#fail(client, now, presented === undefined ? "no credentials" : "wrong token", request);
      if (presented !== undefined) this.#guessed(network!, now);
      return refusal(401, "Authentication required: send the admin token (Bearer, or Basic with it as password)", {
        "www-authenticate": 'Basic realm="mipserver"',
      });
    }
    if (inProcess || isLoopback(client) || this.#from.has(client)) return undefined;
    this.#fail(client, now, "address not allowed", request);
    return refusal(
      403,
      "Admin routes answer only loopback clients and server.admin_from while no server.admin_token is set",
    );
  }

  #fail(client: string, now: number, reason: string, request: Request): void {
    const { count, blocked } = this.#addresses.spend(client, MAX_FAILURES, now);
    this.#refusalLine(now, "Admin access refused", () => ({
      client,
      path: new URL(request.url, "http://x").pathname,
      reason,
      failures: count,
    }));
    if (blocked) {
      this.#refusalLine(now, "Admin access blocked for a minute after repeated failures", () => ({ client }));
    }
  }

  /** Counts a wrong token against its network and, unless it is loopback, against everyone's budget. */
  #guessed(network: string, now: number): void {
    if (this.#networks.spend(network, MAX_NETWORK_FAILURES, now).blocked) {
      this.#logger.warn("Admin access blocked for a minute for a whole network after repeated wrong tokens", {
        network,
        failures: MAX_NETWORK_FAILURES,
      });
    }
    if (network !== LOOPBACK_NETWORK && spend(this.#everyone, MAX_GLOBAL_FAILURES, now).blocked) {
      this.#logger.warn("Admin access blocked for a minute for every client but loopback after repeated wrong tokens", {
        failures: MAX_GLOBAL_FAILURES,
      });
    }
  }

  /** Logs a refusal, up to {@linkcode MAX_LOGGED_REFUSALS} lines a window; counts the rest (not making their fields). */
  #refusalLine(now: number, message: string, fields: () => Record<string, unknown>): void {
    this.#roll(now);
    if (this.#log.lines >= MAX_LOGGED_REFUSALS) {
      this.#log.notLogged++;
      return;
    }
    this.#log.lines++;
    this.#logger.warn(message, fields());
  }

  /** Starts a new log window when the last one is over, first reporting what it did not log line by line. */
  #roll(now: number): void {
    const log = this.#log;
    if (now - log.since < FAILURE_WINDOW_MS) return;
    if (log.notLogged > 0 || log.throttled > 0) {
      this.#logger.warn("Admin access refusals not logged one by one", {
        since: new Date(log.since).toISOString(),
        not_logged: log.notLogged,
        answered_429: log.throttled,
      });
    }
    this.#log = { since: now, lines: 0, notLogged: 0, throttled: 0 };
  }
}

function refusal(status: number, message: string, headers: Record<string, string> = {}): Response {
  const body = enc.encode(message + "\n");
  return new Response(body, {
    status,
    headers: {
      "content-type": "text/plain; charset=utf-8",
      "content-length": String(body.byteLength),
      "cache-control": "no-store",
      ...headers,
    },
  });
}

/** The token an Authorization header presents: a Bearer token, or the password of Basic credentials. */
export function presentedToken(header: string | null): string | undefined {
  if (header === null) return undefined;
  const m = /^\s*(Bearer|Basic)\s+(\S+)\s*$/i.exec(header);
  if (!m) return undefined;
  if (m[1].toLowerCase() === "bearer") return m[2];
  try {
    const decoded = new TextDecoder("utf-8", { fatal: true }).decode(
      Uint8Array.from(atob(m[2]), (c) => c.charCodeAt(0)),
    );
    const colon = decoded.indexOf(":");
    return colon < 0 ? undefined : decoded.slice(colon + 1);
  } catch {
    return undefined;
  }
}

/** Compares in constant time (for equal lengths; the length of the configured token is not a secret worth hiding). */
function sameToken(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) {
    timingSafeEqual(b, b);
    return false;
  }
  return timingSafeEqual(a, b);
}
