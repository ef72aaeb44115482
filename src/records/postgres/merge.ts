/**
 * How the requests of one install that several replicas answered become one install. Behind a round-robin load
 * balancer a device's manifest may be answered by one replica and its files by others, and each replica's batches
 * reach the database on their own time (a second later, or after an outage). So with a shared database no replica
 * places files itself: the replica that answered the manifest writes the install (what the manifest lists), every
 * replica writes each file request it answered as a loose request, and the database places them, as one process
 * would have: a file goes to the newest install of the same site and device that lists it, started before it (within
 * {@linkcode CLOCK_SKEW_MS}) and still open (the file came within `audit.window` of that install's newest request),
 * preferring one it was not served in yet. Whenever a batch touches a device, the placement of its recent requests is
 * worked out again from all that has arrived, so a half that comes late moves a file to the install it belongs to.
 * An install's status then follows from what it was served and what its device had before.
 * Pure functions: the engine runs them inside one transaction under one lock.
 * @module
 */
import { type InstallStatus, STATUS, STATUS_CODE, statusOf } from "../records.ts";

/** How far a file's time may be before its install's start (replicas' clocks, the settle span), ms. */
export const CLOCK_SKEW_MS = 2_000;
/** How long before a batch's earliest request the placement is worked out again, ms. */
export const HORIZON_MS = 15 * 60_000;

/** An install as the merge reads it. */
export interface MergeInstall {
  id: number;
  device: string;
  listed: string[];
  /** Files its own writer placed in it (none when the engine places them). */
  own_served: string[];
  unknown: boolean;
  /** Its own writer's error (a failed manifest). */
  error: string | null;
  started_at: number;
  own_finished: number;
}

/** A loose request as the merge reads it: placed in `install`, or in none (null). */
export interface MergeLoose {
  id: number;
  device: string;
  file: string;
  path: string;
  status: number;
  at: number;
  last: number;
  count: number;
  bytes: number;
  install: number | null;
}

/** What an install adds up to from the requests placed in it. */
export interface Placed {
  extra_served: string[];
  extra_bytes: number;
  extra_requests: number;
  extra_finished: number;
  extra_error: string | null;
  status: InstallStatus;
  files_served: number;
}

/** Reads a status code or name. */
export function statusName(code: unknown): InstallStatus {
  return typeof code === "string" && code in STATUS_CODE ? code as InstallStatus : STATUS[Number(code)] ?? "failed";
}

/**
 * Places `loose` requests in `installs` (those of the same device): each request placed in an install not among
 * `installs` stays where it is; the others are placed again from scratch, in the order they came. Returns, for every
 * request that may move, the install it belongs to (or null).
 */
export function place(installs: MergeInstall[], loose: MergeLoose[], windowMs: number): Map<number, number | null> {
  const ids = new Set(installs.map((i) => i.id));
  const byDevice = new Map<string, MergeInstall[]>();
  for (const i of [...installs].sort((a, b) => a.started_at - b.started_at || a.id - b.id)) {
    const list = byDevice.get(i.device) ?? [];
    list.push(i);
    byDevice.set(i.device, list);
  }
  const listed = new Map(installs.map((i) => [i, new Set(i.listed)]));
  const served = new Map(installs.map((i) => [i, new Set(i.own_served)]));
  const newest = new Map(installs.map((i) => [i, Math.max(i.started_at, i.own_finished)]));
  const out = new Map<number, number | null>();
  for (const l of [...loose].sort((a, b) => a.at - b.at || a.id - b.id)) {
    if (l.install !== null && !ids.has(l.install)) continue;
    let target: MergeInstall | undefined;
    const list = byDevice.get(l.device) ?? [];
    for (let j = list.length - 1; j >= 0; j--) {
      const i = list[j];
      if (i.started_at > l.at + CLOCK_SKEW_MS || !listed.get(i)!.has(l.file)) continue;
      if (l.at > newest.get(i)! + windowMs) continue;
      if (!served.get(i)!.has(l.file)) {
        target = i;
        break;
      }
      target ??= i;
    }
    out.set(l.id, target?.id ?? null);
    if (!target) continue;
    if (l.status < 400) served.get(target)!.add(l.file);
    newest.set(target, Math.max(newest.get(target)!, l.last));
  }
  return out;
}

/**
 * What `install` adds up to from the requests placed in it and the files its device had before it started
 * (`firstServed(file)`: when the device was first served the file, or undefined).
 */
export function summarize(
  install: MergeInstall,
  placed: MergeLoose[],
  firstServed: (file: string) => number | undefined,
): Placed {
  const served = new Set(install.own_served);
  let bytes = 0, requests = 0, finished = 0;
  let error: string | null = null;
  for (const l of [...placed].sort((a, b) => a.at - b.at || a.id - b.id)) {
    bytes += l.bytes;
    requests += l.count;
    finished = Math.max(finished, l.last);
    if (l.status < 400) served.add(l.file);
    else error ??= `${l.status} on ${l.path}`;
  }
  const listed = new Set(install.listed);
  const extra = [...served].filter((f) => listed.has(f) && !install.own_served.includes(f));
  const status = statusOf(
    { unknown: install.unknown, error: install.error ?? error, listed: install.listed },
    (f) => served.has(f) || (firstServed(f) ?? Infinity) < install.started_at,
  );
  return {
    extra_served: extra,
    extra_bytes: bytes,
    extra_requests: requests,
    extra_finished: finished,
    extra_error: error,
    status,
    files_served: install.listed.filter((f) => served.has(f)).length,
  };
}
