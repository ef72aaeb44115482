/**
 * Who may use the admin routes (`/`, `/_/*`, `/metrics`, `/echo`). With `server.admin_token`, a request must carry it
 * (`Authorization: Bearer <token>`, or HTTP Basic with the token as password); without one, only loopback clients and
 * `server.admin_from` may. Tokens are compared in constant time, failures are logged without the value presented, and
 * an address that fails 10 times within a minute is answered 429 for a minute.
 * @module
 */
import { timingSafeEqual } from "node:crypto";
import type { Logger } from "../log.ts";
import { CidrSet, isLoopback } from "./net.ts";

/** Failures from one address within {@linkcode FAILURE_WINDOW_MS} before it is refused with 429. */
export const MAX_FAILURES = 10;
/** The window failures are counted in, and how long an address is then refused (ms). */
export const FAILURE_WINDOW_MS = 60_000;
/** Addresses whose failures are remembered at once; beyond that the oldest are forgotten. */
const MAX_TRACKED = 10_000;

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

/** Decides admin access, request by request. */
export class AdminAccess {
  #token: Uint8Array | null;
  #from: CidrSet;
  #logger: Logger;
  #now: () => number;
  #failures = new Map<string, { count: number; since: number; blockedUntil: number }>();

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

  /**
   * Answers a refusal for an admin request from `client`, or undefined when it may go on. `inProcess` (a call that
   * came with no connection at all, as tests make) counts as loopback; every network request has an address.
   */
  check(request: Request, client: string, inProcess = false): Response | undefined {
    const now = this.#now();
    const record = this.#failures.get(client);
    if (record && record.blockedUntil > now) {
      const seconds = Math.ceil((record.blockedUntil - now) / 1000);
      return refusal(429, "Too many failed attempts; try again later", { "retry-after": String(seconds) });
    }
    if (this.#token) {
      const presented = presentedToken(request.headers.get("authorization"));
      if (presented !== undefined && sameToken(enc.encode(presented), this.#token)) return undefined;
      this.#fail(client, now, presented === undefined ? "no credentials" : "wrong token", request);
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
    let record = this.#failures.get(client);
    if (!record || now - record.since > FAILURE_WINDOW_MS) {
      this.#failures.delete(client);
      record = { count: 0, since: now, blockedUntil: 0 };
      if (this.#failures.size >= MAX_TRACKED) this.#failures.delete(this.#failures.keys().next().value!);
      this.#failures.set(client, record);
    }
    record.count++;
    const path = new URL(request.url, "http://x").pathname;
    this.#logger.warn("Admin access refused", { client, path, reason, failures: record.count });
    if (record.count >= MAX_FAILURES) {
      record.blockedUntil = now + FAILURE_WINDOW_MS;
      record.count = 0;
      record.since = now;
      this.#logger.warn("Admin access blocked for a minute after repeated failures", { client });
    }
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
