/**
 * Builds the fleet room for an app: the install records (database, recorder, queries), the status page's figures,
 * the admin key check and the trusted-proxy rule, and adds the fleet routes. `app.ts` hands the result to the
 * request handler (`access`, `clientOf`, `tap`) and the request log (`listener`).
 * @module
 */
import type { LockFacts } from "../packages/lock_file.ts";
import type { CompileService } from "../compile/compile_service.ts";
import type { ObjectStore } from "../store/object_store.ts";
import type { Config } from "../config/schema.ts";
import type { HandlerDeps } from "../http/server.ts";
import type { Metrics } from "../http/metrics.ts";
import * as prom from "../http/prometheus.ts";
import type { Router } from "../http/router.ts";
import type { Logger } from "../log.ts";
import type { IndexService } from "../packages/index_service.ts";
import type { Resolver } from "../packages/resolver.ts";
import { AdminAccess, isAdminPath } from "./access.ts";
import type { Records } from "../records/records.ts";
import { SqliteRecords } from "../records/sqlite/mod.ts";
import { cachedFigures } from "./cache_figures.ts";
import { Fleet } from "./fleet.ts";
import { UpstreamHealth } from "./health.ts";
import { InstallRecorder, type RecordFigures } from "./installs.ts";
import { CidrSet, clientAddress } from "./net.ts";
import { dirname, join } from "node:path";
import { addFleetRoutes } from "./routes.ts";
import { Stats } from "./stats.ts";

/** What the fleet room reads from the rest of the app. */
export interface FleetWiring {
  config: Config;
  logger: Logger;
  now: () => number;
  /** When the app started (ms, from `now`). */
  started: number;
  version: string;
  router: Router;
  metrics: Metrics;
  store: ObjectStore;
  /** The install records' SQLite file (with `audit.database`, the outbox beside it is `records-outbox.sqlite`). */
  recordsPath: string;
  /** The environment: `PGPASSWORD` and `PGPASSFILE` for `audit.database`. */
  env?: Record<string, string | undefined>;
  index: IndexService;
  resolver: Resolver;
  compiler: CompileService;
  /** Gathers requests the edge worker threads answered. */
  gather?: () => Promise<void>;
  /** The lock in force (`policy.lock` or `policy.lock_url`): its figures and signer, for the status page. */
  lockFacts?: () => LockFacts;
}

/** The fleet room of an app. */
export interface FleetParts {
  fleet: Fleet;
  recorder: InstallRecorder;
  access: AdminAccess;
  /** Counts upstream attempts for the status page (the fetcher's `onAttempt`). */
  upstreamHealth: UpstreamHealth;
  /** What the request handler takes from the fleet room. */
  handlerDeps: Pick<HandlerDeps, "access" | "clientOf" | "tap">;
  /** Writes the records still waiting and closes the database. */
  close(): Promise<void>;
}

/**
 * This server's site name: `audit.site`, else the host name (with `--allow-sys=hostname`), else `/etc/hostname`, else
 * `local`.
 */
export function siteName(configured: string | null): string {
  if (configured !== null) return configured;
  try {
    return Deno.hostname();
  } catch {
    try {
      const name = Deno.readTextFileSync("/etc/hostname").trim();
      if (/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name)) return name;
    } catch {
      // Not readable here.
    }
  }
  return "local";
}

/**
 * Opens the install records: SQLite in the cache dir, or (`audit.database`) PostgreSQL through an outbox beside it,
 * whose modules and driver are loaded only then. Null (logged) when they cannot be opened: devices are served all
 * the same.
 */
async function openRecords(w: FleetWiring): Promise<Records | null> {
  const { config, logger, now } = w;
  const site = siteName(config.audit.site);
  const keepDevices = Object.keys(config.devices);
  try {
    if (config.audit.database === null) {
      return SqliteRecords.open({
        path: w.recordsPath,
        site,
        logger,
        maxBytes: config.audit.max_size,
        maxDevices: config.audit.max_devices,
        keepDevices,
      });
    }
    const { PostgresRecords } = await import("../records/postgres/mod.ts");
    return PostgresRecords.open({
      url: config.audit.database,
      env: w.env ?? {},
      outboxPath: join(dirname(w.recordsPath), "records-outbox.sqlite"),
      site,
      logger,
      now,
      maxBytes: config.audit.max_size,
      maxRows: config.audit.max_rows ?? undefined,
      maxDevices: config.audit.max_devices,
      keepDevices: Object.fromEntries(keepDevices.map((d) => [d, config.devices[d]])),
      windowMs: config.audit.window,
      timeoutMs: config.upstreams.timeout,
    });
  } catch (e) {
    logger.error("Cannot open the install records; serving without them", { error: (e as Error).message });
    return null;
  }
}

/** Opens the install records (pruning old ones), and adds the fleet routes and the status page to `w.router`. */
export async function createFleet(w: FleetWiring): Promise<FleetParts> {
  const { config, logger, now, store, compiler } = w;
  const stats = new Stats();
  const upstreamHealth = new UpstreamHealth();
  const records = config.audit.enabled ? await openRecords(w) : null;
  const recorder = new InstallRecorder({
    records,
    stats,
    logger,
    now,
    windowMs: config.audit.window,
    retentionMs: config.audit.retention,
  });
  recorder.prune();
  registerRecordMetrics(w.metrics, recorder);
  const fleet = new Fleet({
    records,
    recorder,
    names: config.devices,
    gather: w.gather,
    latest: async () => {
      const doc = JSON.parse(new TextDecoder().decode((await w.resolver.indexJson()).body));
      const out = new Map<string, string>();
      for (const p of Array.isArray(doc.packages) ? doc.packages : []) {
        if (typeof p?.name === "string" && typeof p.version === "string") out.set(p.name, p.version);
      }
      // Under policy.lock the index above already lists the locked versions, which win over pins.
      if (config.policy.lock === null) {
        for (const [name, version] of Object.entries(config.pins)) out.set(name, version);
      }
      return out;
    },
  });
  const cacheFigures = cachedFigures(() => store.usage(), 60_000, now);
  addFleetRoutes(w.router, {
    fleet,
    facts: async () => {
      await fleet.settle();
      const t = now();
      const hosts = upstreamHealth.hosts();
      const indexHosts = new Set<string>();
      const upstreams = await Promise.all(
        w.index.indexKeys().map(async ({ url, key }) => {
          const host = new URL(url).host;
          indexHosts.add(host);
          const stored = await store.get(key).catch(() => undefined);
          return {
            url,
            host,
            health: hosts.find((h) => h.host === host) ?? null,
            index_age_ms: stored ? t - stored.storedAt : null,
          };
        }),
      );
      return {
        version: w.version,
        uptimeMs: t - w.started,
        now: t,
        upstreams,
        otherHosts: hosts.filter((h) => !indexHosts.has(h.host)),
        cache: await cacheFigures().catch(() => null),
        requests: stats.requests,
        hitRatio: stats.lookups ? stats.hits / stats.lookups : null,
        spans: stats.spans(t),
        errors: stats.errors(),
        compiler: {
          version: compiler.version?.text ?? null,
          mpy: compiler.version ? `${compiler.version.major}.${compiler.version.minor}` : null,
        },
        profiles: compiler.profiles(),
        audit: {
          enabled: records !== null,
          window_ms: config.audit.window,
          retention_ms: config.audit.retention,
          records: recorder.figures(),
        },
        lock: w.lockFacts?.() ?? null,
      };
    },
  });
  const access = new AdminAccess({ token: config.server.admin_token, from: config.server.admin_from, logger, now });
  const trusted = new CidrSet(config.server.trusted_proxies);
  return {
    fleet,
    recorder,
    access,
    upstreamHealth,
    handlerDeps: {
      access: { isAdmin: isAdminPath, check: (request, client, inProcess) => access.check(request, client, inProcess) },
      clientOf: trusted.size
        ? (socket, request) => clientAddress(socket, request.headers.get("x-forwarded-for"), trusted)
        : undefined,
      tap: recorder.tap,
    },
    async close() {
      await recorder.stop();
      await records?.close();
    },
  };
}

/** The records' figures in `/metrics`, read at scrape time. */
function registerRecordMetrics(metrics: Metrics, recorder: InstallRecorder): void {
  const registers = [metrics.registry];
  new prom.Gauge({
    name: "mipserver_records_bytes",
    help: "Bytes of the install records' database and its WAL (as of the last batch).",
    registers,
    collect() {
      this.set(recorder.figures().size_bytes);
    },
  });
  new prom.Gauge({
    name: "mipserver_records_max_bytes",
    help: "audit.max_size: the install records are kept within it.",
    registers,
    collect() {
      this.set(recorder.figures().max_bytes ?? 0);
    },
  });
  const counters: [string, string, keyof RecordFigures][] = [
    [
      "mipserver_records_rows_dropped_total",
      "Install record rows deleted early to stay within audit.max_size.",
      "rows_dropped",
    ],
    [
      "mipserver_records_devices_forgotten_total",
      "Devices forgotten to stay within audit.max_devices.",
      "devices_forgotten",
    ],
    [
      "mipserver_records_requests_not_kept_total",
      "Requests counted but not kept for the install records (too many waiting).",
      "requests_not_kept",
    ],
    [
      "mipserver_records_requests_unwritten_total",
      "Requests in batches the install records could not write.",
      "requests_unwritten",
    ],
  ];
  for (const [name, help, key] of counters) {
    new prom.Counter({
      name,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(recorder.figures()[key] as number);
      },
    });
  }
  if (recorder.figures().engine !== "postgres") return;
  // With audit.database: the shared database's state and the local outbox in front of it.
  const db = () => recorder.figures().database!;
  const gauges: [string, string, () => number][] = [
    [
      "mipserver_records_database_up",
      "1 when the last batch reached the install records' PostgreSQL database, else 0.",
      () => (db().state === "ok" ? 1 : 0),
    ],
    [
      "mipserver_records_outbox_batches",
      "Batches of install records waiting in the local outbox for the database.",
      () => db().waiting_batches,
    ],
    [
      "mipserver_records_outbox_requests",
      "Device requests in the batches waiting in the local outbox.",
      () => db().waiting_requests,
    ],
    [
      "mipserver_records_outbox_oldest_seconds",
      "How long the oldest batch in the local outbox has waited.",
      () => db().oldest_waiting_ms / 1000,
    ],
  ];
  for (const [name, help, value] of gauges) {
    new prom.Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(value());
      },
    });
  }
  const totals: [string, string, () => number][] = [
    [
      "mipserver_records_sent_batches_total",
      "Batches of install records sent to the database.",
      () => db().sent_batches,
    ],
    [
      "mipserver_records_outbox_refused_requests_total",
      "Device requests in batches the full local outbox could not keep.",
      () => db().requests_refused,
    ],
  ];
  for (const [name, help, value] of totals) {
    new prom.Counter({
      name,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(value());
      },
    });
  }
}
