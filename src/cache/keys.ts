/**
 * Cache keys: how any text becomes a key segment, and what a safe key is (what the store agrees to write). The storage
 * room owns them, so the store needs nothing from the rooms above it.
 * @module
 */
import { createHash } from "node:crypto";

const PLAIN_SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9._+-]{0,199}$/;
const KEY_SEGMENT = /^[A-Za-z0-9_=][A-Za-z0-9._+=-]{0,199}$/;

/**
 * One cache-key segment for any text: plain names (`[A-Za-z0-9_][A-Za-z0-9._+-]*`, up to 200) stay as they are; any
 * other text is written as `=` followed by its characters with every byte outside `[A-Za-z0-9_.+-]` (and a leading
 * `.`) as `=XX`, and when that would exceed 200 characters as `=.` and its sha256 (an escaped form never starts with
 * `=.`). Plain names never hold `=`, so two different texts never share a segment.
 */
export function keySegment(text: string): string {
  if (PLAIN_SEGMENT.test(text)) return text;
  let out = "=";
  for (const byte of new TextEncoder().encode(text)) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9_+-]/.test(c) || (c === "." && out.length > 1)
      ? c
      : `=${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  if (out.length <= 200) return out;
  return `=.${createHash("sha256").update(text).digest("hex")}`;
}

/** A cache key from parts; each part may hold `/`-separated segments, each encoded by {@linkcode keySegment}. */
export function cacheKey(...parts: string[]): string {
  return parts.flatMap((p) => p.split("/")).map(keySegment).join("/");
}

/** Whether a key is made only of safe segments (no `..`, no separators, no NUL): what the store writes. */
export function isSafeKey(key: string): boolean {
  const parts = key.split("/");
  return parts.length > 0 && parts.every((p) => KEY_SEGMENT.test(p) && p !== "." && p !== "..");
}

/** The key of a content file named by its hash (short or full): `files/{first two characters}/{hash}`. */
export function fileKey(hash: string): string {
  return `files/${hash.slice(0, 2)}/${hash}`;
}
