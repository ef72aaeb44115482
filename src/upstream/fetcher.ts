/**
 * The one upstream HTTP client: connect and total timeouts, bounded retries with backoff on network errors, 429 and
 * 5xx, redirects followed here (devices cannot follow ours), a response size cap, and a host allowlist.
 * Deno's fetch honours HTTP_PROXY, HTTPS_PROXY and NO_PROXY from the environment.
 * @module
 */
import type { Logger } from "../log.ts";
import { joinChunks } from "../bytes.ts";
import type { Breakers } from "./breaker.ts";
import { UpstreamError } from "../errors.ts";

/** The fetcher's error and its kinds live with the other domain errors, so the rooms below can turn it into one. */
export { UpstreamError, type UpstreamErrorKind } from "../errors.ts";

/** Limits and hooks for a {@linkcode Fetcher}. */
export interface FetcherOptions {
  /** Time until the upstream's response headers arrive, in ms. */
  connectTimeout: number;
  /** Time for the whole request, body included, in ms. */
  timeout: number;
  /** Retries after the first attempt, on network errors, timeouts, 429 and 5xx. */
  retries: number;
  /** Largest body accepted, in bytes. */
  maxSize: number;
  logger: Logger;
  /** First backoff delay in ms; doubles per retry (default 250). */
  backoff?: number;
  /** Which hosts a request may go to (default: all), redirects included: a redirect elsewhere is refused. */
  allowHost?: (url: URL) => boolean;
  /** Extra headers per URL (e.g. a token for one host only). */
  headersFor?: (url: URL) => Record<string, string>;
  /** Called after each upstream attempt, for metrics. */
  onAttempt?: (url: URL, status: number | "error", seconds: number) => void;
  /** Circuit breakers per upstream host; a request whose host's breaker is open fails at once. */
  breakers?: Breakers;
  /** The breaker a request belongs to, from the URL it starts at (default: its host). */
  breakerKey?: (url: URL) => string;
}

/** A fetched body. */
export interface Fetched {
  body: Uint8Array;
  /** The URL the body came from, after redirects. */
  url: string;
  /** Time spent, all attempts included, in ms. */
  ms: number;
}

const MAX_REDIRECTS = 5;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Fetches upstream URLs with the configured limits. */
export class Fetcher {
  #o: FetcherOptions;
  constructor(options: FetcherOptions) {
    this.#o = options;
  }

  /** GETs `url`, following redirects, retrying transient failures. Throws {@linkcode UpstreamError}. */
  async get(url: string): Promise<Fetched> {
    const started = performance.now();
    const breakers = this.#o.breakers;
    const key = breakers?.enabled ? this.#breakerKey(url) : undefined;
    let lastError: UpstreamError | undefined;
    for (let attempt = 0; attempt <= this.#o.retries; attempt++) {
      if (key !== undefined) {
        const refusal = breakers!.admit(key);
        if (refusal) {
          const seconds = refusal.until > 0 ? Math.max(1, Math.ceil((refusal.until - breakers!.now()) / 1000)) : 1;
          const why = refusal.until > 0 ? `for another ${seconds}s` : "while one probe request is under way";
          throw new UpstreamError(
            refusal.lastTimeout ? "timeout" : "network",
            url,
            `Upstream ${key} is failing; not contacted ${why} (circuit breaker open): ${url}. Last failure: ${refusal.lastError}`,
            undefined,
            true,
            seconds,
          );
        }
      }
      let outcome: "ok" | "failed" | "timeout" | undefined;
      try {
        if (attempt > 0) await sleep((this.#o.backoff ?? 250) * 2 ** (attempt - 1));
        const { body, url: finalUrl } = await this.#once(url);
        outcome = "ok";
        return { body, url: finalUrl, ms: performance.now() - started };
      } catch (e) {
        if (!(e instanceof UpstreamError)) throw e;
        lastError = e;
        const transient = e.kind === "network" || e.kind === "timeout" ||
          (e.kind === "status" && (e.status === 429 || (e.status ?? 0) >= 500));
        if (e.kind !== "host") outcome = transient ? (e.kind === "timeout" ? "timeout" : "failed") : "ok";
        if (!transient) throw e;
        if (attempt < this.#o.retries) {
          this.#o.logger.warn("Upstream request failed, retrying", {
            url: e.url,
            error: e.message,
            attempt: attempt + 1,
          });
        }
      } finally {
        if (key !== undefined) {
          if (outcome === "ok") breakers!.success(key);
          else if (outcome !== undefined) breakers!.failure(key, outcome === "timeout", lastError?.message);
          else breakers!.release(key);
        }
      }
    }
    throw lastError!;
  }

  #breakerKey(url: string): string | undefined {
    try {
      const u = new URL(url);
      return this.#o.breakerKey ? this.#o.breakerKey(u) : u.host.toLowerCase();
    } catch {
      return undefined;
    }
  }

  async #once(start: string): Promise<{ body: Uint8Array; url: string }> {
    const total = AbortSignal.timeout(this.#o.timeout);
    let url = new URL(start);
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      if (this.#o.allowHost && !this.#o.allowHost(url)) {
        const how = hop === 0 ? "" : ` (${start} redirected there)`;
        throw new UpstreamError("host", url.href, `Host ${url.host} is not an allowed upstream${how}`);
      }
      const connect = new AbortController();
      const timer = setTimeout(() => connect.abort(), this.#o.connectTimeout);
      const t0 = performance.now();
      let res: Response;
      try {
        res = await fetch(url, {
          redirect: "manual",
          headers: { "user-agent": "mipserver", ...this.#o.headersFor?.(url) },
          signal: AbortSignal.any([total, connect.signal]),
        });
      } catch (e) {
        this.#o.onAttempt?.(url, "error", (performance.now() - t0) / 1000);
        if (total.aborted) {
          throw new UpstreamError("timeout", url.href, `Upstream timed out after ${this.#o.timeout}ms: ${url.href}`);
        }
        if (connect.signal.aborted) {
          throw new UpstreamError(
            "timeout",
            url.href,
            `Upstream did not answer within ${this.#o.connectTimeout}ms: ${url.href}`,
          );
        }
        throw new UpstreamError("network", url.href, `Cannot reach upstream ${url.href}: ${(e as Error).message}`);
      } finally {
        clearTimeout(timer);
      }
      this.#o.onAttempt?.(url, res.status, (performance.now() - t0) / 1000);
      if ([301, 302, 303, 307, 308].includes(res.status)) {
        await res.body?.cancel();
        const location = res.headers.get("location");
        if (!location) {
          throw new UpstreamError("status", url.href, `Upstream redirect without Location: ${url.href}`, res.status);
        }
        url = new URL(location, url);
        continue;
      }
      if (res.status === 404 || res.status === 410) {
        await res.body?.cancel();
        throw new UpstreamError("not_found", url.href, `Not found upstream: ${url.href}`, res.status);
      }
      if (res.status !== 200) {
        const reason = await shortReason(res);
        throw new UpstreamError(
          "status",
          url.href,
          `Upstream answered ${res.status}: ${url.href}${reason ? ` (${reason})` : ""}`,
          res.status,
          false,
          retryAfter(res.headers.get("retry-after")),
        );
      }
      try {
        return { body: await this.#read(res, url.href), url: url.href };
      } catch (e) {
        if (e instanceof UpstreamError) throw e;
        if (total.aborted) {
          throw new UpstreamError("timeout", url.href, `Upstream timed out after ${this.#o.timeout}ms: ${url.href}`);
        }
        throw new UpstreamError("network", url.href, `Upstream body broke off: ${url.href}: ${(e as Error).message}`);
      }
    }
    throw new UpstreamError("redirects", start, `More than ${MAX_REDIRECTS} redirects from ${start}`);
  }

  async #read(res: Response, url: string): Promise<Uint8Array> {
    const max = this.#o.maxSize;
    const tooLarge = () => new UpstreamError("too_large", url, `Upstream response larger than ${max} bytes: ${url}`);
    const declared = Number(res.headers.get("content-length") ?? NaN);
    if (declared > max) {
      await res.body?.cancel();
      throw tooLarge();
    }
    const chunks: Uint8Array[] = [];
    let size = 0;
    for await (const chunk of res.body ?? []) {
      size += chunk.byteLength;
      if (size > max) throw tooLarge();
      chunks.push(chunk);
    }
    if (Number.isFinite(declared) && size !== declared) {
      throw new UpstreamError("network", url, `Upstream body was ${size} bytes, expected ${declared}: ${url}`);
    }
    return joinChunks(chunks, size);
  }
}

/** The most of an upstream's plain-text error body kept in a message (a chained mipserver's reason), in characters. */
const REASON_CHARS = 200;

/**
 * The first line of a plain-text error body (a central mipserver says why it could not answer), cut short and made
 * printable; undefined for any other body. Never reads more than a few KiB.
 */
async function shortReason(res: Response): Promise<string | undefined> {
  if (!res.body || !/^text\/plain\b/i.test(res.headers.get("content-type") ?? "")) {
    await res.body?.cancel();
    return undefined;
  }
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < 4 * REASON_CHARS) {
      const { value, done } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.byteLength;
    }
  } catch {
    return undefined;
  } finally {
    reader.cancel().catch(() => {});
  }
  const line = new TextDecoder().decode(joinChunks(chunks, size)).split("\n", 1)[0].replace(/[^\x20-\x7e]/g, "?");
  const text = line.trim();
  if (!text) return undefined;
  return text.length > REASON_CHARS ? `${text.slice(0, REASON_CHARS)}...` : text;
}

/** A `Retry-After` of whole seconds (0 to a day), else undefined (a date or garbage is ignored). */
function retryAfter(value: string | null): number | undefined {
  if (value === null || !/^\d{1,6}$/.test(value.trim())) return undefined;
  const n = Number(value.trim());
  return n <= 86_400 ? n : undefined;
}
