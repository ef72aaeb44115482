/**
 * The errors the domain rooms (`cache/`, `upstream/`, `packages/`, `compile/`) throw: each class says what went wrong
 * in domain terms, its message is the reason a person reads, and nothing here knows HTTP. `http/errors.ts` alone
 * turns them into statuses, headers and bodies.
 *
 * To add one: a class here (extending {@linkcode Failure} when upstream or the server could not answer, else
 * {@linkcode DomainError}), its row in `answerFor` in `http/errors.ts`, and its row in `tests/http/errors_test.ts`.
 * @module
 */

/** A failure the server answers with its reason; its message is what a person reads. */
export abstract class DomainError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** What was asked for does not exist: no such package, version, file or profile, or not cached while offline. */
export class NotFound extends DomainError {}

/** What was asked for exists but may not be served: the policy, the lock file or the upstream allowlist refuses it. */
export class NotAllowed extends DomainError {}

/** A release (or a file only blocked releases list) that `policy.block` refuses. */
export class Blocked extends DomainError {}

/** A name, path, hash or host in the request that is not well formed. */
export class BadName extends DomainError {}

/** A source that mpy-cross refused to compile, with `compile.on_error: fail`. */
export class CompileFailed extends DomainError {}

/**
 * No answer could be had now: upstream failed or sent something unusable, the locked bytes are missing, or the
 * server is offline or busy. What the lock file makes up for (a manifest from the lock alone) is one of these or a
 * {@linkcode NotFound}.
 */
export abstract class Failure extends DomainError {}

/** How long a client is told to wait after a transient upstream failure when upstream named no time, in seconds. */
export const UPSTREAM_RETRY_AFTER_SECONDS = 10;

/** How an {@linkcode UpstreamFailed} came about. */
export interface UpstreamFailedOptions {
  /** Upstream could not be reached at all (no answer, or its circuit breaker open). */
  unreachable?: boolean;
  /** Asking again later may work (unreachable, timed out, or upstream answered 5xx or 429); default: `unreachable`. */
  transient?: boolean;
  /** When to ask again, in seconds (upstream's own `Retry-After`, else {@linkcode UPSTREAM_RETRY_AFTER_SECONDS}). */
  retryAfterSeconds?: number;
}

/**
 * Upstream failed to give a body: an error status, a broken connection, too many redirects, a body too large. A
 * transient failure (upstream unreachable or failing for now) is the server being unable to answer for the moment,
 * not a bad answer: clients get a 503 with `Retry-After`; other failures a 502.
 */
export class UpstreamFailed extends Failure {
  /** True when upstream could not be reached at all (no answer, a timeout, or its circuit breaker open). */
  readonly unreachable: boolean;
  /** True when asking again later may work. */
  readonly transient: boolean;
  /** When to ask again, in seconds. */
  readonly retryAfterSeconds: number;
  constructor(message: string, options: UpstreamFailedOptions = {}) {
    super(message);
    this.unreachable = options.unreachable ?? false;
    this.transient = options.transient ?? this.unreachable;
    this.retryAfterSeconds = options.retryAfterSeconds ?? UPSTREAM_RETRY_AFTER_SECONDS;
  }
}

/** Upstream did not answer in time (or its circuit breaker is open after timeouts): unreachable, for now. */
export class UpstreamTimedOut extends UpstreamFailed {
  constructor(message: string, retryAfterSeconds?: number) {
    super(message, { unreachable: true, retryAfterSeconds });
  }
}

/**
 * Upstream sent something this server refuses to pass on: invalid JSON, bytes that do not match their hash, a
 * malformed or unsafe manifest, a dependency cycle or a chain too deep.
 */
export class BadUpstream extends Failure {}

/** The locked bytes of a file cannot be had (neither cached nor available upstream); changed bytes are never served. */
export class LockMismatch extends Failure {}

/** Offline (by `cache.offline`, or upstream unreachable on a server that imported a bundle) and nothing holds it. */
export class Unavailable extends Failure {}

/** Too much work queued (the compile queue is full); try again after {@linkcode Busy.retryAfterSeconds}. */
export class Busy extends Failure {
  /** When to ask again, in seconds. */
  readonly retryAfterSeconds: number;
  constructor(message: string, retryAfterSeconds = 1) {
    super(message);
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

/** Why an upstream request failed. */
export type UpstreamErrorKind = "not_found" | "status" | "timeout" | "network" | "too_large" | "redirects" | "host";

/**
 * An upstream request that did not produce a usable body: the fetcher's own error (`upstream/fetcher.ts`), with the
 * detail its callers act on. The cache turns it into a domain error ({@linkcode fromUpstream}); one that escapes
 * unturned is an unexpected error.
 */
export class UpstreamError extends Error {
  readonly kind: UpstreamErrorKind;
  /** The URL that failed (after redirects). */
  readonly url: string;
  /** The upstream status, when there was one. */
  readonly status?: number;
  /** True when nothing was sent because the host's circuit breaker is open. */
  readonly breaker: boolean;
  /** Upstream's `Retry-After` in seconds, or the seconds its circuit breaker stays open, when known. */
  readonly retryAfter?: number;
  constructor(
    kind: UpstreamErrorKind,
    url: string,
    message: string,
    status?: number,
    breaker = false,
    retryAfter?: number,
  ) {
    super(message);
    this.name = "UpstreamError";
    this.kind = kind;
    this.url = url;
    this.status = status;
    this.breaker = breaker;
    this.retryAfter = retryAfter;
  }
}

/**
 * A domain error as it is, or an upstream failure as the domain error it means: not found, not allowed (a refused
 * host), timed out, else failed. Any other error is thrown again.
 */
export function fromUpstream(e: unknown): DomainError {
  if (e instanceof DomainError) return e;
  if (e instanceof UpstreamError) {
    if (e.kind === "not_found") return new NotFound(e.message);
    if (e.kind === "host") return new NotAllowed(e.message);
    if (e.kind === "timeout") return new UpstreamTimedOut(e.message, e.retryAfter);
    const failing = e.kind === "status" && e.status !== undefined && (e.status >= 500 || e.status === 429);
    return new UpstreamFailed(e.message, {
      unreachable: e.kind === "network",
      transient: e.kind === "network" || failing,
      retryAfterSeconds: e.retryAfter,
    });
  }
  throw e;
}
