/**
 * Runs `warm`, `export` and `import` for `main.ts`: builds the app they work through (sharing the cache with a
 * server that may be running), prints progress on stderr and a summary on stdout, and returns the exit code.
 * @module
 */
import { cacheDirOf, createApp, storeFor } from "../app.ts";
import type { ObjectStore } from "../store/object_store.ts";
import type { Config } from "../config/schema.ts";
import { createLogger } from "../log.ts";
import { BASE_PLACEHOLDER } from "../packages/locations.ts";
import type { BundleCommand } from "./args.ts";
import { exportBundle } from "./export.ts";
import { BundleError, importBundle } from "./import.ts";
import { lockWarmList, readLockFile } from "../packages/lock_file.ts";
import { stderrSink } from "./progress.ts";
import { readSigningKey } from "../packages/signing.ts";
import { warm } from "./warm.ts";

/** Builds the app a bundle command walks through: the config's, answering with the base placeholder, offline for export. */
export async function commandApp(config: Config, offline: boolean, env: Record<string, string | undefined>) {
  const logger = createLogger({
    level: config.log.level === "debug" ? "debug" : "warn",
    format: config.log.format,
    write: (line) => console.error(line),
  });
  const shaped: Config = {
    ...config,
    server: { ...config.server, public_url: BASE_PLACEHOLDER },
    cache: { ...config.cache, offline: offline || config.cache.offline },
    // The walk's own requests are not device installs, and the server owns the records database.
    audit: { ...config.audit, enabled: false },
  };
  // Opening the store leaves a running server's writes in tmp/ alone (see store/disk/tmp_owner.ts).
  return await createApp({ config: shaped, logger, env });
}

const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

/** Runs a bundle command with the loaded `config`; resolves to the exit code. */
export async function runBundleCommand(
  command: BundleCommand,
  config: Config,
  env: Record<string, string | undefined> = {},
): Promise<number> {
  try {
    return await runBundle(command, config, env);
  } catch (e) {
    // A folder that cannot be written, a disk that fills up: said in one line, not a stack trace.
    console.error(`mipserver: ${command.kind} failed: ${(e as Error).message}`);
    return 1;
  }
}

async function runBundle(
  command: BundleCommand,
  config: Config,
  env: Record<string, string | undefined>,
): Promise<number> {
  const cacheDir = cacheDirOf(config);
  if (command.kind === "import") {
    let opened: ObjectStore | undefined;
    try {
      const trust = { keys: config.policy.trusted_keys, required: config.policy.require_signed };
      const r = await importBundle(
        async () => {
          const { store } = await storeFor(config, { limit: false, env });
          await store.open();
          return (opened = store);
        },
        command.bundle,
        { trust, warn: (text) => console.error(`mipserver: warning: ${text}`) },
      );
      const signed = r.signer ? `; signed by key ${r.signer.keyId} at ${r.signer.signedAt}` : "; unsigned";
      console.log(
        `Imported ${command.bundle} into ${cacheDir}: ${r.objects} objects (${r.newFiles} new files, ${r.manifests} manifests) for ${
          r.packages.join(", ")
        }${signed}`,
      );
      return 0;
    } catch (e) {
      if (!(e instanceof BundleError)) throw e;
      console.error(`mipserver: refused ${command.bundle}, nothing was changed: ${e.message}`);
      return 1;
    } finally {
      await opened?.close();
    }
  }
  if (command.kind === "warm" && command.from !== undefined) {
    // Everything the lock holds, at its locked versions, in its variants and profiles, on top of what was named.
    let list;
    try {
      list = lockWarmList(await readLockFile(command.from));
    } catch (e) {
      console.error(`mipserver: ${(e as Error).message}`);
      return 2;
    }
    const union = (a: string[], b: string[]) => [...new Set([...a, ...b])];
    command = {
      ...command,
      packages: union(command.packages, list.specs),
      mpy: command.mpy.length > 0 ? union(command.mpy, list.mpy) : list.mpy,
      profiles: union(command.profiles, list.profiles),
    };
  }
  // The key is read first: a key that cannot sign fails the export before the walk.
  const key = command.kind === "export" && command.sign !== undefined ? await readSigningKey(command.sign) : undefined;
  const app = await commandApp(config, command.kind === "export", env);
  if (command.kind === "warm") {
    let result;
    try {
      result = await warm(app, config, command, stderrSink());
    } catch (e) {
      console.error(`mipserver: ${(e as Error).message}`);
      return 2;
    }
    console.log(
      `Warmed ${result.warmed.length} of ${command.packages.length} packages into ${cacheDir} (${result.manifests} manifests, ${result.files} files)`,
    );
    for (const [spec, why] of result.failed) console.log(`FAILED ${spec}: ${why}`);
    if (result.failed.size > 0) {
      console.error(`mipserver: warm failed for ${[...result.failed.keys()].join(", ")}`);
      return 1;
    }
    return 0;
  }
  const result = await exportBundle(app, config, command.packages, command.output, { sign: key });
  for (const [spec, why] of result.missing) console.log(`NOT IN THE CACHE ${spec}: ${why}`);
  if (!result.written) {
    console.error(
      `mipserver: nothing written; not in the cache (run warm first): ${[...result.missing.keys()].join(", ")}`,
    );
    return 1;
  }
  console.log(
    `Exported ${result.objects} objects (${mib(result.bytes)}) to ${result.output}${
      result.signedBy ? `, signed with key ${result.signedBy}` : ""
    }`,
  );
  return 0;
}
