/**
 * The install records' database: SQLite through `node:sqlite` (built into Deno), one file in the cache dir, in WAL
 * mode, so a crash loses at most the batch that was being written and never leaves a broken file.
 * @module
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";

/** One install as stored and queried. */
export interface InstallRow {
  id: number;
  device: string;
  package: string;
  version: string | null;
  mpy: string | null;
  profile: string | null;
  status: "complete" | "partial" | "failed";
  files_listed: number;
  files_served: number;
  bytes: number;
  started_at: number;
  finished_at: number;
  error: string | null;
}

/**
 * Recorded device requests: alike requests (same device, method, path, status, cache outcome and install) within one
 * minute and one batch are one row with their `count` and summed `bytes`, so a busy gateway writes few rows.
 */
export interface RequestRow {
  /** The minute they came in (ms since the epoch, a whole minute). */
  time: number;
  device: string;
  method: string;
  path: string;
  status: number;
  cache: string | null;
  install_id: number | null;
  count: number;
  bytes: number;
}

/** Filters for {@linkcode AuditDb.installs}. */
export interface InstallQuery {
  device?: string;
  package?: string;
  status?: string;
  /** ms since the epoch: installs started at or after it. */
  since?: number;
  limit: number;
}

/** The newest complete install of a package on a device, with the status of the newest attempt. */
export interface DevicePackage {
  device: string;
  package: string;
  version: string | null;
  mpy: string | null;
  profile: string | null;
  installed_at: number | null;
  last_status: string;
  last_attempt_at: number;
}

const SCHEMA = `
create table if not exists installs (
  id integer primary key,
  device text not null,
  package text not null,
  version text,
  mpy text,
  profile text,
  status text not null,
  files_listed integer not null,
  files_served integer not null,
  bytes integer not null,
  started_at integer not null,
  finished_at integer not null,
  error text
);
create index if not exists installs_started on installs (started_at);
create index if not exists installs_device on installs (device, package, finished_at);
create index if not exists installs_package on installs (package, started_at);
create table if not exists requests (
  time integer not null,
  device text not null,
  method text not null,
  path text not null,
  status integer not null,
  cache text,
  install_id integer,
  count integer not null,
  bytes integer not null
);
create index if not exists requests_time on requests (time);
create table if not exists device_files (
  device text not null,
  file text not null,
  time integer not null,
  primary key (device, file)
) without rowid;
create index if not exists device_files_time on device_files (time);
create table if not exists devices (
  device text primary key,
  last_seen integer not null
) without rowid;
`;

/** The database behind the install records. Synchronous: callers batch their writes into one transaction. */
export class AuditDb {
  readonly path: string;
  #db: DatabaseSync;
  #s: Record<string, StatementSync>;

  /** Opens (creating if needed) the database at `path` (`:memory:` for tests). */
  constructor(path: string) {
    this.path = path;
    this.#db = new DatabaseSync(path);
    this.#db.exec("pragma journal_mode = wal; pragma synchronous = normal; pragma busy_timeout = 5000;");
    this.#db.exec(SCHEMA);
    const p = (sql: string) => this.#db.prepare(sql);
    this.#s = {
      request: p(
        `insert into requests (time, device, method, path, status, cache, install_id, count, bytes)
         values (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      install: p(
        `insert into installs (id, device, package, version, mpy, profile, status, files_listed, files_served, bytes,
           started_at, finished_at, error) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         on conflict (id) do update set version = excluded.version, status = excluded.status,
           files_listed = excluded.files_listed, files_served = excluded.files_served, bytes = excluded.bytes,
           finished_at = excluded.finished_at, error = excluded.error`,
      ),
      servedFile: p(
        "insert into device_files (device, file, time) values (?, ?, ?) on conflict do update set time = excluded.time",
      ),
      hasFile: p("select 1 as x from device_files where device = ? and file = ?"),
      seen: p(
        "insert into devices (device, last_seen) values (?, ?) on conflict do update set last_seen = max(last_seen, excluded.last_seen)",
      ),
      maxId: p("select coalesce(max(id), 0) as id from installs"),
    };
  }

  /** Runs `fn` in one transaction (committed together, or not at all). */
  transaction(fn: () => void): void {
    this.#db.exec("begin");
    try {
      fn();
      this.#db.exec("commit");
    } catch (e) {
      this.#db.exec("rollback");
      throw e;
    }
  }

  /** The highest install id used so far. */
  maxInstallId(): number {
    return Number((this.#s.maxId.get() as { id: number }).id);
  }

  /** Records alike device requests. */
  addRequests(r: RequestRow): void {
    this.#s.request.run(r.time, r.device, r.method, r.path, r.status, r.cache, r.install_id, r.count, r.bytes);
  }

  /** Writes an install (inserted, or updated by id). */
  saveInstall(i: InstallRow): void {
    this.#s.install.run(
      i.id,
      i.device,
      i.package,
      i.version,
      i.mpy,
      i.profile,
      i.status,
      i.files_listed,
      i.files_served,
      i.bytes,
      i.started_at,
      i.finished_at,
      i.error,
    );
  }

  /** Notes that `device` was served `file` (a file hash or mirror path) at `time`. */
  addServedFile(device: string, file: string, time: number): void {
    this.#s.servedFile.run(device, file, time);
  }

  /** Tells whether `device` was ever served `file` (within the retention). */
  hasServedFile(device: string, file: string): boolean {
    return this.#s.hasFile.get(device, file) !== undefined;
  }

  /** Notes that `device` was seen at `time`. */
  touchDevice(device: string, time: number): void {
    this.#s.seen.run(device, time);
  }

  /** Installs matching `q`, newest first. */
  installs(q: InstallQuery): InstallRow[] {
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (q.device !== undefined) (where.push("device = ?"), args.push(q.device));
    if (q.package !== undefined) (where.push("package = ?"), args.push(q.package));
    if (q.status !== undefined) (where.push("status = ?"), args.push(q.status));
    if (q.since !== undefined) (where.push("started_at >= ?"), args.push(q.since));
    const sql = `select * from installs ${where.length ? `where ${where.join(" and ")}` : ""}
      order by started_at desc, id desc limit ?`;
    return this.#db.prepare(sql).all(...args, q.limit) as unknown as InstallRow[];
  }

  /** How many device requests are recorded. */
  requestCount(): number {
    return Number((this.#db.prepare("select coalesce(sum(count), 0) as n from requests").get() as { n: number }).n);
  }

  /** Recorded requests, newest first (for tests and troubleshooting). */
  requests(limit = 100): RequestRow[] {
    return this.#db.prepare("select * from requests order by time desc, rowid desc limit ?").all(
      limit,
    ) as unknown as RequestRow[];
  }

  /** Every device seen, with when. */
  devices(): { device: string; last_seen: number }[] {
    return this.#db.prepare("select device, last_seen from devices order by device").all() as unknown as {
      device: string;
      last_seen: number;
    }[];
  }

  /** Per device and package: the newest complete install, and the status of the newest attempt. */
  devicePackages(pkg?: string): DevicePackage[] {
    const filter = pkg === undefined ? "" : "where package = ?";
    const args = pkg === undefined ? [] : [pkg];
    const complete = this.#db.prepare(
      `select device, package, version, mpy, profile, max(finished_at) as installed_at from installs
       ${filter ? `${filter} and` : "where"} status = 'complete' group by device, package`,
    ).all(...args) as unknown as DevicePackage[];
    const last = this.#db.prepare(
      `select device, package, status, max(started_at) as at from installs ${filter} group by device, package`,
    ).all(...args) as unknown as { device: string; package: string; status: string; at: number }[];
    const out = new Map<string, DevicePackage>();
    for (const row of complete) out.set(`${row.device}\n${row.package}`, row);
    for (const row of last) {
      const key = `${row.device}\n${row.package}`;
      const have = out.get(key) ??
        {
          device: row.device,
          package: row.package,
          version: null,
          mpy: null,
          profile: null,
          installed_at: null,
          last_status: row.status,
          last_attempt_at: row.at,
        };
      have.last_status = row.status;
      have.last_attempt_at = row.at;
      out.set(key, have);
    }
    return [...out.values()].sort((a, b) => a.device.localeCompare(b.device) || a.package.localeCompare(b.package));
  }

  /** Deletes everything older than `cutoff` (ms since the epoch); returns the rows deleted. */
  prune(cutoff: number): number {
    let n = 0;
    this.transaction(() => {
      n += Number(this.#db.prepare("delete from installs where finished_at < ?").run(cutoff).changes);
      n += Number(this.#db.prepare("delete from requests where time < ?").run(cutoff).changes);
      n += Number(this.#db.prepare("delete from device_files where time < ?").run(cutoff).changes);
      n += Number(this.#db.prepare("delete from devices where last_seen < ?").run(cutoff).changes);
    });
    return n;
  }

  /** `pragma integrity_check`: "ok" when the file is sound. */
  integrity(): string {
    return String((this.#db.prepare("pragma integrity_check").get() as Record<string, unknown>).integrity_check);
  }

  /** Closes the database. */
  close(): void {
    if (this.#db.isOpen) this.#db.close();
  }
}
