/**
 * The one command-line reader (`src/args.ts`) on a small table of its own, and the real tables (`src/cli.ts`,
 * `src/bundle/args.ts`) held to what the reader and `--help` need.
 */
import assert from "node:assert/strict";
import { ArgError, type CommandSpec, type Flag, flagHelp, HELP_FLAG, type Read, readCommandLine } from "../src/args.ts";
import { COMMANDS, parseArgs, USAGE } from "../src/cli.ts";

const NAME: Flag = { names: ["--name", "-n"], value: "NAME", help: "a name" };
const TAG: Flag = { names: ["--tag"], value: "TAG", repeatable: true, help: "a tag" };
const LEVEL: Flag = {
  names: ["--level"],
  value: "N",
  check: (v) => (/^\d+$/.test(v) ? undefined : `--level takes a number, got ${JSON.stringify(v)}`),
  help: "a level",
};
const PORT: Flag = { names: ["--port"], value: "N", override: "server.port", help: "a port" };
const LOUD: Flag = { names: ["--loud"], help: "no value" };
const OUT: Flag = { names: ["--out"], value: "FILE", help: "an output" };

type Got = { command: string } & Omit<Read, "value" | "list"> & { name?: string; tags: string[]; loud?: string };
/** What a toy command read; flags not given are left out. */
const got = (command: string) => (read: Read): Got => {
  const [name, loud] = [read.value("name"), read.value("loud")];
  return {
    command,
    ...(name === undefined ? {} : { name }),
    tags: read.list("tag"),
    ...(loud === undefined ? {} : { loud }),
    overrides: read.overrides,
    args: read.args,
  };
};

/** `run` when no command is named; `show` may follow flags; `add` (one or two items) and `pack` come first. */
const TOY: CommandSpec<Got>[] = [
  { name: "run", named: "implicit", flags: [HELP_FLAG, NAME, PORT, LOUD], build: got("run") },
  { name: "show", flags: [HELP_FLAG, NAME, PORT, OUT], build: got("show") },
  {
    name: "add",
    named: "first",
    flags: [HELP_FLAG, NAME, TAG, LEVEL],
    argument: (_arg, earlier) => (earlier.length >= 2 ? "add takes at most two items" : undefined),
    build: (read) => {
      if (read.args.length === 0) throw new ArgError("add needs an item");
      return got("add")(read);
    },
  },
  { name: "pack", named: "first", flags: [HELP_FLAG, OUT], build: got("pack") },
];

const read = (...args: string[]) => readCommandLine(args, TOY);
const refusal = (...args: string[]) => {
  try {
    readCommandLine(args, TOY);
  } catch (e) {
    assert.ok(e instanceof ArgError, String(e));
    return e.message;
  }
  assert.fail(`${JSON.stringify(args)} was read`);
};

Deno.test("args: an unknown flag is refused, named after its command once one is named", () => {
  assert.equal(refusal("--frobnicate"), 'Unknown argument "--frobnicate"; see --help');
  assert.equal(refusal("--frobnicate=1"), 'Unknown argument "--frobnicate=1"; see --help');
  assert.equal(refusal("add", "--frobnicate", "x"), 'Unknown option "--frobnicate" for add; see --help');
  assert.equal(refusal("show", "-x"), 'Unknown option "-x" for show; see --help');
  // Another command's flag is not this one's; `-` alone is a flag too.
  assert.equal(refusal("add", "--out", "f", "x"), 'Unknown option "--out" for add; see --help');
  assert.equal(refusal("add", "-"), 'Unknown option "-" for add; see --help');
});

Deno.test("args: a flag that takes a value needs one, and takes the next argument whatever it is", () => {
  assert.equal(refusal("--name"), "--name needs a value");
  assert.equal(refusal("--name="), "--name needs a value");
  assert.equal(refusal("--name", ""), "--name needs a value");
  assert.equal(refusal("add", "-n"), "-n needs a value");
  assert.deepEqual(read("--name", "--loud"), { command: "run", name: "--loud", tags: [], overrides: {}, args: [] });
  // A value is checked as it is read.
  assert.equal(refusal("add", "--level", "high", "x"), '--level takes a number, got "high"');
});

Deno.test("args: --flag=value for -- flags, by any spelling; the value may hold '='", () => {
  assert.equal((read("--name=a=b") as Got).name, "a=b");
  assert.equal((read("-n", "x") as Got).name, "x");
  // Only `--` flags split at '=': `-n=x` is no flag of run.
  assert.equal(refusal("-n=x"), 'Unknown argument "-n=x"; see --help');
  assert.deepEqual(read("--port=9", "--loud") as Got, {
    command: "run",
    tags: [],
    loud: "",
    overrides: { "server.port": "9" },
    args: [],
  });
});

Deno.test("args: a repeated flag adds its values when repeatable; otherwise the last one counts", () => {
  const add = read("add", "--tag", "a", "--name", "first", "--tag=b", "x", "--name", "last", "--tag", "a") as Got;
  assert.deepEqual(add.tags, ["a", "b", "a"]);
  assert.equal(add.name, "last");
  assert.deepEqual((read("--port", "1", "--port", "2") as Got).overrides, { "server.port": "2" });
});

Deno.test("args: other arguments name a command or go to it, in order", () => {
  // The first command's name must come first; a later one's after any flags.
  assert.deepEqual(read("add", "x", "y"), { command: "add", tags: [], overrides: {}, args: ["x", "y"] });
  assert.equal(refusal("--name", "a", "add", "x"), 'Unknown argument "add"; see --help');
  assert.deepEqual(read("--name", "a", "show"), { command: "show", name: "a", tags: [], overrides: {}, args: [] });
  // After the command, its name is an argument like any other.
  assert.equal(refusal("show", "show"), 'Unexpected argument "show" for show; see --help');
  assert.equal(refusal("x"), 'Unknown argument "x"; see --help');
  // A command's own rules, as each argument is read, then once all are.
  assert.equal(refusal("add", "x", "y", "z"), "add takes at most two items");
  assert.equal(refusal("add"), "add needs an item");
  assert.equal(refusal("add", "x", "y", "z", "--frobnicate"), "add takes at most two items", "the first problem");
  assert.equal(refusal("add", "--frobnicate", "x", "y", "z"), 'Unknown option "--frobnicate" for add; see --help');
  // Nothing named and nothing implicit.
  assert.throws(() => readCommandLine([], TOY.slice(1)), /No command given; see --help/);
});

Deno.test("args: flags of the commands named later stand before or after the name, and must be the named one's", () => {
  assert.equal(refusal("--out", "f"), "--out goes with show");
  assert.equal(refusal("--out", "f", "--loud"), "--out goes with show");
  assert.deepEqual(read("--out", "f", "show"), { command: "show", tags: [], overrides: {}, args: [] });
  assert.equal(refusal("--loud", "show"), "--loud goes with run");
  assert.equal(refusal("show", "--loud"), "--loud goes with run");
  // Said once all is read: --help after it still asks for help.
  assert.deepEqual(read("show", "--loud", "--help"), { kind: "help" });
});

Deno.test("args: --help stops reading where it stands", () => {
  assert.deepEqual(read("--help", "--frobnicate"), { kind: "help" });
  assert.deepEqual(read("add", "-h"), { kind: "help" });
  assert.deepEqual(read("--help=yes"), { kind: "help" });
  assert.equal(refusal("--frobnicate", "--help"), 'Unknown argument "--frobnicate"; see --help');
  // As a flag's value, it is that value.
  assert.equal((read("--name", "--help") as Got).name, "--help");
});

Deno.test("args: flagHelp lines up each flag's help, continuation lines under the first", () => {
  const multi: Flag = { names: ["--config"], value: "FILE", help: "one\ntwo" };
  assert.equal(
    flagHelp([HELP_FLAG, multi, LOUD]),
    "  --config FILE   one\n                  two\n  --loud          no value",
  );
});

Deno.test("args: the real tables: flags that share a name agree on a value, every flag is in --help", () => {
  const later = COMMANDS.filter((c) => c.named !== "first");
  const takes = new Map<string, boolean>();
  for (const command of later) {
    for (const flag of command.flags) {
      for (const name of flag.names) {
        const value = flag.value !== undefined;
        assert.equal(takes.get(name) ?? value, value, `${name} takes a value in one command and not in another`);
        takes.set(name, value);
      }
    }
  }
  for (const command of COMMANDS) {
    if (command.named !== "implicit") assert.ok(USAGE.includes(`mipserver ${command.name} `), command.name);
    for (const flag of command.flags) assert.ok(USAGE.includes(flag.names[0]), `${flag.names[0]} is in --help`);
  }
});

Deno.test("parseArgs: one message style for the server's and the commands' flags", () => {
  assert.deepEqual(parseArgs(["check-config", "--frobnicate"]), {
    kind: "error",
    message: 'Unknown option "--frobnicate" for check-config; see --help',
  });
  assert.deepEqual(parseArgs(["warm", "--frobnicate"]), {
    kind: "error",
    message: 'Unknown option "--frobnicate" for warm; see --help',
  });
  assert.deepEqual(parseArgs(["warm", "--mpy"]), { kind: "error", message: "--mpy needs a value" });
  assert.deepEqual(parseArgs(["check-config", "--output", "x"]), { kind: "error", message: "--output goes with lock" });
  assert.deepEqual(parseArgs(["import", "--port", "9", "b"]), {
    kind: "error",
    message: 'Unknown option "--port" for import; see --help',
  });
  assert.deepEqual(parseArgs(["check-config", "x"]), {
    kind: "error",
    message: 'Unexpected argument "x" for check-config; see --help',
  });
  // The server's flags come before or after the command's name; a bundle command's name comes first.
  assert.deepEqual(parseArgs(["--port", "1", "healthcheck", "--config=c.yaml"]), {
    kind: "healthcheck",
    configPath: "c.yaml",
    overrides: { "server.port": "1" },
  });
  assert.equal(parseArgs(["--config", "c.yaml", "warm", "a"]).kind, "error");
  assert.deepEqual(parseArgs(["lock", "--version"]), { kind: "version" });
  assert.equal(parseArgs(["warm", "--version"]).kind, "error");
  assert.deepEqual(parseArgs(["export", "-o", "b.tar.gz"]), {
    kind: "export",
    configPath: undefined,
    overrides: {},
    packages: [],
    output: "b.tar.gz",
  });
  assert.equal(parseArgs(["lock", "-o", "f", "a"]).kind, "error");
});
