import assert from "node:assert/strict";
import { formatDuration, formatSize, parseDuration, parseSize } from "../../src/config/units.ts";

Deno.test("parseDuration reads every unit and bare seconds", () => {
  assert.equal(parseDuration("500ms"), 500);
  assert.equal(parseDuration("30s"), 30_000);
  assert.equal(parseDuration("10m"), 600_000);
  assert.equal(parseDuration("1h"), 3_600_000);
  assert.equal(parseDuration("2d"), 172_800_000);
  assert.equal(parseDuration("1.5s"), 1500);
  assert.equal(parseDuration(45), 45_000);
  assert.equal(parseDuration(" 7 m "), 420_000);
});

Deno.test("parseDuration rejects what is not a duration", () => {
  for (const bad of ["", "ten minutes", "10x", "-5s", "5 mins", null, true, -1, [], {}]) {
    assert.equal(parseDuration(bad), undefined, `accepted ${JSON.stringify(bad)}`);
  }
});

Deno.test("parseSize reads decimal and binary units and bare bytes", () => {
  assert.equal(parseSize("512KB"), 512_000);
  assert.equal(parseSize("16MiB"), 16 * 1024 * 1024);
  assert.equal(parseSize("2GiB"), 2 * 1024 ** 3);
  assert.equal(parseSize("2gib"), 2 * 1024 ** 3);
  assert.equal(parseSize("100"), 100);
  assert.equal(parseSize(4096), 4096);
  assert.equal(parseSize("10B"), 10);
});

Deno.test("parseSize rejects what is not a size", () => {
  for (const bad of ["", "lots", "5TB", "-1", "1.5.2MB", 1.5, -3, null]) {
    assert.equal(parseSize(bad), undefined, `accepted ${JSON.stringify(bad)}`);
  }
});

Deno.test("formatDuration and formatSize round-trip", () => {
  for (const d of ["10m", "1h", "30s", "250ms", "1d"]) assert.equal(formatDuration(parseDuration(d)!), d);
  for (const s of ["16MiB", "2GiB", "1KiB", "100B"]) assert.equal(formatSize(parseSize(s)!), s);
});
