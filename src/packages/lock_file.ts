/**
 * The lock file `mipserver lock` writes and `policy.lock` reads: the exact versions and the full sha256 of every file
 * of a set of packages and their dependency closure, per variant (`py`, the compiled `.mpy` version, and each target
 * profile). JSON with sorted keys and two-space indentation, one file per line, no timestamps: the same inputs give
 * the same bytes, so lock files diff and review well.
 *
 * ```json
 * {
 *   "lock": 1,
 *   "mpy": "6",
 *   "packages": {
 *     "hello": {
 *       "deps": [],
 *       "files": {
 *         "6": { "hello.mpy": "3b1f…(64 hex)" },
 *         "py": { "hello.py": "9c0e…" },
 *         "t/esp32/6": { "hello.mpy": "3b1f…" }
 *       },
 *       "kind": "index",
 *       "ref": "1.1",
 *       "version": "1.1"
 *     }
 *   },
 *   "profiles": ["esp32"],
 *   "roots": ["hello"]
 * }
 * ```
 * @module
 */
import { z } from "zod";
import type { Logger } from "../log.ts";
import { checkSignature, type Signer, type Trust } from "./signing.ts";

/** The format version this code writes and reads. */
export const LOCK_FORMAT = 1;

const HASH = /^[0-9a-f]{64}$/;

const lockedPackage = z.strictObject({
  /** `index` (an upstream index package), `named` (`packages.<name>`) or `repo` (a repository dependency). */
  kind: z.enum(["index", "named", "repo"]),
  /** The version the package's manifest states. */
  version: z.string().min(1).max(100),
  /** What the package is read at: the index version, the named package's ref, the repository ref. */
  ref: z.string().min(1).max(100),
  /** Other lock entries this one depends on (names, `repo:...` ids) and `mirror:` paths (not locked). */
  deps: z.array(z.string().min(1).max(1000)),
  /** Variant (`py`, `6`, `t/<profile>/6`) → destination path → full sha256. */
  files: z.record(
    z.string().regex(/^(py|\d{1,3}|t\/[A-Za-z0-9][A-Za-z0-9._-]{0,99}\/\d{1,3})$/),
    z.record(
      z.string().min(1).max(1000),
      z.string().regex(HASH, "expected a full sha256 (64 lowercase hex characters)"),
    ),
  ),
});

const lockSchema = z.strictObject({
  lock: z.literal(LOCK_FORMAT),
  /** The `.mpy` version the compiled variants are for. */
  mpy: z.string().regex(/^\d{1,3}$/),
  /** The target profiles the lock has hashes for. */
  profiles: z.array(z.string()),
  /** The packages asked for (`name` or `name@version`). */
  roots: z.array(z.string()),
  packages: z.record(z.string().min(1).max(1000), lockedPackage),
  /** A signed lock's signature (`signing.ts`): checked on the text before it is parsed, not kept. */
  signature: z.unknown().optional(),
});

/** One locked package (index, named or repository dependency). */
export type LockedPackage = z.output<typeof lockedPackage>;
/** A whole lock file. */
export type LockFile = Omit<z.output<typeof lockSchema>, "signature">;

/** The variant key of a manifest request: `py`, `6`, or `t/<profile>/6` (a profile's `py` variant is plain `py`). */
export function variantKey(mpy: string, profile: string | null): string {
  return profile === null || mpy === "py" ? mpy : `t/${profile}/${mpy}`;
}

/** The lock id of a repository dependency manifest (`/repo/{mpy}/{host}/{owner}/{repo}/{ref}/{path}`). */
export function repoId(spec: { host: string; owner: string; repo: string; ref: string; path: string }): string {
  return `repo:${spec.host}/${spec.owner}/${spec.repo}/${spec.ref}/${spec.path}`;
}

function sortDeep(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortDeep);
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.keys(value).sort().map((k) => [k, sortDeep((value as Record<string, unknown>)[k])]),
    );
  }
  return value;
}

/** The lock as text: keys sorted at every level, lists sorted, two-space indentation, a final newline. */
export function formatLock(lock: LockFile): string {
  const copy: LockFile = {
    lock: lock.lock,
    mpy: lock.mpy,
    profiles: [...lock.profiles].sort(),
    roots: [...lock.roots].sort(),
    packages: Object.fromEntries(
      Object.entries(lock.packages).map(([id, p]) => [id, { ...p, deps: [...new Set(p.deps)].sort() }]),
    ),
  };
  return JSON.stringify(sortDeep(copy), null, 2) + "\n";
}

/** Reads a lock from text; throws an Error naming `where` and the first problems. */
export function parseLock(text: string, where: string): LockFile {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new Error(`Cannot read the lock file ${where}: invalid JSON: ${(e as Error).message}`);
  }
  const result = lockSchema.safeParse(data);
  if (!result.success) {
    const problems = result.error.issues.slice(0, 5).map((i) =>
      `${i.path.map(String).join(".") || "(top)"}: ${i.message}`
    );
    throw new Error(`Cannot read the lock file ${where}: ${problems.join("; ")}`);
  }
  const { signature: _, ...lock } = result.data;
  return lock;
}

/** Reads and checks a lock file from disk. */
export async function readLockFile(path: string): Promise<LockFile> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`Cannot read the lock file ${path}: ${(e as Error).message}`);
  }
  return parseLock(text, path);
}

/** Where a lock is read from: a file (`policy.lock`), or another place that gives its text. */
export interface LockSource {
  /** Where, for messages: the file's path. */
  where: string;
  /** The lock's text; throws an Error saying why it cannot be had. */
  read(): Promise<string>;
}

/** `policy.lock`: the lock file at `path`. */
export function lockFileSource(path: string): LockSource {
  return {
    where: path,
    async read() {
      try {
        return await Deno.readTextFile(path);
      } catch (e) {
        throw new Error(`Cannot read the lock file ${path}: ${(e as Error).message}`);
      }
    },
  };
}

/** A lock read and checked: the lock, where it came from, and who signed it (null: unsigned). */
export interface CheckedLock {
  file: LockFile;
  path: string;
  /** The lock's text as read, signature included (what `/lock.json` passes on to sites). */
  text: string;
  signer: Signer | null;
  /** Said once when it was read: unsigned though keys are trusted, or signed with no trusted key to check. */
  warning?: string;
}

/**
 * Reads a lock from `source` and checks its signature against `trust` before parsing it: throws a `SignatureError`
 * (unsigned, untrusted, tampered) or an Error (unreadable, not a lock) with the reason.
 */
export async function readCheckedLock(source: LockSource, trust: Trust): Promise<CheckedLock> {
  const text = await source.read();
  const { signer, warning } = await checkSignature(text, trust, `The lock file ${source.where}`);
  return { file: parseLock(text, source.where), path: source.where, text, signer, warning };
}

/** What /healthz and the status page show of the lock in force. */
export interface LockFacts {
  /** How many packages it locks. */
  packages: number;
  /** Its signer's key id and when it was signed; null when unsigned. */
  signed: { key_id: string; signed_at: string } | null;
  /** When it was read (ISO 8601). */
  loaded_at: string;
  /** The last re-read (SIGHUP): when, and why the lock read then was refused (null: it was taken). */
  reload: { at: string; refused: string | null } | null;
}

/**
 * The lock in force (`policy.lock`): read and checked at start (a lock that fails stops the start), and read again on
 * {@linkcode reload}, which takes the new lock only when it passes the same checks; otherwise the lock before it stays
 * in force and the reason is logged. Readers see `file` and `path` of the lock in force at each moment; those that
 * keep something derived from it listen with {@linkcode onChange}.
 */
export class LockInForce {
  #current: CheckedLock;
  #source: LockSource;
  #trust: Trust;
  #logger: Logger;
  #now: () => number;
  #loadedAt: number;
  #reload: LockFacts["reload"] = null;
  #listeners: (() => void)[] = [];
  #protects: (key: string) => boolean;

  private constructor(current: CheckedLock, source: LockSource, trust: Trust, logger: Logger, now: () => number) {
    this.#current = current;
    this.#source = source;
    this.#trust = trust;
    this.#logger = logger;
    this.#now = now;
    this.#loadedAt = now();
    this.#protects = lockProtects(current.file);
  }

  /** Reads and checks the lock; throws when it cannot be used (the server does not start). */
  static async open(source: LockSource, trust: Trust, logger: Logger, now: () => number = Date.now) {
    const checked = await readCheckedLock(source, trust);
    if (checked.warning) logger.warn(checked.warning);
    return new LockInForce(checked, source, trust, logger, now);
  }

  /** The lock in force. */
  get file(): LockFile {
    return this.#current.file;
  }

  /** Where it was read from. */
  get path(): string {
    return this.#current.path;
  }

  /** The text of the lock in force, as read (its signature included). */
  get text(): string {
    return this.#current.text;
  }

  /** Who signed the lock in force (null: unsigned). */
  get signer(): Signer | null {
    return this.#current.signer;
  }

  /** Reads the lock from `source` from now on (a lock that started from a kept copy of a URL's). */
  follow(source: LockSource): void {
    this.#source = source;
  }

  /** Calls `listener` each time another lock comes into force. */
  onChange(listener: () => void): void {
    this.#listeners.push(listener);
  }

  /** Whether the cache key is one the lock in force needs (kept from eviction). */
  protects(key: string): boolean {
    return this.#protects(key);
  }

  /**
   * Reads the lock again. Returns true when the new one is in force; false when it was refused (unreadable, not a
   * lock, unsigned, untrusted or tampered), the lock before it staying in force, which is logged with the reason.
   */
  async reload(): Promise<boolean> {
    const at = new Date(this.#now()).toISOString();
    let next: CheckedLock;
    try {
      next = await readCheckedLock(this.#source, this.#trust);
    } catch (e) {
      const reason = (e as { reason?: string }).reason ?? "unreadable";
      this.#reload = { at, refused: reason };
      this.#logger.error("The lock file read again was refused; the lock before it stays in force", {
        lock: this.#source.where,
        refused: reason,
        error: (e as Error).message,
        in_force: this.#current.signer ? `signed by ${this.#current.signer.keyId}` : "unsigned",
      });
      return false;
    }
    if (next.warning) this.#logger.warn(next.warning);
    this.#current = next;
    this.#protects = lockProtects(next.file);
    this.#loadedAt = this.#now();
    this.#reload = { at, refused: null };
    this.#logger.info("The lock file was read again; the new lock is in force", {
      lock: next.path,
      packages: Object.keys(next.file.packages).length,
      signed_by: next.signer?.keyId ?? null,
      signed_at: next.signer?.signedAt ?? null,
    });
    for (const listener of this.#listeners) listener();
    return true;
  }

  /** What /healthz and the status page show: no path, no key material but the public key's id. */
  facts(): LockFacts {
    const signer = this.#current.signer;
    return {
      packages: Object.keys(this.#current.file.packages).length,
      signed: signer ? { key_id: signer.keyId, signed_at: signer.signedAt } : null,
      loaded_at: new Date(this.#loadedAt).toISOString(),
      reload: this.#reload,
    };
  }
}

/** Every full sha256 the lock names (all packages, all variants). */
export function lockedHashes(lock: LockFile): Set<string> {
  const out = new Set<string>();
  for (const pkg of Object.values(lock.packages)) {
    for (const files of Object.values(pkg.files)) for (const hash of Object.values(files)) out.add(hash);
  }
  return out;
}

/**
 * A predicate for the store's eviction hook: true for a cache key the lock needs, a file stored under a locked hash
 * (`files/{h2}/{hash}`, the full hash or the short prefix an upstream index names it by).
 */
export function lockProtects(lock: LockFile): (key: string) => boolean {
  const full = lockedHashes(lock);
  const short = new Set([...full].map((h) => h.slice(0, 8)));
  return (key) => {
    const m = /^files\/[0-9a-f]{2}\/([0-9a-f]{8,64})$/.exec(key);
    if (!m) return false;
    if (m[1].length === 64) return full.has(m[1]);
    if (!short.has(m[1].slice(0, 8))) return false;
    for (const h of full) if (h.startsWith(m[1])) return true;
    return false;
  };
}

/** What `warm --from LOCKFILE` fetches: `name@ref` for each locked package by name, and the variants to fill. */
export interface LockWarmList {
  /** `PKG@VERSION` specs: every index and named package of the lock (repository dependencies come with them). */
  specs: string[];
  /** The plain variants: `py` and the `.mpy` version. */
  mpy: string[];
  /** The target profiles. */
  profiles: string[];
}

/** The warm list of a lock: every package by name at its locked version or ref, the variants and profiles. */
export function lockWarmList(lock: LockFile): LockWarmList {
  const specs = Object.entries(lock.packages)
    .filter(([, p]) => p.kind !== "repo")
    .map(([name, p]) => `${name}@${p.ref}`)
    .sort();
  return { specs, mpy: ["py", lock.mpy], profiles: [...lock.profiles].sort() };
}
