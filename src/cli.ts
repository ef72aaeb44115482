/**
 * The command line of the server and its commands: the server's flag table and commands, with the bundle commands'
 * (`bundle/args.ts`), read by the one reader (`args.ts`). Pure: returns what to do, never exits.
 * @module
 */
import { ArgError, type CommandSpec, CONFIG_FLAG, type Flag, flagHelp, HELP_FLAG, readCommandLine } from "./args.ts";
import { specProblem } from "./packages/names.ts";
import { BUNDLE_COMMAND_SPECS, type BundleCommand } from "./bundle/args.ts";
import type { KeygenCommand } from "./bundle/keygen.ts";

/** The flags of the server and of `check-config`, `healthcheck`, `lock` and `purge`. */
const SERVER_FLAGS: readonly Flag[] = [
  HELP_FLAG,
  { names: ["--version", "-V"], stop: "version", help: "print the version and exit" },
  CONFIG_FLAG,
  { names: ["--port"], value: "N", override: "server.port", help: "listen on port N (overrides server.port)" },
  { names: ["--host"], value: "ADDR", override: "server.host", help: "listen on address ADDR (overrides server.host)" },
];

/** `lock --output FILE`. */
const LOCK_OUTPUT: Flag = { names: ["--output"], value: "FILE", help: "write the lock to FILE instead of stdout" };
/** `lock --sign KEY`. */
const LOCK_SIGN: Flag = { names: ["--sign"], value: "KEY", help: "sign the lock with the private key in KEY" };

/** The flags of `keygen`. */
const KEYGEN_FLAGS: readonly Flag[] = [
  HELP_FLAG,
  { names: ["--out"], value: "FILE", help: "write a new private key to FILE (mode 0600; never over a file)" },
  { names: ["--from"], value: "FILE", help: "print the public key of the private key in FILE instead" },
];

/** The usage text for `--help`. */
export const USAGE = `mipserver: a caching, compiling package server for MicroPython's mip

Usage:
  mipserver [--config FILE] [--port N] [--host ADDR]   start the server
  mipserver check-config [--config FILE]               print the effective configuration and exit
  mipserver healthcheck [--config FILE] [--port N]     exit 0 when the local server's /healthz answers ok
  mipserver warm [--config FILE] [--profile NAME]... [--mpy py|N]... [--from LOCKFILE] [PKG[@VERSION]]...
                                                       fetch packages, their dependencies and compiled files into
                                                       the cache (works while the server runs)
  mipserver export [--config FILE] --output BUNDLE [--sign KEY] [PKG[@VERSION]]...
                                                       write what those packages need (default: everything cached)
                                                       into one .tar.gz bundle
  mipserver import [--config FILE] BUNDLE              verify a bundle, then add it to the cache (served at once,
                                                       also by a running server, whatever its upstreams)
  mipserver lock [--config FILE] [--output FILE] [--sign KEY] PKG[@VERSION]...
                                                       write the exact versions and sha256 of every file of the
                                                       packages and their dependencies (stdout unless --output)
  mipserver keygen --out FILE | --from FILE            make an Ed25519 key to sign locks and bundles with
                                                       (--sign); print its public key for policy.trusted_keys
  mipserver purge [--config FILE] PKG[@VERSION]        remove from the cache what only that release uses
  mipserver --help | --version

Options:
${flagHelp(SERVER_FLAGS)}

From a checkout: deno task start [options], or make run ARGS="[options]".`;

/** What the command line asks for. */
export type Command =
  | { kind: "help" }
  | { kind: "version" }
  | { kind: "serve" | "check-config" | "healthcheck"; configPath?: string; overrides: Record<string, string> }
  | {
    kind: "lock" | "purge";
    configPath?: string;
    overrides: Record<string, string>;
    /** `PKG[@VERSION]` arguments. */
    specs: string[];
    /** `--output FILE` (lock). */
    output?: string;
    /** `--sign KEY` (lock): the private key file to sign the lock with. */
    sign?: string;
  }
  | KeygenCommand
  | BundleCommand
  | { kind: "error"; message: string };

type ServerKind = "serve" | "check-config" | "healthcheck";

/** `serve` (run when no command is named), `check-config` or `healthcheck`: flags only. */
function serverCommand(name: ServerKind): CommandSpec<Command> {
  return {
    name,
    named: name === "serve" ? "implicit" : "later",
    flags: SERVER_FLAGS,
    build: (read) => ({ kind: name, configPath: read.value("config"), overrides: read.overrides }),
  };
}

/** `lock` (one or more `PKG[@VERSION]`) or `purge` (one). */
function lockCommand(name: "lock" | "purge"): CommandSpec<Command> {
  return {
    name,
    flags: name === "lock" ? [...SERVER_FLAGS, LOCK_OUTPUT, LOCK_SIGN] : SERVER_FLAGS,
    argument: () => undefined,
    build: (read) => {
      const specs = read.args;
      if (specs.length === 0) throw new ArgError(`${name} needs at least one PKG[@VERSION]`);
      if (name === "purge" && specs.length > 1) throw new ArgError("purge takes one PKG[@VERSION]");
      const problem = specs.map(specProblem).find((p) => p !== undefined);
      if (problem) throw new ArgError(`Invalid package ${problem}`);
      const sign = read.value("sign");
      return {
        kind: name,
        configPath: read.value("config"),
        overrides: read.overrides,
        specs,
        output: read.value("output"),
        ...(sign === undefined ? {} : { sign }),
      };
    },
  };
}

/** `keygen --out FILE` or `keygen --from FILE`: needs no configuration. */
const KEYGEN_COMMAND: CommandSpec<Command> = {
  name: "keygen",
  named: "first",
  flags: KEYGEN_FLAGS,
  build: (read) => {
    const out = read.value("out");
    const from = read.value("from");
    if ((out === undefined) === (from === undefined)) throw new ArgError("keygen needs --out FILE or --from FILE");
    return { kind: "keygen", ...(out === undefined ? {} : { out }), ...(from === undefined ? {} : { from }) };
  },
};

/** Every command the command line may name, and the server, run when it names none. */
export const COMMANDS: readonly CommandSpec<Command>[] = [
  serverCommand("serve"),
  serverCommand("check-config"),
  serverCommand("healthcheck"),
  lockCommand("lock"),
  lockCommand("purge"),
  KEYGEN_COMMAND,
  ...BUNDLE_COMMAND_SPECS,
];

/** Parses the arguments after the program name. */
export function parseArgs(args: string[]): Command {
  try {
    return readCommandLine(args, COMMANDS);
  } catch (e) {
    if (!(e instanceof ArgError)) throw e;
    return { kind: "error", message: e.message };
  }
}
