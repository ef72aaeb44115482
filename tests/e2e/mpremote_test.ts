/**
 * mpremote for real: the README's `mpremote mip install --index http://gateway:18891 <pkg>` line runs as written
 * against a server on 127.0.0.1, with the board being the MicroPython unix port behind socat on a pty (`mpremote`
 * becomes `mpremote connect socket://127.0.0.1:<port> resume`, see tests/docs/blocks.ts). mpremote downloads on the
 * host, with CPython's urllib (HTTP/1.1, where devices speak HTTP/1.0), and copies each file to the board through its
 * raw REPL. The test then looks at the board: the files are in its `~/.micropython/lib` with the bytes the server's
 * manifest names, the board imports the package, a second install finds them by hash on the board, and a package the
 * index lacks fails the same line. socat, micropython and mpremote missing is a failure, not a skip.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { sha256Hex } from "../../src/store/hash.ts";
import { allBlocks, type Block, denoDir, runBlock, type Site, startBoard, toolPath, venvTool } from "../docs/blocks.ts";
import { startDocsUpstreams } from "../docs/fixture.ts";
import { freePort, tempDir } from "../helpers.ts";
import { mpyCrossPath, runTool, serveApp } from "./tools.ts";

/** The README's runnable `mpremote mip install` line, and the package it installs. */
function readmeLine(): { block: Block; pkg: string } {
  const pattern = /^mpremote mip install --index http:\/\/gateway:18891 (\S+)$/m;
  const block = allBlocks().find((b) => b.file === "README.md" && b.runnable && pattern.test(b.text));
  assert.ok(block, "README.md has a runnable block with `mpremote mip install --index http://gateway:18891 <pkg>`");
  const match = pattern.exec(block.text)!;
  return { block: { ...block, text: match[0] }, pkg: match[1] };
}

Deno.test("the README's mpremote mip install puts the package on a MicroPython unix port board, byte for byte", async () => {
  const { block, pkg } = readmeLine();
  const work = tempDir("mipserver-mpremote-");
  for (const dir of ["home", "tmp"]) Deno.mkdirSync(join(work, dir));
  const up = await startDocsUpstreams();
  const board = await startBoard(join(work, "board"));
  const cacheDir = join(work, "cache");
  const server = await serveApp({
    cache: { dir: cacheDir },
    upstreams: up.upstreams,
    packages: up.packages,
    mpy_cross: { path: mpyCrossPath() },
  });
  const deno = await denoDir();
  const site: Site = { port: server.port, boardPort: board.port, freePort: freePort(), config: "", cacheDir, work };
  const mpremote = (...args: string[]) =>
    runTool(venvTool("mpremote"), ["connect", `socket://127.0.0.1:${board.port}`, "resume", ...args], {
      env: { PATH: toolPath(), HOME: join(work, "home") },
    });
  try {
    const run = await runBlock(block, site, deno);
    assert.equal(run.failure, undefined, `${block.text}\n${run.output}`);

    // mpremote asked the server for the board's .mpy version (sys.implementation._mpy & 0xff: 6) and each file.
    await server.flush();
    const manifest = await (await fetch(`${server.base}/package/6/${pkg}/latest.json`)).json();
    assert.ok(manifest.hashes.length > 0, JSON.stringify(manifest));
    assert.ok(server.lines.some((l) => l.includes(`GET /package/6/${pkg}/latest.json 200`)), server.lines.join("\n"));
    for (const [path, hash] of manifest.hashes as [string, string][]) {
      assert.ok(server.lines.some((l) => l.includes(`GET /file/${hash.slice(0, 2)}/${hash} 200`)), `${path} fetched`);
      const onBoard = Deno.readFileSync(join(board.lib, path));
      assert.equal((await sha256Hex(onBoard)).slice(0, hash.length), hash, `${path} on the board is the served file`);
      assert.match(run.output, new RegExp(`Installing: ${board.lib}/${path}`));
    }

    // The board imports it, from where mpremote put it.
    const imported = await mpremote("exec", `import ${pkg}; print(${pkg}.__file__)`);
    assert.equal(imported.code, 0, imported.stdout + imported.stderr);
    assert.equal(imported.stdout.trim(), `${board.lib}/${pkg}/__init__.mpy`);

    // Again: the board hashes its files (mpremote compares with the manifest's short hashes) and nothing is copied.
    const again = await runBlock(block, site, deno);
    assert.equal(again.failure, undefined, again.output);
    for (const [path] of manifest.hashes as [string, string][]) {
      assert.match(again.output, new RegExp(`Exists: ${board.lib}/${path}`));
    }
    assert.doesNotMatch(again.output, /Installing: /);

    // The same line for a package the index lacks fails: exit code 1, the server's 404 as mpremote says it.
    const missing = await runBlock(
      { ...block, text: block.text.replace(new RegExp(` ${pkg}$`), " nosuchpkg") },
      site,
      deno,
    );
    assert.equal(missing.code, 1, missing.output);
    assert.match(missing.output, /Package not found: http:\/\/127\.0\.0\.1:\d+\/package\/6\/nosuchpkg\/latest\.json/);
  } finally {
    await server.stop();
    await board.stop();
    await up.stop();
  }
});
