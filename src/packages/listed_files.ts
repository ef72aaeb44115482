/**
 * The one memory of which file hashes served manifests listed, shared by the policy (`policy.unlisted: deny` serves
 * only files an allowed manifest listed), the pins (the files of pinned releases are never evicted), and the block and
 * lock guards (a file only blocked releases list is refused; a locked file is served by its locked full hash). It grows
 * with what clients ask for, so it is bounded: at most {@linkcode MAX_LISTED_FILES} short hashes, the oldest forgotten
 * first; the pinned and locked ones, which the configuration bounds, are never forgotten.
 * @module
 */

/** Most short hashes remembered at once, pinned and locked ones apart; past it the oldest noted is forgotten first. */
export const MAX_LISTED_FILES = 200_000;
/** How many characters of a hash its short form has: the length an index names files by. */
export const SHORT_HASH = 8;
/** Most allowed packages remembered as listing one file (for messages). */
export const PACKAGES_KEPT = 4;

/** The short form of a file hash, the key of what is remembered of it. */
export function shortHash(hash: string): string {
  return hash.slice(0, SHORT_HASH);
}

/** Listed by a manifest of a pinned release (an {@linkcode Entry}'s or a {@linkcode Form}'s `flags`). */
const PINNED = 1;
/** Listed by a manifest the block guard let through (an {@linkcode Entry}'s `flags`, for any form). */
const SERVED = 2;

/** Whether a pin holds the entry: its short form or a longer form listed by a pinned release. */
function pinnedAny(entry: Entry): boolean {
  return (entry.flags & PINNED) !== 0 || (entry.rare?.longer.some((f) => (f.flags & PINNED) !== 0) ?? false);
}

/** A hash as manifests list it, longer than its short form (a lock's full hash): rare, kept apart. */
interface Form {
  hash: string;
  packages: string[] | undefined;
  flags: number;
}

/** What few entries have: the lock's full hashes with the short form, and longer forms listed. */
interface Rare {
  locked: string[];
  longer: Form[];
}

/**
 * What is remembered of one short hash, in as few fields as it takes (one is held for each of up to
 * {@linkcode MAX_LISTED_FILES} hashes). The hash a manifest lists is most often the short form itself (an index names
 * files by 8 characters): what the policy and the pins note of it is held here, of a longer one in `rare.longer`.
 */
class Entry {
  /** Allowed packages whose manifests list the short form, newest first, at most {@linkcode PACKAGES_KEPT}. */
  packages: string[] | undefined = undefined;
  /** {@linkcode PINNED} (the short form) and {@linkcode SERVED} (any form). */
  flags = 0;
  /** The `policy.block` entry of the last refused manifest that lists it (any form). */
  refused: string | undefined = undefined;
  rare: Rare | undefined = undefined;
}

/**
 * File hashes by their short form: which allowed packages listed each exact hash (the policy), whether a pinned release
 * lists it (the pins), whether a served or a refused manifest lists it and what the lock holds for it (the guards).
 * Each reader asks only about what it noted, so one memory keeps each reader's rules.
 */
export class ListedFiles {
  /** Entries that may be forgotten, oldest noted first. */
  #recent = new Map<string, Entry>();
  /** Entries that a pin or the lock holds: never forgotten. */
  #kept = new Map<string, Entry>();
  /** The full hashes of the lock in force. */
  #locked = new Set<string>();

  /**
   * Notes that the manifest of allowed package `name` lists `hashes` (`policy.unlisted: deny`). Each hash becomes the
   * newest; `name` is put first among the packages that list it unless it is among them already.
   */
  noteAllowed(name: string, hashes: Iterable<string>): void {
    for (const hash of hashes) {
      const form = this.#form(this.#note(hash), hash);
      const names = form.packages ?? [];
      if (!names.includes(name)) names.unshift(name);
      form.packages = names.slice(0, PACKAGES_KEPT);
    }
  }

  /** Whether a manifest of an allowed package listed exactly `hash`. */
  allows(hash: string): boolean {
    return this.#find(hash)?.packages !== undefined;
  }

  /** The allowed packages whose manifests list exactly `hash` (at most {@linkcode PACKAGES_KEPT}), newest first. */
  packagesOf(hash: string): string[] {
    return this.#find(hash)?.packages ?? [];
  }

  /** Notes that a manifest of a pinned release lists `hashes`: they are kept for good. */
  notePinned(hashes: Iterable<string>): void {
    for (const hash of hashes) {
      const entry = this.#note(hash);
      this.#form(entry, hash).flags |= PINNED;
      this.#keep(hash, entry);
    }
  }

  /** Whether a manifest of a pinned release listed exactly `hash`. */
  pinned(hash: string): boolean {
    return ((this.#find(hash)?.flags ?? 0) & PINNED) !== 0;
  }

  /** Notes that a manifest the block guard let through lists `hashes`. */
  noteServed(hashes: Iterable<string>): void {
    for (const hash of hashes) this.#note(hash).flags |= SERVED;
  }

  /** Whether a manifest the block guard let through listed a hash with the short form of `hash`. */
  served(hash: string): boolean {
    return ((this.#entry(hash)?.flags ?? 0) & SERVED) !== 0;
  }

  /** Notes that a manifest refused by `policy.block` entry `entry` lists `hashes`. */
  noteRefused(hashes: Iterable<string>, entry: string): void {
    for (const hash of hashes) this.#note(hash).refused = entry;
  }

  /** The `policy.block` entry of the last refused manifest that listed a hash with the short form of `hash`. */
  refusedBy(hash: string): string | undefined {
    return this.#entry(hash)?.refused;
  }

  /**
   * Notes the full hashes of the lock in force: kept for good. They replace those of the lock before it (a lock read
   * again), whose entries go back among those that may be forgotten unless a pin holds them.
   */
  lock(full: Iterable<string>): void {
    const now = new Set(full);
    for (const hash of this.#locked) {
      if (now.has(hash)) continue;
      const key = shortHash(hash);
      const entry = this.#kept.get(key);
      if (entry?.rare === undefined) continue;
      entry.rare.locked = entry.rare.locked.filter((h) => h !== hash);
      if (entry.rare.locked.length === 0 && !pinnedAny(entry)) {
        this.#kept.delete(key);
        this.#recent.set(key, entry);
        if (this.#recent.size > MAX_LISTED_FILES) this.#recent.delete(this.#recent.keys().next().value!);
      }
    }
    for (const hash of now) {
      const key = shortHash(hash);
      const entry = this.#entry(key) ?? new Entry();
      const { locked } = entry.rare ??= { locked: [], longer: [] };
      if (!locked.includes(hash)) locked.push(hash);
      this.#keep(key, entry);
    }
    this.#locked = now;
  }

  /** The lock's full hash that begins with `hash` (at least {@linkcode SHORT_HASH} characters), if any. */
  lockedFor(hash: string): string | undefined {
    if (hash.length < SHORT_HASH) return undefined;
    return this.#entry(hash)?.rare?.locked.find((h) => h.startsWith(hash));
  }

  /** How many short hashes are remembered, those kept for good included. */
  get size(): number {
    return this.#recent.size + this.#kept.size;
  }

  /** How many short hashes are kept for good: pinned or locked. */
  get kept(): number {
    return this.#kept.size;
  }

  /** The entry of `hash`'s short form, made the newest (created if new); the oldest beyond the bound is forgotten. */
  #note(hash: string): Entry {
    const key = shortHash(hash);
    const kept = this.#kept.get(key);
    if (kept !== undefined) return kept;
    const entry = this.#recent.get(key) ?? new Entry();
    this.#recent.delete(key);
    this.#recent.set(key, entry);
    if (this.#recent.size > MAX_LISTED_FILES) this.#recent.delete(this.#recent.keys().next().value!);
    return entry;
  }

  /** Moves the entry of `hash`'s short form among those kept for good. */
  #keep(hash: string, entry: Entry): void {
    const key = shortHash(hash);
    this.#recent.delete(key);
    this.#kept.set(key, entry);
  }

  #entry(hash: string): Entry | undefined {
    const key = shortHash(hash);
    return this.#kept.get(key) ?? this.#recent.get(key);
  }

  /** Where what is noted of exactly `hash` goes in `entry`: the entry itself for its short form, else a longer form. */
  #form(entry: Entry, hash: string): Entry | Form {
    if (hash.length <= SHORT_HASH) return entry;
    const { longer } = entry.rare ??= { locked: [], longer: [] };
    let form = longer.find((f) => f.hash === hash);
    if (form === undefined) longer.push(form = { hash, packages: undefined, flags: 0 });
    return form;
  }

  /** What was noted of exactly `hash`, if anything. */
  #find(hash: string): Entry | Form | undefined {
    const entry = this.#entry(hash);
    if (entry === undefined || hash.length <= SHORT_HASH) return entry;
    return entry.rare?.longer.find((f) => f.hash === hash);
  }
}
