/**
 * Command-line parsing. Pure: returns what to do, never exits.
 * @module
 */
import { readArgs } from "./args.ts";
import { specProblem } from "./packages/names.ts";
import { BUNDLE_COMMANDS, type BundleCommand, parseBundleArgs } from "./bundle/args.ts";

/** The usage text for `--help`. */
export const USAGE = `mipserver: a caching, compiling package server for MicroPython's mip

Usage:
  mipserver [--config FILE] [--port N] [--host ADDR]   start the server
  mipserver check-config [--config FILE]               print the effective configuration and exit
  mipserver healthcheck [--config FILE] [--port N]     exit 0 when the local server's /healthz answers ok
  mipserver warm [--config FILE] [--profile NAME]... [--mpy py|N]... [--from LOCKFILE] [PKG[@VERSION]]...
                                                       fetch packages, their dependencies and compiled files into
                                                       the cache (works while the server runs)
  mipserver export [--config FILE] --output BUNDLE [PKG[@VERSION]]...
                                                       write what those packages need (default: everything cached)
                                                       into one .tar.gz bundle
  mipserver import [--config FILE] BUNDLE              verify a bundle, then add it to the cache (served at once,
                                                       also by a running server, whatever its upstreams)
  mipserver lock [--config FILE] [--output FILE] PKG[@VERSION]...
                                                       write the exact versions and sha256 of every file of the
                                                       packages and their dependencies (stdout unless --output)
  mipserver purge [--config FILE] PKG[@VERSION]        remove from the cache what only that release uses
  mipserver --help | --version

Options:
  --config FILE   configuration file (default: $MIPSERVER_CONFIG, else $CONFIGURATION_DIRECTORY/config.yaml,
                  else ./config.yaml, else the built-in defaults); config.local.yaml beside it is merged over it
  --port N        listen on port N (overrides server.port)
  --host ADDR     listen on address ADDR (overrides server.host)

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
  }
  | BundleCommand
  | { kind: "error"; message: string };

/** Parses the arguments after the program name. */
export function parseArgs(args: string[]): Command {
  if ((BUNDLE_COMMANDS as readonly string[]).includes(args[0])) return parseBundleArgs(args);
  let kind: "serve" | "check-config" | "healthcheck" | "lock" | "purge" = "serve";
  let configPath: string | undefined;
  const overrides: Record<string, string> = {};
  const specs: string[] = [];
  let output: string | undefined;
  for (const { arg, flag, value } of readArgs(args)) {
    try {
      switch (flag) {
        case "-h":
        case "--help":
          return { kind: "help" };
        case "-V":
        case "--version":
          return { kind: "version" };
        case "check-config":
        case "healthcheck":
        case "lock":
        case "purge":
          if (kind !== "serve") {
            if (kind === "lock" || kind === "purge") {
              specs.push(arg);
              break;
            }
            return { kind: "error", message: `Unexpected argument ${JSON.stringify(arg)}; see --help` };
          }
          kind = flag;
          break;
        case "--output":
          output = value();
          break;
        case "--config":
          configPath = value();
          break;
        case "--port":
          overrides["server.port"] = value();
          break;
        case "--host":
          overrides["server.host"] = value();
          break;
        default:
          if ((kind === "lock" || kind === "purge") && !arg.startsWith("-")) {
            specs.push(arg);
            break;
          }
          return { kind: "error", message: `Unknown argument ${JSON.stringify(arg)}; see --help` };
      }
    } catch (e) {
      return { kind: "error", message: (e as Error).message };
    }
  }
  if (output !== undefined && kind !== "lock") return { kind: "error", message: "--output goes with lock" };
  if (kind === "lock" || kind === "purge") {
    if (specs.length === 0) return { kind: "error", message: `${kind} needs at least one PKG[@VERSION]` };
    if (kind === "purge" && specs.length > 1) return { kind: "error", message: "purge takes one PKG[@VERSION]" };
    const problem = specs.map(specProblem).find((p) => p !== undefined);
    if (problem) return { kind: "error", message: `Invalid package ${problem}` };
    return { kind, configPath, overrides, specs, output };
  }
  return { kind, configPath, overrides };
}
