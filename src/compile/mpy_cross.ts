/**
 * A `Deno.Command` wrapper around `mpy-cross`: argument arrays only (no shell), a private temp dir per job, a timeout
 * that kills the process, bounded concurrency with a queue, and the compiler's stderr turned into a message.
 * @module
 */
import { join } from "node:path";
import { parseEmittedVersion } from "./mpy_header.ts";

/** A compile that did not produce output; `message` is the compiler's own words where it gave any. */
export class CompileError extends Error {
  /** `failed` (the compiler refused the source), `timeout` or `missing` (no compiler). */
  readonly kind: "failed" | "timeout" | "missing";
  constructor(kind: "failed" | "timeout" | "missing", message: string) {
    super(message);
    this.name = "CompileError";
    this.kind = kind;
  }
}

/** What a compiler is run with. */
export interface MpyCrossOptions {
  /** The executable. */
  path: string;
  /** A compile running longer is killed, in ms. */
  timeout: number;
  /** Compiles at once; more wait. */
  concurrency: number;
}

/** What `--version` says. */
export interface CompilerVersion {
  /** The whole line, e.g. `MicroPython v1.28.0 on 2026-08-11; mpy-cross emitting mpy v6.3`. */
  text: string;
  major: number;
  minor: number;
}

/** One mpy-cross executable. */
export class MpyCross {
  #o: MpyCrossOptions;
  #active = 0;
  #waiting: (() => void)[] = [];
  /** Compiler processes started so far (for metrics and tests). */
  runs = 0;

  constructor(options: MpyCrossOptions) {
    this.#o = options;
  }

  /** The executable's path. */
  get path(): string {
    return this.#o.path;
  }

  /** Compiles running now. */
  get active(): number {
    return this.#active;
  }

  /** Compiles waiting for a slot. */
  get queued(): number {
    return this.#waiting.length;
  }

  /** Runs `--version`; throws a {@linkcode CompileError} (`missing`) when the compiler cannot run or says no version. */
  async version(): Promise<CompilerVersion> {
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command(this.#o.path, {
        args: ["--version"],
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(this.#o.timeout),
      }).output();
    } catch (e) {
      throw new CompileError("missing", `Cannot run ${this.#o.path}: ${(e as Error).message}`);
    }
    const text = new TextDecoder().decode(out.stdout).trim() || new TextDecoder().decode(out.stderr).trim();
    const v = parseEmittedVersion(text);
    if (out.code !== 0 || !v) {
      throw new CompileError(
        "missing",
        `${this.#o.path} --version did not name an .mpy version: ${text.slice(0, 200)}`,
      );
    }
    return { text: text.split("\n")[0], ...v };
  }

  /** Compiles `source` (named `name` in messages and tracebacks) with extra `flags`; returns the `.mpy` bytes. */
  async compile(source: Uint8Array, name: string, flags: string[]): Promise<Uint8Array> {
    await this.#acquire();
    const dir = await Deno.makeTempDir({ prefix: "mipserver-mpy-" });
    try {
      const input = join(dir, "input.py");
      const output = join(dir, "output.mpy");
      await Deno.writeFile(input, source);
      this.runs++;
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), this.#o.timeout);
      let out: Deno.CommandOutput;
      try {
        out = await new Deno.Command(this.#o.path, {
          args: ["-o", output, "-s", name, ...flags, input],
          cwd: dir,
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
          signal: controller.signal,
        }).output();
      } catch (e) {
        throw new CompileError("missing", `Cannot run ${this.#o.path}: ${(e as Error).message}`);
      } finally {
        clearTimeout(timer);
      }
      if (controller.signal.aborted) {
        throw new CompileError("timeout", `mpy-cross took longer than ${this.#o.timeout}ms on ${name} and was killed`);
      }
      if (out.code !== 0) {
        const said = (new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout)).trim()
          .replaceAll(input, name).split("\n").slice(-6).join("\n");
        throw new CompileError("failed", `mpy-cross failed on ${name}: ${said || `exit code ${out.code}`}`);
      }
      return await Deno.readFile(output);
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      this.#release();
    }
  }

  async #acquire(): Promise<void> {
    if (this.#active < this.#o.concurrency) {
      this.#active++;
      return;
    }
    await new Promise<void>((resolve) => this.#waiting.push(resolve));
  }

  #release(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#active--;
  }
}
