/**
 * The binary builds: deploy/compile.sh (the recipe `make compile`, the Dockerfile and the release workflow run)
 * compiles the x86_64 target into a temp folder, with this deno as the base runtime (DENORT_BIN: offline there is no
 * other; the result then starts as plain deno). The result is an executable that runs, and the file list embedded in
 * it holds the edge worker module and config.yaml, byte for byte, and no test data.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { tempDir } from "../helpers.ts";
import { runTool } from "../e2e/tools.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const TARGET = "x86_64-unknown-linux-gnu";

/** What `deno compile` appended to a binary: its metadata (entry point, permissions) and its embedded files. */
interface Embedded {
  metadata: { entrypoint_key: string; permissions: Record<string, unknown> };
  files: Map<string, Uint8Array>;
}

const MAGIC = new TextEncoder().encode("d3n0l4ndd3n0l4nd");

function lastIndexOf(hay: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = hay.length - needle.length; i >= 0; i--) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

function indexOf(hay: Uint8Array, needle: Uint8Array, from: number): number {
  outer: for (let i = from; i <= hay.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

type VfsEntry = { Dir?: { n: string; e: VfsEntry[] }; File?: { n: string; o: [number, number] } };

/**
 * Reads the data deno compile 2.x writes after its marker: the metadata JSON, then (after the npm snapshot) the
 * virtual file system as JSON, each preceded by its length (u64, little-endian), and the file bytes right after.
 */
function readEmbedded(binary: Uint8Array): Embedded {
  const view = new DataView(binary.buffer, binary.byteOffset, binary.byteLength);
  const at = lastIndexOf(binary, MAGIC);
  assert.ok(at > 0, "no deno compile payload in the binary");
  const dec = new TextDecoder();
  const metaLength = Number(view.getBigUint64(at + MAGIC.length, true));
  const metaStart = at + MAGIC.length + 8;
  const metadata = JSON.parse(dec.decode(binary.subarray(metaStart, metaStart + metaLength)));
  const vfsStart = indexOf(binary, new TextEncoder().encode('[{"Dir":{"n":"'), metaStart + metaLength);
  assert.ok(vfsStart > 0, "no embedded file system in the binary");
  const vfsLength = Number(view.getBigUint64(vfsStart - 8, true));
  const vfs: VfsEntry[] = JSON.parse(dec.decode(binary.subarray(vfsStart, vfsStart + vfsLength)));
  const dataStart = vfsStart + vfsLength + 8;
  const files = new Map<string, Uint8Array>();
  const walk = (entries: VfsEntry[], prefix: string) => {
    for (const e of entries) {
      if (e.Dir) walk(e.Dir.e, `${prefix}${e.Dir.n}/`);
      else if (e.File) {
        const [offset, length] = e.File.o;
        files.set(`${prefix}${e.File.n}`, binary.subarray(dataStart + offset, dataStart + offset + length));
      }
    }
  };
  walk(vfs, "");
  return { metadata, files };
}

Deno.test("deploy/compile.sh builds the x86_64 binary: it runs, and embeds the worker module and config.yaml but no test data", async () => {
  const out = tempDir("mipserver-compile-");
  try {
    const deno = Deno.execPath();
    const r = await runTool("sh", [join(ROOT, "deploy/compile.sh"), out, TARGET], {
      env: { DENO: deno, DENORT_BIN: deno, NO_COLOR: "1" },
    });
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stderr + r.stdout, /Embedded Files[\s\S]*config\.yaml/, "deno compile lists config.yaml");

    const binary = join(out, `mipserver-${TARGET}`);
    assert.ok((Deno.statSync(binary).mode! & 0o111) !== 0, "the binary is not executable");
    const version = await runTool(binary, ["--version"]);
    assert.equal(version.code, 0, version.stderr);
    assert.match(version.stdout, /x86_64-unknown-linux-gnu/);

    const { metadata, files } = readEmbedded(Deno.readFileSync(binary));
    assert.equal(metadata.entrypoint_key, "src/main.ts");
    const perms = Deno.readTextFileSync(join(ROOT, "deploy/permissions"));
    assert.match(perms, /--allow-write=\/var\/cache\/mipserver,/);
    assert.ok(
      (metadata.permissions.allow_write as string[]).includes("/var/cache/mipserver"),
      "deploy/permissions were baked in",
    );
    for (const path of ["config.yaml", "src/main.ts", "src/edge/edge_worker.ts"]) {
      assert.ok(files.has(path), `${path} is not embedded: ${[...files.keys()].filter((p) => p.startsWith("src"))}`);
      assert.deepEqual(files.get(path), Deno.readFileSync(join(ROOT, path)), `${path} is embedded as it is`);
    }
    const testData = [...files.keys()].filter((p) =>
      p.startsWith("tests/") || p.startsWith("bench/") || /(^|\/)(tests?|__tests__|perf)\//.test(p) ||
      /\.test\.[cm]?[jt]s$/.test(p)
    );
    assert.deepEqual(testData, [], "test data was embedded");
    assert.ok(![...files.keys()].some((p) => /\/(bintrees|tdigest|prom-client)\//.test(p)));
    assert.ok([...files.keys()].some((p) => p.includes("/zod/")), "the npm packages the code uses are embedded");
  } finally {
    Deno.removeSync(out, { recursive: true });
  }
});
