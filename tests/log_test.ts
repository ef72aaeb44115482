import assert from "node:assert/strict";
import { createLogger, formatText } from "../src/log.ts";

const T = Date.UTC(2026, 10, 24, 12, 0, 0, 5);

Deno.test("text lines: time, level, message, then key=value with values quoted only when they must be", () => {
  const line = formatText(T, "info", "GET /index.json 200", {
    client: "10.0.0.7",
    bytes: 3960,
    ratio: 0.25,
    missing: undefined,
    spaced: "a b",
    quote: 'say "hi"',
    eq: "a=b",
    empty: "",
    list: [1, 2],
    error: new Error("boom here"),
    nan: NaN,
  });
  assert.equal(
    line,
    '2026-11-24T12:00:00.005Z INFO  GET /index.json 200 client=10.0.0.7 bytes=3960 ratio=0.25 spaced="a b" ' +
      'quote="say \\"hi\\"" eq="a=b" empty="" list=[1,2] error="boom here" nan=null',
  );
  assert.match(formatText(T + 1, "warn", "x"), /^2026-11-24T12:00:00\.006Z WARN {2}x$/, "a stale time was reused");
  assert.match(formatText(T, "error", "x"), /^\S+ ERROR x$/);
});

Deno.test("json lines and the level threshold", () => {
  const lines: string[] = [];
  const logger = createLogger({ level: "warn", format: "json", write: (l) => lines.push(l), now: () => T });
  logger.info("dropped");
  logger.warn("kept", { n: 1, error: new Error("why") });
  assert.equal(lines.length, 1);
  assert.deepEqual(JSON.parse(lines[0]), {
    time: "2026-11-24T12:00:00.005Z",
    level: "warn",
    msg: "kept",
    n: 1,
    error: "why",
  });
});
