/**
 * Compiles named packages' `.py` files for the device's target: under a numbered manifest `x.py` becomes `x.mpy`,
 * compiled once per (source sha256, compiler version, profile flags), also under concurrent requests, and checked
 * (`M`, the major version the device asked for, the profile's arch) before it is served. Failures fall back to the
 * source (`mpy_cross.on_error: source`) or answer 422 (`fail`); a compile refused because the compiler's queue is
 * full (`mpy_cross.ts`) answers 503 with Retry-After, whatever `on_error` says.
 * @module
 */
import { sha256Hex } from "../store/hash.ts";
import { compiledKey } from "../store/keys.ts";
import { SingleFlight } from "../cache/single_flight.ts";
import type { ObjectStore } from "../store/object_store.ts";
import { type Leases, soloLeases } from "../store/lease.ts";
import { Busy, CompileFailed, NotFound } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Transformed } from "../packages/named_service.ts";
import { CompileError, type CompilerVersion, MpyCross } from "./mpy_cross.ts";
import { ARCH_CODES, parseMpyHeader } from "./mpy_header.ts";

/** A target profile (`targets.<name>` of the configuration, handed down as it is). */
export interface Profile {
  /** mpy-cross's `-march`, or null for its default. */
  march: string | null;
  /** `-O` level 0-3, or null. */
  opt: number | null;
  /** `-msmall-int-bits`, or null. */
  small_int_bits: number | null;
  /** This profile's own mpy-cross, or null for the configured one. */
  mpy_cross: string | null;
}

/** A compiler that answered `--version`, or why there is none. */
interface Compiler {
  tool: MpyCross;
  version?: CompilerVersion;
  problem?: string;
}

/** The metrics the compile service sets (the server's metrics have them). */
export interface CompileCounters {
  /** Each compiler found at start: 1 when it runs, else 0. */
  compiler: { set(labels: { path: string; version: string; mpy: string }, value: number): void };
  /** Compiles by result (compiled, cached, fallback, failed). */
  compiles: { inc(labels: { result: string }): void };
}

/** What the compile service is built from. */
export interface CompileServiceOptions {
  /** The default compiler's path. */
  path: string;
  timeout: number;
  concurrency: number;
  onError: "source" | "fail";
  targets: Record<string, Profile>;
  store: ObjectStore;
  /** Who compiles what among the processes sharing the store (default: this one alone). */
  leases?: Leases;
  logger: Logger;
  metrics?: CompileCounters;
}

/** The mpy-cross flags of a profile. */
export function profileFlags(profile: Profile | undefined): string[] {
  if (!profile) return [];
  const flags: string[] = [];
  if (profile.march) flags.push(`-march=${profile.march}`);
  if (profile.opt !== null) flags.push(`-O${profile.opt}`);
  if (profile.small_int_bits !== null) flags.push(`-msmall-int-bits=${profile.small_int_bits}`);
  return flags;
}

/** Compiles sources for devices. */
export class CompileService {
  #o: CompileServiceOptions;
  #compilers = new Map<string, Compiler>();
  #flights = new SingleFlight<Uint8Array | CompileError>();
  #recipes = new Map<string, string>();
  /** Compiles that fell back to the source, by reason (for metrics). */
  fallbacks = 0;

  constructor(options: CompileServiceOptions) {
    this.#o = options;
  }

  /** Asks every configured compiler for its version; logs what it finds. Missing compilers are warnings, not errors. */
  async init(): Promise<void> {
    const paths = new Set([this.#o.path, ...Object.values(this.#o.targets).flatMap((t) => t.mpy_cross ?? [])]);
    for (const path of paths) {
      const tool = new MpyCross({ path, timeout: this.#o.timeout, concurrency: this.#o.concurrency });
      try {
        const version = await tool.version();
        this.#compilers.set(path, { tool, version });
        this.#o.metrics?.compiler.set({ path, version: version.text, mpy: `${version.major}.${version.minor}` }, 1);
        this.#o.logger.info("mpy-cross ready", {
          path,
          version: version.text,
          mpy: `${version.major}.${version.minor}`,
        });
      } catch (e) {
        const problem = (e as Error).message;
        this.#compilers.set(path, { tool, problem });
        this.#o.metrics?.compiler.set({ path, version: "", mpy: "" }, 0);
        this.#o.logger.warn("mpy-cross unavailable: .py sources will be served uncompiled", { path, error: problem });
      }
    }
  }

  /** The default compiler's version, or undefined when it is missing. */
  get version(): CompilerVersion | undefined {
    return this.#compilers.get(this.#o.path)?.version;
  }

  /** The `.mpy` major version `profile` is compiled for, as a device sends it (`py` when its compiler is missing). */
  mpyFor(profileName: string | null): string {
    const profile = profileName === null ? undefined : this.#o.targets[profileName];
    const version = this.#compilers.get(profile?.mpy_cross ?? this.#o.path)?.version;
    return version ? String(version.major) : "py";
  }

  /** The default compiler's path. */
  get path(): string {
    return this.#o.path;
  }

  /** Compiler processes started so far, over all compilers. */
  get runs(): number {
    let n = 0;
    for (const c of this.#compilers.values()) n += c.tool.runs;
    return n;
  }

  /** The known profile names. */
  profiles(): string[] {
    return Object.keys(this.#o.targets).sort();
  }

  /** Throws 404 listing the known profiles unless `name` is one. */
  checkProfile(name: string): void {
    if (!Object.hasOwn(this.#o.targets, name)) {
      const known = this.profiles();
      throw new NotFound(
        `Unknown target profile ${JSON.stringify(name)}; known: ${known.length ? known.join(", ") : "none configured"}`,
      );
    }
  }

  /** The per-target step for named packages: `.py` → `.mpy` under numbered manifests; everything else as it is. */
  transform = async (file: Transformed, mpy: string, profileName: string | null): Promise<Transformed> => {
    if (mpy === "py" || !file.dest.endsWith(".py")) return file;
    const profile = profileName === null ? undefined : this.#o.targets[profileName];
    const compiler = this.#compilers.get(profile?.mpy_cross ?? this.#o.path);
    const fallback = (why: string) => {
      this.fallbacks++;
      this.#o.metrics?.compiles.inc({ result: "fallback" });
      this.#o.logger.warn("Serving the .py source instead of .mpy", { file: file.dest, profile: profileName, why });
      return file;
    };
    if (!compiler?.version) return fallback(compiler?.problem ?? "no compiler");
    if (String(compiler.version.major) !== mpy) {
      return fallback(
        `the device asked for .mpy v${mpy} but ${compiler.tool.path} emits v${compiler.version.major}.${compiler.version.minor}`,
      );
    }
    const flags = profileFlags(profile);
    const sourceHash = await sha256Hex(file.bytes);
    const recipe = await this.#recipe(profileName, compiler.version, flags);
    const key = compiledKey(sourceHash, recipe);
    const result = await this.#flights.run(key, async () => {
      const cached = await this.#o.store.get(key);
      if (cached) {
        this.#o.metrics?.compiles.inc({ result: "cached" });
        return cached.body;
      }
      // Compiled once among the processes sharing the store: another one's output is read, not made again.
      const leases = this.#o.leases ?? soloLeases;
      const there = () => this.#o.store.get(key, { direct: true });
      const lease = leases.shared ? await leases.acquire(key, async () => (await there()) !== undefined) : undefined;
      try {
        const made = leases.shared ? await there() : undefined;
        if (made) {
          this.#o.metrics?.compiles.inc({ result: "cached" });
          return made.body;
        }
        const t0 = performance.now();
        const out = await compiler.tool.compile(file.bytes, file.dest, flags);
        this.#o.logger.debug("Compiled", {
          file: file.dest,
          profile: profileName,
          bytes: file.bytes.byteLength,
          mpy_bytes: out.byteLength,
          ms: Math.round(performance.now() - t0),
        });
        const problem = this.#checkHeader(out, compiler.version!, profile);
        if (problem) return new CompileError("failed", `mpy-cross output for ${file.dest} is unusable: ${problem}`);
        await this.#o.store.put(key, out);
        this.#o.metrics?.compiles.inc({ result: "compiled" });
        return out;
      } catch (e) {
        if (e instanceof CompileError) return e;
        throw e;
      } finally {
        await lease?.release().catch(() => {});
      }
    });
    if (result instanceof CompileError) {
      // A full queue says nothing about the source: no fallback (a manifest built from it would be kept), a 503.
      if (result.kind === "busy") throw new Busy(result.message, 1);
      if (this.#o.onError === "fail") {
        this.#o.metrics?.compiles.inc({ result: "failed" });
        throw new CompileFailed(result.message);
      }
      return fallback(result.message);
    }
    return { dest: `${file.dest.slice(0, -3)}.mpy`, bytes: result };
  };

  /** A short digest of what, besides the source, decides the output: compiler version and flags; once per profile. */
  async #recipe(profileName: string | null, version: CompilerVersion, flags: string[]): Promise<string> {
    const key = profileName ?? "";
    let recipe = this.#recipes.get(key);
    if (recipe === undefined) {
      recipe = (await sha256Hex(new TextEncoder().encode(`${version.text}\n${flags.join(" ")}`))).slice(0, 16);
      this.#recipes.set(key, recipe);
    }
    return recipe;
  }

  #checkHeader(out: Uint8Array, version: CompilerVersion, profile: Profile | undefined): string | undefined {
    const header = parseMpyHeader(out);
    if (!header) return "no .mpy header";
    if (header.major !== version.major) return `header says v${header.major}, compiler says v${version.major}`;
    if (header.arch !== 0 && header.arch !== ARCH_CODES[profile?.march ?? ""]) {
      return `native code for arch ${header.arch}, profile asks for ${profile?.march ?? "none"}`;
    }
    return undefined;
  }
}
