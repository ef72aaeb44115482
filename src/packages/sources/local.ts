/**
 * `local:/some/dir`: a folder on this machine (relative to the config file), with a package.json whose `urls` are
 * relative paths, or else every importable `.py` file in it. It has one version only, `latest`.
 * @module
 */
import { join, relative } from "node:path";
import { isModule } from "../archive.ts";
import { safeDest } from "../names.ts";
import { readPackageJson } from "../package_json.ts";
import { badUpstream, notFound, onlyLatest, type Resolved, type SourceFile, type SourceKind } from "./source.ts";

/** The `local:` kind. */
export const local: SourceKind = {
  name: "local",
  pattern: /^\S.*$/,
  example: "local:/dir",
  versioned: false,
  parentSegments: true,
  parse(rest) {
    return {
      kind: "local",
      text: `local:${rest}`,
      defaultRef: "latest",
      mutability: () => true,
      resolve(_ctx, ref) {
        onlyLatest("local", ref);
        return fromLocal(rest);
      },
    };
  },
};

async function walk(root: string, dir: string, out: string[]): Promise<void> {
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) await walk(root, path, out);
    else if (entry.isFile) out.push(relative(root, path));
  }
}

async function fromLocal(dir: string): Promise<Resolved> {
  const read = (path: string) => async () => {
    try {
      return await Deno.readFile(path);
    } catch (e) {
      throw badUpstream(`Cannot read ${path}: ${(e as Error).message}`);
    }
  };
  let manifest: Uint8Array | undefined;
  try {
    manifest = await Deno.readFile(join(dir, "package.json"));
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw badUpstream(`Cannot read ${dir}: ${(e as Error).message}`);
  }
  if (manifest) {
    const doc = readPackageJson(manifest, `in ${dir}`);
    const files = doc.urls.map(([dest, src]): SourceFile => {
      const path = join(dir, src);
      if (/^[a-z][a-z0-9+.-]*:/i.test(src) || relative(dir, path).startsWith("..")) {
        throw badUpstream(`package.json in ${dir}: url entry ${JSON.stringify(dest)} must be a relative path`);
      }
      return { dest, from: path, read: read(path) };
    });
    return { version: doc.version ?? "latest", files, deps: doc.deps };
  }
  const paths: string[] = [];
  try {
    await walk(dir, dir, paths);
  } catch (e) {
    const message = `Cannot read ${dir}: ${(e as Error).message}`;
    throw e instanceof Deno.errors.NotFound ? notFound(message) : badUpstream(message);
  }
  const modules = paths.map((p) => p.split("\\").join("/")).filter((p) => isModule(p) && safeDest(p)).sort();
  if (modules.length === 0) throw notFound(`${dir} has no package.json and no .py files`);
  return {
    version: "latest",
    files: modules.map((p) => ({ dest: p, from: join(dir, p), read: read(join(dir, p)) })),
    deps: [],
  };
}
