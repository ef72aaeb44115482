/**
 * Leases: one fill per object across processes that share a store. Before a replica fetches or compiles an object it
 * takes the object's lease; the others wait for the object to appear and read it. One process alone needs none (its
 * single flight is enough): {@linkcode soloLeases}. The shared implementation lives with its backend (`s3/lease.ts`).
 * @module
 */
import { Unavailable } from "../errors.ts";

/** A held lease: renewed while held, given back by {@linkcode Lease.release}. */
export interface Lease {
  /** Gives the lease back (after the fill stored its object, or failed). */
  release(): Promise<void>;
}

/** The figures of a lease keeper, for `/healthz` and `/metrics`. */
export interface LeaseStats {
  /** Leases taken at once. */
  taken: number;
  /** Fills that waited for another process's lease. */
  waited: number;
  /** Waits that ended with the object there (the other process filled it). */
  served: number;
  /** Leases taken over after their holder let them expire. */
  takenOver: number;
  /** Leases lost while held (another process took them over: a fill longer than the lease, unrenewed). */
  lost: number;
  /** Waits that gave up (answered 503). */
  gaveUp: number;
}

/** Takes leases. */
export interface Leases {
  /**
   * Whether other processes share the store, so that an object may appear there while this one waits or fills: when
   * false there is nothing to wait for or look again for, and callers skip the lease and the second look.
   */
  readonly shared: boolean;
  /**
   * Takes the lease on `key`, waiting while another process holds it. Resolves with the lease, or with undefined as
   * soon as `appeared` says the object is there (the holder filled it). Throws {@linkcode Unavailable} when the wait
   * exceeds its bound or the store cannot be reached.
   */
  acquire(key: string, appeared: () => Promise<boolean>): Promise<Lease | undefined>;
  /** What the keeper has done since it started. */
  stats(): LeaseStats;
}

/** Leases for a store one process has to itself: always taken at once. */
export const soloLeases: Leases = {
  shared: false,
  acquire: () => Promise.resolve({ release: () => Promise.resolve() }),
  stats: () => ({ taken: 0, waited: 0, served: 0, takenOver: 0, lost: 0, gaveUp: 0 }),
};

/** The error a wait that gave up throws. */
export class LeaseWaitTooLong extends Unavailable {}
