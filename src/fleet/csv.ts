/**
 * CSV for the fleet queries (`?format=csv`): a header row, then one row per record; RFC 4180 quoting.
 * @module
 */

/** One CSV field: quoted when it holds a comma, quote or line break; null and undefined are empty. */
export function csvField(value: unknown): string {
  if (value === null || value === undefined) return "";
  const s = String(value);
  // A leading =, +, - or @ would be read as a formula by spreadsheets: keep it text.
  const safe = /^[=+\-@]/.test(s) && !/^-?\d/.test(s) ? `'${s}` : s;
  return /[",\r\n]/.test(safe) ? `"${safe.replaceAll('"', '""')}"` : safe;
}

/** A CSV document with `columns` as the header row. */
export function toCsv(columns: string[], rows: Record<string, unknown>[]): string {
  const lines = [columns.join(",")];
  for (const row of rows) lines.push(columns.map((c) => csvField(row[c])).join(","));
  return lines.join("\r\n") + "\r\n";
}
