/** Shared test helpers: configurations, temp folders, raw HTTP/1.0 over a socket. */
import { type Config, configSchema } from "../src/config/schema.ts";
import { deepMerge } from "../src/config/load.ts";
import { join } from "node:path";
import { DiskStore } from "../src/store/disk/mod.ts";

/** A valid configuration: schema defaults with `overrides` deep-merged over them. */
export function testConfig(overrides: Record<string, unknown> = {}): Config {
  const merged = deepMerge({}, overrides, "test", new Map());
  return configSchema.parse(merged);
}

/** A fresh temporary folder. */
export function tempDir(prefix = "mipserver-test-"): string {
  return Deno.makeTempDirSync({ prefix });
}

/** Sends raw bytes to 127.0.0.1:port and reads until the server closes the connection. */
export async function rawRequest(port: number, text: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(text));
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(65536);
  while (true) {
    const n = await conn.read(buf);
    if (n === null) break;
    chunks.push(buf.slice(0, n));
  }
  conn.close();
  const all = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
  let off = 0;
  for (const c of chunks) {
    all.set(c, off);
    off += c.length;
  }
  return new TextDecoder().decode(all);
}

/** Splits a raw HTTP response into status line, lower-cased headers and body. */
export function parseRaw(raw: string): { statusLine: string; headers: Map<string, string>; body: string } {
  const end = raw.indexOf("\r\n\r\n");
  const [statusLine, ...lines] = raw.slice(0, end).split("\r\n");
  const headers = new Map<string, string>();
  for (const line of lines) {
    const i = line.indexOf(":");
    headers.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
  }
  return { statusLine, headers, body: raw.slice(end + 4) };
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Fetches `url` until the server behind it answers (up to 15 s), and returns that first response. */
export async function fetchWhenUp(url: string): Promise<Response> {
  for (let i = 0; i < 150; i++) {
    try {
      return await fetch(url);
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`no server answered at ${url}`);
}

/** Every file below `dir`, as paths relative to it, sorted. */
export function filesBelow(dir: string, prefix = ""): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(join(dir, prefix))) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory) out.push(...filesBelow(dir, rel));
    else out.push(rel);
  }
  return out.sort();
}

/** The disk store of the cache folder `dir`, opened (as the commands open it). */
export async function openDisk(dir: string): Promise<DiskStore> {
  const store = new DiskStore(dir);
  await store.open();
  return store;
}
