/**
 * Figures for the status page, in fixed memory: requests and cache outcomes per minute over the last 24 hours, and
 * the most recent errors with their reasons.
 * @module
 */
import type { RequestEntry } from "../http/request_log.ts";

const MINUTE = 60_000;
/** Minutes kept: one day. */
export const MINUTES = 24 * 60;
/** Errors kept for the status page. */
export const ERRORS_KEPT = 50;

/** One recent error. */
export interface RecentError {
  time: number;
  client: string;
  method: string;
  path: string;
  status: number;
  reason: string;
}

/** A span of the chart: requests and cache outcomes in it. */
export interface Span {
  start: number;
  requests: number;
  hits: number;
  lookups: number;
}

/** Per-minute counters in a ring of {@linkcode MINUTES} slots, and a ring of recent errors. */
export class Stats {
  #minute = new Float64Array(MINUTES);
  #requests = new Float64Array(MINUTES);
  #hits = new Float64Array(MINUTES);
  #lookups = new Float64Array(MINUTES);
  #errors: RecentError[] = [];
  /** Totals since start. */
  requests = 0;
  hits = 0;
  lookups = 0;

  /** Counts `count` requests like `entry` (the same minute and cache outcome). */
  add(entry: RequestEntry, count = 1): void {
    const time = typeof entry.time === "number" ? entry.time : Date.parse(entry.time);
    const m = Math.floor(time / MINUTE);
    const slot = ((m % MINUTES) + MINUTES) % MINUTES;
    if (this.#minute[slot] !== m) {
      this.#minute[slot] = m;
      this.#requests[slot] = this.#hits[slot] = this.#lookups[slot] = 0;
    }
    this.#requests[slot] += count;
    this.requests += count;
    const cache = entry.cache;
    if (cache === "hit" || cache === "miss" || cache === "stale") {
      this.#lookups[slot] += count;
      this.lookups += count;
      if (cache === "hit") (this.#hits[slot] += count, this.hits += count);
    }
  }

  /** Keeps an error with its reason (the newest {@linkcode ERRORS_KEPT}). */
  addError(error: RecentError): void {
    this.#errors.push({ ...error, reason: error.reason.slice(0, 300) });
    if (this.#errors.length > ERRORS_KEPT) this.#errors.shift();
  }

  /** The recent errors, newest first. */
  errors(): RecentError[] {
    return [...this.#errors].reverse();
  }

  /** The last 24 hours up to `now` in `count` equal spans, oldest first. */
  spans(now: number, count = 96): Span[] {
    const width = (MINUTES / count) * MINUTE;
    const end = (Math.floor(now / MINUTE) + 1) * MINUTE;
    const start = end - MINUTES * MINUTE;
    const out: Span[] = Array.from({ length: count }, (_, i) => ({
      start: start + i * width,
      requests: 0,
      hits: 0,
      lookups: 0,
    }));
    for (let slot = 0; slot < MINUTES; slot++) {
      const t = this.#minute[slot] * MINUTE;
      if (this.#requests[slot] === 0 || t < start || t >= end) continue;
      const span = out[Math.floor((t - start) / width)];
      span.requests += this.#requests[slot];
      span.hits += this.#hits[slot];
      span.lookups += this.#lookups[slot];
    }
    return out;
  }
}
