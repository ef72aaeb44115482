/**
 * The shared engine of the install records: one PostgreSQL database that replicas and sites write to, so the status
 * page and the inventory show the whole fleet. Loaded only with `audit.database` (its driver too).
 *
 * Serving never waits on it: each batch goes into the local outbox ({@linkcode Outbox}) at once, and a sender takes
 * the batches to the database in order, one transaction each, which also notes the batch's number for its writer, so
 * a batch sent again (its answer lost, a restart) is not applied twice. While the database is down, slow or refusing,
 * the batches wait (bounded by `audit.max_size`), `/healthz` and `/metrics` say so, the log says so once per cause,
 * and the sender tries again every few seconds.
 *
 * The files a device fetched are placed in its installs in the database ({@linkcode place}): a replica may have
 * answered the manifest and others the files. The tables are
 * kept within a row cap (`audit.max_size` / 64: as many installs as SQLite keeps in the same budget) and
 * `audit.max_devices`, and pruned to `audit.retention`, by whichever writer gets there.
 * @module
 */
import type { Logger } from "../../log.ts";
import {
  type Batch,
  type DatabaseFigures,
  type DevicePackage,
  type DeviceRow,
  type Enforced,
  type EngineFigures,
  type InstallQuery,
  type InstallWrite,
  isLoose,
  type LooseRequest,
  type Records,
  type RequestRow,
  type SitedInstall,
  STATUS_CODE,
  type TrafficRow,
} from "../records.ts";
import { isCorruption } from "../sqlite/audit_db.ts";
import { type Client, connect, type Sql } from "./connect.ts";
import {
  CLOCK_SKEW_MS,
  HORIZON_MS,
  type MergeInstall,
  type MergeLoose,
  place,
  statusName,
  summarize,
} from "./merge.ts";
import { Outbox, type Outbox as OutboxType, type OutboxBatch, OutboxFull } from "./outbox.ts";
import { migrate, NewerSchema, SCHEMA_VERSION } from "./schema.ts";

export { Outbox, OutboxFull };
export type { OutboxType };

/** The advisory lock each batch is applied under: writers merge one at a time. */
export const MERGE_LOCK = 0x6d69_7032;
/** Rows the cap allows per byte of `audit.max_size` (as many installs as SQLite keeps in it). */
export const BYTES_PER_ROW = 64;
/** The fewest rows the cap allows. */
export const MIN_MAX_ROWS = 10_000;
/** How often the row counts are read again, whatever this writer added (others write too), ms. */
const COUNT_EVERY_MS = 60_000;
/** The least time between two warnings that rows were deleted early, ms. */
const WARN_EVERY_MS = 60_000;

/** What {@linkcode PostgresRecords.open} needs. */
export interface PostgresRecordsOptions {
  /** `audit.database`. */
  url: string;
  /** `PGPASSWORD`, `PGPASSFILE`. */
  env: Record<string, string | undefined>;
  /** The local outbox's file. */
  outboxPath: string;
  site: string;
  logger: Logger;
  now?: () => number;
  /** `audit.max_size`: the outbox's bound, and (/ {@linkcode BYTES_PER_ROW}) the tables' row cap. */
  maxBytes: number;
  /** The row cap, if not from `maxBytes`. */
  maxRows?: number;
  /** `audit.max_devices`. */
  maxDevices: number;
  /** `devices:`: this site's named devices (never forgotten), address → name. */
  keepDevices: Record<string, string>;
  /** `audit.window` in ms. */
  windowMs: number;
  /** Seconds a query may take (default 15). */
  timeoutMs?: number;
  /** The least and most time between tries while the database fails, ms (default 500 and 5,000). */
  retryMs?: [number, number];
}

type Row = Record<string, unknown>;

/** A short name for why the database could not be written, so each cause is logged once. */
export function causeOf(e: unknown): string {
  if (e instanceof NewerSchema) return "schema";
  if (e instanceof OutboxFull) return "full";
  const code = String((e as { code?: unknown })?.code ?? "");
  const message = String((e as Error)?.message ?? e);
  if (
    /^(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|ECONNRESET|EPIPE|CONNECT_TIMEOUT|CONNECTION_CLOSED|CONNECTION_ENDED|CONNECTION_DESTROYED|57P01|57P02|57P03)$/
      .test(code) || /connection refused|ECONNREFUSED|timed out.*connect|connect.*timed out/i.test(message)
  ) return "unreachable";
  if (code === "28P01" || code === "28000" || /password authentication|authentication failed/i.test(message)) {
    return "auth";
  }
  if (code === "3D000") return "no-database";
  if (code === "42501") return "privileges";
  if (code === "QUERY_TIMEOUT" || code === "57014" || code === "QUEUE_TIMEOUT") return "timeout";
  if (code === "53100" || code === "53200") return "full";
  if (code === "53300" || code.startsWith("08")) return "unreachable";
  if (code.startsWith("40")) return "conflict";
  return "other";
}

/** PostgreSQL's text holds no NUL character (a manifest's JSON may): written `%00`, as a recorded path keeps it. */
function noNul(_key: string, value: unknown): unknown {
  return typeof value === "string" && value.includes("\0") ? value.replaceAll("\0", "%00") : value;
}

/** Causes that are the database's or the link's state, not the batch's: tried again however long it takes. */
const TRANSIENT = new Set([
  "unreachable",
  "auth",
  "timeout",
  "no-database",
  "privileges",
  "full",
  "schema",
  "conflict",
]);
/** Tries of a batch the database refuses for what it holds, after which it is set aside (counted, logged). */
const REFUSED_TRIES = 3;

/** A number from a bigint column (the driver gives text). */
const num = (v: unknown): number => Number(v ?? 0);
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

/** The body of a batch in the outbox. */
interface Sent {
  site: string;
  batch: Batch;
}

/** Install records in a shared PostgreSQL database, through a local outbox. */
export class PostgresRecords implements Records {
  readonly engine = "postgres" as const;
  /** Files are placed in the database, where every replica's requests meet. */
  readonly placesFiles = false;
  readonly site: string;
  readonly maxRows: number;
  #o: PostgresRecordsOptions;
  #now: () => number;
  #sql: Client;
  #outbox: Outbox;
  /** `connecting` until the first batch or schema check reached the database; then `ok` or why it failed. */
  #state = "connecting";
  #error: string | null = null;
  #schema: number | null = null;
  #schemaReady: Promise<void> | null = null;
  #sent = 0;
  #refused = 0;
  #rowsDropped = 0;
  #devicesForgotten = 0;
  #droppedSinceWarning = 0;
  #lastDropWarning = -Infinity;
  #pruneCutoff: number | null = null;
  /** Rows known in the tables (read every minute), and those this writer added since. */
  #rows: number | null = null;
  #rowsAdded = 0;
  /** Devices known (read with the rows), and those this writer may have added since. */
  #devices = 0;
  #devicesAdded = 0;
  #countedAt = -Infinity;
  #pumping: Promise<void> | null = null;
  /** The batch being applied, and how often in a row the database refused it for what it holds. */
  #applying: OutboxBatch | undefined;
  #refusedTries = 0;
  #setAside = 0;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #retryMs: number;
  #closed = false;
  #waiters: (() => void)[] = [];

  private constructor(o: PostgresRecordsOptions, outbox: Outbox, sql: Client) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
    this.site = o.site;
    this.maxRows = o.maxRows ?? Math.max(MIN_MAX_ROWS, Math.floor(o.maxBytes / BYTES_PER_ROW));
    this.#outbox = outbox;
    this.#sql = sql;
    this.#retryMs = (o.retryMs ?? [500, 5000])[0];
  }

  /**
   * Opens the outbox and makes the client (no connection yet), then starts the sender, which checks the schema and
   * sends what an earlier run left waiting. Never waits on the database.
   */
  static open(o: PostgresRecordsOptions): PostgresRecords {
    const outbox = new Outbox(
      o.outboxPath,
      o.maxBytes,
      (movedTo, reason) =>
        o.logger.warn("The install records' outbox was corrupt: moved aside, a new one started", {
          moved_to: movedTo,
          reason,
        }),
    );
    const seconds = Math.max(1, Math.ceil((o.timeoutMs ?? 15_000) / 1000));
    const sql = connect(o.url, o.env, { connectTimeout: Math.min(seconds, 10), queryTimeout: seconds });
    const records = new PostgresRecords(o, outbox, sql);
    const waiting = outbox.figures();
    if (waiting.batches > 0) {
      o.logger.info("Install records wait in the local outbox from an earlier run; sending them", {
        batches: waiting.batches,
        requests: waiting.requests,
      });
    }
    records.#kick();
    return records;
  }

  maxInstallId(): number {
    return this.#outbox.maxInstallId;
  }

  /** The database knows what a device had before; the merge works it out there. */
  hasServedFile(): boolean {
    return false;
  }

  write(batch: Batch): Enforced {
    const none = { rows: 0, devices: 0 };
    if (
      batch.installs.length + batch.traffic.length + batch.requests.length + batch.files.length +
          batch.seen.length === 0
    ) return none;
    const body: Sent = { site: this.site, batch };
    let maxId = 0;
    for (const i of batch.installs) maxId = Math.max(maxId, i.row.id);
    try {
      this.#outbox.append(JSON.stringify(body, noNul), batch.requestCount, maxId, this.#now());
    } catch (e) {
      if (e instanceof OutboxFull) this.#refused += batch.requestCount;
      throw e;
    }
    this.#kick();
    return none;
  }

  recover(e: unknown): boolean {
    if (!isCorruption(e)) return false;
    this.#outbox.replaceCorrupt((e as Error)?.message ?? String(e));
    return true;
  }

  prune(cutoff: number): number {
    this.#pruneCutoff = Math.max(this.#pruneCutoff ?? -Infinity, cutoff);
    this.#kick();
    return 0;
  }

  /** Whether the last attempt reached the database (or none was made yet). */
  get #reachable(): boolean {
    return this.#state === "ok" || this.#state === "connecting";
  }

  async settle(timeoutMs = 5_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!this.#closed && this.#reachable && this.#busy() && Date.now() < end) {
      this.#kick();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, Math.max(1, end - Date.now()));
        function done() {
          clearTimeout(timer);
          resolve();
        }
        this.#waiters.push(done);
      });
    }
  }

  #busy(): boolean {
    return !this.#outbox.empty || this.#pruneCutoff !== null || this.#pumping !== null;
  }

  /** Starts the sender unless it runs. */
  #kick(): void {
    if (this.#pumping || this.#closed) return;
    if (this.#retry !== undefined) {
      clearTimeout(this.#retry);
      this.#retry = undefined;
    }
    this.#pumping = this.#pump().then(
      () => this.#reached(),
      (e) => this.#failed(e),
    ).finally(() => {
      this.#pumping = null;
      const waiters = this.#waiters.splice(0);
      for (const w of waiters) w();
      if (this.#closed) return;
      if (!this.#reachable) {
        this.#retry = setTimeout(() => {
          this.#retry = undefined;
          this.#kick();
        }, this.#retryMs);
        this.#retryMs = Math.min(this.#retryMs * 2, (this.#o.retryMs ?? [500, 5000])[1]);
      } else if (this.#busy()) {
        // More came while the last batch was sent.
        queueMicrotask(() => this.#kick());
      }
    });
  }

  /** Sends every waiting batch in order, then prunes and keeps the bounds when due. */
  async #pump(): Promise<void> {
    await this.#ensureSchema();
    while (!this.#closed) {
      const [next] = this.#outbox.oldest(1);
      if (!next) break;
      this.#applying = next;
      await this.#apply(next);
      this.#applying = undefined;
      this.#refusedTries = 0;
      this.#outbox.remove(next);
      this.#sent++;
      this.#reached();
    }
    if (this.#pruneCutoff !== null) {
      const cutoff = this.#pruneCutoff;
      const deleted = await this.#prune(cutoff);
      if (this.#pruneCutoff === cutoff) this.#pruneCutoff = null;
      if (deleted > 0) this.#o.logger.info("Pruned old install records", { rows: deleted });
    }
    await this.#enforce();
  }

  /** The schema checked (and moved forward) once per run of the server, before anything is sent or read. */
  #ensureSchema(): Promise<void> {
    this.#schemaReady ??= (async () => {
      const { from, applied } = await migrate(this.#sql);
      this.#schema = SCHEMA_VERSION;
      if (applied.length > 0) {
        this.#o.logger.info("Install records' database schema brought up to date", {
          from,
          to: SCHEMA_VERSION,
          steps: applied.map((m) => m.what),
        });
      }
    })().catch((e) => {
      this.#schemaReady = null;
      throw e;
    });
    return this.#schemaReady;
  }

  #reached(): void {
    this.#retryMs = (this.#o.retryMs ?? [500, 5000])[0];
    if (this.#state === "ok") return;
    if (this.#state !== "connecting") {
      const w = this.#outbox.figures();
      this.#o.logger.info("Install records reach the database again", {
        sent_batches: this.#sent,
        waiting_batches: w.batches,
      });
    }
    this.#state = "ok";
    this.#error = null;
  }

  #failed(e: unknown): void {
    const cause = causeOf(e);
    const message = (e as Error)?.message ?? String(e);
    // A batch the database refuses for what it holds (not for its own state) must not hold up those behind it.
    const batch = this.#applying;
    this.#applying = undefined;
    if (batch && !TRANSIENT.has(cause) && ++this.#refusedTries >= REFUSED_TRIES) {
      this.#refusedTries = 0;
      this.#outbox.remove(batch);
      this.#setAside++;
      this.#refused += batch.requests;
      this.#o.logger.error("The database refused a batch of install records three times; it is set aside", {
        error: message,
        requests: batch.requests,
      });
      this.#retryMs = (this.#o.retryMs ?? [500, 5000])[0];
      return;
    }
    if (cause !== this.#state) {
      const w = this.#outbox.figures();
      this.#o.logger.error(
        "Cannot write install records to the database; they wait in the local outbox, devices are served all the same",
        { cause, error: message, waiting_batches: w.batches, waiting_requests: w.requests },
      );
    }
    this.#state = cause;
    this.#error = message;
  }

  /** Applies one batch in one transaction, unless its writer's number says the database holds it already. */
  async #apply(b: OutboxBatch): Promise<void> {
    const { site, batch } = JSON.parse(b.body) as Sent;
    const now = this.#now();
    let added = 0;
    const seen = new Set(batch.seen.map((s) => s.device)).size;
    await this.#sql.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(${MERGE_LOCK})`;
      const [w] = await tx`
        insert into mipserver.writers (writer, site, last_seq, seen_at) values (${b.writer}, ${site}, 0, ${now})
        on conflict (writer) do update set seen_at = excluded.seen_at
        returning last_seq`;
      if (num(w.last_seq) >= b.seq) return;
      added = await applyBatch(tx, site, b.writer, batch, this.#o.keepDevices, this.#o.windowMs);
      await tx`update mipserver.writers set last_seq = ${b.seq} where writer = ${b.writer}`;
    });
    this.#rowsAdded += added;
    this.#devicesAdded += seen;
  }

  /** Deletes what is older than `cutoff` (installs by when they ended); returns the rows deleted. */
  async #prune(cutoff: number): Promise<number> {
    const sql = this.#sql;
    let n = 0;
    const count = (r: { count: number }) => (n += r.count);
    count(
      await sql`delete from mipserver.installs where started_at < ${cutoff}
        and greatest(own_finished, extra_finished) < ${cutoff}`,
    );
    count(await sql`delete from mipserver.traffic where time < ${cutoff}`);
    count(await sql`delete from mipserver.requests where time < ${cutoff}`);
    count(await sql`delete from mipserver.loose where at < ${cutoff} and last < ${cutoff}`);
    count(await sql`delete from mipserver.device_files where last_at < ${cutoff}`);
    count(await sql`delete from mipserver.devices where last_seen < ${cutoff}`);
    await sql`delete from mipserver.writers where seen_at < ${cutoff}`;
    if (n > 0) this.#rows = null;
    return n;
  }

  /**
   * Keeps the tables within the row cap and `audit.max_devices`: forgets the devices seen least recently past it
   * (never a named one), then, past the cap, deletes down to nine tenths of it: the oldest request rows, failed-request
   * counts and loose requests, then failed installs, then the files served to devices without installs and those
   * older than every install, then the oldest installs, then any files served. The rows are counted every minute, and
   * when this writer's own may have passed the cap.
   */
  async #enforce(): Promise<void> {
    const now = Date.now();
    const estimate = (this.#rows ?? 0) + this.#rowsAdded;
    if (
      this.#rows !== null && now - this.#countedAt < COUNT_EVERY_MS && estimate <= this.maxRows * 0.95 &&
      this.#devices + this.#devicesAdded <= this.#o.maxDevices
    ) return;
    const sql = this.#sql;
    const out: Enforced = { rows: 0, devices: 0 };
    await sql.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(${MERGE_LOCK})`;
      const [c] = await tx`select
        (select count(*) from mipserver.installs) as installs,
        (select count(*) from mipserver.requests) as requests,
        (select count(*) from mipserver.traffic) as traffic,
        (select count(*) from mipserver.loose) as loose,
        (select count(*) from mipserver.device_files) as files,
        (select count(*) from mipserver.devices) as devices`;
      const overDevices = num(c.devices) - this.#o.maxDevices;
      if (overDevices > 0) {
        const keep = Object.keys(this.#o.keepDevices);
        const gone = await tx`delete from mipserver.devices where (site, device) in (
            select site, device from mipserver.devices
            where name is null and not (site = ${this.site} and device = any(${keep}::text[]))
            order by last_seen limit ${overDevices})
          returning site, device`;
        out.devices += gone.length;
        if (gone.length > 0) {
          const json = JSON.stringify(gone.map((g) => ({ site: g.site, device: g.device })));
          await tx`delete from mipserver.device_files f using jsonb_to_recordset(${json}::text::jsonb) as x(site text, device text)
            where f.site = x.site and f.device = x.device`;
        }
      }
      let total = num(c.installs) + num(c.requests) + num(c.traffic) + num(c.loose) + num(c.files);
      if (total > this.maxRows) {
        let left = total - Math.floor(this.maxRows * 0.9);
        const steps: [string, () => Promise<{ count: number }>][] = [
          ["requests", () =>
            tx`delete from mipserver.requests where id in
              (select id from mipserver.requests order by time, id limit ${left})`],
          ["traffic", () =>
            tx`delete from mipserver.traffic where (site, time, device, status) in
              (select site, time, device, status from mipserver.traffic order by time limit ${left})`],
          ["loose", () =>
            tx`delete from mipserver.loose where id in
              (select id from mipserver.loose where install_id is null order by at, id limit ${left})`],
          ["failed", () =>
            tx`delete from mipserver.installs where id in
              (select id from mipserver.installs where status = 2 order by started_at, id limit ${left})`],
          // Files served to devices that made no install (a flood's) go before any install; then those older than
          // every install, which no install needs to be accounted for.
          ["idle files", () =>
            tx`delete from mipserver.device_files where (site, device, file) in
              (select f.site, f.device, f.file from mipserver.device_files f
               where not exists (select 1 from mipserver.installs i where i.site = f.site and i.device = f.device)
               order by f.last_at limit ${left})`],
          ["old files", () =>
            tx`delete from mipserver.device_files where (site, device, file) in
              (select site, device, file from mipserver.device_files
               where last_at < coalesce((select min(started_at) from mipserver.installs), 0)
               order by last_at limit ${left})`],
          ["installs", () =>
            tx`delete from mipserver.installs where id in
              (select id from mipserver.installs order by started_at, id limit ${left})`],
          ["files", () =>
            tx`delete from mipserver.device_files where (site, device, file) in
              (select site, device, file from mipserver.device_files order by last_at limit ${left})`],
        ];
        for (const [, step] of steps) {
          if (left <= 0) break;
          const r = await step();
          out.rows += r.count;
          left -= r.count;
        }
        total -= out.rows;
      }
      this.#rows = total;
      this.#rowsAdded = 0;
      this.#devices = num(c.devices) - out.devices;
      this.#devicesAdded = 0;
      this.#countedAt = now;
    });
    this.#rowsDropped += out.rows;
    this.#devicesForgotten += out.devices;
    this.#droppedSinceWarning += out.rows;
    if (this.#droppedSinceWarning > 0 && now - this.#lastDropWarning >= WARN_EVERY_MS) {
      this.#o.logger.warn("Install records reached their row cap; the oldest rows were deleted early", {
        rows: this.#droppedSinceWarning,
        max_rows: this.maxRows,
      });
      this.#droppedSinceWarning = 0;
      this.#lastDropWarning = now;
    }
  }

  /** Reads from the database, or fails at once with the cause while the sender finds it unreachable. */
  async #read<T>(query: (sql: Client) => Promise<T>): Promise<T> {
    if (!this.#reachable) throw new Error(`the database is ${this.#state}: ${this.#error ?? ""}`.trim());
    await this.#ensureSchema();
    return await query(this.#sql);
  }

  installs(q: InstallQuery): Promise<SitedInstall[]> {
    return this.#read(async (sql) => {
      const where: string[] = [];
      const args: (string | number)[] = [];
      const arg = (v: string | number) => (args.push(v), `$${args.length}`);
      if (q.site !== undefined) where.push(`site = ${arg(q.site)}`);
      if (q.device !== undefined) where.push(`device = ${arg(q.device)}`);
      if (q.package !== undefined) where.push(`package = ${arg(q.package)}`);
      if (q.status !== undefined) where.push(`status = ${arg(STATUS_CODE[q.status as "complete"] ?? -1)}`);
      if (q.since !== undefined) where.push(`started_at >= ${arg(q.since)}`);
      const rows = await sql.unsafe(
        `select id, site, device, package, version, mpy, profile, status, files_listed, files_served,
           own_bytes + extra_bytes as bytes, started_at, greatest(own_finished, extra_finished) as finished_at,
           coalesce(error, extra_error) as error
         from mipserver.installs ${where.length ? `where ${where.join(" and ")}` : ""}
         order by started_at desc, id desc limit ${arg(q.limit)}`,
        args,
      );
      return rows.map((r: Row) => ({
        id: num(r.id),
        site: String(r.site),
        device: String(r.device),
        package: String(r.package),
        version: r.version as string | null,
        mpy: r.mpy as string | null,
        profile: r.profile as string | null,
        status: statusName(r.status),
        files_listed: num(r.files_listed),
        files_served: num(r.files_served),
        bytes: num(r.bytes),
        started_at: num(r.started_at),
        finished_at: num(r.finished_at),
        error: r.error as string | null,
      }));
    });
  }

  devices(site?: string): Promise<DeviceRow[]> {
    return this.#read(async (sql) => {
      const rows = site === undefined
        ? await sql`select site, device, name, last_seen from mipserver.devices
            order by device collate "C", site collate "C"`
        : await sql`select site, device, name, last_seen from mipserver.devices where site = ${site}
            order by device collate "C"`;
      return rows.map((r) => ({
        site: String(r.site),
        device: String(r.device),
        name: (r.name as string | null) ?? null,
        last_seen: num(r.last_seen),
      }));
    });
  }

  devicePackages(pkg?: string, site?: string): Promise<DevicePackage[]> {
    return this.#read(async (sql) => {
      const where: string[] = [];
      const args: string[] = [];
      if (pkg !== undefined) (args.push(pkg), where.push(`package = $${args.length}`));
      if (site !== undefined) (args.push(site), where.push(`site = $${args.length}`));
      const filter = where.join(" and ");
      const rows = await sql.unsafe(
        `with last as (
           select distinct on (site, device, package) site, device, package, status, started_at
           from mipserver.installs ${filter ? `where ${filter}` : ""}
           order by site, device, package, started_at desc, id desc
         ), complete as (
           select distinct on (site, device, package) site, device, package, version, mpy, profile,
             greatest(own_finished, extra_finished) as installed_at
           from mipserver.installs where status = 0 ${filter ? `and ${filter}` : ""}
           order by site, device, package, greatest(own_finished, extra_finished) desc, id desc
         )
         select l.site, l.device, l.package, c.version, c.mpy, c.profile, c.installed_at, l.status,
           l.started_at as last_attempt_at
         from last l left join complete c using (site, device, package)
         order by l.device collate "C", l.site collate "C", l.package collate "C"`,
        args,
      );
      return rows.map((r: Row) => ({
        site: String(r.site),
        device: String(r.device),
        package: String(r.package),
        version: r.version as string | null,
        mpy: r.mpy as string | null,
        profile: r.profile as string | null,
        installed_at: numOrNull(r.installed_at),
        last_status: statusName(r.status),
        last_attempt_at: num(r.last_attempt_at),
      }));
    });
  }

  requestCount(): Promise<number> {
    return this.#read(async (sql) => {
      const [r] = await sql`select
        (select coalesce(sum(own_requests + extra_requests), 0) from mipserver.installs) +
        (select coalesce(sum(count), 0) from mipserver.traffic) +
        (select coalesce(sum(count), 0) from mipserver.requests) +
        (select coalesce(sum(count), 0) from mipserver.loose where install_id is null) as n`;
      return num(r.n);
    });
  }

  figures(): EngineFigures {
    const w = this.#outbox.figures();
    const database: DatabaseFigures = {
      state: this.#state,
      error: this.#error,
      waiting_batches: w.batches,
      waiting_requests: w.requests,
      oldest_waiting_ms: w.oldest_at === null ? 0 : Math.max(0, this.#now() - w.oldest_at),
      sent_batches: this.#sent,
      requests_refused: this.#refused,
      schema: this.#schema,
    };
    let size = 0;
    try {
      size = this.#outbox.sizeOnDisk();
    } catch {
      // Not readable now.
    }
    return {
      engine: "postgres",
      size_bytes: size,
      max_bytes: this.#o.maxBytes,
      max_rows: this.maxRows,
      rows_dropped: this.#rowsDropped,
      devices_forgotten: this.#devicesForgotten,
      database,
    };
  }

  /**
   * Sends what waits (a few seconds at most: what the database does not take by then stays in the outbox for the next
   * start), then closes the client and the outbox.
   */
  async close(): Promise<void> {
    if (this.#reachable) await this.settle(5_000).catch(() => {});
    this.#closed = true;
    if (this.#retry !== undefined) clearTimeout(this.#retry);
    this.#retry = undefined;
    await this.#pumping?.catch(() => {});
    await this.#sql.end({ timeout: 1 }).catch(() => {});
    this.#outbox.close();
  }
}

/** Sums rows alike by `key`. */
function sumBy<T>(rows: T[], key: (r: T) => string, add: (into: T, r: T) => void): T[] {
  const out = new Map<string, T>();
  for (const r of rows) {
    const k = key(r);
    const have = out.get(k);
    if (have) add(have, r);
    else out.set(k, { ...r });
  }
  return [...out.values()];
}

/**
 * Writes one batch of `site` and merges it with what the database holds (inside the caller's transaction); returns
 * about how many rows it added.
 */
async function applyBatch(
  tx: Sql,
  site: string,
  writer: string,
  batch: Batch,
  names: Record<string, string>,
  windowMs: number,
): Promise<number> {
  let added = 0;
  const json = (v: unknown) => JSON.stringify(v);
  // Devices seen, with this site's names for them.
  const seen = sumBy(batch.seen, (s) => s.device, (a, b) => (a.time = Math.max(a.time, b.time)));
  if (seen.length > 0) {
    const rows = seen.map((s) => ({ device: s.device, time: s.time, name: names[s.device] ?? null }));
    await tx`insert into mipserver.devices (site, device, last_seen, name)
      select ${site}, x.device, x.time, x.name from jsonb_to_recordset(${json(rows)}::text::jsonb)
        as x(device text, time bigint, name text)
      on conflict (site, device) do update set last_seen = greatest(devices.last_seen, excluded.last_seen),
        name = coalesce(excluded.name, devices.name)`;
  }
  const traffic = sumBy(
    batch.traffic,
    (t: TrafficRow) => `${t.time} ${t.device} ${t.status}`,
    (a, b) => (a.count += b.count, a.bytes += b.bytes),
  );
  if (traffic.length > 0) {
    await tx`insert into mipserver.traffic (site, time, device, status, count, bytes)
      select ${site}, x.time, x.device, x.status, x.count, x.bytes from jsonb_to_recordset(${
      json(traffic)
    }::text::jsonb)
        as x(time bigint, device text, status integer, count integer, bytes bigint)
      on conflict (site, time, device, status) do update set count = traffic.count + excluded.count,
        bytes = traffic.bytes + excluded.bytes`;
    added += traffic.length;
  }
  const requests = batch.requests.filter((r) => !isLoose(r)) as RequestRow[];
  if (requests.length > 0) {
    await tx`insert into mipserver.requests (site, time, device, method, path, status, cache, count, bytes)
      select ${site}, x.time, x.device, x.method, x.path, x.status, x.cache, x.count, x.bytes
      from jsonb_to_recordset(${json(requests)}::text::jsonb) as x(time bigint, device text, method text, path text,
        status integer, cache text, count integer, bytes bigint)`;
    added += requests.length;
  }
  const loose = batch.requests.filter(isLoose) as LooseRequest[];
  if (loose.length > 0) {
    await tx`insert into mipserver.loose (site, device, file, path, method, status, cache, minute, at, last, count, bytes)
      select ${site}, x.device, x.file, x.path, x.method, x.status, x.cache, x.time, x.at, x.last, x.count, x.bytes
      from jsonb_to_recordset(${json(loose)}::text::jsonb) as x(device text, file text, path text, method text,
        status integer, cache text, time bigint, at bigint, last bigint, count integer, bytes bigint)`;
    added += loose.length;
  }
  const files = sumBy(
    batch.files.map((f) => ({ device: f.device, file: f.file, first: f.time, last: f.time })),
    (f) => `${f.device} ${f.file}`,
    (a, b) => (a.first = Math.min(a.first, b.first), a.last = Math.max(a.last, b.last)),
  );
  if (files.length > 0) {
    await tx`insert into mipserver.device_files (site, device, file, first_at, last_at)
      select ${site}, x.device, x.file, x.first, x.last from jsonb_to_recordset(${json(files)}::text::jsonb)
        as x(device text, file text, first bigint, last bigint)
      on conflict (site, device, file) do update set first_at = least(device_files.first_at, excluded.first_at),
        last_at = greatest(device_files.last_at, excluded.last_at)`;
    added += files.length;
  }
  const installs = sumBy(batch.installs, (i: InstallWrite) => String(i.row.id), (a, b) => Object.assign(a, b));
  if (installs.length > 0) {
    const rows = installs.map((i) => ({
      ...i.row,
      status: STATUS_CODE[i.row.status],
      requests: i.requests,
      listed: i.listed,
      served: i.served,
      unknown: i.unknown,
    }));
    await tx`insert into mipserver.installs (writer, local_id, site, device, package, version, mpy, profile, status,
        unknown, listed, own_served, files_listed, files_served, own_bytes, own_requests, started_at, own_finished,
        error)
      select ${writer}, x.id, ${site}, x.device, x.package, x.version, x.mpy, x.profile, x.status, x.unknown,
        array(select jsonb_array_elements_text(x.listed)), array(select jsonb_array_elements_text(x.served)),
        x.files_listed, x.files_served, x.bytes, x.requests, x.started_at, x.finished_at, x.error
      from jsonb_to_recordset(${json(rows)}::text::jsonb) as x(id bigint, device text, package text, version text,
        mpy text, profile text, status smallint, unknown boolean, listed jsonb, served jsonb, files_listed integer,
        files_served integer, bytes bigint, requests integer, started_at bigint, finished_at bigint, error text)
      on conflict (writer, local_id) do update set version = excluded.version, status = excluded.status,
        unknown = excluded.unknown, listed = excluded.listed, own_served = excluded.own_served,
        files_listed = excluded.files_listed, files_served = excluded.files_served, own_bytes = excluded.own_bytes,
        own_requests = excluded.own_requests, own_finished = excluded.own_finished, error = excluded.error`;
    added += installs.length;
  }
  await merge(tx, site, batch, windowMs);
  return added;
}

/**
 * Places the requests of the devices the batch touched in their installs again (see `merge.ts`), from every install
 * and loose request within {@linkcode HORIZON_MS} of the batch's earliest request, and writes what changed: the loose
 * requests' installs, and the installs' files served, bytes, requests, newest request, error and status.
 */
async function merge(tx: Sql, site: string, batch: Batch, windowMs: number): Promise<void> {
  const touched = new Set<string>();
  let since = Infinity;
  for (const i of batch.installs) (touched.add(i.row.device), since = Math.min(since, i.row.started_at));
  for (const r of batch.requests) if (isLoose(r)) (touched.add(r.device), since = Math.min(since, r.at));
  for (const f of batch.files) (touched.add(f.device), since = Math.min(since, f.time));
  if (touched.size === 0) return;
  const devices = [...touched];
  const installRows = await tx`select id, device, listed, own_served, unknown, error, started_at, own_finished,
      extra_served, extra_bytes, extra_requests, extra_finished, extra_error, status, files_served
    from mipserver.installs
    where site = ${site} and device = any(${devices}::text[]) and started_at >= ${since - HORIZON_MS}`;
  if (installRows.length === 0) return;
  const installs: MergeInstall[] = installRows.map((r) => ({
    id: num(r.id),
    device: String(r.device),
    listed: r.listed as string[],
    own_served: r.own_served as string[],
    unknown: Boolean(r.unknown),
    error: r.error as string | null,
    started_at: num(r.started_at),
    own_finished: num(r.own_finished),
  }));
  // Every request an install of these may hold came after its start (less the clock skew).
  const from = Math.min(...installs.map((i) => i.started_at)) - CLOCK_SKEW_MS;
  const looseRows = await tx`select id, device, file, path, status, at, last, count, bytes, install_id
    from mipserver.loose where site = ${site} and device = any(${devices}::text[]) and at >= ${from}`;
  const loose: MergeLoose[] = looseRows.map((r) => ({
    id: num(r.id),
    device: String(r.device),
    file: String(r.file),
    path: String(r.path),
    status: num(r.status),
    at: num(r.at),
    last: num(r.last),
    count: num(r.count),
    bytes: num(r.bytes),
    install: numOrNull(r.install_id),
  }));
  const placement = place(installs, loose, windowMs);
  const moved = loose.filter((l) => placement.has(l.id) && placement.get(l.id) !== l.install)
    .map((l) => ({ id: l.id, install: placement.get(l.id) ?? null }));
  const inInstall = new Map<number, MergeLoose[]>();
  for (const l of loose) {
    const id = placement.has(l.id) ? placement.get(l.id)! : l.install;
    if (id !== null) inInstall.set(id, [...(inInstall.get(id) ?? []), l]);
  }
  const wanted = [...new Set(installs.flatMap((i) => i.listed))];
  const first = new Map<string, number>();
  if (wanted.length > 0) {
    const rows = await tx`select device, file, first_at from mipserver.device_files
      where site = ${site} and device = any(${devices}::text[]) and file = any(${wanted}::text[])`;
    for (const r of rows) first.set(`${r.device} ${r.file}`, num(r.first_at));
  }
  const updates = [];
  for (const [k, i] of installs.entries()) {
    const was = installRows[k];
    const p = summarize(i, inInstall.get(i.id) ?? [], (f) => first.get(`${i.device} ${f}`));
    const same = statusName(was.status) === p.status && num(was.files_served) === p.files_served &&
      num(was.extra_bytes) === p.extra_bytes && num(was.extra_requests) === p.extra_requests &&
      num(was.extra_finished) === p.extra_finished && (was.extra_error ?? null) === p.extra_error &&
      JSON.stringify(was.extra_served) === JSON.stringify(p.extra_served);
    if (!same) updates.push({ id: i.id, ...p, status: STATUS_CODE[p.status] });
  }
  if (moved.length > 0) {
    await tx`update mipserver.loose l set install_id = x.install
      from jsonb_to_recordset(${JSON.stringify(moved)}::text::jsonb) as x(id bigint, install bigint)
      where l.id = x.id`;
  }
  if (updates.length > 0) {
    await tx`update mipserver.installs i set status = x.status, files_served = x.files_served,
        extra_served = array(select jsonb_array_elements_text(x.extra_served)), extra_bytes = x.extra_bytes,
        extra_requests = x.extra_requests, extra_finished = x.extra_finished, extra_error = x.extra_error
      from jsonb_to_recordset(${JSON.stringify(updates)}::text::jsonb) as x(id bigint, status smallint,
        files_served integer, extra_served jsonb, extra_bytes bigint, extra_requests integer, extra_finished bigint,
        extra_error text)
      where i.id = x.id`;
  }
}
