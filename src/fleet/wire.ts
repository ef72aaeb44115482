/**
 * Builds the fleet room for an app: the install records (database, recorder, queries), the status page's figures,
 * the admin key check and the trusted-proxy rule, and adds the fleet routes. `app.ts` hands the result to the
 * request handler (`access`, `clientOf`, `tap`) and the request log (`listener`).
 * @module
 */
import { join } from "node:path";
import type { CompileService } from "../compile/compile_service.ts";
import type { DiskStore } from "../cache/store.ts";
import type { Config } from "../config/schema.ts";
import type { HandlerDeps } from "../http/server.ts";
import type { Router } from "../http/router.ts";
import type { Logger } from "../log.ts";
import type { IndexService } from "../packages/index_service.ts";
import type { Resolver } from "../packages/resolver.ts";
import { AdminAccess, isAdminPath } from "./access.ts";
import { AuditDb } from "./audit_db.ts";
import { cachedFigures } from "./cache_figures.ts";
import { Fleet } from "./fleet.ts";
import { UpstreamHealth } from "./health.ts";
import { InstallRecorder } from "./installs.ts";
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
  store: DiskStore;
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
  if (config.audit.enabled) {
    try {
      db = new AuditDb(join(store.root, "audit.sqlite"));
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
  });
  recorder.prune();
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
  const cacheFigures = cachedFigures(store.root, 60_000, now);
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
        audit: { enabled: db !== null, window_ms: config.audit.window, retention_ms: config.audit.retention },
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
