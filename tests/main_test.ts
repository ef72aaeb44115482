import assert from "node:assert/strict";
import { join } from "node:path";
import { parseArgs } from "../src/cli.ts";
import { VERSION } from "../src/version.ts";
import { fetchWhenUp, freePort, tempDir } from "./helpers.ts";

const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const FLAGS = ["--allow-net", "--allow-read", "--allow-write", "--allow-env", "--allow-run"];

function mipserver(args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", ...FLAGS, MAIN, ...args],
    cwd: opts.cwd ?? tempDir(),
    env: { NO_COLOR: "1", ...opts.env },
    stdout: "piped",
    stderr: "piped",
  });
}

async function run(args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}) {
  const out = await mipserver(args, opts).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("parseArgs reads commands and options", () => {
  assert.deepEqual(parseArgs([]), { kind: "serve", configPath: undefined, overrides: {} });
  assert.deepEqual(parseArgs(["--config", "a.yaml", "--port", "9000"]), {
    kind: "serve",
    configPath: "a.yaml",
    overrides: { "server.port": "9000" },
  });
  assert.deepEqual(parseArgs(["check-config", "--config=b.yaml", "--host=127.0.0.1"]), {
    kind: "check-config",
    configPath: "b.yaml",
    overrides: { "server.host": "127.0.0.1" },
  });
  assert.deepEqual(parseArgs(["--help"]), { kind: "help" });
  assert.deepEqual(parseArgs(["--version"]), { kind: "version" });
  assert.deepEqual(parseArgs(["--port"]), { kind: "error", message: "--port needs a value" });
  assert.equal(parseArgs(["--frobnicate"]).kind, "error");
});

Deno.test("--version and --help print and exit 0; an unknown argument exits 2", async () => {
  const v = await run(["--version"]);
  assert.equal(v.code, 0);
  assert.equal(v.stdout.trim(), `mipserver ${VERSION}`);
  const h = await run(["--help"]);
  assert.equal(h.code, 0);
  assert.match(h.stdout, /check-config/);
  const bad = await run(["--frobnicate"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /Unknown argument "--frobnicate"/);
});

Deno.test("a bad configuration exits 1 with one line per problem and no stack trace", async () => {
  const dir = tempDir();
  Deno.writeTextFileSync(join(dir, "config.yaml"), "server:\n  port: abc\nlog: {level: loud}\n");
  const r = await run([], { cwd: dir });
  assert.equal(r.code, 1);
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines[0], "mipserver: invalid configuration (2 problems):");
  assert.equal(lines[1].trim(), `${join(dir, "config.yaml")}: server.port: expected a port number 1-65535, got "abc"`);
  assert.equal(
    lines[2].trim(),
    `${join(dir, "config.yaml")}: log.level: expected debug or info or warn or error, got "loud"`,
  );
  assert.equal(lines.length, 3);
  assert.ok(!/\bat .*:\d+:\d+/.test(r.stderr), r.stderr);
});

Deno.test("check-config prints the merged configuration with secrets redacted", async () => {
  const dir = tempDir();
  Deno.writeTextFileSync(join(dir, "config.yaml"), "server: {port: 1234}\n");
  Deno.writeTextFileSync(join(dir, "config.local.yaml"), "cache: {ttl: 2m}\n");
  const r = await run(["check-config"], { cwd: dir, env: { GITHUB_TOKEN: "ghp_verysecret" } });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /port: 1234/);
  assert.match(r.stdout, /ttl: 2m/);
  assert.match(r.stdout, /github_token: "?\[redacted\]"?/);
  assert.ok(!r.stdout.includes("ghp_verysecret"));
});

/**
 * Starts main.ts in a folder holding `config` as config.yaml, on a free port, waits until /healthz answers and hands
 * the child, the port and that first answer to `test`; a server left running by a failing test is killed.
 */
async function withServer(
  config: string,
  test: (child: Deno.ChildProcess, port: number, res: Response) => Promise<void>,
): Promise<void> {
  const port = freePort();
  const dir = tempDir();
  Deno.writeTextFileSync(join(dir, "config.yaml"), config);
  const child = mipserver(["--port", String(port)], { cwd: dir }).spawn();
  try {
    await test(child, port, await fetchWhenUp(`http://127.0.0.1:${port}/healthz`));
  } catch (e) {
    try {
      child.kill("SIGKILL");
      await child.output();
    } catch { /* already gone */ }
    throw e;
  }
}

Deno.test("the server starts, answers, and shuts down gracefully on SIGTERM, even while threads still start", async () => {
  // With 8 worker threads the first answers while the others still start: the SIGTERM below comes in that window.
  await withServer(`server: {host: 127.0.0.1, workers: 8}\ncache: {dir: ./cache}\n`, async (child, _port, res) => {
    assert.equal(res.status, 200);
    assert.equal((await res.json()).cache.writable, true);
    child.kill("SIGTERM");
    const out = await child.output();
    assert.equal(out.code, 0);
    const stdout = new TextDecoder().decode(out.stdout);
    assert.match(stdout, /Shutting down signal=SIGTERM/);
    assert.match(stdout, /Stopped/);
    assert.match(stdout, /GET \/healthz 200/);
    assert.match(
      stdout,
      /Admin routes .*admin="no token set: loopback clients only"/,
      "the start-up log names the mode",
    );
  });
});

Deno.test("SIGINT (Ctrl-C) shuts the server down gracefully: exit 0, logged, the port released", async () => {
  // server.workers 0 (the default): the main thread serves; the SIGTERM test above has worker threads.
  await withServer(`server: {host: 127.0.0.1}\ncache: {dir: ./cache}\n`, async (child, port, res) => {
    assert.equal(res.status, 200);
    assert.equal((await res.json()).status, "ok");
    child.kill("SIGINT");
    const out = await child.output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    // Without main.ts's listener, SIGINT would kill the process (signal SIGINT, code 130) with no shutdown.
    assert.deepEqual({ code: out.code, signal: out.signal }, { code: 0, signal: null }, `${stdout}\n${stderr}`);
    const lines = stdout.trim().split("\n");
    const shutting = lines.findIndex((l) => / INFO {2}Shutting down signal=SIGINT$/.test(l));
    assert.ok(shutting >= 0, stdout);
    assert.match(lines.at(-1)!, / INFO {2}Stopped$/, "the last line says it stopped");
    assert.ok(shutting < lines.length - 1);
    assert.equal(stderr, "");
    // Stopped listening: the port can be bound again.
    Deno.listen({ hostname: "127.0.0.1", port }).close();
  });
});

/** The output of a server start that failed: exit 1, one ERROR line, nothing listening, and no stack trace. */
function failedStart(r: { code: number; stdout: string; stderr: string }): string {
  const all = `${r.stdout}\n${r.stderr}`;
  assert.equal(r.code, 1, all);
  const errors = r.stdout.split("\n").filter((l) => / ERROR /.test(l));
  assert.equal(errors.length, 1, all);
  assert.doesNotMatch(all, /^\s+at /m, "a stack trace");
  assert.doesNotMatch(all, / Listening /);
  assert.equal(r.stderr, "");
  return errors[0];
}

Deno.test("start failures exit 1 with one error line naming the cause, no stack trace: a port in use, a cache that cannot be made", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  try {
    const line = failedStart(await run(["--host", "127.0.0.1", "--port", String(port)]));
    assert.match(line, new RegExp(` ERROR Cannot listen on 127\\.0\\.0\\.1:${port} error="Address already in use`));
  } finally {
    listener.close();
  }

  const dir = tempDir();
  Deno.writeTextFileSync(join(dir, "afile"), "");
  Deno.writeTextFileSync(join(dir, "config.yaml"), "cache: {dir: ./afile/cache}\n");
  const line = failedStart(await run(["--host", "127.0.0.1", "--port", String(freePort())], { cwd: dir }));
  assert.ok(
    line.includes(` ERROR Cannot start cache=${join(dir, "afile/cache")} error="Not a directory`),
    `the cause is named: ${line}`,
  );
});

Deno.test("healthcheck exits 1 with a reason when no server answers on the configured port", async () => {
  const port = freePort();
  const r = await run(["healthcheck", "--port", String(port)]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`no answer from http://127\\.0\\.0\\.1:${port}/healthz`));
  assert.deepEqual(parseArgs(["healthcheck", "--port", "9"]), {
    kind: "healthcheck",
    configPath: undefined,
    overrides: { "server.port": "9" },
  });
});
