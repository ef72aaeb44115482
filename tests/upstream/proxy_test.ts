/**
 * The upstream client honours HTTP_PROXY like other tools: a mipserver process started with HTTP_PROXY set sends
 * its upstream requests through that proxy (here a local fake proxy in front of a fake index).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { standardIndex } from "../fixtures/index_fixture.ts";
import { fetchWhenUp, freePort, tempDir } from "../helpers.ts";

const MAIN = new URL("../../src/main.ts", import.meta.url).pathname;

Deno.test("upstream requests go through HTTP_PROXY", async () => {
  const idx = await standardIndex();
  const up = new FakeUpstream(idx.root).start();
  const upstreamOrigin = new URL(up.url).origin;
  const proxied: string[] = [];
  // A forward proxy: receives absolute-form request targets for a host that does not exist and forwards them.
  const proxy = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const target = new URL(req.url);
    proxied.push(target.href);
    if (target.host !== "index.invalid") return new Response("unknown host", { status: 502 });
    const res = await fetch(`${upstreamOrigin}${target.pathname}`);
    return new Response(await res.arrayBuffer(), { status: res.status });
  });
  const port = freePort();
  const dir = tempDir();
  Deno.writeTextFileSync(
    join(dir, "config.yaml"),
    `server: {host: 127.0.0.1, port: ${port}}\ncache: {dir: ./cache}\nupstreams: {index: "http://index.invalid/pi/v2", retries: 0}\n`,
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-read", "--allow-write", "--allow-env", MAIN],
    cwd: dir,
    env: { NO_COLOR: "1", HTTP_PROXY: `http://127.0.0.1:${proxy.addr.port}`, NO_PROXY: "" },
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    const res = await fetchWhenUp(`http://127.0.0.1:${port}/package/6/hello/latest.json`);
    assert.equal(res.status, 200, await res.clone().text());
    assert.equal((await res.json()).version, "1.1");
    assert.ok(proxied.includes("http://index.invalid/pi/v2/package/6/hello/latest.json"), proxied.join("\n"));
    assert.ok(up.count("/package/6/hello/latest.json") >= 1);
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await proxy.shutdown();
    await up.stop();
  }
});
