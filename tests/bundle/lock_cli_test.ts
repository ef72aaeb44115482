import assert from "node:assert/strict";
import { parseArgs } from "../../src/cli.ts";

Deno.test("parseArgs reads lock, purge and warm --from", () => {
  assert.deepEqual(parseArgs(["lock", "--config", "c.yaml", "hello@1.0", "sensorkit", "--output=fleet.lock"]), {
    kind: "lock",
    configPath: "c.yaml",
    overrides: {},
    specs: ["hello@1.0", "sensorkit"],
    output: "fleet.lock",
  });
  assert.deepEqual(parseArgs(["purge", "lock"]), {
    kind: "purge",
    configPath: undefined,
    overrides: {},
    specs: ["lock"],
    output: undefined,
  });
  assert.deepEqual(parseArgs(["warm", "--from", "fleet.lock"]), {
    kind: "warm",
    configPath: undefined,
    overrides: {},
    packages: [],
    profiles: [],
    mpy: [],
    from: "fleet.lock",
  });
  assert.deepEqual(parseArgs(["lock"]), { kind: "error", message: "lock needs at least one PKG[@VERSION]" });
  assert.deepEqual(parseArgs(["purge", "a", "b"]), { kind: "error", message: "purge takes one PKG[@VERSION]" });
  assert.deepEqual(parseArgs(["warm"]), {
    kind: "error",
    message: "warm needs the packages to warm: PKG[@VERSION]...",
  });
  assert.deepEqual(parseArgs(["--output", "x"]), { kind: "error", message: "--output goes with lock" });
  assert.equal(parseArgs(["lock", "../etc"]).kind, "error");
  assert.equal(parseArgs(["lock", "hello@"]).kind, "error");
  assert.equal(parseArgs(["check-config", "lock"]).kind, "error");
});
