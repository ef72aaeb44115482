/** Shared by the bundle tests: config files, running the CLI in-process, and snapshots of a cache folder tree. */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { stringify } from "yaml";
import { main } from "../../src/main.ts";
import { tempDir } from "../helpers.ts";

/** Writes `config` as a config file in a new folder and returns its path. */
export function configFile(config: Record<string, unknown>): string {
  const dir = tempDir("mipserver-bundle-config-");
  const path = join(dir, "config.yaml");
  Deno.writeTextFileSync(path, stringify(config));
  return path;
}

/** Runs `mipserver ARGS` in this process (as `deno run src/main.ts ARGS` would) and returns its exit code. */
export function cli(...args: string[]): Promise<number> {
  return main(args);
}

/** Every file under `dir` with its size and sha256, and every folder: what "nothing changed" is checked against. */
export function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(d)];
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return;
      throw e;
    }
    for (const e of entries) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory) {
        out.push(`${r}/`);
        walk(join(d, e.name), r);
      } else {
        const bytes = Deno.readFileSync(join(d, e.name));
        out.push(`${r} ${bytes.byteLength} ${createHash("sha256").update(bytes).digest("hex")}`);
      }
    }
  };
  walk(dir, "");
  return out.sort();
}
