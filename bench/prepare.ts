/**
 * Benchmark preparation: builds a fixture index with the real mpy-cross, serves it as a fake upstream, starts
 * mipserver against it, warms the cache, and copies the same bytes into an nginx document root.
 * Prints `KEY=value` lines for bench/run.sh, then keeps the upstream running until stdin closes.
 *
 * Usage: deno run -A bench/prepare.ts OUT_DIR MIPSERVER_PORT
 */
import { dirname, join } from "node:path";
import { FakeUpstream } from "../tests/fixtures/fake_upstream.ts";
import { bigModule, buildIndex } from "../tests/fixtures/index_fixture.ts";

const [out, portText] = Deno.args;
const port = Number(portText);
const idx = await buildIndex([{
  name: "benchpkg",
  description: "benchmark package",
  versions: [{ version: "1.0", files: { "benchpkg.py": bigModule(4_000) } }],
}]);
const up = new FakeUpstream(idx.root).start();
const h = [...idx.files.keys()][0];
const paths = { file: `/file/${h.slice(0, 2)}/${h}`, manifest: "/package/6/benchpkg/latest.json" };

await Deno.mkdir(out, { recursive: true });
await Deno.writeTextFile(
  join(out, "config.yaml"),
  `server: {host: 127.0.0.1, port: ${port}}\ncache: {dir: ./cache}\nupstreams: {index: "${up.url}"}\n`,
);
const root = join(out, "www");
for (const p of Object.values(paths)) {
  await Deno.mkdir(dirname(join(root, p)), { recursive: true });
  await Deno.copyFile(join(idx.root, p), join(root, p));
}
console.log(`FILE_PATH=${paths.file}`);
console.log(`MANIFEST_PATH=${paths.manifest}`);
console.log(`FILE_BYTES=${idx.files.get(h)!.length}`);
console.log(`WWW=${root}`);
console.log("READY=1");
for await (const _ of Deno.stdin.readable) { /* run until stdin closes */ }
await up.stop();
