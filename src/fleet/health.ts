/**
 * Upstream health for the status page: each upstream host's last answer, when it last answered well, and its
 * recent failures, from the upstream client's attempts. Bounded by the number of hosts (at most 256 are kept).
 * @module
 */

/** One upstream host's health. */
export interface HostHealth {
  host: string;
  attempts: number;
  failures: number;
  last_status: string;
  last_at: number;
  last_ok_at: number | null;
  /** Failures since the last good answer. */
  failing_since: number | null;
}

const MAX_HOSTS = 256;

/** Counts upstream attempts per host. */
export class UpstreamHealth {
  #hosts = new Map<string, HostHealth>();

  /** Notes one attempt: `status` is the HTTP status, or `error` when there was no answer. */
  attempt(host: string, status: number | string, at: number): void {
    let h = this.#hosts.get(host);
    if (!h) {
      if (this.#hosts.size >= MAX_HOSTS) this.#hosts.delete(this.#hosts.keys().next().value!);
      h = { host, attempts: 0, failures: 0, last_status: "", last_at: 0, last_ok_at: null, failing_since: null };
      this.#hosts.set(host, h);
    }
    h.attempts++;
    h.last_status = String(status);
    h.last_at = at;
    const ok = typeof status === "number" && status < 500 && status !== 429;
    if (ok) {
      h.last_ok_at = at;
      h.failing_since = null;
    } else {
      h.failures++;
      h.failing_since ??= at;
    }
  }

  /** Every host, by name. */
  hosts(): HostHealth[] {
    return [...this.#hosts.values()].sort((a, b) => a.host.localeCompare(b.host));
  }
}
