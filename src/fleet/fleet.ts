/**
 * The fleet: install records, the device inventory and who runs which version of a package, as the queries and the
 * status page show them.
 * @module
 */
import type { AuditDb, InstallQuery, InstallRow } from "./audit_db.ts";
import type { InstallRecorder } from "./installs.ts";
import { isOutdated } from "./versions.ts";

/** An install as answered: times in ISO 8601, the device's name. */
export interface InstallView extends Omit<InstallRow, "started_at" | "finished_at"> {
  device_name: string | null;
  started_at: string;
  finished_at: string;
}

/** One package on one device in the inventory. */
export interface DevicePackageView {
  package: string;
  /** The version last installed completely (null when no install of it was complete). */
  version: string | null;
  mpy: string | null;
  profile: string | null;
  installed_at: string | null;
  /** The newest version the index, a pin or the lock names (null when unknown). */
  latest: string | null;
  outdated: boolean;
  /** The status of the newest install of it. */
  last_status: string;
  last_attempt_at: string;
}

/** One device in the inventory. */
export interface DeviceView {
  device: string;
  name: string | null;
  last_seen: string;
  packages: DevicePackageView[];
}

/** What a {@linkcode Fleet} reads. */
export interface FleetOptions {
  db: AuditDb | null;
  recorder: InstallRecorder;
  /** `devices` from the config: names by address. */
  names: Record<string, string>;
  /** The newest version of each index or named package (pins applied): name → version. */
  latest: () => Promise<Map<string, string>>;
  /** Gathers requests the edge worker threads answered but have not handed over yet. */
  gather?: () => Promise<void>;
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

/** Answers the fleet queries from the install records. */
export class Fleet {
  #o: FleetOptions;

  constructor(options: FleetOptions) {
    this.#o = options;
  }

  /** Whether install records are kept (`audit.enabled`). */
  get enabled(): boolean {
    return this.#o.db !== null;
  }

  /** The name configured for `device`, if any. */
  nameOf(device: string): string | null {
    return this.#o.names[device] ?? null;
  }

  /** Brings the records up to this moment: the worker threads' requests, then the recorder's batch. */
  async settle(): Promise<void> {
    await this.#o.gather?.();
    await this.#o.recorder.flush();
  }

  /** Installs matching `q`, newest first. */
  async installs(q: InstallQuery): Promise<InstallView[]> {
    await this.settle();
    if (!this.#o.db) return [];
    return this.#o.db.installs(q).map((row) => ({
      ...row,
      device_name: this.nameOf(row.device),
      started_at: iso(row.started_at)!,
      finished_at: iso(row.finished_at)!,
    }));
  }

  /** The inventory: every device, its name, when it was last seen, and per package its version and flags. */
  async devices(pkg?: string): Promise<DeviceView[]> {
    await this.settle();
    const db = this.#o.db;
    if (!db) return [];
    let latest: Map<string, string>;
    try {
      latest = await this.#o.latest();
    } catch {
      latest = new Map();
    }
    const byDevice = new Map<string, DeviceView>();
    for (const d of db.devices()) {
      byDevice.set(d.device, {
        device: d.device,
        name: this.nameOf(d.device),
        last_seen: iso(d.last_seen)!,
        packages: [],
      });
    }
    for (const row of db.devicePackages(pkg)) {
      const view = byDevice.get(row.device) ??
        { device: row.device, name: this.nameOf(row.device), last_seen: iso(row.last_attempt_at)!, packages: [] };
      byDevice.set(row.device, view);
      const newest = latest.get(row.package) ?? null;
      view.packages.push({
        package: row.package,
        version: row.version,
        mpy: row.mpy,
        profile: row.profile,
        installed_at: iso(row.installed_at),
        latest: newest,
        outdated: isOutdated(row.version, newest),
        last_status: row.last_status,
        last_attempt_at: iso(row.last_attempt_at)!,
      });
    }
    const out = [...byDevice.values()];
    return pkg === undefined ? out : out.filter((d) => d.packages.length > 0);
  }
}
