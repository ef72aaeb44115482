/**
 * The file system calls the cache store writes through, behind one small interface so tests can put a failing or
 * recording layer in between (a full disk, a missing directory fsync) while reads and the real layer stay plain Deno.
 * @module
 */

/** What the store writes with. Every path is absolute. */
export interface StoreFs {
  /** Creates `path` (it must not exist), writes `body` to it and flushes its data to the disk. */
  writeNew(path: string, body: Uint8Array): Promise<void>;
  /** Sets a file's access and modification times, in ms since the epoch. */
  setTimes(path: string, atime: number, mtime: number): Promise<void>;
  /** Renames `from` to `to`, replacing `to` (same file system). */
  rename(from: string, to: string): Promise<void>;
  /** Flushes a directory's entries to the disk, so a rename into it survives a power cut. */
  syncDir(path: string): Promise<void>;
  /** Creates a directory and its parents. */
  mkdir(path: string): Promise<void>;
  /** Removes a file; a missing file is not an error. */
  remove(path: string): Promise<void>;
}

/** The real file system. */
export const denoFs: StoreFs = {
  async writeNew(path, body) {
    const file = await Deno.open(path, { write: true, createNew: true, mode: 0o644 });
    try {
      let off = 0;
      while (off < body.length) off += await file.write(body.subarray(off));
      await file.syncData();
    } finally {
      file.close();
    }
  },
  async setTimes(path, atime, mtime) {
    await Deno.utime(path, new Date(atime), new Date(mtime));
  },
  async rename(from, to) {
    await Deno.rename(from, to);
  },
  async syncDir(path) {
    const dir = await Deno.open(path, { read: true });
    try {
      await dir.sync();
    } finally {
      dir.close();
    }
  },
  async mkdir(path) {
    await Deno.mkdir(path, { recursive: true });
  },
  async remove(path) {
    try {
      await Deno.remove(path);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  },
};

/**
 * A short, stable name for why a file system call failed, for "logged once per cause": the errno code Deno attaches
 * (`ENOSPC`, `EDQUOT`, `EROFS`, `EIO`, ...), else the error's class name.
 */
export function causeOf(e: unknown): string {
  const code = (e as { code?: unknown })?.code;
  if (typeof code === "string" && /^[A-Z0-9_]{1,32}$/.test(code)) return code;
  return e instanceof Error ? e.name : "Error";
}
