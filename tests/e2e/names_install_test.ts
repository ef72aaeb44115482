/**
 * End-to-end with the real MicroPython `mip`: packages whose names, versions and paths use what micropython-lib's
 * build.py accepts install through mipserver exactly as they do directly (same paths, same bytes), also from the
 * cache with the upstream down; and an index manifest that writes outside the target is refused, so nothing is
 * written outside (a direct install from that index shows what would happen).
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join, relative } from "node:path";
import { startAdversarial } from "../fixtures/adversarial.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { tempDir } from "../helpers.ts";
import { ODD_PACKAGES, oddIndex } from "../fixtures/odd_names.ts";
import { micropythonPath, runTool, serveApp } from "./tools.ts";

/** Every file under `dir`, relative path → bytes. */
function snapshot(dir: string): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  const walk = (d: string) => {
    for (const e of Deno.readDirSync(d)) {
      const p = join(d, e.name);
      if (e.isDirectory) walk(p);
      else out.set(relative(dir, p), Deno.readFileSync(p));
    }
  };
  walk(dir);
  return out;
}

Deno.test("real mip: odd index names, versions and paths install through mipserver as they do directly", async () => {
  const idx = await oddIndex();
  const up = new FakeUpstream(idx.root).start();
  const { app, base, stop } = await serveApp({ cache: { dir: tempDir() }, upstreams: { index: up.url, retries: 0 } });
  try {
    // mip.install() rather than the CLI: the CLI takes a leading "-" for an option and splits at "@".
    const specs = ODD_PACKAGES.flatMap((p) => [
      { name: p.name, version: null },
      ...p.versions.map((v) => ({ name: p.name, version: v.version })),
    ]);
    const installAll = async (index: string) => {
      const trees: Map<string, Uint8Array>[] = [];
      for (const { name, version } of specs) {
        for (const mpy of ["True", "False"]) {
          const target = tempDir("mip-target-");
          const args = [JSON.stringify(name), `index=${JSON.stringify(index)}`, `target=${JSON.stringify(target)}`];
          if (version) args.push(`version=${JSON.stringify(version)}`);
          const r = await runTool(
            micropythonPath(),
            ["-c", `import mip\nmip.install(${args.join(", ")}, mpy=${mpy})`],
            {
              cwd: target,
              env: { HOME: target },
            },
          );
          assert.equal(r.code, 0, `${name} ${version}: ${r.stdout}${r.stderr}`);
          assert.match(r.stdout, /Done/, `${name} ${version}: ${r.stdout}`);
          trees.push(snapshot(target));
        }
      }
      return trees;
    };
    const direct = await installAll(up.url);
    assert.ok(direct.every((t) => t.size > 0));
    assert.ok(direct.some((t) => t.has(join("os_path", "sub", "_impl.mpy"))), "nested paths are installed");
    assert.deepEqual(await installAll(base), direct, "through mipserver: same paths, same bytes");
    await app.idle();
    await up.stop();
    assert.deepEqual(await installAll(base), direct, "from the cache with the upstream down: same paths, same bytes");
  } finally {
    await stop();
    await up.stop();
  }
});

Deno.test("real mip: an index manifest listing ../pwned.py is refused and nothing is written outside the target", async () => {
  const adv = await startAdversarial();
  const { base, stop } = await serveApp({ cache: { dir: tempDir() }, upstreams: adv.upstreams });
  const mip = (index: string, target: string) =>
    runTool(micropythonPath(), ["-m", "mip", "install", "--target", target, "--index", index, "pwned"], {
      cwd: target,
      env: { HOME: target },
    });
  try {
    // What a device would do without the check: the file lands beside the target, not in it.
    const bare = tempDir("mip-sandbox-");
    Deno.mkdirSync(join(bare, "lib"));
    await mip(adv.index.url, join(bare, "lib"));
    assert.equal(Deno.readTextFileSync(join(bare, "pwned.py")), adv.payload, "a direct install writes outside");

    const sandbox = tempDir("mip-sandbox-");
    Deno.mkdirSync(join(sandbox, "lib"));
    const r = await mip(base, join(sandbox, "lib"));
    assert.match(r.stdout, /Package not found|Error 502/, r.stdout);
    assert.doesNotMatch(r.stdout, /Done/, r.stdout);
    assert.ok(!existsSync(join(sandbox, "pwned.py")), "nothing is written outside the target");
    assert.deepEqual([...snapshot(sandbox).keys()], [], "nothing is written at all");
  } finally {
    await stop();
    await adv.stop();
  }
});
