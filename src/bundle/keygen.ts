/**
 * `mipserver keygen --out FILE`: makes an Ed25519 key to sign lock files and bundles with (`lock --sign`, `export
 * --sign`). The private key goes to FILE as PKCS#8 PEM, mode 0600, never over an existing file; the public key, the
 * line for `policy.trusted_keys`, goes to stdout, and its key id with it. `--from FILE` prints the same for a key made
 * elsewhere (`openssl genpkey -algorithm ed25519`).
 * @module
 */
import { generateKey, readSigningKey } from "../packages/signing.ts";

/** A keygen command as the command line gave it: `out` to make a key, `from` to read one. */
export type KeygenCommand = { kind: "keygen"; out?: string; from?: string };

/** Runs `command`; resolves to the exit code (0 done, 1 failed). */
export async function runKeygen(command: KeygenCommand): Promise<number> {
  try {
    if (command.from !== undefined) {
      const key = await readSigningKey(command.from);
      console.log(key.publicKey);
      console.error(`mipserver: ${command.from}: key id ${key.keyId}`);
      return 0;
    }
    const out = command.out!;
    const key = await generateKey();
    let file: Deno.FsFile;
    try {
      // createNew: an existing file (a key, perhaps the only copy) is never replaced.
      file = await Deno.open(out, { write: true, createNew: true, mode: 0o600 });
    } catch (e) {
      if (e instanceof Deno.errors.AlreadyExists) {
        console.error(`mipserver: ${out} exists; keygen never overwrites a key (remove it or choose another name)`);
        return 1;
      }
      throw e;
    }
    try {
      await Deno.chmod(out, 0o600); // whatever the umask
      await file.write(new TextEncoder().encode(key.pem));
      await file.sync();
    } catch (e) {
      file.close();
      await Deno.remove(out).catch(() => {});
      throw e;
    }
    file.close();
    console.log(key.publicKey);
    console.error(
      `mipserver: wrote the private key to ${out} (mode 0600); key id ${key.keyId}. ` +
        `Put the public key above in policy.trusted_keys where locks and bundles are checked.`,
    );
    return 0;
  } catch (e) {
    console.error(`mipserver: keygen failed: ${(e as Error).message}`);
    return 1;
  }
}
