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
import { addOpsRoutes } from "./routes/ops.ts";
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
}

/** Builds the router, request log and metrics for `config`. */
export function createApp(options: AppOptions): App {
  const now = options.now ?? Date.now;
  const started = now();
  const { config, logger } = options;
  const router = new Router();
  const metrics = new Metrics();
  const requestLog = new RequestLog(config.log.requests_kept);
  addOpsRoutes(router, {
    version: VERSION,
    cacheDir: config.cache.dir,
    requestLog,
    metrics,
    uptime: () => now() - started,
  });
  const handler = createHandler(router, { logger, requestLog, metrics, now });
  return { handler, router, metrics, requestLog };
}
