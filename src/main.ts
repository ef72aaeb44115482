/**
 * mipserver's entry point: parses the command line, loads the configuration, starts the server and shuts it
 * down gracefully on SIGTERM or SIGINT; SIGHUP reads `policy.lock` again.
 * @module
 */
import { stringify as toYaml } from "yaml";
import { createApp } from "./app.ts";
import { parseArgs, USAGE } from "./cli.ts";
import { ConfigError, ENV_OVERRIDES, loadConfig } from "./config/load.ts";
import { displayConfig } from "./config/schema.ts";
import { batchedStdout, createLogger } from "./log.ts";
import { autoWorkers, configSettings, listen, type Listener } from "./edge/mod.ts";
import { VERSION } from "./version.ts";

/**
 * The environment variables mipserver reads, one by one, so that a binary compiled with `--allow-env=<these>` works
 * (reading the whole environment would need `--allow-env` without a list).
 */
export const ENV_READ: string[] = [
  ...Object.keys(ENV_OVERRIDES),
  "MIPSERVER_CONFIG",
  "CONFIGURATION_DIRECTORY",
  "CACHE_DIRECTORY",
  "PATH",
  // The S3 credentials, for cache.store: s3.
  "AWS_ACCESS_KEY_ID",
  "AWS_SECRET_ACCESS_KEY",
  "AWS_SESSION_TOKEN",
  // The install records' PostgreSQL password, when not in audit.database's URL.
  "PGPASSWORD",
  "PGPASSFILE",
];

function readEnv(): Record<string, string | undefined> {
  return Object.fromEntries(ENV_READ.map((name) => [name, Deno.env.get(name)]));
}

/** Asks the local server's /healthz; 0 when it answers 200 with status ok. */
async function healthcheck(port: number): Promise<number> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(5000) });
    const body = await res.json();
    if (res.status === 200 && body.status === "ok") return 0;
    console.error(`mipserver: /healthz answered ${res.status}: ${JSON.stringify(body)}`);
  } catch (e) {
    console.error(`mipserver: no answer from http://127.0.0.1:${port}/healthz: ${(e as Error).message}`);
  }
  return 1;
}

/** Runs mipserver with `args`; resolves to the process exit code once the server has stopped. */
export async function main(args: string[]): Promise<number> {
  const command = parseArgs(args);
  switch (command.kind) {
    case "help":
      console.log(USAGE);
      return 0;
    case "version":
      console.log(`mipserver ${VERSION}`);
      return 0;
    case "error":
      console.error(`mipserver: ${command.message}`);
      return 2;
    case "keygen": {
      // Needs no configuration: a key is made (or read) at the office, away from any server's config.
      const { runKeygen } = await import("./bundle/keygen.ts");
      return await runKeygen(command);
    }
  }

  const env = readEnv();
  let loaded;
  try {
    loaded = loadConfig({ configPath: command.configPath, env, overrides: command.overrides });
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    console.error(
      `mipserver: invalid configuration (${e.problems.length} problem${e.problems.length > 1 ? "s" : ""}):`,
    );
    for (const problem of e.problems) console.error(`  ${problem}`);
    return 1;
  }
  const { config, files, warnings } = loaded;

  if (command.kind === "check-config") {
    console.log(`# files: ${files.length ? files.join(", ") : "(none: built-in defaults)"}`);
    for (const w of warnings) console.log(`# warning: ${w}`);
    console.log(toYaml(displayConfig(config)).trimEnd());
    return 0;
  }

  if (command.kind === "healthcheck") return await healthcheck(config.server.port);
  // The commands' modules are loaded only when asked for: a server does not hold them in memory.
  if (command.kind === "lock" || command.kind === "purge") {
    const { runLockCommand } = await import("./bundle/lock_commands.ts");
    return await runLockCommand(command, config, env);
  }
  if (command.kind === "warm" || command.kind === "export" || command.kind === "import") {
    const { runBundleCommand } = await import("./bundle/run.ts");
    return await runBundleCommand(command, config, env);
  }

  const out = batchedStdout();
  const logger = createLogger({ level: config.log.level, format: config.log.format, write: out.write });
  for (const w of warnings) logger.warn(w);
  logger.info("Starting mipserver", { version: VERSION, config: files.join(",") || "defaults" });
  let app;
  let server: Listener | undefined;
  try {
    // The listener comes after the app; until it exists there is nothing to gather.
    app = await createApp({ config, logger, env, gather: () => server?.flush() ?? Promise.resolve() });
  } catch (e) {
    logger.error("Cannot start", { cache: config.cache.dir, error: (e as Error).message });
    out.flush();
    return 1;
  }

  // Signals are heard from before the port opens: worker threads may answer a request (a health check, say) before
  // `listen` returns, and a SIGTERM right after it must still stop the server gracefully.
  let signalled: string | undefined;
  const stop = (signal: string) => {
    if (signalled) return;
    signalled = signal;
    logger.info("Shutting down", { signal });
    server?.shutdown();
  };
  const signals: Deno.Signal[] = ["SIGTERM", "SIGINT"];
  const listeners: (readonly [Deno.Signal, () => void])[] = signals.map((signal) => [signal, () => stop(signal)]);
  // SIGHUP reads policy.lock again: the new lock comes into force when it passes the checks it passed at start,
  // otherwise the lock before it stays in force and the log says why.
  const lock = app.lock;
  listeners.push(["SIGHUP", () => {
    if (!lock) logger.info("SIGHUP: there is no policy.lock to read again");
    else void lock.reload();
  }]);
  for (const [signal, listener] of listeners) Deno.addSignalListener(signal, listener);
  const unlisten = () => {
    for (const [signal, listener] of listeners) Deno.removeSignalListener(signal, listener);
  };

  const { host, port } = config.server;
  const workers = config.server.workers === "auto" ? autoWorkers() : config.server.workers;
  try {
    server = await listen({
      hostname: host,
      port,
      workers,
      handler: app.handler,
      logger,
      requestLog: app.requestLog,
      metrics: app.metrics,
      write: out.write,
      ...configSettings(config),
    });
  } catch (e) {
    unlisten();
    logger.error(`Cannot listen on ${host}:${port}`, { error: (e as Error).message });
    out.flush();
    return 1;
  }
  logger.info("Listening", { address: `${host}:${port}`, workers: server.workers });
  logger.info("Admin routes (/, /_/*, /metrics, /echo)", {
    ...app.access.describe(),
    trusted_proxies: config.server.trusted_proxies.length,
    install_records: config.audit.enabled ? "on" : "off",
  });
  app.startRecording();
  if (signalled) server.shutdown();
  await server.finished;
  unlisten();
  await app.idle();
  await app.close();
  logger.info("Stopped");
  out.flush();
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
