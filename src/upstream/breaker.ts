/**
 * A circuit breaker per upstream host: after `failures` consecutive failed attempts (no answer, a timeout, 429 or
 * 5xx) the host is *open* for `openFor` ms and requests to it fail at once without a connection; after that one
 * request is let through as a probe (*half-open*): it closes the breaker when the host answers, and opens it again
 * when it fails. The set of hosts is bounded by the caller (the configured upstreams), so its states can be shown in
 * `/healthz` and `/metrics`.
 * @module
 */

/** A breaker's state. */
export type BreakerState = "closed" | "open" | "half-open";

/** What the breakers are built from. */
export interface BreakerOptions {
  /** Consecutive failures that open a host's breaker; 0 turns breakers off. */
  failures: number;
  /** How long an open breaker refuses requests before it lets one probe through, in ms. */
  openFor: number;
  /** Clock in ms (default `Date.now`). */
  now?: () => number;
  /** Hears every state change (for logging). */
  onChange?: (host: string, from: BreakerState, to: BreakerState) => void;
}

/** Why a request was not sent: the host's breaker is open. */
export interface Refusal {
  /** Until when the breaker stays open (ms, the injected clock's time), or 0 while a probe is under way. */
  until: number;
  /** Whether the last failure was a timeout, so the refusal says it as such. */
  lastTimeout: boolean;
  /** The last failure's message. */
  lastError: string;
}

interface HostBreaker {
  state: BreakerState;
  failures: number;
  openedAt: number;
  probing: boolean;
  lastTimeout: boolean;
  lastError: string;
}

/** The breakers of every upstream host seen. */
export class Breakers {
  #o: BreakerOptions;
  #now: () => number;
  #hosts = new Map<string, HostBreaker>();

  constructor(options: BreakerOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  /** The breakers' clock, in ms. */
  now(): number {
    return this.#now();
  }

  /** How many hosts have a breaker: only hosts that failed, keyed as the caller keys them (the configured hosts). */
  get size(): number {
    return this.#hosts.size;
  }

  /** Whether breakers are on at all. */
  get enabled(): boolean {
    return this.#o.failures > 0;
  }

  /**
   * Asks to send one attempt to `host`. Returns undefined when it may go (becoming the probe of a breaker whose open
   * period is over), or why not.
   */
  admit(host: string): Refusal | undefined {
    if (!this.enabled) return undefined;
    const b = this.#hosts.get(host);
    if (!b || b.state === "closed") return undefined;
    if (b.state === "open") {
      const until = b.openedAt + this.#o.openFor;
      if (this.#now() < until) return { until, lastTimeout: b.lastTimeout, lastError: b.lastError };
      this.#set(host, b, "half-open");
    }
    if (b.probing) return { until: 0, lastTimeout: b.lastTimeout, lastError: b.lastError };
    b.probing = true;
    return undefined;
  }

  /** `host` answered (any status but 429 and 5xx): its breaker closes. */
  success(host: string): void {
    if (!this.enabled) return;
    const b = this.#hosts.get(host);
    if (!b) return;
    b.failures = 0;
    b.probing = false;
    if (b.state !== "closed") this.#set(host, b, "closed");
  }

  /** An attempt to `host` failed (`error` says how); `timeout` says whether it timed out. */
  failure(host: string, timeout: boolean, error = ""): void {
    if (!this.enabled) return;
    let b = this.#hosts.get(host);
    if (!b) {
      b = { state: "closed", failures: 0, openedAt: 0, probing: false, lastTimeout: false, lastError: "" };
      this.#hosts.set(host, b);
    }
    b.failures++;
    b.lastTimeout = timeout;
    b.lastError = error;
    if (b.state === "half-open" || (b.state === "closed" && b.failures >= this.#o.failures)) {
      b.probing = false;
      b.openedAt = this.#now();
      this.#set(host, b, "open");
    }
  }

  /** An admitted attempt ended without reaching `host` for reasons of ours (e.g. a refused host): no verdict. */
  release(host: string): void {
    const b = this.#hosts.get(host);
    if (b) b.probing = false;
  }

  /** The state of `host` as of now (an open breaker whose period is over reads half-open). */
  state(host: string): BreakerState {
    const b = this.#hosts.get(host);
    if (!b) return "closed";
    if (b.state === "open" && this.#now() >= b.openedAt + this.#o.openFor) return "half-open";
    return b.state;
  }

  #set(host: string, b: HostBreaker, to: BreakerState): void {
    const from = b.state;
    b.state = to;
    this.#o.onChange?.(host, from, to);
  }
}

/** The number `/metrics` shows for a state: 0 closed, 1 half-open, 2 open. */
export const STATE_VALUES: Record<BreakerState, number> = { closed: 0, "half-open": 1, open: 2 };
