/**
 * How fast one replica's install records reach PostgreSQL: batches as the recorder makes them (each install a
 * manifest and two files, the files handed over as loose requests, as with a shared database), kept in the outbox
 * at once and sent by the sender; prints installs and device requests per second from the first batch to an empty
 * outbox, and how long keeping a batch in the outbox took (what the recorder's timer waits for).
 *
 * Usage: deno run -A bench/records_pg_rate.ts URL   (PGPASSWORD in the environment; BATCHES, INSTALLS per batch)
 */
import { join } from "node:path";
import { memoryLogger } from "../src/log.ts";
import { PostgresRecords } from "../src/records/postgres/mod.ts";
import { type Batch, emptyBatch } from "../src/records/records.ts";

const [url] = Deno.args;
const batches = Number(Deno.env.get("BATCHES") ?? 60);
const perBatch = Number(Deno.env.get("INSTALLS") ?? 1000);
const dir = await Deno.makeTempDir({ prefix: "mipserver-records-rate-" });
const records = PostgresRecords.open({
  url,
  env: { PGPASSWORD: Deno.env.get("PGPASSWORD") },
  outboxPath: join(dir, "records-outbox.sqlite"),
  site: "bench",
  logger: memoryLogger(),
  maxBytes: 1 << 30,
  maxDevices: 1_000_000,
  keepDevices: {},
  windowMs: 30_000,
});
await records.settle();

const T0 = Date.now();
let id = 0;
/** One second of a busy replica: `perBatch` devices each installing a package (a manifest and two files). */
function batch(b: number): Batch {
  const out = emptyBatch();
  const at = T0 + b * 1000;
  for (let i = 0; i < perBatch; i++) {
    const device = `10.${b & 255}.${i >> 8}.${i & 255}`;
    const files = [`file:${(i * 7919) % 5000}a`, `file:${(i * 104729) % 5000}b`];
    out.installs.push({
      row: {
        id: ++id,
        device,
        package: `pkg${i % 50}`,
        version: "1.0",
        mpy: "6",
        profile: null,
        status: "partial",
        files_listed: 2,
        files_served: 0,
        bytes: 300,
        started_at: at + (i % 900),
        finished_at: at + (i % 900),
        error: null,
      },
      requests: 1,
      listed: files,
      served: [],
      unknown: false,
    });
    for (const [k, file] of files.entries()) {
      const t = at + (i % 900) + 5 + k;
      out.requests.push({
        time: at - (at % 60_000),
        device,
        method: "GET",
        path: `/file/${file.slice(5, 7)}/${file.slice(5)}`,
        status: 200,
        cache: "hit",
        count: 1,
        bytes: 1000,
        file,
        at: t,
        last: t,
      });
      out.files.push({ device, file, time: t });
    }
    out.seen.push({ device, time: at + (i % 900) + 6 });
  }
  out.requestCount = perBatch * 3;
  return out;
}

const made = Array.from({ length: batches }, (_, b) => batch(b));
const keep: number[] = [];
const start = performance.now();
for (const b of made) {
  const t = performance.now();
  records.write(b);
  keep.push(performance.now() - t);
}
while (records.figures().database!.waiting_batches > 0) await new Promise((r) => setTimeout(r, 20));
const seconds = (performance.now() - start) / 1000;
const complete = (await records.installs({ limit: 10, status: "complete" })).length;
keep.sort((a, b) => a - b);
console.log(JSON.stringify({
  batches,
  installs_per_batch: perBatch,
  seconds: Number(seconds.toFixed(2)),
  installs_per_second: Math.round((batches * perBatch) / seconds),
  requests_per_second: Math.round((batches * perBatch * 3) / seconds),
  outbox_keep_ms_median: Number(keep[Math.floor(keep.length / 2)].toFixed(2)),
  outbox_keep_ms_max: Number(keep[keep.length - 1].toFixed(2)),
  state: records.figures().database!.state,
  complete_sample: complete,
}));
await records.close();
await Deno.remove(dir, { recursive: true });
