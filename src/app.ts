/**
 * Wires the pieces into one request handler. Tests build an app and call `app.handler(new Request(...))`.
 * @module
 */
import type { Config } from "./config/schema.ts";
import { Metrics } from "./http/metrics.ts";
import { RequestLog } from "./http/request_log.ts";
import { Router } from "./http/router.ts";
import { createHandler, type ServeHandler } from "./http/server.ts";
import type { Logger } from "./log.ts";
import { FreshCache } from "./cache/fresh_cache.ts";
import { DiskStore } from "./cache/store.ts";
import { IndexService } from "./packages/index_service.ts";
import { NamedService, type Transform } from "./packages/named_service.ts";
import { Policy } from "./packages/policy.ts";
import { RepoService } from "./packages/repo_service.ts";
import { dependenciesOf, Resolver } from "./packages/resolver.ts";
import { allowedHosts, hostAllowlist, tokenHeaders } from "./upstream/hosts.ts";
import { addIndexRoutes } from "./routes/index_api.ts";
import { addRepoRoutes } from "./routes/repo_api.ts";
import { addOpsRoutes } from "./routes/ops.ts";
import { Fetcher } from "./upstream/fetcher.ts";
import { VERSION } from "./version.ts";
import { CompileService } from "./compile/compile_service.ts";
import { findMpyCross } from "./compile/find.ts";
import { createFleet } from "./fleet/wire.ts";
import type { AdminAccess, Fleet, InstallRecorder } from "./fleet/mod.ts";

/** What an app is built from. */
export interface AppOptions {
  config: Config;
  logger: Logger;
  /** Wall clock in milliseconds (default: `Date.now`). */
  now?: () => number;
  /** Replaces the compile step for named packages' files (default: mpy-cross as configured). */
  transform?: Transform;
  /** Environment for finding mpy-cross on PATH (default: none, so the configured or pinned one is used). */
  env?: { PATH?: string };
  /**
   * Gathers requests answered outside this handler (the listener's edge worker threads) into the request log and
   * metrics; `/_/requests` and `/metrics` wait for it, so they show every request up to that moment.
   */
  gather?: () => Promise<void>;
}

/** A built app. */
export interface App {
  handler: ServeHandler;
  router: Router;
  metrics: Metrics;
  requestLog: RequestLog;
  store: DiskStore;
  index: IndexService;
  resolver: Resolver;
  compiler: CompileService;
  /** Install records and the inventory. */
  fleet: Fleet;
  recorder: InstallRecorder;
  /** Who may use the admin routes. */
  access: AdminAccess;
  /** Waits for background refreshes and prefetches to finish. */
  idle(): Promise<void>;
  /** Starts writing install records in batches (about once a second) and pruning them every minute. */
  startRecording(): void;
  /** Writes the install records still waiting and closes their database. */
  close(): Promise<void>;
}

/** Builds the router, cache, upstream client, request log and metrics for `config`, and opens the cache. */
export async function createApp(options: AppOptions): Promise<App> {
  const now = options.now ?? Date.now;
  const started = now();
  const { config, logger } = options;
  const router = new Router();
  const metrics = new Metrics();
  const requestLog = new RequestLog(config.log.requests_kept);
  const cacheDir = config.cache.dir ?? ".cache"; // loadConfig always resolves it; tests may leave it to this
  const store = new DiskStore(cacheDir, { now, memoryBytes: config.cache.memory });
  const leftovers = await store.open();
  if (leftovers > 0) logger.warn("Removed unfinished cache writes left by an earlier crash", { files: leftovers });
  let fleetParts: ReturnType<typeof createFleet> | undefined; // made once the resolver exists; counts upstream calls
  const fetcher = new Fetcher({
    connectTimeout: config.upstreams.connect_timeout,
    timeout: config.upstreams.timeout,
    retries: config.upstreams.retries,
    maxSize: config.upstreams.max_size,
    logger,
    allowHost: hostAllowlist(allowedHosts(config)),
    headersFor: tokenHeaders(config),
    onAttempt: (url, status, seconds) => {
      metrics.upstream.inc({ host: url.host, status: String(status) });
      metrics.upstreamDuration.observe({ host: url.host }, seconds);
      fleetParts?.upstreamHealth.attempt(url.host, status, now());
    },
  });
  const cache = new FreshCache({
    store,
    logger,
    metrics,
    now,
    ttl: config.cache.ttl,
    negativeTtl: config.cache.negative_ttl,
    offline: config.cache.offline,
  });
  const index = new IndexService({
    indexes: config.upstreams.index,
    cache,
    fetcher,
    logger,
    prefetch: config.cache.prefetch,
  });
  await index.init();
  const compiler = new CompileService({
    path: findMpyCross(config.mpy_cross.path, options.env),
    timeout: config.mpy_cross.timeout,
    concurrency: config.mpy_cross.concurrency || navigator.hardwareConcurrency || 1,
    onError: config.mpy_cross.on_error,
    targets: config.targets,
    store,
    logger,
    metrics,
  });
  await compiler.init();
  const bases = { github: config.upstreams.github, gitlab: config.upstreams.gitlab };
  const repos = new RepoService({ cache, fetcher, ...bases });
  const named = new NamedService({
    packages: config.packages,
    pins: config.pins,
    cache,
    store,
    sources: { fetcher, bases, pypi: config.upstreams.pypi, logger },
    logger,
    transform: options.transform ?? compiler.transform,
  });
  const policy = new Policy({
    mode: config.policy.unlisted,
    roots: [...Object.keys(config.packages), ...Object.keys(config.pins)],
    depsOfName: (name) => dependenciesOf(index, named, config.pins, name),
    depsOfMirror: (path) => repos.mirrorDeps(path),
    ttl: config.cache.ttl,
    now,
    logger,
  });
  const resolver = new Resolver({ index, named, policy, pins: config.pins, store });
  const publicUrl = config.server.public_url;
  addIndexRoutes(router, resolver, {
    publicUrl,
    port: config.server.port,
    checkProfile: (p) => compiler.checkProfile(p),
  });
  addRepoRoutes(router, repos, {
    publicUrl,
    port: config.server.port,
    bases,
    check: (path) => policy.checkMirror(path),
  });
  addOpsRoutes(router, {
    version: VERSION,
    cacheDir,
    requestLog,
    metrics,
    uptime: () => now() - started,
    gather: options.gather,
    health: () => ({
      mpy_cross: compiler.version
        ? { version: compiler.version.text, mpy: `${compiler.version.major}.${compiler.version.minor}` }
        : { error: "not available: .py sources are served uncompiled" },
      profiles: compiler.profiles(),
    }),
  });
  const parts = (fleetParts = createFleet({
    config,
    logger,
    now,
    started,
    version: VERSION,
    router,
    store,
    index,
    resolver,
    compiler,
    gather: options.gather,
  }));
  requestLog.listener = parts.recorder.push;
  const handler = createHandler(router, { logger, requestLog, metrics, now, ...parts.handlerDeps });
  return {
    handler,
    router,
    metrics,
    requestLog,
    store,
    index,
    resolver,
    compiler,
    fleet: parts.fleet,
    recorder: parts.recorder,
    access: parts.access,
    idle: () => index.idle(),
    startRecording: () => parts.recorder.start(),
    close: () => parts.close(),
  };
}
