/**
 * deploy/compile.sh (the recipe `make compile`, the Dockerfile and the release workflow run) compiles the x86_64
 * target into a temp folder. The release build's base runtime is the slim `denort`, which deno compile downloads from
 * Deno's servers; these machines reach none, so the base runtime here is a stand-in: this very deno, the full CLI
 * (DENORT_BIN).
 *
 * What the stand-in build proves: the recipe runs to the end with the flags it passes (deploy/permissions, the
 * includes, the exclusions, the target); the result is an x86_64 executable that starts; and what deno compile
 * appended to it is right: the entry point, every permission and memory flag of deploy/permissions, and the embedded
 * files (the edge worker module and config.yaml byte for byte, the npm packages, no test data).
 *
 * What it cannot prove: that the binary runs mipserver. The full deno as a base ignores the appended program and
 * runs its own CLI (started, it answers plain Deno's `--version`, as checked below), so nothing here starts or serves
 * mipserver from a binary, nor shows that a release build on `denort` does. What the server does under exactly these
 * permissions is shown through `deno run` by tests/deploy/permissions_test.ts.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { tempDir } from "../helpers.ts";
import { runTool } from "../e2e/tools.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const TARGET = "x86_64-unknown-linux-gnu";

/** What `deno compile` appended to a binary: its metadata (entry point, permissions) and its embedded files. */
interface Embedded {
  metadata: {
    entrypoint_key: string;
    permissions: Record<string, unknown>;
    v8_flags: string[];
    unstable_config: { features: string[] };
    code_cache_key: unknown;
  };
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

/** The flags of deploy/permissions, as deploy/compile.sh passes them. */
function permissionFlags(): string[] {
  return Deno.readTextFileSync(join(ROOT, "deploy/permissions")).split("\n").map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
}

Deno.test("deploy/compile.sh builds the x86_64 binary (stand-in base runtime): the permissions, memory flags, worker module and config.yaml are baked in, no test data", async () => {
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
    const bytes = Deno.readFileSync(binary);
    assert.deepEqual([...bytes.subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46], "not an ELF executable");
    assert.equal(new DataView(bytes.buffer).getUint16(18, true), 62, "e_machine is not x86-64");
    // It starts, and it is the stand-in: the full deno's CLI answers, with plain Deno's version, not mipserver.
    const version = await runTool(binary, ["--version"]);
    assert.equal(version.code, 0, version.stderr);
    assert.ok(
      version.stdout.startsWith(`deno ${Deno.version.deno} (`),
      `the stand-in base runtime answers as the deno it is: ${version.stdout}`,
    );

    const { metadata, files } = readEmbedded(bytes);
    assert.equal(metadata.entrypoint_key, "src/main.ts");
    // Every line of deploy/permissions is baked in: each --allow-* list as given (--allow-net bare: every host),
    // the memory flags, --unstable-net and --no-code-cache (no code cache key).
    const flags = permissionFlags();
    const perms = metadata.permissions as Record<string, unknown>;
    const allowed = flags.filter((f) => f.startsWith("--allow-"));
    assert.ok(allowed.length >= 5, `deploy/permissions: ${flags}`);
    assert.ok(allowed.includes("--allow-net"));
    for (const flag of allowed) {
      const [name, list] = flag.slice(2).split("=");
      assert.deepEqual(perms[name.replaceAll("-", "_")], list === undefined ? [] : list.split(","), `${flag} baked in`);
    }
    assert.equal(perms.allow_ffi, null, "allow_ffi is not granted");
    assert.deepEqual(perms.allow_sys, ["hostname"], "allow_sys: the host name alone (the default audit.site)");
    const v8 = flags.find((f) => f.startsWith("--v8-flags="))!.slice("--v8-flags=".length).split(",");
    assert.deepEqual(v8, ["--max-semi-space-size=8", "--heap-growing-percent=25"]);
    for (const flag of v8) assert.ok(metadata.v8_flags.includes(flag), `${flag} baked in: ${metadata.v8_flags}`);
    assert.ok(flags.includes("--unstable-net") && metadata.unstable_config.features.includes("net"));
    assert.ok(flags.includes("--no-code-cache"));
    assert.equal(metadata.code_cache_key, null, "--no-code-cache baked in");

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
