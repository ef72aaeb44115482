/**
 * The local outbox in front of the shared database: each batch of install records is kept in one SQLite file in the
 * cache dir (`records-outbox.sqlite`, WAL mode) the moment it is made, and taken out only once the database holds it.
 * So serving never waits on the database, a database that is down or slow only makes the outbox longer, and a crash
 * or restart sends what was waiting. The file is bounded (`audit.max_size`): a batch that would pass the bound is
 * refused, and counted.
 *
 * Each file has its own writer id (made when the file is made) and numbers its batches in order (never reused), so
 * the database can tell a batch it already holds from a new one: each is applied once, in order.
 * @module
 */
import { openWalFile, PAGES_SQL, sizeOnDisk, usedBytes } from "../sqlite/file.ts";
import type { DatabaseSync, StatementSync } from "node:sqlite";
import { isCorruption } from "../sqlite/audit_db.ts";

/** One batch waiting. */
export interface OutboxBatch {
  seq: number;
  writer: string;
  body: string;
  requests: number;
  /** When it was kept (ms). */
  at: number;
}

/** The outbox's figures. */
export interface OutboxFigures {
  batches: number;
  requests: number;
  /** When the oldest waiting batch was kept (ms), or null. */
  oldest_at: number | null;
}

/** Thrown by {@linkcode Outbox.append} when the batch would pass the bound. */
export class OutboxFull extends Error {
  constructor(bytes: number, max: number) {
    super(`the install records' outbox is full (${bytes} of ${max} bytes): the database has not taken its batches`);
    this.name = "OutboxFull";
  }
}

const DB_FILES = ["", "-wal", "-shm"] as const;

const SCHEMA = `
create table if not exists meta (key text primary key, value text not null);
create table if not exists batches (
  seq integer primary key autoincrement,
  requests integer not null,
  at integer not null,
  body text not null
);
`;

type Raw = Record<string, unknown>;

/** A bounded queue of batches in a SQLite file. */
export class Outbox {
  readonly path: string;
  readonly maxBytes: number;
  #db!: DatabaseSync;
  #s!: Record<string, StatementSync>;
  #writer = "";
  #maxInstallId = 0;
  #count = 0;
  #requests = 0;
  #onReplaced?: (movedTo: string, reason: string) => void;

  /** Opens (creating if needed) the outbox at `path`, moving a corrupt file aside. */
  constructor(path: string, maxBytes: number, onReplaced?: (movedTo: string, reason: string) => void) {
    this.path = path;
    this.maxBytes = maxBytes;
    this.#onReplaced = onReplaced;
    try {
      this.#open();
    } catch (e) {
      if (!isCorruption(e) || path === ":memory:") throw e;
      this.replaceCorrupt((e as Error).message);
    }
  }

  #open(): void {
    const db = openWalFile(this.path, 1_048_576);
    try {
      db.exec(SCHEMA);
      const stored = (db.prepare("select value from meta where key = 'writer'").get() as Raw | undefined)?.value;
      let writer = typeof stored === "string" ? stored : "";
      if (writer === "") {
        writer = crypto.randomUUID();
        db.prepare("insert into meta (key, value) values ('writer', ?)").run(writer);
      }
      this.#writer = writer;
      const max = (db.prepare("select value from meta where key = 'max_install_id'").get() as Raw | undefined)?.value;
      this.#maxInstallId = Number(max ?? 0);
    } catch (e) {
      db.close();
      throw e;
    }
    this.#db = db;
    const p = (sql: string) => db.prepare(sql);
    this.#s = {
      append: p("insert into batches (requests, at, body) values (?, ?, ?) returning seq"),
      maxId: p(
        "insert into meta (key, value) values ('max_install_id', ?) on conflict (key) do update set value = excluded.value",
      ),
      oldest: p("select seq, body, requests, at from batches order by seq limit ?"),
      remove: p("delete from batches where seq = ?"),
      // The small columns come before the body, so these read no body's overflow pages.
      counts: p("select count(*) as n, coalesce(sum(requests), 0) as r from batches"),
      oldestAt: p("select at from batches order by seq limit 1"),
      pages: p(PAGES_SQL),
    };
    const c = this.#s.counts.get() as Raw;
    this.#count = Number(c.n);
    this.#requests = Number(c.r);
  }

  /** This file's writer id: the database knows each batch by it and the batch's number. */
  get writer(): string {
    return this.#writer;
  }

  /** The highest install id in a batch kept so far (the recorder numbers on from it after a restart). */
  get maxInstallId(): number {
    return this.#maxInstallId;
  }

  /** Bytes the file's pages hold (free pages aside). */
  usedBytes(): number {
    return usedBytes(this.#s.pages);
  }

  /** The file's and its WAL's size on disk. */
  sizeOnDisk(): number {
    return sizeOnDisk(this.path, () => this.usedBytes());
  }

  /**
   * Keeps a batch (committed before this returns) and returns its number. Throws {@linkcode OutboxFull} when the
   * file would pass `maxBytes`, and the disk's error when it cannot be written.
   */
  append(body: string, requests: number, maxInstallId: number, now: number): number {
    const bytes = body.length + 64;
    const used = this.usedBytes();
    if (used + bytes > this.maxBytes) throw new OutboxFull(used, this.maxBytes);
    this.#db.exec("begin");
    try {
      const seq = Number((this.#s.append.get(requests, now, body) as Raw).seq);
      if (maxInstallId > this.#maxInstallId) this.#s.maxId.run(String(maxInstallId));
      this.#db.exec("commit");
      if (maxInstallId > this.#maxInstallId) this.#maxInstallId = maxInstallId;
      this.#count++;
      this.#requests += requests;
      return seq;
    } catch (e) {
      try {
        this.#db.exec("rollback");
      } catch {
        // Already rolled back.
      }
      throw e;
    }
  }

  /** The oldest `n` batches waiting, in order. */
  oldest(n = 1): OutboxBatch[] {
    return (this.#s.oldest.all(n) as Raw[]).map((r) => ({
      seq: Number(r.seq),
      writer: this.#writer,
      body: String(r.body),
      requests: Number(r.requests),
      at: Number(r.at),
    }));
  }

  /** Takes a batch the database holds out of the outbox. */
  remove(batch: OutboxBatch): void {
    if (Number(this.#s.remove.run(batch.seq).changes) === 0) return;
    this.#count--;
    this.#requests -= batch.requests;
    if (this.#count === 0) {
      // Empty: give the pages back and cut the WAL, so an outbox that was long does not stay large.
      this.#db.prepare("pragma incremental_vacuum").all();
      this.#db.exec("pragma wal_checkpoint(truncate)");
    }
  }

  /** How many batches and device requests wait, and since when. */
  figures(): OutboxFigures {
    if (this.#count === 0) return { batches: 0, requests: 0, oldest_at: null };
    const at = (this.#s.oldestAt.get() as Raw | undefined)?.at;
    return { batches: this.#count, requests: this.#requests, oldest_at: at === undefined ? null : Number(at) };
  }

  /** Whether no batch waits. */
  get empty(): boolean {
    return this.#count === 0;
  }

  /** Moves a corrupt file aside as `<path>.corrupt-<time>` and starts a new one (with a new writer id). */
  replaceCorrupt(reason: string): string {
    try {
      if (this.#db?.isOpen) this.#db.close();
    } catch {
      // Closing a broken file may fail too.
    }
    const movedTo = `${this.path}.corrupt-${new Date().toISOString().replace(/[:.]/g, "-")}`;
    for (const suffix of DB_FILES) {
      try {
        Deno.renameSync(this.path + suffix, movedTo + suffix);
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
    }
    this.#open();
    this.#onReplaced?.(movedTo, reason);
    return movedTo;
  }

  close(): void {
    if (this.#db?.isOpen) this.#db.close();
  }
}
