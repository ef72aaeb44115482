/**
 * The hostile client of bench/records_flood.sh: HTTP/1.0 requests, one connection each, as mip sends them.
 *
 *   deno run -A bench/flood.ts PORT PATH COUNT MODE [ROTATE] [INSTALL]
 *
 * MODE `unique`: each request carries its own 7 KB query string; `fixed`: all carry the same one. ROTATE: that many
 * more requests, each from its own source address across 127.0.0.0/8 (127.20.0.1 onwards). INSTALL: a manifest path
 * installed (the manifest, then each file it lists) from 127.0.0.2 half-way through, as a real device would. Prints one
 * JSON line: requests sent, statuses seen, and the install's version.
 */
import { connect } from "node:net";

const [portText, path, countText, mode, rotateText = "0", install = ""] = Deno.args;
const port = Number(portText);
const count = Number(countText);
const rotate = Number(rotateText);
const CONCURRENCY = 16;

const hex = (n: number) =>
  Array.from(crypto.getRandomValues(new Uint8Array(n / 2)), (b) => b.toString(16).padStart(2, "0")).join("");
const fixed = hex(7000);

/** One request from `source` (or the default address); resolves to the status and the body. */
function get(target: string, source?: string): Promise<{ status: number; body: Uint8Array }> {
  return new Promise((resolve, reject) => {
    const chunks: Uint8Array[] = [];
    const socket = connect({ host: "127.0.0.1", port, ...(source ? { localAddress: source } : {}) }, () => {
      socket.write(`GET ${target} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n`);
    });
    socket.on("data", (c: Uint8Array) => chunks.push(c));
    socket.on("error", reject);
    socket.on("end", () => {
      const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
      let at = 0;
      for (const c of chunks) (all.set(c, at), at += c.length);
      const text = new TextDecoder().decode(all.subarray(0, Math.min(all.length, 64)));
      const headEnd = all.findIndex((_, i) =>
        all[i] === 13 && all[i + 1] === 10 && all[i + 2] === 13 && all[i + 3] === 10
      );
      resolve({ status: Number(text.split(" ")[1]), body: all.subarray(headEnd + 4) });
    });
  });
}

const statuses: Record<string, number> = {};
let version: string | null = null;
let installed = 0;

async function installFrom(source: string): Promise<void> {
  const manifest = JSON.parse(new TextDecoder().decode((await get(install, source)).body));
  for (const [, hash] of manifest.hashes ?? []) {
    const r = await get(`/file/${hash.slice(0, 2)}/${hash}`, source);
    if (r.status === 200) installed++;
  }
  version = manifest.version ?? null;
}

let next = 0;
const total = count + rotate;
async function worker(): Promise<void> {
  while (next < total) {
    const i = next++;
    if (install && i === Math.floor(count / 2)) await installFrom("127.0.0.2");
    const query = mode === "unique" ? `${i}=${hex(7000)}` : `q=${fixed}`;
    const source = i >= count
      ? `127.${20 + ((i - count) >> 16)}.${((i - count) >> 8) & 255}.${1 + ((i - count) & 255) % 254}`
      : undefined;
    const r = await get(`${path}?${query}`, source);
    statuses[r.status] = (statuses[r.status] ?? 0) + 1;
  }
}
await Promise.all(Array.from({ length: CONCURRENCY }, worker));
console.log(JSON.stringify({ sent: total, statuses, install: install ? { version, files: installed } : null }));
