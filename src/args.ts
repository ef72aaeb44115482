/**
 * Reading command lines: each argument with its flag and a reader for the flag's value, shared by every subcommand.
 * @module
 */

/** One command-line argument. */
export interface Arg {
  /** The argument as given. */
  arg: string;
  /** The flag: the part before `=` of `--flag=value`, else the whole argument. */
  flag: string;
  /** The flag's value: after `=`, else the next argument (which is then skipped). Throws when there is none. */
  value(): string;
}

/** Yields the arguments from `start` on; a `value()` call consumes the next argument when the value is not inline. */
export function* readArgs(args: string[], start = 0): Generator<Arg> {
  for (let i = start; i < args.length; i++) {
    const arg = args[i];
    const eq = arg.startsWith("--") ? arg.indexOf("=") : -1;
    const [flag, inline] = eq > 0 ? [arg.slice(0, eq), arg.slice(eq + 1)] : [arg, undefined];
    yield {
      arg,
      flag,
      value: () => {
        const v = inline ?? args[++i];
        if (v === undefined || v === "") throw new Error(`${flag} needs a value`);
        return v;
      },
    };
  }
}
