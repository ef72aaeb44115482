/** A small disk for real: a tmpfs mounted for a test (as root, or through passwordless sudo; without either the test fails). */
import assert from "node:assert/strict";
import { tempDir } from "./helpers.ts";

/** This user's id (`id -u`) or group id (`id -g`); Deno.uid() would need --allow-sys. */
async function id(flag: "-u" | "-g"): Promise<string> {
  const out = await new Deno.Command("id", { args: [flag], stdout: "piped" }).output();
  return new TextDecoder().decode(out.stdout).trim();
}

/** Runs `cmd` as root (directly, or through passwordless sudo). */
export async function asRoot(cmd: string[]): Promise<{ ok: boolean; text: string }> {
  const argv = (await id("-u")) === "0" ? cmd : ["sudo", "-n", ...cmd];
  try {
    const out = await new Deno.Command(argv[0], { args: argv.slice(1), stdout: "piped", stderr: "piped" }).output();
    return { ok: out.success, text: new TextDecoder().decode(out.stderr) };
  } catch (e) {
    return { ok: false, text: (e as Error).message };
  }
}

/** Mounts a tmpfs of `size` on a new folder owned by this user; returns the folder and how to unmount it. */
export async function smallDisk(size: string): Promise<{ dir: string; unmount: () => Promise<void> }> {
  const dir = tempDir("mipserver-full-");
  const options = `size=${size},mode=0755,uid=${await id("-u")},gid=${await id("-g")}`;
  const mounted = await asRoot(["mount", "-t", "tmpfs", "-o", options, "tmpfs", dir]);
  assert.ok(
    mounted.ok,
    `Cannot mount a tmpfs for the disk-full test (needs root or passwordless sudo): ${mounted.text}`,
  );
  // A file the test's server still holds keeps the mount busy for a moment: detach it lazily then (it goes once the
  // last file is closed), so no mount is left behind.
  const unmount = async () => {
    if (!(await asRoot(["umount", dir])).ok) await asRoot(["umount", "-l", dir]);
  };
  return { dir, unmount };
}
