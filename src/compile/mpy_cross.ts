/**
 * A `Deno.Command` wrapper around `mpy-cross`: argument arrays only (no shell), a private temp dir per job, a timeout
 * that kills the process, bounded concurrency with a bounded queue, and the compiler's stderr turned into a message.
 * @module
 */
import { join } from "node:path";
import { parseEmittedVersion } from "./mpy_header.ts";

/** Most compiles that wait for a slot of one compiler; one more is refused at once ({@linkcode CompileError} `busy`). */
export const MAX_WAITING_COMPILES = 256;
/** Most source bytes the compiles waiting for one compiler hold; one more is refused at once (`busy`). */
export const MAX_WAITING_BYTES = 32 * 1024 * 1024;

/** A compile that did not produce output; `message` is the compiler's own words where it gave any. */
export class CompileError extends Error {
  /**
   * `failed` (the compiler refused the source), `timeout`, `missing` (no compiler) or `busy` (the queue is full:
   * nothing was run, and a later try may succeed).
   */
  readonly kind: "failed" | "timeout" | "missing" | "busy";
  constructor(kind: "failed" | "timeout" | "missing" | "busy", message: string) {
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
  /**
   * Compiles at once; more wait, at most {@linkcode MAX_WAITING_COMPILES} of them holding at most
   * {@linkcode MAX_WAITING_BYTES} of source; beyond that a compile is refused as `busy`.
   */
  concurrency: number;
}

interface Waiting {
  start: () => void;
  bytes: number;
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
  #waiting: Waiting[] = [];
  #waitingBytes = 0;
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

  /** Source bytes the compiles waiting for a slot hold. */
  get queuedBytes(): number {
    return this.#waitingBytes;
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

  /**
   * Compiles `source` (named `name` in messages and tracebacks) with extra `flags`; returns the `.mpy` bytes. Throws
   * a {@linkcode CompileError}: `busy` at once when the queue is full.
   */
  async compile(source: Uint8Array, name: string, flags: string[]): Promise<Uint8Array> {
    await this.#acquire(name, source.byteLength);
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

  async #acquire(name: string, bytes: number): Promise<void> {
    if (this.#active < this.#o.concurrency) {
      this.#active++;
      return;
    }
    if (this.#waiting.length >= MAX_WAITING_COMPILES || this.#waitingBytes + bytes > MAX_WAITING_BYTES) {
      throw new CompileError(
        "busy",
        `Too many compiles waiting (${this.#waiting.length}, holding ${this.#waitingBytes} bytes of source); ` +
          `${name} was not compiled: try again shortly`,
      );
    }
    this.#waitingBytes += bytes;
    await new Promise<void>((start) => this.#waiting.push({ start, bytes }));
  }

  #release(): void {
    const next = this.#waiting.shift();
    if (next) {
      this.#waitingBytes -= next.bytes;
      next.start();
    } else this.#active--;
  }
}
