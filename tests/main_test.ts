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

Deno.test("the server starts, answers, and shuts down gracefully on SIGTERM, even while threads still start", async () => {
  const port = freePort();
  const dir = tempDir();
  // With 8 worker threads the first answers while the others still start: the SIGTERM below comes in that window.
  Deno.writeTextFileSync(join(dir, "config.yaml"), `server: {host: 127.0.0.1, workers: 8}\ncache: {dir: ./cache}\n`);
  const child = mipserver(["--port", String(port)], { cwd: dir }).spawn();
  try {
    const res = await fetchWhenUp(`http://127.0.0.1:${port}/healthz`);
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
  } catch (e) {
    try {
      child.kill("SIGKILL");
      await child.output();
    } catch { /* already gone */ }
    throw e;
  }
});

Deno.test("a port already in use is reported, not a stack trace", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  try {
    const r = await run(["--host", "127.0.0.1", "--port", String(port)]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /Cannot listen on 127\.0\.0\.1:\d+/);
  } finally {
    listener.close();
  }
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
