/**
 * The compiled binary's permission set, exercised through `deno run` with exactly the flags in deploy/permissions
 * (these machines cannot download the `denort` runtime that `deno compile` needs), in a systemd-like environment:
 * config from $CONFIGURATION_DIRECTORY, cache in $CACHE_DIRECTORY, mpy-cross found on PATH, nothing else in the
 * environment.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ENV_READ } from "../../src/main.ts";
import { fetchWhenUp, freePort, tempDir } from "../helpers.ts";
import { mpyCrossPath } from "../e2e/tools.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const DENO = Deno.execPath();

/** The flags of deploy/permissions, as `make compile` passes them. */
function permissions(): string[] {
  return Deno.readTextFileSync(join(ROOT, "deploy/permissions")).split("\n").map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
}

Deno.test("deploy/permissions allows every environment variable mipserver reads", () => {
  const env = permissions().find((f) => f.startsWith("--allow-env="))!.slice("--allow-env=".length).split(",");
  for (const name of ENV_READ) assert.ok(env.includes(name), `${name} is read but not in --allow-env`);
});

Deno.test("deno task start, make run and the binary share the memory flags of deploy/permissions", () => {
  const memory = permissions().filter((f) => f.startsWith("--v8-flags=") || f === "--no-code-cache");
  assert.equal(memory.length, 2, "the --v8-flags and --no-code-cache lines");
  const tasks = JSON.parse(Deno.readTextFileSync(join(ROOT, "deno.json"))).tasks as Record<string, string>;
  const start = tasks.start.split(/\s+/);
  for (const flag of memory) assert.ok(start.includes(flag), `deno task start lacks ${flag}`);
  const makefile = Deno.readTextFileSync(join(ROOT, "Makefile"));
  assert.match(
    makefile,
    /^MEMORY_FLAGS := \$\(shell grep -E '\^--\(v8-flags\|no-code-cache\)' deploy\/permissions\)$/m,
  );
  assert.match(makefile, /\$\(DENO\) run \$\(RUN_FLAGS\) \$\(MEMORY_FLAGS\) --frozen src\/main\.ts/);
});

Deno.test("under the binary's permissions: systemd config and cache dirs, compiles, healthcheck; nothing more", async () => {
  const base = tempDir("mipserver-perm-");
  const etc = join(base, "etc");
  const cache = join(base, "cache");
  const pkg = join(base, "pkg");
  Deno.mkdirSync(etc);
  Deno.mkdirSync(pkg);
  Deno.writeTextFileSync(join(pkg, "permmod.py"), "def hi():\n    return 'hi'\n");
  // A package folder outside the allowed paths (/var/tmp is not among them, wherever the checkout is).
  const outsideDir = Deno.makeTempDirSync({ dir: "/var/tmp", prefix: "mipserver-outside-" });
  Deno.writeTextFileSync(join(outsideDir, "outside.py"), "X = 1\n");
  const port = freePort();
  Deno.writeTextFileSync(
    join(etc, "config.yaml"),
    [
      `server: {host: 127.0.0.1, port: ${port}, workers: 2}`,
      `upstreams: {index: "http://127.0.0.1:9/none", retries: 0}`,
      "packages:",
      `  permmod: {source: "local:${pkg}"}`,
      `  outside: {source: "local:${outsideDir}"}`,
    ].join("\n"),
  );
  Deno.writeTextFileSync(join(etc, "config.local.yaml"), "log: {format: json}\n");
  const env = {
    CONFIGURATION_DIRECTORY: etc,
    CACHE_DIRECTORY: cache,
    PATH: `${join(mpyCrossPath(), "..")}:/usr/bin:/bin`,
  };
  // The edge worker thread's module is read like a file (Deno checks --allow-read for worker scripts). Here it is
  // read from the checkout; the binary reads it from its embedded folder under the temp dir (deno-compile-<name>),
  // which the /tmp in --allow-read covers.
  const flags = permissions().map((f) => f.startsWith("--allow-read=") ? `${f},${join(ROOT, "src")}` : f);
  const args = ["run", "--quiet", "--frozen", "--config", join(ROOT, "deno.json"), ...flags];
  /** `mipserver <command>` under the binary's flags, in the systemd-like environment and nothing else. */
  const mipserver = (...command: string[]) =>
    new Deno.Command(DENO, {
      args: [...args, join(ROOT, "src/main.ts"), ...command],
      cwd: base,
      env,
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    });

  const check = await mipserver("check-config").output();
  const shown = new TextDecoder().decode(check.stdout);
  assert.equal(check.code, 0, new TextDecoder().decode(check.stderr));
  assert.match(shown, new RegExp(`# files: ${etc}/config.yaml, ${etc}/config.local.yaml`));
  assert.match(shown, new RegExp(`dir: ${cache}`));

  const server = mipserver().spawn();
  const output = Promise.all([new Response(server.stdout).text(), new Response(server.stderr).text()]);
  try {
    const health = await (await fetchWhenUp(`http://127.0.0.1:${port}/healthz`)).json();
    assert.equal(health.status, "ok");
    assert.equal(health.cache.dir, undefined, "/healthz shows no paths");
    assert.equal(health.cache.writable, true);
    assert.match(health.mpy_cross.version ?? "", /emitting mpy v6/, JSON.stringify(health.mpy_cross));

    const res = await fetch(`http://127.0.0.1:${port}/package/6/permmod/latest.json`);
    const manifest = await res.json();
    assert.equal(res.status, 200, JSON.stringify(manifest));
    assert.deepEqual(manifest.hashes.map(([d]: string[]) => d), ["permmod.mpy"], "compiled under --allow-run");
    assert.ok([...Deno.readDirSync(join(cache, "files"))].length > 0, "objects written to $CACHE_DIRECTORY");

    const outside = await fetch(`http://127.0.0.1:${port}/package/6/outside/latest.json`);
    const why = await outside.text();
    assert.notEqual(outside.status, 200, "a folder outside the allowed paths cannot be read");
    assert.match(why, /read access|NotCapable|permission/i);

    const probe = await mipserver("healthcheck").output();
    assert.equal(probe.code, 0, new TextDecoder().decode(probe.stderr));
  } finally {
    try {
      server.kill("SIGTERM");
    } catch {
      // It already stopped; its output below says why.
    }
    const status = await server.status;
    Deno.removeSync(outsideDir, { recursive: true });
    const [stdout, stderr] = await output;
    assert.equal(status.code, 0, `${stdout}\n${stderr}`);
    assert.doesNotMatch(stdout + stderr, /NotCapable.*(env|run|write)|PermissionDenied/, stdout + stderr);
    assert.match(stdout, /"msg":"Listening".*"workers":2/, `the edge worker threads did not listen:\n${stdout}`);
  }
});
