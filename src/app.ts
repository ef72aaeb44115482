/**
 * Wires the pieces into one request handler. Tests build an app and call `app.handler(new Request(...))`.
 * @module
 */
import { join } from "node:path";
import type { Config } from "./config/schema.ts";
import { Metrics } from "./http/metrics.ts";
import { RequestLog } from "./http/request_log.ts";
import { Router } from "./http/router.ts";
import { createHandler, type ServeHandler } from "./http/server.ts";
import type { Logger } from "./log.ts";
import { FreshCache } from "./cache/fresh_cache.ts";
import { DiskStore } from "./store/disk/mod.ts";
import type { ObjectStore } from "./store/object_store.ts";
import { type Leases, soloLeases } from "./store/lease.ts";
import type { SharedFigures } from "./store/tiered/mod.ts";
import { IndexService } from "./packages/index_service.ts";
import { NamedService, type Transform } from "./packages/named_service.ts";
import { PinnedFiles } from "./packages/pinned.ts";
import { ListedFiles } from "./packages/listed_files.ts";
import { Policy } from "./packages/policy.ts";
import { expireRef } from "./packages/refresh.ts";
import { RepoService } from "./packages/repo_service.ts";
import { dependenciesOf, Resolver } from "./packages/resolver.ts";
import { GuardedResolver } from "./packages/guarded_resolver.ts";
import { lockFileSource, LockInForce } from "./packages/lock_file.ts";
import { followLock } from "./packages/lock_url.ts";
import { REPO_HOST_NAMES, REPO_HOSTS } from "./packages/sources/registry.ts";
import type { HostBases } from "./packages/sources/source.ts";
import { allowedHosts, configuredHost, hostAllowlist, tokenHeaders, type TokenRule } from "./upstream/hosts.ts";
import { Breakers } from "./upstream/breaker.ts";
import { addIndexRoutes } from "./routes/index_api.ts";
import { addRepoRoutes } from "./routes/repo_api.ts";
import { addOpsRoutes } from "./routes/ops.ts";
import { Fetcher } from "./upstream/fetcher.ts";
import { VERSION } from "./version.ts";
import { CompileService } from "./compile/compile_service.ts";
import { findMpyCross } from "./compile/find.ts";
import { BundleLayer } from "./packages/layer.ts";
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
  /**
   * Environment: PATH for finding mpy-cross (default: none, so the configured or pinned one is used), and the
   * S3 credentials (`AWS_ACCESS_KEY_ID`, ...) for `cache.store: s3`.
   */
  env?: Record<string, string | undefined>;
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
  store: ObjectStore;
  index: IndexService;
  /** The named packages (`packages.<name>`). */
  named: NamedService;
  resolver: Resolver;
  compiler: CompileService;
  /** What `mipserver import` brought in. */
  imported: BundleLayer;
  /** `policy.lock`: the lock in force, read again on SIGHUP (`main.ts`); undefined without one. */
  lock?: LockInForce;
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

/** The cache folder (`loadConfig` always resolves it; tests may leave it to `.cache`). */
export function cacheDirOf(config: Config): string {
  return config.cache.dir ?? ".cache";
}

/** The store the cache is kept in, and how fills are shared out among the processes that use it. */
export interface CacheStore {
  store: ObjectStore;
  leases: Leases;
  /** The shared tier's figures (`cache.store: s3`), else undefined. */
  shared?: () => SharedFigures;
}

/**
 * The object store `config` sets, not yet opened: `cache.dir` on disk, or (`cache.store: s3`) the bucket behind
 * `cache.dir` as each replica's local tier, with leases in the bucket. The S3 modules are loaded only then. The
 * commands that work on the cache without a server (`import`, `purge`) pass `limit: false`: they leave
 * `cache.max_size` to the server, which knows what the lock and the pins protect.
 */
export async function storeFor(
  config: Config,
  options: {
    now?: () => number;
    logger?: Logger;
    protect?: (key: string) => boolean;
    limit?: boolean;
    env?: Record<string, string | undefined>;
    /** Told of every request to the shared store (for `/metrics`). */
    onRequest?: (method: string, status: number, seconds: number) => void;
  } = {},
): Promise<CacheStore> {
  const local = new DiskStore(cacheDirOf(config), {
    now: options.now,
    memoryBytes: config.cache.memory,
    maxBytes: options.limit === false ? null : config.cache.max_size,
    logger: options.logger,
    protect: options.protect,
  });
  if (config.cache.store !== "s3") return { store: local, leases: soloLeases };
  const env = options.env ?? {};
  const accessKeyId = env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY;
  if (!accessKeyId || !secretAccessKey) {
    throw new Error("cache.store is s3: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment");
  }
  const [{ S3Store }, { S3Leases }, { TieredStore }] = await Promise.all([
    import("./store/s3/mod.ts"),
    import("./store/s3/lease.ts"),
    import("./store/tiered/mod.ts"),
  ]);
  const s3 = config.cache.s3;
  const shared = new S3Store({
    endpoint: s3.endpoint,
    region: s3.region,
    bucket: s3.bucket!,
    prefix: s3.prefix,
    pathStyle: s3.path_style,
    accessKeyId,
    secretAccessKey,
    sessionToken: env.AWS_SESSION_TOKEN || undefined,
    now: options.now,
    logger: options.logger,
    // An S3 call waits at most 10 s for an answer (or between two pieces of a body), so a hanging store is known
    // down within seconds; upstreams.timeout when that is shorter.
    timeoutMs: Math.min(config.upstreams.timeout, 10_000),
    retries: 2,
    onRequest: options.onRequest,
  });
  const replica = crypto.randomUUID().slice(0, 8);
  const store = new TieredStore(local, shared, { now: options.now, logger: options.logger, replica });
  store.protect = options.protect ?? (() => false);
  const leases = new S3Leases(shared.client, shared.keyPrefix, {
    ttlMs: s3.lease_ttl,
    now: options.now,
    logger: options.logger,
    owner: replica,
  });
  return { store, leases, shared: () => store.shared() };
}

/** Builds the router, cache, upstream client, request log and metrics for `config`, and opens the cache. */
export async function createApp(options: AppOptions): Promise<App> {
  const now = options.now ?? Date.now;
  const started = now();
  const { config, logger } = options;
  const router = new Router();
  const metrics = new Metrics();
  const requestLog = new RequestLog(config.log.requests_kept);
  // policy.lock: read first, so a broken lock file stops the start before anything else (and the store can keep
  // what it needs: `lockProtects(lock.file)`).
  // Its signature is checked against policy.trusted_keys first (`packages/signing.ts`).
  const lockPath = config.policy.lock;
  const trust = { keys: config.policy.trusted_keys, required: config.policy.require_signed };
  let lock = lockPath === null ? undefined : await LockInForce.open(lockFileSource(lockPath), trust, logger, now);
  if (lock) {
    logger.info("Serving only what the lock file holds", {
      lock: lockPath,
      packages: Object.keys(lock.file.packages).length,
      signed_by: lock.signer?.keyId ?? null,
      signed_at: lock.signer?.signedAt ?? null,
    });
  }
  // One memory of which files manifests listed, for the pins, the policy and the guards.
  const listed = new ListedFiles();
  const pinned = new PinnedFiles(config.pins, listed);
  const cacheDir = cacheDirOf(config);
  let countS3: ((method: string, status: number, seconds: number) => void) | undefined;
  const { store, leases, shared } = await storeFor(config, {
    now,
    logger,
    env: options.env,
    onRequest: (method, status, seconds) => countS3?.(method, status, seconds),
    // What the lock or a pin names is never evicted by cache.max_size.
    protect: (key) => pinned.protects(key) || (lock?.protects(key) ?? false),
  });
  // policy.lock_url (a site following its central server's lock): fetched, or the copy the store kept from the last
  // fetch; read again every cache.ttl.
  let stopFollowing = () => {};
  if (config.policy.lock_url !== null) {
    ({ lock, stop: stopFollowing } = await followLock(config.policy.lock_url, {
      store,
      trust,
      logger,
      now,
      timeoutMs: config.upstreams.timeout,
      maxBytes: config.upstreams.max_size,
      everyMs: config.cache.ttl,
    }));
    logger.info("Following the lock at policy.lock_url", {
      lock_url: config.policy.lock_url,
      packages: Object.keys(lock.file.packages).length,
      signed_by: lock.signer?.keyId ?? null,
      signed_at: lock.signer?.signedAt ?? null,
    });
  }
  // Read before the store opens, so a size limit applied at open already keeps the pinned releases' files.
  await pinned.load(store);
  const leftovers = await store.open();
  if (leftovers > 0) logger.warn("Removed unfinished cache writes left by an earlier crash", { files: leftovers });
  metrics.watchCacheStore(() => store.stats());
  if (shared) countS3 = metrics.watchSharedStore(shared, () => leases.stats());
  const hosts = allowedHosts(config);
  const breakers = new Breakers({
    failures: config.upstreams.breaker.failures,
    openFor: config.upstreams.breaker.open_for,
    now,
    onChange: (host, from, to) => {
      const log = to === "open" ? logger.warn : logger.info;
      log("Upstream circuit breaker changed", { host, from, to });
    },
  });
  metrics.watchBreakers(breakers, hosts);

  let fleetParts: Awaited<ReturnType<typeof createFleet>> | undefined; // made once the resolver exists; counts upstream calls
  // Metrics and the status page name an attempt by the configured host it belongs to (a closed set), not by its port.
  const hostOf = configuredHost(hosts);
  const fetcher = new Fetcher({
    connectTimeout: config.upstreams.connect_timeout,
    timeout: config.upstreams.timeout,
    retries: config.upstreams.retries,
    maxSize: config.upstreams.max_size,
    logger,
    allowHost: hostAllowlist(hosts),
    breakers,
    breakerKey: hostOf,
    headersFor: tokenHeaders(tokenRules(config)),
    onAttempt: (url, status, seconds) => {
      const host = hostOf(url);
      metrics.upstream.inc({ host, status: String(status) });
      metrics.upstreamDuration.observe({ host }, seconds);
      fleetParts?.upstreamHealth.attempt(host, status, now());
    },
  });
  const cache = new FreshCache({
    store,
    leases,
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
    leases,
    logger,
    metrics,
  });
  await compiler.init();
  const bases: HostBases = Object.fromEntries(REPO_HOST_NAMES.map((name) => [name, config.upstreams[name]]));
  const repos = new RepoService({ cache, fetcher, bases, tagTtl: config.cache.tag_ttl });
  const named = new NamedService({
    packages: config.packages,
    pins: config.pins,
    cache,
    store,
    sources: { fetcher, bases, pypi: config.upstreams.pypi, logger },
    logger,
    transform: options.transform ?? compiler.transform,
    tagTtl: config.cache.tag_ttl,
  });
  const policy = new Policy({
    mode: config.policy.unlisted,
    roots: [...Object.keys(config.packages), ...Object.keys(config.pins)],
    depsOfName: (name) => dependenciesOf(index, named, config.pins, name),
    depsOfMirror: (path) => repos.mirrorDeps(path),
    ttl: config.cache.ttl,
    now,
    logger,
    listed,
  });
  const imported = new BundleLayer(store, now);
  await imported.load();
  const resolverOptions = {
    index,
    named,
    policy,
    pins: config.pins,
    store,
    pinned,
    imported,
    bases,
    mpyFor: (profile: string | null) => compiler.mpyFor(profile),
    checkMirrorDeps: (path: string) => repos.checkMirrorDeps(path),
  };
  const resolver = lock || config.policy.block.length > 0
    ? new GuardedResolver({
      ...resolverOptions,
      lock,
      block: config.policy.block,
      logger,
      ttl: config.cache.ttl,
      now,
      listed,
    })
    : new Resolver({ ...resolverOptions, logger });
  const publicUrl = config.server.public_url;
  // A profile is known when configured or when an imported bundle holds it.
  const checkProfile = (p: string) => imported.hasProfile(p) || compiler.checkProfile(p);
  addIndexRoutes(router, resolver, { publicUrl, port: config.server.port, checkProfile });
  addRepoRoutes(router, repos, {
    publicUrl,
    port: config.server.port,
    bases,
    check: async (path) => {
      await policy.checkMirror(path);
      if (resolver instanceof GuardedResolver) resolver.checkMirror(path);
    },
    logger,
    tagTtl: config.cache.tag_ttl,
    refresh: (spec) => expireRef(store, config.packages, spec),
    checkProfile,
    profileMirror: (target, profile, base) => resolver.profileMirror(target, profile, base),
    explain: (e, what) => imported.explain(e, what),
    urlsManifest: (mpy, name, version, profile, base) => resolver.urlsManifest(mpy, name, version, profile, base),
  });
  addOpsRoutes(router, {
    version: VERSION,
    cacheStats: () => store.stats(),
    writable: () => store.writable(),
    storeFacts: () => ({
      store: store.kind,
      ...(shared ? { shared: { location: store.location, ...shared() }, leases: leases.stats() } : {}),
    }),
    requestLog,
    metrics,
    uptime: () => now() - started,
    gather: options.gather,
    lock: lock && (() => lock!.facts()),
    lockText: () => lock?.text,
    health: () => ({
      mpy_cross: compiler.version
        ? { version: compiler.version.text, mpy: `${compiler.version.major}.${compiler.version.minor}` }
        : { error: "not available: .py sources are served uncompiled" },
      profiles: compiler.profiles(),
      upstreams: {
        breakers: Object.fromEntries([...hosts].sort().map((host) => [host, breakers.state(host)])),
      },
      ...(fleetParts && config.audit.enabled ? { records: fleetParts.recorder.figures() } : {}),
    }),
  });
  const parts = (fleetParts = await createFleet({
    config,
    logger,
    now,
    started,
    version: VERSION,
    router,
    metrics,
    store,
    recordsPath: join(cacheDir, "audit.sqlite"),
    env: options.env,
    index,
    resolver,
    compiler,
    gather: options.gather,
    lockFacts: lock && (() => lock!.facts()),
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
    named,
    resolver,
    compiler,
    imported,
    lock,
    fleet: parts.fleet,
    recorder: parts.recorder,
    access: parts.access,
    idle: () => index.idle(),
    startRecording: () => parts.recorder.start(),
    close: () => {
      stopFollowing();
      return parts.close();
    },
  };
}

/**
 * Each configured code-host token (`upstreams.<host>_token`) with the hosts it may go to: the host of
 * `upstreams.<host>` and the hosts its kind names (GitHub's own), never any other.
 */
function tokenRules(config: Config): TokenRule[] {
  const upstreams = config.upstreams as unknown as Record<string, string | null | undefined>;
  return REPO_HOSTS.flatMap((host): TokenRule[] => {
    const token = host.token ? upstreams[`${host.name}_token`] : undefined;
    if (!host.token || !token) return [];
    const base = new URL(upstreams[host.name] ?? host.defaultBase).host.toLowerCase();
    return [{ token, hosts: [base, ...(host.token.hosts ?? [])] }];
  });
}
