/**
 * Builds the fleet room for an app: the install records (database, recorder, queries), the status page's figures,
 * the admin key check and the trusted-proxy rule, and adds the fleet routes. `app.ts` hands the result to the
 * request handler (`access`, `clientOf`, `tap`) and the request log (`listener`).
 * @module
 */
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
import { AuditDb, type Enforced } from "./audit_db.ts";
import { cachedFigures } from "./cache_figures.ts";
import { Fleet } from "./fleet.ts";
import { UpstreamHealth } from "./health.ts";
import { InstallRecorder, type RecordFigures } from "./installs.ts";
import { CidrSet, clientAddress } from "./net.ts";
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
  /** The install records' SQLite file. */
  recordsPath: string;
  index: IndexService;
  resolver: Resolver;
  compiler: CompileService;
  /** Gathers requests the edge worker threads answered. */
  gather?: () => Promise<void>;
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

/** Opens the install records (pruning old ones), and adds the fleet routes and the status page to `w.router`. */
export function createFleet(w: FleetWiring): FleetParts {
  const { config, logger, now, store, compiler } = w;
  const stats = new Stats();
  const upstreamHealth = new UpstreamHealth();
  let db: AuditDb | null = null;
  let dropped: Enforced | undefined;
  if (config.audit.enabled) {
    try {
      ({ db, dropped } = openRecords(w.recordsPath, config, logger));
    } catch (e) {
      logger.error("Cannot open the install records; serving without them", { error: (e as Error).message });
    }
  }
  const recorder = new InstallRecorder({
    db,
    stats,
    logger,
    now,
    windowMs: config.audit.window,
    retentionMs: config.audit.retention,
    dropped,
  });
  recorder.prune();
  registerRecordMetrics(w.metrics, recorder);
  const fleet = new Fleet({
    db,
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
          enabled: db !== null,
          window_ms: config.audit.window,
          retention_ms: config.audit.retention,
          records: recorder.figures(),
        },
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
      db?.close();
    },
  };
}

/**
 * Opens the install records within `audit.max_size` and `audit.max_devices`. A file far over its budget (written
 * before the bound, or after the setting was lowered) is cut to it and rewritten once, which is logged.
 */
function openRecords(path: string, config: Config, logger: Logger): { db: AuditDb; dropped?: Enforced } {
  const db = new AuditDb(path, {
    maxBytes: config.audit.max_size,
    maxDevices: config.audit.max_devices,
    keepDevices: Object.keys(config.devices),
    onReplaced: (movedTo, reason) =>
      logger.warn("Install records were corrupt: moved aside, a new file started", { moved_to: movedTo, reason }),
  });
  const before = db.sizeOnDisk();
  if (before <= db.maxBytes) return { db };
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
  return { db, dropped };
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
}
