/**
 * How the halves of one install written by several replicas become one install. Behind a round-robin load balancer
 * a device's manifest may be answered by one replica and its files by others: the replica that answered the manifest
 * writes the install (what the manifest lists, what it served itself), the others write each file they served
 * outside any install they had open as a loose request. Whichever half reaches the database second, the merge
 * places each loose file in the install of the same site and device that lists it, started before it and still open
 * (the file came within `audit.window` of the install's newest request), newest first, as one process would have;
 * an install's status is then worked out from everything its halves served, and the files the device had before.
 * Pure functions: the engine runs them inside one transaction under one lock.
 * @module
 */
import { type InstallStatus, STATUS, STATUS_CODE, statusOf } from "../records.ts";

/** How far a loose file's time may be before its install's start (replicas' clocks, the settle span), ms. */
export const CLOCK_SKEW_MS = 2_000;
/** How long an install is looked at for loose files and for its status after its start, ms. */
export const HORIZON_MS = 15 * 60_000;

/** An install as the merge reads and changes it. */
export interface MergeInstall {
  id: number;
  device: string;
  listed: string[];
  own_served: string[];
  extra_served: string[];
  unknown: boolean;
  error: string | null;
  started_at: number;
  own_finished: number;
  extra_finished: number;
  extra_bytes: number;
  extra_requests: number;
  status: InstallStatus;
  files_served: number;
}

/** A loose request as the merge reads it. */
export interface MergeLoose {
  id: number;
  device: string;
  file: string;
  at: number;
  last: number;
  count: number;
  bytes: number;
}

/** Reads a status code or name. */
export function statusName(code: unknown): InstallStatus {
  return typeof code === "string" && code in STATUS_CODE ? code as InstallStatus : STATUS[Number(code)] ?? "failed";
}

/**
 * Places loose files in the installs that list them (changing `installs` in place); returns the ids of the loose rows
 * placed and the installs changed. A file placed may keep an install open for the next one, so it goes round until
 * nothing more is placed.
 */
export function claim(
  installs: MergeInstall[],
  loose: MergeLoose[],
  windowMs: number,
): { claimed: number[]; changed: Set<MergeInstall> } {
  const byDevice = new Map<string, MergeInstall[]>();
  for (const i of [...installs].sort((a, b) => a.started_at - b.started_at || a.id - b.id)) {
    const list = byDevice.get(i.device) ?? [];
    list.push(i);
    byDevice.set(i.device, list);
  }
  const listed = new Map<MergeInstall, Set<string>>();
  const served = new Map<MergeInstall, Set<string>>();
  for (const i of installs) {
    listed.set(i, new Set(i.listed));
    served.set(i, new Set([...i.own_served, ...i.extra_served]));
  }
  const left = [...loose].sort((a, b) => a.at - b.at || a.id - b.id);
  const claimed: number[] = [];
  const changed = new Set<MergeInstall>();
  let placed = true;
  while (placed && left.length > 0) {
    placed = false;
    for (let k = 0; k < left.length; k++) {
      const l = left[k];
      const list = byDevice.get(l.device);
      if (!list) continue;
      let target: MergeInstall | undefined;
      for (let j = list.length - 1; j >= 0; j--) {
        const i = list[j];
        if (i.started_at > l.at + CLOCK_SKEW_MS || !listed.get(i)!.has(l.file)) continue;
        const newest = Math.max(i.started_at, i.own_finished, i.extra_finished);
        if (l.at > newest + windowMs) continue;
        if (!served.get(i)!.has(l.file)) {
          target = i;
          break;
        }
        target ??= i;
      }
      if (!target) continue;
      if (!served.get(target)!.has(l.file)) {
        served.get(target)!.add(l.file);
        target.extra_served = [...target.extra_served, l.file];
      }
      target.extra_bytes += l.bytes;
      target.extra_requests += l.count;
      target.extra_finished = Math.max(target.extra_finished, l.last);
      changed.add(target);
      claimed.push(l.id);
      left.splice(k--, 1);
      placed = true;
    }
  }
  return { claimed, changed };
}

/**
 * Works an install's status and files served out again from all it was served and what its device had before
 * (`firstServed(file)`: when the device was first served the file, or undefined); true when either changed.
 */
export function restatus(i: MergeInstall, firstServed: (file: string) => number | undefined): boolean {
  const served = new Set([...i.own_served, ...i.extra_served]);
  const status = statusOf(i, (f) => served.has(f) || (firstServed(f) ?? Infinity) < i.started_at);
  const filesServed = i.listed.filter((f) => served.has(f)).length;
  if (status === i.status && filesServed === i.files_served) return false;
  i.status = status;
  i.files_served = filesServed;
  return true;
}
