/**
 * Leases in the bucket itself, as Athens does without an extra service: the lease of key K is the object
 * `{prefix}locks/leases/K`, created with `If-None-Match: *` (only one creator wins), renewed with `If-Match` on its ETag
 * while the fill runs, taken over with `If-Match` once it has expired, and removed when the fill ends. The lease lasts
 * `ttl`; it is renewed every third of it, so a fill of any length keeps it while its process lives, and a process
 * that dies loses it within `ttl`.
 * @module
 */
import type { Logger } from "../../log.ts";
import { type Lease, type Leases, type LeaseStats, LeaseWaitTooLong } from "../lease.ts";
import type { S3Client } from "./client.ts";

/** Options of {@linkcode S3Leases}. */
export interface S3LeaseOptions {
  /** How long a lease lasts unrenewed, in ms (default 30 s). */
  ttlMs?: number;
  /** How often a waiting process looks again, in ms (default 200). */
  pollMs?: number;
  /** How long a fill waits for another process's at most before a 503, in ms (default 2 minutes). */
  maxWaitMs?: number;
  /** This process's name in the leases it holds (default: a random id). */
  owner?: string;
  now?: () => number;
  logger?: Logger;
}

interface Held {
  etag: string;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Leases kept as objects in an S3 bucket. */
export class S3Leases implements Leases {
  readonly shared = true;
  #client: S3Client;
  #prefix: string;
  #ttl: number;
  #poll: number;
  #maxWait: number;
  #owner: string;
  #now: () => number;
  #logger?: Logger;
  #stats: LeaseStats = { taken: 0, waited: 0, served: 0, takenOver: 0, lost: 0, gaveUp: 0 };

  constructor(client: S3Client, prefix: string, options: S3LeaseOptions = {}) {
    this.#client = client;
    this.#prefix = `${prefix}locks/leases/`;
    this.#ttl = options.ttlMs ?? 30_000;
    this.#poll = options.pollMs ?? 200;
    this.#maxWait = options.maxWaitMs ?? 120_000;
    this.#owner = options.owner ?? crypto.randomUUID().slice(0, 13);
    this.#now = options.now ?? Date.now;
    this.#logger = options.logger;
  }

  stats(): LeaseStats {
    return { ...this.#stats };
  }

  #body(): Uint8Array {
    return enc.encode(JSON.stringify({ owner: this.#owner, expires: this.#now() + this.#ttl }));
  }

  /** Writes the lease if `condition` holds; the new ETag, or undefined when another process's write won. */
  async #write(key: string, condition: Record<string, string>): Promise<string | undefined> {
    const res = await this.#client.request("PUT", this.#prefix + key, {
      body: this.#body(),
      headers: { ...condition, "content-type": "application/json" },
      accept: [409, 412],
    });
    if (res.status === 409 || res.status === 412) return undefined;
    return res.headers.get("etag") ?? "";
  }

  async acquire(key: string, appeared: () => Promise<boolean>): Promise<Lease | undefined> {
    const started = this.#now();
    let waited = false;
    while (true) {
      const etag = await this.#write(key, { "if-none-match": "*" });
      if (etag !== undefined) {
        if (waited) this.#stats.waited++;
        this.#stats.taken++;
        return this.#hold(key, { etag });
      }
      // Held by another process: expired (its holder died) or being filled.
      const current = await this.#client.request("GET", this.#prefix + key, { accept: [404] });
      if (current.status === 200) {
        let expires = 0;
        try {
          expires = Number(JSON.parse(dec.decode(current.body)).expires) || 0;
        } catch {
          // An unreadable lease counts as expired.
        }
        const currentTag = current.headers.get("etag");
        if (expires < this.#now() && currentTag) {
          const taken = await this.#write(key, { "if-match": currentTag });
          if (taken !== undefined) {
            this.#stats.takenOver++;
            this.#stats.taken++;
            this.#logger?.warn("Took over an expired fill lease (its holder stopped renewing it)", { key });
            return this.#hold(key, { etag: taken });
          }
        }
      }
      waited = true;
      if (await appeared()) {
        this.#stats.waited++;
        this.#stats.served++;
        return undefined;
      }
      if (this.#now() - started > this.#maxWait) {
        this.#stats.gaveUp++;
        throw new LeaseWaitTooLong(
          `Another replica has been filling ${key} for over ${Math.round(this.#maxWait / 1000)} s; try again later`,
        );
      }
      await new Promise((r) => setTimeout(r, this.#poll));
    }
  }

  /** A held lease, renewed every third of its lifetime until released. */
  #hold(key: string, held: Held): Lease {
    let released = false;
    let renewing: Promise<void> = Promise.resolve();
    const timer = setInterval(() => {
      renewing = (async () => {
        try {
          const etag = await this.#write(key, { "if-match": held.etag });
          if (etag === undefined) {
            if (released) return;
            this.#stats.lost++;
            clearInterval(timer);
            this.#logger?.warn("Lost a fill lease to another replica (renewal refused)", { key });
          } else held.etag = etag;
        } catch (e) {
          this.#logger?.warn("Cannot renew a fill lease", { key, error: (e as Error).message });
        }
      })();
    }, Math.max(50, Math.floor(this.#ttl / 3)));
    Deno.unrefTimer(timer);
    return {
      release: async () => {
        if (released) return;
        released = true;
        clearInterval(timer);
        await renewing;
        // Only our own lease goes: a lease taken over meanwhile has another ETag.
        const current = await this.#client.request("HEAD", this.#prefix + key, { accept: [404] }).catch(() =>
          undefined
        );
        if (current?.status === 200 && current.headers.get("etag") === held.etag) {
          await this.#client.request("DELETE", this.#prefix + key).catch((e) =>
            this.#logger?.warn("Cannot remove a fill lease; it expires on its own", {
              key,
              error: (e as Error).message,
            })
          );
        }
      },
    };
  }
}
