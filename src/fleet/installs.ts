/**
 * Install records: every device request on the index routes and the mirrors is recorded, and a manifest fetch and
 * the files it lists, from one device, each within `audit.window` of the one before, make one install.
 *
 * The request path only hands entries over ({@linkcode InstallRecorder.push}: one array push); a timer works through
 * them in batches and hands each batch to the records' engine (`records/`: SQLite, or PostgreSQL through a local
 * outbox), which keeps it whole or not at all. Manifest bodies are taken from the main
 * thread's answers ({@linkcode InstallRecorder.tap}); the edge only repeats answers the main thread gave a moment
 * before, so a manifest the edge repeats has been seen here. The manifest routes name the manifest they answered
 * (`RequestEntry.manifest`); requests without it (the edge's repeats, files, mirrors) are read from their path.
 *
 * What client input can grow is bounded: a request is recorded by its canonical path (no query string, at most
 * {@linkcode MAX_RECORDED_PATH} characters); failed requests are counted per device, minute and status, not kept by
 * path; failed manifests make at most {@linkcode FAILED_INSTALLS_PER_MINUTE} installs per device and minute; what
 * waits for a batch is bounded by count and bytes ({@linkcode MAX_PENDING}, {@linkcode MAX_PENDING_BYTES}), past
 * which requests are counted, not kept. A batch that cannot be written is counted and logged once per cause; a
 * corrupt file is moved aside.
 * @module
 */
import type { ManifestFacts, RequestEntry } from "../http/request_log.ts";
import type { Shareable } from "../http/responses.ts";
import type { ManifestView } from "../cache/served.ts";
import type { Logger } from "../log.ts";
import { isCorruption } from "../records/sqlite/audit_db.ts";
import {
  type Batch,
  emptyBatch,
  type Enforced,
  type EngineFigures,
  type InstallRow,
  type Records,
} from "../records/records.ts";
import { decodeSegment, MAX_RECORDED_PATH, recordedPath } from "../records/paths.ts";
import { REPO_HOST_ALTERNATIVES, REPO_HOST_NAMES, REPO_HOSTS } from "../packages/sources/registry.ts";
import { readManifest } from "../packages/names.ts";
import type { Stats } from "./stats.ts";

/** What a request means for the install records. */
export type Classified =
  | ({ kind: "manifest" } & ManifestFacts)
  | { kind: "file"; key: string }
  | { kind: "other" };

/** What a manifest lists. */
export interface ManifestInfo {
  version: string | null;
  /** File keys: `file:<hash>` for hashes, the path on this server for mirror urls, else the url as given. */
  files: string[];
}

/** Device routes (the index API and the mirrors), by the first segment of the route pattern. */
const DEVICE_ROUTE = new RegExp(
  `^/(?:t/:profile/)?(?:index\\.json|package|file|repo|${REPO_HOST_ALTERNATIVES}|url)(?:/|$)`,
);

/** Tells whether a route pattern is a device route. */
export function isDeviceRoute(route: string): boolean {
  return DEVICE_ROUTE.test(route);
}

const REPO_HOST_SET = new Set<string>(REPO_HOST_NAMES);

function isRepoHost(segment: string): boolean {
  return REPO_HOST_SET.has(segment);
}

/** The routes of the code hosts' own raw layouts (`/gitlab/:owner/:repo/-/raw/*rest`): a chained server's, not a device's. */
const RAW_LAYOUT_ROUTES = new Set(REPO_HOSTS.flatMap((h) => h.rawRoute ? [`/${h.name}${h.rawRoute}`] : []));

/** Reads what a device request on `route` for `path` is: a manifest (which package), a file (its key), or other. */
export function classify(route: string, path: string): Classified {
  if (RAW_LAYOUT_ROUTES.has(route)) return { kind: "other" };
  const q = path.indexOf("?");
  const pathname = q < 0 ? path : path.slice(0, q);
  let segs = pathname.split("/").slice(1).map(decodeSegment);
  let profile: string | null = null;
  if (route.startsWith("/t/:profile/")) {
    profile = segs[1];
    segs = segs.slice(2);
  }
  // A code host's mirror (`/github/...`, `/codeberg/...`: the registry's hosts) reads as its own case below.
  const first = isRepoHost(segs[0]) ? "host" : segs[0];
  switch (first) {
    case "package":
      return {
        kind: "manifest",
        package: segs[2],
        requested: segs[3].replace(/\.json$/, ""),
        mpy: segs[1],
        profile,
      };
    case "repo": {
      const [, mpy, host, owner, repo, ref, ...rest] = segs;
      const dir = rest.slice(0, -1).join("/");
      return {
        kind: "manifest",
        package: `${host}:${owner}/${repo}${dir ? `/${dir}` : ""}`,
        requested: ref,
        mpy,
        profile,
      };
    }
    case "file":
      return { kind: "file", key: `file:${segs[2]}` };
    case "host": {
      const [host, owner, repo, ref, ...rest] = segs;
      if (rest[rest.length - 1] !== "package.json") return { kind: "file", key: pathname };
      const dir = rest.slice(0, -1).join("/");
      return {
        kind: "manifest",
        package: `${host}:${owner}/${repo}${dir ? `/${dir}` : ""}`,
        requested: ref,
        mpy: null,
        profile: null,
      };
    }
    case "url": {
      const [, scheme, host, ...rest] = segs;
      if (rest[rest.length - 1] !== "package.json") return { kind: "file", key: pathname };
      const dir = rest.slice(0, -1).join("/");
      return {
        kind: "manifest",
        package: `url:${scheme}://${host}${dir ? `/${dir}` : ""}`,
        requested: null,
        mpy: null,
        profile: null,
      };
    }
    default:
      return { kind: "other" };
  }
}

const MIRROR_PATH = new RegExp(`^/(?:${REPO_HOST_ALTERNATIVES}|url)/`);

/**
 * Reads a manifest (`hashes`, `urls`, `version`) into what the install records need: from the view its answer
 * carried, or from its body (parsed once, {@linkcode readManifest}).
 */
export function manifestInfo(manifest: Uint8Array | ManifestView): ManifestInfo | undefined {
  const { doc, hashes } = manifest instanceof Uint8Array ? readManifest(manifest) : manifest;
  if (typeof doc !== "object" || doc === null) return undefined;
  const m = doc as { version?: unknown; urls?: unknown };
  const files = hashes.map((hash) => `file:${hash}`);
  for (const item of Array.isArray(m.urls) ? m.urls : []) {
    if (!Array.isArray(item) || typeof item[1] !== "string") continue;
    const url = item[1];
    let key = url;
    try {
      const u = new URL(url);
      if (MIRROR_PATH.test(u.pathname)) key = u.pathname;
    } catch {
      // A relative or odd url stays as it is; the server never serves it, so it counts as not accounted for.
    }
    files.push(key);
  }
  const version = typeof m.version === "string" && m.version !== "" ? m.version : null;
  return { version, files: [...new Set(files)] };
}

interface OpenInstall {
  row: InstallRow;
  /**
   * What its manifest lists (file keys, {@linkcode ManifestInfo}), for this install alone: a file a device asks for is
   * placed in that device's open install that lists it. Not the server-wide `packages/listed_files.ts` memory, which
   * knows hashes but not devices, installs, `audit.window` or `urls`, and is filled only under the policy, the pins,
   * the lock and the block list.
   */
  listed: Set<string>;
  served: Set<string>;
  earlier: Set<string>;
  /** Listing unknown (the manifest's body was not seen): never complete. */
  unknown: boolean;
  dirty: boolean;
  /** Device requests that made it. */
  requests: number;
  /** The batch it was last put in (an install closed early is put in once, however often it is saved). */
  saved?: Batch;
}

/** What an {@linkcode InstallRecorder} is built from. */
export interface InstallRecorderOptions {
  /** null: nothing is written (audit.enabled false); the status page figures are still counted. */
  records: Records | null;
  stats: Stats;
  logger: Logger;
  /** `audit.window` in ms. */
  windowMs: number;
  /** `audit.retention` in ms. */
  retentionMs: number;
  now?: () => number;
  /** How often a batch is written (ms, default 1000). */
  batchMs?: number;
}

/** What the records hold and what they left out, for `/healthz`, `/metrics` and the status page. */
export interface RecordFigures extends Partial<Pick<EngineFigures, "engine" | "max_rows" | "database">> {
  /** The records' local file (SQLite: the records; PostgreSQL: the outbox) and its WAL, in bytes (0 without). */
  size_bytes: number;
  /** `audit.max_size` as honoured (null without records). */
  max_bytes: number | null;
  /** Rows deleted before their retention to stay within `audit.max_size` (or the row cap), since start. */
  rows_dropped: number;
  /** Devices forgotten to stay within `audit.max_devices`, since start. */
  devices_forgotten: number;
  /** Requests counted but not kept for a batch (too many waiting at once), since start. */
  requests_not_kept: number;
  /** Requests in batches that could not be written (full or read-only disk, corrupt file), since start. */
  requests_unwritten: number;
  /** Why the last batch could not be written, or null when it was. */
  write_error: string | null;
}

/** Records waiting for the next batch at most; past it requests are counted, not kept (failed ones at half of it). */
export const MAX_PENDING = 50_000;
/** Bytes the records waiting for the next batch hold at most (estimated from their strings); as above. */
export const MAX_PENDING_BYTES = 16 * 1024 * 1024;
/** Installs a device's failed manifest requests make per minute at most; the rest are counted as requests only. */
export const FAILED_INSTALLS_PER_MINUTE = 10;
/** Manifests remembered for requests the edge repeated. */
const MANIFESTS_KEPT = 1024;
/** Installs open at once, at most; the oldest is closed beyond it. */
const MAX_OPEN = 10_000;
/** Remembered classifications and written (device, file) pairs, each at most; they start afresh beyond. */
const MEMO_KEPT = 4096;
const PRUNE_EVERY_MS = 60_000;
/** The least time between two warnings that requests were not kept, or that rows were deleted early. */
const WARN_EVERY_MS = 60_000;
/** How long a request waits before the timer's batch takes it (ms). */
export const SETTLE_MS = 200;
/** Bytes counted per waiting record besides its strings. */
const RECORD_OVERHEAD = 160;

/** The bytes a waiting record is counted for against {@linkcode MAX_PENDING_BYTES}: its key and path, and the rest. */
function recordBytes(key: string, path: string): number {
  return RECORD_OVERHEAD + 2 * (key.length + path.length);
}

/** Requests that are alike within a batch, taken together. */
interface Alike {
  entry: RequestEntry;
  path: string;
  minute: number;
  count: number;
  bytes: number;
  /** When the last of them came. */
  last: number;
}

/** Requests alike (device, path, method, status, cache outcome) that came in one {@linkcode SETTLE_MS} span. */
interface Pending {
  /** The earliest of them. */
  entry: RequestEntry;
  /** Its {@linkcode recordedPath}. */
  path: string;
  /** The span: arrival time divided by SETTLE_MS, rounded down. */
  span: number;
  count: number;
  bytes: number;
  /** When the last of them came. */
  last: number;
}

/** Orders requests by arrival; at the same millisecond a manifest comes before files. */
function byArrival(a: RequestEntry, b: RequestEntry): number {
  return (a.time as number) - (b.time as number) || rank(a.route) - rank(b.route);
}

function rank(route: string): number {
  return route.includes("package") ? 0 : 1;
}

/** A short name for why a write failed, so each cause is logged once. */
function causeOf(e: unknown): string {
  const message = String((e as Error)?.message ?? e);
  if (isCorruption(e)) return "corrupt";
  if (/full/i.test(message)) return "full";
  if (/readonly|read-only|read only/i.test(message)) return "read-only";
  if (/locked|busy/i.test(message)) return "busy";
  return "other";
}

/** Groups device requests into installs and writes them, in batches, to the {@linkcode AuditDb}. */
export class InstallRecorder {
  #o: InstallRecorderOptions;
  #now: () => number;
  /** Requests waiting for a batch, alike ones of the same {@linkcode SETTLE_MS} span taken together as they come. */
  #pending = new Map<string, Pending>();
  #pendingBytes = 0;
  #pendingErrors = 0;
  #pendingErrorBytes = 0;
  /** The record the last request was counted on, while it waits in `#pending`. */
  #last: Pending | undefined;
  #notKept = 0;
  #notKeptSinceWarning = 0;
  #lastWarning = -Infinity;
  /** Rows deleted early since the last warning about it, and when that was. */
  #droppedSinceWarning = 0;
  #lastDropWarning = -Infinity;
  /** By recorded path: what its answer said (not read yet), what it lists, or the copy of a body being read. */
  #manifests = new Map<string, Uint8Array | ManifestView | ManifestInfo | Promise<ManifestInfo | undefined>>();
  #open = new Map<string, OpenInstall[]>();
  #openCount = 0;
  #nextId: number;
  #timer: ReturnType<typeof setInterval> | undefined;
  #lastPrune = 0;
  #flushing: Promise<void> = Promise.resolve();
  #filesWritten = new Map<string, number>();
  #classified = new Map<string, Classified>();
  /** Failed manifests made into installs per device in the current minute. */
  #failedInstalls = new Map<string, number>();
  #failedMinute = 0;
  #unwritten = 0;
  #writeError: string | null = null;
  /** The batch being made: what it holds is what the grouping must see before it is written. */
  #batch: Batch = emptyBatch();
  /** Files served to devices in the batch being made (`device file`). */
  #batchFiles = new Set<string>();

  constructor(options: InstallRecorderOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
    this.#nextId = (options.records?.maxInstallId() ?? 0) + 1;
  }

  /** Starts the batch timer (old rows were pruned when the recorder was made; the batches prune every minute). */
  start(): void {
    this.#timer ??= setInterval(() => this.flush(false).catch(() => {}), this.#o.batchMs ?? 1000);
  }

  /**
   * Takes one served request (on the request path: a count). Requests alike in all the batch looks at (device, path,
   * method, status, cache outcome) and arriving in the same {@linkcode SETTLE_MS} span are counted on the first
   * one's record, so a busy device holds one record per path and span, not one per request.
   */
  push = (entry: RequestEntry): void => {
    // Another mipserver's fetch (a site gateway's) is traffic, not a device installing.
    if (entry.peer) return this.#o.stats.add(entry);
    const time = entry.time as number;
    const span = Math.floor(time / SETTLE_MS);
    // A request alike the one before (a device retrying, a load test) is counted without making its key.
    const last = this.#last;
    if (
      last !== undefined && last.span === span && last.entry.client === entry.client &&
      last.entry.path === entry.path && last.entry.method === entry.method && last.entry.status === entry.status &&
      last.entry.cache === entry.cache
    ) return this.#countOn(last, entry);
    const path = recordedPath(entry.path);
    const key = `${span} ${entry.client} ${entry.method} ${entry.status} ${entry.cache} ${path}`;
    const alike = this.#pending.get(key);
    if (alike !== undefined) return this.#countOn(alike, entry);
    const bytes = recordBytes(key, path);
    // Failed requests (a scanner's, a flood's) may fill half of what waits, so they cannot crowd out installs.
    const failed = entry.status >= 400;
    if (
      this.#pending.size >= MAX_PENDING || this.#pendingBytes + bytes > MAX_PENDING_BYTES ||
      (failed &&
        (this.#pendingErrors >= MAX_PENDING / 2 || this.#pendingErrorBytes + bytes > MAX_PENDING_BYTES / 2))
    ) {
      this.#notKept++;
      this.#notKeptSinceWarning++;
      this.#o.stats.add(entry);
      return;
    }
    const pending = { entry, path, span, count: 1, bytes: entry.bytes, last: time };
    this.#pending.set(key, pending);
    this.#pendingBytes += bytes;
    if (failed) (this.#pendingErrors++, this.#pendingErrorBytes += bytes);
    this.#last = pending;
  };

  /** Counts `entry` on the record of the requests alike it. */
  #countOn(alike: Pending, entry: RequestEntry): void {
    const time = entry.time as number;
    this.#last = alike;
    alike.count++;
    alike.bytes += entry.bytes;
    if (time > alike.last) alike.last = time;
    // Worker threads hand requests over late: the earliest one stands for them all.
    if (time < (alike.entry.time as number)) alike.entry = entry;
  }

  /** Records waiting for a batch: one per device, path and outcome in each {@linkcode SETTLE_MS} span. */
  get waiting(): number {
    return this.#pending.size;
  }

  /** Bytes the records waiting for a batch hold, as estimated against {@linkcode MAX_PENDING_BYTES}. */
  get waitingBytes(): number {
    return this.#pendingBytes;
  }

  /** Entries held in memory between batches besides those waiting: manifests, open installs and memos. */
  get held(): { manifests: number; open: number; classified: number; filesWritten: number; failedInstalls: number } {
    return {
      manifests: this.#manifests.size,
      open: this.#openCount,
      classified: this.#classified.size,
      filesWritten: this.#filesWritten.size,
      failedInstalls: this.#failedInstalls.size,
    };
  }

  /** What the records hold and left out (the size as of the last batch). */
  figures(): RecordFigures {
    const engine = this.#o.records?.figures();
    return {
      ...(engine ? { engine: engine.engine } : {}),
      size_bytes: engine?.size_bytes ?? 0,
      max_bytes: engine?.max_bytes ?? null,
      ...(engine?.max_rows !== undefined ? { max_rows: engine.max_rows } : {}),
      rows_dropped: engine?.rows_dropped ?? 0,
      devices_forgotten: engine?.devices_forgotten ?? 0,
      requests_not_kept: this.#notKept,
      requests_unwritten: this.#unwritten,
      write_error: this.#writeError,
      ...(engine?.database ? { database: engine.database } : {}),
    };
  }

  /** Hears the main thread's answers: keeps manifest bodies and the reasons of errors. */
  tap = (entry: RequestEntry, response: Response, answer: Shareable | undefined): void => {
    if (entry.status >= 400) {
      const reasonOf = response.bodyUsed || response.body === null
        ? Promise.resolve("")
        : response.clone().text().catch(() => "");
      reasonOf.then((reason) =>
        this.#o.stats.addError({
          time: entry.time as number,
          client: entry.client,
          method: entry.method,
          path: recordedPath(entry.path),
          status: entry.status,
          reason: reason.trim(),
        })
      );
      return;
    }
    if (
      this.#o.records === null || entry.peer || entry.status !== 200 || entry.method !== "GET" ||
      !mayBeManifest(entry.route)
    ) return;
    const key = recordedPath(entry.path);
    if (this.#classifyEntry(entry, key).kind !== "manifest") return;
    // Kept as what the answer carried: the manifest as the resolver read it, else the bytes the route sent (read
    // later, off the request path, see readManifest); or as the promise of a copy of the body for an answer that was
    // not a cached object.
    const info = answer
      ? answer.manifest ?? answer.body
      : response.clone().arrayBuffer().then((b) => manifestInfo(new Uint8Array(b)), () => undefined);
    this.#manifests.delete(key);
    if (info !== undefined) this.#manifests.set(key, info);
    if (this.#manifests.size > MANIFESTS_KEPT) this.#manifests.delete(this.#manifests.keys().next().value!);
  };

  /**
   * Works through the requests waiting: counts them, groups them into installs and writes the batch. The timer leaves
   * the newest {@linkcode SETTLE_MS} for the next batch, since worker threads hand their requests over up to 20 ms late
   * (a file must not be placed before the manifest that lists it); `all` takes everything (after a gather).
   */
  flush(all = true): Promise<void> {
    // One batch at a time: a caller that flushes to read the records waits for a batch already under way.
    const run = this.#flushing.then(() => this.#flushNow(all));
    this.#flushing = run.catch(() => {});
    return run;
  }

  async #flushNow(all: boolean): Promise<void> {
    const now = this.#now();
    // The spans wholly older than SETTLE_MS go (all of them for `all`); the rest wait for the next batch.
    const batch: Pending[] = [];
    for (const [key, pending] of this.#pending) {
      if (!all && (pending.span + 1) * SETTLE_MS > now - SETTLE_MS) continue;
      batch.push(pending);
      this.#pending.delete(key);
      if (pending === this.#last) this.#last = undefined;
    }
    if (this.#pending.size === 0) this.#pendingBytes = this.#pendingErrors = this.#pendingErrorBytes = 0;
    else this.#recount();
    batch.sort((a, b) => byArrival(a.entry, b.entry));
    // Manifest bodies still being read are awaited first, so their installs know what they list.
    const waiting = [...this.#manifests.entries()].filter(([, v]) => v instanceof Promise);
    for (const [key, promise] of waiting) {
      const info = await promise;
      if (this.#manifests.get(key) === promise) {
        if (info) this.#manifests.set(key, info);
        else this.#manifests.delete(key);
      }
    }
    // Alike requests (same minute, device, method, status, cache outcome and path; for manifests and files, the same
    // span) are taken together, in the order the first of them came: one grouping step and one row for all of them.
    const alike = new Map<string, Alike>();
    for (const pending of batch) {
      const entry = pending.entry;
      const time = entry.time as number;
      const minute = time - (time % 60_000);
      // Most requests are keyed by device and path alone; the rest of what makes them alike is compared. A manifest
      // or file fetched again in another span is apart: a device installing again a moment later (or files that go
      // to that install) is not the same install.
      let key = entry.client + " " + pending.path;
      if (
        entry.method === "GET" && isDeviceRoute(entry.route) &&
        this.#classifyEntry(entry, pending.path).kind !== "other"
      ) key += ` ${pending.span}`;
      let a = alike.get(key);
      if (
        a !== undefined &&
        (a.minute !== minute || a.entry.status !== entry.status || a.entry.method !== entry.method ||
          a.entry.cache !== entry.cache)
      ) {
        key = `${key} ${minute} ${entry.method} ${entry.status} ${entry.cache}`;
        a = alike.get(key);
      }
      if (a !== undefined) {
        a.count += pending.count;
        a.bytes += pending.bytes;
        a.last = Math.max(a.last, pending.last);
      } else {
        alike.set(key, {
          entry,
          path: pending.path,
          minute,
          count: pending.count,
          bytes: pending.bytes,
          last: pending.last,
        });
      }
    }
    for (const a of alike.values()) this.#o.stats.add(a.entry, a.count);
    if (this.#notKeptSinceWarning > 0 && now - this.#lastWarning >= WARN_EVERY_MS) {
      this.#o.logger.warn("Install records fell behind; requests were counted but not kept", {
        requests: this.#notKeptSinceWarning,
        max_waiting: MAX_PENDING,
      });
      this.#notKeptSinceWarning = 0;
      this.#lastWarning = now;
    }
    const records = this.#o.records;
    if (records === null) return;
    let requests = 0;
    for (const a of alike.values()) if (isDeviceRoute(a.entry.route)) requests += a.count;
    let enforced: Enforced | undefined;
    const out = this.#batch = emptyBatch();
    this.#batchFiles.clear();
    try {
      const seen = new Map<string, number>();
      for (const a of alike.values()) {
        const entry = a.entry;
        if (!isDeviceRoute(entry.route)) continue;
        const time = entry.time as number;
        const device = entry.client;
        if ((seen.get(device) ?? 0) < a.last) seen.set(device, a.last);
        const installId = entry.method === "GET"
          ? this.#group(records, entry, a.path, time, a.bytes, a.last, a.count)
          : null;
        // Requests of an install are in the install; failed ones outside installs are counted without their path.
        if (installId !== null) continue;
        // A file request not placed here: the engine may place it in an install another replica holds.
        const c = entry.method === "GET" ? this.#classifyEntry(entry, a.path) : undefined;
        const loose = c?.kind === "file" && (entry.status < 400 || !records.placesFiles);
        if (entry.status >= 400 && !loose) {
          out.traffic.push({ time: a.minute, device, status: entry.status, count: a.count, bytes: a.bytes });
          continue;
        }
        const row = {
          time: a.minute,
          device,
          method: entry.method,
          path: a.path,
          status: entry.status,
          cache: entry.cache ?? null,
          count: a.count,
          bytes: a.bytes,
        };
        out.requests.push(loose && c?.kind === "file" ? { ...row, file: c.key, at: time, last: a.last } : row);
      }
      for (const [device, time] of seen) out.seen.push({ device, time });
      this.#closeExpired(now);
      for (const list of this.#open.values()) {
        for (const open of list) this.#save(open);
      }
      out.requestCount = requests;
      enforced = records.write(out);
      for (const list of this.#open.values()) for (const open of list) open.dirty = false;
      this.#written();
    } catch (e) {
      this.#failed(records, e, requests);
    } finally {
      this.#batch = emptyBatch();
      this.#batchFiles.clear();
    }
    if (enforced) {
      this.#droppedSinceWarning += enforced.rows;
      if (this.#droppedSinceWarning > 0 && now - this.#lastDropWarning >= WARN_EVERY_MS) {
        this.#o.logger.warn("Install records reached audit.max_size; the oldest rows were deleted early", {
          rows: this.#droppedSinceWarning,
          max_size: records.figures().max_bytes,
        });
        this.#droppedSinceWarning = 0;
        this.#lastDropWarning = now;
      }
    }
    if (now - this.#lastPrune >= PRUNE_EVERY_MS) this.prune();
  }

  /** Sums what is still waiting, after a batch took part of it. */
  #recount(): void {
    this.#pendingBytes = this.#pendingErrors = this.#pendingErrorBytes = 0;
    for (const [key, p] of this.#pending) {
      const bytes = recordBytes(key, p.path);
      this.#pendingBytes += bytes;
      if (p.entry.status >= 400) (this.#pendingErrors++, this.#pendingErrorBytes += bytes);
    }
  }

  /** A batch was written: a failure before it is over. */
  #written(): void {
    if (this.#writeError === null) return;
    this.#o.logger.info("Install records are written again", { requests_unwritten: this.#unwritten });
    this.#writeError = null;
  }

  /**
   * A batch could not be written: its requests are counted as unwritten, its installs written with the next batch,
   * and the cause logged once; a corrupt file is moved aside and a new one started.
   */
  #failed(records: Records, e: unknown, requests: number): void {
    this.#unwritten += requests;
    for (const list of this.#open.values()) for (const open of list) open.dirty = true;
    this.#filesWritten.clear();
    const cause = causeOf(e);
    const message = (e as Error)?.message ?? String(e);
    if (cause !== this.#writeError) {
      this.#o.logger.error("Cannot write install records; devices are served all the same", { cause, error: message });
    }
    this.#writeError = cause;
    if (cause !== "corrupt") return;
    try {
      if (records.recover(e)) this.#writeError = null;
    } catch (err) {
      this.#o.logger.error("Cannot move corrupt install records aside", { error: (err as Error).message });
    }
  }

  /** Deletes records older than `audit.retention`. */
  prune(): void {
    const records = this.#o.records;
    if (records === null) return;
    const now = this.#now();
    this.#lastPrune = now;
    try {
      const deleted = records.prune(now - this.#o.retentionMs);
      if (deleted > 0) this.#o.logger.info("Pruned old install records", { rows: deleted });
    } catch (e) {
      this.#o.logger.error("Cannot prune install records", { error: (e as Error).message });
    }
  }

  /** Writes what is waiting and stops the timer. */
  async stop(): Promise<void> {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.flush();
  }

  /** Places one GET in an install; returns the install's id, or null when it belongs to none. */
  #group(
    records: Records,
    entry: RequestEntry,
    path: string,
    time: number,
    bytes: number,
    last: number,
    count: number,
  ): number | null {
    const c = this.#classifyEntry(entry, path);
    const device = entry.client;
    if (c.kind === "manifest") {
      const failed = entry.status >= 400;
      if (failed && !this.#mayFail(device, time)) return null;
      let cached = this.#manifests.get(path);
      if (cached instanceof Uint8Array || (cached !== undefined && "doc" in cached)) {
        cached = manifestInfo(cached);
        if (cached) this.#manifests.set(path, cached);
        else this.#manifests.delete(path);
      }
      const info = failed || cached instanceof Promise ? undefined : cached;
      const version = info?.version ?? (c.requested !== null && c.requested !== "latest" ? c.requested : null);
      const open: OpenInstall = {
        row: {
          id: this.#nextId++,
          device,
          package: c.package,
          version: c.package.includes(":") && c.requested !== null ? c.requested : version,
          mpy: c.mpy,
          profile: c.profile,
          status: "partial",
          files_listed: info?.files.length ?? 0,
          files_served: 0,
          bytes,
          started_at: time,
          finished_at: last,
          error: failed ? `${entry.status} on ${path}` : null,
        },
        listed: new Set(info?.files ?? []),
        served: new Set(),
        earlier: new Set(),
        unknown: !failed && info === undefined,
        dirty: true,
        requests: count,
      };
      if (open.unknown) open.row.error = "manifest body not seen: files cannot be accounted for";
      for (const file of open.listed) {
        if (this.#batchFiles.has(`${device} ${file}`) || records.hasServedFile(device, file)) open.earlier.add(file);
      }
      const list = this.#open.get(device) ?? [];
      list.push(open);
      this.#open.set(device, list);
      if (++this.#openCount > MAX_OPEN) this.#closeOldest();
      this.#status(open);
      return open.row.id;
    }
    if (c.kind !== "file") return null;
    const ok = entry.status < 400;
    if (ok) this.#servedFile(device, c.key, time);
    // The engine places files itself (replicas share it): none is placed here.
    if (!records.placesFiles) return null;
    const list = this.#open.get(device);
    if (!list) return null;
    let target: OpenInstall | undefined;
    for (let i = list.length - 1; i >= 0; i--) {
      const open = list[i];
      if (!open.listed.has(c.key)) continue;
      if (!open.served.has(c.key)) {
        target = open;
        break;
      }
      target ??= open;
    }
    if (!target) return null;
    if (ok) target.served.add(c.key);
    else target.row.error ??= `${entry.status} on ${path}`;
    if (!ok) target.row.status = "failed";
    target.row.bytes += bytes;
    target.requests += count;
    target.row.files_served = target.served.size;
    target.row.finished_at = Math.max(target.row.finished_at, last);
    target.dirty = true;
    this.#status(target);
    return target.row.id;
  }

  /** Tells whether a failed manifest from `device` may still make an install this minute. */
  #mayFail(device: string, time: number): boolean {
    const minute = Math.floor(time / 60_000);
    if (minute !== this.#failedMinute || this.#failedInstalls.size >= MEMO_KEPT) {
      this.#failedMinute = minute;
      this.#failedInstalls.clear();
    }
    const n = this.#failedInstalls.get(device) ?? 0;
    if (n >= FAILED_INSTALLS_PER_MINUTE) return false;
    this.#failedInstalls.set(device, n + 1);
    return true;
  }

  /** Notes a served file, writing it at most once a minute per device and file (a busy device repeats files). */
  #servedFile(device: string, key: string, time: number): void {
    const id = `${device} ${key}`;
    this.#batchFiles.add(id);
    const written = this.#filesWritten.get(id);
    if (written !== undefined && time - written < 60_000 && time >= written) return;
    if (this.#filesWritten.size >= MEMO_KEPT) this.#filesWritten.clear();
    this.#filesWritten.set(id, time);
    this.#batch.files.push({ device, file: key, time });
  }

  /**
   * What `entry` asked for: the manifest its route named (`entry.manifest`), else {@linkcode classify} of its recorded
   * `path` (answers the edge repeated, files, mirrors). A path cut to {@linkcode MAX_RECORDED_PATH} is read back from
   * what was recorded, as it always was.
   */
  #classifyEntry(entry: RequestEntry, path: string): Classified {
    const facts = entry.manifest;
    if (facts !== undefined && !(path.length === MAX_RECORDED_PATH && path.endsWith("..."))) {
      return { kind: "manifest", ...facts };
    }
    return this.#classify(entry.route, path);
  }

  /** {@linkcode classify}, remembered for recent route and path pairs (devices ask for the same paths). */
  #classify(route: string, path: string): Classified {
    const id = `${route} ${path}`;
    let c = this.#classified.get(id);
    if (c === undefined) {
      c = classify(route, path);
      if (this.#classified.size >= MEMO_KEPT) this.#classified.clear();
      this.#classified.set(id, c);
    }
    return c;
  }

  #status(open: OpenInstall): void {
    const row = open.row;
    if (row.error !== null && !open.unknown) {
      row.status = "failed";
      return;
    }
    const accounted = !open.unknown && [...open.listed].every((f) => open.served.has(f) || open.earlier.has(f));
    row.status = accounted ? "complete" : "partial";
  }

  /** Puts an install changed since the last batch in the batch being made (marked written once it is). */
  #save(open: OpenInstall): void {
    if (!open.dirty || open.saved === this.#batch) return;
    open.saved = this.#batch;
    this.#batch.installs.push({
      row: { ...open.row },
      requests: open.requests,
      listed: [...open.listed],
      served: [...open.served],
      unknown: open.unknown,
    });
  }

  #closeExpired(now: number): void {
    for (const [device, list] of this.#open) {
      const kept = list.filter((open) => {
        const expired = now - open.row.finished_at > this.#o.windowMs;
        if (expired && open.dirty) this.#save(open);
        return !expired;
      });
      this.#openCount -= list.length - kept.length;
      if (kept.length) this.#open.set(device, kept);
      else this.#open.delete(device);
    }
  }

  #closeOldest(): void {
    let oldest: { device: string; index: number; at: number } | undefined;
    for (const [device, list] of this.#open) {
      list.forEach((open, index) => {
        if (!oldest || open.row.finished_at < oldest.at) oldest = { device, index, at: open.row.finished_at };
      });
    }
    if (!oldest) return;
    const list = this.#open.get(oldest.device)!;
    this.#save(list[oldest.index]);
    list.splice(oldest.index, 1);
    if (list.length === 0) this.#open.delete(oldest.device);
    this.#openCount--;
  }
}

/** Route patterns that can answer a manifest (mirror routes answer files too; the path tells). */
const MANIFEST_ROUTE = new RegExp(`/package/|/repo/|^/(?:${REPO_HOST_ALTERNATIVES}|url)/`);

function mayBeManifest(route: string): boolean {
  return MANIFEST_ROUTE.test(route) && !RAW_LAYOUT_ROUTES.has(route);
}
