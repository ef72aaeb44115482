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
import { RepoService } from "./packages/repo_service.ts";
import { addIndexRoutes } from "./routes/index_api.ts";
import { addRepoRoutes } from "./routes/repo_api.ts";
import { addOpsRoutes } from "./routes/ops.ts";
import { Fetcher } from "./upstream/fetcher.ts";
import { VERSION } from "./version.ts";

/** What an app is built from. */
export interface AppOptions {
  config: Config;
  logger: Logger;
  /** Wall clock in milliseconds (default: `Date.now`). */
  now?: () => number;
}

/** A built app. */
export interface App {
  handler: ServeHandler;
  router: Router;
  metrics: Metrics;
  requestLog: RequestLog;
  store: DiskStore;
  index: IndexService;
  /** Waits for background refreshes and prefetches to finish. */
  idle(): Promise<void>;
}

/** Builds the router, cache, upstream client, request log and metrics for `config`, and opens the cache. */
export async function createApp(options: AppOptions): Promise<App> {
  const now = options.now ?? Date.now;
  const started = now();
  const { config, logger } = options;
  const router = new Router();
  const metrics = new Metrics();
  const requestLog = new RequestLog(config.log.requests_kept);
  const store = new DiskStore(config.cache.dir, { now, memoryBytes: config.cache.memory });
  const leftovers = await store.open();
  if (leftovers > 0) logger.warn("Removed unfinished cache writes left by an earlier crash", { files: leftovers });
  const fetcher = new Fetcher({
    connectTimeout: config.upstreams.connect_timeout,
    timeout: config.upstreams.timeout,
    retries: config.upstreams.retries,
    maxSize: config.upstreams.max_size,
    logger,
    onAttempt: (url, status, seconds) => {
      metrics.upstream.inc({ host: url.host, status: String(status) });
      metrics.upstreamDuration.observe({ host: url.host }, seconds);
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
  addIndexRoutes(router, index);
  const repos = new RepoService({ cache, fetcher, github: config.upstreams.github, gitlab: config.upstreams.gitlab });
  addRepoRoutes(router, repos, { publicUrl: config.server.public_url, port: config.server.port });
  addOpsRoutes(router, {
    version: VERSION,
    cacheDir: config.cache.dir,
    requestLog,
    metrics,
    uptime: () => now() - started,
  });
  const handler = createHandler(router, { logger, requestLog, metrics, now });
  return { handler, router, metrics, requestLog, store, index, idle: () => index.idle() };
}
