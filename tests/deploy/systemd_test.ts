/** deploy/mipserver.service: `systemd-analyze verify` is clean and the unit carries the hardening the brief asks for. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { tempDir } from "../helpers.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const UNIT = Deno.readTextFileSync(join(ROOT, "deploy/mipserver.service"));

Deno.test("systemd-analyze verify reports nothing for the unit", async () => {
  // verify also checks that ExecStart's program exists: point it at a stub in a temp folder.
  const dir = tempDir("mipserver-unit-");
  const stub = join(dir, "mipserver");
  Deno.writeTextFileSync(stub, "#!/bin/sh\nexit 0\n");
  Deno.chmodSync(stub, 0o755);
  const unit = join(dir, "mipserver.service");
  Deno.writeTextFileSync(unit, UNIT.replace(/^ExecStart=\/usr\/local\/bin\/mipserver$/m, `ExecStart=${stub}`));
  assert.notEqual(Deno.readTextFileSync(unit), UNIT, "ExecStart was found and replaced");
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("systemd-analyze", { args: ["verify", unit], stdout: "piped", stderr: "piped" })
      .output();
  } catch (e) {
    throw new Error(`systemd-analyze is missing (apt-get install systemd): ${(e as Error).message}`);
  }
  const said = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, said);
  assert.equal(said.trim(), "", "no warnings either (unknown keys are only warnings)");
});

Deno.test("the unit is hardened, restarts on failure and leaves V8's JIT alone", () => {
  for (
    const line of [
      "DynamicUser=yes",
      "CacheDirectory=mipserver",
      "ConfigurationDirectory=mipserver",
      "NoNewPrivileges=yes",
      "ProtectSystem=strict",
      "ProtectHome=yes",
      "PrivateTmp=yes",
      "PrivateDevices=yes",
      "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
      "Restart=on-failure",
      "ExecStart=/usr/local/bin/mipserver",
    ]
  ) assert.match(UNIT, new RegExp(`^${line}$`, "m"), line);
  assert.doesNotMatch(UNIT, /^MemoryDenyWriteExecute=/m);
  const perms = Deno.readTextFileSync(join(ROOT, "deploy/permissions"));
  for (const dir of ["/etc/mipserver", "/var/cache/mipserver"]) {
    assert.ok(perms.includes(dir), `the binary may use ${dir}, where systemd puts config and cache`);
  }
});
