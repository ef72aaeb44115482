/**
 * Byte helpers shared by the rooms that read bodies in chunks.
 * @module
 */

/** Joins `chunks` into one array of `size` bytes (their total length, which the caller already counted). */
export function joinChunks(chunks: Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}
