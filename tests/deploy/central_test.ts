/**
 * deploy/central/: what can be checked of the central-site example without a Docker engine or root. The compose file
 * parses and runs 3 replicas of the mipserver image (each its own cache volume, one config, the S3 keys from the
 * environment), nginx and an S3 service; the S3 service's command, run with the pinned SeaweedFS, serves the bucket
 * to those keys alone and honours If-None-Match; both nginx files pass `nginx -t` and the compose one really sends a
 * request that a replica fails to another; the template unit passes `systemd-analyze verify`, is hardened like the
 * gateway's and its per-instance folders and port reach the configuration.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { loadConfig } from "../../src/config/load.ts";
import { S3Store } from "../../src/store/s3/mod.ts";
import { weedBinary } from "../fixtures/seaweed.ts";
import { freePort, tempDir } from "../helpers.ts";
import { runTool as run } from "../e2e/tools.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const CENTRAL = join(ROOT, "deploy/central");
const read = (path: string) => Deno.readTextFileSync(join(ROOT, path));
const NGINX = existsSync("/usr/sbin/nginx") ? "/usr/sbin/nginx" : "nginx";

interface Service {
  image?: string;
  build?: string;
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
  depends_on?: string[];
}

const COMPOSE = parseYaml(read("deploy/central/compose.yaml"), { merge: true }) as {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
};
/** The image the single-box compose file runs: the replicas run the same one. */
const IMAGE =
  (parseYaml(read("deploy/compose.yaml")) as { services: Record<string, Service> }).services.mipserver.image;
const replicaNames = () => Object.entries(COMPOSE.services).filter(([, s]) => s.image === IMAGE).map(([n]) => n);
const s3Service = () => Object.entries(COMPOSE.services).find(([, s]) => s.image?.startsWith("chrislusf/seaweedfs:"));
/** The value of `-name=value` in a command. */
const flag = (command: string[], name: string) =>
  command.filter((a) => a.startsWith(`-${name}=`)).at(-1)?.slice(name.length + 2);

/** The configuration a replica of compose.yaml runs with: the image's /app/config.yaml and the mounted overrides. */
function composeConfig() {
  const app = tempDir("mipserver-central-app-");
  Deno.copyFileSync(join(ROOT, "config.yaml"), join(app, "config.yaml"));
  Deno.copyFileSync(join(CENTRAL, "config.local.yaml"), join(app, "config.local.yaml"));
  return loadConfig({ configPath: join(app, "config.yaml") }).config;
}

Deno.test("compose: 3 replicas of the image (own cache volume, one config, keys from the environment), nginx, S3", () => {
  const replicas = replicaNames();
  assert.deepEqual(replicas, ["mipserver-1", "mipserver-2", "mipserver-3"]);
  const caches = new Set<string>();
  for (const name of replicas) {
    const s = COMPOSE.services[name];
    assert.equal(s.build, "../..", `${name} builds the repository's Dockerfile`);
    assert.ok(existsSync(join(CENTRAL, s.build!, "Dockerfile")));
    const cache = s.volumes!.find((v) => v.endsWith(":/app/.cache"));
    assert.ok(cache, `${name} has a cache volume`);
    caches.add(cache.split(":")[0]);
    assert.ok(s.volumes!.includes("./config.local.yaml:/app/config.local.yaml:ro"), `${name} mounts the config`);
    for (const key of ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]) {
      assert.match(s.environment![key], new RegExp(`^\\$\\{${key}:\\?`), `${name}: ${key} required from the env`);
    }
    assert.ok(s.depends_on!.includes(s3Service()![0]));
  }
  assert.equal(caches.size, 3, "each replica its own local tier");
  for (const volume of [...caches]) assert.ok(volume in (COMPOSE.volumes ?? {}), `${volume} is declared`);

  const [s3Name, s3] = s3Service()!;
  const makefile = read("Makefile");
  const pinned = /^SEAWEEDFS_VERSION\s*:?=\s*(\S+)/m.exec(makefile)?.[1];
  assert.equal(s3.image, `chrislusf/seaweedfs:${pinned}`, "the SeaweedFS version the tests run");
  assert.equal(s3.command![0], "mini");
  for (const key of ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]) {
    assert.equal(s3.environment![key], COMPOSE.services["mipserver-1"].environment![key], `S3 and replicas: ${key}`);
  }

  const nginx = COMPOSE.services.nginx;
  assert.match(nginx.image!, /^nginx:/);
  assert.ok(nginx.volumes!.includes("./nginx.conf:/etc/nginx/conf.d/default.conf:ro"));
  assert.deepEqual(nginx.depends_on, replicas);
  assert.ok(nginx.ports!.includes("80:80"));

  // The replicas' configuration points at that service and its bucket, and nginx at every replica's port.
  const config = composeConfig();
  assert.equal(config.cache.store, "s3");
  const endpoint = new URL(config.cache.s3.endpoint!);
  assert.equal(endpoint.hostname, s3Name);
  assert.equal(endpoint.port, flag(s3.command!, "s3.port"));
  assert.equal(config.cache.s3.bucket, flag(s3.command!, "bucket"));
  const upstreams = [...read("deploy/central/nginx.conf").matchAll(/^\s*server ([^\s;{]+)[^{\n]*;/gm)].map((m) => m[1]);
  assert.deepEqual(upstreams, replicas.map((r) => `${r}:${config.server.port}`));
});

/** A stand-alone nginx.conf that includes `site` (with its sites-specific values replaced) and logs into `dir`. */
function nginxMain(dir: string, site: string): string {
  Deno.writeTextFileSync(join(dir, "site.conf"), site);
  const path = join(dir, "nginx.conf");
  Deno.writeTextFileSync(
    path,
    `pid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\ndaemon off;\nevents {}\nhttp {\n  access_log off;\n` +
      `  client_body_temp_path ${dir}/body;\n  proxy_temp_path ${dir}/proxy;\n  include ${dir}/site.conf;\n}\n`,
  );
  return path;
}

const active = (text: string) => text.split("\n").map((l) => l.replace(/#.*$/, "")).join("\n");

Deno.test("nginx.conf (compose): nginx -t passes, and a request a replica fails or answers 503 goes to another", async () => {
  const dir = tempDir("mipserver-central-nginx-");
  Deno.chmodSync(dir, 0o755); // nginx workers run unprivileged when the master runs as root
  const [dead, busy, live, front] = [freePort(), freePort(), freePort(), freePort()];
  const site = read("deploy/central/nginx.conf")
    .replace("server mipserver-1:18891", `server 127.0.0.1:${dead}`)
    .replace("server mipserver-2:18891", `server 127.0.0.1:${busy}`)
    .replace("server mipserver-3:18891", `server 127.0.0.1:${live}`)
    .replace("listen 80;", `listen 127.0.0.1:${front};`);
  assert.ok(!/mipserver-\d|listen 80;/.test(active(site)), "every site-specific value was replaced");
  assert.match(site, /proxy_next_upstream error timeout http_502 http_503;/);
  const conf = nginxMain(dir, site);
  const check = await run(NGINX, ["-t", "-c", conf]);
  assert.equal(check.code, 0, check.stderr);

  // One replica is down (nothing listens), one answers 503 (S3 down, say), one answers: every request is answered.
  const seen = { busy: 0, live: 0 };
  const servers = [
    Deno.serve({ hostname: "127.0.0.1", port: busy, onListen() {} }, () => {
      seen.busy++;
      return new Response("The shared store is down", { status: 503 });
    }),
    Deno.serve({ hostname: "127.0.0.1", port: live, onListen() {} }, (req) => {
      seen.live++;
      return new Response(`answered ${new URL(req.url).pathname}`);
    }),
  ];
  const nginx = new Deno.Command(NGINX, { args: ["-c", conf], stdout: "null", stderr: "piped" }).spawn();
  try {
    let first: Response | undefined;
    for (let i = 0; i < 100 && !first; i++) {
      first = await fetch(`http://127.0.0.1:${front}/healthz`).catch(() => undefined);
      if (!first) await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(first, "nginx answers");
    await first.body?.cancel();
    for (let i = 0; i < 6; i++) {
      const res = await fetch(`http://127.0.0.1:${front}/package/6/hello/latest.json`);
      assert.equal(res.status, 200);
      assert.equal(await res.text(), "answered /package/6/hello/latest.json");
    }
    assert.ok(seen.busy > 0, "the busy replica was asked too (round robin) and its 503 retried elsewhere");
    assert.equal((await fetch(`http://127.0.0.1:${front}/metrics`)).status, 403, "admin routes refused to devices");
  } finally {
    nginx.kill("SIGQUIT");
    await nginx.output();
    await Promise.all(servers.map((s) => s.shutdown()));
  }
});

Deno.test("nginx-central.conf (systemd) passes nginx -t and lists the instances' ports of the README", async () => {
  const dir = tempDir("mipserver-central-nginx-");
  Deno.chmodSync(dir, 0o755);
  const text = read("deploy/central/nginx-central.conf");
  const ports = [...text.matchAll(/^\s*server 127\.0\.0\.1:(\d+)/gm)].map((m) => m[1]);
  assert.deepEqual(ports, ["18901", "18902", "18903"]);
  const readme = read("deploy/central/README.md");
  assert.ok(readme.includes(`enable --now ${ports.map((p) => `mipserver@${p}`).join(" ")}`), "README starts them");
  assert.match(text, /proxy_next_upstream error timeout http_502 http_503;/);
  const site = text.replace("listen 80;", `listen 127.0.0.1:${freePort()};`)
    .replace("listen 18891;", `listen 127.0.0.1:${freePort()};`);
  assert.ok(!/listen (80|18891);/.test(active(site)));
  const check = await run(NGINX, ["-t", "-c", nginxMain(dir, site)]);
  assert.equal(check.code, 0, check.stderr);
});

const UNIT = read("deploy/central/mipserver@.service");

Deno.test("mipserver@.service: systemd-analyze verify reports nothing", async () => {
  // verify checks that ExecStart's program exists: point it at a stub in a temp folder.
  const dir = tempDir("mipserver-unit-");
  const stub = join(dir, "mipserver");
  Deno.writeTextFileSync(stub, "#!/bin/sh\nexit 0\n");
  Deno.chmodSync(stub, 0o755);
  const unit = join(dir, "mipserver@.service");
  Deno.writeTextFileSync(unit, UNIT.replace(/^ExecStart=\/usr\/local\/bin\/mipserver$/m, `ExecStart=${stub}`));
  assert.notEqual(Deno.readTextFileSync(unit), UNIT, "ExecStart was found and replaced");
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("systemd-analyze", { args: ["verify", unit], stdout: "piped", stderr: "piped" })
      .output();
  } catch (e) {
    throw new Error(`systemd-analyze is missing (apt-get install systemd): ${(e as Error).message}`);
  }
  const said = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, said);
  assert.equal(said.trim(), "", "no warnings either (unknown keys are only warnings)");
});

Deno.test("mipserver@.service: per-instance folders and port reach the configuration; hardened like the gateway", () => {
  for (
    const line of [
      "ExecStart=/usr/local/bin/mipserver",
      "Environment=MIPSERVER_PORT=%i",
      "EnvironmentFile=/etc/mipserver/s3.env",
      "ConfigurationDirectory=mipserver/%i",
      "CacheDirectory=mipserver/%i",
      "WorkingDirectory=/var/cache/mipserver/%i",
      "DynamicUser=yes",
    ]
  ) assert.match(UNIT, new RegExp(`^${line}$`, "m"), line);
  // The same hardening, restart and reload as deploy/mipserver.service, line for line.
  const hardening = (text: string) =>
    text.split("\n").filter((l) =>
      /^(ExecReload|NoNewPrivileges|Protect\w+|Private\w+|Restrict\w+|LockPersonality|SystemCallArchitectures|CapabilityBoundingSet|LimitNOFILE|Restart)=/
        .test(l)
    );
  assert.deepEqual(hardening(UNIT), hardening(read("deploy/mipserver.service")));
  assert.ok(hardening(UNIT).length >= 15);
  // The compiled binary may read those folders and variables.
  const perms = read("deploy/permissions");
  for (const needed of ["/etc/mipserver", "/var/cache/mipserver", "MIPSERVER_PORT", "AWS_ACCESS_KEY_ID"]) {
    assert.ok(perms.includes(needed), `deploy/permissions allows ${needed}`);
  }

  // As systemd runs instance 18901: CONFIGURATION_DIRECTORY holds config.yaml, a link to ../central.yaml.
  const etc = tempDir("mipserver-central-etc-");
  Deno.copyFileSync(join(CENTRAL, "central.yaml"), join(etc, "central.yaml"));
  Deno.mkdirSync(join(etc, "18901"));
  Deno.symlinkSync("../central.yaml", join(etc, "18901", "config.yaml"));
  const cache = join(tempDir("mipserver-central-cache-"), "18901");
  const { config, files } = loadConfig({
    env: { CONFIGURATION_DIRECTORY: join(etc, "18901"), CACHE_DIRECTORY: cache, MIPSERVER_PORT: "18901" },
    cwd: tempDir(),
  });
  assert.deepEqual(files, [join(etc, "18901", "config.yaml")]);
  assert.equal(config.server.port, 18901);
  assert.equal(config.server.host, "127.0.0.1", "only nginx on this host reaches the replicas");
  assert.equal(config.cache.store, "s3");
  assert.ok(config.cache.s3.bucket, "a bucket is named");
});

Deno.test("the S3 service of compose.yaml, run with the pinned SeaweedFS: the keys from the environment, the bucket made, If-None-Match honoured", async () => {
  const [, s3] = s3Service()!;
  const dir = tempDir("mipserver-central-s3-");
  const ports = Array.from({ length: 10 }, () => freePort());
  const [master, masterGrpc, volume, volumeGrpc, filer, filerGrpc, s3Port, s3Grpc, admin, adminGrpc] = ports;
  // The service's own arguments, then what a shared test machine needs: a temp folder, loopback and free ports (the
  // last value of a flag wins).
  const args = [
    ...s3.command!,
    `-dir=${dir}`,
    "-ip.bind=127.0.0.1",
    `-master.port=${master}`,
    `-master.port.grpc=${masterGrpc}`,
    `-volume.port=${volume}`,
    `-volume.port.grpc=${volumeGrpc}`,
    `-filer.port=${filer}`,
    `-filer.port.grpc=${filerGrpc}`,
    `-filer.localSocket=${join(dir, "filer.sock")}`,
    `-s3.port=${s3Port}`,
    `-s3.port.grpc=${s3Grpc}`,
    `-s3.localSocket=${join(dir, "s3.sock")}`,
    "-s3.port.iceberg=0",
    "-s3.port.lance=0",
    `-admin.port=${admin}`,
    `-admin.port.grpc=${adminGrpc}`,
  ];
  const accessKey = "central";
  const secretKey = crypto.randomUUID();
  const weed = new Deno.Command(weedBinary(), {
    args,
    env: { AWS_ACCESS_KEY_ID: accessKey, AWS_SECRET_ACCESS_KEY: secretKey, TMPDIR: dir },
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const bucket = flag(s3.command!, "bucket")!;
  const endpoint = `http://127.0.0.1:${s3Port}`;
  const store = (secret: string) =>
    new S3Store({
      endpoint,
      region: "us-east-1",
      bucket,
      prefix: "",
      pathStyle: true,
      accessKeyId: accessKey,
      secretAccessKey: secret,
      retries: 0,
      timeoutMs: 5_000,
    });
  try {
    // Up: an unsigned request is refused (the keys are the only identity).
    let anonymous: Response | undefined;
    for (let i = 0; i < 600 && anonymous === undefined; i++) {
      anonymous = await fetch(`${endpoint}/${bucket}/`).catch(() => undefined);
      if (anonymous === undefined) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(anonymous, "SeaweedFS answered");
    await anonymous.body?.cancel();
    assert.equal(anonymous.status, 403, "anonymous access refused");
    // What a replica does at start: the bucket is there and a second If-None-Match: * write is refused. The bucket
    // may take a moment after the gateway answers.
    let opened: unknown;
    for (let i = 0; i < 50; i++) {
      try {
        await store(secretKey).open();
        opened = true;
        break;
      } catch (e) {
        opened = e;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    assert.equal(opened, true, `a replica opens the bucket: ${opened}`);
    await assert.rejects(store("wrong").open(), /SignatureDoesNotMatch|403/);
  } finally {
    try {
      weed.kill("SIGTERM");
    } catch {
      // gone already
    }
    const killer = setTimeout(() => {
      try {
        weed.kill("SIGKILL");
      } catch {
        // gone meanwhile
      }
    }, 10_000);
    await weed.status;
    clearTimeout(killer);
    // weed leaves its gRPC sockets in /tmp whatever TMPDIR says.
    const grpc = { master: masterGrpc, volume: volumeGrpc, filer: filerGrpc, s3: s3Grpc, admin: adminGrpc };
    for (const [name, port] of Object.entries(grpc)) {
      try {
        Deno.removeSync(`/tmp/seaweedfs-${name}-grpc-${port}.sock`);
      } catch {
        // not left
      }
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
