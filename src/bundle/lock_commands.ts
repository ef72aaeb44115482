/**
 * The `lock` and `purge` subcommands, run against the configured cache. Progress
 * and problems go to stderr; `lock` writes the lock to stdout unless `--output` names a file.
 * @module
 */
import { dirname, join } from "node:path";
import { createApp, storeFor } from "../app.ts";
import type { Config } from "../config/schema.ts";
import { createLogger } from "../log.ts";
import { createLock } from "./lock.ts";
import { parseSpec } from "./walk.ts";
import { formatLock } from "../packages/lock_file.ts";
import { readSigningKey, signDocument } from "../packages/signing.ts";
import { purge } from "./purge.ts";

/** A lock or purge command as the command line gave it. */
export type LockCommand = { kind: "lock" | "purge"; specs: string[]; output?: string; sign?: string };

/** Writes `text` to `path` atomically: a temp file beside it, then a rename. */
async function writeAtomically(path: string, text: string): Promise<void> {
  const tmp = join(dirname(path), `.${crypto.randomUUID()}.lock.part`);
  try {
    await Deno.writeTextFile(tmp, text);
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/** Runs `command`; resolves to the exit code (0 done, 1 failed). */
export async function runLockCommand(
  command: LockCommand,
  config: Config,
  env: Record<string, string | undefined> = {},
): Promise<number> {
  const logger = createLogger({ level: config.log.level, format: config.log.format, write: (l) => console.error(l) });
  try {
    if (command.kind === "purge") {
      const { name, version } = parseSpec(command.specs[0]);
      const { store } = await storeFor(config, { logger, limit: false, env });
      await store.open();
      const report = await purge(store, name, command.specs[0].includes("@") ? version : undefined)
        .finally(() => store.close());
      if (report.manifests.length === 0) {
        console.log(`Nothing cached for ${command.specs[0]}`);
        return 0;
      }
      for (const key of [...report.manifests, ...report.objects]) console.log(`removed ${key}`);
      console.log(
        `Purged ${command.specs[0]}: ${report.manifests.length} manifests, ${report.objects.length} objects ` +
          `(${report.bytes} bytes); kept ${report.shared} files other releases also use`,
      );
      return 0;
    }
    // The key is read first: a key that cannot sign fails the command before the walk.
    const key = command.sign === undefined ? undefined : await readSigningKey(command.sign);
    // The lock being made is not held to an earlier one; its walk is not a device install (no records).
    const shaped = { ...config, policy: { ...config.policy, lock: null }, audit: { ...config.audit, enabled: false } };
    const app = await createApp({ config: shaped, logger, env });
    const version = app.compiler.version;
    if (!version) {
      console.error(`mipserver: mpy-cross is not available (${app.compiler.path}); a lock needs its .mpy version`);
      return 1;
    }
    const lock = await createLock(command.specs, {
      resolver: app.resolver,
      named: app.named,
      mpy: String(version.major),
      profiles: app.compiler.profiles(),
    });
    await app.idle();
    const text = key ? await signDocument(formatLock(lock), key) : formatLock(lock);
    if (command.output) await writeAtomically(command.output, text);
    else await Deno.stdout.write(new TextEncoder().encode(text));
    console.error(
      `mipserver: locked ${Object.keys(lock.packages).length} packages for ${
        ["py", lock.mpy, ...lock.profiles.map((p) => `t/${p}`)].join(", ")
      }${command.output ? ` into ${command.output}` : ""}${key ? `, signed with key ${key.keyId}` : ""}`,
    );
    return 0;
  } catch (e) {
    console.error(`mipserver: ${(e as Error).message}`);
    return 1;
  }
}
