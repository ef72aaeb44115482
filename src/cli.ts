/**
 * Command-line parsing. Pure: returns what to do, never exits.
 * @module
 */
import { BUNDLE_COMMANDS, type BundleCommand, parseBundleArgs } from "./bundle/args.ts";

/** The usage text for `--help`. */
export const USAGE = `mipserver: a caching, compiling package server for MicroPython's mip

Usage:
  mipserver [--config FILE] [--port N] [--host ADDR]   start the server
  mipserver check-config [--config FILE]               print the effective configuration and exit
  mipserver healthcheck [--config FILE] [--port N]     exit 0 when the local server's /healthz answers ok
  mipserver warm [--config FILE] [--profile NAME]... [--mpy py|N]... PKG[@VERSION]...
                                                       fetch packages, their dependencies and compiled files into
                                                       the cache (works while the server runs)
  mipserver export [--config FILE] --output BUNDLE [PKG[@VERSION]]...
                                                       write what those packages need (default: everything cached)
                                                       into one .tar.gz bundle
  mipserver import [--config FILE] BUNDLE              verify a bundle, then add it to the cache (served at once,
                                                       also by a running server, whatever its upstreams)
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
  | BundleCommand
  | { kind: "error"; message: string };

/** Parses the arguments after the program name. */
export function parseArgs(args: string[]): Command {
  if ((BUNDLE_COMMANDS as readonly string[]).includes(args[0])) return parseBundleArgs(args);
  let kind: "serve" | "check-config" | "healthcheck" = "serve";
  let configPath: string | undefined;
  const overrides: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    const [flag, inline] = arg.startsWith("--") && arg.includes("=")
      ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)]
      : [arg, undefined];
    const value = () => {
      const v = inline ?? args[++i];
      if (v === undefined || v === "") throw new Error(`${flag} needs a value`);
      return v;
    };
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
          kind = flag;
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
          return { kind: "error", message: `Unknown argument ${JSON.stringify(arg)}; see --help` };
      }
    } catch (e) {
      return { kind: "error", message: (e as Error).message };
    }
  }
  return { kind, configPath, overrides };
}
