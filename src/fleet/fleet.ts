/**
 * The fleet: install records, the device inventory and who runs which version of a package, as the queries and the
 * status page show them.
 * @module
 */
import type { InstallQuery, Records, SitedInstall } from "../records/records.ts";
import type { InstallRecorder } from "./installs.ts";
import { isOutdated } from "./versions.ts";

/** An install as answered: times in ISO 8601, the device's name. */
export interface InstallView extends Omit<SitedInstall, "started_at" | "finished_at"> {
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
  /** The site whose server saw it (`audit.site`, or that server's host name). */
  site: string;
  device: string;
  name: string | null;
  last_seen: string;
  packages: DevicePackageView[];
}

/** What a {@linkcode Fleet} reads. */
export interface FleetOptions {
  records: Records | null;
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
    return this.#o.records !== null;
  }

  /** The records' engine (null without records), for tests and troubleshooting. */
  get records(): Records | null {
    return this.#o.records;
  }

  /** The site this server records as. */
  get site(): string | null {
    return this.#o.records?.site ?? null;
  }

  /** The name configured for `device` at this server's site, if any. */
  nameOf(device: string): string | null {
    return this.#o.names[device] ?? null;
  }

  /** A device's name: this site's `devices:` for its own, else the name its own site recorded. */
  #name(site: string, device: string, recorded: string | null = null): string | null {
    return (site === this.site ? this.nameOf(device) : null) ?? recorded;
  }

  /**
   * Brings the records up to this moment: the worker threads' requests, then the recorder's batch, then (PostgreSQL)
   * the outbox, for a few seconds at most.
   */
  async settle(): Promise<void> {
    await this.#o.gather?.();
    await this.#o.recorder.flush();
    await this.#o.records?.settle();
  }

  /** Installs matching `q`, newest first. */
  async installs(q: InstallQuery): Promise<InstallView[]> {
    await this.settle();
    if (!this.#o.records) return [];
    const rows = await this.#o.records.installs(q);
    // Other sites' devices are named as their own servers recorded them.
    const names = new Map<string, string | null>();
    if (rows.some((r) => r.site !== this.site)) {
      for (const d of await this.#o.records.devices()) names.set(`${d.site}\n${d.device}`, d.name);
    }
    return rows.map((row) => ({
      ...row,
      device_name: this.#name(row.site, row.device, names.get(`${row.site}\n${row.device}`)),
      started_at: iso(row.started_at)!,
      finished_at: iso(row.finished_at)!,
    }));
  }

  /**
   * The inventory: every device, its site and name, when it was last seen, and per package its version and flags
   * (of one site's devices with `site`).
   */
  async devices(pkg?: string, site?: string): Promise<DeviceView[]> {
    await this.settle();
    const records = this.#o.records;
    if (!records) return [];
    let latest: Map<string, string>;
    try {
      latest = await this.#o.latest();
    } catch {
      latest = new Map();
    }
    const byDevice = new Map<string, DeviceView>();
    const [devices, packages] = await Promise.all([records.devices(site), records.devicePackages(pkg, site)]);
    for (const d of devices) {
      byDevice.set(`${d.site}\n${d.device}`, {
        site: d.site,
        device: d.device,
        name: this.#name(d.site, d.device, d.name),
        last_seen: iso(d.last_seen)!,
        packages: [],
      });
    }
    for (const row of packages) {
      const key = `${row.site}\n${row.device}`;
      const view = byDevice.get(key) ??
        {
          site: row.site,
          device: row.device,
          name: this.#name(row.site, row.device),
          last_seen: iso(row.last_attempt_at)!,
          packages: [],
        };
      byDevice.set(key, view);
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
