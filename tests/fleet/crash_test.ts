/**
 * The install records survive a kill -9 in the middle of writing: a child process records as fast as it can and is
 * killed with SIGKILL; the database then passes SQLite's integrity check, holds every batch the child reported as
 * committed, and a server started on the same cache dir opens it and answers from it.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { AuditDb } from "../../src/records/sqlite/audit_db.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { standardIndex } from "../fixtures/index_fixture.ts";
import { tempDir } from "../helpers.ts";
import { serve } from "./tools.ts";

const CHILD = new URL("./crash_child.ts", import.meta.url).pathname;

Deno.test("kill -9 while install records are written: nothing committed is lost and the file is sound", async () => {
  const idx = await standardIndex();
  const up = new FakeUpstream(idx.root).start();
  const dir = tempDir();
  try {
    let before = 0;
    for (let round = 0; round < 3; round++) {
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--frozen", CHILD, dir, up.url],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let committed = 0;
      let reports = 0;
      while (reports < 4) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let nl;
        while ((nl = buffer.indexOf("\n")) >= 0) {
          committed = JSON.parse(buffer.slice(0, nl)).committed;
          buffer = buffer.slice(nl + 1);
          reports++;
        }
      }
      assert.equal(
        reports,
        4,
        new TextDecoder().decode((await child.output().catch(() => ({ stderr: new Uint8Array() }))).stderr),
      );
      // Kill at a different moment of the next batch each round.
      await new Promise((r) => setTimeout(r, 15 + round * 40));
      child.kill("SIGKILL");
      const status = await child.status;
      assert.equal(status.signal, "SIGKILL");
      await reader.cancel().catch(() => {});
      await child.stderr.cancel().catch(() => {});

      const db = new AuditDb(join(dir, "audit.sqlite"));
      try {
        assert.equal(db.integrity(), "ok");
        const rows = db.requestCount();
        assert.ok(
          rows >= before + committed,
          `round ${round}: ${rows} requests kept, ${before} + ${committed} committed`,
        );
        before = rows;
        const installs = db.installs({ limit: 10_000 });
        assert.ok(installs.length >= 400, `only ${installs.length} installs`);
        assert.ok(installs.every((i) => i.status === "complete" && i.package === "mathx"), "an install is wrong");
      } finally {
        db.close();
      }
    }
    // A server started on the same cache dir opens the file and answers from it.
    const server = await serve({ cache: { dir }, upstreams: { index: up.url, retries: 0 } }, "127.0.0.1");
    try {
      const res = await fetch(`http://127.0.0.1:${server.port}/_/installs?limit=10000&package=mathx`);
      const body = await res.json();
      assert.equal(res.status, 200);
      assert.ok(body.count >= 1200, `${body.count} installs after three runs`);
    } finally {
      await server.stop();
    }
  } finally {
    await up.stop();
  }
});
