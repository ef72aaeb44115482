/**
 * The `.mpy` file header: `M`, major version, flags (bits 2-5 arch, bits 0-1 sub-version), small-int bits.
 * @module
 */

/** Arch codes in the header, by `-march` name. */
export const ARCH_CODES: Record<string, number> = {
  x86: 1,
  x64: 2,
  armv6: 3,
  armv6m: 4,
  armv7m: 5,
  armv7em: 6,
  armv7emsp: 7,
  armv7emdp: 8,
  xtensa: 9,
  xtensawin: 10,
  rv32imc: 11,
  rv64imc: 12,
};

/** A parsed header. */
export interface MpyHeader {
  major: number;
  /** Arch code (0: bytecode only). */
  arch: number;
  /** Sub-version; written only for files with native code. */
  sub: number;
  smallIntBits: number;
}

/** Parses the first 4 bytes of an `.mpy`, or returns undefined when they are not an .mpy header. */
export function parseMpyHeader(bytes: Uint8Array): MpyHeader | undefined {
  if (bytes.length < 4 || bytes[0] !== 0x4d) return undefined;
  return { major: bytes[1], arch: bytes[2] >> 2, sub: bytes[2] & 3, smallIntBits: bytes[3] };
}

/** The `.mpy` version a compiler reports: `mpy-cross emitting mpy v6.3` → {major: 6, minor: 3}. */
export function parseEmittedVersion(text: string): { major: number; minor: number } | undefined {
  const m = /emitting mpy v(\d+)(?:\.(\d+))?/.exec(text);
  return m ? { major: Number(m[1]), minor: Number(m[2] ?? 0) } : undefined;
}
