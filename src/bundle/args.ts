/**
 * Command lines of `warm`, `export` and `import`: their flag tables and what they make of them, read by the one
 * reader (`../args.ts`). Pure: returns what to do, never exits.
 * @module
 */
import { ArgError, type CommandSpec, CONFIG_FLAG, type Flag, HELP_FLAG, readCommandLine, type Stop } from "../args.ts";
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
  | {
    kind: "export";
    configPath?: string;
    overrides: Record<string, string>;
    packages: string[];
    output: string;
    /** `--sign KEY`: the private key file to sign the bundle manifest with. */
    sign?: string;
  }
  | { kind: "import"; configPath?: string; overrides: Record<string, string>; bundle: string };

const WARM_FLAGS: readonly Flag[] = [
  HELP_FLAG,
  CONFIG_FLAG,
  {
    names: ["--profile"],
    value: "NAME",
    repeatable: true,
    help: "also compile for this mpy_cross profile (repeatable)",
  },
  {
    names: ["--mpy"],
    value: "py|N",
    repeatable: true,
    check: (v) =>
      /^(py|\d{1,3})$/.test(v) ? undefined : `--mpy takes py or an .mpy version number, got ${JSON.stringify(v)}`,
    help: "the variant to warm: py sources or .mpy version N (repeatable)",
  },
  { names: ["--from"], value: "LOCKFILE", help: "warm every package the lock names, as locked" },
];

const EXPORT_FLAGS: readonly Flag[] = [
  HELP_FLAG,
  CONFIG_FLAG,
  { names: ["--output", "-o"], value: "BUNDLE", help: "the .tar.gz bundle to write" },
  { names: ["--sign"], value: "KEY", help: "sign the bundle (its list of objects) with the private key in KEY" },
];

/** A `PKG[@VERSION]` argument: refused at once when the index could not name such a package. */
const packageArgument = (arg: string) => {
  const problem = specProblem(arg);
  return problem ? `Invalid package ${problem}` : undefined;
};

/** The commands of this room, for the one reader; each is named by the first argument. */
export const BUNDLE_COMMAND_SPECS: readonly CommandSpec<BundleCommand>[] = [
  {
    name: "warm",
    named: "first",
    flags: WARM_FLAGS,
    argument: packageArgument,
    build: (read) => {
      const from = read.value("from");
      if (read.args.length === 0 && from === undefined) {
        throw new ArgError("warm needs the packages to warm: PKG[@VERSION]...");
      }
      return {
        kind: "warm",
        configPath: read.value("config"),
        overrides: read.overrides,
        packages: read.args,
        profiles: read.list("profile"),
        mpy: read.list("mpy"),
        ...(from === undefined ? {} : { from }),
      };
    },
  },
  {
    name: "export",
    named: "first",
    flags: EXPORT_FLAGS,
    argument: packageArgument,
    build: (read) => {
      const output = read.value("output");
      if (!output) throw new ArgError("export needs --output BUNDLE");
      const sign = read.value("sign");
      return {
        kind: "export",
        configPath: read.value("config"),
        overrides: read.overrides,
        packages: read.args,
        output,
        ...(sign === undefined ? {} : { sign }),
      };
    },
  },
  {
    name: "import",
    named: "first",
    flags: [HELP_FLAG, CONFIG_FLAG],
    argument: (_arg, earlier) => earlier.length > 0 ? "import takes one bundle" : undefined,
    build: (read) => {
      const bundle = read.args[0];
      if (!bundle) throw new ArgError("import needs the bundle to import");
      return { kind: "import", configPath: read.value("config"), overrides: read.overrides, bundle };
    },
  },
];

/** Parses `args` (the subcommand first). Returns the command, or `{kind: "error"}` with a message. */
export function parseBundleArgs(
  args: string[],
): BundleCommand | Stop | { kind: "error"; message: string } {
  try {
    return readCommandLine(args, BUNDLE_COMMAND_SPECS);
  } catch (e) {
    if (!(e instanceof ArgError)) throw e;
    return { kind: "error", message: e.message };
  }
}
