/**
 * The install records' database: SQLite through `node:sqlite` (built into Deno), one file in the cache dir, in WAL
 * mode, so a crash loses at most the batch that was being written and never leaves a broken file.
 *
 * It stays within bounds that client input cannot move: the file and its WAL within `audit.max_size` (the oldest
 * request rows go first, then devices that made no install, then failed installs, then the oldest installs), at most `audit.max_devices` devices (the one seen least recently
 * is forgotten; named devices never are). Text is stored once (devices, packages, versions, paths and file keys are
 * numbers in the rows), an install's own requests are not rows of their own, and installs need one index only (by
 * device), so an install stays small (measured in the docs' benchmarks). A file that cannot be read as a database is
 * moved aside and a new one started.
 * @module
 */
import { openWalFile, PAGES_SQL, sizeOnDisk, usedBytes } from "./file.ts";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { recordedPath } from "../paths.ts";
import {
  type DevicePackage,
  type Enforced,
  type InstallQuery,
  type InstallRow,
  type RequestRow,
  STATUS,
  STATUS_CODE,
  type TrafficRow,
} from "../records.ts";

export type { Enforced, InstallQuery, InstallRow, RequestRow, TrafficRow };

/** A device's package as one server's records know it (the site is the server's own). */
export type LocalDevicePackage = Omit<DevicePackage, "site">;

/** The bounds of an {@linkcode AuditDb}. */
export interface AuditDbOptions {
  /** `audit.max_size`: the file and its WAL are kept within it (plus one batch). Default 64 MiB. */
  maxBytes?: number;
  /** `audit.max_devices`: devices remembered at most. Default 10,000. */
  maxDevices?: number;
  /** Devices never forgotten for `maxDevices` (the addresses named in `devices:`). */
  keepDevices?: Iterable<string>;
  /** Told when a corrupt file was moved aside (its new name) before a new one was started. */
  onReplaced?: (movedTo: string, reason: string) => void;
}

/** The smallest `maxBytes` honoured: the schema and one batch need room. */
export const MIN_MAX_BYTES = 1024 * 1024;
/** The schema version this code writes (`pragma user_version`). Version 0 is the first layout, with text in rows. */
export const SCHEMA_VERSION = 2;

/** Interned texts remembered in memory (text → id); forgotten together when unused texts are deleted. */
const INTERNED_KEPT = 4096;
/** Old installs looked at per step while pruning by age. */
const EVICT_STEP = 2000;

const SCHEMA = `
create table if not exists names (id integer primary key, text text not null unique);
create table if not exists installs (
  id integer primary key,
  device integer not null,
  package integer not null,
  version integer,
  mpy integer,
  profile integer,
  status integer not null,
  files_listed integer not null,
  files_served integer not null,
  bytes integer not null,
  started_at integer not null,
  took integer not null,
  requests integer not null default 0,
  error text
);
create index if not exists installs_device on installs (device);
create table if not exists traffic (
  time integer not null,
  device integer not null,
  status integer not null,
  count integer not null,
  bytes integer not null
);
create unique index if not exists traffic_key on traffic (time, device, status);
create table if not exists requests (
  time integer not null,
  device integer not null,
  method text not null,
  path integer not null,
  status integer not null,
  cache text,
  count integer not null,
  bytes integer not null
);
create index if not exists requests_time on requests (time);
create table if not exists device_files (
  device integer not null,
  file integer not null,
  time integer not null,
  primary key (device, file)
) without rowid;
create index if not exists device_files_time on device_files (time);
create table if not exists devices (id integer primary key, last_seen integer not null);
create index if not exists devices_seen on devices (last_seen);
`;

/** Deletes texts no row refers to (the nullable columns filtered: `not in` a list holding null matches nothing). */
const DROP_UNUSED_NAMES = `
delete from names where id not in (
  select device from installs union select package from installs
  union select version from installs where version is not null union select mpy from installs where mpy is not null
  union select profile from installs where profile is not null
  union select device from traffic union select device from requests union select path from requests
  union select device from device_files union select file from device_files union select id from devices
)`;

const INSTALL_COLUMNS = `i.id as id, d.text as device, p.text as package, v.text as version, m.text as mpy,
  f.text as profile, i.status as status, i.files_listed as files_listed, i.files_served as files_served,
  i.bytes as bytes, i.started_at as started_at, i.started_at + i.took as finished_at, i.error as error`;
const INSTALL_JOINS = `join names d on d.id = i.device join names p on p.id = i.package
  left join names v on v.id = i.version left join names m on m.id = i.mpy left join names f on f.id = i.profile`;

type Raw = Record<string, unknown>;

function toInstall(r: Raw): InstallRow {
  return { ...r, status: STATUS[Number(r.status)] ?? "failed" } as unknown as InstallRow;
}

/** The files of a SQLite database in WAL mode: the database, its write-ahead log and its shared-memory index. */
const DB_FILES = ["", "-wal", "-shm"] as const;

function removeIfThere(path: string): void {
  try {
    Deno.removeSync(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

/** Tells whether a SQLite error means the file is not a sound database (as opposed to full, read-only or busy). */
export function isCorruption(e: unknown): boolean {
  return /malformed|not a database|file is encrypted|SQLITE_CORRUPT|SQLITE_NOTADB/i.test(String((e as Error)?.message));
}

/** The database behind the install records. Synchronous: callers batch their writes into one transaction. */
export class AuditDb {
  readonly path: string;
  #o: Required<Omit<AuditDbOptions, "onReplaced" | "keepDevices">> & Pick<AuditDbOptions, "onReplaced">;
  #keep: string;
  #db!: DatabaseSync;
  #s!: Record<string, StatementSync>;
  #ids = new Map<string, number>();
  #walLimit: number;

  /** Opens (creating if needed) the database at `path` (`:memory:` for tests), moving a corrupt file aside. */
  constructor(path: string, options: AuditDbOptions = {}) {
    this.path = path;
    this.#o = {
      maxBytes: Math.max(options.maxBytes ?? 64 * 1024 * 1024, MIN_MAX_BYTES),
      maxDevices: Math.max(1, options.maxDevices ?? 10_000),
      onReplaced: options.onReplaced,
    };
    this.#keep = JSON.stringify([...(options.keepDevices ?? [])]);
    // The WAL is checkpointed and cut back each time it reaches a sixteenth of the budget (at most 4 MiB).
    this.#walLimit = Math.min(4 * 1024 * 1024, Math.max(64 * 1024, Math.floor(this.#o.maxBytes / 16)));
    try {
      this.#open();
    } catch (e) {
      if (!isCorruption(e) || path === ":memory:") throw e;
      this.replaceCorrupt((e as Error).message);
    }
  }

  #open(): void {
    this.#db = this.#connect();
    try {
      const version = Number((this.#db.prepare("pragma user_version").get() as Raw).user_version);
      const tables = this.#db.prepare("select count(*) as n from sqlite_master where type = 'table'").get() as Raw;
      if (version === 0 && Number(tables.n) > 0) {
        this.#db.close();
        this.#migrateFrom0();
        this.#db = this.#connect();
      } else if (version > SCHEMA_VERSION) {
        throw new Error(`Install records at ${this.path} were written by a newer mipserver (schema ${version})`);
      } else {
        this.#db.exec(SCHEMA);
        this.#db.exec(`pragma user_version = ${SCHEMA_VERSION}`);
      }
    } catch (e) {
      if (this.#db.isOpen) this.#db.close();
      throw e;
    }
    this.#ids.clear();
    const p = (sql: string) => this.#db.prepare(sql);
    this.#s = {
      intern: p("insert into names (text) values (?) returning id"),
      idOf: p("select id from names where text = ?"),
      traffic: p(
        `insert into traffic (time, device, status, count, bytes) values (?, ?, ?, ?, ?)
         on conflict (time, device, status) do update set count = count + excluded.count, bytes = bytes + excluded.bytes`,
      ),
      request: p(
        `insert into requests (time, device, method, path, status, cache, count, bytes) values (?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      install: p(
        `insert into installs (id, device, package, version, mpy, profile, status, files_listed, files_served, bytes,
           started_at, took, requests, error) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         on conflict (id) do update set version = excluded.version, status = excluded.status,
           files_listed = excluded.files_listed, files_served = excluded.files_served, bytes = excluded.bytes,
           took = excluded.took, requests = excluded.requests, error = excluded.error`,
      ),
      servedFile: p(
        "insert into device_files (device, file, time) values (?, ?, ?) on conflict do update set time = excluded.time",
      ),
      hasFile: p(
        `select 1 as x from device_files where device = (select id from names where text = ?)
         and file = (select id from names where text = ?)`,
      ),
      seen: p(
        "insert into devices (id, last_seen) values (?, ?) on conflict do update set last_seen = max(last_seen, excluded.last_seen)",
      ),
      maxId: p("select coalesce(max(id), 0) as id from installs"),
      pages: p(PAGES_SQL),
    };
  }

  #connect(): DatabaseSync {
    // Free pages go back to the disk when asked (`shrink`); a checkpoint every WAL's worth of pages.
    return openWalFile(this.path, this.#walLimit, Math.max(16, Math.floor(this.#walLimit / 4096)));
  }

  /**
   * Copies a database of the first layout (text in every row, a row per request path) into a new file of the current
   * one, which then takes its place: an install's requests become its count, failed requests outside installs counts
   * per device, minute and status, other paths their canonical form. A crash before the new file takes the old one's
   * place leaves the old one as it was (the half-made copy is removed at the next try).
   */
  #migrateFrom0(): void {
    const tmp = `${this.path}.migrating`;
    for (const suffix of DB_FILES) removeIfThere(tmp + suffix);
    const old = new DatabaseSync(this.path);
    const fresh = new AuditDb(tmp, { maxBytes: Number.MAX_SAFE_INTEGER });
    try {
      const requestsOf = new Map<number, number>();
      for (
        const r of old.prepare(
          "select install_id as id, sum(count) as n from requests where install_id is not null group by install_id",
        ).iterate() as Iterable<Raw>
      ) requestsOf.set(Number(r.id), Number(r.n));
      fresh.transaction(() => {
        for (const r of old.prepare("select * from installs order by id").iterate() as Iterable<Raw>) {
          fresh.saveInstall(r as unknown as InstallRow, requestsOf.get(Number(r.id)) ?? 0);
        }
        for (
          const r of old.prepare(
            `select time, device, status, sum(count) as count, sum(bytes) as bytes from requests
             where install_id is null and status >= 400 group by time, device, status`,
          ).iterate() as Iterable<Raw>
        ) fresh.addTraffic(r as unknown as TrafficRow);
        for (
          const r of old.prepare(
            `select time, device, method, path, status, cache, count, bytes from requests
             where install_id is null and status < 400`,
          ).iterate() as Iterable<Raw>
        ) fresh.addRequests({ ...(r as unknown as RequestRow), path: recordedPath(String(r.path)) });
        for (const r of old.prepare("select device, file, time from device_files").iterate() as Iterable<Raw>) {
          fresh.addServedFile(String(r.device), String(r.file), Number(r.time));
        }
        for (const r of old.prepare("select device, last_seen from devices").iterate() as Iterable<Raw>) {
          fresh.touchDevice(String(r.device), Number(r.last_seen));
        }
      });
    } catch (e) {
      fresh.close();
      for (const suffix of DB_FILES) removeIfThere(tmp + suffix);
      throw e;
    } finally {
      if (fresh.#db.isOpen) fresh.close();
      old.close();
    }
    // The old file's WAL was folded in when it closed; a leftover must not be read as the new file's.
    for (const suffix of DB_FILES.slice(1)) removeIfThere(this.path + suffix);
    Deno.renameSync(tmp, this.path);
  }

  /**
   * Moves the database file (and its WAL and shared-memory files) aside as `<path>.corrupt-<time>` and starts a new
   * one. Returns the name it was moved to.
   */
  replaceCorrupt(reason: string): string {
    try {
      if (this.#db?.isOpen) this.#db.close();
    } catch {
      // Closing a broken file may fail too; it is moved aside all the same.
    }
    const movedTo = `${this.path}.corrupt-${new Date().toISOString().replace(/[:.]/g, "-")}`;
    for (const suffix of DB_FILES) {
      try {
        Deno.renameSync(this.path + suffix, movedTo + suffix);
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
    }
    this.#open();
    this.#o.onReplaced?.(movedTo, reason);
    return movedTo;
  }

  /** Runs `fn` in one transaction (committed together, or not at all). */
  transaction(fn: () => void): void {
    this.#db.exec("begin");
    try {
      fn();
      this.#db.exec("commit");
    } catch (e) {
      // Texts interned in the transaction are gone with it.
      this.#ids.clear();
      try {
        this.#db.exec("rollback");
      } catch {
        // SQLite may have rolled back already (a full disk ends the transaction itself).
      }
      throw e;
    }
  }

  /** The id of `text` in the names table, added if new. */
  #id(text: string): number {
    let id = this.#ids.get(text);
    if (id === undefined) {
      const row = (this.#s.idOf.get(text) ?? this.#s.intern.get(text)) as Raw;
      id = Number(row.id);
      if (this.#ids.size >= INTERNED_KEPT) this.#ids.clear();
      this.#ids.set(text, id);
    }
    return id;
  }

  #idOrNull(text: string | null): number | null {
    return text === null ? null : this.#id(text);
  }

  /** The highest install id used so far. */
  maxInstallId(): number {
    return Number((this.#s.maxId.get() as { id: number }).id);
  }

  /** Counts failed device requests of one minute, device and status. */
  addTraffic(r: TrafficRow): void {
    this.#s.traffic.run(r.time, this.#id(r.device), r.status, r.count, r.bytes);
  }

  /** Records alike successful device requests that are no part of an install. */
  addRequests(r: RequestRow): void {
    this.#s.request.run(r.time, this.#id(r.device), r.method, this.#id(r.path), r.status, r.cache, r.count, r.bytes);
  }

  /** Writes an install (inserted, or updated by id) and how many device requests it took. */
  saveInstall(i: InstallRow, requests = 1): void {
    this.#s.install.run(
      i.id,
      this.#id(i.device),
      this.#id(i.package),
      this.#idOrNull(i.version),
      this.#idOrNull(i.mpy),
      this.#idOrNull(i.profile),
      STATUS_CODE[i.status],
      i.files_listed,
      i.files_served,
      i.bytes,
      i.started_at,
      Math.max(0, i.finished_at - i.started_at),
      requests,
      i.error,
    );
  }

  /** Notes that `device` was served `file` (a file hash or mirror path) at `time`. */
  addServedFile(device: string, file: string, time: number): void {
    this.#s.servedFile.run(this.#id(device), this.#id(file), time);
  }

  /** Tells whether `device` was ever served `file` (within the retention). */
  hasServedFile(device: string, file: string): boolean {
    return this.#s.hasFile.get(device, file) !== undefined;
  }

  /** Notes that `device` was seen at `time`. */
  touchDevice(device: string, time: number): void {
    this.#s.seen.run(this.#id(device), time);
  }

  /**
   * Installs matching `q`, newest first. Ids are given in the order installs start, so the table's own order is the
   * time order and needs no index of its own (an index costs 11-17 bytes an install).
   */
  installs(q: InstallQuery): InstallRow[] {
    const where: string[] = [];
    const args: (string | number)[] = [];
    const byName = (
      column: string,
      text: string,
    ) => (where.push(`${column} = (select id from names where text = ?)`), args.push(text));
    if (q.device !== undefined) byName("i.device", q.device);
    if (q.package !== undefined) byName("i.package", q.package);
    if (q.status !== undefined) {
      where.push("i.status = ?");
      args.push(STATUS_CODE[q.status as InstallRow["status"]] ?? -1);
    }
    if (q.since !== undefined) (where.push("i.started_at >= ?"), args.push(q.since));
    const sql = `select ${INSTALL_COLUMNS} from installs i ${INSTALL_JOINS}
      ${where.length ? `where ${where.join(" and ")}` : ""} order by i.id desc limit ?`;
    return (this.#db.prepare(sql).all(...args, q.limit) as Raw[]).map(toInstall);
  }

  /** How many device requests are recorded: those of installs, the failed ones counted, and the rest. */
  requestCount(): number {
    const sum = (table: string, column: string) =>
      Number((this.#db.prepare(`select coalesce(sum(${column}), 0) as n from ${table}`).get() as Raw).n);
    return sum("installs", "requests") + sum("traffic", "count") + sum("requests", "count");
  }

  /** Failed requests outside installs per minute, device and status, newest first (for tests and troubleshooting). */
  traffic(limit = 100): TrafficRow[] {
    return this.#db.prepare(
      `select t.time as time, d.text as device, t.status as status, t.count as count, t.bytes as bytes
       from traffic t join names d on d.id = t.device order by t.time desc, t.rowid desc limit ?`,
    ).all(limit) as unknown as TrafficRow[];
  }

  /** Recorded requests outside installs, newest first (for tests and troubleshooting). */
  requests(limit = 100): RequestRow[] {
    return this.#db.prepare(
      `select r.time as time, d.text as device, r.method as method, p.text as path, r.status as status,
         r.cache as cache, r.count as count, r.bytes as bytes
       from requests r join names d on d.id = r.device join names p on p.id = r.path
       order by r.time desc, r.rowid desc limit ?`,
    ).all(limit) as unknown as RequestRow[];
  }

  /** Every device remembered, with when it was last seen. */
  devices(): { device: string; last_seen: number }[] {
    return this.#db.prepare(
      "select n.text as device, d.last_seen as last_seen from devices d join names n on n.id = d.id order by n.text",
    ).all() as unknown as { device: string; last_seen: number }[];
  }

  /** How many devices are remembered. */
  deviceCount(): number {
    return Number((this.#db.prepare("select count(*) as n from devices").get() as Raw).n);
  }

  /** How many installs are kept. */
  installCount(): number {
    return Number((this.#db.prepare("select count(*) as n from installs").get() as Raw).n);
  }

  /** Per device and package: the newest complete install, and the status of the newest attempt. */
  devicePackages(pkg?: string): LocalDevicePackage[] {
    const filter = pkg === undefined ? "" : "i.package = (select id from names where text = ?)";
    const args = pkg === undefined ? [] : [pkg];
    const complete = this.#db.prepare(
      `select d.text as device, p.text as package, v.text as version, m.text as mpy, f.text as profile,
         max(i.started_at + i.took) as installed_at
       from installs i ${INSTALL_JOINS}
       where ${filter ? `${filter} and` : ""} i.status = 0 group by i.device, i.package`,
    ).all(...args) as unknown as LocalDevicePackage[];
    const last = this.#db.prepare(
      `select d.text as device, p.text as package, i.status as status, max(i.started_at) as at
       from installs i join names d on d.id = i.device join names p on p.id = i.package
       ${filter ? `where ${filter}` : ""} group by i.device, i.package`,
    ).all(...args) as unknown as { device: string; package: string; status: number; at: number }[];
    const out = new Map<string, LocalDevicePackage>();
    for (const row of complete) out.set(`${row.device}\n${row.package}`, row);
    for (const row of last) {
      const key = `${row.device}\n${row.package}`;
      const status = STATUS[row.status] ?? "failed";
      const have = out.get(key) ??
        {
          device: row.device,
          package: row.package,
          version: null,
          mpy: null,
          profile: null,
          installed_at: null,
          last_status: status,
          last_attempt_at: row.at,
        };
      have.last_status = status;
      have.last_attempt_at = row.at;
      out.set(key, have);
    }
    return [...out.values()].sort((a, b) => a.device.localeCompare(b.device) || a.package.localeCompare(b.package));
  }

  /** Deletes everything older than `cutoff` (ms since the epoch), and texts left unused; returns the rows deleted. */
  prune(cutoff: number): number {
    let n = 0;
    this.transaction(() => {
      // The oldest installs are at the table's start (ids in the order installs start): no scan of the rest.
      const oldest =
        `with head as (select id, started_at + took as finished from installs order by id limit ${EVICT_STEP})
        delete from installs where id in (select id from head where finished < ?)`;
      let deleted;
      do {
        deleted = this.#run(oldest, cutoff);
        n += deleted;
      } while (deleted === EVICT_STEP);
      n += this.#run("delete from traffic where time < ?", cutoff);
      n += this.#run("delete from requests where time < ?", cutoff);
      n += this.#run("delete from device_files where time < ?", cutoff);
      n += this.#run("delete from devices where last_seen < ?", cutoff);
      if (n > 0) this.#dropUnusedNames();
    });
    return n;
  }

  #run(sql: string, ...args: (string | number)[]): number {
    return Number(this.#db.prepare(sql).run(...args).changes);
  }

  #dropUnusedNames(): void {
    this.#db.exec(DROP_UNUSED_NAMES);
    this.#ids.clear();
  }

  /** Bytes the database's pages hold (free pages aside): what the next rows would add to. */
  usedBytes(): number {
    return usedBytes(this.#s.pages);
  }

  /** The file's and its WAL's size on disk. */
  sizeOnDisk(): number {
    return sizeOnDisk(this.path, () => this.usedBytes());
  }

  /** `audit.max_size` as honoured (at least {@linkcode MIN_MAX_BYTES}). */
  get maxBytes(): number {
    return this.#o.maxBytes;
  }

  /**
   * Keeps the bounds: forgets the devices seen least recently past `maxDevices` (never a named one, and not their
   * installs), then, when the pages in use pass the share of `maxBytes` the file may have (the rest is the WAL's),
   * deletes the oldest request rows, then forgets the devices that made no install, then deletes the oldest failed
   * installs, then the oldest installs, about down to nine tenths of it. Freed space is reused, so the file stops growing.
   */
  enforce(): Enforced {
    const out: Enforced = { rows: 0, devices: 0 };
    this.transaction(() => {
      const over = this.deviceCount() - this.#o.maxDevices;
      if (over > 0) out.devices += this.#forgetDevices(over, false);
      const high = this.#o.maxBytes - 2 * this.#walLimit;
      const used = this.usedBytes();
      if (used > high) {
        // The share of rows to delete is the share of bytes over nine tenths of the budget (at least a tenth): pages
        // are freed as they empty, not row by row, so bytes freed cannot be measured step by step. Request rows go
        // first, then installs; the next batch checks again.
        const share = Math.max(0.1, (used - high * 0.9) / used);
        const count = (table: string) =>
          Number((this.#db.prepare(`select count(*) as n from ${table}`).get() as Raw).n);
        const tables = [
          ["requests", "delete from requests where rowid in (select rowid from requests order by time limit ?)"],
          ["traffic", "delete from traffic where rowid in (select rowid from traffic order by time limit ?)"],
          ["devices", ""],
          // Failed installs (a manifest answered 4xx/5xx, as a scanner's are) go before any that was not.
          [
            "installs",
            "delete from installs where id in (select id from installs where status = 2 order by id limit ?)",
          ],
          ["installs", "delete from installs where id in (select id from installs order by id limit ?)"],
        ];
        const sizes = [...new Set(tables.map(([table]) => table))].map(count);
        let left = Math.ceil(sizes.reduce((a, b) => a + b, 0) * share);
        for (const [table, step] of tables) {
          if (left <= 0) break;
          // Before any install: devices that made none (a flood from rotating addresses makes only such devices).
          const n = table === "devices" ? this.#forgetDevices(left, true) : this.#run(step, left);
          if (table === "devices") out.devices += n;
          else out.rows += n;
          left -= n;
        }
        if (out.rows > 0) {
          // The files served to devices matter only with installs to account for: those older than every install go.
          this.#run(
            "delete from device_files where time < coalesce((select started_at from installs order by id limit 1), 0)",
          );
        }
      }
      if (out.rows > 0 || out.devices > 0) this.#dropUnusedNames();
    });
    // The WAL is cut back once past its share, so the file and the WAL together stay within maxBytes and a batch.
    if (out.rows > 0 || out.devices > 0 || this.#walSize() > this.#walLimit) {
      this.#db.exec("pragma wal_checkpoint(truncate)");
    }
    return out;
  }

  #walSize(): number {
    try {
      return this.path === ":memory:" ? 0 : Deno.statSync(`${this.path}-wal`).size;
    } catch {
      return 0;
    }
  }

  /**
   * Forgets up to `n` devices seen least recently, never one named in `devices:`; with `idleOnly`, only devices that
   * made no install. Their installs stay; the files they were served go with them. Returns how many went.
   */
  #forgetDevices(n: number, idleOnly: boolean): number {
    const victims = `select d.id from devices d join names t on t.id = d.id
      where t.text not in (select value from json_each(?))
      ${idleOnly ? "and not exists (select 1 from installs i where i.device = d.id)" : ""}
      order by d.last_seen limit ?`;
    this.#run(`delete from device_files where device in (${victims})`, this.#keep, n);
    return this.#run(`delete from devices where id in (${victims})`, this.#keep, n);
  }

  /** Gives the file's free pages back to the disk, and cuts the WAL (after it was found over its budget at start). */
  shrink(): void {
    // Stepped to its end: each step frees one page (exec would stop after the first).
    this.#db.prepare("pragma incremental_vacuum").all();
    this.#db.exec("pragma wal_checkpoint(truncate)");
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
