/**
 * Child process of the kill -9 test: records installs from many devices as fast as it can, writing a batch after
 * every 100 installs, and prints after each batch how many requests are committed. The parent kills it with SIGKILL.
 * Arguments: the cache dir and the upstream index URL.
 */
import { createApp } from "../../src/app.ts";
import { memoryLogger } from "../../src/log.ts";
import { testConfig } from "../helpers.ts";

const [dir, index] = Deno.args;
const app = await createApp({
  config: testConfig({ cache: { dir }, upstreams: { index, retries: 0 } }),
  logger: memoryLogger(),
});
const device = (i: number) => ({ remoteAddr: { hostname: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}` } });
const get = async (path: string, i: number) => {
  const res = await app.handler(new Request(`http://gw${path}`), device(i));
  return new Uint8Array(await res.arrayBuffer());
};
let committed = 0;
let pushed = 0;
for (let i = 0;; i++) {
  const manifest = JSON.parse(new TextDecoder().decode(await get("/package/6/mathx/latest.json", i)));
  pushed++;
  for (const [, hash] of manifest.hashes) {
    await get(`/file/${hash.slice(0, 2)}/${hash}`, i);
    pushed++;
  }
  if (i % 100 === 99) {
    await app.recorder.flush();
    committed = pushed;
    console.log(JSON.stringify({ committed }));
  }
}
