/** A server on 127.0.0.1 answering from the main thread only, for tests that need a running server but not threads. */
import { type App, createApp } from "../../src/app.ts";
import { configSettings, listen } from "../../src/edge/listen.ts";
import { memoryLogger } from "../../src/log.ts";
import { freePort, testConfig } from "../helpers.ts";

/** Serves `config` on 127.0.0.1 from the main thread (the purge runs beside it, as another process would). */
export async function serveMain(
  config: Record<string, unknown>,
): Promise<{ app: App; base: string; stop(): Promise<void> }> {
  const port = freePort();
  const full = testConfig({ ...config, server: { port } });
  const logger = memoryLogger();
  const app = await createApp({ config: full, logger });
  const server = await listen({
    hostname: "127.0.0.1",
    port,
    workers: 0,
    handler: app.handler,
    logger,
    requestLog: app.requestLog,
    metrics: app.metrics,
    write: () => {},
    ...configSettings(full),
  });
  return {
    app,
    base: `http://127.0.0.1:${port}`,
    async stop() {
      await server.shutdown();
      await app.idle();
    },
  };
}
