/**
 * Every command in README.md and docs/*.md still runs as written: the shell blocks marked runnable (a ```` ```sh
 * runnable ```` fence, see tests/docs/blocks.ts) run with bash, in document order (README.md first, then docs/*.md
 * by name, sharing one server, cache and work folder, so an `import` finds what the `export` before it wrote),
 * against a mipserver started here (`deno run src/main.ts`) whose upstreams are fixtures on 127.0.0.1, and a board
 * for mpremote: the MicroPython unix port behind socat. Each block is a step named by file and line and must exit 0
 * without printing a failure; unmarked shell blocks are listed as ignored steps, so nobody takes them as run. The
 * only changes made to a block are the placeholders in the substitution table of tests/docs/blocks.ts.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { stringify } from "yaml";
import { mpyCrossPath } from "./e2e/tools.ts";
import { freePort, tempDir } from "./helpers.ts";
import {
  allBlocks,
  type Block,
  denoDir,
  docFiles,
  requireTools,
  ROOT,
  runBlock,
  type Site,
  startBoard,
  substituted,
  toolPath,
} from "./docs/blocks.ts";
import { startDocsUpstreams } from "./docs/fixture.ts";

/** One line per file: how many shell blocks are run and how many are not, and the other blocks. */
function summary(blocks: Block[]): string {
  return docFiles().map((file) => {
    const mine = blocks.filter((b) => b.file === file);
    const run = mine.filter((b) => b.runnable).length;
    const unmarked = mine.filter((b) => b.shell && !b.runnable);
    const other = mine.length - run - unmarked.length;
    const lines = unmarked.length ? ` (lines ${unmarked.map((b) => b.line).join(", ")})` : "";
    return `${file}: ${run} shell blocks run, ${unmarked.length} unmarked and not run${lines}; ${other} other blocks`;
  }).join("\n");
}

/** A mipserver subprocess as a person starts it from a checkout, and its log. */
async function startServer(config: string, env: Record<string, string>, port: number) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--frozen", "src/main.ts", "--config", config],
    cwd: ROOT,
    env,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const log: string[] = [];
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) log.push(...text.split("\n"));
  };
  const reading = Promise.all([collect(child.stdout), collect(child.stderr)]);
  let exited = false;
  child.status.then(() => exited = true);
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // already exited
    }
    await child.status;
    await reading;
  };
  for (let i = 0;; i++) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/healthz`);
      await res.body?.cancel();
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (exited || i === 300) {
      await stop();
      throw new Error(`mipserver did not start:\n${log.join("\n")}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { log, stop };
}

Deno.test("every command marked runnable in README.md and docs/*.md runs as written against a local server", async (t) => {
  const blocks = allBlocks();
  console.log(summary(blocks));
  const runnable = blocks.filter((b) => b.runnable);
  assert.ok(runnable.some((b) => b.file === "README.md"), "README.md has runnable blocks");
  requireTools(["bash", "setsid", "curl", "sha256sum", "socat", "micropython", "mpremote", "mpy-cross"], toolPath());

  const work = tempDir("mipserver-docs-");
  for (const dir of ["home", "tmp", "etc", "server-home"]) Deno.mkdirSync(join(work, dir));
  const port = freePort();
  const cacheDir = join(work, "cache");
  const config = join(work, "etc", "config.yaml");
  const dir = await denoDir();
  const up = await startDocsUpstreams();
  const board = await startBoard(join(work, "board"));
  let server: Awaited<ReturnType<typeof startServer>> | undefined;
  try {
    Deno.writeTextFileSync(
      config,
      stringify({
        server: { host: "127.0.0.1", port, workers: 0 },
        cache: { dir: cacheDir },
        upstreams: up.upstreams,
        packages: up.packages,
        // The docs' fleet warms and installs for an esp32 profile.
        targets: { esp32: { march: "xtensawin" } },
        mpy_cross: { path: mpyCrossPath() },
      }),
    );
    server = await startServer(config, {
      PATH: toolPath(),
      HOME: join(work, "server-home"),
      DENO_DIR: dir,
      NO_COLOR: "1",
    }, port);
    const site: Site = { port, boardPort: board.port, freePort: freePort(), config, cacheDir, work };
    for (const block of blocks.filter((b) => b.shell)) {
      const name = `${block.file}:${block.line}`;
      if (!block.runnable) {
        await t.step({ name: `${name} (unmarked, not run)`, ignore: true, fn() {} });
        continue;
      }
      await t.step(name, async () => {
        const run = await runBlock(block, site, dir);
        assert.equal(
          run.failure,
          undefined,
          `${name} failed: ${run.failure}\n--- ran:\n${substituted(block, site)}\n--- output:\n${run.output}` +
            `\n--- server log (last 30 lines):\n${server!.log.slice(-30).join("\n")}`,
        );
      });
    }
  } finally {
    await server?.stop();
    await board.stop();
    await up.stop();
  }
});
