/**
 * The one place an error becomes an answer: the domain errors of `../errors.ts` and the HTTP rooms' own
 * {@linkcode HttpError} get their status, headers and plain-text body here; anything else is unexpected (a 500 with
 * an error id, in `server.ts`).
 * @module
 */
import {
  BadName,
  BadUpstream,
  Blocked,
  Busy,
  CompileFailed,
  LockMismatch,
  NotAllowed,
  NotFound,
  Unavailable,
  UpstreamFailed,
} from "../errors.ts";
import { HttpError } from "./responses.ts";

/** How a known error is answered. */
export interface ErrorAnswer {
  status: number;
  /** Extra response headers (e.g. `Retry-After`, `Allow`). */
  headers: Record<string, string>;
  /** The plain-text body, without its trailing newline: the error's message. */
  text: string;
}

/** The status of each domain error class; the first class an error is an instance of wins. */
const STATUSES: [new (...args: never[]) => Error, number][] = [
  [NotFound, 404],
  [NotAllowed, 403],
  [Blocked, 410],
  [BadName, 400],
  [CompileFailed, 422],
  [UpstreamFailed, 502], // a transient one (UpstreamTimedOut among them) is a 503, in answerFor
  [BadUpstream, 502],
  [LockMismatch, 502],
  [Unavailable, 503],
  [Busy, 503],
];

/** The answer to a known error (a domain error or an {@linkcode HttpError}); undefined for an unexpected one. */
export function answerFor(e: unknown): ErrorAnswer | undefined {
  if (e instanceof HttpError) return { status: e.status, headers: e.headers, text: e.message };
  if (e instanceof Busy || (e instanceof UpstreamFailed && e.transient)) {
    return { status: 503, headers: { "retry-after": String(e.retryAfterSeconds) }, text: e.message };
  }
  for (const [type, status] of STATUSES) {
    if (e instanceof type) return { status, headers: {}, text: e.message };
  }
  return undefined;
}
