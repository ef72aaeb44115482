/**
 * Version comparison for the `outdated` flag: dotted numbers with an optional `v` and a pre-release tail.
 * @module
 */

const VERSION = /^v?(\d+(?:\.\d+)*)(?:[-+.]?([A-Za-z][A-Za-z0-9.]*))?$/;

/** Compares two versions: negative when a < b, 0 when equal, positive when a > b; undefined when not comparable. */
export function compareVersions(a: string, b: string): number | undefined {
  const ma = VERSION.exec(a.trim());
  const mb = VERSION.exec(b.trim());
  if (!ma || !mb) return undefined;
  const na = ma[1].split(".").map(Number);
  const nb = mb[1].split(".").map(Number);
  for (let i = 0; i < Math.max(na.length, nb.length); i++) {
    const d = (na[i] ?? 0) - (nb[i] ?? 0);
    if (d !== 0) return d;
  }
  // 1.0-rc1 comes before 1.0.
  if (ma[2] && !mb[2]) return -1;
  if (!ma[2] && mb[2]) return 1;
  return (ma[2] ?? "").localeCompare(mb[2] ?? "");
}

/** Tells whether `installed` is older than `newest` (false when either is unknown or not comparable). */
export function isOutdated(installed: string | null, newest: string | null | undefined): boolean {
  if (!installed || !newest || installed === newest) return false;
  return (compareVersions(newest, installed) ?? 0) > 0;
}
