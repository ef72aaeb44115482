/**
 * The embedded engine of the install records: one SQLite file in the cache dir ({@linkcode AuditDb}), written a batch
 * at a time, within `audit.max_size` and `audit.max_devices`.
 * @module
 */
import type { Logger } from "../../log.ts";
import type {
  Batch,
  DevicePackage,
  DeviceRow,
  Enforced,
  EngineFigures,
  InstallQuery,
  Records,
  SitedInstall,
} from "../records.ts";
import { AuditDb, type AuditDbOptions, isCorruption } from "./audit_db.ts";

export { AuditDb, isCorruption };

/** What {@linkcode SqliteRecords.open} needs. */
export interface SqliteRecordsOptions extends Omit<AuditDbOptions, "onReplaced"> {
  /** The records' file (`audit.sqlite` in the cache dir). */
  path: string;
  /** The site this server records as. */
  site: string;
  logger: Logger;
}

/** Install records in one SQLite file. */
export class SqliteRecords implements Records {
  readonly engine = "sqlite" as const;
  readonly placesFiles = true;
  readonly site: string;
  /** The database (tests and troubleshooting read it directly). */
  readonly db: AuditDb;
  #dropped: Enforced;
  #size = 0;

  constructor(db: AuditDb, site: string, dropped: Enforced = { rows: 0, devices: 0 }) {
    this.db = db;
    this.site = site;
    this.#dropped = { ...dropped };
    this.#size = db.sizeOnDisk();
  }

  /**
   * Opens the records within `audit.max_size` and `audit.max_devices`, moving a corrupt file aside (logged). A file far
   * over its budget (written before the bound, or after the setting was lowered) is cut to it and rewritten once,
   * which is logged.
   */
  static open(o: SqliteRecordsOptions): SqliteRecords {
    const { logger } = o;
    const db = new AuditDb(o.path, {
      maxBytes: o.maxBytes,
      maxDevices: o.maxDevices,
      keepDevices: o.keepDevices,
      onReplaced: (movedTo, reason) =>
        logger.warn("Install records were corrupt: moved aside, a new file started", { moved_to: movedTo, reason }),
    });
    const before = db.sizeOnDisk();
    if (before <= db.maxBytes) return new SqliteRecords(db, o.site);
    const dropped: Enforced = { rows: 0, devices: 0 };
    // Each round deletes a share of the rows; a few rounds bring a file far over its budget within it.
    for (let round = 0; round < 8 && db.sizeOnDisk() > db.maxBytes; round++) {
      const enforced = db.enforce();
      dropped.rows += enforced.rows;
      dropped.devices += enforced.devices;
      db.shrink();
    }
    logger.warn("Install records were over audit.max_size; the oldest rows were deleted and the file shrunk", {
      before_bytes: before,
      after_bytes: db.sizeOnDisk(),
      rows: dropped.rows,
      devices: dropped.devices,
    });
    return new SqliteRecords(db, o.site, dropped);
  }

  maxInstallId(): number {
    return this.db.maxInstallId();
  }

  hasServedFile(device: string, file: string): boolean {
    return this.db.hasServedFile(device, file);
  }

  write(batch: Batch): Enforced {
    const db = this.db;
    db.transaction(() => {
      for (const t of batch.traffic) db.addTraffic(t);
      for (const r of batch.requests) {
        // A request outside any install is a request row here: one process sees every half of its installs.
        const { time, device, method, path, status, cache, count, bytes } = r;
        db.addRequests({ time, device, method, path, status, cache, count, bytes });
      }
      for (const f of batch.files) db.addServedFile(f.device, f.file, f.time);
      for (const s of batch.seen) db.touchDevice(s.device, s.time);
      for (const i of batch.installs) db.saveInstall(i.row, i.requests);
    });
    let enforced: Enforced;
    try {
      enforced = db.enforce();
    } finally {
      try {
        this.#size = db.sizeOnDisk();
      } catch {
        // The size stays as it was last read.
      }
    }
    this.#dropped.rows += enforced.rows;
    this.#dropped.devices += enforced.devices;
    return enforced;
  }

  recover(e: unknown): boolean {
    if (!isCorruption(e)) return false;
    // The database logs where the file went (its `onReplaced`).
    this.db.replaceCorrupt((e as Error)?.message ?? String(e));
    return true;
  }

  prune(cutoff: number): number {
    return this.db.prune(cutoff);
  }

  settle(): Promise<void> {
    return Promise.resolve();
  }

  installs(q: InstallQuery): Promise<SitedInstall[]> {
    if (q.site !== undefined && q.site !== this.site) return Promise.resolve([]);
    return Promise.resolve(this.db.installs(q).map((row) => ({ ...row, site: this.site })));
  }

  devices(site?: string): Promise<DeviceRow[]> {
    if (site !== undefined && site !== this.site) return Promise.resolve([]);
    return Promise.resolve(this.db.devices().map((d) => ({ site: this.site, name: null, ...d })));
  }

  devicePackages(pkg?: string, site?: string): Promise<DevicePackage[]> {
    if (site !== undefined && site !== this.site) return Promise.resolve([]);
    return Promise.resolve(this.db.devicePackages(pkg).map((p) => ({ site: this.site, ...p })));
  }

  requestCount(): Promise<number> {
    return Promise.resolve(this.db.requestCount());
  }

  figures(): EngineFigures {
    return {
      engine: "sqlite",
      size_bytes: this.#size,
      max_bytes: this.db.maxBytes,
      rows_dropped: this.#dropped.rows,
      devices_forgotten: this.#dropped.devices,
    };
  }

  close(): Promise<void> {
    this.db.close();
    return Promise.resolve();
  }
}
