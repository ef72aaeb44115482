import assert from "node:assert/strict";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { ConfigError, deepMerge, loadConfig } from "../../src/config/load.ts";
import { configSchema, displayConfig } from "../../src/config/schema.ts";
import { tempDir } from "../helpers.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

/** A folder with a config.yaml (and optionally a config.local.yaml). */
function folder(main: string, local?: string): string {
  const dir = tempDir();
  Deno.writeTextFileSync(join(dir, "config.yaml"), main);
  if (local !== undefined) Deno.writeTextFileSync(join(dir, "config.local.yaml"), local);
  return dir;
}

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${e}`);
    return e.problems;
  }
  assert.fail("expected the configuration to be rejected");
}

Deno.test("config.yaml holds exactly the schema defaults", () => {
  const fromFile = configSchema.parse(parseYaml(Deno.readTextFileSync(join(ROOT, "config.yaml"))));
  const fromSchema = configSchema.parse({});
  assert.deepEqual(fromFile, fromSchema);
});

Deno.test("every key in config.yaml carries a comment", () => {
  const lines = Deno.readTextFileSync(join(ROOT, "config.yaml")).split("\n");
  lines.forEach((line, i) => {
    if (/^\s+[a-z_]+:/.test(line)) {
      const before = lines[i - 1] ?? "";
      assert.ok(/^\s*#/.test(before), `key on line ${i + 1} has no comment above it: ${line.trim()}`);
    }
  });
});

Deno.test("defaults match the public contract", () => {
  const c = configSchema.parse({});
  assert.equal(c.server.host, "0.0.0.0");
  assert.equal(c.server.port, 18891);
  assert.equal(c.server.public_url, null);
  assert.equal(c.server.workers, 0);
  assert.equal(c.cache.dir, null, "null: $CACHE_DIRECTORY, else .cache beside the config file");
  assert.equal(c.cache.ttl, 600_000);
  assert.equal(c.cache.offline, false);
  assert.deepEqual(c.upstreams.index, ["https://micropython.org/pi/v2"]);
  assert.equal(c.upstreams.github, "https://raw.githubusercontent.com");
  assert.equal(c.upstreams.gitlab, "https://gitlab.com");
  assert.equal(c.upstreams.pypi, "https://pypi.org/pypi");
  assert.equal(c.policy.unlisted, "allow");
  assert.equal(c.mpy_cross.path, null);
  assert.equal(c.log.level, "info");
  assert.equal(c.log.format, "text");
  assert.equal(c.audit.max_size, 64 * 1024 * 1024);
  assert.equal(c.audit.max_devices, 10_000);
});

Deno.test("audit.max_size takes a size of at least 1MiB; audit.max_devices a whole number of at least 1; audit.max_rows null or at least 1000", () => {
  const audit = (a: Record<string, unknown>) => configSchema.parse({ audit: a }).audit;
  assert.equal(audit({ max_size: "2MiB" }).max_size, 2 * 1024 * 1024);
  assert.throws(() => audit({ max_size: "512KiB" }), /at least 1MiB/);
  assert.throws(() => audit({ max_size: "lots" }), /expected a size/);
  assert.equal(audit({ max_devices: 50 }).max_devices, 50);
  for (const bad of [0, -1, 1.5, "many"]) assert.throws(() => audit({ max_devices: bad }), `${bad} was taken`);
  assert.equal(audit({}).max_rows, null);
  assert.equal(audit({ max_rows: 250_000 }).max_rows, 250_000);
  for (const bad of [999, -1, 1.5, "many"]) {
    assert.throws(() => audit({ max_rows: bad }), /a whole number 1000-1000000000/, `${bad} was taken`);
  }
});

Deno.test("config.local.yaml deep-merges over config.yaml and keeps every other key", () => {
  const dir = folder(
    "server:\n  host: 127.0.0.1\n  port: 8000\ncache:\n  ttl: 5m\n",
    "server: {port: 9000}\n",
  );
  const { config, files } = loadConfig({ cwd: dir });
  assert.equal(config.server.port, 9000);
  assert.equal(config.server.host, "127.0.0.1");
  assert.equal(config.cache.ttl, 300_000);
  assert.equal(config.cache.negative_ttl, 60_000);
  assert.deepEqual(files, [join(dir, "config.yaml"), join(dir, "config.local.yaml")]);
});

Deno.test("deepMerge replaces lists and scalars, merges mappings", () => {
  const sources = new Map<string, string>();
  const out = deepMerge({ a: { b: 1, c: [1, 2] }, d: 1 }, { a: { c: [3] }, d: { e: 2 } }, "x", sources);
  assert.deepEqual(out, { a: { b: 1, c: [3] }, d: { e: 2 } });
  assert.equal(sources.get("a.c"), "x");
  assert.equal(sources.get("d.e"), "x");
});

Deno.test("--config names the file; config.local.yaml is read beside it", () => {
  const dir = folder("server: {port: 1111}\n", "log: {level: debug}\n");
  const elsewhere = tempDir();
  const { config } = loadConfig({ cwd: elsewhere, configPath: join(dir, "config.yaml") });
  assert.equal(config.server.port, 1111);
  assert.equal(config.log.level, "debug");
});

Deno.test("MIPSERVER_CONFIG names the file; --config wins over it", () => {
  const a = folder("server: {port: 2222}\n");
  const b = folder("server: {port: 3333}\n");
  const env = { MIPSERVER_CONFIG: join(a, "config.yaml") };
  assert.equal(loadConfig({ cwd: tempDir(), env }).config.server.port, 2222);
  assert.equal(loadConfig({ cwd: tempDir(), env, configPath: join(b, "config.yaml") }).config.server.port, 3333);
});

Deno.test("a named config file that does not exist is an error naming it", () => {
  const problems = problemsOf(() => loadConfig({ cwd: tempDir(), configPath: "nope.yaml" }));
  assert.deepEqual(problems, ["nope.yaml: config file not found (named by --config)"]);
  const viaEnv = problemsOf(() => loadConfig({ cwd: tempDir(), env: { MIPSERVER_CONFIG: "gone.yaml" } }));
  assert.deepEqual(viaEnv, ["gone.yaml: config file not found (named by MIPSERVER_CONFIG)"]);
});

Deno.test("without any config file the built-in defaults apply, with a warning", () => {
  const dir = tempDir();
  const { config, files, warnings } = loadConfig({ cwd: dir });
  assert.equal(config.server.port, 18891);
  assert.deepEqual(files, []);
  assert.match(warnings[0], /no config file found .*using the built-in defaults/);
  assert.equal(config.cache.dir, join(dir, ".cache"));
});

Deno.test("lookup order: --config, MIPSERVER_CONFIG, $CONFIGURATION_DIRECTORY, ./config.yaml, built-in", () => {
  const cwd = folder("server: {port: 4004}\n");
  const systemd = folder("server: {port: 3003}\n", "log: {level: debug}\n");
  const named = folder("server: {port: 2002}\n");
  const flag = folder("server: {port: 1001}\n");
  const env = { MIPSERVER_CONFIG: join(named, "config.yaml"), CONFIGURATION_DIRECTORY: systemd };
  const port = (o: Parameters<typeof loadConfig>[0]) => loadConfig(o).config.server.port;
  assert.equal(port({ cwd, env, configPath: join(flag, "config.yaml") }), 1001);
  assert.equal(port({ cwd, env }), 2002);
  const viaSystemd = loadConfig({ cwd, env: { CONFIGURATION_DIRECTORY: `${systemd}:/other` } });
  assert.equal(viaSystemd.config.server.port, 3003);
  assert.equal(viaSystemd.config.log.level, "debug", "config.local.yaml beside the systemd config is merged");
  assert.equal(port({ cwd, env: { CONFIGURATION_DIRECTORY: tempDir() } }), 4004, "an empty config dir is skipped");
  assert.equal(port({ cwd: tempDir() }), 18891);
});

Deno.test("the cache defaults to $CACHE_DIRECTORY under systemd; an explicit cache.dir wins", () => {
  const dir = folder("server: {port: 1}\n");
  assert.equal(
    loadConfig({ cwd: dir, env: { CACHE_DIRECTORY: "/var/cache/mipserver" } }).config.cache.dir,
    "/var/cache/mipserver",
  );
  assert.equal(loadConfig({ cwd: dir }).config.cache.dir, join(dir, ".cache"));
  const explicit = folder("cache: {dir: /srv/mip}\n");
  assert.equal(loadConfig({ cwd: explicit, env: { CACHE_DIRECTORY: "/var/cache/x" } }).config.cache.dir, "/srv/mip");
});

Deno.test("environment overrides beat the files; command line beats the environment", () => {
  const dir = folder("server: {port: 1000}\n");
  const env = {
    MIPSERVER_PORT: "2000",
    MIPSERVER_CACHE_DIR: "/var/cache/mip",
    MIPSERVER_OFFLINE: "true",
    MIPSERVER_LOG_LEVEL: "warn",
    MIPSERVER_LOG_FORMAT: "json",
    MIPSERVER_HOST: "127.0.0.1",
    MIPSERVER_INDEX: "http://a.example/pi, http://b.example/pi",
    GITHUB_TOKEN: "ghp_secret",
  };
  const { config } = loadConfig({ cwd: dir, env });
  assert.equal(config.server.port, 2000);
  assert.equal(config.cache.dir, "/var/cache/mip");
  assert.equal(config.cache.offline, true);
  assert.equal(config.log.level, "warn");
  assert.equal(config.log.format, "json");
  assert.equal(config.server.host, "127.0.0.1");
  assert.deepEqual(config.upstreams.index, ["http://a.example/pi", "http://b.example/pi"]);
  assert.equal(config.upstreams.github_token, "ghp_secret");
  const cli = loadConfig({ cwd: dir, env, overrides: { "server.port": "3000" } });
  assert.equal(cli.config.server.port, 3000);
});

Deno.test("a relative cache.dir is relative to the config file's folder", () => {
  const dir = folder("cache: {dir: ./store}\n");
  assert.equal(
    loadConfig({ cwd: tempDir(), configPath: join(dir, "config.yaml") }).config.cache.dir,
    join(dir, "store"),
  );
});

Deno.test("upstreams.index takes one URL or a list, trailing slashes dropped", () => {
  const one = loadConfig({ cwd: folder("upstreams: {index: 'http://127.0.0.1:9/pi/v2/'}\n") }).config;
  assert.deepEqual(one.upstreams.index, ["http://127.0.0.1:9/pi/v2"]);
  const two = loadConfig({ cwd: folder("upstreams:\n  index: [http://a.test/x, https://b.test/y]\n") }).config;
  assert.deepEqual(two.upstreams.index, ["http://a.test/x", "https://b.test/y"]);
});

Deno.test("packages, pins, targets and policy are validated", () => {
  const dir = folder(`
packages:
  sensorkit: {source: "github:acme/sensorkit", ref: v1.0}
  local-tools: {source: "local:/srv/tools"}
pins: {aioble: "0.5.2"}
policy: {unlisted: deny, allow_hosts: [Files.Example.com]}
targets:
  esp32: {march: xtensawin, opt: 2}
  pico: {march: armv6m, small_int_bits: 31}
`);
  const { config } = loadConfig({ cwd: dir });
  assert.deepEqual(config.packages.sensorkit, { source: "github:acme/sensorkit", ref: "v1.0" });
  assert.equal(config.packages["local-tools"].ref, null);
  assert.equal(config.pins.aioble, "0.5.2");
  assert.equal(config.policy.unlisted, "deny");
  assert.deepEqual(config.policy.allow_hosts, ["files.example.com"]);
  assert.deepEqual(config.targets.esp32, { march: "xtensawin", opt: 2, small_int_bits: null, mpy_cross: null });
});

Deno.test("each validation problem is one line naming the file and the key path", () => {
  const dir = folder(
    "server:\n  port: 80\n",
    `
server:
  port: abc
  prot: 1
cache:
  ttl: soon
  memory: lots
  offline: maybe
upstreams:
  index: [ftp://x]
  github: not a url
  retries: 99
policy: {unlisted: sometimes}
packages:
  "bad name!": {source: "github:a/b"}
  good: {source: "svn:a/b"}
  noref: {ref: main}
targets:
  esp32: {march: z80, opt: 9}
log: {format: xml}
mystery: 1
`,
  );
  const local = join(dir, "config.local.yaml");
  const problems = problemsOf(() => loadConfig({ cwd: dir }));
  const expected = [
    `${local}: server.port: expected a port number 1-65535, got "abc"`,
    `${local}: server.prot: unknown key`,
    `${local}: cache.ttl: expected a duration such as 30s, 10m or 1h, got "soon"`,
    `${local}: cache.memory: expected a size such as 512KiB, 16MiB or 2GiB, got "lots"`,
    `${local}: cache.offline: expected true or false, got "maybe"`,
    `${local}: upstreams.index: expected an http(s) URL or a list of them, got ["ftp://x"]`,
    `${local}: upstreams.github: expected an http(s) URL, got "not a url"`,
    `${local}: upstreams.retries: expected a whole number 0-10, got 99`,
    `${local}: policy.unlisted: expected allow or deny, got "sometimes"`,
    `${local}: targets.esp32.march: expected x86 or x64 or armv6 or armv6m or armv7m or armv7em or armv7emsp or armv7emdp or xtensa or xtensawin or rv32imc or rv64imc or host, got "z80"`,
    `${local}: targets.esp32.opt: expected an optimisation level 0-3, got 9`,
    `${local}: log.format: expected text or json, got "xml"`,
    `${local}: mystery: unknown key`,
  ];
  for (const line of expected) {
    assert.ok(problems.includes(line), `missing problem:\n  ${line}\nin:\n  ${problems.join("\n  ")}`);
  }
  assert.ok(problems.some((p) => p.startsWith(`${local}: packages.bad name!`)), problems.join("\n"));
  assert.ok(
    problems.some((p) => p.startsWith(`${local}: packages.good.source: expected a source`)),
    problems.join("\n"),
  );
  assert.ok(
    problems.includes(
      `${local}: packages.noref.source: expected a source such as github:owner/repo[/path], gitlab:owner/repo[/path], codeberg:owner/repo[/path], url:https://.../package.json, pypi:name or local:/dir, got nothing`,
    ),
    problems.join("\n"),
  );
  for (const p of problems) assert.ok(!p.includes("\n") && !/at .*\.ts:\d+/.test(p), `not one clean line: ${p}`);
});

Deno.test("a wrong type for a whole section is reported in words", () => {
  const problems = problemsOf(() => loadConfig({ cwd: folder("server: 8080\n") }));
  assert.equal(problems.length, 1);
  assert.match(problems[0], /config\.yaml: server: expected a mapping of keys, got 8080$/);
});

Deno.test("a problem from an environment variable names the variable", () => {
  const problems = problemsOf(() => loadConfig({ cwd: folder(""), env: { MIPSERVER_PORT: "70000" } }));
  assert.deepEqual(problems, [`environment MIPSERVER_PORT: server.port: expected a port number 1-65535, got "70000"`]);
});

Deno.test("server.workers takes auto or a whole number 0-64, also from MIPSERVER_WORKERS", () => {
  const workers = (value: unknown) => configSchema.parse({ server: { workers: value } }).server.workers;
  assert.equal(workers("auto"), "auto");
  assert.equal(workers(0), 0);
  assert.equal(workers("3"), 3);
  for (const bad of [-1, 65, 1.5, "many", true]) assert.throws(() => workers(bad), `${bad} was taken`);
  const { config } = loadConfig({ cwd: folder(""), env: { MIPSERVER_WORKERS: "0" } });
  assert.equal(config.server.workers, 0);
  const problems = problemsOf(() => loadConfig({ cwd: folder(""), env: { MIPSERVER_WORKERS: "lots" } }));
  assert.deepEqual(problems, [
    `environment MIPSERVER_WORKERS: server.workers: expected "auto" or a whole number 0-64, got "lots"`,
  ]);
});

Deno.test("unquoted versions keep their text in pins and refs; other numbers stay numbers", () => {
  const dir = folder(
    "server: {port: 9000}\npins:\n  aioble: 1.0\n  ntptime: 2.10\n" +
      "packages:\n  kit: {source: 'github:acme/kit', ref: 1.20}\n",
  );
  const { config } = loadConfig({ cwd: dir });
  assert.deepEqual(config.pins, { aioble: "1.0", ntptime: "2.10" });
  assert.equal(config.packages.kit.ref, "1.20");
  assert.equal(config.server.port, 9000);
});

Deno.test("broken YAML names the file, line and column", () => {
  const dir = folder("server:\n  port: 1\n", "server:\n  port: [1, 2\ncache: {}\n");
  const problems = problemsOf(() => loadConfig({ cwd: dir }));
  assert.equal(problems.length, 1);
  assert.match(
    problems[0],
    new RegExp(`^${join(dir, "config.local.yaml").replaceAll(".", "\\.")}:\\d+:\\d+: broken YAML: `),
  );
});

Deno.test("duplicate keys and a non-mapping top level are refused", () => {
  const dup = problemsOf(() => loadConfig({ cwd: folder("server: {}\nserver: {}\n") }));
  assert.match(dup[0], /config\.yaml:2:1: broken YAML: .*[Uu]nique/);
  const list = problemsOf(() => loadConfig({ cwd: folder("- a\n- b\n") }));
  assert.match(list[0], /config\.yaml: expected a mapping of keys at the top level$/);
});

Deno.test("an empty config file means all defaults", () => {
  assert.equal(loadConfig({ cwd: folder("# nothing here\n") }).config.server.port, 18891);
});

Deno.test("displayConfig shows units as text and redacts secrets", () => {
  const shown = displayConfig(configSchema.parse({ upstreams: { github_token: "ghp_abc" }, cache: { ttl: "90s" } }));
  const upstreams = shown.upstreams as Record<string, unknown>;
  const cache = shown.cache as Record<string, unknown>;
  assert.equal(upstreams.github_token, "[redacted]");
  assert.equal(upstreams.max_size, "16MiB");
  assert.equal(cache.ttl, "90s");
  assert.ok(!JSON.stringify(shown).includes("ghp_abc"));
});

Deno.test("the seed's PACKAGENAME_TO_GITHUB_REPO list is read as packages, with a deprecation warning", () => {
  const dir = folder(
    [
      "PACKAGENAME_TO_GITHUB_REPO:",
      "  - {packagename: micropysensorbase, githubrepo: vroomfondel/micropysensorbase}",
      "  - {packagename: other, githubrepo: 'https://github.com/acme/other.git'}",
      "  - {packagename: kept, githubrepo: acme/ignored}",
      "packages:",
      "  kept: {source: 'gitlab:grp/kept'}",
      "TIMEZONE: Europe/Berlin",
      "UVICORN: {port: 18999, reload: true}",
    ].join("\n"),
  );
  const { config, warnings } = loadConfig({ cwd: dir });
  assert.equal(config.packages.micropysensorbase.source, "github:vroomfondel/micropysensorbase");
  assert.equal(config.packages.other.source, "github:acme/other");
  assert.equal(config.packages.kept.source, "gitlab:grp/kept", "an explicit packages entry wins");
  assert.equal(config.server.port, 18999);
  assert.ok(warnings.some((w) => /PACKAGENAME_TO_GITHUB_REPO is deprecated/.test(w)), warnings.join("\n"));
  assert.ok(warnings.some((w) => /TIMEZONE .*ignored/.test(w)), warnings.join("\n"));

  const bad = folder("PACKAGENAME_TO_GITHUB_REPO:\n  - {packagename: x}\n");
  assert.match(problemsOf(() => loadConfig({ cwd: bad }))[0], /PACKAGENAME_TO_GITHUB_REPO\.0: expected/);
});

Deno.test("a relative local: source is relative to the config file's folder", () => {
  const dir = folder("packages:\n  mine: {source: 'local:./pkgs/mine'}\n");
  assert.equal(loadConfig({ cwd: dir }).config.packages.mine.source, `local:${join(dir, "pkgs/mine")}`);
});

Deno.test("sources, refs and pins are checked per kind, so check-config catches them before devices do", () => {
  const ok = folder(
    [
      "packages:",
      "  a: {source: 'github:acme/kit', ref: v1.2}",
      "  b: {source: 'gitlab:grp/proj/sub/dir'}",
      "  c: {source: 'url:https://files.example.com/x/package.json'}",
      "  d: {source: 'pypi:micropython-umqtt.simple'}",
      "  e: {source: 'local:/srv/pkgs/e'}",
      "pins: {hello: 1.0, other: '2.0-rc1'}",
    ].join("\n"),
  );
  const { config } = loadConfig({ cwd: ok });
  assert.equal(config.packages.a.ref, "v1.2");
  assert.equal(config.pins.hello, "1.0", "an unquoted version lost its text");
  const bad = folder(
    [
      "packages:",
      "  a: {source: 'github:acme'}",
      "  b: {source: 'url:ftp://x/y'}",
      "  c: {source: 'pypi:no spaces'}",
      "  d: {source: 'github:acme/kit/../../x'}",
      "  e: {source: 'github:acme/kit', ref: '../main'}",
      "  f: {source: 'local:/srv/f', ref: main}",
      "pins: {hello: 'a b', f: '1.0'}",
    ].join("\n"),
  );
  const problems = problemsOf(() => loadConfig({ cwd: bad }));
  for (const key of ["packages.a.source", "packages.b.source", "packages.c.source", "packages.d.source"]) {
    assert.ok(problems.some((p) => p.includes(`${key}: expected a source`)), `${key}: ${problems.join("\n")}`);
  }
  assert.ok(problems.some((p) => p.includes("packages.e.ref: expected a branch, tag or commit")), problems.join("\n"));
  assert.ok(problems.some((p) => p.includes("pins.hello: expected a version")), problems.join("\n"));
  assert.ok(
    problems.some((p) => p.includes("packages.f.ref: url: and local: sources have no versions")),
    problems.join("\n"),
  );
});

Deno.test("server.admin_token under 16 characters or about 64 bits is refused at start, saying how to make one, never showing it", () => {
  const refusal = (length: number, bits: number, what = "short") =>
    `server.admin_token: too ${what} to resist guessing (${length} characters, about ${bits} bits; at least 16 ` +
    `characters and 64 bits are needed); make one with: openssl rand -hex 16`;
  const viaEnv = (token: string) => loadConfig({ cwd: folder(""), env: { MIPSERVER_ADMIN_TOKEN: token } });
  assert.deepEqual(problemsOf(() => viaEnv("pw12")), [`environment MIPSERVER_ADMIN_TOKEN: ${refusal(4, 20)}`]);
  const fifteen = problemsOf(() => loadConfig({ cwd: folder("server: {admin_token: Kx7-pQ2m_Zr9wLe}\n") }));
  assert.equal(fifteen.length, 1);
  assert.ok(fifteen[0].endsWith(`config.yaml: ${refusal(15, 98)}`), fifteen[0]);
  assert.ok(!fifteen[0].includes("Kx7-pQ2m_Zr9wLe"), "the token is in the message");
  // Long enough, but guessable by the estimate: digits only (10 possible), or a shorter text repeated.
  const weak: [string, number, number][] = [
    ["4829301756284910", 16, 53],
    ["4829301756284910375", 19, 63],
    ["12345678901234567890", 20, 33],
    ["passwordpassword", 16, 37],
    ["xxxxxxxxxxxxxxxxxxxxxxxx", 24, 4],
  ];
  for (const [token, length, bits] of weak) {
    const problems = problemsOf(() => viaEnv(token));
    assert.deepEqual(problems, [`environment MIPSERVER_ADMIN_TOKEN: ${refusal(length, bits, "predictable")}`]);
    assert.ok(!problems[0].includes(token));
  }
  // What `openssl rand -hex 16` prints (32 hex digits: at least 106 bits by the estimate, even if all are digits),
  // 16 hex digits (64 random bits; 82 by the estimate, which sees 36 possible characters), 20 digits (about 66 bits).
  const random = crypto.getRandomValues(new Uint8Array(16));
  const opensslRandHex16 = Array.from(random, (b) => b.toString(16).padStart(2, "0")).join("");
  const strong = [opensslRandHex16, "9f86d081884c7d65", "9F86D081884C7D65", "48293017562849103756", "Kx7-pQ2m_Zr9wLeT"];
  for (const token of strong) {
    assert.equal(viaEnv(token).config.server.admin_token, token);
  }
  assert.equal(configSchema.parse({}).server.admin_token, null, "no token stays allowed");
});
