/**
 * The install records behind one interface: what the recorder (`fleet/installs.ts`) hands over once a batch, and what
 * the fleet's queries read back. Two engines implement it: `sqlite/` (one file in the cache dir, the default) and
 * `postgres/` (one database shared by replicas and sites, fed through a local outbox so serving never waits on it).
 * @module
 */

/** An install's status: every listed file accounted for, some not (yet), or a failed manifest or file. */
export type InstallStatus = "complete" | "partial" | "failed";

/** One install as stored and queried. */
export interface InstallRow {
  id: number;
  device: string;
  package: string;
  version: string | null;
  mpy: string | null;
  profile: string | null;
  status: InstallStatus;
  files_listed: number;
  files_served: number;
  bytes: number;
  started_at: number;
  finished_at: number;
  error: string | null;
}

/** An install as the queries answer it: with the site whose server recorded it. */
export interface SitedInstall extends InstallRow {
  site: string;
}

/**
 * Successful device requests that are no part of an install (the index, a file no manifest listed): alike requests
 * (same device, method, path, status and cache outcome) within one minute and one batch are one row with their
 * `count` and summed `bytes`.
 */
export interface RequestRow {
  /** The minute they came in (ms since the epoch, a whole minute). */
  time: number;
  device: string;
  method: string;
  path: string;
  status: number;
  cache: string | null;
  count: number;
  bytes: number;
}

/**
 * Failed device requests that are no part of an install, counted per device, minute and status (no path: a
 * scanner's paths are not kept).
 */
export interface TrafficRow {
  /** The minute (ms since the epoch, a whole minute). */
  time: number;
  device: string;
  status: number;
  count: number;
  bytes: number;
}

/** Filters for the installs query. */
export interface InstallQuery {
  device?: string;
  package?: string;
  status?: string;
  /** ms since the epoch: installs started at or after it. */
  since?: number;
  /** Installs recorded by this site's servers only. */
  site?: string;
  limit: number;
}

/** The newest complete install of a package on a device, with the status of the newest attempt. */
export interface DevicePackage {
  site: string;
  device: string;
  package: string;
  version: string | null;
  mpy: string | null;
  profile: string | null;
  installed_at: number | null;
  last_status: string;
  last_attempt_at: number;
}

/** A device the records remember. */
export interface DeviceRow {
  site: string;
  device: string;
  /** The name its site's `devices:` gives it (PostgreSQL keeps it; SQLite leaves it to the config). */
  name: string | null;
  last_seen: number;
}

/** One install as the recorder hands it over: the row, and what the engine needs to place files written elsewhere. */
export interface InstallWrite {
  /** Its `id` is the writer's own number for it; the engine may answer it under another. */
  row: InstallRow;
  /** Device requests that made it here. */
  requests: number;
  /** The file keys its manifest lists. */
  listed: string[];
  /** Those of them this writer served in it. */
  served: string[];
  /** Its manifest's body was not seen: its files cannot be accounted for. */
  unknown: boolean;
}

/**
 * A request for a file (a content file or a mirror path) the recorder did not place in an install: outside any
 * install this writer had open (SQLite keeps it as a request row), or every file request when the engine places them
 * itself ({@linkcode Records.placesFiles} false: replicas share the database, and the manifest may be another's).
 */
export interface LooseRequest extends RequestRow {
  file: string;
  /** When the first and the last of them came (ms). */
  at: number;
  last: number;
}

/** What one batch of the recorder holds: written together, or not at all. */
export interface Batch {
  installs: InstallWrite[];
  traffic: TrafficRow[];
  requests: (RequestRow | LooseRequest)[];
  /** Files served to devices (`file:<hash>` or a mirror path), when. */
  files: { device: string; file: string; time: number }[];
  /** Devices seen, with the time of their newest request. */
  seen: { device: string; time: number }[];
  /** Device requests the batch stands for (counted as unwritten when it cannot be kept). */
  requestCount: number;
}

/** Tells whether a request row carries the file it served (a {@linkcode LooseRequest}). */
export function isLoose(r: RequestRow | LooseRequest): r is LooseRequest {
  return typeof (r as LooseRequest).file === "string";
}

/** An empty batch. */
export function emptyBatch(): Batch {
  return { installs: [], traffic: [], requests: [], files: [], seen: [], requestCount: 0 };
}

/** What was removed to stay within the bounds. */
export interface Enforced {
  /** Rows deleted before their retention because of the size or row bound. */
  rows: number;
  /** Devices forgotten because of `audit.max_devices`. */
  devices: number;
}

/** The shared database's state, for `/healthz`, `/metrics` and the status page (PostgreSQL only). */
export interface DatabaseFigures {
  /** `ok` when the last attempt to send succeeded; else why it failed (`unreachable`, `auth`, `timeout`, ...). */
  state: string;
  /** The last failure's message (no password: the driver's messages name the user and host at most). */
  error: string | null;
  /** Batches waiting in the local outbox, the device requests they stand for, and the outbox's size. */
  waiting_batches: number;
  waiting_requests: number;
  /** How long the oldest waiting batch has waited (ms; 0 when none waits). */
  oldest_waiting_ms: number;
  /** Batches sent since start. */
  sent_batches: number;
  /**
   * Device requests in batches the outbox could not keep (full), or that the database refused three times for what
   * they hold (set aside, so they do not hold up the rest), since start.
   */
  requests_refused: number;
  /** The schema version of the database (null until it was reached). */
  schema: number | null;
}

/** What an engine reports of itself. */
export interface EngineFigures {
  engine: "sqlite" | "postgres";
  /** The local file (SQLite: the records; PostgreSQL: the outbox) and its WAL, in bytes. */
  size_bytes: number;
  /** Its bound (`audit.max_size`). */
  max_bytes: number;
  /** Rows deleted early and devices forgotten to stay within the bounds, since start. */
  rows_dropped: number;
  devices_forgotten: number;
  /** PostgreSQL: the row cap its tables are kept within. */
  max_rows?: number;
  database?: DatabaseFigures;
}

/** The install records' engine. */
export interface Records {
  readonly engine: "sqlite" | "postgres";
  /** The site this server records as. */
  readonly site: string;
  /**
   * Whether the recorder places the files a device fetches in the installs it has open (one process sees every request
   * of an install). False: the engine places them (PostgreSQL, where a replica may have answered the manifest and
   * others the files): the recorder hands over every file request as a {@linkcode LooseRequest}.
   */
  readonly placesFiles: boolean;
  /** The highest install id this writer used: the recorder numbers its installs from the next one. */
  maxInstallId(): number;
  /** Whether `device` was served `file` before, as far as this writer can tell at once (false when it cannot). */
  hasServedFile(device: string, file: string): boolean;
  /**
   * Takes a batch: written at once (SQLite) or kept in the local outbox to be sent in order (PostgreSQL); returns what
   * was removed to stay within the bounds. Throws when the batch cannot be kept; nothing of it is then.
   */
  write(batch: Batch): Enforced;
  /** After `write` threw `e`: recovers when it can (a corrupt file moved aside); true when it did. */
  recover(e: unknown): boolean;
  /** Deletes what is older than `cutoff` (ms); returns the rows deleted at once (PostgreSQL does it when it can). */
  prune(cutoff: number): number;
  /** Waits, at most `timeoutMs`, until what was written can be read back (PostgreSQL: the outbox sent). */
  settle(timeoutMs?: number): Promise<void>;
  installs(q: InstallQuery): Promise<SitedInstall[]>;
  devices(site?: string): Promise<DeviceRow[]>;
  devicePackages(pkg?: string, site?: string): Promise<DevicePackage[]>;
  /** How many device requests the records hold: those of installs, the failed ones counted, and the rest. */
  requestCount(): Promise<number>;
  figures(): EngineFigures;
  close(): Promise<void>;
}

export const STATUS: readonly InstallStatus[] = ["complete", "partial", "failed"];
export const STATUS_CODE: Record<InstallStatus, number> = { complete: 0, partial: 1, failed: 2 };

/** An install's status from what is known of it: a failure wins, then every listed file accounted for. */
export function statusOf(
  i: { unknown: boolean; error: string | null; listed: Iterable<string> },
  accounted: (file: string) => boolean,
): InstallStatus {
  if (i.error !== null && !i.unknown) return "failed";
  if (i.unknown) return "partial";
  for (const f of i.listed) if (!accounted(f)) return "partial";
  return "complete";
}
