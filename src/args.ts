/**
 * The one command-line reader, for the server and every command: each command declares the flags it takes (a table
 * of {@linkcode Flag}s) and what it makes of what was given; {@linkcode readCommandLine} reads the arguments against
 * those tables and refuses what does not fit, with the same messages for every command.
 * @module
 */

/** A command line that cannot be read; the message says why, for a person. */
export class ArgError extends Error {
  override name = "ArgError";
}

/** One flag a command takes. */
export interface Flag {
  /** Its spellings, the one help shows first: `["--output", "-o"]`. */
  names: readonly string[];
  /** What its value is called in help (`FILE`); absent for a flag that takes no value. */
  value?: string;
  /** Whether each use adds a value (`--profile a --profile b`); otherwise a later use replaces an earlier one. */
  repeatable?: boolean;
  /** Where its value is kept in {@linkcode Read} (default: its first name without the dashes, `config`). */
  key?: string;
  /** A configuration path (`server.port`) the value overrides, kept in {@linkcode Read.overrides} instead. */
  override?: string;
  /** The command line asks for this alone: reading stops here (`--help`, `--version`). */
  stop?: "help" | "version";
  /** Refuses a value: returns why, or undefined to take it. */
  check?: (value: string) => string | undefined;
  /** What it does, for `--help` (lines after the first are indented under it). */
  help: string;
}

/** What the flags of a command line gave, for a command's {@linkcode CommandSpec.build}. */
export interface Read {
  /** The last value given for `key`, if any. */
  value(key: string): string | undefined;
  /** Every value given for `key`, in order (the last only, for a flag that is not repeatable). */
  list(key: string): string[];
  /** Configuration paths and the values the flags set for them. */
  overrides: Record<string, string>;
  /** The arguments that are neither flags nor their values, in order. */
  args: string[];
}

/** One command: how it is named, the flags it takes, its other arguments and what it makes of them all. */
export interface CommandSpec<T> {
  /** Its name on the command line. */
  name: string;
  /**
   * Where its name may stand: `later` (the default) as the first argument that is not a flag or a flag's value,
   * `first` only as the very first argument; `implicit` is the command run when none is named (it cannot be named).
   */
  named?: "first" | "later" | "implicit";
  /** The flags it takes. */
  flags: readonly Flag[];
  /**
   * Checks one of its other arguments when read (`earlier`: those before it): returns why it is refused, or
   * undefined to take it. Absent: the command takes none.
   */
  argument?: (arg: string, earlier: readonly string[]) => string | undefined;
  /** Makes the command from what was read; throws an {@linkcode ArgError} to refuse it. */
  build: (read: Read) => T;
}

/** A command line that asks for help or the version alone. */
export type Stop = { kind: "help" } | { kind: "version" };

const quote = (arg: string) => JSON.stringify(arg);

/** The flag of `command` spelled `name`. */
function flagOf(command: CommandSpec<unknown>, name: string): Flag | undefined {
  return command.flags.find((flag) => flag.names.includes(name));
}

/**
 * Reads `args` (the arguments after the program's name) against `commands`. Flags take their value from after `=`
 * (`--output=x`, for `--` flags) or from the next argument, whatever it looks like; an empty value is refused.
 * Anything starting with `-` is a flag. A command named first reads only its own flags; the others (and the implicit
 * one) read any flag of theirs, before or after the name, and once all is read refuse those not their own ("--output
 * goes with lock"). Throws an {@linkcode ArgError} for what cannot be read, at the first argument that cannot.
 */
export function readCommandLine<T>(args: readonly string[], commands: readonly CommandSpec<T>[]): T | Stop {
  const implicit = commands.find((c) => c.named === "implicit");
  /** The commands a later argument may still name, and the one run when none is. */
  const later = commands.filter((c) => c.named !== "first");
  let command = commands.find((c) => c.named !== "implicit" && c.name === args[0]);
  const given: { name: string; value: string }[] = [];
  const rest: string[] = [];
  for (let i = command ? 1 : 0; i < args.length; i++) {
    const arg = args[i];
    if (arg.startsWith("-")) {
      const eq = arg.startsWith("--") ? arg.indexOf("=") : -1;
      const name = eq > 0 ? arg.slice(0, eq) : arg;
      // A command named first reads its own flags; the others any of theirs, held to the one named at the end.
      const flag = (command && flagOf(command, name)) ??
        (command?.named === "first" ? undefined : later.map((c) => flagOf(c, name)).find((f) => f !== undefined));
      if (flag === undefined) {
        throw new ArgError(
          command
            ? `Unknown option ${quote(arg)} for ${command.name}; see --help`
            : `Unknown argument ${quote(arg)}; see --help`,
        );
      }
      if (flag.stop) return { kind: flag.stop };
      let value = "";
      if (flag.value !== undefined) {
        value = (eq > 0 ? arg.slice(eq + 1) : args[++i]) ?? "";
        if (value === "") throw new ArgError(`${name} needs a value`);
        const problem = flag.check?.(value);
        if (problem !== undefined) throw new ArgError(problem);
      }
      given.push({ name, value });
      continue;
    }
    if (command === undefined) {
      const named = later.find((c) => c.named !== "implicit" && c.name === arg);
      if (named) {
        command = named;
        continue;
      }
    }
    const taker = command ?? implicit;
    if (taker?.argument === undefined) {
      throw new ArgError(
        command
          ? `Unexpected argument ${quote(arg)} for ${command.name}; see --help`
          : `Unknown argument ${quote(arg)}; see --help`,
      );
    }
    const problem = taker.argument(arg, rest);
    if (problem !== undefined) throw new ArgError(problem);
    rest.push(arg);
  }
  command ??= implicit;
  if (command === undefined) throw new ArgError("No command given; see --help");
  const values = new Map<string, string[]>();
  const overrides: Record<string, string> = {};
  for (const { name, value } of given) {
    const flag = flagOf(command, name);
    if (flag === undefined) {
      const takers = later.filter((c) => flagOf(c, name) !== undefined).map((c) => c.name);
      throw new ArgError(`${name} goes with ${takers.join(" and ")}`);
    }
    if (flag.override !== undefined) {
      overrides[flag.override] = value;
      continue;
    }
    const key = flag.key ?? flag.names[0].replace(/^-+/, "");
    if (flag.repeatable) values.set(key, [...values.get(key) ?? [], value]);
    else values.set(key, [value]);
  }
  return command.build({
    value: (key) => values.get(key)?.at(-1),
    list: (key) => values.get(key) ?? [],
    overrides,
    args: rest,
  });
}

/**
 * The `Options:` part of `--help` for `flags`: each with its value's name, then what it does, lines after the first
 * indented under the first. Flags that stop reading (`--help`, `--version`) are left out.
 */
export function flagHelp(flags: readonly Flag[]): string {
  const shown = flags.filter((flag) => !flag.stop);
  const heads = shown.map((flag) => `  ${flag.names[0]}${flag.value ? ` ${flag.value}` : ""}`);
  const width = Math.max(...heads.map((head) => head.length)) + 3;
  return shown.map((flag, i) => heads[i].padEnd(width) + flag.help.split("\n").join(`\n${" ".repeat(width)}`))
    .join("\n");
}

/** `--help` and `-h`: every command takes it. */
export const HELP_FLAG: Flag = { names: ["--help", "-h"], stop: "help", help: "print this help and exit" };

/** `--config FILE`: every command takes it. */
export const CONFIG_FLAG: Flag = {
  names: ["--config"],
  value: "FILE",
  help: "configuration file (default: $MIPSERVER_CONFIG, else $CONFIGURATION_DIRECTORY/config.yaml,\n" +
    "else ./config.yaml, else the built-in defaults); config.local.yaml beside it is merged over it",
};
