/**
 * Command lines of `warm`, `export` and `import`. Pure: returns what to do, never exits.
 * @module
 */
import { readArgs } from "../args.ts";
import { specProblem } from "../packages/names.ts";

/** The subcommands this room runs. */
export const BUNDLE_COMMANDS = ["warm", "export", "import"] as const;

/** A parsed `warm`, `export` or `import` command line. */
export type BundleCommand =
  | {
    kind: "warm";
    configPath?: string;
    overrides: Record<string, string>;
    packages: string[];
    profiles: string[];
    mpy: string[];
    /** `--from LOCKFILE`: every locked package, its variants and profiles, on top of `packages`. */
    from?: string;
  }
  | { kind: "export"; configPath?: string; overrides: Record<string, string>; packages: string[]; output: string }
  | { kind: "import"; configPath?: string; overrides: Record<string, string>; bundle: string };

/** Parses `args` (the subcommand first). Returns the command, or `{kind: "error"}` with a message. */
export function parseBundleArgs(
  args: string[],
): BundleCommand | { kind: "help" } | { kind: "error"; message: string } {
  const kind = args[0] as BundleCommand["kind"];
  let configPath: string | undefined;
  const packages: string[] = [];
  const profiles: string[] = [];
  const mpy: string[] = [];
  let output: string | undefined;
  const rest: Record<string, unknown> = {};
  try {
    for (const { arg, flag, value } of readArgs(args, 1)) {
      if (flag === "-h" || flag === "--help") return { kind: "help" };
      if (flag === "--config") configPath = value();
      else if (flag === "--profile" && kind === "warm") profiles.push(value());
      else if (flag === "--mpy" && kind === "warm") {
        const v = value();
        if (!/^(py|\d{1,3})$/.test(v)) {
          throw new Error(`--mpy takes py or an .mpy version number, got ${JSON.stringify(v)}`);
        }
        mpy.push(v);
      } else if ((flag === "--output" || flag === "-o") && kind === "export") output = value();
      else if (flag === "--from" && kind === "warm") rest.from = value();
      else if (flag.startsWith("-")) throw new Error(`Unknown option ${JSON.stringify(arg)} for ${kind}; see --help`);
      else if (kind === "import") {
        if (output !== undefined) throw new Error("import takes one bundle");
        output = arg;
      } else {
        const problem = specProblem(arg);
        if (problem) throw new Error(`Invalid package ${problem}`);
        packages.push(arg);
      }
    }
  } catch (e) {
    return { kind: "error", message: (e as Error).message };
  }
  const overrides: Record<string, string> = {};
  if (kind === "warm") {
    if (packages.length === 0 && Object.keys(rest).length === 0) {
      return { kind: "error", message: "warm needs the packages to warm: PKG[@VERSION]..." };
    }
    return { kind, configPath, overrides, packages, profiles, mpy, ...rest };
  }
  if (kind === "export") {
    if (!output) return { kind: "error", message: "export needs --output BUNDLE" };
    return { kind, configPath, overrides, packages, output };
  }
  if (!output) return { kind: "error", message: "import needs the bundle to import" };
  return { kind: "import", configPath, overrides, bundle: output };
}
