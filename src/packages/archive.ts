/**
 * Python modules out of PyPI release archives: pure-Python wheels and zip sdists (fflate), tar.gz sdists (gzip via
 * web streams, tar via modern-tar). Only importable code is kept: no setup.py, tests, docs, examples or metadata.
 * @module
 */
import { unzipSync } from "fflate";
import { unpackTar } from "modern-tar";

/** A file taken from an archive, at its install path. */
export interface ArchiveFile {
  path: string;
  bytes: Uint8Array;
}

/** Folders that never hold a package's importable code. */
const SKIP_DIRS = new Set([
  "tests",
  "test",
  "testing",
  "docs",
  "doc",
  "examples",
  "example",
  "benchmarks",
  "bench",
  "scripts",
  "build",
  "dist",
  ".github",
  "__pycache__",
]);
/** Top-level files of a source tree that are tooling, not the package. */
const SKIP_FILES = new Set(["setup.py", "conftest.py", "noxfile.py", "fabfile.py", "manifest.py"]);

/** Whether an archive member (path relative to the source root) is part of the importable package. */
export function isModule(path: string): boolean {
  if (!path.endsWith(".py")) return false;
  const parts = path.split("/");
  if (parts.some((p) => p === "" || p === "." || p === ".." || p.startsWith("."))) return false;
  const file = parts[parts.length - 1];
  if (parts.length === 1 && SKIP_FILES.has(file)) return false;
  if (/^test_.*\.py$|_test\.py$/.test(file)) return false;
  return !parts.slice(0, -1).some((d) => SKIP_DIRS.has(d) || d.endsWith(".egg-info") || /\.(dist-info|data)$/.test(d));
}

async function members(filename: string, bytes: Uint8Array): Promise<ArchiveFile[]> {
  if (/\.(whl|zip)$/.test(filename)) {
    const files = unzipSync(bytes, { filter: (f) => f.name.endsWith(".py") });
    return Object.entries(files).map(([path, data]) => ({ path, bytes: data }));
  }
  if (/\.(tar\.gz|tgz)$/.test(filename)) {
    const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
      new DecompressionStream("gzip"),
    );
    const entries = await unpackTar(stream);
    return entries
      .filter((e) => e.header.type === "file" && e.data)
      .map((e) => ({ path: e.header.name, bytes: e.data! }));
  }
  throw new Error(`unsupported archive type: ${filename}`);
}

/**
 * The Python modules in a release archive, at the paths they install to. A sdist's top folder
 * (`name-version/`) and a `src/` layout are stripped; a wheel's paths are already install paths.
 */
export async function pythonModules(filename: string, bytes: Uint8Array): Promise<ArchiveFile[]> {
  let files = await members(filename, bytes);
  if (!filename.endsWith(".whl")) {
    const tops = new Set(files.map((f) => f.path.split("/")[0]));
    if (tops.size === 1 && files.every((f) => f.path.includes("/"))) {
      files = files.map((f) => ({ ...f, path: f.path.slice(f.path.indexOf("/") + 1) }));
    }
    if (files.some((f) => f.path.startsWith("src/") && isModule(f.path.slice(4)))) {
      files = files.filter((f) => f.path.startsWith("src/")).map((f) => ({ ...f, path: f.path.slice(4) }));
    }
  }
  return files.filter((f) => isModule(f.path)).sort((a, b) => a.path.localeCompare(b.path));
}
