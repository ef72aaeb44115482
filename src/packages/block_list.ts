/**
 * `policy.block`: releases refused everywhere. An entry is `name` (every release) or `name@version` (one release,
 * matched against the version a manifest states or the version/ref it was asked for).
 * @module
 */

/** The parsed block list. */
export class BlockList {
  #all = new Set<string>();
  #versions = new Map<string, Set<string>>();

  constructor(entries: string[]) {
    for (const entry of entries) {
      const at = entry.indexOf("@");
      if (at < 0) {
        this.#all.add(entry);
      } else {
        const name = entry.slice(0, at);
        if (!this.#versions.has(name)) this.#versions.set(name, new Set());
        this.#versions.get(name)!.add(entry.slice(at + 1));
      }
    }
  }

  /** Whether the list blocks anything. */
  get empty(): boolean {
    return this.#all.size === 0 && this.#versions.size === 0;
  }

  /** The names with at least one blocked release. */
  names(): string[] {
    return [...new Set([...this.#all, ...this.#versions.keys()])].sort();
  }

  /** Whether every release of `name` is blocked. */
  blocksAll(name: string): boolean {
    return this.#all.has(name);
  }

  /** Whether some release of `name` is blocked. */
  touches(name: string): boolean {
    return this.#all.has(name) || this.#versions.has(name);
  }

  /** The entry that blocks `name` at any of `versions` (a stated version, a ref), or undefined. */
  match(name: string, ...versions: (string | undefined)[]): string | undefined {
    if (this.#all.has(name)) return name;
    const set = this.#versions.get(name);
    if (!set) return undefined;
    const hit = versions.find((v) => v !== undefined && set.has(v));
    return hit === undefined ? undefined : `${name}@${hit}`;
  }
}

/** Compares versions part by part (numbers as numbers, `1.10` after `1.9`; a pre-release such as `1.0-rc1` first). */
export function compareVersions(a: string, b: string): number {
  const parts = (v: string) => v.replace(/^v/i, "").split(/[.+-]/);
  const pa = parts(a);
  const pb = parts(b);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i];
    const y = pb[i];
    if (x === undefined) return /^\d+$/.test(y) ? -1 : 1; // 1.0 < 1.0.1, but 1.0-rc1 < 1.0
    if (y === undefined) return /^\d+$/.test(x) ? 1 : -1;
    const nx = /^\d+$/.test(x);
    const ny = /^\d+$/.test(y);
    if (nx && ny) {
      const d = Number(x) - Number(y);
      if (d !== 0) return d;
    } else if (nx !== ny) {
      return nx ? 1 : -1;
    } else if (x !== y) {
      return x < y ? -1 : 1;
    }
  }
  return 0;
}

/** The newest of `versions` that `blocked` does not refuse, or undefined. */
export function newestUnblocked(versions: string[], blocked: (v: string) => boolean): string | undefined {
  return versions.filter((v) => !blocked(v)).sort(compareVersions).at(-1);
}
