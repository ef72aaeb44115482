/**
 * Who owns a file in a cache's `tmp/`. Several processes may write to one cache at once (a server, and `warm`,
 * `import` or `lock` beside it), and a process that dies leaves its unfinished writes there. Each process that writes
 * holds an exclusive lock on an owner file, `locks/{id}.owner`, for as long as it runs, and names its temp files
 * `{id}-...`. A temp file whose owner file is gone, or whose lock can be taken, was left by a process that is gone.
 * (The kernel drops the lock when its process dies, however it dies; no process ids or `/proc` are involved.)
 * @module
 */
import { join } from "node:path";

const ID = /^(\d+\.[0-9a-f]{8})-/;

/** This process's claim on a cache's `tmp/`. */
export class TmpOwner {
  static #claims = new Map<string, Promise<TmpOwner>>();
  /** The prefix of this process's temp file names. */
  readonly id: string;
  #root: string;
  #file: Deno.FsFile;
  #refs = 0;

  private constructor(root: string, id: string, file: Deno.FsFile) {
    this.#root = root;
    this.id = id;
    this.#file = file;
  }

  /**
   * Claims the cache folder `root` for this process (one claim per folder and process, shared by its users); pair it
   * with {@linkcode TmpOwner.release} when the work is done, or keep it for the life of the process.
   */
  static claim(root: string): Promise<TmpOwner> {
    let claim = TmpOwner.#claims.get(root);
    if (!claim) {
      claim = (async () => {
        const dir = join(root, "locks");
        await Deno.mkdir(dir, { recursive: true });
        const id = `${Deno.pid}.${crypto.randomUUID().slice(0, 8)}`;
        const file = await Deno.open(join(dir, `${id}.owner`), { read: true, write: true, createNew: true });
        if (!(await file.tryLock(true))) throw new Error(`Cannot lock the owner file ${id}.owner in ${dir}`);
        return new TmpOwner(root, id, file);
      })();
      TmpOwner.#claims.set(root, claim);
      claim.catch(() => TmpOwner.#claims.delete(root));
    }
    return claim.then((owner) => {
      owner.#refs++;
      return owner;
    });
  }

  /** A fresh temp file name of this process: `{id}-{kind}-{uuid}`. */
  name(kind: string): string {
    return `${this.id}-${kind}-${crypto.randomUUID()}`;
  }

  /** Gives the claim back; the last user closes and removes the owner file (and an empty `locks/`). */
  async release(): Promise<void> {
    if (--this.#refs > 0) return;
    TmpOwner.#claims.delete(this.#root);
    this.#file.close();
    const dir = join(this.#root, "locks");
    await Deno.remove(join(dir, `${this.id}.owner`)).catch(() => {});
    await Deno.remove(dir).catch(() => {}); // only when empty
  }

  /**
   * Tells whether the `tmp/` entry `name` was left by a process that is gone: it names no owner, its owner file is
   * gone, or its owner's lock can be taken. This process's own entries are never left over.
   */
  async isLeftover(name: string, verdicts: Map<string, boolean> = new Map()): Promise<boolean> {
    const id = ID.exec(name)?.[1];
    if (id === undefined) return true;
    if (id === this.id) return false;
    let dead = verdicts.get(id);
    if (dead === undefined) {
      dead = await ownerGone(join(this.#root, "locks", `${id}.owner`));
      verdicts.set(id, dead);
    }
    return dead;
  }

  /** Removes the owner files of processes that are gone; returns how many. */
  async sweepOwners(): Promise<number> {
    const dir = join(this.#root, "locks");
    let removed = 0;
    for await (const entry of Deno.readDir(dir)) {
      const m = /^(\d+\.[0-9a-f]{8})\.owner$/.exec(entry.name);
      if (!m || m[1] === this.id) continue;
      const path = join(dir, entry.name);
      if (await ownerGone(path)) {
        await Deno.remove(path).catch(() => {});
        removed++;
      }
    }
    return removed;
  }
}

/** Whether the owner file at `path` is missing or unlocked (its process is gone). */
async function ownerGone(path: string): Promise<boolean> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true, write: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return true;
    return false; // cannot tell: keep what it owns
  }
  try {
    const got = await file.tryLock(true);
    if (got) await file.unlock();
    return got;
  } finally {
    file.close();
  }
}
