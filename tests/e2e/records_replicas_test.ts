/**
 * Two replicas behind a real nginx (round robin), both writing install records to one real PostgreSQL: 20 devices,
 * each from its own address, install packages through nginx, so a device's manifest and files are answered by
 * different replicas. Exactly the installs made are recorded, each once, with the right status, and both replicas
 * show the same fleet. Then the database is stopped for longer than the replicas' retries back off to while the
 * devices go on installing, and started again: every install is recorded once, none lost.
 * A missing nginx or PostgreSQL fails the test.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { standardIndex } from "../fixtures/index_fixture.ts";
import { startPostgres } from "../fixtures/postgres.ts";
import { freePort, tempDir } from "../helpers.ts";
import { runTool, serveApp, type ServedApp } from "./tools.ts";

const NGINX = existsSync("/usr/sbin/nginx") ? "/usr/sbin/nginx" : "nginx";
const DEVICES = 20;

function nginxConfig(dir: string, port: number, replicas: number[]): string {
  return `pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log;
daemon off;
worker_processes 1;
events { worker_connections 1024; }
http {
  log_format replicas '$remote_addr $request_uri $status $upstream_addr';
  access_log ${dir}/nginx-access.log replicas;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  upstream replicas {
${replicas.map((p) => `    server 127.0.0.1:${p};`).join("\n")}
    keepalive 16;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
    }
  }
}
`;
}

/** What one device does in one install, and the status it must be recorded with. */
type Plan = { name: string; skip?: string; manifestOnly?: boolean; status: "complete" | "partial" | "failed" };

/** Ten installs of one device: a missing package, two that stop early, seven complete. */
const PLANS: Plan[] = [
  { name: "nosuchpkg", status: "failed" },
  { name: "mathx", skip: "ops.mpy", status: "partial" },
  { name: "hello", status: "complete" },
  { name: "bigmod", manifestOnly: true, status: "partial" },
  { name: "mathx", status: "complete" },
  { name: "hello", status: "complete" },
  { name: "mathx", status: "complete" },
  { name: "hello", status: "complete" },
  { name: "mathx", status: "complete" },
  { name: "hello", status: "complete" },
];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, check: () => Promise<boolean> | boolean, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await sleep(200);
  }
  throw new Error(`timed out: ${what}`);
}

/** One device: its own source address, HTTP through nginx. */
class Device {
  readonly address: string;
  #client: Deno.HttpClient;
  constructor(readonly index: number, readonly base: string) {
    this.address = `127.0.0.${index + 2}`;
    this.#client = Deno.createHttpClient({ localAddress: this.address });
  }

  async get(path: string): Promise<{ status: number; body: Uint8Array }> {
    const res = await fetch(`${this.base}${path}`, { client: this.#client });
    return { status: res.status, body: new Uint8Array(await res.arrayBuffer()) };
  }

  /** Installs as mip does (the manifest, then each listed file), as `plan` says. */
  async install(plan: Plan): Promise<void> {
    const m = await this.get(`/package/6/${plan.name}/latest.json`);
    if (plan.status === "failed") {
      assert.equal(m.status, 404);
      return;
    }
    assert.equal(m.status, 200, new TextDecoder().decode(m.body));
    if (plan.manifestOnly) return;
    const manifest = JSON.parse(new TextDecoder().decode(m.body));
    for (const [path, hash] of manifest.hashes) {
      if (plan.skip && path.endsWith(plan.skip)) continue;
      const f = await this.get(`/file/${hash.slice(0, 2)}/${hash}`);
      assert.equal(f.status, 200);
    }
  }

  close() {
    this.#client.close();
  }
}

interface Install {
  id: number;
  site: string;
  device: string;
  package: string;
  status: string;
  files_served: number;
  files_listed: number;
  started_at: string;
}

async function installs(replica: ServedApp): Promise<Install[]> {
  const res = await fetch(`${replica.base}/_/installs?limit=10000`);
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  return body.installs;
}

/** Counts of each device's installs by status, and by package and status. */
function tally(list: Install[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const i of list) out[i.status] = (out[i.status] ?? 0) + 1;
  return out;
}

Deno.test({
  name:
    "two replicas behind nginx on one PostgreSQL: 200 installs from 20 devices, each once with its status; the database stopped and started, none lost",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const pg = await startPostgres();
    const idx = await standardIndex();
    const up = new FakeUpstream(idx.root).start();
    const work = tempDir("mipserver-records-replicas-");
    Deno.chmodSync(work, 0o777); // nginx workers run unprivileged when the master runs as root
    const replicas: ServedApp[] = [];
    let nginx: Deno.ChildProcess | undefined;
    const devices: Device[] = [];
    try {
      const db = await pg.database();
      for (let r = 0; r < 2; r++) {
        replicas.push(
          await serveApp({
            cache: { dir: join(work, `replica-${r}`) },
            upstreams: { index: up.url, retries: 0 },
            server: { trusted_proxies: ["127.0.0.1/32"] },
            audit: { database: db.urlWithPassword, site: "central", window: "30s" },
            devices: { "127.0.0.2": "bench-1" },
          }, { record: true }),
        );
      }
      const port = freePort();
      Deno.writeTextFileSync(join(work, "nginx.conf"), nginxConfig(work, port, replicas.map((r) => r.port)));
      const check = await runTool(NGINX, ["-t", "-c", join(work, "nginx.conf")]);
      assert.equal(check.code, 0, check.stderr);
      nginx = new Deno.Command(NGINX, { args: ["-c", join(work, "nginx.conf")], stdout: "null", stderr: "null" })
        .spawn();
      const front = `http://127.0.0.1:${port}`;
      await until("nginx answers", async () => {
        try {
          return (await fetch(`${front}/healthz`).then((r) => r.arrayBuffer().then(() => r.status))) === 200;
        } catch {
          return false;
        }
      }, 15_000);
      for (let d = 0; d < DEVICES; d++) devices.push(new Device(d, front));

      // 200 installs: each device its ten, one after the other, the devices at once. A quarter second apart: the
      // records take a device's alike requests within one span (200 ms) as one, as a device retrying.
      await Promise.all(devices.map(async (device) => {
        for (const plan of PLANS) {
          await device.install(plan);
          await sleep(250);
        }
      }));
      for (const r of replicas) await r.app.fleet.settle();
      const seen = await installs(replicas[0]);
      assert.equal(seen.length, DEVICES * PLANS.length, JSON.stringify(tally(seen)));
      assert.deepEqual(tally(seen), { failed: 20, partial: 40, complete: 140 });
      for (const device of devices) {
        const mine = seen.filter((i) => i.device === device.address)
          .sort((a, b) => Date.parse(a.started_at) - Date.parse(b.started_at));
        assert.deepEqual(
          mine.map((i) => [i.package, i.status]),
          PLANS.map((p) => [p.name, p.status]),
          `${device.address}: ${JSON.stringify(mine)}`,
        );
      }
      assert.ok(seen.every((i) => i.site === "central"));
      // Both replicas show the same fleet.
      assert.deepEqual(
        (await installs(replicas[1])).map((i) => [i.id, i.status]),
        seen.map((i) => [i.id, i.status]),
      );
      const inventory = await (await fetch(`${replicas[1].base}/_/devices`)).json();
      assert.equal(inventory.count, DEVICES);
      assert.equal(inventory.devices.find((d: { device: string }) => d.device === "127.0.0.2").name, "bench-1");
      // The installs really were split: a device's manifest on one replica and files on the other.
      const log = Deno.readTextFileSync(join(work, "nginx-access.log")).trim().split("\n").map((l) => l.split(" "));
      let split = 0;
      const manifestOn = new Map<string, string>();
      for (const [client, uri, , upstream] of log) {
        if (uri.startsWith("/package/")) manifestOn.set(client, upstream);
        else if (uri.startsWith("/file/") && manifestOn.get(client) !== upstream) {
          split++;
          manifestOn.set(client, upstream); // counted once per install
        }
      }
      assert.ok(split >= 40, `only ${split} installs had files from the other replica`);

      // The database stopped for 30 s (longer than the retries back off to), while each device installs five times
      // more, spread over that time.
      await pg.stop();
      const stopped = Date.now();
      await Promise.all(devices.map(async (device) => {
        for (const plan of PLANS.slice(5)) {
          await device.install(plan);
          await sleep(5000 + device.index * 20);
        }
      }));
      await until(
        "the replicas' batches wait",
        () => replicas.every((r) => (r.app.recorder.figures().database?.waiting_batches ?? 0) > 0),
      );
      for (const r of replicas) assert.equal(r.app.recorder.figures().database?.state, "unreachable");
      await sleep(30_000 - (Date.now() - stopped));
      const down = Date.now() - stopped;
      assert.ok(down >= 30_000, `the database was down ${down} ms`);
      await pg.start();
      await until(
        "both outboxes are sent",
        () =>
          replicas.every((r) =>
            r.app.recorder.figures().database?.waiting_batches === 0 &&
            r.app.recorder.figures().database?.state === "ok"
          ),
      );
      for (const r of replicas) await r.app.fleet.settle();
      const after = await installs(replicas[1]);
      assert.equal(after.length, DEVICES * (PLANS.length + 5), JSON.stringify(tally(after)));
      assert.deepEqual(tally(after), { failed: 20, partial: 40, complete: 240 });
      assert.equal(new Set(after.map((i) => i.id)).size, after.length);
      for (const r of replicas) {
        const said = r.lines.filter((l) => l.includes("Cannot write install records to the database"));
        assert.equal(said.length, 1, said.join("\n"));
      }
    } finally {
      for (const d of devices) d.close();
      if (nginx) {
        try {
          nginx.kill("SIGQUIT");
        } catch { /* gone */ }
        await nginx.status;
      }
      for (const r of replicas) await r.stop().catch(() => {});
      await up.stop();
      await pg.destroy();
    }
  },
});
