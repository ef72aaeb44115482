/**
 * What the install records keep of a request path: its canonical form, so that a client cannot make a row per query
 * string or per spelling of one path.
 * @module
 */

/** A path segment percent-decoded, or as it is when it is not valid percent-encoding. */
export function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/**
 * The longest path recorded: the longest device path the name rules allow (`/t/{profile}/url/{scheme}/{host}/` and a
 * file path of `MAX_PATH`, 1,000 characters; profile, owner, repository and ref are at most 100 each) with room to
 * spare. A longer path names nothing the server can serve; it is recorded cut, ending in `...`.
 */
export const MAX_RECORDED_PATH = 1536;

/** Characters a recorded path segment keeps percent-encoded after decoding (they would change what the path says). */
// deno-lint-ignore no-control-regex
const KEEP_ENCODED = /[\x00-\x20\x7f%\/?#]/g;

/**
 * What the records keep of a request path: the path without its query string or fragment, each segment
 * percent-decoded (so `/package/6/%68ello/x.json` and `/package/6/hello/x.json` are one path), and at most
 * {@linkcode MAX_RECORDED_PATH} characters.
 */
export function recordedPath(path: string): string {
  let end = path.length;
  const q = path.indexOf("?");
  if (q >= 0) end = q;
  const h = path.indexOf("#");
  if (h >= 0 && h < end) end = h;
  let out = end === path.length ? path : path.slice(0, end);
  if (out.includes("%")) {
    out = out.split("/").map((seg) =>
      decodeSegment(seg).replace(KEEP_ENCODED, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0"))
    ).join("/");
  }
  return out.length > MAX_RECORDED_PATH ? `${out.slice(0, MAX_RECORDED_PATH - 3)}...` : out;
}
