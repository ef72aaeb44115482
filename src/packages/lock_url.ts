/**
 * `policy.lock_url`: a lock fetched from a URL (a site following its central server's `/lock.json`) and read again
 * every so often, each time through the same checks as a lock file (signature, trusted keys). The last one that
 * passed is kept in the store, so a site that starts while the URL cannot be reached keeps its lock.
 * @module
 */
import type { Logger } from "../log.ts";
import { LOCK_COPY_KEY } from "../store/keys.ts";
import type { ObjectStore } from "../store/object_store.ts";
import { LockInForce, type LockSource } from "./lock_file.ts";
import type { Trust } from "./signing.ts";

/** The lock's URL could not be fetched (no answer, an error status, too large): not a refusal of the lock itself. */
export class LockUnreachable extends Error {}

/** A lock source that fetches `url` (at most `maxBytes`, within `timeoutMs`). */
export function urlLockSource(url: string, options: { timeoutMs: number; maxBytes: number }): LockSource {
  return {
    where: url,
    async read() {
      let res: Response;
      try {
        res = await fetch(url, { signal: AbortSignal.timeout(options.timeoutMs), redirect: "follow" });
      } catch (e) {
        throw new LockUnreachable(`Cannot fetch the lock from ${url}: ${(e as Error).message}`);
      }
      if (!res.ok) {
        await res.body?.cancel();
        throw new LockUnreachable(`Cannot fetch the lock from ${url}: ${res.status} ${res.statusText}`);
      }
      const length = Number(res.headers.get("content-length") ?? 0);
      if (length > options.maxBytes) {
        await res.body?.cancel();
        throw new LockUnreachable(`The lock at ${url} is larger than ${options.maxBytes} bytes`);
      }
      const body = new Uint8Array(await res.arrayBuffer());
      if (body.byteLength > options.maxBytes) {
        throw new LockUnreachable(`The lock at ${url} is larger than ${options.maxBytes} bytes`);
      }
      return new TextDecoder().decode(body);
    },
  };
}

/** The copy of the last lock from the URL that passed its checks, as a lock source. */
function storedCopy(store: ObjectStore, url: string): LockSource {
  return {
    where: `${url} (the copy kept from an earlier fetch)`,
    async read() {
      const object = await store.get(LOCK_COPY_KEY, { direct: true });
      if (!object) throw new LockUnreachable(`No copy of the lock from ${url} is kept yet`);
      return new TextDecoder().decode(object.body);
    },
  };
}

/**
 * Opens the lock at `url`: fetched and checked, or, when the URL cannot be reached, the kept copy (checked again).
 * A lock that is refused (unsigned, untrusted, tampered, not a lock) throws, as a refused lock file does; so does a
 * URL that cannot be reached when no copy is kept. Then every `everyMs` the URL is read again; a lock that passes
 * comes into force and is kept, one that is refused or cannot be fetched leaves the lock in force (logged).
 */
export async function followLock(
  url: string,
  options: {
    store: ObjectStore;
    trust: Trust;
    logger: Logger;
    now?: () => number;
    timeoutMs: number;
    maxBytes: number;
    everyMs: number;
  },
): Promise<{ lock: LockInForce; stop: () => void }> {
  const { store, trust, logger } = options;
  const source = urlLockSource(url, options);
  const keep = (lock: LockInForce) =>
    store.put(LOCK_COPY_KEY, new TextEncoder().encode(lock.text)).catch((e) =>
      logger.warn("Cannot keep a copy of the lock fetched from policy.lock_url", { error: (e as Error).message })
    );
  let lock: LockInForce;
  try {
    lock = await LockInForce.open(source, trust, logger, options.now);
    await keep(lock);
  } catch (e) {
    if (!(e instanceof LockUnreachable)) throw e;
    logger.warn("policy.lock_url cannot be reached; following the lock kept from an earlier fetch", {
      lock_url: url,
      error: e.message,
    });
    try {
      lock = await LockInForce.open(storedCopy(store, url), trust, logger, options.now);
    } catch (stored) {
      if (stored instanceof LockUnreachable) {
        throw new Error(
          `${e.message}, and no copy of it is kept from an earlier fetch: a site needs its lock to start`,
        );
      }
      throw stored;
    }
  }
  // The lock is read from the URL from now on, also when it started from the kept copy.
  lock.follow(source);
  const timer = setInterval(() => {
    lock.reload().then(async (taken) => {
      if (taken) await keep(lock);
    }, () => {});
  }, options.everyMs);
  Deno.unrefTimer(timer);
  return { lock, stop: () => clearInterval(timer) };
}
