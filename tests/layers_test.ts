/**
 * The layer order of `src/ARCHITECTURE.md`, checked on the sources' own imports: no import from a lower room into a
 * higher one, and no cycle between files. The imports that still go against the order are listed below with what
 * removes each; a new one fails, and one that is gone must be taken off the list (so the list only shrinks).
 */
import assert from "node:assert/strict";
import { dirname, join, normalize, relative } from "node:path";

const SRC = new URL("../src/", import.meta.url).pathname;

/** Each room's layer, as `src/ARCHITECTURE.md` gives it. */
const LAYERS: Record<string, number> = {
  bytes: 1,
  log: 1,
  errors: 1,
  version: 1,
  args: 1,
  store: 2,
  cache: 3,
  upstream: 3,
  packages: 4,
  compile: 5,
  records: 5,
  http: 6,
  routes: 6,
  edge: 6,
  fleet: 7,
  config: 7,
  app: 7,
  bundle: 8,
  cli: 8,
  main: 8,
};

/**
 * Imports against the order that are known and still to be removed, as "from-room -> to-room" with how many imports,
 * each with a comment saying what removes it. There are none: every import in src/ points down the layers. The list
 * stays for the day one has to be allowed for a while; it may only shrink.
 */
const KNOWN: Record<string, number> = {};

function roomOf(file: string): string {
  const rel = relative(SRC, file);
  const parts = rel.split("/");
  return parts.length > 1 ? parts[0] : rel.replace(/\.ts$/, "");
}

/** Every `.ts` file under `src/` and the `src/` files it imports (relative imports only; packages are not rooms). */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  const walk = (dir: string) => {
    for (const entry of Deno.readDirSync(dir)) {
      const path = join(dir, entry.name);
      if (entry.isDirectory) walk(path);
      else if (entry.name.endsWith(".ts")) {
        const text = Deno.readTextFileSync(path);
        const targets: string[] = [];
        // Static imports and re-exports, type-only ones too: a type is a dependency on the module that declares it.
        for (const m of text.matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s+["'](\.{1,2}\/[^"']+)["']/gms)) {
          targets.push(normalize(join(dirname(path), m[1])));
        }
        for (const m of text.matchAll(/\bimport\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/g)) {
          targets.push(normalize(join(dirname(path), m[1])));
        }
        graph.set(path, targets.filter((t) => t.startsWith(SRC)));
      }
    }
  };
  walk(SRC);
  return graph;
}

Deno.test("imports only point down the layers of src/ARCHITECTURE.md, but for the known list", () => {
  const graph = importGraph();
  assert.ok(graph.size > 50, `only ${graph.size} files read`);
  const against = new Map<string, string[]>();
  for (const [file, targets] of graph) {
    const from = roomOf(file);
    assert.ok(from in LAYERS, `${relative(SRC, file)}: room ${from} has no layer in src/ARCHITECTURE.md`);
    for (const target of targets) {
      const to = roomOf(target);
      assert.ok(to in LAYERS, `${relative(SRC, target)}: room ${to} has no layer`);
      if (from === to || LAYERS[to] < LAYERS[from]) continue;
      // Same layer, other room: allowed only downwards in the table's order within the layer (none today).
      if (LAYERS[to] === LAYERS[from]) continue;
      const key = `${from} -> ${to}`;
      against.set(key, [...(against.get(key) ?? []), `${relative(SRC, file)} imports ${relative(SRC, target)}`]);
    }
  }
  const found = Object.fromEntries([...against].map(([k, v]) => [k, v.length]));
  for (const [key, imports] of against) {
    assert.ok(key in KNOWN, `new import against the layer order:\n  ${imports.join("\n  ")}`);
    assert.ok(imports.length <= KNOWN[key], `more imports ${key} than known:\n  ${imports.join("\n  ")}`);
  }
  for (const [key, n] of Object.entries(KNOWN)) {
    assert.ok((found[key] ?? 0) >= n, `${key}: ${found[key] ?? 0} left of ${n}; take it down in KNOWN`);
  }
});

Deno.test("no two files in src/ import each other, directly or through others", () => {
  const graph = importGraph();
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const visit = (file: string) => {
    state.set(file, "open");
    stack.push(file);
    for (const target of graph.get(file) ?? []) {
      const s = state.get(target);
      if (s === "open") {
        const cycle = stack.slice(stack.indexOf(target)).concat(target).map((f) => relative(SRC, f));
        assert.fail(`import cycle: ${cycle.join(" -> ")}`);
      }
      if (s === undefined) visit(target);
    }
    stack.pop();
    state.set(file, "done");
  };
  for (const file of graph.keys()) if (!state.has(file)) visit(file);
});
