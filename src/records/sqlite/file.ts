/**
 * How the install records' SQLite files are opened and measured: the records database and the PostgreSQL outbox alike
 * (incremental auto-vacuum on a new file, WAL, a short busy wait, a bounded WAL; the bytes their pages hold and the
 * file's and WAL's size on disk).
 * @module
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";

/** The page figures {@linkcode usedBytes} reads: pages, free pages and the page size. */
export const PAGES_SQL =
  "select (select page_count from pragma_page_count()) as pages, (select freelist_count from pragma_freelist_count()) as free, (select page_size from pragma_page_size()) as size";

/**
 * Opens the SQLite file at `path`: a new file gives its free pages back when asked (incremental auto-vacuum, set
 * before anything is written), WAL with a 200 ms wait for a lock (the recorder runs on the thread that answers
 * devices), and the WAL cut back to `walLimit` bytes; with `checkpointPages`, a checkpoint every that many pages.
 */
export function openWalFile(path: string, walLimit: number, checkpointPages?: number): DatabaseSync {
  const db = new DatabaseSync(path);
  try {
    if (Number((db.prepare("pragma page_count").get() as Record<string, unknown>).page_count) === 0) {
      db.exec("pragma auto_vacuum = incremental");
    }
    db.exec("pragma journal_mode = wal; pragma synchronous = normal; pragma busy_timeout = 200;");
    db.exec(`pragma journal_size_limit = ${walLimit}`);
    if (checkpointPages !== undefined) db.exec(`pragma wal_autocheckpoint = ${checkpointPages}`);
  } catch (e) {
    db.close();
    throw e;
  }
  return db;
}

/** Bytes the pages hold, free pages aside, from a prepared {@linkcode PAGES_SQL}: what the next rows add to. */
export function usedBytes(pages: StatementSync): number {
  const r = pages.get() as Record<string, unknown>;
  return (Number(r.pages) - Number(r.free)) * Number(r.size);
}

/** The file's and its WAL's size on disk (the used bytes for an in-memory database). */
export function sizeOnDisk(path: string, used: () => number): number {
  if (path === ":memory:") return used();
  let total = 0;
  for (const suffix of ["", "-wal"]) {
    try {
      total += Deno.statSync(path + suffix).size;
    } catch {
      // No WAL yet.
    }
  }
  return total;
}
