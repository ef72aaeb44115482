/**
 * mipserver's entry point: parses the command line, loads the configuration, starts the server and shuts it
 * down gracefully on SIGTERM or SIGINT.
 * @module
 */
import { stringify as toYaml } from "yaml";
import { createApp } from "./app.ts";
import { parseArgs, USAGE } from "./cli.ts";
import { ConfigError, loadConfig } from "./config/load.ts";
import { displayConfig } from "./config/schema.ts";
import { batchedStdout, createLogger } from "./log.ts";
import { VERSION } from "./version.ts";

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
  }

  let loaded;
  try {
    loaded = loadConfig({ configPath: command.configPath, env: Deno.env.toObject(), overrides: command.overrides });
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

  const out = batchedStdout();
  const logger = createLogger({ level: config.log.level, format: config.log.format, write: out.write });
  for (const w of warnings) logger.warn(w);
  logger.info("Starting mipserver", { version: VERSION, config: files.join(",") || "defaults" });
  let app;
  try {
    app = await createApp({ config, logger });
  } catch (e) {
    logger.error("Cannot open the cache", { dir: config.cache.dir, error: (e as Error).message });
    out.flush();
    return 1;
  }

  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname: config.server.host,
      port: config.server.port,
      onListen: ({ hostname, port }) => logger.info("Listening", { address: `${hostname}:${port}` }),
    }, (request, info) => app.handler(request, info));
  } catch (e) {
    logger.error(`Cannot listen on ${config.server.host}:${config.server.port}`, { error: (e as Error).message });
    out.flush();
    return 1;
  }

  const stop = (signal: string) => {
    logger.info("Shutting down", { signal });
    server.shutdown();
  };
  const signals: Deno.Signal[] = ["SIGTERM", "SIGINT"];
  const listeners = signals.map((signal) => [signal, () => stop(signal)] as const);
  for (const [signal, listener] of listeners) Deno.addSignalListener(signal, listener);
  await server.finished;
  for (const [signal, listener] of listeners) Deno.removeSignalListener(signal, listener);
  await app.idle();
  logger.info("Stopped");
  out.flush();
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
